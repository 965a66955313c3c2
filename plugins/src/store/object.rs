//! The object-store tier: the store's objects in a bucket (and prefix) of any store the
//! `object_store` crate (Apache Arrow) speaks, which signs the requests; nothing here signs
//! anything. S3 is built in `remote` (the one place a `: .cache` URL becomes an object store);
//! tests run this same code over `object_store::memory::InMemory`.
//!
//! - **Streaming.** Reads come back as a [`BodyStream`] and are never held whole; files go up
//!   from disk a part at a time (multipart past the part size).
//! - **Create, never overwrite.** Content-addressed objects are written with a conditional
//!   create (`If-None-Match: *`), so two replicas racing to store the same digest cannot
//!   overwrite each other: the loser gets [`PutOutcome::AlreadyThere`], which is success.
//!   A small file is one conditional put. A large file goes up as a multipart upload to
//!   a private temporary key (`PREFIX/tmp/...`) and is then copied to its final key with a
//!   conditional copy (on S3 `UploadPartCopy` + `CompleteMultipartUpload` with
//!   `If-None-Match: *`), because `object_store` offers no conditional completion of an upload
//!   it writes itself. S3 copies at most 5 GiB in one part, so a file larger than that is
//!   uploaded straight to its final key after a HEAD finds it absent (a race there writes the
//!   same bytes twice, which for verified content-addressed data is harmless).
//!
//! Temporary keys left behind by a crash are removed by [`ObjectTier::sweep_temp`]; a bucket
//! lifecycle rule that aborts incomplete multipart uploads covers the uploads themselves.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, UpdateVersion, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::tier::{ObjectKey, PutOutcome, Tier, Version, WriteMode};
use crate::oci::BodyStream;

/// The smallest part S3 accepts (except the last).
const MIN_PART: usize = 5 * 1024 * 1024;
/// S3 allows 10 000 parts; stay a little under.
pub(crate) const MAX_PARTS: u64 = 9_000;
/// The most [`ObjectTier::get_bytes`] reads of one object: manifests are at most 4 MiB.
pub const MAX_SMALL_OBJECT: u64 = 4 * 1024 * 1024 + 64 * 1024;
/// The largest object S3 copies in one `UploadPartCopy`.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// The default part size for multipart uploads; files up to it go up in one put.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// The default number of parts of one upload in flight at once.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;

/// A bucket (and prefix) of an object store.
#[derive(Debug, Clone)]
pub struct ObjectTier {
    store: Arc<dyn ObjectStore>,
    /// What logs and errors call it ("S3").
    name: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    prefix: String,
    /// Part size for multipart uploads; files up to this size go up in one put.
    part_size: usize,
    /// Parts of one upload in flight at once (memory: about `part_size` times this plus one).
    upload_concurrency: usize,
    /// Random per process, so temporary keys of two replicas never collide.
    nonce: u64,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ObjectTier {
    /// The tier over `store`, its keys under `prefix`, named `name` in logs and errors.
    pub fn over(store: Arc<dyn ObjectStore>, name: &str, prefix: &str) -> ObjectTier {
        ObjectTier {
            store,
            name: name.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            nonce: random_u64(),
        }
    }

    /// The same tier with this part size and this many parts in flight per upload.
    pub fn with_parts(mut self, part_size: usize, upload_concurrency: usize) -> ObjectTier {
        self.part_size = part_size;
        self.upload_concurrency = upload_concurrency;
        self
    }

    /// `parts` joined with `/` under the configured prefix: `key(&["blobs", "sha256", hex])`.
    pub fn key(&self, parts: &[&str]) -> String {
        std::iter::once(self.prefix.as_str())
            .chain(parts.iter().copied())
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The key of a store object.
    fn key_of(&self, key: ObjectKey<'_>) -> String {
        let parts = key.parts();
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.key(&refs)
    }

    /// The object's size, or `None` when there is none.
    pub async fn head(&self, key: &str) -> io::Result<Option<u64>> {
        let path = path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.to_io("HEAD", key, e)),
        }
    }

    /// The object as a stream, with its total size; `range` is `[start, end)` like
    /// `flight::parse_range` (an `end` past the object is cut to its size).
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> io::Result<Option<(u64, BodyStream)>> {
        let path = path(key)?;
        let mut options = GetOptions::default();
        if let Some((start, end)) = range {
            if start >= end {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("empty range {start}..{end} of {key}"),
                ));
            }
            options.range = Some(GetRange::Bounded(start..end));
        }
        let result = match self.store.get_opts(&path, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.to_io("GET", key, e)),
        };
        let total = result.meta.size;
        let (key, tier) = (key.to_string(), self.name.clone());
        let stream = result
            .into_stream()
            .map_err(move |e| to_io(&tier, "GET (body)", &key, e));
        Ok(Some((total, Box::pin(stream))))
    }

    /// A small object (a manifest, a tag record) in memory, at most [`MAX_SMALL_OBJECT`] bytes.
    pub async fn get_bytes(&self, key: &str) -> io::Result<Option<Bytes>> {
        self.get_bytes_limited(key, MAX_SMALL_OBJECT).await
    }

    /// A small object in memory, at most `limit` bytes: the size the store states is checked
    /// before any of the body is read, and the read stops at `limit` whatever the body turns
    /// out to be (the shared store is not trusted). Larger: an error of kind `InvalidData`.
    pub async fn get_bytes_limited(&self, key: &str, limit: u64) -> io::Result<Option<Bytes>> {
        Ok(self
            .get_versioned(key, limit)
            .await?
            .map(|(bytes, _)| bytes))
    }

    /// [`ObjectTier::get_bytes_limited`] with the object's version (its ETag).
    async fn get_versioned(&self, key: &str, limit: u64) -> io::Result<Option<(Bytes, Version)>> {
        let path = path(key)?;
        let result = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.to_io("GET", key, e)),
        };
        let too_large = |size: u64| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{key} in the {} tier is {size} bytes, more than the {limit} allowed",
                    self.name
                ),
            )
        };
        if result.meta.size > limit {
            return Err(too_large(result.meta.size));
        }
        let version = Version(result.meta.e_tag.clone().unwrap_or_default());
        let mut body = result.into_stream();
        let mut out = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.to_io("GET (body)", key, e))?;
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large(out.len() as u64 + chunk.len() as u64));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some((out.freeze(), version)))
    }

    /// Writes a small object: with `overwrite` unconditionally (tag records), else only if the
    /// key is free (manifests by digest).
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        overwrite: bool,
    ) -> io::Result<PutOutcome> {
        let path = path(key)?;
        let mode = if overwrite {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        self.put_payload(&path, key, PutPayload::from(bytes), mode)
            .await
    }

    async fn put_payload(
        &self,
        path: &ObjectPath,
        key: &str,
        payload: PutPayload,
        mode: PutMode,
    ) -> io::Result<PutOutcome> {
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        match self.store.put_opts(path, payload, options).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyThere),
            Err(e) => Err(self.to_io("PUT", key, e)),
        }
    }

    /// Uploads the file at `path` to `key` unless `key` already exists. The file is read a
    /// part at a time, never whole. Meant for content-addressed objects, whose bytes the caller
    /// has verified: [`PutOutcome::AlreadyThere`] means someone stored the same content.
    pub async fn put_file_if_absent(&self, key: &str, file: &Path) -> io::Result<PutOutcome> {
        if self.head(key).await?.is_some() {
            return Ok(PutOutcome::AlreadyThere);
        }
        self.put_file_create(key, file).await
    }

    /// [`ObjectTier::put_file_if_absent`] without the HEAD that saves an upload when the object
    /// is already there: the upload always happens and the server's conditional create decides.
    pub async fn put_file_create(&self, key: &str, file: &Path) -> io::Result<PutOutcome> {
        let dest = path(key)?;
        let mut f = tokio::fs::File::open(file).await?;
        let size = f.metadata().await?.len();
        let part_size = self.part_size_for(size);

        if size <= part_size as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).await?;
            return self
                .put_payload(&dest, key, PutPayload::from(buf), PutMode::Create)
                .await;
        }

        if size > MAX_COPY {
            // Too big for a one-part conditional copy: upload in place (see the module docs).
            tracing::debug!(
                key,
                size,
                "uploading a large object without a conditional create"
            );
            self.upload_multipart(&dest, key, f, part_size).await?;
            return Ok(PutOutcome::Created);
        }

        let temp_key = self.temp_key(key);
        let temp = path(&temp_key)?;
        self.upload_multipart(&temp, &temp_key, f, part_size)
            .await?;
        let copied = self
            .store
            .copy_opts(&temp, &dest, CopyOptions::new().with_mode(CopyMode::Create))
            .await;
        if let Err(e) = self.store.delete(&temp).await {
            tracing::warn!(key = %temp_key, "could not remove a temporary object: {e}");
        }
        match copied {
            Ok(()) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyThere),
            Err(e) => Err(self.to_io("COPY", key, e)),
        }
    }

    pub(crate) fn part_size_for(&self, size: u64) -> usize {
        let wanted = size.div_ceil(MAX_PARTS);
        let mib = 1024 * 1024;
        let wanted = wanted.div_ceil(mib) * mib;
        (self.part_size.max(MIN_PART) as u64).max(wanted) as usize
    }

    /// Streams `file` into a multipart upload at `dest` (overwriting); aborts it on failure.
    async fn upload_multipart(
        &self,
        dest: &ObjectPath,
        key: &str,
        mut file: tokio::fs::File,
        part_size: usize,
    ) -> io::Result<()> {
        let upload = self
            .store
            .put_multipart(dest)
            .await
            .map_err(|e| self.to_io("create multipart upload", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        let concurrency = self.upload_concurrency.max(1);
        let outcome: io::Result<()> = async {
            loop {
                writer
                    .wait_for_capacity(concurrency)
                    .await
                    .map_err(|e| self.to_io("upload part", key, e))?;
                let mut buf = BytesMut::with_capacity(part_size);
                while buf.len() < part_size {
                    if file.read_buf(&mut buf).await? == 0 {
                        break;
                    }
                }
                if buf.is_empty() {
                    return Ok(());
                }
                let last = buf.len() < part_size;
                writer.put(buf.freeze());
                if last {
                    return Ok(());
                }
            }
        }
        .await;
        match outcome {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| self.to_io("complete multipart upload", key, e)),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Removes `key`; removing what is not there succeeds.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        let path = path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.to_io("DELETE", key, e)),
        }
    }

    pub(crate) fn temp_key(&self, key: &str) -> String {
        let name = key.rsplit('/').next().unwrap_or("object");
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.key(&["tmp", &format!("{name}.{:016x}.{n}", self.nonce)])
    }

    /// Deletes temporary objects (of any replica) older than `older_than`, left by uploads
    /// that died between upload and copy. Returns how many went.
    pub async fn sweep_temp(&self, older_than: Duration) -> io::Result<usize> {
        let prefix = path(&self.key(&["tmp"]))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let limit = older_than.as_secs() as i64;
        let old: Vec<ObjectPath> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|meta| {
                let age = now - meta.last_modified.timestamp();
                futures_util::future::ready(Ok((age >= limit).then_some(meta.location)))
            })
            .try_collect()
            .await
            .map_err(|e| self.to_io("LIST", prefix.as_ref(), e))?;
        let n = old.len();
        if n > 0 {
            let paths = futures_util::stream::iter(old.into_iter().map(Ok)).boxed();
            self.store
                .delete_stream(paths)
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| self.to_io("DELETE", prefix.as_ref(), e))?;
        }
        Ok(n)
    }

    fn to_io(&self, op: &str, key: &str, e: object_store::Error) -> io::Error {
        to_io(&self.name, op, key, e)
    }

    /// A conditional put of a small object: its new version, or `None` when the condition
    /// failed (the key exists, for a create; it changed, for an update).
    async fn put_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> io::Result<Option<Version>> {
        let path = path(key)?;
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
        {
            Ok(put) => Ok(Some(Version(put.e_tag.unwrap_or_default()))),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.to_io("PUT (conditional)", key, e)),
        }
    }
}

impl Tier for ObjectTier {
    fn name(&self) -> &str {
        &self.name
    }

    fn size<'a>(&'a self, key: ObjectKey<'a>) -> BoxFuture<'a, io::Result<Option<u64>>> {
        async move { self.head(&self.key_of(key)).await }.boxed()
    }

    fn read<'a>(
        &'a self,
        key: ObjectKey<'a>,
        limit: u64,
    ) -> BoxFuture<'a, io::Result<Option<Bytes>>> {
        async move { self.get_bytes_limited(&self.key_of(key), limit).await }.boxed()
    }

    fn open<'a>(
        &'a self,
        key: ObjectKey<'a>,
    ) -> BoxFuture<'a, io::Result<Option<(u64, BodyStream)>>> {
        async move { self.get_stream(&self.key_of(key), None).await }.boxed()
    }

    fn write<'a>(
        &'a self,
        key: ObjectKey<'a>,
        bytes: Bytes,
        mode: WriteMode,
    ) -> BoxFuture<'a, io::Result<PutOutcome>> {
        let overwrite = mode == WriteMode::Overwrite;
        async move { self.put_bytes(&self.key_of(key), bytes, overwrite).await }.boxed()
    }

    fn write_file<'a>(
        &'a self,
        key: ObjectKey<'a>,
        file: &'a Path,
    ) -> BoxFuture<'a, io::Result<PutOutcome>> {
        async move { self.put_file_create(&self.key_of(key), file).await }.boxed()
    }

    fn delete<'a>(&'a self, key: ObjectKey<'a>) -> BoxFuture<'a, io::Result<()>> {
        async move { ObjectTier::delete(self, &self.key_of(key)).await }.boxed()
    }

    fn create_versioned<'a>(
        &'a self,
        key: ObjectKey<'a>,
        bytes: Bytes,
    ) -> BoxFuture<'a, io::Result<Option<Version>>> {
        async move {
            self.put_versioned(&self.key_of(key), bytes, PutMode::Create)
                .await
        }
        .boxed()
    }

    fn read_versioned<'a>(
        &'a self,
        key: ObjectKey<'a>,
        limit: u64,
    ) -> BoxFuture<'a, io::Result<Option<(Bytes, Version)>>> {
        async move { self.get_versioned(&self.key_of(key), limit).await }.boxed()
    }

    fn replace_versioned<'a>(
        &'a self,
        key: ObjectKey<'a>,
        bytes: Bytes,
        version: &'a Version,
    ) -> BoxFuture<'a, io::Result<Option<Version>>> {
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(version.0.clone()),
            version: None,
        });
        async move { self.put_versioned(&self.key_of(key), bytes, mode).await }.boxed()
    }
}

fn path(key: &str) -> io::Result<ObjectPath> {
    ObjectPath::parse(key).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad object key '{key}': {e}"),
        )
    })
}

fn to_io(tier: &str, op: &str, key: &str, e: object_store::Error) -> io::Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        E::InvalidPath { .. } => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{tier} {op} {key}: {e}"))
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}
