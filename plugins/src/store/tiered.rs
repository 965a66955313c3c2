//! The "local, then shared" logic, written once: every object is looked for on the local disk
//! tier first, then in the shared tier (when replicas share one); what the shared tier has is
//! verified before it is served and then kept locally (promoted); what is written goes to the
//! local disk, then through to the shared tier.
//!
//! The shared tier is not trusted: what it holds is read within a bound and checked against
//! its digest like an upstream's answer, and a bad object is deleted there (so the next request
//! fetches it from the upstream, which shares it again) and counted
//! (`acr_store_remote_corrupt_total`). A failing shared tier is logged and otherwise ignored:
//! the upstream is asked instead. Large blobs are copied down in `copy_down`; links in `links`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::tier::{ObjectKey, Tier, WriteMode};
use super::{Kind, Metrics, Store, TagEntry};
use crate::oci::Digest;

/// The largest tag record read from the shared tier (they are about 200 bytes).
const MAX_TAG_RECORD: u64 = 64 * 1024;

/// The largest manifest media type read from the shared tier.
const MAX_MEDIA_TYPE: u64 = 1024;

/// Whether an object of the shared tier larger than the reader's limit is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Oversize {
    /// Larger than any object of its kind may be: deleted like a mismatch.
    Bad,
    /// Larger than this reader wants (its limit is its own): left alone.
    Skipped,
}

impl Store {
    /// The shared tier, when replicas share content through one.
    pub fn shared(&self) -> Option<&dyn Tier> {
        self.shared.as_deref()
    }

    /// `key` from the shared tier, at most `limit` bytes, when it hashes to `digest`; a bad
    /// object is deleted there and counted, a failing tier logged.
    async fn read_shared_verified(
        &self,
        key: ObjectKey<'_>,
        limit: u64,
        digest: &Digest,
        oversize: Oversize,
    ) -> Option<Bytes> {
        let shared = self.shared()?;
        match shared.read(key, limit).await {
            Ok(Some(bytes)) if Digest::of(&bytes) == *digest => Some(bytes),
            Ok(Some(_)) => {
                self.shared_corrupt(key, digest, "its bytes do not match its digest")
                    .await;
                None
            }
            Ok(None) => None,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                if oversize == Oversize::Bad {
                    self.shared_corrupt(key, digest, &e.to_string()).await;
                }
                None
            }
            Err(e) => {
                tracing::warn!(digest = %digest, "the {} tier failed: {e}", shared.name());
                None
            }
        }
    }

    /// An object of the shared tier that is not what its key says (`why`): deleted there, so
    /// the next request fetches it from the upstream (which shares it again), and counted.
    pub(crate) async fn shared_corrupt(&self, key: ObjectKey<'_>, digest: &Digest, why: &str) {
        Metrics::inc(&self.metrics.remote_corrupt);
        let Some(shared) = self.shared() else { return };
        let tier = shared.name();
        tracing::warn!(%digest, ?key, "the {tier} tier holds a bad object ({why}): deleting it, the upstream's copy replaces it");
        if let Err(e) = shared.delete(key).await {
            tracing::warn!(%digest, ?key, "could not delete the bad object from the {tier} tier: {e}");
        }
    }

    /// Writes `objects` through to the shared tier, in order, stopping at the first failure
    /// (logged as not sharing `what`).
    async fn write_shared(&self, objects: Vec<(ObjectKey<'_>, Bytes, WriteMode)>, what: &str) {
        let Some(shared) = self.shared() else { return };
        for (key, bytes, mode) in objects {
            if let Err(e) = shared.write(key, bytes, mode).await {
                tracing::warn!(
                    ?key,
                    "could not share the {what} through {}: {e}",
                    shared.name()
                );
                return;
            }
        }
    }

    /// The size of a committed blob on the local disk (for HEAD; never starts a fetch).
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.local.blob_path(digest.hex()))
            .ok()
            .map(|m| m.len())
    }

    /// The size of a blob on the local disk, else in the shared tier (for HEAD; never fetches).
    pub async fn blob_size_anywhere(&self, digest: &Digest) -> Option<u64> {
        if let Some(size) = self.blob_size(digest) {
            return Some(size);
        }
        let shared = self.shared()?;
        match shared.size(ObjectKey::Blob(digest.hex())).await {
            Ok(size) => size,
            Err(e) => {
                tracing::warn!(digest = %digest, "the {} tier failed: {e}", shared.name());
                None
            }
        }
    }

    /// Whether a manifest is on the local disk (a stat; never reads it).
    pub fn has_manifest(&self, digest: &Digest) -> bool {
        self.local.manifest_path(digest.hex()).exists()
    }

    /// A manifest by digest, with its media type: from the local disk, else from the shared
    /// tier (then kept locally).
    pub async fn manifest(&self, digest: &Digest) -> Option<(Bytes, String)> {
        let hex = digest.hex();
        let path = self.local.manifest_path(hex);
        if let Some(kept) = self.manifests_in_memory.get(hex) {
            self.touch(hex, &path, false);
            return Some(kept);
        }
        if let Ok(bytes) = std::fs::read(&path) {
            // Checked on the way in; checked again when read from the disk (then kept in
            // memory, checked).
            if Digest::of(&bytes) == *digest {
                let media_type =
                    std::fs::read_to_string(path.with_extension("type")).unwrap_or_default();
                self.touch(hex, &path, false);
                let bytes = Bytes::from(bytes);
                let weight = bytes.len() + media_type.len();
                self.manifests_in_memory.put(
                    hex.to_string(),
                    (bytes.clone(), media_type.clone()),
                    weight,
                );
                return Some((bytes, media_type));
            }
            tracing::warn!(digest = %digest, "a stored manifest does not match its digest; dropping it");
            let _ = std::fs::remove_file(&path);
        }
        let limit = crate::oci::media::MAX_MANIFEST_BYTES as u64;
        let bytes = self
            .read_shared_verified(ObjectKey::Manifest(hex), limit, digest, Oversize::Bad)
            .await?;
        let media_type = match self
            .shared()?
            .read(ObjectKey::MediaType(hex), MAX_MEDIA_TYPE)
            .await
        {
            Ok(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
            _ => String::new(),
        };
        let _ = self.put_local_manifest(digest, &bytes, &media_type);
        Some((bytes, media_type))
    }

    fn put_local_manifest(
        &self,
        digest: &Digest,
        bytes: &[u8],
        media_type: &str,
    ) -> io::Result<()> {
        let path = self.local.manifest_path(digest.hex());
        self.local
            .write_atomic(&path.with_extension("type"), media_type.as_bytes())?;
        self.local.write_atomic(&path, bytes)?;
        self.committed(digest.hex(), bytes.len() as u64, Kind::Manifest);
        Ok(())
    }

    /// Stores a manifest whose bytes hash to `digest`, locally and in the shared tier.
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
        let hex = digest.hex();
        // The type first: a replica that finds the manifest finds its type too.
        let objects = vec![
            (
                ObjectKey::MediaType(hex),
                Bytes::from(media_type.to_string()),
                WriteMode::Create,
            ),
            (
                ObjectKey::Manifest(hex),
                Bytes::copy_from_slice(bytes),
                WriteMode::Create,
            ),
        ];
        self.write_shared(objects, "manifest").await;
        Ok(())
    }

    /// What the tag pointed at when last checked: in memory or locally, else in the shared
    /// tier (a replica's). A record within its TTL, in memory or local, is the answer without
    /// asking the shared tier.
    pub async fn tag(&self, ns: &str, repo: &str, tag: &str) -> Option<TagEntry> {
        let ttl = self.config.ttl_for(ns);
        let key = (ns.to_string(), repo.to_string(), tag.to_string());
        if let Some(kept) = self.tags_in_memory.get(&key) {
            if kept.age() < ttl {
                return Some(kept);
            }
        }
        let local = std::fs::read(self.local.tag_path(ns, repo, tag))
            .ok()
            .and_then(|t| serde_json::from_slice::<TagEntry>(&t).ok());
        match &local {
            Some(l) => self.tags_in_memory.put(key, l.clone(), 1),
            None => self.tags_in_memory.forget(&key),
        }
        let Some(shared) = self.shared() else {
            return local;
        };
        if local.as_ref().is_some_and(|l| l.age() < ttl) {
            return local;
        }
        let shared = match shared
            .read(ObjectKey::Tag { ns, repo, tag }, MAX_TAG_RECORD)
            .await
        {
            Ok(Some(b)) => serde_json::from_slice::<TagEntry>(&b).ok(),
            _ => None,
        };
        // The most recently confirmed of the two; a newer shared record is kept locally, so
        // the next request within its TTL does not ask the shared tier again.
        match (local, shared) {
            (Some(l), Some(s)) if s.checked_ms() <= l.checked_ms() => Some(l),
            (l, None) => l,
            (_, Some(s)) => {
                if let Err(e) = self.keep_tag(ns, repo, tag, &s) {
                    tracing::debug!("could not keep a tag record locally: {e}");
                }
                Some(s)
            }
        }
    }

    pub async fn put_tag(
        &self,
        ns: &str,
        repo: &str,
        tag: &str,
        entry: &TagEntry,
    ) -> io::Result<()> {
        let text = self.keep_tag(ns, repo, tag, entry)?;
        let key = ObjectKey::Tag { ns, repo, tag };
        self.write_shared(vec![(key, Bytes::from(text), WriteMode::Overwrite)], "tag")
            .await;
        Ok(())
    }

    /// Writes a tag record to the local disk and keeps it in memory; its JSON.
    fn keep_tag(&self, ns: &str, repo: &str, tag: &str, entry: &TagEntry) -> io::Result<Vec<u8>> {
        let text = serde_json::to_vec(entry).map_err(io::Error::other)?;
        let key = (ns.to_string(), repo.to_string(), tag.to_string());
        // Forgotten first: a failed write leaves the disk's record to be read again.
        self.tags_in_memory.forget(&key);
        self.local
            .write_atomic(&self.local.tag_path(ns, repo, tag), &text)?;
        self.tags_in_memory.put(key, entry.clone(), 1);
        Ok(text)
    }

    /// A small committed blob (a config) read whole, checked against its digest: from the
    /// local disk, else the shared tier (then kept locally). `None` when absent or larger than
    /// `limit`.
    pub async fn small_blob(&self, digest: &Digest, limit: u64) -> Option<Bytes> {
        let path = self.local.blob_path(digest.hex());
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
        // Larger than `limit`: not necessarily bad (the caller's limit is its own).
        let bytes = self
            .read_shared_verified(
                ObjectKey::Blob(digest.hex()),
                limit,
                digest,
                Oversize::Skipped,
            )
            .await?;
        let _ = self.put_local_blob(digest, &bytes);
        Some(bytes)
    }

    fn put_local_blob(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.local
            .write_atomic(&self.local.blob_path(digest.hex()), bytes)?;
        self.committed(digest.hex(), bytes.len() as u64, Kind::Blob);
        Ok(())
    }

    /// Stores a blob acr made or was given (a rewritten config, an injected layer) whose
    /// bytes hash to `digest`, locally and in the shared tier. Already there: nothing to do.
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
        let tmp = self.local.temp_path(digest.hex());
        let (src, dst) = (source.to_path_buf(), tmp.clone());
        let copied = tokio::task::spawn_blocking(move || copy_hashing(&src, &dst))
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
        self.local
            .rename_into(&tmp, &self.local.blob_path(digest.hex()))?;
        self.committed(digest.hex(), size, Kind::Blob);
        self.share_blob(digest.hex()).await;
        Ok(size)
    }

    /// Where a committed blob is on the local disk (to read it again, e.g. to unpack).
    pub fn blob_file(&self, digest: &Digest) -> Option<PathBuf> {
        let p = self.local.blob_path(digest.hex());
        p.exists().then_some(p)
    }

    /// A temporary file in the store, on the same file system as the blobs.
    pub fn temp_file(&self, label: &str) -> PathBuf {
        self.local.temp_path(label)
    }

    /// Moves a verified temporary file (see `temp_file`) into place as blob `digest`.
    pub async fn commit_blob_file(&self, digest: &Digest, tmp: &Path, size: u64) -> io::Result<()> {
        let path = self.local.blob_path(digest.hex());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(tmp, &path)?;
        self.committed(digest.hex(), size, Kind::Blob);
        self.share_blob(digest.hex()).await;
        Ok(())
    }

    /// Shares a committed blob through the shared tier (create-if-absent: replicas never
    /// overwrite).
    pub(crate) async fn share_blob(&self, hex: &str) {
        let Some(shared) = self.shared() else { return };
        self.sharing.fetch_add(1, Ordering::SeqCst);
        let _done = Sharing(&self.sharing);
        let path = self.local.blob_path(hex);
        let tier = shared.name();
        match shared.write_file(ObjectKey::Blob(hex), &path).await {
            Ok(outcome) => {
                tracing::debug!(digest = %format!("sha256:{hex}"), ?outcome, "shared through {tier}")
            }
            Err(e) => {
                tracing::warn!(digest = %format!("sha256:{hex}"), "could not share the blob through {tier}: {e}")
            }
        }
    }
}

/// Copies `src` to `dst` (fsynced), hashing it: its size and digest.
fn copy_hashing(src: &Path, dst: &Path) -> io::Result<(u64, Digest)> {
    let mut out = std::fs::File::create(dst)?;
    let (digest, size) = crate::oci::copy_hashing(std::fs::File::open(src)?, &mut out, u64::MAX)?;
    out.sync_all()?;
    Ok((size, digest))
}

/// Counts a blob on its way to the shared tier until the upload ends (or its task is dropped).
struct Sharing<'a>(&'a AtomicUsize);

impl Drop for Sharing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
