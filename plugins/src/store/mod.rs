//! The content store: blobs and manifests kept by digest, tags kept with the time they were
//! fetched, on a local disk and, shared between replicas, in an object store.
//!
//! - **Verified.** Content is hashed as it arrives and committed (temp file, fsync, rename)
//!   only when it matches its digest; a mismatch commits nothing.
//! - **Single flight.** One upstream fetch per digest however many clients ask at once; every
//!   client reads the temporary file as it grows (see `flight`), so the first bytes reach all
//!   of them before the last arrive, and the fetch finishes even if its first client leaves.
//! - **Bounded.** Least-recently-used objects are evicted to stay under `max-size`; an object
//!   being read is never removed. Last use is the file's mtime, so it survives a restart. The
//!   bytes of fetches in flight are reserved against `max-size` (and the disk) before they
//!   arrive; a blob that cannot fit even after eviction is refused (507) before anything is
//!   evicted, and a body without a length is cut off where the store's room (or
//!   [`StoreConfig::max_blob_size`]) ends.
//! - **Crash-safe.** Only complete, verified objects ever have their final name; temporary
//!   leftovers of a process that is gone are removed when the store opens (each process holds
//!   a lock on its own temporary files, so a store opened beside a running one leaves the
//!   running one's fetches alone, see [`owner`]).
//! - **The shared tier is untrusted.** What comes from S3 is size-checked before it is read,
//!   read within a bound, and verified against its digest like an upstream's answer; a bad
//!   object is deleted there and counted (`acr_store_remote_corrupt_total`).
//!
//! The store is two tiers behind one trait ([`tier::Tier`]): the local disk
//! ([`local::DiskTier`]) and, when replicas share content, an object store
//! ([`object::ObjectTier`], built from a `: .cache s3://...` or `az://...` URL in
//! [`remote`]). The "local, then shared" logic is written once (`tiered`, `copy_down`,
//! `links`); the local tier's bookkeeping is `index` (what is here, eviction) and `space`
//! (room for fetches in flight); `flight` is the single-flight fetcher.

mod azure;
mod copy_down;
mod fetch_body;
pub mod fleet;
pub mod flight;
#[cfg(test)]
mod flight_tests;
mod hit;
mod index;
pub mod lease;
pub mod links;
pub mod local;
pub mod memo;
#[cfg(test)]
mod memo_tests;
pub mod object;
pub mod owner;
pub mod peer;
pub mod remote;
pub mod space;
mod tag;
pub mod tag_turn;
pub mod tier;
mod tiered;

#[cfg(test)]
mod tier_suite;
#[cfg(test)]
mod tiered_tests;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Metrics;
pub use flight::{BlobLookup, FlightHandle, Follow, Hit, Lead};
pub use tag::{TagEntry, MAX_CLOCK_SKEW};

pub(crate) use index::Kind;

/// How a proxy's store is set up (`: .cache`, `: .ttl`, `: .max-size` under `+ .proxy`).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The local disk tier (with an S3 tier, a cache of it).
    pub root: PathBuf,
    /// The shared tier (`: .cache s3://bucket/prefix` or `az://container/prefix`).
    pub remote: Option<remote::RemoteConfig>,
    pub max_size: Option<u64>,
    pub ttl: Duration,
    /// Per-upstream TTLs (`: .ttl NS DURATION`).
    pub ttl_by_ns: Vec<(String, Duration)>,
    /// How long an upstream may stay silent while a blob is fetched (before it answers, and
    /// between two pieces of the body) before the fetch fails: a stalled upstream must not
    /// keep a digest in flight, and its clients waiting, forever.
    pub idle_timeout: Duration,
    /// The largest blob the store takes (`None`: as large as `max_size` and the disk allow).
    /// A blob announced larger is refused with 507; a body without a length is cut off here.
    pub max_blob_size: Option<u64>,
    /// How this replica coordinates with the others on the shared tier (see `lease`);
    /// `None`: it fetches on its own.
    pub fleet: Option<lease::FleetConfig>,
}

/// The default [`StoreConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl StoreConfig {
    pub fn ttl_for(&self, ns: &str) -> Duration {
        self.ttl_by_ns
            .iter()
            .find(|(n, _)| n == ns)
            .map(|(_, t)| *t)
            .unwrap_or(self.ttl)
    }
}

pub struct Store {
    pub config: StoreConfig,
    pub metrics: Arc<Metrics>,
    /// The local disk tier (with a shared tier, a cache of it).
    pub(crate) local: local::DiskTier,
    /// The shared tier, when replicas share content (see `tiered`).
    shared: Option<Box<dyn tier::Tier>>,
    index: Mutex<HashMap<String, index::Entry>>,
    pub(crate) inflight: Mutex<HashMap<String, Arc<flight::InFlight>>>,
    /// Blobs being copied to the shared tier now.
    sharing: AtomicUsize,
    /// Bytes promised to fetches in flight (see [`space`]).
    pub(crate) space: Mutex<space::Reserved>,
    /// This replica's id in lease records (random per process).
    holder: String,
    /// One revalidation per tag at a time (see `tag_turn`).
    tag_locks: tag_turn::TagLocks,
    /// The manifests served most recently, in memory by digest hex (see `memo`).
    manifests_in_memory: memo::Memo<String, (bytes::Bytes, String)>,
    /// The tag records read or written most recently, by (ns, repo, tag) (see `memo`).
    tags_in_memory: memo::Memo<(String, String, String), TagEntry>,
    /// Links known to exist on the disk, by their path (see `links`): a hit needs no lookup.
    links_in_memory: memo::Memo<std::path::PathBuf, ()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.config.root)
            .finish()
    }
}

impl Store {
    /// Opens (creating) the store at `config.root`, with the shared tier `config.remote`
    /// names: removes temporary leftovers of a crash and rebuilds the index from what is on
    /// disk.
    pub fn open(config: StoreConfig, metrics: Arc<Metrics>) -> io::Result<Arc<Self>> {
        let shared: Option<Box<dyn tier::Tier>> = match &config.remote {
            Some(rc) => Some(Box::new(object::ObjectTier::new(rc.clone())?)),
            None => None,
        };
        Self::open_with(config, metrics, shared)
    }

    /// [`Store::open`] with this shared tier (whatever `config.remote` says).
    pub fn open_with(
        config: StoreConfig,
        metrics: Arc<Metrics>,
        shared: Option<Box<dyn tier::Tier>>,
    ) -> io::Result<Arc<Self>> {
        let local = local::DiskTier::open(&config.root)?;
        let mut index = HashMap::new();
        index::scan(&config.root.join("blobs/sha256"), Kind::Blob, &mut index)?;
        index::scan(
            &config.root.join("manifests/sha256"),
            Kind::Manifest,
            &mut index,
        )?;
        let store = Self {
            config,
            metrics,
            local,
            shared,
            index: Mutex::new(index),
            inflight: Mutex::new(HashMap::new()),
            sharing: AtomicUsize::new(0),
            space: Mutex::new(space::Reserved::default()),
            holder: format!("{:016x}", object::random_u64()),
            tag_locks: tag_turn::TagLocks::default(),
            manifests_in_memory: memo::Memo::new(memo::MANIFEST_BYTES, memo::MANIFEST_ENTRIES),
            tags_in_memory: memo::Memo::new(usize::MAX, memo::TAG_ENTRIES),
            links_in_memory: memo::Memo::new(usize::MAX, memo::LINK_ENTRIES),
        };
        store.update_gauges();
        Ok(Arc::new(store))
    }

    pub fn root(&self) -> &Path {
        self.local.root()
    }

    /// Waits (at most `limit`) until no fetch is still being made durable and committed (a
    /// client may have all its bytes before the fsync) and no blob is on its way to the S3
    /// tier: what a short-lived process (`acr warm`) calls before it exits. Returns how many
    /// were still going.
    pub async fn settle(&self, limit: Duration) -> usize {
        let deadline = std::time::Instant::now() + limit;
        let busy = || {
            let flying = self.inflight.lock().map(|m| m.len()).unwrap_or(0);
            self.sharing.load(Ordering::SeqCst) + flying
        };
        let mut quiet_once = false;
        loop {
            let left = busy();
            // Quiet twice, 50 ms apart: a commit hands over to its S3 upload in between.
            if left == 0 && quiet_once {
                return 0;
            }
            quiet_once = left == 0;
            if std::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Parses a size: `20GiB`, `512MiB`, `10GB`, `1048576`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" | "ki" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" | "mi" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" | "ti" => 1024f64.powi(4),
        _ => return None,
    };
    let v = n * scale;
    (v.is_finite() && v >= 0.0).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GiB"), Some(20 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("512 MiB"), Some(512 * 1024 * 1024));
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
    }
}
