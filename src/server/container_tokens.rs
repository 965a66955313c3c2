//! Container tokens (`: .container-tokens TTL` under `+ .proxy`), Wave's protocol: `POST
//! /container-token` makes a token for an image and the layers to inject into it, `POST
//! /validate-creds` checks registry credentials, and a pull under `/v2/wt/TOKEN/<repo>/...`
//! is rewritten to the token's image and injection before its route runs.

use std::sync::Arc;

use acr_plugins::clock::rfc3339;
use acr_plugins::inject_layer::token as container_token;
use acr_plugins::inject_layer::token_request::{validate_credentials, CredentialsCheck, ImageRef};
use acr_plugins::injection::Injection;
use acr_plugins::oci::RegistryError;
use acr_plugins::registry::Reply;
use hyper::body::Incoming;
use hyper::Request;

use super::admission::realm_of;
use super::limits::{read_post_body, MAX_POST_BODY};
use super::response::{json_reply, proxy_gone};
use super::state::ProxyState;
use super::{upstream, ProxyHost};

/// A registry path under a container token, rewritten to what the token opens.
pub(super) struct TokenPath {
    /// The repository of the token's image.
    pub name: String,
    /// The token image's registry.
    pub ns: String,
    /// The path prefix the client used (`/v2/wt/TOKEN/<repo>`), for rewriting `Link`.
    pub client_prefix: String,
    /// The token's id (never the token itself).
    pub scope: String,
    /// What the token injects.
    pub injection: Arc<Injection>,
}

/// The paths acr answers a POST on (Wave's names and their v1alpha2 twins).
pub(super) fn is_service_path(path: &str) -> bool {
    matches!(
        path,
        "/container-token" | "/v1alpha2/container" | "/validate-creds" | "/v1alpha2/validate-creds"
    )
}

impl ProxyHost {
    /// `POST /container-token` and `POST /validate-creds`, when the proxy has
    /// `: .container-tokens TTL`. With `: .users`, both need a user's credentials (a token is
    /// made for that user, for an image the user may pull); both are limited per client
    /// address (see `throttle`).
    pub(super) async fn answer_post(
        &self,
        key: &(String, String),
        req: Request<Incoming>,
        path: &str,
        peer: std::net::IpAddr,
    ) -> Result<Reply, RegistryError> {
        let pipeline = self.current();
        let proxy = pipeline.proxy(key).ok_or_else(proxy_gone)?;
        let state = self.state_of(proxy);
        let Some(tokens) = state.tokens.clone() else {
            return Err(RegistryError::new(
                404,
                "NOT_FOUND",
                format!("this mirror does not answer {path}: add `: .container-tokens 36h` under `+ .proxy`"),
            ));
        };
        let proxy = proxy.clone();
        drop(pipeline);
        let validate = path.ends_with("validate-creds");
        if validate {
            self.throttles.credential_checks.take(peer)?;
        } else {
            self.throttles.tokens_made.check(peer)?;
        }
        let auth = state
            .auth
            .clone()
            .map_err(|e| RegistryError::new(503, "UNAVAILABLE", e))?;
        let user = match &auth {
            Some(auth) => {
                let realm = realm_of(&proxy, req.headers());
                Some(
                    self.client_user(auth, req.headers(), &[], &realm, peer)
                        .await?,
                )
            }
            None => None,
        };
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(String::from)
            .unwrap_or_else(|| proxy.address.clone());
        let body = read_post_body(req, MAX_POST_BODY).await?;
        if validate {
            let check = CredentialsCheck::parse(&body)?;
            let choice =
                upstream::choose(&proxy, Some(&check.registry), "library/x").map_err(|e| {
                    RegistryError::new(
                        400,
                        "DENIED",
                        format!(
                            "acr checks credentials only for the registries it mirrors: {}",
                            e.message
                        ),
                    )
                })?;
            let ok = validate_credentials(
                &self.shared.http,
                &choice.upstream.base,
                &check.user_name,
                &check.password,
            )
            .await;
            return Ok(json_reply(&serde_json::Value::Bool(ok)));
        }
        self.throttles.tokens_made.count(peer);
        let made_for = user.clone();
        let (token, record) = tokio::task::spawn_blocking(move || {
            tokens.create(&body, made_for.clone(), |image| {
                upstream::choose(&proxy, Some(&image.ns), &image.name)?;
                match (&auth, &made_for) {
                    (Some(auth), Some(user)) if !auth.may_pull(user, &image_repos(image)) => Err(
                        RegistryError::denied(format!("user {user} may not pull {}", image.name)),
                    ),
                    _ => Ok(()),
                }
            })
        })
        .await
        .map_err(|e| RegistryError::new(500, "UNKNOWN", format!("the token task failed: {e}")))??;
        let target = format!(
            "{host}/wt/{token}/{}:{}",
            record.image.name, record.image.tag
        );
        tracing::info!(
            token = %container_token::token_id(&token),
            user = user.as_deref().unwrap_or("-"),
            image = %record.image,
            expires = %rfc3339(record.expires_ms),
            "container token issued"
        );
        Ok(json_reply(&serde_json::json!({
            "containerToken": token,
            "targetImage": target,
            "expiration": rfc3339(record.expires_ms),
            "containerImage": record.image.to_string(),
        })))
    }
}

/// `/v2/wt/TOKEN/<repo>/...` when the proxy has container tokens: the token's image and
/// injection, for a user still allowed to pull it. `None`: `name` is not under a token.
pub(super) fn open_token_path(
    state: &ProxyState,
    name: &str,
) -> Result<Option<TokenPath>, RegistryError> {
    let (Some(rest), Some(tokens)) = (name.strip_prefix("wt/"), &state.tokens) else {
        return Ok(None);
    };
    let (token, repo) = rest.split_once('/').unwrap_or((rest, ""));
    let granted = tokens.lookup(token)?;
    if repo != granted.record.image.name {
        return Err(RegistryError::denied(format!(
            "container token {} opens {} only, not `{repo}`",
            container_token::token_id(token),
            granted.record.image.name
        )));
    }
    token_user_may_pull(state, &granted)?;
    Ok(Some(TokenPath {
        name: repo.to_string(),
        ns: granted.record.image.ns.clone(),
        client_prefix: format!("/v2/wt/{token}/{repo}"),
        scope: container_token::token_id(token),
        injection: granted.injection.clone(),
    }))
}

/// The names `.allow-pull` rules match for an image: its repository, and with its registry.
fn image_repos(image: &ImageRef) -> Vec<String> {
    vec![image.name.clone(), format!("{}/{}", image.ns, image.name)]
}

/// With `: .users`, a container token serves only while the user who made it is still a
/// user allowed to pull its image; a token made before the mirror had users serves none.
fn token_user_may_pull(
    state: &ProxyState,
    granted: &container_token::Granted,
) -> Result<(), RegistryError> {
    let auth = match &state.auth {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(()),
        Err(e) => return Err(RegistryError::new(503, "UNAVAILABLE", e.clone())),
    };
    let image = &granted.record.image;
    match &granted.record.user {
            Some(u) if auth.has_user(u) && auth.may_pull(u, &image_repos(image)) => Ok(()),
            Some(u) => Err(RegistryError::denied(format!(
                "this container token was made by {u}, who may no longer pull {}",
                image.name
            ))),
            None => Err(RegistryError::unauthorized(
                "this container token was made without credentials and this mirror now has users: ask /container-token for a new one with your credentials",
            )),
        }
}
