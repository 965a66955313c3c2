//! Container tokens: a client asks acr (`POST /container-token`) to serve one image with its
//! own injection, and gets a token; `/v2/wt/TOKEN/<repo>/...` then serves that image with it.
//!
//! A token is 128 random bits in hex. Its record (image, config, platform, expiry) is a file in
//! the world directory (mode 0600), so tokens survive a restart; an expired one is removed
//! when it is next asked for. A token opens one repository only.
//!
//! The layers of a token request are `data:` locations, checked against their declared
//! digests and size when the token is made. acr does not fetch URLs that an unauthenticated
//! client names (that would make it a fetcher of anything it can reach); layers on the web
//! belong in the pipeline (`.inject-layer https://...`), where the operator names them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::layer::{self, Content, Layer};
use super::platform::Platform;
use super::rewrite::ConfigEdits;
use super::Injection;
use crate::registry::{challenge, Digest, RegistryError};
use crate::store::now_ms;

/// `containerConfig` of a token request (the Wave model).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LayerSpec {
    pub location: String,
    pub gzip_digest: String,
    pub gzip_size: u64,
    pub tar_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_hashing: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    container_image: String,
    #[serde(default)]
    container_config: Option<ContainerConfig>,
    #[serde(default)]
    container_platform: Option<String>,
}

/// An image reference split the way registries address it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The registry host (`docker.io` when the reference names none).
    pub ns: String,
    /// The repository (`library/` added to a one-word Docker Hub name).
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    /// Parses `[REGISTRY/]REPO[:TAG]`; a reference by digest is refused (a digest names fixed
    /// content, which an injection would change).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.contains('@') {
            return Err(format!(
                "`{text}` names a digest; a container token rewrites the image, so name it by tag"
            ));
        }
        let (first, rest) = match text.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), text.to_string()),
        };
        let (repo, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
            _ => (rest.clone(), "latest".to_string()),
        };
        let name = if first == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        if !crate::registry::reference::is_repository(&name) {
            return Err(format!("`{name}` is not a repository name"));
        }
        if crate::registry::Reference::parse(&tag).is_err() {
            return Err(format!("`{tag}` is not a tag"));
        }
        Ok(Self {
            ns: first,
            name,
            tag,
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.ns, self.name, self.tag)
    }
}

/// What a token stands for, as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub image: ImageRef,
    pub config: ContainerConfig,
    #[serde(default)]
    pub platform: Option<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// A token in use: its record and the injection it applies.
#[derive(Debug)]
pub struct Granted {
    pub token: String,
    pub record: TokenRecord,
    pub injection: Arc<Injection>,
}

/// The tokens of one proxy.
#[derive(Debug)]
pub struct ContainerTokens {
    dir: PathBuf,
    ttl: Duration,
    loaded: Mutex<HashMap<String, Arc<Granted>>>,
}

fn bad(message: impl Into<String>) -> RegistryError {
    RegistryError::new(400, "UNSUPPORTED", message)
}

fn unknown(token: &str) -> RegistryError {
    RegistryError::new(
        404,
        "NAME_UNKNOWN",
        format!("container token {token} is unknown or has expired: ask for a new one at /container-token"),
    )
}

/// A token as it appears in a path: 32 lowercase hex digits.
fn well_formed(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ContainerTokens {
    pub fn new(dir: PathBuf, ttl: Duration) -> Self {
        Self {
            dir,
            ttl,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn path(&self, token: &str) -> PathBuf {
        self.dir.join(format!("{token}.json"))
    }

    /// Makes a token from a request body. `allowed` says whether the mirror serves the
    /// image's registry (acr is never an open proxy).
    pub fn create(
        &self,
        body: &[u8],
        allowed: impl Fn(&ImageRef) -> Result<(), RegistryError>,
    ) -> Result<(String, TokenRecord), RegistryError> {
        let req: TokenRequest = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the request is not a container-token request: {e} (send {{\"containerImage\": \"REGISTRY/REPO:TAG\", \"containerConfig\": {{...}}, \"containerPlatform\": \"linux/amd64\"}})"
            ))
        })?;
        let image = ImageRef::parse(&req.container_image)
            .map_err(|e| RegistryError::new(400, "NAME_INVALID", e))?;
        allowed(&image)?;
        let platform = match &req.container_platform {
            Some(p) if !p.trim().is_empty() => Some(Platform::parse(p).map_err(bad)?.to_string()),
            _ => None,
        };
        let record = TokenRecord {
            image,
            config: req.container_config.unwrap_or_default(),
            platform,
            created_ms: now_ms(),
            expires_ms: now_ms() + self.ttl.as_millis() as u64,
        };
        // Checks every layer now, so a bad one is this request's 400, not a pull's error.
        let injection = injection_of(&record)?;
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw).map_err(|e| {
            RegistryError::new(500, "UNKNOWN", format!("no randomness for a token: {e}"))
        })?;
        let token = hex::encode(raw);
        self.write(&token, &record).map_err(|e| {
            RegistryError::new(500, "UNKNOWN", format!("cannot keep the token: {e}"))
        })?;
        for l in &injection.layers {
            layer::remember(l);
        }
        let granted = Arc::new(Granted {
            token: token.clone(),
            record: record.clone(),
            injection: Arc::new(injection),
        });
        if let Ok(mut m) = self.loaded.lock() {
            m.insert(token.clone(), granted);
        }
        Ok((token, record))
    }

    fn write(&self, token: &str, record: &TokenRecord) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{token}.tmp"));
        let text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path(token))
    }

    /// The token's grant, if it exists and has not expired.
    pub fn lookup(&self, token: &str) -> Result<Arc<Granted>, RegistryError> {
        if !well_formed(token) {
            return Err(unknown(token));
        }
        let cached = self.loaded.lock().ok().and_then(|m| m.get(token).cloned());
        let granted = match cached {
            Some(g) => g,
            None => {
                let text = std::fs::read(self.path(token)).map_err(|_| unknown(token))?;
                let record: TokenRecord =
                    serde_json::from_slice(&text).map_err(|_| unknown(token))?;
                let injection = injection_of(&record).map_err(|_| unknown(token))?;
                for l in &injection.layers {
                    layer::remember(l);
                }
                let g = Arc::new(Granted {
                    token: token.to_string(),
                    record,
                    injection: Arc::new(injection),
                });
                if let Ok(mut m) = self.loaded.lock() {
                    m.insert(token.to_string(), g.clone());
                }
                g
            }
        };
        if granted.record.expires_ms <= now_ms() {
            if let Ok(mut m) = self.loaded.lock() {
                m.remove(token);
            }
            let _ = std::fs::remove_file(self.path(token));
            return Err(unknown(token));
        }
        Ok(granted)
    }
}

/// The injection a token record asks for, every layer checked against its declared digests.
fn injection_of(record: &TokenRecord) -> Result<Injection, RegistryError> {
    let c = &record.config;
    let platform = record
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(bad)?;
    let mut layers = Vec::new();
    for (i, spec) in c.layers.iter().enumerate() {
        let n = i + 1;
        let gzip_digest = Digest::parse(&spec.gzip_digest).map_err(|e| {
            RegistryError::new(
                400,
                "DIGEST_INVALID",
                format!("layer {n}: gzipDigest `{}`: {e}", spec.gzip_digest),
            )
        })?;
        let tar_digest = Digest::parse(&spec.tar_digest).map_err(|e| {
            RegistryError::new(
                400,
                "DIGEST_INVALID",
                format!("layer {n}: tarDigest `{}`: {e}", spec.tar_digest),
            )
        })?;
        if !spec.location.starts_with("data:") {
            return Err(bad(format!(
                "layer {n}: acr takes `data:` locations in a token request, not `{}`; a layer on the web belongs in the pipeline (`.inject-layer URL` with `.digest` and `.diff-id`)",
                spec.location.split(',').next().unwrap_or("").chars().take(60).collect::<String>()
            )));
        }
        let gz = layer::decode_data(&spec.location).map_err(|e| {
            if e.contains("larger") {
                RegistryError::new(400, "SIZE_INVALID", format!("layer {n}: {e}"))
            } else {
                bad(format!("layer {n}: {e}"))
            }
        })?;
        let got = Digest::of(&gz);
        if got != gzip_digest {
            return Err(RegistryError::new(
                400,
                "DIGEST_INVALID",
                format!(
                    "layer {n}: its bytes hash to {got}, not the declared gzipDigest {gzip_digest}"
                ),
            ));
        }
        if gz.len() as u64 != spec.gzip_size {
            return Err(RegistryError::new(
                400,
                "SIZE_INVALID",
                format!(
                    "layer {n}: it is {} bytes, not the declared gzipSize {}",
                    gz.len(),
                    spec.gzip_size
                ),
            ));
        }
        let tar = layer::gunzip_digest(&gz[..])
            .map_err(|e| bad(format!("layer {n}: not a gzipped tar: {e}")))?;
        if tar != tar_digest {
            return Err(RegistryError::new(
                400,
                "DIGEST_INVALID",
                format!("layer {n}: it unpacks to {tar}, not the declared tarDigest {tar_digest}"),
            ));
        }
        layers.push(Arc::new(Layer {
            source: spec.location.clone(),
            gzip_size: Some(gz.len() as u64),
            gzip_digest,
            tar_digest,
            platform: platform.clone(),
            content: Content::Bytes(gz),
        }));
    }
    for e in c.env.iter().flatten() {
        if !e.contains('=') || e.starts_with('=') {
            return Err(bad(format!("env entry `{e}` is not KEY=VALUE")));
        }
    }
    Ok(Injection {
        layers,
        edits: ConfigEdits {
            entrypoint: c.entrypoint.clone().filter(|e| !e.is_empty()),
            cmd: c.cmd.clone().filter(|e| !e.is_empty()),
            env: c.env.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        },
    })
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-11-29T21:04:05Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `POST /validate-creds`: whether `user`/`password` log in to the registry at `base` (its
/// `/v2/` challenge, then the token realm with Basic and no scope, or `/v2/` with Basic). A
/// registry without auth, or any failure, is `false`.
pub async fn validate_credentials(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> bool {
    let probe = match http.get(format!("{base}/v2/")).send().await {
        Ok(r) => r,
        Err(_) => return false,
    };
    if probe.status() != reqwest::StatusCode::UNAUTHORIZED {
        return false;
    }
    let challenges: Vec<challenge::Challenge> = probe
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenge::parse)
        .collect();
    if let Some(bearer) = challenges.iter().find(|c| c.is_bearer()) {
        let Some(realm) = bearer.param("realm") else {
            return false;
        };
        let mut req = http.get(realm).basic_auth(user, Some(password));
        if let Some(service) = bearer.param("service") {
            req = req.query(&[("service", service)]);
        }
        return matches!(req.send().await, Ok(r) if r.status().is_success());
    }
    if challenges.iter().any(|c| c.is_basic()) {
        let req = http
            .get(format!("{base}/v2/"))
            .basic_auth(user, Some(password));
        return matches!(req.send().await, Ok(r) if r.status().is_success());
    }
    false
}

/// `{userName, password, registry}` of a `/validate-creds` request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsCheck {
    pub user_name: String,
    pub password: String,
    pub registry: String,
}

impl CredentialsCheck {
    pub fn parse(body: &[u8]) -> Result<Self, RegistryError> {
        serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the request is not a credentials check: {e} (send {{\"userName\": ..., \"password\": ..., \"registry\": ...}})"
            ))
        })
    }
}

/// Where tokens of a proxy are kept under the world directory.
pub fn tokens_dir(world_dir: &Path, proxy: &str) -> PathBuf {
    world_dir
        .join("container-tokens")
        .join(proxy.replace([':', '/'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(
            (r.ns.as_str(), r.name.as_str(), r.tag.as_str()),
            ("docker.io", "library/alpine", "latest")
        );
        let r = ImageRef::parse("127.0.0.1:5000/library/test:1").unwrap();
        assert_eq!(
            (r.ns.as_str(), r.name.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "library/test", "1")
        );
        let r = ImageRef::parse("quay.io/biocontainers/fastp:0.23.4").unwrap();
        assert_eq!(r.to_string(), "quay.io/biocontainers/fastp:0.23.4");
        assert!(ImageRef::parse("x/y@sha256:aa").is_err());
        assert!(ImageRef::parse("Upper/Case").is_err());
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_000_645_000), "2026-11-30T01:04:05Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn tokens_are_checked_kept_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = ContainerTokens::new(dir.path().to_path_buf(), Duration::from_millis(300));
        let ok = |_: &ImageRef| Ok(());
        let e = tokens.create(b"{", ok).unwrap_err();
        assert_eq!(e.status, 400);
        let e = tokens
            .create(
                br#"{"containerImage":"a/b:1","containerPlatform":"linux/mips99"}"#,
                ok,
            )
            .unwrap_err();
        assert!(e.message.contains("mips99"), "{}", e.message);
        let e = tokens
            .create(br#"{"containerImage":"a/b:1","containerConfig":{"layers":[{"location":"data:H4sIAAAAAAAA/wMAAAAAAAAAAAA=","gzipDigest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","gzipSize":20,"tarDigest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}}"#, ok)
            .unwrap_err();
        assert_eq!(e.code, "DIGEST_INVALID");
        let (token, record) = tokens
            .create(br#"{"containerImage":"127.0.0.1:5000/library/test:1","containerConfig":{"env":["A=1"]}}"#, ok)
            .unwrap();
        assert_eq!(token.len(), 32);
        assert_eq!(record.image.name, "library/test");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(format!("{token}.json")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second table over the same directory (a restart) finds it.
        let again = ContainerTokens::new(dir.path().to_path_buf(), Duration::from_secs(1));
        assert_eq!(
            again.lookup(&token).unwrap().injection.edits.env,
            vec!["A=1".to_string()]
        );
        assert_eq!(again.lookup("0123").unwrap_err().status, 404);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(again.lookup(&token).unwrap_err().status, 404);
        assert!(!dir.path().join(format!("{token}.json")).exists());
    }
}
