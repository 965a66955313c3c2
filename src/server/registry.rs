//! The registry routes: `GET /v2/` and `/v2/<name>/{manifests,blobs,tags,referrers}/<ref>`.
//! A request is routed in steps: the container token in its path (if any), its upstream
//! (`upstream::choose`), the route the pipeline declares for it, the typed `ClientRequest`,
//! a fresh context with the proxy's store, then the route's calls (`engine::run_calls`),
//! whose reply is the answer.

use std::time::Duration;

use acr_plugins::oci::{Body, RegistryError};
use acr_plugins::registry::{ClientRequest, Method, Reply, Resource};
use acr_plugins::{Context, PluginError};
use bytes::Bytes;

use super::container_tokens::open_token_path;
use super::state::ProxyState;
use super::{route, upstream, ProxyHost};
use crate::world::ProxyPlan;

/// A registry API request as routed: `/v2/<name>/<resource>/<reference>`.
pub(super) struct ApiPath {
    pub method: Method,
    pub resource: Resource,
    pub name: String,
    pub reference: String,
}

impl ProxyHost {
    /// `/v2/`: `{}`, or with `.forward-auth` the upstream's challenge.
    pub(super) async fn answer_base(
        &self,
        proxy: Option<&ProxyPlan>,
        headers: &hyper::HeaderMap,
        ns: Option<&str>,
    ) -> Result<Reply, RegistryError> {
        if let Some(proxy) = proxy {
            if let Some(challenge) = self.forwarded_ping(proxy, headers, ns).await {
                return Err(challenge);
            }
        }
        Ok(Reply {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Content-Length".into(), "2".into()),
            ],
            body: Body::Full(Bytes::from_static(b"{}")),
        })
    }

    /// A registry API request: its upstream, its request, its context, its route's calls.
    /// Returns the answer and the upstream it went to, once chosen.
    pub(super) async fn answer_api(
        &self,
        proxy: &ProxyPlan,
        state: &ProxyState,
        headers: &hyper::HeaderMap,
        query: &str,
        ns: Option<&str>,
        api: ApiPath,
    ) -> (Result<Reply, RegistryError>, Option<String>) {
        // `/v2/wt/TOKEN/<repo>/...`: the image and injection of a container token.
        let token = match open_token_path(state, &api.name) {
            Ok(t) => t,
            Err(e) => return (Err(e), None),
        };
        let (name, ns) = match &token {
            Some(t) => (t.name.as_str(), Some(t.ns.as_str())),
            None => (api.name.as_str(), ns),
        };
        let mut choice = match upstream::choose(proxy, ns, name) {
            Ok(c) => c,
            Err(e) => return (Err(e), None),
        };
        if let Some(t) = &token {
            choice.client_prefix = t.client_prefix.clone();
        }
        let upstream_name = Some(choice.upstream.ns.clone());
        let (method, resource) = (api.method, api.resource);
        let Some(route) = proxy
            .routes
            .iter()
            .find(|r| r.resource == resource && r.methods.contains(&method))
        else {
            return (Err(no_route(method, resource)), upstream_name);
        };
        // A token's request names its registry by the token, not by the client.
        let client_ns = ns.filter(|_| token.is_none()).map(String::from);
        let forward_credentials = proxy.settings.client_auth.is_none();
        let request = client_request(
            ApiPath {
                name: choice.name,
                ..api
            },
            choice.client_prefix,
            client_ns,
            headers,
            query,
            forward_credentials,
        );
        let (client_injection, client_scope) = match token {
            Some(t) => (Some(t.injection), Some(t.scope)),
            None => (None, None),
        };
        let mut cx = Context::new(self.base_dir.clone());
        cx.world_dir = self.world_dir.clone();
        cx.registry = Some(self.shared.clone());
        cx.store = match &state.store {
            Ok(s) => s.clone(),
            Err(e) => {
                return (
                    Err(RegistryError::new(503, "UNAVAILABLE", e.clone())),
                    upstream_name,
                )
            }
        };
        cx.request = Some(request);
        cx.upstream = Some(choice.upstream);
        cx.client_injection = client_injection;
        cx.client_scope = client_scope;
        if let Err(e) = crate::engine::run_calls(&route.calls, &mut cx, |_| {}).await {
            let e = match e {
                PluginError::Registry(e) => e,
                other => RegistryError::new(500, "UNKNOWN", other.to_string()),
            };
            return (Err(e), upstream_name);
        }
        match cx.reply.take() {
            // What reaches the client counts as served of the upstream's content.
            Some(mut reply) => match &cx.upstream {
                Some(u) => {
                    let served = self.shared.metrics.upstreams.of(&u.base);
                    let head = method == Method::Head;
                    reply.body = served.counting_served(reply.status, reply.body, head);
                    (Ok(reply), upstream_name)
                }
                None => (Ok(reply), upstream_name),
            },
            None => (
                Err(RegistryError::new(
                    500,
                    "UNKNOWN",
                    format!(
                        "the {} route ran without producing a reply: end it with `.resolve` or `.pull`",
                        resource.name()
                    ),
                )),
                upstream_name,
            ),
        }
    }

    /// With `.forward-auth`, clients authenticate to the upstream, and they learn that from
    /// the `/v2/` ping: it is asked of the upstream with the client's credentials, and its 401
    /// (with the upstream's challenge) is passed on. `None`: answer the ping as usual.
    async fn forwarded_ping(
        &self,
        proxy: &ProxyPlan,
        headers: &hyper::HeaderMap,
        ns: Option<&str>,
    ) -> Option<RegistryError> {
        let forwards = proxy
            .routes
            .iter()
            .any(|r| r.calls.iter().any(|c| c.spec.caps.forwards_client_auth));
        if !forwards || proxy.settings.client_auth.is_some() {
            return None;
        }
        let choice = upstream::choose(proxy, ns, "library/x").ok()?;
        let mut req = self
            .shared
            .http
            .get(choice.upstream.url("/v2/"))
            .timeout(Duration::from_secs(10));
        if let Some(a) = headers.get(hyper::header::AUTHORIZATION) {
            req = req.header(hyper::header::AUTHORIZATION.as_str(), a.as_bytes());
        }
        let resp = req.send().await.ok()?;
        if resp.status().as_u16() != 401 {
            return None;
        }
        let mut e = RegistryError::unauthorized(format!(
            "upstream {} needs the client's own credentials",
            choice.upstream.ns
        ));
        for c in resp.headers().get_all("www-authenticate") {
            if let Ok(c) = c.to_str() {
                e = e.with_header("WWW-Authenticate", c);
            }
        }
        Some(e)
    }
}

/// What a route's calls see of the client's request: the repository on the upstream, its
/// paging query, the headers that matter there, and its credentials when acr does not
/// authenticate clients itself (`forward_credentials`).
fn client_request(
    api: ApiPath,
    client_prefix: String,
    client_ns: Option<String>,
    headers: &hyper::HeaderMap,
    query: &str,
    forward_credentials: bool,
) -> ClientRequest {
    let header_values = |name: hyper::header::HeaderName| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    ClientRequest {
        method: api.method,
        resource: api.resource,
        name: api.name,
        reference: api.reference,
        client_prefix,
        client_ns,
        query: route::query_pairs(query)
            .into_iter()
            .filter(|(k, _)| k == "n" || k == "last" || k == "artifactType")
            .collect(),
        accept: header_values(hyper::header::ACCEPT),
        range: header_values(hyper::header::RANGE).into_iter().next(),
        authorization: if forward_credentials {
            header_values(hyper::header::AUTHORIZATION)
                .into_iter()
                .next()
                .map(acr_plugins::registry::ClientSecret)
        } else {
            None
        },
        opt_in: headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-ms-"))
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .take(16)
            .collect(),
    }
}

/// The error for a request the pipeline declares no route for.
fn no_route(method: Method, resource: Resource) -> RegistryError {
    let mut e = RegistryError::unsupported(format!(
        "this mirror has no route for {} {} (add `: .{} {}` under `+ .proxy`)",
        method.as_http(),
        resource.name(),
        resource.name(),
        method.name()
    ));
    // The distribution spec: a registry without the referrers API answers 404, and
    // clients then fall back to the referrers tag schema.
    if resource == Resource::Referrers {
        e.status = 404;
    }
    e
}
