//! A map with a capacity: when an insert would pass it, the least recently used eighth of the
//! entries goes. For caches whose keys a client can choose (a repository name, an upstream
//! host): however many a client invents, the map never holds more than its capacity.

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct BoundedMap<K, V> {
    entries: HashMap<K, (V, u64)>,
    capacity: usize,
    /// Bumped on every use; an entry remembers the tick it was last used at.
    tick: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The value of `key`, marked as used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        let tick = self.next_tick();
        self.entries.get_mut(key).map(|(v, used)| {
            *used = tick;
            &*v
        })
    }

    pub fn insert(&mut self, key: K, value: V) {
        let tick = self.next_tick();
        if !self.entries.contains_key(&key) {
            self.make_room();
        }
        self.entries.insert(key, (value, tick));
    }

    /// The value of `key`, made with `make` (and inserted) when there is none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let tick = self.next_tick();
        if !self.entries.contains_key(&key) {
            self.make_room();
        }
        let entry = self.entries.entry(key).or_insert_with(|| (make(), tick));
        entry.1 = tick;
        &mut entry.0
    }

    /// Below capacity by at least one: drops the least recently used eighth when full (a
    /// sort per capacity/8 inserts, so an insert costs O(log n) on average).
    fn make_room(&mut self) {
        if self.entries.len() < self.capacity {
            return;
        }
        let mut ticks: Vec<u64> = self.entries.values().map(|(_, t)| *t).collect();
        ticks.sort_unstable();
        let drop = (self.capacity / 8).max(1);
        let cutoff = ticks[drop.min(ticks.len()) - 1];
        self.entries.retain(|_, (_, t)| *t > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_keys_never_pass_the_capacity() {
        let mut map = BoundedMap::new(64);
        for i in 0..10_000 {
            map.insert(format!("repo-{i}"), i);
            assert!(map.len() <= 64, "{} entries", map.len());
        }
        // The most recent keys are there.
        assert_eq!(map.get(&"repo-9999".to_string()), Some(&9999));
        assert_eq!(map.get(&"repo-0".to_string()), None);
    }

    #[test]
    fn the_least_recently_used_go_first() {
        let mut map = BoundedMap::new(8);
        for i in 0..8 {
            map.insert(i, i);
        }
        // Use 0 again: 1 is now the oldest.
        assert_eq!(map.get(&0), Some(&0));
        map.insert(100, 100);
        assert_eq!(map.get(&1), None);
        assert_eq!(map.get(&0), Some(&0));
        assert_eq!(*map.get_or_insert_with(7, || 70), 7);
        assert!(map.len() <= 8);
    }
}
