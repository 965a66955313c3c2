//! A proxy's settings: the `: .NAME value` lines under `+ .proxy ADDR` that are not routes or
//! calls, parsed once, when the file is compiled, into [`ProxySettings`]. A bad value is a
//! diagnostic at its line; the server receives typed values and never parses a setting.
//!
//! A new setting is a name in [`PROXY_SETTINGS`], a field of [`ProxySettings`] and its arm in
//! [`ProxySettings::apply`] (and, when its text has rules, in [`check_setting`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use acr_plugins::store::remote::{is_shared_url, RemoteConfig};
use acr_plugins::{parse_duration, Props, Value};

/// Settings a `+ .proxy` accepts besides routes and calls.
pub const PROXY_SETTINGS: &[&str] = &[
    "allow",
    "endpoint",
    "path-routing",
    "cache",
    "cache-dir",
    "cache-endpoint",
    "advertise",
    "ttl",
    "max-size",
    "container-tokens",
    "users",
    "allow-pull",
    "token-secret",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
];

/// The default TTL of a cached tag.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Where a proxy keeps content (`: .cache`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheSetting {
    /// No `: .cache` (or an empty one): `cache/` beside the pipeline.
    #[default]
    Default,
    /// `: .cache off` (or `none`): no store.
    Off,
    /// `: .cache DIR`: a store on local disk only, in [`ProxySettings::cache_dir`] (a
    /// relative path is relative to where acr runs).
    Dir,
    /// `: .cache s3://bucket/prefix` or `az://container/prefix`: a store shared by replicas,
    /// kept locally too (in [`ProxySettings::cache_dir`] or the default directory).
    Shared(String),
}

/// `: .endpoint NS URL`: where the upstream of namespace `ns` is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ns: String,
    /// Without a trailing `/`.
    pub url: String,
}

/// Client authentication (`: .users FILE`, `: .allow-pull USER GLOB`, `: .token-secret FILE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthSettings {
    /// The htpasswd file.
    pub users: PathBuf,
    /// `(user or *, repository glob)`, in file order.
    pub rules: Vec<(String, String)>,
    /// The key that signs acr's tokens (default: a random one per start).
    pub secret: Option<PathBuf>,
}

impl ClientAuthSettings {
    /// The same settings with relative paths made relative to `base_dir`.
    pub fn resolved(&self, base_dir: &Path) -> Self {
        Self {
            users: resolve(base_dir, &self.users),
            rules: self.rules.clone(),
            secret: self.secret.as_deref().map(|p| resolve(base_dir, p)),
        }
    }
}

/// `: .tls-cert FILE`, `: .tls-key FILE`, `: .tls-client-ca FILE`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// A proxy's settings, typed. Where a setting may be written once, the last line wins.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The settings as written, in file order (what `acr dump` and `/status` show).
    pub written: Props,
    /// `: .allow HOST, *.GLOB`: upstreams a client may name with `?ns=`, every pattern.
    pub allow: Vec<String>,
    /// `: .endpoint NS URL`, in file order (the first for a namespace wins).
    pub endpoints: Vec<Endpoint>,
    /// `: .path-routing [on|off]`: the first path segment may name the upstream.
    pub path_routing: bool,
    pub cache: CacheSetting,
    /// Where the local part of the store lives: `: .cache-dir DIR`, or the DIR of
    /// `: .cache DIR` (the last of the two lines wins); `None`: `cache/` beside the pipeline.
    /// With a shared cache (`s3://`, `az://`) this is the replica's own copy, so a pipeline on a
    /// read-only mount needs no writable directory beside it.
    pub cache_dir: Option<PathBuf>,
    /// `: .cache-endpoint URL`: the S3-compatible server of an `s3://` cache, or the blob
    /// service of an `az://` one (Azurite: `http://127.0.0.1:10000/devstoreaccount1`).
    pub cache_endpoint: Option<String>,
    /// `: .ttl DURATION`: how long a cached tag is fresh.
    pub ttl: Duration,
    /// `: .ttl NS DURATION`: the same for one upstream.
    pub ttl_by_ns: Vec<(String, Duration)>,
    /// `: .max-size SIZE`, in bytes.
    pub max_size: Option<u64>,
    /// `: .container-tokens TTL`: how long a container token lasts; `None`: off.
    pub container_tokens: Option<Duration>,
    /// `: .users FILE` and its companions; `None`: clients are not authenticated.
    pub client_auth: Option<ClientAuthSettings>,
    /// `: .allow-pull` rules, kept until the end of the block (they need `: .users`).
    rules: Vec<(String, String)>,
    /// `: .token-secret FILE`: signs acr's client tokens and the requests between replicas.
    pub token_secret: Option<PathBuf>,
    /// `: .advertise URL`: where the other replicas of a shared cache reach this one.
    pub advertise: Option<String>,
    pub tls: TlsSettings,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxySettings {
    pub fn new() -> Self {
        Self {
            written: Props::new(),
            allow: Vec::new(),
            endpoints: Vec::new(),
            path_routing: false,
            cache: CacheSetting::Default,
            cache_dir: None,
            cache_endpoint: None,
            ttl: DEFAULT_TTL,
            ttl_by_ns: Vec::new(),
            max_size: None,
            container_tokens: None,
            client_auth: None,
            rules: Vec::new(),
            token_secret: None,
            advertise: None,
            tls: TlsSettings::default(),
        }
    }

    /// Takes one setting line, `value` being its text (with the name before the dot, if
    /// any, in front). An error is the hint of a diagnostic at the line.
    pub fn apply(&mut self, name: &str, value: &str) -> Result<(), String> {
        let trimmed = value.trim();
        let path = || PathBuf::from(trimmed);
        match name {
            "allow" => self.allow.extend(
                value
                    .split([',', ' '])
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from),
            ),
            "endpoint" => {
                if let Some((ns, url)) = value.split_once(char::is_whitespace) {
                    self.endpoints.push(Endpoint {
                        ns: ns.to_string(),
                        url: url.trim().trim_end_matches('/').to_string(),
                    });
                }
            }
            "path-routing" => {
                self.path_routing |= matches!(value, "" | "on" | "true");
            }
            "cache" => {
                self.cache = match trimmed {
                    "off" | "none" => CacheSetting::Off,
                    "" => CacheSetting::Default,
                    url if is_shared_url(url) => CacheSetting::Shared(url.to_string()),
                    dir => {
                        self.cache_dir = Some(PathBuf::from(dir));
                        CacheSetting::Dir
                    }
                }
            }
            "cache-dir" => self.cache_dir = Some(PathBuf::from(trimmed)),
            "cache-endpoint" => self.cache_endpoint = Some(value.to_string()),
            "ttl" => {
                let words: Vec<&str> = value.split_whitespace().collect();
                let duration = |d: &str| parse_duration(d).map_err(|e| e.message);
                match words.as_slice() {
                    [d] => self.ttl = duration(d)?,
                    [ns, d] => self.ttl_by_ns.push((ns.to_string(), duration(d)?)),
                    _ => return Err(format!("`.ttl {value}` is not [NS] DURATION")),
                }
            }
            "max-size" => {
                self.max_size = Some(
                    acr_plugins::store::parse_size(value)
                        .ok_or_else(|| format!("`{value}` is not a size"))?,
                )
            }
            "container-tokens" => {
                self.container_tokens = match trimmed {
                    "off" => None,
                    ttl => parse_duration(ttl).ok(),
                }
            }
            "users" => {
                self.client_auth = Some(ClientAuthSettings {
                    users: path(),
                    rules: Vec::new(),
                    secret: None,
                })
            }
            "allow-pull" => {
                if let Some((user, glob)) = trimmed.split_once(char::is_whitespace) {
                    self.rules.push((user.to_string(), glob.trim().to_string()));
                }
            }
            "token-secret" => self.token_secret = Some(path()),
            "advertise" => self.advertise = Some(trimmed.trim_end_matches('/').to_string()),
            "tls-cert" => self.tls.cert = Some(path()),
            "tls-key" => self.tls.key = Some(path()),
            "tls-client-ca" => self.tls.client_ca = Some(path()),
            _ => {}
        }
        self.written.push(name, Value::Symbol(value.to_string()));
        Ok(())
    }

    /// Ends the block: rules and the token secret join the client authentication.
    pub fn finish(mut self) -> Self {
        if let Some(auth) = self.client_auth.as_mut() {
            auth.rules = std::mem::take(&mut self.rules);
            auth.secret = self.token_secret.clone();
        }
        self
    }
}

/// A path as written, relative to `base_dir` unless absolute.
pub fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Checks a shared store's URL, and what it needs from the environment (an `az://` store's
/// account, the form of its key or SAS token; S3 keys given in halves), so that a store that
/// cannot be opened is a diagnostic at its line. The endpoint is `: .cache-endpoint`'s own
/// check. Errors never quote a secret.
fn check_shared_store(url: &str) -> Result<(), String> {
    RemoteConfig::parse(url, None).map(|_| ())
}

/// Checks a proxy setting's text as written after its dot; an error is the hint.
pub fn check_setting(name: &str, value: &str) -> Result<(), String> {
    match name {
        "allow" if value.trim().is_empty() => {
            Err("write `: .allow HOST` or a glob such as `: .allow *.azurecr.io`".into())
        }
        "endpoint" => {
            let mut words = value.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(_), Some(url), None) if url.starts_with("http://") || url.starts_with("https://") => Ok(()),
                _ => Err("write `: .endpoint NAMESPACE URL`, e.g. `: .endpoint docker.io http://127.0.0.1:5000`".into()),
            }
        }
        "cache" if value.trim().is_empty() => Err(
            "write `: .cache DIR`, `: .cache s3://bucket/prefix`, `: .cache az://container/prefix` or `: .cache off`".into(),
        ),
        "cache" if is_shared_url(value.trim()) => check_shared_store(value.trim()),
        "cache-dir" if value.trim().is_empty() => {
            Err("write `: .cache-dir DIR` (where the store keeps its local copy)".into())
        }
        "advertise" if !(value.starts_with("http://") || value.starts_with("https://")) => Err(
            "write `: .advertise http://10.0.0.7:5000` (where the other replicas reach this one)".into(),
        ),
        "cache-endpoint" if !(value.starts_with("http://") || value.starts_with("https://")) => {
            Err("write `: .cache-endpoint http://127.0.0.1:9000` (an S3-compatible server) or, for az://, the blob service (`http://127.0.0.1:10000/devstoreaccount1`)".into())
        }
        "ttl" => {
            let mut words: Vec<&str> = value.split_whitespace().collect();
            let duration = words.pop().unwrap_or("");
            if words.len() > 1 || parse_duration(duration).is_err() {
                Err("write `: .ttl 5m` or, for one upstream, `: .ttl docker.io 1h`".into())
            } else {
                Ok(())
            }
        }
        "max-size" if acr_plugins::store::parse_size(value).is_none() => {
            Err("write a size such as `: .max-size 20GiB` or `: .max-size 500MB`".into())
        }
        "users" | "token-secret" | "tls-cert" | "tls-key" | "tls-client-ca"
            if value.trim().is_empty() =>
        {
            Err(format!("write `: .{name} FILE`"))
        }
        "allow-pull" if value.split_whitespace().count() != 2 => {
            Err("write `: .allow-pull USER REPO-GLOB`, e.g. `: .allow-pull alice library/*` (`*` for any user)".into())
        }
        "container-tokens"
            if value.trim() != "off" && parse_duration(value.trim()).is_err() =>
        {
            Err("write `: .container-tokens 36h` (how long a token lasts) or `: .container-tokens off`".into())
        }
        "path-routing" if !matches!(value, "" | "on" | "off" | "true" | "false") => {
            Err("write `: .path-routing` (on) or `: .path-routing off`".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lines: &[(&str, &str)]) -> ProxySettings {
        let mut s = ProxySettings::new();
        for (name, value) in lines {
            s.apply(name, value).unwrap();
        }
        s.finish()
    }

    #[test]
    fn the_last_line_wins_and_lists_keep_their_order() {
        let s = settings(&[
            ("cache", "/a"),
            ("cache", "s3://b/p"),
            ("ttl", "1m"),
            ("ttl", "docker.io 1h"),
            ("allow", "ghcr.io, *.example.com"),
            ("endpoint", "docker.io http://127.0.0.1:6000/"),
            ("users", "users.htpasswd"),
            ("allow-pull", "alice library/*"),
            ("container-tokens", "off"),
        ]);
        assert_eq!(s.cache, CacheSetting::Shared("s3://b/p".into()));
        assert_eq!(s.ttl, Duration::from_secs(60));
        assert_eq!(
            s.ttl_by_ns,
            vec![("docker.io".to_string(), Duration::from_secs(3600))]
        );
        assert_eq!(s.allow, vec!["ghcr.io", "*.example.com"]);
        assert_eq!(s.endpoints[0].url, "http://127.0.0.1:6000");
        let auth = s.client_auth.unwrap();
        assert_eq!(auth.rules, vec![("alice".into(), "library/*".into())]);
        assert_eq!(s.container_tokens, None);
        assert_eq!(s.written.all("cache").count(), 2);
    }

    #[test]
    fn the_local_part_of_the_store_is_cache_dir_or_the_cache_dir_written_last() {
        let shared = settings(&[("cache-dir", "/var/lib/acr"), ("cache", "s3://b/p")]);
        assert_eq!(shared.cache, CacheSetting::Shared("s3://b/p".into()));
        assert_eq!(shared.cache_dir, Some(PathBuf::from("/var/lib/acr")));
        let local = settings(&[("cache-dir", "/x"), ("cache", "/y")]);
        assert_eq!(local.cache_dir, Some(PathBuf::from("/y")));
        assert_eq!(settings(&[("cache", "off")]).cache_dir, None);
        assert!(check_setting("cache-dir", " ").is_err());
        assert!(check_setting("cache-dir", "/var/lib/acr").is_ok());
    }

    #[test]
    fn advertise_is_an_http_url_kept_without_its_trailing_slash() {
        let s = settings(&[("advertise", "http://10.0.0.7:5000/")]);
        assert_eq!(s.advertise.as_deref(), Some("http://10.0.0.7:5000"));
        for bad in ["10.0.0.7:5000", "file:///x", ""] {
            assert!(check_setting("advertise", bad).is_err(), "{bad:?}");
        }
        assert!(check_setting("advertise", "https://acr-0.acr:8578").is_ok());
    }

    #[test]
    fn the_compiler_hands_the_proxy_typed_settings() {
        let source = "``` a b\n+ .proxy localhost:1\n: .cache off\n: docker.io .ttl 1h\n: .users u.htpasswd\n: .token-secret s\n: .allow-pull * library/*\n: .tls-cert c.pem\n: .container-tokens 2h\n```\n";
        let pipeline = crate::world::compile(Path::new("t.runmd"), source).unwrap();
        let s = &pipeline.proxies()[0].settings;
        assert_eq!(s.cache, CacheSetting::Off);
        assert_eq!(s.ttl, DEFAULT_TTL);
        assert_eq!(s.ttl_by_ns[0].0, "docker.io");
        let auth = s.client_auth.as_ref().unwrap();
        assert_eq!(auth.secret.as_deref(), Some(Path::new("s")));
        assert_eq!(auth.rules, vec![("*".into(), "library/*".into())]);
        assert_eq!(s.tls.cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(s.container_tokens, Some(Duration::from_secs(7200)));
        // A value the server could not use is a diagnostic at its line.
        let bad = "``` a b\n+ .proxy localhost:1\n: .ttl 1h\n: docker.io .ttl x 1h\n```\n";
        let report = crate::world::compile(Path::new("t.runmd"), bad).unwrap_err();
        let d = &report.diagnostics[0];
        assert_eq!(d.span.line, 4, "{d:?}");
        assert!(d.message.contains("bad value for `.ttl`"), "{d:?}");
    }

    #[test]
    fn a_bad_ttl_is_an_error() {
        let mut s = ProxySettings::new();
        assert!(s.apply("ttl", "a b 1h").is_err());
        assert!(s.apply("max-size", "lots").is_err());
    }
}
