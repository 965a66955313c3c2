//! Where upstream credentials come from, in order: a credential file beside the pipeline,
//! docker's `config.json` (`credHelpers`, `auths`, `credsStore`), the containers `auth.json`,
//! a `docker-credential-*` helper, and environment variables.
//!
//! Secrets never reach a log line: `Credentials`' Debug shows the user and the source only.
//!
//! Credentials that name no host (a `.login FILE`, `ACR_UPSTREAM_USERNAME`/`_PASSWORD`) are
//! bound to the upstreams the pipeline names itself: an upstream a client chose through an
//! `.allow` glob never gets them (it gets only what a source keyed by its own host holds).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use super::bounded::BoundedMap;
use super::{limits, RegistryError};

/// The user name ACR and docker use for a refresh (identity) token.
pub const TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
    /// Where they came from, for messages: `file .world/.../access_token`, `config.json`, ...
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    /// An identity (refresh) token rather than a password: exchanged with
    /// `grant_type=refresh_token`.
    pub fn is_identity_token(&self) -> bool {
        self.username == "<token>" || self.username == TOKEN_USER
    }

    /// Which secret this is, for cache keys: sha256 of the user and secret, never the secret.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.username.as_bytes());
        h.update([0]);
        h.update(self.secret.as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// `Basic base64(user:secret)`
    pub fn basic(&self) -> String {
        let user = if self.username == "<token>" {
            TOKEN_USER
        } else {
            &self.username
        };
        let raw = format!("{user}:{}", self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// What a lookup needs: the upstream host and the optional credential file of `.login FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginQuery {
    pub host: String,
    pub ns: String,
    pub file: Option<PathBuf>,
    /// The pipeline names this upstream itself (see `Upstream::named_by_pipeline`): only then
    /// do credentials that name no host (the file, `ACR_UPSTREAM_*`) apply.
    pub named_by_pipeline: bool,
}

/// Credentials by query, kept for a minute so a helper is not run on every request; at most
/// `limits::MAX_CACHED_UPSTREAMS` queries.
#[derive(Debug)]
pub struct CredentialCache {
    entries: Mutex<BoundedMap<LoginQuery, (Option<Credentials>, Instant)>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self {
            entries: Mutex::new(BoundedMap::new(limits::MAX_CACHED_UPSTREAMS)),
        }
    }
}

const CACHE_FOR: Duration = Duration::from_secs(60);

impl CredentialCache {
    pub async fn find(&self, query: &LoginQuery) -> Result<Option<Credentials>, RegistryError> {
        // A credential file is read every time: `.login-acr` renews the token in it, and a
        // renewed token must be used at once (reading a small file costs little).
        if let Some(file) = query.file.as_ref().filter(|_| query.named_by_pipeline) {
            if let Some(c) = from_file(file)? {
                return Ok(Some(c));
            }
        }
        if let Ok(mut entries) = self.entries.lock() {
            if let Some((creds, at)) = entries.get(query) {
                if at.elapsed() < CACHE_FOR {
                    return Ok(creds.clone());
                }
            }
        }
        let found = find(query).await?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(query.clone(), (found.clone(), Instant::now()));
        }
        Ok(found)
    }

    /// How many lookups are cached.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Looks in every source, first hit wins. The sources that name no host count only for an
/// upstream the pipeline names.
pub async fn find(query: &LoginQuery) -> Result<Option<Credentials>, RegistryError> {
    if let Some(file) = query.file.as_ref().filter(|_| query.named_by_pipeline) {
        if let Some(c) = from_file(file)? {
            return Ok(Some(c));
        }
    }
    let aliases = aliases(&query.ns, &query.host);
    for config in docker_configs() {
        if let Some(c) = from_docker_config(&config, &aliases, &query.ns).await? {
            return Ok(Some(c));
        }
    }
    if let Some(helper) = aliases.iter().find_map(|a| cloud_helper(a)) {
        if helper_on_path(helper) {
            if let Some(c) = run_helper(helper, &query.ns).await? {
                return Ok(Some(c));
            }
        }
    }
    Ok(from_env(&query.host, query.named_by_pipeline)
        .or_else(|| from_env(&query.ns, query.named_by_pipeline)))
}

/// The credential helper a cloud registry's own tooling installs, by host: Amazon ECR
/// (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`, `public.ecr.aws`) has `docker-credential-ecr-login`
/// (user `AWS`), Google Artifact Registry and Container Registry (`*-docker.pkg.dev`,
/// `gcr.io`, `*.gcr.io`) have `docker-credential-gcr` (user `oauth2accesstoken`). Used when
/// no config.json names a helper and the helper is installed.
pub fn cloud_helper(host: &str) -> Option<&'static str> {
    let host = host.split(':').next().unwrap_or(host);
    let labels: Vec<&str> = host.split('.').collect();
    let ecr = host == "public.ecr.aws"
        || (labels.len() >= 6
            && labels[0].len() == 12
            && labels[0].bytes().all(|b| b.is_ascii_digit())
            && labels[1] == "dkr"
            && labels[2].starts_with("ecr")
            && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")));
    if ecr {
        return Some("ecr-login");
    }
    if host.ends_with("-docker.pkg.dev") || host == "gcr.io" || host.ends_with(".gcr.io") {
        return Some("gcr");
    }
    None
}

fn helper_on_path(name: &str) -> bool {
    let program = format!("docker-credential-{name}");
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(&program).is_file()))
}

/// A credential file: `user:password` on one line, or a bare token (an identity token for
/// user `00000000-0000-0000-0000-000000000000`, what `az acr login --expose-token` gives).
pub fn from_file(path: &Path) -> Result<Option<Credentials>, RegistryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError::unauthorized(format!(
                "cannot read the credential file {}: {e}",
                path.display()
            )))
        }
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.is_empty() {
        return Ok(None);
    }
    let source = format!("file {}", path.display());
    // A JWT or opaque token has no ':'; `user:password` has one.
    let creds = match line.split_once(':') {
        Some((user, pass)) if !user.is_empty() && !line.starts_with("ey") => Credentials {
            username: user.to_string(),
            secret: pass.to_string(),
            source,
        },
        _ => Credentials {
            username: TOKEN_USER.to_string(),
            secret: line.to_string(),
            source,
        },
    };
    Ok(Some(creds))
}

fn docker_configs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        out.push(PathBuf::from(dir).join("config.json"));
    } else if let Some(home) = std::env::var_os("HOME") {
        out.push(PathBuf::from(home).join(".docker/config.json"));
    }
    if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(file));
    } else if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        out.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    out
}

/// The names a registry may have as a key in config.json.
fn aliases(ns: &str, host: &str) -> Vec<String> {
    let mut out = vec![ns.to_string(), host.to_string()];
    if ns == "docker.io" {
        out.extend(["index.docker.io".into(), "registry-1.docker.io".into()]);
    }
    out
}

/// `https://index.docker.io/v1/` -> `index.docker.io`
fn normalize_key(key: &str) -> &str {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

async fn from_docker_config(
    path: &Path,
    aliases: &[String],
    ns: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        RegistryError::unauthorized(format!("{} is not valid JSON: {e}", path.display()))
    })?;
    let matches = |key: &str| aliases.iter().any(|a| a == normalize_key(key));
    if let Some(helpers) = config.get("credHelpers").and_then(|h| h.as_object()) {
        if let Some(helper) = helpers
            .iter()
            .find(|(k, _)| matches(k))
            .and_then(|(_, v)| v.as_str())
        {
            return run_helper(helper, ns).await;
        }
    }
    if let Some(auths) = config.get("auths").and_then(|a| a.as_object()) {
        for (key, entry) in auths {
            if !matches(key) {
                continue;
            }
            let source = format!("{} (auths.{key})", path.display());
            if let Some(token) = entry.get("identitytoken").and_then(|t| t.as_str()) {
                return Ok(Some(Credentials {
                    username: "<token>".into(),
                    secret: token.to_string(),
                    source,
                }));
            }
            if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                if let Some((user, pass)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                    return Ok(Some(Credentials {
                        username: user.to_string(),
                        secret: pass.to_string(),
                        source,
                    }));
                }
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(|u| u.as_str()),
                entry.get("password").and_then(|p| p.as_str()),
            ) {
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    secret: p.to_string(),
                    source,
                }));
            }
        }
    }
    if let Some(store) = config.get("credsStore").and_then(|s| s.as_str()) {
        return run_helper(store, ns).await;
    }
    Ok(None)
}

/// The docker credential-helper protocol: `docker-credential-NAME get`, the server URL on
/// stdin, `{"ServerURL","Username","Secret"}` on stdout; "credentials not found" is a miss.
pub async fn run_helper(name: &str, ns: &str) -> Result<Option<Credentials>, RegistryError> {
    if name.is_empty() || name.contains('/') {
        return Err(RegistryError::unauthorized(format!(
            "`{name}` is not a credential helper name"
        )));
    }
    let program = format!("docker-credential-{name}");
    let server = if ns == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        ns.to_string()
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            RegistryError::unauthorized(format!("cannot run the credential helper {program}: {e}"))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .map_err(|_| {
            RegistryError::unauthorized(format!(
                "the credential helper {program} did not answer in 20 s"
            ))
        })?
        .map_err(|e| {
            RegistryError::unauthorized(format!("the credential helper {program} failed: {e}"))
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.contains("credentials not found")
            || String::from_utf8_lossy(&output.stderr).contains("credentials not found")
        {
            return Ok(None);
        }
        return Err(RegistryError::unauthorized(format!(
            "the credential helper {program} exited with {}",
            output.status
        )));
    }
    let reply: serde_json::Value = serde_json::from_str(stdout.trim()).map_err(|_| {
        RegistryError::unauthorized(format!(
            "the credential helper {program} did not print JSON"
        ))
    })?;
    let user = reply.get("Username").and_then(|u| u.as_str()).unwrap_or("");
    let secret = reply.get("Secret").and_then(|s| s.as_str()).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: user.to_string(),
        secret: secret.to_string(),
        source: format!("helper {program}"),
    }))
}

/// The variable that holds the credentials of `host`: `ACR_AUTH_` and the host upper-cased,
/// every character other than a letter or digit as `_` (`127.0.0.1:5000` ->
/// `ACR_AUTH_127_0_0_1_5000`).
pub fn env_var_of(host: &str) -> String {
    let key: String = host
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() => c.to_ascii_uppercase(),
            _ => '_',
        })
        .collect();
    format!("ACR_AUTH_{key}")
}

/// `ACR_AUTH_<HOST>=user:password` (HOST upper-cased, other characters as `_`), else, for an
/// upstream the pipeline names (`any_host`), `ACR_UPSTREAM_USERNAME` and
/// `ACR_UPSTREAM_PASSWORD`.
fn from_env(host: &str, any_host: bool) -> Option<Credentials> {
    let var = env_var_of(host);
    if let Ok(value) = std::env::var(&var) {
        if let Some((u, p)) = value.split_once(':') {
            return Some(Credentials {
                username: u.to_string(),
                secret: p.to_string(),
                source: format!("environment {var}"),
            });
        }
    }
    if !any_host {
        return None;
    }
    match (
        std::env::var("ACR_UPSTREAM_USERNAME"),
        std::env::var("ACR_UPSTREAM_PASSWORD"),
    ) {
        (Ok(u), Ok(p)) if !u.is_empty() => Some(Credentials {
            username: u,
            secret: p,
            source: "environment ACR_UPSTREAM_USERNAME".into(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_environment_variable_of_a_host() {
        assert_eq!(
            super::env_var_of("127.0.0.1:5000"),
            "ACR_AUTH_127_0_0_1_5000"
        );
        assert_eq!(
            super::env_var_of("my-reg.example.io"),
            "ACR_AUTH_MY_REG_EXAMPLE_IO"
        );
    }

    #[test]
    fn cloud_registries_have_their_helpers() {
        assert_eq!(
            cloud_helper("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            Some("ecr-login")
        );
        assert_eq!(
            cloud_helper("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com"),
            Some("ecr-login")
        );
        assert_eq!(cloud_helper("public.ecr.aws"), Some("ecr-login"));
        assert_eq!(cloud_helper("us-docker.pkg.dev"), Some("gcr"));
        assert_eq!(cloud_helper("eu.gcr.io"), Some("gcr"));
        assert_eq!(cloud_helper("gcr.io"), Some("gcr"));
        assert_eq!(cloud_helper("12345.dkr.ecr.us-east-1.amazonaws.com"), None);
        assert_eq!(cloud_helper("example.azurecr.io"), None);
        assert_eq!(cloud_helper("notgcr.io"), None);
    }

    use super::*;

    #[test]
    fn file_forms() {
        let dir = std::env::temp_dir().join(format!("acr-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c");
        std::fs::write(&f, "alice:s3cret\n").unwrap();
        let c = from_file(&f).unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.secret.as_str()),
            ("alice", "s3cret")
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::write(&f, "eyJhbGciOi.payload.sig\n").unwrap();
        let c = from_file(&f).unwrap().unwrap();
        assert!(c.is_identity_token());
        assert!(from_file(&dir.join("missing")).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_less_credentials_only_for_named_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(&f, "alice:s3cret\n").unwrap();
        let query = |named| LoginQuery {
            host: "127.0.0.1:1".into(),
            ns: "127.0.0.1:1".into(),
            file: Some(f.clone()),
            named_by_pipeline: named,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let cache = CredentialCache::default();
        let named = rt.block_on(cache.find(&query(true))).unwrap();
        assert_eq!(named.map(|c| c.username), Some("alice".to_string()));
        let chosen = rt.block_on(cache.find(&query(false))).unwrap();
        assert!(chosen.is_none(), "{chosen:?}");
    }

    #[test]
    fn fingerprints_tell_secrets_apart_and_hide_them() {
        let c = |s: &str| Credentials {
            username: TOKEN_USER.into(),
            secret: s.into(),
            source: "x".into(),
        };
        assert_ne!(c("a").fingerprint(), c("b").fingerprint());
        assert_eq!(c("a").fingerprint(), c("a").fingerprint());
        assert!(!c("sekrit").fingerprint().contains("sekrit"));
    }

    #[test]
    fn ten_thousand_hosts_stay_under_the_cap() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let cache = CredentialCache::default();
        for i in 0..10_000 {
            let q = LoginQuery {
                host: format!("host-{i}.invalid"),
                ns: format!("host-{i}.invalid"),
                file: None,
                named_by_pipeline: false,
            };
            rt.block_on(cache.find(&q)).unwrap();
        }
        assert!(
            cache.len() <= limits::MAX_CACHED_UPSTREAMS,
            "{}",
            cache.len()
        );
    }

    #[test]
    fn keys_normalize() {
        assert_eq!(
            normalize_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(normalize_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
