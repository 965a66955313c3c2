//! Upstream auth: challenges cached per upstream, tokens cached per (realm, service, scope,
//! user) until `expires_in`, fetched once however many requests wait for them.
//!
//! Token requests follow the Docker token spec: with credentials an OAuth2 `POST` to the realm
//! (`grant_type=password`, or `refresh_token` for an identity token), falling back to `GET`
//! with Basic auth when the server does not take the POST; without credentials an anonymous
//! `GET realm?service=..&scope=..`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::challenge::Challenge;
use super::credentials::Credentials;
use super::RegistryError;

/// How long an upstream's challenge (or its absence) is trusted before it is probed again.
const CHALLENGE_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: String,
    scope: String,
    user: String,
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    expires: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

#[derive(Debug, Default)]
pub struct AuthCache {
    challenges: Mutex<HashMap<String, (Option<Challenge>, Instant)>>,
    /// One challenge probe per upstream at a time: the others wait and read the cache.
    probes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tokens: Mutex<HashMap<TokenKey, Slot>>,
    /// Tokens fetched from token services, for tests and metrics.
    pub fetched: std::sync::atomic::AtomicU64,
}

impl AuthCache {
    /// The cached challenge of upstream `base`: `Some(None)` means "needs no auth".
    pub fn challenge(&self, base: &str) -> Option<Option<Challenge>> {
        let map = self.challenges.lock().ok()?;
        let (c, at) = map.get(base)?;
        (at.elapsed() < CHALLENGE_TTL).then(|| c.clone())
    }

    /// The lock that serialises challenge probes of upstream `base`.
    pub fn probe_lock(&self, base: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.probes.lock() {
            Ok(mut map) => map.entry(base.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    pub fn set_challenge(&self, base: &str, challenge: Option<Challenge>) {
        if let Ok(mut map) = self.challenges.lock() {
            map.insert(base.to_string(), (challenge, Instant::now()));
        }
    }

    /// The `Authorization` header for a request under `challenge`, or `None` when the
    /// upstream needs none (or Basic without credentials).
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        ns: &str,
        challenge: &Challenge,
        scope: &str,
        creds: Option<&Credentials>,
        refresh: bool,
    ) -> Result<Option<String>, RegistryError> {
        if challenge.is_basic() {
            return Ok(creds.map(Credentials::basic));
        }
        if !challenge.is_bearer() {
            return Err(RegistryError::unauthorized(format!(
                "upstream {ns} asks for `{}` auth, which acr does not speak",
                challenge.scheme
            )));
        }
        let realm = challenge.param("realm").unwrap_or_default().to_string();
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(RegistryError::unauthorized(format!(
                "upstream {ns} sent a Bearer challenge without a usable realm"
            )));
        }
        let key = TokenKey {
            realm,
            service: challenge.param("service").unwrap_or_default().to_string(),
            scope: scope.to_string(),
            user: creds.map(|c| c.username.clone()).unwrap_or_default(),
        };
        let slot = {
            let mut map = self
                .tokens
                .lock()
                .map_err(|_| RegistryError::bad_gateway("token cache poisoned"))?;
            map.entry(key.clone()).or_default().clone()
        };
        // One fetch per key: the others wait on the slot and take what it fetched.
        let mut guard = slot.lock().await;
        if let Some(t) = guard.as_ref() {
            if !refresh && t.expires > Instant::now() {
                return Ok(Some(format!("Bearer {}", t.value)));
            }
        }
        let (value, lifetime) = fetch(http, ns, &key, creds).await?;
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Renew a little before the upstream says it expires.
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        *guard = Some(Token {
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
    let who = creds
        .map(|c| format!("user {} from {}", c.username, c.source))
        .unwrap_or_else(|| "anonymous".into());
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
            return Err(token_refused(ns, &key.realm, status, &who));
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
        return Err(token_refused(ns, &key.realm, resp.status().as_u16(), &who));
    }
    parse_token(ns, &key.realm, resp).await
}

fn unreachable_realm(ns: &str, realm: &str, e: reqwest::Error) -> RegistryError {
    RegistryError::bad_gateway(format!(
        "the token service {realm} of upstream {ns} is unreachable: {e}"
    ))
}

fn token_refused(ns: &str, realm: &str, status: u16, who: &str) -> RegistryError {
    if status == 401 || status == 403 {
        RegistryError::unauthorized(format!(
            "upstream {ns} refused the credentials ({who}): its token service {realm} answered {status}"
        ))
    } else {
        RegistryError::bad_gateway(format!(
            "the token service {realm} of upstream {ns} answered {status}"
        ))
    }
}

async fn parse_token(
    ns: &str,
    realm: &str,
    resp: reqwest::Response,
) -> Result<(String, Duration), RegistryError> {
    let body = resp
        .bytes()
        .await
        .map_err(|e| RegistryError::bad_gateway(format!("reading the token from {realm}: {e}")))?;
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
