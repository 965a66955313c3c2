//! Where the shared tier is: a `: .cache s3://bucket/prefix` or `: .cache az://container/prefix`
//! URL and the standard AWS or Azure environment become a [`RemoteConfig`], and a
//! [`RemoteConfig`] becomes the store's shared tier, an [`ObjectTier`] over an S3-compatible
//! object store (AWS S3, MinIO, Ceph RGW, Garage, R2, s3s-fs) or an Azure Blob Storage
//! container (Azure, Azurite; its half is in `azure`). What the tier does with the bucket
//! (streaming, create-if-absent, multipart) is the same for every object store and lives in
//! `object`.
//!
//! - **Timeouts.** A connect timeout and an idle-read timeout, no overall one: a slow client
//!   reading a 5 GiB blob must not be cut off, a silent server must.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3ConfigKey;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3CopyIfNotExists};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::azure::azure_store;
pub use super::azure::{AzureAccess, AzureCredential};
use super::object::ObjectTier;

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
    /// The S3 bucket, or the Azure container.
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// A custom endpoint (`http://127.0.0.1:9000`, or for Azure the blob service
    /// `http://127.0.0.1:10000/devstoreaccount1`); `None` is AWS or Azure itself.
    pub endpoint: Option<String>,
    /// Which service, and its account and credentials.
    pub service: Service,
    pub allow_http: bool,
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

/// The object store service a [`RemoteConfig`] names, with what only that service has.
#[derive(Debug, Clone)]
pub enum Service {
    /// `s3://`: an S3-compatible server.
    S3(S3Access),
    /// `az://`: Azure Blob Storage.
    Azure(AzureAccess),
}

/// How an S3 bucket is reached.
#[derive(Debug, Clone)]
pub struct S3Access {
    pub region: String,
    /// `None`: let `object_store` find credentials (web identity, ECS/EKS, instance metadata).
    pub credentials: Option<Credentials>,
    /// `bucket.host` addressing; off (path style) for custom endpoints.
    pub virtual_hosted: bool,
}

impl std::fmt::Display for RemoteConfig {
    /// The store as `: .cache` names it (`az://container/prefix`): what logs and `/status`
    /// show. No credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.service {
            Service::S3(_) => "s3",
            Service::Azure(_) => "az",
        };
        write!(f, "{scheme}://{}/{}", self.bucket, self.prefix)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        Ok(())
    }
}

impl RemoteConfig {
    /// Parses `s3://bucket/prefix` or `az://container/prefix`. For S3, region and credentials
    /// come from the standard AWS environment variables (`AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then from the
    /// shared profile (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`; static keys
    /// only); `endpoint` (`: .cache-endpoint`) overrides `AWS_ENDPOINT_URL_S3` /
    /// `AWS_ENDPOINT_URL`. For Azure see [`AzureAccess::from_env`]. With a custom endpoint,
    /// requests are path-style and plain `http://` is allowed.
    pub fn parse(url: &str, endpoint: Option<&str>) -> Result<RemoteConfig, String> {
        Self::parse_with(url, endpoint, &|k| std::env::var(k).ok())
    }

    /// [`RemoteConfig::parse`] with the environment given as a function (for tests).
    pub fn parse_with(
        url: &str,
        endpoint: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RemoteConfig, String> {
        let (scheme, bucket, prefix) = split_url(url)?;
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        if scheme == Scheme::Azure {
            let endpoint = checked_endpoint(
                endpoint
                    .map(String::from)
                    .or_else(|| env("AZURE_STORAGE_ENDPOINT")),
            )?;
            let access = AzureAccess::from_env(&env)?;
            return Ok(RemoteConfig::with_defaults(
                bucket,
                prefix,
                endpoint,
                Service::Azure(access),
            ));
        }
        let endpoint = checked_endpoint(match endpoint {
            Some(e) => Some(e.to_string()),
            None => env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
        })?;

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

        // Dotted bucket names do not match the TLS certificate of `*.s3.amazonaws.com`.
        let virtual_hosted = endpoint.is_none() && !bucket.contains('.');
        let access = S3Access {
            region,
            credentials,
            virtual_hosted,
        };
        Ok(RemoteConfig::with_defaults(
            bucket,
            prefix,
            endpoint,
            Service::S3(access),
        ))
    }

    /// The configuration of `service` with the default timeouts and part sizes.
    fn with_defaults(
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        service: Service,
    ) -> RemoteConfig {
        RemoteConfig {
            bucket,
            prefix,
            allow_http: endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
            endpoint,
            service,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            part_size: super::object::DEFAULT_PART_SIZE,
            upload_concurrency: super::object::DEFAULT_UPLOAD_CONCURRENCY,
        }
    }

    /// The same configuration with these S3 credentials (an Azure one is left as it is).
    pub fn with_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        if let Service::S3(access) = &mut self.service {
            access.credentials = Some(Credentials {
                access_key_id: access_key_id.to_string(),
                secret_access_key: secret_access_key.to_string(),
                session_token: None,
            });
        }
        self
    }
}

/// The object store a `: .cache` URL names by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    S3,
    Azure,
}

/// Whether `value` (of `: .cache`) names a shared store rather than a directory.
pub fn is_shared_url(value: &str) -> bool {
    value.starts_with("s3://") || value.starts_with("az://")
}

/// The scheme, bucket (or container) and prefix of `s3://bucket/prefix` or
/// `az://container/prefix`.
fn split_url(url: &str) -> Result<(Scheme, String, String), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("s3://") {
        (Scheme::S3, rest)
    } else if let Some(rest) = url.strip_prefix("az://") {
        (Scheme::Azure, rest)
    } else {
        return Err(format!("'{url}' is not an s3:// or az:// URL"));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        let what = match scheme {
            Scheme::S3 => "bucket",
            Scheme::Azure => "container",
        };
        return Err(format!("'{url}' names no {what}"));
    }
    match scheme {
        Scheme::S3 => {
            if !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            {
                return Err(format!("'{bucket}' is not a valid bucket name"));
            }
        }
        Scheme::Azure => super::azure::check_container_name(bucket)?,
    }
    let prefix = prefix.trim_matches('/').to_string();
    if !prefix.is_empty() {
        ObjectPath::parse(&prefix).map_err(|e| format!("bad prefix in '{url}': {e}"))?;
    }
    Ok((scheme, bucket.to_string(), prefix))
}

/// `endpoint` without a trailing `/`, if it is an `http://` or `https://` URL.
fn checked_endpoint(endpoint: Option<String>) -> Result<Option<String>, String> {
    let endpoint = endpoint.map(|e| e.trim_end_matches('/').to_string());
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(format!(
                "endpoint '{e}' must start with http:// or https://"
            ));
        }
    }
    Ok(endpoint)
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

/// Hands `object_store` our own `reqwest` client: connect and idle-read timeouts, but no
/// overall request timeout (which would cut off long downloads to slow clients).
#[derive(Debug)]
pub(super) struct Connector(reqwest::Client);

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.0.clone()))
    }
}

impl ObjectTier {
    /// The object-store tier `config` names: the one place a `: .cache` URL becomes an object
    /// store. `gs://` (`object_store::gcp::GoogleCloudStorageBuilder`) would be one more
    /// [`Service`] and one more constructor like [`s3_store`] here.
    pub fn new(config: RemoteConfig) -> io::Result<ObjectTier> {
        let client = http_client(&config)?;
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
        };
        let (store, name): (Arc<dyn ObjectStore>, &str) = match &config.service {
            Service::S3(access) => (Arc::new(s3_store(&config, access, client, retry)?), "S3"),
            Service::Azure(access) => (
                Arc::new(azure_store(&config, access, client, retry)?),
                "Azure Blob",
            ),
        };
        Ok(ObjectTier::over(store, name, &config.prefix)
            .with_parts(config.part_size, config.upload_concurrency))
    }
}

/// Our own `reqwest` client for the object store (see [`Connector`]).
fn http_client(config: &RemoteConfig) -> io::Result<Connector> {
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(io::Error::other)?;
    Ok(Connector(client))
}

/// The S3 bucket `config` names, reached through our own HTTP client.
fn s3_store(
    config: &RemoteConfig,
    access: &S3Access,
    client: Connector,
    retry: RetryConfig,
) -> io::Result<AmazonS3> {
    // `from_env` picks up what we do not handle ourselves: web identity (EKS), container
    // credentials (ECS), the metadata endpoint; the explicit settings below win.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_region(&access.region)
        .with_allow_http(config.allow_http)
        .with_virtual_hosted_style_request(access.virtual_hosted)
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
        .with_retry(retry)
        .with_http_connector(client);
    // Always explicit, so an `AWS_ENDPOINT_URL_S3` read by `from_env` cannot win over it.
    let endpoint = match &config.endpoint {
        Some(endpoint) => endpoint.clone(),
        None if access.virtual_hosted => format!(
            "https://{}.s3.{}.amazonaws.com",
            config.bucket, access.region
        ),
        None => format!("https://s3.{}.amazonaws.com", access.region),
    };
    builder = builder
        .with_endpoint(&endpoint)
        .with_config(AmazonS3ConfigKey::S3Endpoint, &endpoint);
    if let Some(c) = &access.credentials {
        builder = builder
            .with_access_key_id(&c.access_key_id)
            .with_secret_access_key(&c.secret_access_key);
        if let Some(token) = &c.session_token {
            builder = builder.with_token(token);
        }
    }
    let store = builder
        .build()
        .map_err(|e| io::Error::other(format!("S3 configure: {e}")))?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tier::Tier;

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
        assert_eq!(c.endpoint.as_deref(), Some("https://s3.example.com"));
        let Service::S3(access) = &c.service else {
            panic!("s3:// is S3: {c:?}")
        };
        assert_eq!(access.region, "eu-west-1");
        assert!(!c.allow_http && !access.virtual_hosted);
        assert_eq!(access.credentials.as_ref().unwrap().access_key_id, "AK");
        assert!(
            !format!("{c:?}").contains("SK"),
            "the secret is not printed"
        );

        let c = RemoteConfig::parse_with("s3://b", Some("http://127.0.0.1:9000"), &env).unwrap();
        assert_eq!(c.prefix, "");
        assert!(c.allow_http);
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));

        let aws = RemoteConfig::parse_with("s3://b/p", None, &env_of(&[])).unwrap();
        let Service::S3(access) = &aws.service else {
            panic!("s3:// is S3: {aws:?}")
        };
        assert!(access.virtual_hosted && aws.endpoint.is_none() && !aws.allow_http);
        assert_eq!(access.region, "us-east-1");
        assert_eq!(aws.to_string(), "s3://b/p");

        assert!(RemoteConfig::parse_with("http://b/p", None, &env).is_err());
        assert!(RemoteConfig::parse_with("s3:///p", None, &env).is_err());
        assert!(RemoteConfig::parse_with("s3://b/p", Some("ftp://x"), &env).is_err());
        assert!(RemoteConfig::parse_with("s3://b/a/../c", None, &env).is_err());
        let half = env_of(&[("AWS_ACCESS_KEY_ID", "AK")]);
        assert!(RemoteConfig::parse_with("s3://b", None, &half).is_err());
    }

    #[test]
    fn parses_az_urls_with_the_azure_environment() {
        let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
        let env = env_of(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1"),
            ("AZURE_STORAGE_ACCOUNT_KEY", key),
        ]);
        let azurite = "http://127.0.0.1:10000/devstoreaccount1/";
        let c = RemoteConfig::parse_with("az://cache/acr/prod/", Some(azurite), &env).unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("cache", "acr/prod")
        );
        assert_eq!(
            c.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert!(c.allow_http);
        let Service::Azure(access) = &c.service else {
            panic!("az:// is Azure: {c:?}")
        };
        assert_eq!(access.account, "devstoreaccount1");
        let shown = format!("{c} {c:?}");
        assert_eq!(
            c.to_string(),
            "az://cache/acr/prod at http://127.0.0.1:10000/devstoreaccount1"
        );
        assert!(!shown.contains("Eby8"), "the key is not shown: {shown}");
        assert_eq!(ObjectTier::new(c).unwrap().name(), "Azure Blob");

        let cloud = RemoteConfig::parse_with("az://cache", None, &env).unwrap();
        assert!(cloud.endpoint.is_none() && !cloud.allow_http);

        assert!(RemoteConfig::parse_with("az://Cache/p", None, &env).is_err());
        assert!(RemoteConfig::parse_with("az:///p", None, &env).is_err());
        assert!(RemoteConfig::parse_with("az://cache", Some("ftp://x"), &env).is_err());
        let no_account = RemoteConfig::parse_with("az://cache", None, &env_of(&[])).unwrap_err();
        assert!(
            no_account.contains("AZURE_STORAGE_ACCOUNT_NAME"),
            "{no_account}"
        );
        let short = RemoteConfig::parse_with("az://c/p", None, &env).unwrap_err();
        assert!(short.contains("container"), "{short}");
        let gs = RemoteConfig::parse_with("gs://b/p", None, &env).unwrap_err();
        assert!(gs.contains("s3:// or az://"), "{gs}");
        assert!(
            is_shared_url("az://cache/acr")
                && is_shared_url("s3://b")
                && !is_shared_url("/var/cache")
        );
    }

    #[test]
    fn reads_the_shared_profile() {
        let dir = std::env::temp_dir().join(format!(
            "acr-remote-profile-{}",
            super::super::object::random_u64()
        ));
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
        let s3_access = |c: RemoteConfig| match c.service {
            Service::S3(access) => access,
            Service::Azure(_) => panic!("s3:// is S3"),
        };
        let c = s3_access(RemoteConfig::parse_with("s3://b", None, &env).unwrap());
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
        let c = s3_access(RemoteConfig::parse_with("s3://b", None, &env).unwrap());
        assert_eq!(c.credentials.unwrap().access_key_id, "D");
        assert_eq!(c.region, "us-west-2");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_and_part_sizes() {
        let c = RemoteConfig::parse_with("s3://b/acr/", Some("http://x"), &env_of(&[])).unwrap();
        let r = ObjectTier::new(c).unwrap();
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
        assert!(big.div_ceil(r.part_size_for(big) as u64) <= super::super::object::MAX_PARTS);
    }
}
