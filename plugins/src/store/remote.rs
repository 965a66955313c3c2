//! The S3 tier of the store: what replicas share through an S3-compatible object store (AWS S3,
//! MinIO, Ceph RGW, Garage, R2, s3s-fs).
//!
//! Built on `object_store` (Apache Arrow), which signs the requests; nothing here signs anything.
//!
//! - **Streaming.** Reads come back as a [`BodyStream`] and are never held whole; files go up
//!   from disk a part at a time (multipart past [`RemoteConfig::part_size`]).
//! - **Create, never overwrite.** Content-addressed objects are written with a conditional
//!   create (`If-None-Match: *`), so two replicas racing to store the same digest cannot
//!   overwrite each other: the loser gets [`PutOutcome::AlreadyThere`], which is success.
//!   A small file is one conditional `PutObject`. A large file goes up as a multipart upload to
//!   a private temporary key (`PREFIX/tmp/...`) and is then copied to its final key with a
//!   conditional multipart copy (`UploadPartCopy` + `CompleteMultipartUpload` with
//!   `If-None-Match: *`), because `object_store` offers no conditional completion of an upload
//!   it writes itself. S3 copies at most 5 GiB in one part, so a file larger than that is
//!   uploaded straight to its final key after a HEAD finds it absent (a race there writes the
//!   same bytes twice, which for verified content-addressed data is harmless).
//! - **Timeouts.** A connect timeout and an idle-read timeout, no overall one: a slow client
//!   reading a 5 GiB blob must not be cut off, a silent server must.
//!
//! Temporary keys left behind by a crash are removed by [`Remote::sweep_temp`]; a bucket
//! lifecycle rule that aborts incomplete multipart uploads covers the uploads themselves.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3ConfigKey;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3CopyIfNotExists};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, CopyMode, CopyOptions, GetOptions, GetRange, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use crate::oci::BodyStream;

/// The smallest part S3 accepts (except the last).
const MIN_PART: usize = 5 * 1024 * 1024;
/// S3 allows 10 000 parts; stay a little under.
const MAX_PARTS: u64 = 9_000;
/// The most [`Remote::get_bytes`] reads of one object: manifests are at most 4 MiB.
pub const MAX_SMALL_OBJECT: u64 = 4 * 1024 * 1024 + 64 * 1024;
/// The largest object S3 copies in one `UploadPartCopy`.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// Static credentials (from the environment or the shared profile).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where the shared store is and how to reach it.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// A custom endpoint (`http://127.0.0.1:9000`); `None` is AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// `None`: let `object_store` find credentials (web identity, ECS/EKS, instance metadata).
    pub credentials: Option<Credentials>,
    pub allow_http: bool,
    /// `bucket.host` addressing; off (path style) for custom endpoints.
    pub virtual_hosted: bool,
    pub connect_timeout: Duration,
    /// How long a response may stay silent (headers or between body chunks).
    pub read_timeout: Duration,
    pub max_retries: usize,
    pub retry_timeout: Duration,
    /// Part size for multipart uploads; files up to this size go up in one `PutObject`.
    pub part_size: usize,
    /// Parts of one upload in flight at once (memory: about `part_size` times this plus one).
    pub upload_concurrency: usize,
}

impl RemoteConfig {
    /// Parses `s3://bucket/prefix`. Region and credentials come from the standard AWS
    /// environment variables (`AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then from the shared profile
    /// (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`; static keys only). `endpoint`
    /// (`: .cache-endpoint`) overrides `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`; with a custom
    /// endpoint, requests are path-style and plain `http://` is allowed.
    pub fn parse(url: &str, endpoint: Option<&str>) -> Result<RemoteConfig, String> {
        Self::parse_with(url, endpoint, &|k| std::env::var(k).ok())
    }

    /// [`RemoteConfig::parse`] with the environment given as a function (for tests).
    pub fn parse_with(
        url: &str,
        endpoint: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RemoteConfig, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("'{url}' is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("'{url}' names no bucket"));
        }
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(format!("'{bucket}' is not a valid bucket name"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            ObjectPath::parse(&prefix).map_err(|e| format!("bad prefix in '{url}': {e}"))?;
        }

        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let endpoint = match endpoint {
            Some(e) => Some(e.to_string()),
            None => env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
        };
        let endpoint = endpoint.map(|e| e.trim_end_matches('/').to_string());
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "endpoint '{e}' must start with http:// or https://"
                ));
            }
        }

        let profile_name = env("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
        let home = env("HOME");
        let read_ini = |var: &str, default: &str, section: &str| -> Vec<(String, String)> {
            let path = env(var).or_else(|| home.as_ref().map(|h| format!("{h}/{default}")));
            path.and_then(|p| std::fs::read_to_string(p).ok())
                .map(|text| ini_section(&text, section))
                .unwrap_or_default()
        };

        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: env("AWS_SESSION_TOKEN"),
            }),
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".to_string(),
                )
            }
            (None, None) => {
                let section = read_ini(
                    "AWS_SHARED_CREDENTIALS_FILE",
                    ".aws/credentials",
                    &profile_name,
                );
                let get = |k: &str| {
                    section
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                    (Some(id), Some(secret)) => Some(Credentials {
                        access_key_id: id,
                        secret_access_key: secret,
                        session_token: get("aws_session_token"),
                    }),
                    _ => None,
                }
            }
        };

        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| {
                let section = if profile_name == "default" {
                    "default".to_string()
                } else {
                    format!("profile {profile_name}")
                };
                read_ini("AWS_CONFIG_FILE", ".aws/config", &section)
                    .into_iter()
                    .find(|(k, _)| k == "region")
                    .map(|(_, v)| v)
            })
            .unwrap_or_else(|| "us-east-1".to_string());

        let custom = endpoint.is_some();
        Ok(RemoteConfig {
            bucket: bucket.to_string(),
            prefix,
            allow_http: endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
            endpoint,
            region,
            credentials,
            // Dotted bucket names do not match the TLS certificate of `*.s3.amazonaws.com`.
            virtual_hosted: !custom && !bucket.contains('.'),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            part_size: 8 * 1024 * 1024,
            upload_concurrency: 4,
        })
    }

    /// The same configuration with these credentials.
    pub fn with_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.credentials = Some(Credentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            session_token: None,
        });
        self
    }
}

/// The `key = value` lines of `[section]` in an AWS-style INI file.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    out
}

/// How a create-if-absent write ended; both are success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The key already held an object (stored by another replica, or earlier).
    AlreadyThere,
}

/// Hands `object_store` our own `reqwest` client: connect and idle-read timeouts, but no
/// overall request timeout (which would cut off long downloads to slow clients).
#[derive(Debug)]
struct Connector(reqwest::Client);

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.0.clone()))
    }
}

/// A bucket (and prefix) of an S3-compatible object store.
#[derive(Debug, Clone)]
pub struct Remote {
    store: Arc<AmazonS3>,
    config: Arc<RemoteConfig>,
    /// Random per process, so temporary keys of two replicas never collide.
    nonce: u64,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Remote {
    pub fn new(config: RemoteConfig) -> io::Result<Remote> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(io::Error::other)?;
        // `from_env` picks up what we do not handle ourselves: web identity (EKS), container
        // credentials (ECS), the metadata endpoint; the explicit settings below win.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(config.virtual_hosted)
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: config.max_retries,
                retry_timeout: config.retry_timeout,
            })
            .with_http_connector(Connector(client));
        // Always explicit, so an `AWS_ENDPOINT_URL_S3` read by `from_env` cannot win over it.
        let endpoint = match &config.endpoint {
            Some(endpoint) => endpoint.clone(),
            None if config.virtual_hosted => format!(
                "https://{}.s3.{}.amazonaws.com",
                config.bucket, config.region
            ),
            None => format!("https://s3.{}.amazonaws.com", config.region),
        };
        builder = builder
            .with_endpoint(&endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, &endpoint);
        if let Some(c) = &config.credentials {
            builder = builder
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(&c.secret_access_key);
            if let Some(token) = &c.session_token {
                builder = builder.with_token(token);
            }
        }
        let store = builder.build().map_err(|e| to_io("configure", "", e))?;
        Ok(Remote {
            store: Arc::new(store),
            config: Arc::new(config),
            nonce: random_u64(),
        })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// `parts` joined with `/` under the configured prefix: `key(&["blobs", "sha256", hex])`.
    pub fn key(&self, parts: &[&str]) -> String {
        std::iter::once(self.config.prefix.as_str())
            .chain(parts.iter().copied())
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The object's size, or `None` when there is none.
    pub async fn head(&self, key: &str) -> io::Result<Option<u64>> {
        let path = path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(to_io("HEAD", key, e)),
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
            Err(e) => return Err(to_io("GET", key, e)),
        };
        let total = result.meta.size;
        let key = key.to_string();
        let stream = result
            .into_stream()
            .map_err(move |e| to_io("GET (body)", &key, e));
        Ok(Some((total, Box::pin(stream))))
    }

    /// A small object (a manifest, a tag record) in memory, at most [`MAX_SMALL_OBJECT`] bytes.
    pub async fn get_bytes(&self, key: &str) -> io::Result<Option<Bytes>> {
        self.get_bytes_limited(key, MAX_SMALL_OBJECT).await
    }

    /// A small object in memory, at most `limit` bytes: the size S3 states is checked before
    /// any of the body is read, and the read stops at `limit` whatever the body turns out to
    /// be (the shared store is not trusted). Larger: an error of kind `InvalidData`.
    pub async fn get_bytes_limited(&self, key: &str, limit: u64) -> io::Result<Option<Bytes>> {
        let path = path(key)?;
        let result = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(to_io("GET", key, e)),
        };
        let too_large = |size: u64| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{key} in the S3 tier is {size} bytes, more than the {limit} allowed"),
            )
        };
        if result.meta.size > limit {
            return Err(too_large(result.meta.size));
        }
        let mut body = result.into_stream();
        let mut out = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| to_io("GET (body)", key, e))?;
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large(out.len() as u64 + chunk.len() as u64));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out.freeze()))
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
            Err(e) => Err(to_io("PUT", key, e)),
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

    /// [`Remote::put_file_if_absent`] without the HEAD that saves an upload when the object is
    /// already there: the upload always happens and the server's conditional create decides.
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
            Err(e) => Err(to_io("COPY", key, e)),
        }
    }

    fn part_size_for(&self, size: u64) -> usize {
        let wanted = size.div_ceil(MAX_PARTS);
        let mib = 1024 * 1024;
        let wanted = wanted.div_ceil(mib) * mib;
        (self.config.part_size.max(MIN_PART) as u64).max(wanted) as usize
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
            .map_err(|e| to_io("create multipart upload", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        let concurrency = self.config.upload_concurrency.max(1);
        let outcome: io::Result<()> = async {
            loop {
                writer
                    .wait_for_capacity(concurrency)
                    .await
                    .map_err(|e| to_io("upload part", key, e))?;
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
                .map_err(|e| to_io("complete multipart upload", key, e)),
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
            Err(e) => Err(to_io("DELETE", key, e)),
        }
    }

    fn temp_key(&self, key: &str) -> String {
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
            .map_err(|e| to_io("LIST", prefix.as_ref(), e))?;
        let n = old.len();
        if n > 0 {
            let paths = futures_util::stream::iter(old.into_iter().map(Ok)).boxed();
            self.store
                .delete_stream(paths)
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| to_io("DELETE", prefix.as_ref(), e))?;
        }
        Ok(n)
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

fn to_io(op: &str, key: &str, e: object_store::Error) -> io::Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        E::InvalidPath { .. } => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("S3 {op} {key}: {e}"))
}

fn random_u64() -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn parses_urls_and_environment() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "https://s3.example.com/"),
        ]);
        let c = RemoteConfig::parse_with("s3://cache/acr/prod/", None, &env).unwrap();
        assert_eq!(c.bucket, "cache");
        assert_eq!(c.prefix, "acr/prod");
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.endpoint.as_deref(), Some("https://s3.example.com"));
        assert!(!c.allow_http && !c.virtual_hosted);
        assert_eq!(c.credentials.as_ref().unwrap().access_key_id, "AK");
        assert!(
            !format!("{c:?}").contains("SK"),
            "the secret is not printed"
        );

        let c = RemoteConfig::parse_with("s3://b", Some("http://127.0.0.1:9000"), &env).unwrap();
        assert_eq!(c.prefix, "");
        assert!(c.allow_http);
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));

        let aws = RemoteConfig::parse_with("s3://b/p", None, &env_of(&[])).unwrap();
        assert!(aws.virtual_hosted && aws.endpoint.is_none() && !aws.allow_http);
        assert_eq!(aws.region, "us-east-1");

        assert!(RemoteConfig::parse_with("http://b/p", None, &env).is_err());
        assert!(RemoteConfig::parse_with("s3:///p", None, &env).is_err());
        assert!(RemoteConfig::parse_with("s3://b/p", Some("ftp://x"), &env).is_err());
        assert!(RemoteConfig::parse_with("s3://b/a/../c", None, &env).is_err());
        let half = env_of(&[("AWS_ACCESS_KEY_ID", "AK")]);
        assert!(RemoteConfig::parse_with("s3://b", None, &half).is_err());
    }

    #[test]
    fn reads_the_shared_profile() {
        let dir = std::env::temp_dir().join(format!("acr-remote-profile-{}", random_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("credentials");
        let config = dir.join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n\
             [ci]\naws_access_key_id=C\naws_secret_access_key=CS\naws_session_token=T\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion=us-west-2\n[profile ci]\nregion = ap-south-1\n",
        )
        .unwrap();
        let (cs, cf) = (creds.to_string_lossy(), config.to_string_lossy());
        let env = env_of(&[
            ("AWS_PROFILE", "ci"),
            ("AWS_SHARED_CREDENTIALS_FILE", &cs),
            ("AWS_CONFIG_FILE", &cf),
        ]);
        let c = RemoteConfig::parse_with("s3://b", None, &env).unwrap();
        let k = c.credentials.unwrap();
        assert_eq!(
            (k.access_key_id.as_str(), k.session_token.as_deref()),
            ("C", Some("T"))
        );
        assert_eq!(c.region, "ap-south-1");
        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &cs),
            ("AWS_CONFIG_FILE", &cf),
        ]);
        let c = RemoteConfig::parse_with("s3://b", None, &env).unwrap();
        assert_eq!(c.credentials.unwrap().access_key_id, "D");
        assert_eq!(c.region, "us-west-2");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_and_part_sizes() {
        let c = RemoteConfig::parse_with("s3://b/acr/", Some("http://x"), &env_of(&[])).unwrap();
        let r = Remote::new(c).unwrap();
        assert_eq!(r.key(&["blobs", "sha256", "ab"]), "acr/blobs/sha256/ab");
        assert_eq!(
            r.key(&["/tags/", "library/alpine"]),
            "acr/tags/library/alpine"
        );
        assert!(r
            .temp_key("acr/blobs/sha256/abc")
            .starts_with("acr/tmp/abc."));
        assert_eq!(r.part_size_for(1), 8 << 20);
        // 100 GiB in at most 9 000 parts.
        let big = 100u64 << 30;
        assert!(big.div_ceil(r.part_size_for(big) as u64) <= MAX_PARTS);
    }
}
