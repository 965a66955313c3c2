//! One revalidation of a tag at a time, on this replica and across the fleet.
//!
//! Within its TTL a tag is answered from the store (a record shared by every replica). Once
//! it is stale, the requests that find it so take turns: on this replica one at a time (a
//! lock per tag), and across the fleet through the tag's lease (see `lease`): the replica
//! that wins asks the upstream (one HEAD, or one GET for a tag never seen) and writes the new
//! record; the others wait until the record is fresh again, or until the lease is gone (its
//! holder could not reach the upstream, or died), at most one lease TTL, and then look
//! again. So a fleet asks the upstream about a tag once per TTL, however many replicas and
//! clients there are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lease::{Claim, LeaseGuard, LeaseKey};
use super::Store;

/// How often a replica waiting for another's revalidation looks at the tag again.
const POLL: Duration = Duration::from_millis(100);

/// The per-tag locks of this replica; an entry lives while someone holds or waits for it.
#[derive(Default)]
pub(crate) struct TagLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// This request's turn to ask the upstream about a tag; hold it while asking and recording.
pub struct TagTurn {
    _lease: Option<LeaseGuard>,
    local: Option<tokio::sync::OwnedMutexGuard<()>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    name: String,
    store: Arc<Store>,
}

impl Drop for TagTurn {
    fn drop(&mut self) {
        drop(self.local.take());
        if let Ok(mut locks) = self.store.tag_locks.0.lock() {
            // Ours and the table's: nobody else waits for this tag.
            if Arc::strong_count(&self.lock) <= 2 {
                locks.remove(&self.name);
            }
        }
    }
}

impl Store {
    /// Waits for this request's turn to revalidate the tag (see the module documentation).
    /// Afterwards the caller looks at the tag again: it may be fresh now.
    pub async fn tag_turn(self: &Arc<Self>, ns: &str, repo: &str, tag: &str) -> TagTurn {
        let name = format!("{ns}/{repo}:{tag}");
        let lock = match self.tag_locks.0.lock() {
            Ok(mut locks) => locks.entry(name.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let local = Some(lock.clone().lock_owned().await);
        let mut turn = TagTurn {
            _lease: None,
            local,
            lock,
            name,
            store: self.clone(),
        };
        if self.tag_is_fresh(ns, repo, tag).await {
            return turn;
        }
        let key = LeaseKey::Tag {
            ns: ns.to_string(),
            repo: repo.to_string(),
            tag: tag.to_string(),
        };
        match self.claim(key.clone()).await {
            Claim::Won(lease) => turn._lease = Some(lease),
            Claim::Alone => {}
            Claim::Held(held) => {
                let ttl = self.fleet().map(|f| f.lease_ttl).unwrap_or_default();
                let deadline = Instant::now() + ttl;
                while Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                    if self.tag_is_fresh(ns, repo, tag).await {
                        break;
                    }
                    match self.lease(&key).await {
                        Some(now) if now == held.record && !now.expired(ttl) => {}
                        // Given back (or taken over): look again.
                        _ => break,
                    }
                }
            }
        }
        turn
    }

    async fn tag_is_fresh(&self, ns: &str, repo: &str, tag: &str) -> bool {
        self.tag(ns, repo, tag)
            .await
            .is_some_and(|t| t.age() < self.config.ttl_for(ns))
    }
}
