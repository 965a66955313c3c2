//! Container tokens: a client asks acr (`POST /container-token`) to serve one image with its
//! own injection, and gets a token; `/v2/wt/TOKEN/<repo>/...` then serves that image with it.
//!
//! A token is 128 random bits in hex. Its record (image, config, platform, expiry, and the
//! user who made it when the mirror has users) is a file in the world directory (mode 0600,
//! its mtime set to the expiry), so tokens survive a restart. Expired tokens are swept at most
//! once a [`SWEEP_EVERY`]; at most [`MAX_LIVE_TOKENS`] live at once, and decoded layers are
//! kept in memory for at most [`MAX_LOADED`] tokens and [`MAX_LOADED_BYTES`]. A token opens one
//! repository only. Logs and pages name a token by its [`token_id`], never by itself.
//!
//! A token request is parsed and its layers checked by [`super::token_request`] (only `data:`
//! locations, never a URL an unauthenticated client names), off the async runtime.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::token_request::{bad, ContainerConfig, ImageRef, TokenRequest};
use crate::clock::now_ms;
use crate::injection::Injection;
use crate::oci::{Platform, RegistryError};
use crate::private_file::write_private;

/// The most tokens alive at once, per proxy.
pub const MAX_LIVE_TOKENS: usize = 10_000;
/// How often expired token files are removed.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Tokens whose decoded layers are kept in memory.
pub const MAX_LOADED: usize = 256;
/// The most bytes of decoded layers kept in memory.
pub const MAX_LOADED_BYTES: u64 = 256 * 1024 * 1024;

/// A token's name in logs, pages and paths shown to others: a hash of it, never itself.
pub fn token_id(token: &str) -> String {
    let d = sha2::Sha256::digest(token.as_bytes());
    hex::encode(&d[..8])
}

/// What a token stands for, as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// The mirror's user who made it (`: .users`); checked again on every use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub image: ImageRef,
    pub config: ContainerConfig,
    #[serde(default)]
    pub platform: Option<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
}

impl TokenRecord {
    /// The injection the record asks for, every layer checked.
    fn injection(&self) -> Result<Injection, RegistryError> {
        self.config.injection(self.platform.as_deref())
    }
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
    loaded: Mutex<Loaded>,
    /// When expired files were last swept, and how many tokens were live then (plus those made
    /// since).
    live: Mutex<Option<(Instant, usize)>>,
}

/// Grants with their decoded layers, oldest first, bounded by count and bytes.
#[derive(Debug, Default)]
struct Loaded {
    by_token: HashMap<String, Arc<Granted>>,
    order: VecDeque<String>,
    bytes: u64,
}

fn layer_bytes(g: &Granted) -> u64 {
    g.injection
        .layers
        .iter()
        .map(|l| l.gzip_size.unwrap_or(0))
        .sum()
}

impl Loaded {
    fn get(&self, token: &str) -> Option<Arc<Granted>> {
        self.by_token.get(token).cloned()
    }

    fn insert(&mut self, token: String, g: Arc<Granted>) {
        self.remove(&token);
        self.bytes += layer_bytes(&g);
        self.order.push_back(token.clone());
        self.by_token.insert(token, g);
        while self.order.len() > MAX_LOADED || self.bytes > MAX_LOADED_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(g) = self.by_token.remove(&old) {
                self.bytes = self.bytes.saturating_sub(layer_bytes(&g));
            }
        }
    }

    fn remove(&mut self, token: &str) {
        if let Some(g) = self.by_token.remove(token) {
            self.bytes = self.bytes.saturating_sub(layer_bytes(&g));
            self.order.retain(|t| t != token);
        }
    }
}

fn unknown(token: &str) -> RegistryError {
    RegistryError::new(
        404,
        "NAME_UNKNOWN",
        format!(
            "container token {} is unknown or has expired: ask for a new one at /container-token",
            token_id(token)
        ),
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
            loaded: Mutex::new(Loaded::default()),
            live: Mutex::new(None),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn path(&self, token: &str) -> PathBuf {
        self.dir.join(format!("{token}.json"))
    }

    /// Removes expired token files (at most once a [`SWEEP_EVERY`], or `now`), and counts the
    /// live ones.
    fn sweep(&self, force: bool) -> usize {
        let Ok(mut live) = self.live.lock() else {
            return 0;
        };
        if let Some((at, n)) = *live {
            if !force && at.elapsed() < SWEEP_EVERY {
                return n;
            }
        }
        let now = SystemTime::now();
        let mut count = 0;
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Some(token) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
            else {
                continue;
            };
            let expired = match entry.metadata().and_then(|m| m.modified()) {
                Ok(m) if m > now => false,
                // A file written before expiries were kept in its mtime says so itself.
                _ => std::fs::read(&path)
                    .ok()
                    .and_then(|t| serde_json::from_slice::<TokenRecord>(&t).ok())
                    .is_none_or(|r| r.expires_ms <= now_ms()),
            };
            if expired {
                if std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
                if let Ok(mut l) = self.loaded.lock() {
                    l.remove(&token);
                }
            } else {
                count += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, live = count, "expired container tokens removed");
        }
        *live = Some((Instant::now(), count));
        count
    }

    /// Makes a token from a request body for `user` (the mirror's user who asked, when it has
    /// users). `allowed` says whether the mirror serves the image's registry (acr is never an
    /// open proxy) and whether that user may pull it. Blocking: call it off the runtime.
    pub fn create(
        &self,
        body: &[u8],
        user: Option<String>,
        allowed: impl Fn(&ImageRef) -> Result<(), RegistryError>,
    ) -> Result<(String, TokenRecord), RegistryError> {
        let req = TokenRequest::parse(body)?;
        let image = ImageRef::parse(&req.container_image)
            .map_err(|e| RegistryError::new(400, "NAME_INVALID", e))?;
        allowed(&image)?;
        let platform = match &req.container_platform {
            Some(p) if !p.trim().is_empty() => Some(Platform::parse(p).map_err(bad)?.to_string()),
            _ => None,
        };
        let mut live = self.sweep(false);
        if live >= MAX_LIVE_TOKENS {
            live = self.sweep(true);
        }
        if live >= MAX_LIVE_TOKENS {
            return Err(RegistryError::new(
                503,
                "UNAVAILABLE",
                format!("this mirror holds {MAX_LIVE_TOKENS} live container tokens, its most; try again when some expire"),
            )
            .with_header("Retry-After", &SWEEP_EVERY.as_secs().to_string()));
        }
        let record = TokenRecord {
            user,
            image,
            config: req.container_config.unwrap_or_default(),
            platform,
            created_ms: now_ms(),
            expires_ms: now_ms() + self.ttl.as_millis() as u64,
        };
        // Checks every layer now, so a bad one is this request's 400, not a pull's error.
        let injection = record.injection()?;
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw).map_err(|e| {
            RegistryError::new(500, "UNKNOWN", format!("no randomness for a token: {e}"))
        })?;
        let token = hex::encode(raw);
        self.write(&token, &record).map_err(|e| {
            RegistryError::new(500, "UNKNOWN", format!("cannot keep the token: {e}"))
        })?;
        if let Ok(mut live) = self.live.lock() {
            if let Some((_, n)) = live.as_mut() {
                *n += 1;
            }
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
        let text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        // The expiry, where a sweep reads it without opening the file.
        let expires = std::time::UNIX_EPOCH + Duration::from_millis(record.expires_ms);
        write_private(&self.path(token), &text, Some(expires))
    }

    /// The token's grant, if it exists and has not expired.
    pub fn lookup(&self, token: &str) -> Result<Arc<Granted>, RegistryError> {
        if !well_formed(token) {
            return Err(unknown(token));
        }
        let cached = self.loaded.lock().ok().and_then(|m| m.get(token));
        let granted = match cached {
            Some(g) => g,
            None => {
                let text = std::fs::read(self.path(token)).map_err(|_| unknown(token))?;
                let record: TokenRecord =
                    serde_json::from_slice(&text).map_err(|_| unknown(token))?;
                if record.expires_ms <= now_ms() {
                    let _ = std::fs::remove_file(self.path(token));
                    return Err(unknown(token));
                }
                let injection = record.injection().map_err(|_| unknown(token))?;
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

/// Where tokens of a proxy are kept under the world directory.
pub fn tokens_dir(world_dir: &Path, proxy: &str) -> PathBuf {
    world_dir
        .join("container-tokens")
        .join(proxy.replace([':', '/'], "_"))
}

#[cfg(test)]
mod tests {
    use super::super::token_request::MAX_INFLATED;
    use super::*;
    use crate::oci::Digest;

    #[test]
    fn tokens_are_checked_kept_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = ContainerTokens::new(dir.path().to_path_buf(), Duration::from_millis(300));
        let ok = |_: &ImageRef| Ok(());
        let e = tokens.create(b"{", None, ok).unwrap_err();
        assert_eq!(e.status, 400);
        let e = tokens
            .create(
                br#"{"containerImage":"a/b:1","containerPlatform":"linux/mips99"}"#,
                None,
                ok,
            )
            .unwrap_err();
        assert!(e.message.contains("mips99"), "{}", e.message);
        let e = tokens
            .create(br#"{"containerImage":"a/b:1","containerConfig":{"layers":[{"location":"data:H4sIAAAAAAAA/wMAAAAAAAAAAAA=","gzipDigest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","gzipSize":20,"tarDigest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}}"#, None, ok)
            .unwrap_err();
        assert_eq!(e.code, "DIGEST_INVALID");
        let (token, record) = tokens
            .create(br#"{"containerImage":"127.0.0.1:5000/library/test:1","containerConfig":{"env":["A=1"]}}"#, Some("alice".into()), ok)
            .unwrap();
        assert_eq!(token.len(), 32);
        assert_eq!(record.image.name, "library/test");
        assert_eq!(record.user.as_deref(), Some("alice"));
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

    /// A data: layer of a few KiB of gzip that inflates past the bound is a 400, quickly.
    #[test]
    fn a_gzip_bomb_is_refused() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..(MAX_INFLATED / (1024 * 1024) + 2) {
            gz.write_all(&zeros).unwrap();
        }
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 2 * 1024 * 1024, "{}", gz.len());
        use base64::Engine as _;
        let body = serde_json::json!({
            "containerImage": "127.0.0.1:5000/library/test:1",
            "containerConfig": {"layers": [{
                "location": format!("data:application/gzip;base64,{}", base64::engine::general_purpose::STANDARD.encode(&gz)),
                "gzipDigest": Digest::of(&gz).to_string(),
                "gzipSize": gz.len(),
                "tarDigest": Digest::of(b"whatever").to_string(),
            }]},
        });
        let dir = tempfile::tempdir().unwrap();
        let tokens = ContainerTokens::new(dir.path().to_path_buf(), Duration::from_secs(60));
        let started = std::time::Instant::now();
        let e = tokens
            .create(body.to_string().as_bytes(), None, |_| Ok(()))
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.code, "SIZE_INVALID");
        assert!(e.message.contains("inflate"), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(
            std::fs::read_dir(dir.path())
                .map(|d| d.count())
                .unwrap_or(0),
            0
        );
    }

    /// Expired token files go at the next sweep, without anyone asking for them.
    #[test]
    fn expired_tokens_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = ContainerTokens::new(dir.path().to_path_buf(), Duration::from_millis(200));
        let body = br#"{"containerImage":"127.0.0.1:5000/library/test:1"}"#;
        for _ in 0..3 {
            tokens.create(body, None, |_| Ok(())).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(tokens.sweep(true), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn token_ids_hide_the_token() {
        let id = token_id("0123456789abcdef0123456789abcdef");
        assert_eq!(id.len(), 16);
        assert!(!"0123456789abcdef0123456789abcdef".contains(&id));
    }
}
