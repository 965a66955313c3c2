//! Client authentication (`: .users FILE` under `+ .proxy`): admitting a registry request by
//! its credentials (Basic, or a token of acr's own) for the repository it asks, and `/token`,
//! acr's own token endpoint. Failed logins are limited per client address (see `throttle`);
//! the users, rules and tokens themselves are in `clients`.

use acr_plugins::oci::RegistryError;
use acr_plugins::registry::Reply;
use hyper::body::Incoming;
use hyper::Request;

use super::limits::{read_post_body, MAX_TOKEN_BODY};
use super::response::{json_reply, proxy_gone};
use super::route::{self, Target};
use super::state::ProxyState;
use super::{clients, ProxyHost};
use crate::world::ProxyPlan;

impl ProxyHost {
    /// Client authentication of a registry request, when the proxy has `: .users`. A path
    /// under a container token (`/v2/wt/TOKEN/...`) is checked where the token is looked up:
    /// the user who made it must still be allowed to pull its repository.
    pub(super) async fn admit(
        &self,
        proxy: &ProxyPlan,
        state: &ProxyState,
        headers: &hyper::HeaderMap,
        target: &Target,
        ns: Option<&str>,
        peer: std::net::IpAddr,
    ) -> Result<(), RegistryError> {
        let auth = match &state.auth {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::error!("client auth: {e}");
                return Err(RegistryError::new(
                    503,
                    "UNAVAILABLE",
                    format!("client auth is misconfigured: {e}"),
                ));
            }
        };
        let repos = match target {
            Target::Base => Vec::new(),
            Target::Api { name, .. } => {
                if name.starts_with("wt/") && state.tokens.is_some() {
                    return Ok(());
                }
                let mut r = vec![name.clone()];
                if let Some(ns) = ns.filter(|n| !n.is_empty()) {
                    r.push(format!("{ns}/{name}"));
                }
                r
            }
        };
        let realm = realm_of(proxy, headers);
        self.client_user(auth, headers, &repos, &realm, peer)
            .await
            .map(|_| ())
    }

    /// The user of a request's credentials, checked for `repos` (none: any valid user), with
    /// the failed-login limit of its address.
    pub(super) async fn client_user(
        &self,
        auth: &clients::ClientAuth,
        headers: &hyper::HeaderMap,
        repos: &[String],
        realm: &str,
        peer: std::net::IpAddr,
    ) -> Result<String, RegistryError> {
        let authorization = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if authorization.is_some() {
            self.throttles.failed_logins.check(peer)?;
        }
        auth.check(authorization, repos, realm)
            .await
            .inspect_err(|e| {
                if clients::is_bad_credentials(e) {
                    self.throttles.failed_logins.count(peer);
                }
            })
    }

    /// `/token`: acr's own token endpoint (GET with Basic, or the OAuth2 password POST).
    pub(super) async fn answer_token(
        &self,
        key: &(String, String),
        req: Request<Incoming>,
        query: &str,
        peer: std::net::IpAddr,
    ) -> Result<Reply, RegistryError> {
        self.throttles.failed_logins.check(peer)?;
        let pipeline = self.current();
        let proxy = pipeline.proxy(key).ok_or_else(proxy_gone)?;
        let auth = self
            .state_of(proxy)
            .auth
            .clone()
            .map_err(|e| RegistryError::new(503, "UNAVAILABLE", e))?
            .ok_or_else(|| {
                RegistryError::new(
                    404,
                    "NOT_FOUND",
                    "this mirror has no users: add `: .users HTPASSWD` under `+ .proxy`",
                )
            })?;
        drop(pipeline);
        let is_post = req.method() == hyper::Method::POST;
        let basic = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|t| {
                t.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            });
        let mut params = route::query_pairs(query);
        if is_post {
            let body = read_post_body(req, MAX_TOKEN_BODY).await?;
            params.extend(route::query_pairs(
                &String::from_utf8_lossy(&body).replace('+', "%20"),
            ));
        }
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (user, password) = match (param("username"), param("password"), basic) {
            (Some(u), Some(p), _) => (u, p),
            (_, _, Some(b)) => b,
            _ => {
                return Err(
                    RegistryError::unauthorized("log in with a user of this mirror")
                        .with_header("WWW-Authenticate", "Basic realm=\"acr\""),
                )
            }
        };
        let scopes: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        let grant = auth
            .issue(&user, &password, &scopes)
            .await
            .inspect_err(|e| {
                if clients::is_bad_credentials(e) {
                    self.throttles.failed_logins.count(peer);
                }
            })?;
        tracing::info!(user = %user, scopes = scopes.len(), "token issued to a client");
        Ok(json_reply(&grant))
    }
}

/// The realm of acr's own `/token` as the client reaches it.
pub(super) fn realm_of(proxy: &ProxyPlan, headers: &hyper::HeaderMap) -> String {
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(&proxy.address)
        .to_string();
    let scheme = if proxy.settings.tls.cert.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}/token")
}
