//! The upstream client and what the registry plugins share: the request being served, the
//! upstream it goes to, the reply being built, and the state that outlives one request (the
//! HTTP client, cached challenges and tokens, credentials). The OCI types it speaks (digests,
//! references, bodies, errors) are the ground floor's, in [`crate::oci`].

pub mod bounded;
pub mod challenge;
pub mod client;
pub mod credentials;
pub mod destination;
pub mod fetch;
pub mod limits;
pub mod referrers;
pub mod route;
pub mod tag_list;
pub mod token;

use std::sync::Arc;

use bytes::Bytes;

use crate::oci::{Body, Digest, RegistryError};
pub use credentials::Credentials;
pub use route::{Method, Resource};

/// The registry an upstream request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The registry host as clients name it (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub ns: String,
    /// Where acr sends the requests: `scheme://host[:port][/path]`, no trailing slash.
    pub base: String,
    /// The pipeline names this upstream itself (its `.mirror`, an `.endpoint`, an exact
    /// `.allow`), rather than a client choosing it through an `.allow` glob. Only such an
    /// upstream is sent the credentials that name no host (a `.login FILE`,
    /// `ACR_UPSTREAM_USERNAME`/`_PASSWORD`).
    pub named_by_pipeline: bool,
    /// The upstream is a mirror that stands in for `ns` (an `.endpoint`, perhaps another
    /// acr serving many registries): every request to it carries `?ns=NS`, as containerd
    /// sends its mirrors, so a chained mirror serves the namespace the client asked for and
    /// not its own default. A registry that is no mirror ignores the parameter.
    pub sends_ns: bool,
}

impl Upstream {
    /// The upstream for `ns` at its canonical address (`docker.io` is `registry-1.docker.io`).
    pub fn for_ns(ns: &str) -> Self {
        let host = if ns == "docker.io" || ns == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            ns
        };
        Self {
            ns: ns.to_string(),
            base: format!("https://{host}"),
            named_by_pipeline: false,
            sends_ns: false,
        }
    }

    /// The same upstream, as named by the pipeline (or not).
    pub fn named(mut self, by_pipeline: bool) -> Self {
        self.named_by_pipeline = by_pipeline;
        self
    }

    /// `base` + `/v2/...`, and `ns=NS` added to the query when the upstream is a mirror
    /// of `ns` ([`Upstream::sends_ns`]; `ns` is a registry host the pipeline names,
    /// percent-encoded all the same).
    pub fn url(&self, path: &str) -> String {
        if !self.sends_ns {
            return format!("{}{}", self.base, path);
        }
        let separator = if path.contains('?') { '&' } else { '?' };
        format!(
            "{}{path}{separator}ns={}",
            self.base,
            fetch::encode(&self.ns)
        )
    }

    /// The host (and port) of `base`, for logs and the credential lookup.
    pub fn host(&self) -> &str {
        let rest = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// The client's request, as the plugins see it.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub method: Method,
    pub resource: Resource,
    /// The repository as the upstream knows it (`library/` added for docker.io).
    pub name: String,
    /// Tag or digest for manifests, digest for blobs and referrers, empty for tags.
    pub reference: String,
    /// The path prefix the client used before `/manifests` etc. (`/v2/ghcr.io/org/app`), to
    /// rewrite `Link` headers so they point back at acr.
    pub client_prefix: String,
    /// The `ns` the client sent, to keep it in rewritten `Link` headers.
    pub client_ns: Option<String>,
    /// The client's query, minus `ns` (`n`, `last`, `artifactType`).
    pub query: Vec<(String, String)>,
    /// Headers of the client's request that matter upstream: Accept, Range, If-None-Match.
    pub accept: Vec<String>,
    pub range: Option<String>,
    /// The client's `Authorization`, kept only when acr does not authenticate clients itself
    /// (what `.forward-auth` sends upstream). Never logged.
    pub authorization: Option<ClientSecret>,
    /// The client's `x-ms-*` headers (names lowercased), which containerd sends from
    /// hosts.toml: `x-ms-upgrade-if-streamable: overlaybd` opts a host in to `.teleport`.
    pub opt_in: Vec<(String, String)>,
}

/// A client's credential: its Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(pub String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl ClientRequest {
    /// The value of the client's header `name` (one of the `x-ms-*` ones kept).
    pub fn opt_in(&self, name: &str) -> Option<&str> {
        self.opt_in
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What acr answers the client, built by the plugins of the route.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Reply {
    /// A manifest's reply: its digest, length and type, and its bytes unless `method` is HEAD.
    pub fn manifest(method: Method, digest: &Digest, bytes: Bytes, media_type: &str) -> Reply {
        let mut headers = vec![
            ("Docker-Content-Digest".to_string(), digest.to_string()),
            ("Content-Length".to_string(), bytes.len().to_string()),
        ];
        if !media_type.is_empty() {
            headers.push(("Content-Type".to_string(), media_type.to_string()));
        }
        let body = if method == Method::Head {
            Body::Empty
        } else {
            Body::Full(bytes)
        };
        Reply {
            status: 200,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream client reads and writes of one request's state: the shared client, the
/// upstream chosen, the client's request, the credentials found, and the authorization won.
/// The plugins' [`crate::Context`] implements it, so the client never imports the context.
pub trait RequestState: Send {
    fn shared(&self) -> Option<&Arc<Shared>>;
    fn upstream(&self) -> Option<&Upstream>;
    fn request(&self) -> Option<&ClientRequest>;
    fn credentials(&self) -> Option<&Credentials>;
    /// `.forward-auth` ran: the client's own Authorization goes upstream.
    fn forwards_client_auth(&self) -> bool;
    /// What authenticating upstream reads and changes.
    fn auth(&mut self) -> AuthState<'_>;
}

/// The request's upstream authentication, borrowed from its state.
pub struct AuthState<'a> {
    /// `.authn` ran: answer the upstream's challenges.
    pub answers_challenges: &'a mut bool,
    /// The `Authorization` header for the upstream. Never logged.
    pub authorization: &'a mut Option<String>,
    /// `.authn` could not reach the upstream in time: what the request's calls answer at once.
    pub unavailable: &'a mut Option<RegistryError>,
}

/// State that outlives a request: one per running mirror, shared by every request.
#[derive(Debug)]
pub struct Shared {
    pub http: reqwest::Client,
    /// The waits of every upstream request (connect, headers, body).
    pub limits: limits::UpstreamLimits,
    pub auth: token::AuthCache,
    pub credentials: credentials::CredentialCache,
    /// The process's counters (`GET /metrics`), shared with the stores.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Shared {
    pub fn new() -> Result<Arc<Self>, RegistryError> {
        Self::with_limits(limits::UpstreamLimits::default())
    }

    /// Redirects are never followed by the client itself (`client::send` follows them by
    /// hand, by the rules of `destination`). Every read from a connection is bounded by the
    /// longer of the header and idle waits, a backstop behind the finer bounds `client` puts
    /// on the wait for headers and between two pieces of a body.
    pub fn with_limits(limits: limits::UpstreamLimits) -> Result<Arc<Self>, RegistryError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limits.connect)
            .dns_resolver(Arc::new(destination::GuardedResolver))
            .read_timeout(limits.header.max(limits.body_idle))
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .user_agent(concat!("acr/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                RegistryError::bad_gateway(format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(Arc::new(Self {
            http,
            limits,
            auth: token::AuthCache::default(),
            credentials: credentials::CredentialCache::default(),
            metrics: Arc::new(crate::metrics::Metrics::default()),
        }))
    }
}
