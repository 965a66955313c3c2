//! The content store: blobs and manifests kept by digest, tags kept with the time they were
//! fetched, on a local disk.
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

pub mod flight;
pub mod links;
pub mod owner;
pub mod remote;
pub mod space;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub use crate::clock::{now_ms, now_secs};
pub use crate::metrics::Metrics;
pub use flight::{BlobLookup, Follow, Hit, Lead};

use crate::oci::Digest;

/// How a proxy's store is set up (`: .cache`, `: .ttl`, `: .max-size` under `+ .proxy`).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The local disk tier (with an S3 tier, a cache of it).
    pub root: PathBuf,
    /// The shared S3 tier (`: .cache s3://bucket/prefix`).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Blob,
    Manifest,
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    size: u64,
    last_use: SystemTime,
    readers: u32,
}

/// A tag as last seen upstream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagEntry {
    pub digest: String,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Seconds since the epoch when the upstream last confirmed it.
    #[serde(rename = "checkedAt")]
    pub checked_at: u64,
    /// The same in milliseconds, so a TTL is kept to the millisecond, not to the second
    /// (absent in records without it: then `checked_at` counts).
    #[serde(rename = "checkedAtMs", default)]
    pub checked_at_ms: u64,
}

impl TagEntry {
    /// `digest` (of media type `media_type`), confirmed by the upstream just now.
    pub fn confirmed_now(digest: String, media_type: String) -> Self {
        let ms = now_ms();
        Self {
            digest,
            media_type,
            checked_at: ms / 1000,
            checked_at_ms: ms,
        }
    }

    /// The same tag, confirmed again just now.
    pub fn reconfirmed(self) -> Self {
        Self::confirmed_now(self.digest, self.media_type)
    }

    /// When the upstream last confirmed it, in milliseconds since the epoch. A time further in
    /// the future than [`MAX_CLOCK_SKEW`] (a record from a replica with a broken clock, or a
    /// forged one in the shared store) counts as never: the tag is stale and revalidated,
    /// instead of trusted forever.
    pub fn checked_ms(&self) -> u64 {
        let ms = if self.checked_at_ms > 0 {
            self.checked_at_ms
        } else {
            self.checked_at.saturating_mul(1000)
        };
        let latest = now_ms().saturating_add(MAX_CLOCK_SKEW.as_millis() as u64);
        if ms > latest {
            0
        } else {
            ms
        }
    }

    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.checked_ms()))
    }
}

pub struct Store {
    pub config: StoreConfig,
    pub metrics: Arc<Metrics>,
    pub(crate) remote: Option<remote::Remote>,
    index: Mutex<HashMap<String, Entry>>,
    pub(crate) inflight: Mutex<HashMap<String, Arc<flight::InFlight>>>,
    /// Blobs being copied to the S3 tier now.
    sharing: std::sync::atomic::AtomicUsize,
    /// Bytes promised to fetches in flight (see [`space`]).
    pub(crate) space: Mutex<space::Reserved>,
    /// This process's claim on its temporary files (see [`owner`]).
    owner: owner::TempOwner,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.config.root)
            .finish()
    }
}

impl Store {
    /// Opens (creating) the store at `config.root`: removes temporary leftovers of a crash and
    /// rebuilds the index from what is on disk.
    pub fn open(config: StoreConfig, metrics: Arc<Metrics>) -> io::Result<Arc<Self>> {
        let root = &config.root;
        for dir in ["blobs/sha256", "manifests/sha256", "tags", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Our own claim first, then the leftovers of owners that are gone (never those of a
        // process still using the store: `acr warm` beside a running mirror).
        let owner = owner::TempOwner::claim(root)?;
        let leftovers = owner::remove_abandoned(root);
        if leftovers > 0 {
            tracing::info!(root = %root.display(), leftovers, "removed unfinished downloads of an earlier run");
        }
        let mut index = HashMap::new();
        scan(&root.join("blobs/sha256"), Kind::Blob, &mut index)?;
        scan(&root.join("manifests/sha256"), Kind::Manifest, &mut index)?;
        let remote = match &config.remote {
            Some(rc) => Some(remote::Remote::new(rc.clone())?),
            None => None,
        };
        let store = Self {
            config,
            metrics,
            remote,
            index: Mutex::new(index),
            inflight: Mutex::new(HashMap::new()),
            sharing: std::sync::atomic::AtomicUsize::new(0),
            space: Mutex::new(space::Reserved::default()),
            owner,
        };
        store.update_gauges();
        Ok(Arc::new(store))
    }

    pub fn root(&self) -> &Path {
        &self.config.root
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        let shard = hex.get(..2).unwrap_or("00");
        self.config.root.join("blobs/sha256").join(shard).join(hex)
    }

    fn manifest_path(&self, hex: &str) -> PathBuf {
        self.config.root.join("manifests/sha256").join(hex)
    }

    pub(crate) fn tag_path(&self, ns: &str, repo: &str, tag: &str) -> PathBuf {
        // Names are validated by the route parser (no `..`); `ns` is a host[:port].
        self.config
            .root
            .join("tags")
            .join(ns.replace('/', "_"))
            .join(repo)
            .join("_tags")
            .join(tag)
    }

    pub(crate) fn temp_path(&self, hex: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.config
            .root
            .join("tmp")
            .join(format!("{hex}.{}.{n}", self.owner.id()))
    }

    pub(crate) fn update_gauges(&self) {
        if let Ok(index) = self.index.lock() {
            let bytes: u64 = index.values().map(|e| e.size).sum();
            self.metrics.store_bytes.store(bytes, Ordering::Relaxed);
            self.metrics
                .store_objects
                .store(index.len() as u64, Ordering::Relaxed);
        }
    }

    /// Marks `hex` as used now (index and file mtime) and, with `reader`, as being read. An
    /// object missing from the index was committed by another process using the same store
    /// (`acr warm` beside a running mirror): it joins the index here, so it is counted and
    /// evicted like the others.
    pub(crate) fn touch(&self, hex: &str, path: &Path, reader: bool) {
        let now = SystemTime::now();
        let mut persist = true;
        let mut adopted = false;
        if let Ok(mut index) = self.index.lock() {
            if !index.contains_key(hex) {
                if let Ok(meta) = std::fs::metadata(path) {
                    let kind = if path.starts_with(self.config.root.join("manifests")) {
                        Kind::Manifest
                    } else {
                        Kind::Blob
                    };
                    index.insert(
                        hex.to_string(),
                        Entry {
                            kind,
                            size: meta.len(),
                            last_use: UNIX_EPOCH,
                            readers: 0,
                        },
                    );
                    adopted = true;
                }
            }
            if let Some(e) = index.get_mut(hex) {
                // The index keeps the exact order; the file's mtime (the order after a restart)
                // is written at most once a minute per object, not on every hit.
                persist = now.duration_since(e.last_use).unwrap_or_default() >= MTIME_EVERY;
                e.last_use = now;
                if reader {
                    e.readers += 1;
                }
            }
        }
        if persist {
            if let Ok(f) = std::fs::File::options().write(true).open(path) {
                let _ = f.set_modified(now);
            }
        }
        if adopted {
            tracing::debug!(digest = %format!("sha256:{hex}"), "found an object another process committed");
            self.update_gauges();
        }
    }

    pub(crate) fn release(&self, hex: &str) {
        if let Ok(mut index) = self.index.lock() {
            if let Some(e) = index.get_mut(hex) {
                e.readers = e.readers.saturating_sub(1);
            }
        }
    }

    /// Adds a committed object to the index as used now (keeping the count of its readers if
    /// a request found it already).
    pub(crate) fn record(&self, hex: &str, size: u64, kind: Kind) {
        if let Ok(mut index) = self.index.lock() {
            let now = SystemTime::now();
            index
                .entry(hex.to_string())
                .and_modify(|e| {
                    e.kind = kind;
                    e.size = size;
                    e.last_use = now;
                })
                .or_insert(Entry {
                    kind,
                    size,
                    last_use: now,
                    readers: 0,
                });
        }
    }

    /// Records a committed object and evicts what the bound requires.
    pub(crate) fn committed(&self, hex: &str, size: u64, kind: Kind) {
        self.record(hex, size, kind);
        self.evict();
        self.update_gauges();
    }

    /// Bytes free for an unprivileged writer on the store's file system.
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.config.root.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid NUL-terminated path and a statvfs to fill.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }

    /// Whether a blob of `need` bytes can be stored, evicting what nobody reads if need be.
    /// `false`: it cannot fit even then (larger than [`StoreConfig::max_blob_size`], than
    /// `max-size` less what is being read or reserved, or than the disk's free space plus
    /// what eviction could free), and nothing was evicted. Evicts nothing itself: the fetch
    /// reserves its room (and evicts for it) when it starts.
    pub fn make_room(&self, need: u64) -> bool {
        self.check_room(need, need).is_ok()
    }

    /// Removes least-recently-used objects nobody is reading until the store, with the bytes
    /// reserved for fetches in flight, fits `max_size`, and the disk has room for what those
    /// fetches still have to write.
    pub(crate) fn evict(&self) {
        let (reserved, outstanding) = self
            .space
            .lock()
            .map(|s| (s.bytes, s.outstanding()))
            .unwrap_or((0, 0));
        if let Some(max) = self.config.max_size {
            let victims: Vec<(String, Kind)> = {
                let Ok(mut index) = self.index.lock() else {
                    return;
                };
                let mut total: u64 = index.values().map(|e| e.size).sum::<u64>() + reserved;
                if total <= max {
                    Vec::new()
                } else {
                    let mut order: Vec<(String, SystemTime, u64, Kind)> = index
                        .iter()
                        .filter(|(_, e)| e.readers == 0)
                        .map(|(k, e)| (k.clone(), e.last_use, e.size, e.kind))
                        .collect();
                    order.sort_by_key(|(_, t, _, _)| *t);
                    let mut out = Vec::new();
                    for (hex, _, size, kind) in order {
                        if total <= max {
                            break;
                        }
                        index.remove(&hex);
                        total = total.saturating_sub(size);
                        out.push((hex, kind));
                    }
                    out
                }
            };
            for (hex, kind) in victims {
                self.remove_object(&hex, kind);
                tracing::debug!(digest = %format!("sha256:{hex}"), "evicted");
            }
        }
        // The disk: room for what the fetches in flight still have to write.
        let want = outstanding.saturating_add(space::DISK_SLACK);
        while self.free_bytes().is_some_and(|free| free < want) {
            let victim = {
                let Ok(mut index) = self.index.lock() else {
                    return;
                };
                let oldest = index
                    .iter()
                    .filter(|(_, e)| e.readers == 0)
                    .min_by_key(|(_, e)| e.last_use)
                    .map(|(k, e)| (k.clone(), e.kind));
                if let Some((hex, _)) = &oldest {
                    index.remove(hex);
                }
                oldest
            };
            let Some((hex, kind)) = victim else { break };
            self.remove_object(&hex, kind);
            tracing::info!(digest = %format!("sha256:{hex}"), "evicted to make room on a full disk");
        }
        self.update_gauges();
    }

    /// Deletes a committed object's files (it already left the index) and counts it.
    fn remove_object(&self, hex: &str, kind: Kind) {
        let path = match kind {
            Kind::Blob => self.blob_path(hex),
            Kind::Manifest => self.manifest_path(hex),
        };
        let _ = std::fs::remove_file(&path);
        if kind == Kind::Manifest {
            let _ = std::fs::remove_file(path.with_extension("type"));
        }
        Metrics::inc(&self.metrics.evictions);
    }

    /// Committed bytes, and the part of them nobody is reading (what eviction could free).
    fn committed_bytes(&self) -> (u64, u64) {
        self.index
            .lock()
            .map(|index| {
                index.values().fold((0, 0), |(all, free), e| {
                    (
                        all + e.size,
                        if e.readers == 0 { free + e.size } else { free },
                    )
                })
            })
            .unwrap_or((0, 0))
    }

    /// The size of a committed blob on the local disk (for HEAD; never starts a fetch).
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.blob_path(digest.hex()))
            .ok()
            .map(|m| m.len())
    }

    /// The size of a blob on the local disk, else in the S3 tier (for HEAD; never fetches).
    pub async fn blob_size_anywhere(&self, digest: &Digest) -> Option<u64> {
        if let Some(size) = self.blob_size(digest) {
            return Some(size);
        }
        let remote = self.remote.as_ref()?;
        match remote
            .head(&remote.key(&["blobs", "sha256", digest.hex()]))
            .await
        {
            Ok(size) => size,
            Err(e) => {
                tracing::warn!(digest = %digest, "the S3 tier failed: {e}");
                None
            }
        }
    }

    /// Whether a manifest is on the local disk (a stat; never reads it).
    pub fn has_manifest(&self, digest: &Digest) -> bool {
        self.manifest_path(digest.hex()).exists()
    }

    /// A manifest by digest, with its media type: from the local disk, else from the S3 tier.
    pub async fn manifest(&self, digest: &Digest) -> Option<(Bytes, String)> {
        let path = self.manifest_path(digest.hex());
        if let Ok(bytes) = std::fs::read(&path) {
            // Checked on the way in; checked again on the way out, it costs little for manifests.
            if Digest::of(&bytes) == *digest {
                let media_type =
                    std::fs::read_to_string(path.with_extension("type")).unwrap_or_default();
                self.touch(digest.hex(), &path, false);
                return Some((Bytes::from(bytes), media_type));
            }
            tracing::warn!(digest = %digest, "a stored manifest does not match its digest; dropping it");
            let _ = std::fs::remove_file(&path);
        }
        let remote = self.remote.as_ref()?;
        let key = remote.key(&["manifests", "sha256", digest.hex()]);
        let limit = crate::oci::media::MAX_MANIFEST_BYTES as u64;
        let bytes = match remote.get_bytes_limited(&key, limit).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.remote_corrupt(&key, digest, &e.to_string()).await;
                return None;
            }
            Err(e) => {
                tracing::warn!(digest = %digest, "the S3 tier failed: {e}");
                return None;
            }
        };
        if Digest::of(&bytes) != *digest {
            self.remote_corrupt(&key, digest, "the manifest does not match its digest")
                .await;
            return None;
        }
        let type_key = remote.key(&["manifests", "sha256", &format!("{}.type", digest.hex())]);
        let media_type = match remote.get_bytes_limited(&type_key, MAX_MEDIA_TYPE).await {
            Ok(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
            _ => String::new(),
        };
        let _ = self.put_local_manifest(digest, &bytes, &media_type);
        Some((bytes, media_type))
    }

    /// An object of the S3 tier that is not what its key says (`why`): deleted there, so the
    /// next request fetches it from the upstream (which shares it again), and counted.
    pub(crate) async fn remote_corrupt(&self, key: &str, digest: &Digest, why: &str) {
        Metrics::inc(&self.metrics.remote_corrupt);
        tracing::warn!(%digest, key, "the S3 tier holds a bad object ({why}): deleting it, the upstream's copy replaces it");
        if let Some(remote) = &self.remote {
            if let Err(e) = remote.delete(key).await {
                tracing::warn!(%digest, key, "could not delete the bad object from the S3 tier: {e}");
            }
        }
    }

    fn put_local_manifest(
        &self,
        digest: &Digest,
        bytes: &[u8],
        media_type: &str,
    ) -> io::Result<()> {
        let path = self.manifest_path(digest.hex());
        write_atomic(self, &path.with_extension("type"), media_type.as_bytes())?;
        write_atomic(self, &path, bytes)?;
        self.committed(digest.hex(), bytes.len() as u64, Kind::Manifest);
        Ok(())
    }

    /// Stores a manifest whose bytes hash to `digest`, locally and in the S3 tier.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        bytes: &[u8],
        media_type: &str,
    ) -> io::Result<()> {
        if Digest::of(bytes) != *digest {
            return Err(io::Error::other("manifest does not match its digest"));
        }
        self.put_local_manifest(digest, bytes, media_type)?;
        if let Some(remote) = &self.remote {
            let type_key = remote.key(&["manifests", "sha256", &format!("{}.type", digest.hex())]);
            let key = remote.key(&["manifests", "sha256", digest.hex()]);
            // The type first: a replica that finds the manifest finds its type too.
            let put = async {
                remote
                    .put_bytes(&type_key, Bytes::from(media_type.to_string()), false)
                    .await?;
                remote
                    .put_bytes(&key, Bytes::copy_from_slice(bytes), false)
                    .await
            };
            if let Err(e) = put.await {
                tracing::warn!(digest = %digest, "could not share the manifest through S3: {e}");
            }
        }
        Ok(())
    }

    fn tag_key(&self, remote: &remote::Remote, ns: &str, repo: &str, tag: &str) -> String {
        let ns = ns.replace('/', "_");
        let mut parts = vec!["tags", ns.as_str()];
        parts.extend(repo.split('/'));
        parts.extend(["_tags", tag]);
        remote.key(&parts)
    }

    /// What the tag pointed at when last checked: locally, else in the S3 tier (a replica's).
    /// A local record within its TTL is the answer without asking S3.
    pub async fn tag(&self, ns: &str, repo: &str, tag: &str) -> Option<TagEntry> {
        let local = std::fs::read(self.tag_path(ns, repo, tag))
            .ok()
            .and_then(|t| serde_json::from_slice::<TagEntry>(&t).ok());
        let Some(remote) = &self.remote else {
            return local;
        };
        if let Some(l) = &local {
            if l.age() < self.config.ttl_for(ns) {
                return local;
            }
        }
        let shared = match remote
            .get_bytes_limited(&self.tag_key(remote, ns, repo, tag), MAX_TAG_RECORD)
            .await
        {
            Ok(Some(b)) => serde_json::from_slice::<TagEntry>(&b).ok(),
            _ => None,
        };
        // The most recently confirmed of the two.
        match (local, shared) {
            (Some(l), Some(s)) => Some(if s.checked_ms() > l.checked_ms() {
                s
            } else {
                l
            }),
            (l, s) => l.or(s),
        }
    }

    pub async fn put_tag(
        &self,
        ns: &str,
        repo: &str,
        tag: &str,
        entry: &TagEntry,
    ) -> io::Result<()> {
        let path = self.tag_path(ns, repo, tag);
        let text = serde_json::to_vec(entry).map_err(io::Error::other)?;
        write_atomic(self, &path, &text)?;
        if let Some(remote) = &self.remote {
            if let Err(e) = remote
                .put_bytes(
                    &self.tag_key(remote, ns, repo, tag),
                    Bytes::from(text),
                    true,
                )
                .await
            {
                tracing::warn!(ns, repo, tag, "could not share the tag through S3: {e}");
            }
        }
        Ok(())
    }

    /// A small committed blob (a config) read whole, checked against its digest: from the
    /// local disk, else the S3 tier. `None` when absent or larger than `limit`.
    pub async fn small_blob(&self, digest: &Digest, limit: u64) -> Option<Bytes> {
        let path = self.blob_path(digest.hex());
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.len() <= limit {
                if let Ok(bytes) = std::fs::read(&path) {
                    if Digest::of(&bytes) == *digest {
                        self.touch(digest.hex(), &path, false);
                        return Some(Bytes::from(bytes));
                    }
                }
            }
            return None;
        }
        let remote = self.remote.as_ref()?;
        let key = remote.key(&["blobs", "sha256", digest.hex()]);
        match remote.get_bytes_limited(&key, limit).await {
            Ok(Some(b)) if Digest::of(&b) == *digest => {
                let _ = self.put_local_blob(digest, &b);
                Some(b)
            }
            Ok(Some(_)) => {
                self.remote_corrupt(&key, digest, "the blob does not match its digest")
                    .await;
                None
            }
            // Larger than `limit`: not necessarily bad (the caller's limit is its own).
            _ => None,
        }
    }

    fn put_local_blob(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        write_atomic(self, &self.blob_path(digest.hex()), bytes)?;
        self.committed(digest.hex(), bytes.len() as u64, Kind::Blob);
        Ok(())
    }

    /// Stores a blob acr made or was given (a rewritten config, an injected layer) whose
    /// bytes hash to `digest`, locally and in the S3 tier. Already there: nothing to do.
    pub async fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        if self.blob_size(digest) == Some(bytes.len() as u64) {
            return Ok(());
        }
        if Digest::of(bytes) != *digest {
            return Err(io::Error::other("blob does not match its digest"));
        }
        self.put_local_blob(digest, bytes)?;
        self.share_blob(digest.hex()).await;
        Ok(())
    }

    /// Stores a blob from a file on disk, streamed and checked against `digest` on the way
    /// (the file may have changed since it was read). Returns its size.
    pub async fn put_blob_file(&self, digest: &Digest, source: &Path) -> io::Result<u64> {
        if let Some(size) = self.blob_size(digest) {
            return Ok(size);
        }
        let tmp = self.temp_path(digest.hex());
        let (src, dst) = (source.to_path_buf(), tmp.clone());
        let copied = tokio::task::spawn_blocking(move || -> io::Result<(u64, Digest)> {
            use sha2::Digest as _;
            use std::io::{Read, Write};
            let mut input = std::fs::File::open(&src)?;
            let mut out = std::fs::File::create(&dst)?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                size += n as u64;
            }
            out.sync_all()?;
            Ok((size, Digest::from_sha256(hasher.finalize().into())))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        let (size, got) = match copied {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if got != *digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(io::Error::other(format!(
                "{} now hashes to {got}, not {digest}: it changed after the pipeline was compiled",
                source.display()
            )));
        }
        let path = self.blob_path(digest.hex());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        self.committed(digest.hex(), size, Kind::Blob);
        self.share_blob(digest.hex()).await;
        Ok(size)
    }

    /// Where a committed blob is on the local disk (to read it again, e.g. to unpack).
    pub fn blob_file(&self, digest: &Digest) -> Option<PathBuf> {
        let p = self.blob_path(digest.hex());
        p.exists().then_some(p)
    }

    /// A temporary file in the store, on the same file system as the blobs.
    pub fn temp_file(&self, label: &str) -> PathBuf {
        self.temp_path(label)
    }

    /// Moves a verified temporary file (see `temp_file`) into place as blob `digest`.
    pub async fn commit_blob_file(&self, digest: &Digest, tmp: &Path, size: u64) -> io::Result<()> {
        let path = self.blob_path(digest.hex());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(tmp, &path)?;
        self.committed(digest.hex(), size, Kind::Blob);
        self.share_blob(digest.hex()).await;
        Ok(())
    }

    /// The blob from the S3 tier, for a lead to copy down, verified whole before its first
    /// byte is handed on: the shared store is not trusted, and a bad copy there must be
    /// replaced by the upstream's within the same request (the caller fetches from the
    /// upstream on `None`). Its stated size is checked against the room in the store before
    /// anything is read, the read stops at that size, and a body that does not hash to
    /// `digest` is deleted from S3 (and counted). The copy waits in an unlinked temporary
    /// file; the stream returned reads it.
    pub async fn remote_blob(&self, digest: &Digest) -> Option<(u64, crate::oci::BodyStream)> {
        let remote = self.remote.as_ref()?;
        let key = remote.key(&["blobs", "sha256", digest.hex()]);
        let (size, body) = match remote.get_stream(&key, None).await {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(digest = %digest, "the S3 tier failed: {e}");
                return None;
            }
        };
        if let Err(e) = self.check_room(size.saturating_mul(2), size) {
            // Not stored from S3; the upstream's answer is refused (or not) the same way.
            tracing::warn!(digest = %digest, size, "not copying the blob down from S3: {}", e.message);
            return None;
        }
        let tmp = self.temp_path(digest.hex());
        match self.verify_remote_copy(body, size, digest, &tmp).await {
            Ok(file) => {
                let _ = std::fs::remove_file(&tmp);
                Some((size, file_stream(file, size)))
            }
            Err(RemoteCopy::Bad(why)) => {
                let _ = std::fs::remove_file(&tmp);
                self.remote_corrupt(&key, digest, &why).await;
                // A local copy of what S3 held would be as bad; drop it too.
                if let Ok(mut index) = self.index.lock() {
                    if index.get(digest.hex()).is_some_and(|e| e.readers == 0) {
                        index.remove(digest.hex());
                        let _ = std::fs::remove_file(self.blob_path(digest.hex()));
                    }
                }
                None
            }
            Err(RemoteCopy::Failed(e)) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(digest = %digest, "copying the blob down from S3 failed: {e}");
                None
            }
        }
    }

    /// Writes `body` (S3 says `size` bytes) to `tmp`, hashing it; the file, rewound, when it
    /// is exactly `size` bytes that hash to `digest`.
    async fn verify_remote_copy(
        &self,
        mut body: crate::oci::BodyStream,
        size: u64,
        digest: &Digest,
        tmp: &Path,
    ) -> Result<std::fs::File, RemoteCopy> {
        use futures_util::StreamExt;
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt;
        let failed = |e: io::Error| RemoteCopy::Failed(e.to_string());
        // Read and write: the stream handed on reads this same file.
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .await
            .map_err(failed)?;
        let mut hasher = sha2::Sha256::new();
        let mut written = 0u64;
        let idle = self.config.idle_timeout;
        loop {
            let next = tokio::time::timeout(idle, body.next())
                .await
                .map_err(|_| RemoteCopy::Failed(format!("S3 sent nothing for {idle:?}")))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(failed)?;
            written += chunk.len() as u64;
            if written > size {
                return Err(RemoteCopy::Bad(format!(
                    "it sent more than the {size} bytes it stated"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(failed)?;
        }
        if written != size {
            return Err(RemoteCopy::Failed(format!(
                "it sent {written} of {size} bytes"
            )));
        }
        let got = hex::encode(hasher.finalize());
        if got != digest.hex() {
            return Err(RemoteCopy::Bad(format!("its bytes hash to sha256:{got}")));
        }
        file.flush().await.map_err(failed)?;
        let file = file.into_std().await;
        let mut file = file;
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).map_err(failed)?;
        Ok(file)
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

    /// Shares a committed blob through the S3 tier (create-if-absent: replicas never overwrite).
    pub(crate) async fn share_blob(&self, hex: &str) {
        let Some(remote) = &self.remote else { return };
        self.sharing.fetch_add(1, Ordering::SeqCst);
        let _done = Sharing(&self.sharing);
        let key = remote.key(&["blobs", "sha256", hex]);
        let path = self.blob_path(hex);
        match remote.put_file_create(&key, &path).await {
            Ok(outcome) => {
                tracing::debug!(digest = %format!("sha256:{hex}"), ?outcome, "shared through S3")
            }
            Err(e) => {
                tracing::warn!(digest = %format!("sha256:{hex}"), "could not share the blob through S3: {e}")
            }
        }
    }
}

/// Why a copy from the S3 tier was not used.
enum RemoteCopy {
    /// The object is not what its key says: delete it.
    Bad(String),
    /// The transfer failed (S3 unreachable, the disk): try the upstream, keep the object.
    Failed(String),
}

/// The first `size` bytes of `file`, read in pieces on the blocking pool.
fn file_stream(file: std::fs::File, size: u64) -> crate::oci::BodyStream {
    const PIECE: usize = 256 * 1024;
    let file = Arc::new(file);
    Box::pin(futures_util::stream::unfold(
        (file, 0u64),
        move |(file, pos)| async move {
            if pos >= size {
                return None;
            }
            let want = (size - pos).min(PIECE as u64) as usize;
            let reader = file.clone();
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; want];
                let n = reader.read_at(&mut buf, pos)?;
                buf.truncate(n);
                Ok::<_, io::Error>(Bytes::from(buf))
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
            match read {
                Ok(b) if b.is_empty() => Some((
                    Err(io::Error::other("the copy from S3 ended early")),
                    (file, size),
                )),
                Ok(b) => {
                    let n = b.len() as u64;
                    Some((Ok(b), (file, pos + n)))
                }
                Err(e) => Some((Err(e), (file, size))),
            }
        },
    ))
}

/// Counts a blob on its way to S3 until the upload ends (or its task is dropped).
struct Sharing<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Sharing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How far in the future a tag record's check time may be (clocks of replicas differ a
/// little) before the record is treated as never checked.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The largest tag record read from the S3 tier (they are about 200 bytes).
const MAX_TAG_RECORD: u64 = 64 * 1024;

/// The largest manifest media type read from the S3 tier.
const MAX_MEDIA_TYPE: u64 = 1024;

/// How stale a stored object's mtime (its last use across restarts) may get.
const MTIME_EVERY: Duration = Duration::from_secs(60);

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes through a temporary file in the store, fsyncs, and renames into place.
fn write_atomic(store: &Store, path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = store.temp_path("meta");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn scan(dir: &Path, kind: Kind, index: &mut HashMap<String, Entry>) -> io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                index.insert(
                    name,
                    Entry {
                        kind,
                        size: meta.len(),
                        last_use: meta.modified().unwrap_or(UNIX_EPOCH),
                        readers: 0,
                    },
                );
            }
        }
    }
    Ok(())
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
