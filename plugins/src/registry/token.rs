//! Upstream auth: challenges cached per upstream, tokens cached per (upstream, realm, service,
//! scope, credential fingerprint) until `expires_in`, fetched once however many requests wait
//! for them. Every map is bounded (`limits::MAX_CACHED_*`); the realm must pass
//! `destination::check_realm`, and its answer is read within `limits::TOKEN_TIMEOUT` and
//! `limits::MAX_TOKEN_RESPONSE_BYTES`.
//!
//! Token requests follow the Docker token spec: with credentials an OAuth2 `POST` to the realm
//! (`grant_type=password`, or `refresh_token` for an identity token), falling back to `GET`
//! with Basic auth when the server does not take the POST; without credentials an anonymous
//! `GET realm?service=..&scope=..`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::bounded::BoundedMap;
use super::challenge::Challenge;
use super::credentials::Credentials;
use super::limits::{self, UpstreamLimits};
use super::{destination, RegistryError, Upstream};

/// How long an upstream's challenge (or its absence) is trusted before it is probed again.
const CHALLENGE_TTL: Duration = Duration::from_secs(300);

/// What a token is cached under: the upstream, the realm and service it came from, the scope,
/// and which credential got it (a fingerprint of the secret, never the secret). Two
/// identities with one user name (every ACR refresh token is user
/// `00000000-0000-0000-0000-000000000000`) never share a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    upstream: String,
    realm: String,
    service: String,
    scope: String,
    credential: String,
}

#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// A token's Debug never shows it (`Shared`, which holds the cache, is Debug).
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// A token being fetched or fetched, and the last fetch that failed: a request that waited for
/// a fetch that failed takes its error rather than trying again in turn (a stalled token
/// service must not hold N waiters for N timeouts).
#[derive(Debug, Default)]
struct TokenSlot {
    token: Option<Token>,
    failed: Option<(Instant, RegistryError)>,
}

type Slot = Arc<tokio::sync::Mutex<TokenSlot>>;

/// The last failed probe of an upstream, shared the same way with the requests that waited.
pub type ProbeLock = Arc<tokio::sync::Mutex<Option<(Instant, RegistryError)>>>;

#[derive(Debug)]
pub struct AuthCache {
    challenges: Mutex<BoundedMap<String, (Option<Challenge>, Instant)>>,
    /// One challenge probe per upstream at a time: the others wait and read the cache.
    probes: Mutex<BoundedMap<String, ProbeLock>>,
    tokens: Mutex<BoundedMap<TokenKey, Slot>>,
    /// Tokens fetched from token services, for tests and metrics.
    pub fetched: std::sync::atomic::AtomicU64,
}

impl Default for AuthCache {
    fn default() -> Self {
        Self {
            challenges: Mutex::new(BoundedMap::new(limits::MAX_CACHED_UPSTREAMS)),
            probes: Mutex::new(BoundedMap::new(limits::MAX_CACHED_UPSTREAMS)),
            tokens: Mutex::new(BoundedMap::new(limits::MAX_CACHED_TOKENS)),
            fetched: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl AuthCache {
    /// The cached challenge of upstream `base`: `Some(None)` means "needs no auth".
    pub fn challenge(&self, base: &str) -> Option<Option<Challenge>> {
        let mut map = self.challenges.lock().ok()?;
        let (c, at) = map.get(&base.to_string())?;
        (at.elapsed() < CHALLENGE_TTL).then(|| c.clone())
    }

    /// The lock that serialises challenge probes of upstream `base`.
    pub fn probe_lock(&self, base: &str) -> ProbeLock {
        match self.probes.lock() {
            Ok(mut map) => map
                .get_or_insert_with(base.to_string(), ProbeLock::default)
                .clone(),
            Err(_) => ProbeLock::default(),
        }
    }

    pub fn set_challenge(&self, base: &str, challenge: Option<Challenge>) {
        if let Ok(mut map) = self.challenges.lock() {
            map.insert(base.to_string(), (challenge, Instant::now()));
        }
    }

    /// How many entries each map holds: (challenges, probes, tokens).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.challenges.lock().map(|m| m.len()).unwrap_or(0),
            self.probes.lock().map(|m| m.len()).unwrap_or(0),
            self.tokens.lock().map(|m| m.len()).unwrap_or(0),
        )
    }

    /// The `Authorization` header for a request under `challenge`, or `None` when the
    /// upstream needs none (or Basic without credentials).
    #[allow(clippy::too_many_arguments)]
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        limits: &UpstreamLimits,
        upstream: &Upstream,
        challenge: &Challenge,
        scope: &str,
        creds: Option<&Credentials>,
        refresh: bool,
    ) -> Result<Option<String>, RegistryError> {
        let ns = upstream.ns.as_str();
        if challenge.is_basic() {
            return Ok(creds.map(Credentials::basic));
        }
        if !challenge.is_bearer() {
            return Err(RegistryError::unauthorized(format!(
                "upstream {ns} asks for `{}` auth, which acr does not speak",
                challenge.scheme
            )));
        }
        let realm = challenge.param("realm").unwrap_or_default();
        let upstream_url = reqwest::Url::parse(&upstream.base).map_err(|_| {
            RegistryError::bad_gateway(format!("upstream {ns} has no usable address"))
        })?;
        let realm = destination::check_realm(ns, &upstream_url, realm).inspect_err(|e| {
            tracing::warn!(upstream = %ns, "{}", e.message);
        })?;
        let key = TokenKey {
            upstream: upstream.host().to_string(),
            realm: realm.to_string(),
            service: challenge.param("service").unwrap_or_default().to_string(),
            scope: scope.to_string(),
            credential: creds
                .map(Credentials::fingerprint)
                .unwrap_or_else(|| "anonymous".into()),
        };
        let slot = {
            let mut map = self
                .tokens
                .lock()
                .map_err(|_| RegistryError::bad_gateway("token cache poisoned"))?;
            map.get_or_insert_with(key.clone(), Slot::default).clone()
        };
        // One fetch per key: the others wait on the slot and take what it fetched (or the
        // error it failed with).
        let waited_from = Instant::now();
        let mut guard = slot.lock().await;
        if let Some(t) = guard.token.as_ref() {
            if !refresh && t.expires > Instant::now() {
                return Ok(Some(format!("Bearer {}", t.value)));
            }
        }
        if let Some((at, e)) = &guard.failed {
            if *at >= waited_from {
                return Err(e.clone());
            }
        }
        let fetched = tokio::time::timeout(limits.token(), fetch(http, ns, &key, creds))
            .await
            .unwrap_or_else(|_| {
                Err(RegistryError::gateway_timeout(format!(
                    "the token service {} of upstream {ns} did not answer in {} s",
                    destination::redact_url(&key.realm),
                    limits.token().as_secs_f32()
                )))
            });
        let (value, lifetime) = match fetched {
            Ok(t) => t,
            Err(e) => {
                guard.failed = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Renew a little before the upstream says it expires.
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        guard.failed = None;
        guard.token = Some(Token {
            value: value.clone(),
            expires: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(Some(format!("Bearer {value}")))
    }
}

async fn fetch(
    http: &reqwest::Client,
    ns: &str,
    key: &TokenKey,
    creds: Option<&Credentials>,
) -> Result<(String, Duration), RegistryError> {
    if let Some(c) = creds {
        let mut form: Vec<(&str, &str)> = vec![
            ("service", &key.service),
            ("scope", &key.scope),
            ("client_id", "acr"),
            ("access_type", "offline"),
        ];
        if c.is_identity_token() {
            form.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", c.secret.as_str()),
            ]);
        } else {
            form.extend([
                ("grant_type", "password"),
                ("username", c.username.as_str()),
                ("password", c.secret.as_str()),
            ]);
        }
        let resp = http
            .post(&key.realm)
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable_realm(ns, &key.realm, e))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return parse_token(ns, &key.realm, resp).await;
        }
        // Servers without the OAuth2 POST answer 404 (GCR), 405, 400 (ACR) or 401 (JFrog):
        // fall through to GET with Basic auth.
        if ![400, 401, 404, 405].contains(&status) {
            return Err(token_refused(ns, &key.realm, status, creds));
        }
    }
    let mut req = http.get(&key.realm).query(&[
        ("service", key.service.as_str()),
        ("scope", key.scope.as_str()),
    ]);
    if let Some(c) = creds {
        req = req.header(reqwest::header::AUTHORIZATION, c.basic());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| unreachable_realm(ns, &key.realm, e))?;
    if !resp.status().is_success() {
        return Err(token_refused(ns, &key.realm, resp.status().as_u16(), creds));
    }
    parse_token(ns, &key.realm, resp).await
}

fn unreachable_realm(ns: &str, realm: &str, e: reqwest::Error) -> RegistryError {
    let realm = destination::redact_url(realm);
    let timed_out = e.is_timeout();
    let why = destination::redact_text(&e.without_url().to_string());
    if timed_out {
        RegistryError::gateway_timeout(format!(
            "the token service {realm} of upstream {ns} timed out: {why}"
        ))
    } else {
        RegistryError::bad_gateway(format!(
            "the token service {realm} of upstream {ns} is unreachable: {why}"
        ))
    }
}

/// The client hears that the credentials were refused, never whose they are or where they
/// came from; the log names the source (never the secret).
fn token_refused(ns: &str, realm: &str, status: u16, creds: Option<&Credentials>) -> RegistryError {
    let realm = destination::redact_url(realm);
    if status == 401 || status == 403 {
        match creds {
            Some(c) => {
                tracing::warn!(upstream = %ns, source = %c.source, status, "the token service {realm} refused acr's credentials")
            }
            None => {
                tracing::warn!(upstream = %ns, status, "the token service {realm} refused an anonymous token")
            }
        }
        RegistryError::unauthorized(format!(
            "upstream {ns} refused acr's credentials: its token service answered {status}"
        ))
    } else {
        RegistryError::bad_gateway(format!(
            "the token service {realm} of upstream {ns} answered {status}"
        ))
    }
}

/// Reads a token answer: at most `MAX_TOKEN_RESPONSE_BYTES`, refused beyond.
async fn parse_token(
    ns: &str,
    realm: &str,
    mut resp: reqwest::Response,
) -> Result<(String, Duration), RegistryError> {
    let realm = destination::redact_url(realm);
    let limit = limits::MAX_TOKEN_RESPONSE_BYTES;
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(too_big(ns, &realm, limit));
    }
    let mut body = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_big(ns, &realm, limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(RegistryError::bad_gateway(format!(
                    "reading the token from {realm}: {}",
                    destination::redact_text(&e.without_url().to_string())
                )))
            }
        }
    }
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        RegistryError::bad_gateway(format!(
            "the token service {realm} of upstream {ns} did not answer JSON"
        ))
    })?;
    let token = json
        .get("token")
        .or_else(|| json.get("access_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            RegistryError::bad_gateway(format!("the token service {realm} answered no token"))
        })?;
    let expires_in = json
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .filter(|e| *e > 0)
        .unwrap_or(60);
    Ok((token.to_string(), Duration::from_secs(expires_in)))
}

fn too_big(ns: &str, realm: &str, limit: usize) -> RegistryError {
    RegistryError::bad_gateway(format!(
        "the token service {realm} of upstream {ns} answered more than {limit} bytes: refused"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::credentials::TOKEN_USER;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn identity(secret: &str) -> Credentials {
        Credentials {
            username: TOKEN_USER.into(),
            secret: secret.into(),
            source: "test".into(),
        }
    }

    /// A token service on 127.0.0.1 that answers every request with a new token naming the
    /// secret it was sent (`t<n>-<secret>`), and a body of `pad` extra bytes.
    async fn token_service(pad: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    while !String::from_utf8_lossy(&got).contains("refresh_token=") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    }
                    let text = String::from_utf8_lossy(&got).into_owned();
                    let secret = text
                        .split("refresh_token=")
                        .nth(1)
                        .and_then(|r| r.split('&').next())
                        .unwrap_or("")
                        .to_string();
                    let body = format!(
                        "{{\"token\":\"t{n}-{secret}\",\"expires_in\":300,\"pad\":\"{}\"}}",
                        "x".repeat(pad)
                    );
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}"), served)
    }

    fn bearer(realm: &str) -> Challenge {
        crate::registry::challenge::parse(&format!(r#"Bearer realm="{realm}/token",service="svc""#))
            .remove(0)
    }

    #[tokio::test]
    async fn two_identities_of_one_user_never_share_a_token() {
        let (base, served) = token_service(0).await;
        let upstream = Upstream {
            ns: "reg".into(),
            base: base.clone(),
            named_by_pipeline: true,
            sends_ns: false,
        };
        let cache = AuthCache::default();
        let http = reqwest::Client::new();
        let limits = UpstreamLimits::default();
        let challenge = bearer(&base);
        let scope = "repository:app:pull";
        let (a, b) = (identity("secret-a"), identity("secret-b"));
        let token_for = |identity| {
            cache.authorization(
                &http,
                &limits,
                &upstream,
                &challenge,
                scope,
                Some(identity),
                false,
            )
        };
        let ta = token_for(&a).await.unwrap().unwrap();
        let tb = token_for(&b).await.unwrap().unwrap();
        assert!(ta.ends_with("-secret-a"), "{ta}");
        assert!(tb.ends_with("-secret-b"), "{tb}");
        // Each is cached for its own identity.
        let again = token_for(&a).await.unwrap().unwrap();
        assert_eq!(again, ta);
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);
        // The key holds a fingerprint, never the secret.
        let keys = format!("{:?}", cache.tokens.lock().unwrap());
        assert!(!keys.contains("secret-a"), "{keys}");
    }

    #[tokio::test]
    async fn a_huge_token_answer_is_refused() {
        let (base, _) = token_service(2 * limits::MAX_TOKEN_RESPONSE_BYTES).await;
        let upstream = Upstream {
            ns: "reg".into(),
            base: base.clone(),
            named_by_pipeline: true,
            sends_ns: false,
        };
        let cache = AuthCache::default();
        let e = cache
            .authorization(
                &reqwest::Client::new(),
                &UpstreamLimits::default(),
                &upstream,
                &bearer(&base),
                "repository:app:pull",
                Some(&identity("s")),
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(e.status, 502, "{e}");
        assert!(e.message.contains("more than"), "{e}");
    }

    #[test]
    fn ten_thousand_names_stay_under_the_caps() {
        let cache = AuthCache::default();
        for i in 0..10_000 {
            let host = format!("https://host-{i}.example");
            cache.set_challenge(&host, None);
            drop(cache.probe_lock(&host));
            let key = TokenKey {
                upstream: "reg".into(),
                realm: "https://auth.example/token".into(),
                service: "svc".into(),
                scope: format!("repository:name-{i}:pull"),
                credential: "anonymous".into(),
            };
            cache
                .tokens
                .lock()
                .unwrap()
                .get_or_insert_with(key, Slot::default);
        }
        let (challenges, probes, tokens) = cache.sizes();
        assert!(challenges <= limits::MAX_CACHED_UPSTREAMS, "{challenges}");
        assert!(probes <= limits::MAX_CACHED_UPSTREAMS, "{probes}");
        assert!(tokens <= limits::MAX_CACHED_TOKENS, "{tokens}");
        assert!(tokens > limits::MAX_CACHED_TOKENS / 2, "{tokens}");
    }
}
