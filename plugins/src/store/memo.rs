//! What the store read most recently, kept in memory, so a hit needs no file read:
//!
//! - manifests by digest (bytes and media type): immutable, so a copy never goes stale; it
//!   is dropped when the store evicts the manifest from the disk, so the memory never serves
//!   what the store no longer has.
//! - tag records, each with the time the upstream last confirmed it (the record itself): the
//!   TTL is judged on that time, as for the record on the disk, so a tag in memory is never
//!   served past its TTL. A record is kept when read or written by this process.
//!
//! - repository links known to exist (links are only ever added, never removed).
//!
//! Whether a client may read what is kept is decided per request by the caller, never here.
//! Each memo is bounded by a weight (bytes) and an entry count; past either, the least
//! recently used go.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// The bytes of manifests kept in memory at most (manifests are at most 4 MiB, most a few KiB).
pub const MANIFEST_BYTES: usize = 8 * 1024 * 1024;
/// How many manifests are kept at most.
pub const MANIFEST_ENTRIES: usize = 1024;
/// How many tag records are kept at most (a few hundred bytes each).
pub const TAG_ENTRIES: usize = 4096;
/// How many repository links are kept at most (a path each).
pub const LINK_ENTRIES: usize = 8192;

struct Kept<V> {
    value: V,
    weight: usize,
    /// When it was last used (a counter, higher is more recent).
    used: u64,
}

struct Inner<K, V> {
    entries: HashMap<K, Kept<V>>,
    weight: usize,
    clock: u64,
}

/// Values by key, least recently used dropped first past `max_weight` or `max_entries`.
pub struct Memo<K, V> {
    inner: Mutex<Inner<K, V>>,
    max_weight: usize,
    max_entries: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    pub fn new(max_weight: usize, max_entries: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                weight: 0,
                clock: 0,
            }),
            max_weight,
            max_entries,
        }
    }

    /// The value kept for `key`, marked as used now.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let kept = inner.entries.get_mut(key)?;
        kept.used = now;
        Some(kept.value.clone())
    }

    /// Keeps `value` (of `weight`, say its bytes) for `key`, replacing what was kept. A value
    /// heavier than a quarter of the budget is not kept.
    pub fn put(&self, key: K, value: V, weight: usize) {
        if weight > self.max_weight / 4 {
            self.forget(&key);
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.clock += 1;
        let used = inner.clock;
        let kept = Kept {
            value,
            weight,
            used,
        };
        if let Some(old) = inner.entries.insert(key, kept) {
            inner.weight -= old.weight;
        }
        inner.weight += weight;
        while inner.weight > self.max_weight || inner.entries.len() > self.max_entries {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.weight -= gone.weight;
            }
        }
    }

    /// Forgets what is kept for `key`.
    pub fn forget<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(gone) = inner.entries.remove(key) {
                inner.weight -= gone.weight;
            }
        }
    }

    /// How many values are kept, and their weight.
    pub fn usage(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|m| (m.entries.len(), m.weight))
            .unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_and_forgets() {
        let memo = Memo::<String, &str>::new(100, 10);
        memo.put("aa".to_string(), "{}", 2);
        assert_eq!(memo.get("aa"), Some("{}"));
        memo.forget("aa");
        assert_eq!(memo.get("aa"), None);
        assert_eq!(memo.usage(), (0, 0));
    }

    #[test]
    fn drops_the_least_recently_used_past_the_entry_bound() {
        let memo = Memo::<String, u32>::new(1 << 20, 100);
        for i in 0..100 {
            memo.put(format!("{i}"), i, 1);
        }
        // "0" used again: "1" is now the least recently used.
        assert_eq!(memo.get("0"), Some(0));
        memo.put("new".to_string(), 7, 1);
        assert_eq!(memo.usage().0, 100);
        assert_eq!(memo.get("0"), Some(0));
        assert_eq!(memo.get("1"), None);
        assert_eq!(memo.get("new"), Some(7));
    }

    #[test]
    fn keeps_the_weight_budget_and_skips_the_too_heavy() {
        let memo = Memo::<String, u32>::new(1000, 100);
        for i in 0..8 {
            memo.put(format!("{i}"), i, 250);
        }
        let (_, weight) = memo.usage();
        assert!(weight <= 1000, "{weight} kept");
        assert_eq!(memo.get("7"), Some(7));
        assert_eq!(memo.get("0"), None);
        // Heavier than a quarter of the budget: not kept, and an older value is forgotten.
        memo.put("7".to_string(), 70, 251);
        assert_eq!(memo.get("7"), None);
    }
}
