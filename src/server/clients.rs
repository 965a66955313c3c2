//! Who may pull from acr: client authentication and per-repository pull rules.
//!
//! With `: .users FILE` (an htpasswd file, bcrypt entries as `htpasswd -B` writes them), every
//! registry request needs credentials: HTTP Basic with a user of the file, or a Bearer token
//! that acr issues itself at `/token` (the Docker token protocol: GET with Basic, or the
//! OAuth2 POST containerd sends). A request without them gets 401 with a `WWW-Authenticate`
//! challenge naming that realm, so docker, containerd, podman and skopeo log in the ordinary
//! way. `: .allow-pull USER REPO-GLOB` rules (repeatable; `*` for any user) say who may pull
//! what; with no rule, any user of the file may pull anything. Outside a rule: 403 `DENIED`.
//!
//! Tokens are HS256 JWTs signed with `: .token-secret FILE` (share the file between replicas)
//! or a key made at start. They last five minutes and name the repositories they open.
//! Passwords checked once are remembered (as a hash) for five minutes, so bcrypt's cost is not
//! paid per request. bcrypt runs on the blocking pool, at most [`BCRYPT_SLOTS`] at a time, and
//! an unknown user costs the same bcrypt as a wrong password (no oracle for user names).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use acr_plugins::RegistryError;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::upstream::glob;
use crate::world::settings::ClientAuthSettings;

/// The message of a 401 for credentials that are wrong (not missing, not short of a scope):
/// what the failed-login limit counts.
pub const BAD_CREDENTIALS: &str = "the credentials are not valid for this mirror";

/// Whether `e` refused wrong credentials.
pub fn is_bad_credentials(e: &RegistryError) -> bool {
    e.status == 401 && (e.message == BAD_CREDENTIALS || e.message == WRONG_PASSWORD)
}

const WRONG_PASSWORD: &str = "wrong user name or password for this mirror";

/// The service name acr's tokens are for.
pub const SERVICE: &str = "acr";
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const REMEMBER: Duration = Duration::from_secs(300);
/// How many bcrypt verifications run at once (each takes a core for tens of milliseconds).
pub const BCRYPT_SLOTS: usize = 2;

/// The hash an unknown user's password is checked against, so that answering "no such user"
/// takes as long as "wrong password" (cost 10, as `htpasswd -B` writes).
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| bcrypt::hash("acr: no such user", 10).unwrap_or_default())
        .clone()
}

#[derive(Debug)]
pub struct ClientAuth {
    users_file: PathBuf,
    users: Mutex<(Option<SystemTime>, HashMap<String, String>)>,
    rules: Vec<(String, String)>,
    key: ring::hmac::Key,
    verified: Mutex<HashMap<(String, [u8; 32]), Instant>>,
    bcrypt_slots: tokio::sync::Semaphore,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The shared `: .token-secret` file: at least 16 bytes. It signs client tokens here and the
/// requests between replicas (`server::store`).
pub fn read_token_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read(path)
        .map_err(|e| format!("cannot read the token secret {}: {e}", path.display()))?;
    if text.len() < 16 {
        return Err(format!(
            "the token secret {} is shorter than 16 bytes",
            path.display()
        ));
    }
    Ok(text)
}

impl ClientAuth {
    pub fn new(settings: &ClientAuthSettings) -> Result<Self, String> {
        let key_bytes = match &settings.secret {
            Some(path) => read_token_secret(path)?,
            None => {
                let mut k = vec![0u8; 32];
                getrandom::getrandom(&mut k).map_err(|e| format!("no randomness: {e}"))?;
                k
            }
        };
        let auth = Self {
            users_file: settings.users.clone(),
            users: Mutex::new((None, HashMap::new())),
            rules: settings.rules.clone(),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes),
            verified: Mutex::new(HashMap::new()),
            bcrypt_slots: tokio::sync::Semaphore::new(BCRYPT_SLOTS),
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Reads the htpasswd file again when it changed on disk.
    fn reload(&self) -> Result<(), String> {
        let mtime = std::fs::metadata(&self.users_file)
            .and_then(|m| m.modified())
            .map_err(|e| format!("cannot read {}: {e}", self.users_file.display()))?;
        let mut users = self.users.lock().map_err(|_| "user table poisoned")?;
        if users.0 == Some(mtime) {
            return Ok(());
        }
        let parsed = parse_htpasswd(&self.users_file)?;
        *users = (Some(mtime), parsed);
        if let Ok(mut v) = self.verified.lock() {
            v.clear();
        }
        Ok(())
    }

    async fn password_ok(&self, user: &str, password: &str) -> bool {
        if let Err(e) = self.reload() {
            tracing::warn!("client users: {e}");
        }
        let fingerprint: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key = (user.to_string(), fingerprint);
        if let Ok(v) = self.verified.lock() {
            if v.get(&key).is_some_and(|at| at.elapsed() < REMEMBER) {
                return true;
            }
        }
        let hash = match self.users.lock() {
            Ok(u) => u.1.get(user).cloned(),
            Err(_) => None,
        };
        let known = hash.is_some();
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let password = password.to_string();
        let verified = tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(dummy_hash);
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let ok = known && verified;
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                v.retain(|_, at| at.elapsed() < REMEMBER);
                v.insert(key, Instant::now());
            }
        }
        ok
    }

    /// Whether `user` is (still) a user of the htpasswd file.
    pub fn has_user(&self, user: &str) -> bool {
        if let Err(e) = self.reload() {
            tracing::warn!("client users: {e}");
        }
        self.users
            .lock()
            .map(|u| u.1.contains_key(user))
            .unwrap_or(false)
    }

    /// Whether `user` may pull `repo` (the name as the client sent it, or with its `ns`).
    pub fn may_pull(&self, user: &str, repos: &[String]) -> bool {
        self.rules.is_empty()
            || self.rules.iter().any(|(u, pattern)| {
                (u == "*" || u == user) && repos.iter().any(|r| glob(pattern, r))
            })
    }

    /// The user of a request, checked: Basic against the file, Bearer against acr's
    /// signature, with whether the credentials cover `repos` (a token names what it opens).
    /// `None`: no (valid) credentials.
    async fn user_of(
        &self,
        authorization: Option<&str>,
        repos: &[String],
    ) -> Option<(String, bool)> {
        let value = authorization?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .ok()?;
                let text = String::from_utf8(raw).ok()?;
                let (user, password) = text.split_once(':')?;
                self.password_ok(user, password)
                    .await
                    .then(|| (user.to_string(), true))
            }
            "bearer" => self.verify_token(rest.trim(), repos),
            _ => None,
        }
    }

    /// Checks a request for `repos` (empty for `/v2/` itself). The error is what the client
    /// gets: 401 with the challenge, or 403.
    pub async fn check(
        &self,
        authorization: Option<&str>,
        repos: &[String],
        realm: &str,
    ) -> Result<String, RegistryError> {
        let scope = repos
            .first()
            .map(|r| format!(",scope=\"repository:{r}:pull\""))
            .unwrap_or_default();
        let challenge = format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\"{scope}");
        let Some((user, covered)) = self.user_of(authorization, repos).await else {
            let message = if authorization.is_some() {
                BAD_CREDENTIALS
            } else {
                "this mirror needs credentials: log in to it (docker login / podman login / skopeo login)"
            };
            return Err(RegistryError::unauthorized(message)
                .with_header("WWW-Authenticate", &challenge)
                .with_header("WWW-Authenticate", "Basic realm=\"acr\""));
        };
        if !repos.is_empty() && !self.may_pull(&user, repos) {
            return Err(RegistryError::denied(format!(
                "user {user} may not pull {}",
                repos[0]
            )));
        }
        if !covered {
            // A valid token for other repositories: the client asks for one with this scope.
            return Err(RegistryError::unauthorized(format!(
                "the token does not open {}: ask /token for this scope",
                repos[0]
            ))
            .with_header("WWW-Authenticate", &challenge));
        }
        Ok(user)
    }

    /// `/token`: a token for a user who gives the right password, covering the requested
    /// scopes the rules allow (others are left out, as the token spec says).
    pub async fn issue(
        &self,
        user: &str,
        password: &str,
        scopes: &[String],
    ) -> Result<serde_json::Value, RegistryError> {
        if !self.password_ok(user, password).await {
            return Err(RegistryError::unauthorized(WRONG_PASSWORD));
        }
        let mut access = Vec::new();
        for scope in scopes {
            for s in scope.split(' ') {
                let mut parts = s.splitn(3, ':');
                let (Some(kind), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if kind != "repository" {
                    continue;
                }
                let granted: Vec<&str> = actions
                    .split(',')
                    .filter(|a| *a == "pull" && self.may_pull(user, &[name.to_string()]))
                    .collect();
                access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
            }
        }
        let now = acr_plugins::clock::now_secs();
        let claims = serde_json::json!({
            "iss": SERVICE,
            "sub": user,
            "aud": SERVICE,
            "iat": now,
            "nbf": now.saturating_sub(5),
            "exp": now + TOKEN_LIFETIME.as_secs(),
            "access": access,
        });
        let token = self.sign(&claims);
        Ok(serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_LIFETIME.as_secs(),
            "issued_at": super::response::rfc3339_now(),
        }))
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = b64(claims.to_string().as_bytes());
        let signed = format!("{head}.{body}");
        let tag = ring::hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", b64(tag.as_ref()))
    }

    /// The user of a token acr signed that has not expired, and whether it opens `repos` for
    /// pull (any valid token opens `/v2/`).
    fn verify_token(&self, token: &str, repos: &[String]) -> Option<(String, bool)> {
        let (signed, sig) = token.rsplit_once('.')?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .ok()?;
        ring::hmac::verify(&self.key, signed.as_bytes(), &sig).ok()?;
        let (_, body) = signed.split_once('.')?;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .ok()?,
        )
        .ok()?;
        if claims.get("exp")?.as_u64()? < acr_plugins::clock::now_secs() {
            return None;
        }
        let user = claims.get("sub")?.as_str()?.to_string();
        if repos.is_empty() {
            return Some((user, true));
        }
        let opens = claims.get("access")?.as_array()?.iter().any(|a| {
            let name = a.get("name").and_then(|n| n.as_str()).unwrap_or("");
            let pull = a
                .get("actions")
                .and_then(|x| x.as_array())
                .is_some_and(|x| x.iter().any(|v| v == "pull"));
            pull && repos.iter().any(|r| r == name)
        });
        Some((user, opens))
    }
}

/// Reads an htpasswd file of bcrypt entries. Other schemes are refused with the line number:
/// acr verifies bcrypt only (`htpasswd -B`).
pub fn parse_htpasswd(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("{}:{}: not USER:HASH", path.display(), i + 1));
        };
        if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
            return Err(format!(
                "{}:{}: user {user} has a password hash acr does not verify: use bcrypt (`htpasswd -B`)",
                path.display(),
                i + 1
            ));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(rules: &[(&str, &str)]) -> (tempfile::TempDir, ClientAuth) {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("secret", 4).unwrap();
        let users = dir.path().join("htpasswd");
        std::fs::write(&users, format!("# users\nalice:{hash}\nbob:{hash}\n")).unwrap();
        let a = ClientAuth::new(&ClientAuthSettings {
            users,
            rules: rules
                .iter()
                .map(|(u, r)| (u.to_string(), r.to_string()))
                .collect(),
            secret: None,
        })
        .unwrap();
        (dir, a)
    }

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    /// The status `a` refuses `authorization` for `repository` with.
    async fn refusal(a: &ClientAuth, authorization: &str, repository: &str) -> u16 {
        a.check(Some(authorization), &[repository.to_string()], "r")
            .await
            .unwrap_err()
            .status
    }

    #[tokio::test]
    async fn basic_tokens_rules_and_challenges() {
        let (_d, a) = auth(&[("alice", "library/*"), ("*", "public/*")]);
        let repo = |r: &str| vec![r.to_string()];
        assert_eq!(
            a.check(
                Some(&basic("alice", "secret")),
                &repo("library/x"),
                "http://h/token"
            )
            .await
            .unwrap(),
            "alice"
        );
        let e = a
            .check(None, &repo("library/x"), "http://h/token")
            .await
            .unwrap_err();
        assert_eq!(e.status, 401);
        assert!(
            e.headers[0].1.contains("realm=\"http://h/token\""),
            "{:?}",
            e.headers
        );
        assert!(e.headers[0]
            .1
            .contains("scope=\"repository:library/x:pull\""));
        assert_eq!(
            refusal(&a, &basic("alice", "wrong"), "library/x").await,
            401
        );
        assert_eq!(refusal(&a, &basic("bob", "secret"), "library/x").await, 403);
        assert!(a
            .check(Some(&basic("bob", "secret")), &repo("public/y"), "r")
            .await
            .is_ok());
        // Tokens: signed, scoped, and only for what the rules allow.
        let t = a
            .issue(
                "alice",
                "secret",
                &["repository:library/x:pull,push".into()],
            )
            .await
            .unwrap();
        let token = t["token"].as_str().unwrap();
        let bearer = format!("Bearer {token}");
        assert_eq!(
            a.check(Some(&bearer), &repo("library/x"), "r")
                .await
                .unwrap(),
            "alice"
        );
        assert_eq!(a.check(Some(&bearer), &[], "r").await.unwrap(), "alice");
        assert_eq!(refusal(&a, &bearer, "library/y").await, 401);
        assert_eq!(refusal(&a, &bearer, "private/z").await, 403);
        let forged = format!("Bearer {}x", token);
        assert_eq!(refusal(&a, &forged, "library/x").await, 401);
        let t = a
            .issue("bob", "secret", &["repository:library/x:pull".into()])
            .await
            .unwrap();
        assert_eq!(t["token"].as_str().map(|_| ()), Some(()));
        let bob = format!("Bearer {}", t["token"].as_str().unwrap());
        assert_eq!(refusal(&a, &bob, "library/x").await, 403);
        assert!(a.issue("bob", "nope", &[]).await.is_err());
    }

    #[test]
    fn only_bcrypt_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h");
        std::fs::write(&p, "carol:$apr1$abc$def\n").unwrap();
        let e = parse_htpasswd(&p).unwrap_err();
        assert!(e.contains(":1:") && e.contains("htpasswd -B"), "{e}");
    }
}
