//! `.login-acr NAME`: logs in to an Azure Container Registry and keeps its refresh token.
//!
//! The token comes from the Azure CLI when it is on PATH (`az acr login --name NAME
//! --expose-token --output tsv --query accessToken`, which prints an ACR refresh token), and
//! otherwise from an Azure AD identity in the environment, exchanged at the registry:
//!
//! 1. an AAD access token: a service principal (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!    `AZURE_CLIENT_SECRET`), workload identity (`AZURE_FEDERATED_TOKEN_FILE` with the tenant
//!    and client ids), or a managed identity (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, else
//!    `MSI_ENDPOINT`, else the instance metadata service); `AZURE_AUTHORITY_HOST` moves the
//!    AAD endpoint (sovereign clouds, stand-ins);
//! 2. `POST <login server>/oauth2/exchange` with `grant_type=access_token`, the registry's
//!    service (from its challenge), the tenant and the AAD token, which answers a refresh
//!    token.
//!
//! The refresh token is written to `{work_dir}/access_token` with mode 0600, where `.login
//! access_token` reads it (user `00000000-0000-0000-0000-000000000000`), and `.authn` trades
//! it for access tokens per scope at `/oauth2/token`. A task renews it before its JWT `exp`:
//! with R the time remaining, at R − min(R/4, 5 min).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{
    run_fn, symbol_prop, InputError, Invocation, ModifierProps, ModifierSpec, PluginSpec,
};
use crate::private_file::write_private;
use crate::registry::challenge;
use crate::value::Value;

pub const SPEC: PluginSpec = PluginSpec::new(
    "login-acr",
    "log in to an Azure Container Registry (az, or an Azure AD identity) and keep its refresh token",
)
.input("the registry name")
.modifiers(&[ModifierSpec {
        name: "login-server",
        usage: ".login-server https://NAME.azurecr.io",
        parse: server_modifier,
    }])
.run(run_fn!(run));

fn server_modifier(modifier: &str, _name: Option<&str>, value: &str) -> ModifierProps {
    let v = value.trim();
    if !(v.starts_with("https://") || v.starts_with("http://")) || v.len() < 10 {
        return Err(InputError::new(format!("`{v}` is not a URL"))
            .hint("write `.login-server https://NAME.azurecr.io`"));
    }
    Ok(symbol_prop(modifier, v.trim_end_matches('/')))
}

/// The file the refresh token is kept in, under the block's `work_dir`.
pub const TOKEN_FILE: &str = "access_token";

/// Why a login failed, in words that say what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoginError(String);

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let name = call.input.trim().to_string();
    let server = match call.props.get_str("login-server") {
        Some(s) => s.to_string(),
        None if name.contains('.') => format!("https://{name}"),
        None => format!("https://{name}.azurecr.io"),
    };
    let http = match &cx.registry {
        Some(shared) => shared.http.clone(),
        None => client(),
    };
    let login = Login {
        name,
        server,
        http,
        path: cx.work_dir().join(TOKEN_FILE),
    };
    let token = login
        .token()
        .await
        .map_err(|e| PluginError::failed(call, e.to_string()))?;
    login
        .keep(&token)
        .map_err(|e| PluginError::failed(call, e.to_string()))?;
    tracing::info!(
        registry = %login.server,
        file = %login.path.display(),
        expires_in_s = expires_in(&token).map(|d| d.as_secs()).unwrap_or(0),
        "logged in to the registry"
    );
    cx.values.set(
        "access_token_file",
        Value::Symbol(login.path.display().to_string()),
    );
    login.renew_in_background();
    Ok(())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

#[derive(Clone)]
struct Login {
    name: String,
    server: String,
    http: reqwest::Client,
    path: PathBuf,
}

impl Login {
    /// A fresh refresh token: from `az` when it is on PATH, else from the environment's AAD
    /// identity.
    async fn token(&self) -> Result<String, LoginError> {
        if on_path("az") {
            return self.with_az().await;
        }
        let aad = aad_token(&self.http).await?;
        self.exchange(&aad).await
    }

    async fn with_az(&self) -> Result<String, LoginError> {
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::process::Command::new("az")
                .args([
                    "acr",
                    "login",
                    "--name",
                    &self.name,
                    "--expose-token",
                    "--output",
                    "tsv",
                    "--query",
                    "accessToken",
                ])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| LoginError("`az acr login` did not finish in 120 s".into()))?
        .map_err(|e| LoginError(format!("cannot run `az`: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || stdout.is_empty() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let said: String = stderr
                .trim()
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ");
            return Err(LoginError(format!(
                "`az acr login --name {} --expose-token` failed ({}){}: run `az login` (or `az login --identity` on an Azure VM) and check that you may pull from {}",
                self.name,
                out.status,
                if said.is_empty() { String::new() } else { format!(": {said}") },
                self.server
            )));
        }
        Ok(stdout)
    }

    /// Trades an AAD access token for an ACR refresh token at `/oauth2/exchange`.
    ///
    /// The POST goes to the login server's own origin, whatever realm the registry's
    /// challenge names: the AAD token is a credential for every registry the identity may
    /// reach, and a challenge is an upstream's answer, not something acr trusts. The login
    /// server is https unless the pipeline wrote an http URL itself (`.login-server`).
    async fn exchange(&self, aad: &str) -> Result<String, LoginError> {
        let (realm, service) = self.challenge().await;
        let url = format!("{}/oauth2/exchange", self.server);
        if let Some(realm) = realm.as_deref() {
            if !same_origin(realm, &self.server) {
                tracing::warn!(
                    registry = %self.server,
                    realm = %crate::registry::destination::redact_url(realm),
                    "the registry's challenge names a token realm off the login server: the Azure AD token goes to the login server only"
                );
            }
        }
        // The service is only a name in the form the login server receives, not a place
        // anything is sent.
        let service = service.unwrap_or_else(|| host_of(&self.server).to_string());
        let mut form = vec![
            ("grant_type", "access_token".to_string()),
            ("service", service),
            ("access_token", aad.to_string()),
        ];
        if let Some(tenant) = std::env::var("AZURE_TENANT_ID")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| claim(aad, "tid"))
        {
            form.push(("tenant", tenant));
        }
        let resp = self
            .http
            .post(&url)
            .form(&form)
            .timeout(crate::registry::limits::TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(|e| LoginError(format!("cannot reach {url}: {e}")))?;
        let status = resp.status();
        let body = json_body(resp).await;
        match body.get("refresh_token").and_then(|t| t.as_str()) {
            Some(t) if status.is_success() && !t.is_empty() => Ok(t.to_string()),
            _ => Err(LoginError(format!(
                "{url} did not exchange the Azure AD token for a refresh token ({status}): check that the identity may pull from {}",
                self.server
            ))),
        }
    }

    /// The registry's Bearer challenge: its realm and service.
    async fn challenge(&self) -> (Option<String>, Option<String>) {
        let Ok(resp) = self
            .http
            .get(format!("{}/v2/", self.server))
            .timeout(crate::registry::limits::TOKEN_TIMEOUT)
            .send()
            .await
        else {
            return (None, None);
        };
        let bearer = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .find(|c| c.is_bearer());
        match bearer {
            Some(c) => (
                c.param("realm").map(String::from),
                c.param("service").map(String::from),
            ),
            None => (None, None),
        }
    }

    /// Writes the token to the file, mode 0600, replacing it in one step.
    fn keep(&self, token: &str) -> Result<(), LoginError> {
        write_private(&self.path, token.as_bytes(), None).map_err(|e| {
            LoginError(format!(
                "cannot keep the token in {}: {e}",
                self.path.display()
            ))
        })
    }

    /// Renews the token in the file before it expires, once per file however many times the
    /// engine logs in.
    fn renew_in_background(&self) {
        static RENEWING: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
        let fresh = RENEWING
            .get_or_init(|| Mutex::new(HashSet::new()))
            .lock()
            .map(|mut s| s.insert(self.path.clone()))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let login = self.clone();
        tokio::spawn(async move {
            loop {
                let current = std::fs::read_to_string(&login.path).unwrap_or_default();
                tokio::time::sleep(renew_after(expires_in(current.trim()))).await;
                let mut backoff = Duration::from_secs(1);
                loop {
                    match login.token().await.and_then(|t| login.keep(&t).map(|_| t)) {
                        Ok(t) => {
                            tracing::info!(
                                registry = %login.server,
                                expires_in_s = expires_in(&t).map(|d| d.as_secs()).unwrap_or(0),
                                "renewed the registry's refresh token"
                            );
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(registry = %login.server, "could not renew the refresh token: {e}; retrying in {}s", backoff.as_secs());
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                        }
                    }
                }
            }
        });
    }
}

/// When to renew a token that expires in `remaining`: at R − min(R/4, 5 min), so a 3-hour ACR
/// token is renewed 5 minutes early and a short one with a quarter of its life left, but
/// never with less than min(2 s, R/2) to spare (a slow `az` must not outlive the old token).
/// A token without an `exp` is renewed hourly.
pub fn renew_after(remaining: Option<Duration>) -> Duration {
    match remaining {
        Some(r) => {
            let margin = (r / 4)
                .min(Duration::from_secs(300))
                .max((r / 2).min(Duration::from_secs(2)));
            r.saturating_sub(margin).max(Duration::from_millis(200))
        }
        None => Duration::from_secs(3600),
    }
}

/// How long until a JWT's `exp` (to the millisecond: `exp` is in whole seconds), if it is one.
pub fn expires_in(token: &str) -> Option<Duration> {
    let exp = claim(token, "exp")?.parse::<u64>().ok()?;
    let now_ms = crate::clock::now_ms();
    Some(Duration::from_millis(
        exp.saturating_mul(1000).saturating_sub(now_ms),
    ))
}

/// A claim of a JWT's payload, as text (numbers too). Tokens that are not JWTs have none.
fn claim(token: &str, name: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match v.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON reply body (a `Value::Null` when it is not JSON), read up to 1 MiB with bounded
/// pauses.
async fn json_body(resp: reqwest::Response) -> serde_json::Value {
    use crate::registry::limits;
    match crate::registry::fetch::read_body(resp, 1024 * 1024, limits::BODY_IDLE_TIMEOUT).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Same scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => crate::registry::destination::same_origin(&a, &b),
        _ => false,
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(program);
            std::fs::metadata(&p).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The audience ACR accepts for an exchange.
const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";
const ARM_RESOURCE: &str = "https://management.azure.com/";
const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// An AAD access token from the environment's identity.
async fn aad_token(http: &reqwest::Client) -> Result<String, LoginError> {
    let authority = env("AZURE_AUTHORITY_HOST")
        .unwrap_or_else(|| "https://login.microsoftonline.com".into())
        .trim_end_matches('/')
        .to_string();
    let tenant = env("AZURE_TENANT_ID");
    let client_id = env("AZURE_CLIENT_ID");
    if let (Some(tenant), Some(client_id)) = (&tenant, &client_id) {
        let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id.clone()),
            ("scope", ACR_SCOPE.to_string()),
        ];
        if let Some(secret) = env("AZURE_CLIENT_SECRET") {
            form.push(("client_secret", secret));
            return aad_post(
                http,
                &url,
                &form,
                "the service principal (AZURE_CLIENT_SECRET)",
            )
            .await;
        }
        if let Some(file) = env("AZURE_FEDERATED_TOKEN_FILE") {
            let assertion = std::fs::read_to_string(&file).map_err(|e| {
                LoginError(format!(
                    "cannot read AZURE_FEDERATED_TOKEN_FILE {file}: {e}"
                ))
            })?;
            form.push(("client_assertion", assertion.trim().to_string()));
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ));
            return aad_post(
                http,
                &url,
                &form,
                "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
            )
            .await;
        }
    }
    if let (Some(endpoint), Some(header)) = (env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER")) {
        let mut req = http
            .get(&endpoint)
            .query(&[("api-version", "2019-08-01"), ("resource", ARM_RESOURCE)])
            .header("X-IDENTITY-HEADER", header);
        if let Some(id) = &client_id {
            req = req.query(&[("client_id", id)]);
        }
        return managed(req, "the managed identity at IDENTITY_ENDPOINT").await;
    }
    let explicit = env("MSI_ENDPOINT");
    // `ACR_IMDS_ENDPOINT` moves the instance metadata service (tests, proxies in front of it).
    let endpoint = explicit
        .clone()
        .or_else(|| env("ACR_IMDS_ENDPOINT"))
        .unwrap_or_else(|| IMDS.to_string());
    let mut req = http
        .get(&endpoint)
        .query(&[("api-version", "2018-02-01"), ("resource", ARM_RESOURCE)])
        .header("Metadata", "true")
        .timeout(Duration::from_secs(if explicit.is_some() { 30 } else { 2 }));
    if let Some(secret) = env("MSI_SECRET") {
        req = req.header("secret", secret);
    }
    if let Some(id) = &client_id {
        req = req.query(&[("client_id", id)]);
    }
    match managed(req, "the managed identity").await {
        Ok(t) => Ok(t),
        Err(e) if explicit.is_some() => Err(e),
        Err(_) => Err(LoginError(
            "no way to log in to the registry: install the Azure CLI and run `az login`, or give acr an Azure AD identity in the environment: AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET (a service principal), AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_FEDERATED_TOKEN_FILE (workload identity), or MSI_ENDPOINT / IDENTITY_ENDPOINT (a managed identity; the instance metadata service did not answer)".into(),
        )),
    }
}

async fn aad_post(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, String)],
    what: &str,
) -> Result<String, LoginError> {
    let resp = http
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| LoginError(format!("cannot reach Azure AD at {url} for {what}: {e}")))?;
    access_token(resp, what).await
}

async fn managed(req: reqwest::RequestBuilder, what: &str) -> Result<String, LoginError> {
    let resp = req
        .send()
        .await
        .map_err(|e| LoginError(format!("{what} did not answer: {e}")))?;
    access_token(resp, what).await
}

async fn access_token(resp: reqwest::Response, what: &str) -> Result<String, LoginError> {
    let status = resp.status();
    let body = json_body(resp).await;
    match body.get("access_token").and_then(|t| t.as_str()) {
        Some(t) if status.is_success() && !t.is_empty() => Ok(t.to_string()),
        _ => {
            let said = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(|e| e.as_str())
                .unwrap_or("");
            Err(LoginError(format!(
                "Azure AD refused {what} ({status}){}",
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b(br#"{"alg":"none"}"#),
            b(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn renewal_comes_before_the_expiry() {
        assert_eq!(
            renew_after(Some(Duration::from_secs(3 * 3600))),
            Duration::from_secs(3 * 3600 - 300)
        );
        assert_eq!(
            renew_after(Some(Duration::from_secs(8))),
            Duration::from_secs(6)
        );
        assert_eq!(
            renew_after(Some(Duration::from_secs(6))),
            Duration::from_secs(4)
        );
        assert_eq!(
            renew_after(Some(Duration::from_secs(2))),
            Duration::from_secs(1)
        );
        assert_eq!(
            renew_after(Some(Duration::ZERO)),
            Duration::from_millis(200)
        );
        assert_eq!(renew_after(None), Duration::from_secs(3600));
    }

    #[test]
    fn claims_of_a_jwt() {
        let now = crate::clock::now_secs();
        let t = jwt(serde_json::json!({"exp": now + 100, "tid": "t1"}));
        let left = expires_in(&t).unwrap().as_secs();
        assert!((98..=100).contains(&left), "{left}");
        assert_eq!(claim(&t, "tid").as_deref(), Some("t1"));
        assert_eq!(expires_in("not-a-jwt"), None);
    }
}
