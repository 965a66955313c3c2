//! The local disk tier: the store's objects as files under its root.
//!
//!     blobs/sha256/<2 hex>/<hex>          blobs, sharded
//!     manifests/sha256/<hex>[.type]       manifests and their media types
//!     tags/<ns>/<repo>/_tags/<tag>        tag records (JSON, see `TagEntry`)
//!     links/<ns>/<repo>/...               which repositories may read what (see `links`)
//!     tmp/<what>.<owner>.<n>              files being written (see `owner`)
//!     locks/<owner>.lock                  who owns which temporary files
//!
//! Every write goes to a temporary file of this process, is fsynced and renamed into place,
//! so only complete objects ever have their final name. The bookkeeping of what is here (the
//! index, eviction) is the store's (see `index`); single flight writes its own temporary files
//! here and renames them (see `flight`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::owner;
use super::tier::{ObjectKey, PutOutcome, Tier, WriteMode};
use crate::oci::BodyStream;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A store's directory on the local disk.
#[derive(Debug)]
pub struct DiskTier {
    root: PathBuf,
    /// This process's claim on its temporary files (see [`owner`]).
    owner: owner::TempOwner,
}

impl DiskTier {
    /// Opens (creating) the directory at `root`, and removes the temporary leftovers of
    /// processes that are gone (never those of a process still using it: `acr warm` beside a
    /// running mirror).
    pub fn open(root: &Path) -> io::Result<DiskTier> {
        for dir in ["blobs/sha256", "manifests/sha256", "tags", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Our own claim first, then the leftovers of owners that are gone.
        let owner = owner::TempOwner::claim(root)?;
        let leftovers = owner::remove_abandoned(root);
        if leftovers > 0 {
            tracing::info!(root = %root.display(), leftovers, "removed unfinished downloads of an earlier run");
        }
        Ok(DiskTier {
            root: root.to_path_buf(),
            owner,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        let shard = hex.get(..2).unwrap_or("00");
        self.root.join("blobs/sha256").join(shard).join(hex)
    }

    pub(crate) fn manifest_path(&self, hex: &str) -> PathBuf {
        self.root.join("manifests/sha256").join(hex)
    }

    pub(crate) fn tag_path(&self, ns: &str, repo: &str, tag: &str) -> PathBuf {
        // Names are validated by the route parser (no `..`); `ns` is a host[:port].
        self.root
            .join("tags")
            .join(ns.replace('/', "_"))
            .join(repo)
            .join("_tags")
            .join(tag)
    }

    /// The file of a store object.
    pub(crate) fn path_of(&self, key: ObjectKey<'_>) -> PathBuf {
        match key {
            ObjectKey::Blob(hex) => self.blob_path(hex),
            ObjectKey::Manifest(hex) => self.manifest_path(hex),
            ObjectKey::MediaType(hex) => self.manifest_path(hex).with_extension("type"),
            ObjectKey::Tag { ns, repo, tag } => self.tag_path(ns, repo, tag),
            ObjectKey::Link { scope, hex } => scope.dir(&self.root).join(hex),
            // Leases live only in a shared tier; a disk tier names them like one would.
            key @ (ObjectKey::BlobLease(_) | ObjectKey::TagLease { .. }) => key
                .parts()
                .iter()
                .fold(self.root.clone(), |p, part| p.join(part)),
        }
    }

    /// A new temporary file's name, owned by this process.
    pub(crate) fn temp_path(&self, label: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{label}.{}.{n}", self.owner.id()))
    }

    /// Writes through a temporary file in the store, fsyncs, and renames into place.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = self.temp_path("meta");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        self.rename_into(&tmp, path)
    }

    /// Moves a complete temporary file to its final name (removing it if that fails).
    pub(crate) fn rename_into(&self, tmp: &Path, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(tmp);
        })
    }

    /// Bytes free for an unprivileged writer on the store's file system.
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.root.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid NUL-terminated path and a statvfs to fill.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

impl Tier for DiskTier {
    fn name(&self) -> &str {
        "local disk"
    }

    fn size<'a>(&'a self, key: ObjectKey<'a>) -> BoxFuture<'a, io::Result<Option<u64>>> {
        let size = found(std::fs::metadata(self.path_of(key))).map(|m| m.map(|m| m.len()));
        futures_util::future::ready(size).boxed()
    }

    fn read<'a>(
        &'a self,
        key: ObjectKey<'a>,
        limit: u64,
    ) -> BoxFuture<'a, io::Result<Option<Bytes>>> {
        let path = self.path_of(key);
        let read = || -> io::Result<Option<Bytes>> {
            use std::io::Read;
            let Some(file) = found(std::fs::File::open(&path))? else {
                return Ok(None);
            };
            let too_large = |size: u64| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is {size} bytes, more than the {limit} allowed",
                        path.display()
                    ),
                )
            };
            let size = file.metadata()?.len();
            if size > limit {
                return Err(too_large(size));
            }
            let mut out = Vec::with_capacity(size as usize);
            file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
            if out.len() as u64 > limit {
                return Err(too_large(out.len() as u64));
            }
            Ok(Some(Bytes::from(out)))
        };
        futures_util::future::ready(read()).boxed()
    }

    fn open<'a>(
        &'a self,
        key: ObjectKey<'a>,
    ) -> BoxFuture<'a, io::Result<Option<(u64, BodyStream)>>> {
        let opened = found(std::fs::File::open(self.path_of(key))).and_then(|file| {
            file.map(|file| {
                let size = file.metadata()?.len();
                Ok((size, file_stream(file, size, "the store file ended early")))
            })
            .transpose()
        });
        futures_util::future::ready(opened).boxed()
    }

    fn write<'a>(
        &'a self,
        key: ObjectKey<'a>,
        bytes: Bytes,
        mode: WriteMode,
    ) -> BoxFuture<'a, io::Result<PutOutcome>> {
        let path = self.path_of(key);
        let written = if mode == WriteMode::Create && path.exists() {
            Ok(PutOutcome::AlreadyThere)
        } else {
            self.write_atomic(&path, &bytes)
                .map(|()| PutOutcome::Created)
        };
        futures_util::future::ready(written).boxed()
    }

    fn write_file<'a>(
        &'a self,
        key: ObjectKey<'a>,
        file: &'a Path,
    ) -> BoxFuture<'a, io::Result<PutOutcome>> {
        let path = self.path_of(key);
        let copied = if path.exists() {
            Ok(PutOutcome::AlreadyThere)
        } else {
            let tmp = self.temp_path("copy");
            std::fs::copy(file, &tmp)
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
                .and_then(|()| self.rename_into(&tmp, &path))
                .map(|()| PutOutcome::Created)
        };
        futures_util::future::ready(copied).boxed()
    }

    fn delete<'a>(&'a self, key: ObjectKey<'a>) -> BoxFuture<'a, io::Result<()>> {
        let removed = found(std::fs::remove_file(self.path_of(key))).map(|_| ());
        futures_util::future::ready(removed).boxed()
    }
}

/// `None` for a file that is not there.
fn found<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first `size` bytes of `file`, read in pieces on the blocking pool; a file shorter than
/// that ends the stream with the error `ended_early`.
pub(crate) fn file_stream(file: std::fs::File, size: u64, ended_early: &'static str) -> BodyStream {
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
                Ok(b) if b.is_empty() => Some((Err(io::Error::other(ended_early)), (file, size))),
                Ok(b) => {
                    let n = b.len() as u64;
                    Some((Ok(b), (file, pos + n)))
                }
                Err(e) => Some((Err(e), (file, size))),
            }
        },
    ))
}
