//! Leases: how replicas that share a store agree that exactly one of them fetches a blob (or
//! revalidates a tag) from the upstream at a time, with nothing beyond that store.
//!
//! A lease is a small JSON object in the shared tier (`leases/...`, see [`LeaseRecord`]): who
//! holds it, the address where the others can read what the holder is receiving, and when it
//! expires. Taking one is a conditional create, so of several replicas exactly one wins. The
//! holder renews it while it works (a conditional replace of the version it wrote) and
//! removes it when done. A lease past its expiry is taken over with a conditional replace of
//! the version seen, so of several replicas that find a dead holder, exactly one takes over.
//!
//! The shared store is not trusted: a record is read within a bound, one that does not parse
//! counts as expired, and an expiry further away than a holder would ever set (one lease
//! plus the clock skew allowed) counts as expired too, so a forged record cannot stop the
//! fleet for longer than one lease.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::tier::{ObjectKey, Version};
use super::{Store, MAX_CLOCK_SKEW};
use crate::clock::now_ms;

/// The largest lease record read (they are about 150 bytes).
const MAX_LEASE_RECORD: u64 = 4 * 1024;

/// How a replica takes part in a fleet (`: .advertise` and `: .token-secret` beside a shared
/// `: .cache`).
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The base URL other replicas reach this one at (`http://10.0.0.7:5000`).
    pub advertise: String,
    /// The key requests between replicas are signed with (see `peer`).
    pub peer_key: Vec<u8>,
    /// How long a lease lasts without a renewal; the holder renews it every third of that.
    pub lease_ttl: Duration,
}

/// The default [`FleetConfig::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// A lease as the shared tier holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseRecord {
    /// The holder's id (random per process).
    pub holder: String,
    /// Where the holder serves what it is fetching (its `: .advertise` URL).
    pub url: String,
    /// Milliseconds since the epoch after which the lease is void.
    #[serde(rename = "expiresMs")]
    pub expires_ms: u64,
}

impl LeaseRecord {
    /// Whether the lease is void: past its expiry, or with an expiry no honest holder sets.
    pub fn expired(&self, ttl: Duration) -> bool {
        let now = now_ms();
        let furthest = now + (ttl + MAX_CLOCK_SKEW).as_millis() as u64;
        self.expires_ms <= now || self.expires_ms > furthest
    }
}

/// What a lease is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseKey {
    /// Fetching the blob of this hex.
    Blob(String),
    /// Revalidating (or first fetching) a tag.
    Tag {
        ns: String,
        repo: String,
        tag: String,
    },
}

impl LeaseKey {
    fn object(&self) -> ObjectKey<'_> {
        match self {
            LeaseKey::Blob(hex) => ObjectKey::BlobLease(hex),
            LeaseKey::Tag { ns, repo, tag } => ObjectKey::TagLease { ns, repo, tag },
        }
    }
}

/// The outcome of [`Store::claim`].
pub enum Claim {
    /// This replica holds the lease until the guard is dropped.
    Won(LeaseGuard),
    /// Another replica holds it.
    Held(HeldLease),
    /// No fleet here (no shared tier or no `: .advertise`), or the shared tier failed: go on
    /// alone, as a single replica would.
    Alone,
}

/// Another replica's lease, as last read.
#[derive(Debug, Clone)]
pub struct HeldLease {
    pub record: LeaseRecord,
    version: Version,
}

/// A lease this replica holds: renewed in the background while it lives, removed when dropped.
pub struct LeaseGuard {
    renewal: tokio::task::JoinHandle<()>,
    release: Option<(Arc<Store>, LeaseKey)>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewal.abort();
        if let Some((store, key)) = self.release.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { store.release_lease(&key).await });
            }
        }
    }
}

impl Store {
    /// How this replica takes part in a fleet, when it does.
    pub fn fleet(&self) -> Option<&FleetConfig> {
        self.shared.as_ref()?;
        self.config.fleet.as_ref()
    }

    /// This replica's id in lease records.
    pub fn holder_id(&self) -> &str {
        &self.holder
    }

    /// Takes the lease `key`, or says who holds it. A void lease (expired, unreadable,
    /// forged) is taken over.
    pub async fn claim(self: &Arc<Self>, key: LeaseKey) -> Claim {
        let (Some(fleet), Some(shared)) = (self.fleet(), self.shared()) else {
            return Claim::Alone;
        };
        let ttl = fleet.lease_ttl;
        // Twice at most: a lease removed between our create and our read is gone, try again.
        for _ in 0..2 {
            let record = self.lease_record(ttl);
            match shared.create_versioned(key.object(), encode(&record)).await {
                Ok(Some(version)) => return Claim::Won(self.guard(key, record, version)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("cannot take a lease in the {} tier: {e}", shared.name());
                    return Claim::Alone;
                }
            }
            match self.read_lease(&key).await {
                Ok(Some((Some(record), version))) if !record.expired(ttl) => {
                    return Claim::Held(HeldLease { record, version })
                }
                Ok(Some((_, version))) => {
                    return match self.replace(&key, &version).await {
                        Some(guard) => Claim::Won(guard),
                        // Someone else took it over (or renewed it) first.
                        None => self.read_held(&key).await,
                    };
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("cannot read a lease in the {} tier: {e}", shared.name());
                    return Claim::Alone;
                }
            }
        }
        Claim::Alone
    }

    /// Takes over `held` (its holder does not answer): exactly one of the replicas that try
    /// with the same version wins; the others get `None` and look again.
    pub async fn take_over(
        self: &Arc<Self>,
        key: LeaseKey,
        held: &HeldLease,
    ) -> Option<LeaseGuard> {
        self.replace(&key, &held.version).await
    }

    /// The lease `key` as the shared tier holds it now.
    pub async fn lease(&self, key: &LeaseKey) -> Option<LeaseRecord> {
        match self.read_held(key).await {
            Claim::Held(held) => Some(held.record),
            _ => None,
        }
    }

    /// The lease `key` as it is now, as a [`Claim`] that never takes it.
    async fn read_held(&self, key: &LeaseKey) -> Claim {
        match self.read_lease(key).await {
            Ok(Some((Some(record), version))) => Claim::Held(HeldLease { record, version }),
            _ => Claim::Alone,
        }
    }

    /// The lease `key` in the shared tier, read within its bound: its record (`None` when it
    /// does not parse) and version; `None` when there is none.
    async fn read_lease(
        &self,
        key: &LeaseKey,
    ) -> std::io::Result<Option<(Option<LeaseRecord>, Version)>> {
        let Some(shared) = self.shared() else {
            return Ok(None);
        };
        let found = shared
            .read_versioned(key.object(), MAX_LEASE_RECORD)
            .await?;
        Ok(found.map(|(bytes, version)| (serde_json::from_slice(&bytes).ok(), version)))
    }

    async fn replace(self: &Arc<Self>, key: &LeaseKey, version: &Version) -> Option<LeaseGuard> {
        let ttl = self.fleet()?.lease_ttl;
        let record = self.lease_record(ttl);
        match self
            .shared()?
            .replace_versioned(key.object(), encode(&record), version)
            .await
        {
            Ok(Some(new)) => {
                tracing::info!(lease = ?key, "took over a lease whose holder stopped renewing it");
                Some(self.guard(key.clone(), record, new))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("cannot take over a lease: {e}");
                None
            }
        }
    }

    fn lease_record(&self, ttl: Duration) -> LeaseRecord {
        LeaseRecord {
            holder: self.holder.clone(),
            url: self
                .config
                .fleet
                .as_ref()
                .map(|f| f.advertise.clone())
                .unwrap_or_default(),
            expires_ms: now_ms() + ttl.as_millis() as u64,
        }
    }

    /// A guard that renews the lease every third of its TTL until dropped.
    fn guard(self: &Arc<Self>, key: LeaseKey, record: LeaseRecord, version: Version) -> LeaseGuard {
        let (store, renewed) = (self.clone(), key.clone());
        let renewal = tokio::spawn(async move {
            let Some(ttl) = store.fleet().map(|f| f.lease_ttl) else {
                return;
            };
            let mut version = version;
            let mut record = record;
            loop {
                tokio::time::sleep(ttl / 3).await;
                record.expires_ms = now_ms() + ttl.as_millis() as u64;
                let Some(shared) = store.shared() else { return };
                match shared
                    .replace_versioned(renewed.object(), encode(&record), &version)
                    .await
                {
                    Ok(Some(v)) => version = v,
                    Ok(None) => {
                        tracing::warn!(lease = ?renewed, "lost a lease to another replica (it took it over); finishing anyway");
                        return;
                    }
                    Err(e) => tracing::warn!(lease = ?renewed, "cannot renew a lease: {e}"),
                }
            }
        });
        LeaseGuard {
            renewal,
            release: Some((self.clone(), key)),
        }
    }

    /// Removes the lease `key` if this replica still holds it.
    async fn release_lease(&self, key: &LeaseKey) {
        let Some(shared) = self.shared() else { return };
        if let Ok(Some((Some(record), _))) = self.read_lease(key).await {
            if record.holder == self.holder {
                if let Err(e) = shared.delete(key.object()).await {
                    tracing::warn!(lease = ?key, "cannot remove a lease: {e}");
                }
            }
        }
    }
}

fn encode(record: &LeaseRecord) -> Bytes {
    Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::object::ObjectTier;
    use crate::store::tier::Tier;
    use crate::store::StoreConfig;
    use object_store::memory::InMemory;

    /// A replica of a fleet on the shared bucket `bucket`.
    fn replica(bucket: &Arc<InMemory>) -> (Arc<Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            root: dir.path().to_path_buf(),
            remote: None,
            max_size: None,
            ttl: Duration::from_secs(300),
            ttl_by_ns: vec![],
            idle_timeout: Duration::from_secs(5),
            max_blob_size: None,
            fleet: Some(FleetConfig {
                advertise: "http://127.0.0.1:1".into(),
                peer_key: b"key".to_vec(),
                lease_ttl: DEFAULT_LEASE_TTL,
            }),
        };
        let shared = ObjectTier::over(bucket.clone(), "memory", "acr");
        let store = Store::open_with(config, Arc::new(Metrics::default()), Some(Box::new(shared)));
        (store.unwrap(), dir)
    }

    /// Writes `bytes` as the lease `key` behind the replicas' backs.
    async fn plant(bucket: &Arc<InMemory>, key: &LeaseKey, bytes: Vec<u8>) {
        let tier = ObjectTier::over(bucket.clone(), "memory", "acr");
        let put = tier.write(
            key.object(),
            Bytes::from(bytes),
            crate::store::tier::WriteMode::Overwrite,
        );
        put.await.unwrap();
    }

    #[tokio::test]
    async fn one_replica_wins_a_lease_and_the_others_see_it() {
        let bucket = Arc::new(InMemory::new());
        let ((a, _da), (b, _db)) = (replica(&bucket), replica(&bucket));
        let key = LeaseKey::Blob("aa".into());
        let Claim::Won(guard) = a.claim(key.clone()).await else {
            panic!("the first claim wins")
        };
        let Claim::Held(held) = b.claim(key.clone()).await else {
            panic!("the second sees the lease held")
        };
        assert_eq!(held.record.holder, a.holder_id());
        assert_eq!(held.record.url, "http://127.0.0.1:1");
        drop(guard);
        for _ in 0..50 {
            if a.lease(&key).await.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a dropped guard gives the lease back");
    }

    #[tokio::test]
    async fn a_forged_or_garbled_lease_is_taken_over_not_obeyed() {
        let bucket = Arc::new(InMemory::new());
        let (a, _da) = replica(&bucket);
        let forged = LeaseRecord {
            holder: "someone".into(),
            url: "http://203.0.113.9:1".into(),
            expires_ms: now_ms() + 3_600_000,
        };
        for (what, bytes) in [
            (
                "an expiry an hour away",
                serde_json::to_vec(&forged).unwrap(),
            ),
            ("not JSON", b"\xff garbage".to_vec()),
        ] {
            let key = LeaseKey::Blob(format!("{:02x}", what.len()));
            plant(&bucket, &key, bytes).await;
            match a.claim(key.clone()).await {
                Claim::Won(_) => {}
                _ => panic!("{what}: the lease is void and taken over"),
            }
            let now = a.lease(&key).await.expect("a lease");
            assert_eq!(now.holder, a.holder_id(), "{what}");
        }
    }

    #[tokio::test]
    async fn an_oversized_lease_is_not_read_and_the_replica_goes_on_alone() {
        let bucket = Arc::new(InMemory::new());
        let (a, _da) = replica(&bucket);
        let key = LeaseKey::Blob("bb".into());
        plant(&bucket, &key, vec![b' '; (MAX_LEASE_RECORD + 1) as usize]).await;
        assert!(matches!(a.claim(key.clone()).await, Claim::Alone));
        assert!(a.lease(&key).await.is_none());
    }

    #[test]
    fn a_lease_past_its_expiry_or_too_far_ahead_is_void() {
        let ttl = Duration::from_secs(10);
        let record = |expires_ms| LeaseRecord {
            holder: "a".into(),
            url: "http://127.0.0.1:1".into(),
            expires_ms,
        };
        assert!(!record(now_ms() + 5_000).expired(ttl));
        assert!(record(now_ms().saturating_sub(1)).expired(ttl));
        assert!(
            record(now_ms() + 3_600_000).expired(ttl),
            "a forged far expiry"
        );
        assert!(record(u64::MAX).expired(ttl));
    }
}
