//! The HTTP side: serves a block's `+ .proxy` with hyper (HTTP/1.1 and h2c), parses each
//! request, chooses its upstream, runs the route's plugin calls over a fresh context and turns
//! the context's reply (or error) into a response. Bodies stream.
//!
//! The pipeline is read from the reload channel per request, so an edit that compiles changes
//! what new requests do without a restart.

pub mod clients;
pub mod limits;
pub mod observe;
pub mod peer;
pub mod route;
pub mod status;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod upstream;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acr_plugins::catalogue::RunFuture;
use acr_plugins::inject_layer::token::{self as container_token, ContainerTokens};
use acr_plugins::registry::{Body, ClientRequest, RegistryError, Reply, Shared};
use acr_plugins::{catalogue, Context, Host, PluginError};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::world::Pipeline;
use route::Target;

pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// How long a client may take to send a request's headers (from connecting, or from the end
/// of its previous request) before the connection is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// A proxy's block, by name and symbol: what identifies it across reloads.
type ProxyKey = (String, String);

/// Serves proxies for the engine: the `Host` the `.mirror` plugin calls.
pub struct ProxyHost {
    pipelines: watch::Receiver<Arc<Pipeline>>,
    shared: Arc<Shared>,
    base_dir: PathBuf,
    world_dir: PathBuf,
    serving: Mutex<HashSet<(String, String)>>,
    /// Each proxy's content store (`None`: `: .cache off`), opened when it starts serving.
    stores: Mutex<HashMap<ProxyKey, Option<Arc<acr_plugins::store::Store>>>>,
    /// Each proxy's container tokens (`: .container-tokens TTL`).
    tokens: Mutex<HashMap<ProxyKey, Arc<ContainerTokens>>>,
    /// Each proxy's client authentication (`: .users FILE`), with the settings it was made of.
    client_auth: Mutex<HashMap<ProxyKey, (clients::AuthSettings, Arc<clients::ClientAuth>)>>,
    /// Request counters, latencies, recent requests and store samples.
    pub observer: Arc<observe::Observer>,
    /// Set when acr is stopping: listeners close, connections finish what they serve.
    stopping: watch::Sender<bool>,
    /// Connections open now.
    active: Arc<std::sync::atomic::AtomicUsize>,
    sampling: std::sync::atomic::AtomicBool,
    /// The last readiness check: when, and its answer.
    readiness: Mutex<Option<(Instant, Result<String, String>)>>,
    /// Per-client limits of logins, credential checks and container tokens.
    throttles: throttle::Throttles,
}

impl ProxyHost {
    pub fn new(
        pipelines: watch::Receiver<Arc<Pipeline>>,
        shared: Arc<Shared>,
        base_dir: PathBuf,
        world_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            pipelines,
            shared,
            base_dir,
            world_dir,
            serving: Mutex::new(HashSet::new()),
            stores: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            client_auth: Mutex::new(HashMap::new()),
            observer: Arc::new(observe::Observer::default()),
            stopping: watch::channel(false).0,
            active: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            sampling: std::sync::atomic::AtomicBool::new(false),
            readiness: Mutex::new(None),
            throttles: throttle::Throttles::default(),
        })
    }

    /// The store of `proxy`, opened on first use. A reload that changes the cache settings
    /// takes effect at the next start.
    fn store_of(
        &self,
        proxy: &crate::world::ProxyPlan,
    ) -> Result<Option<Arc<acr_plugins::store::Store>>, String> {
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| "store table poisoned".to_string())?;
        if let Some(s) = stores.get(&proxy.key) {
            return Ok(s.clone());
        }
        let s = store::open(
            proxy,
            &self.base_dir,
            &self.world_dir,
            self.shared.metrics.clone(),
        )?;
        stores.insert(proxy.key.clone(), s.clone());
        Ok(s)
    }

    /// The container tokens of `proxy`, when its `: .container-tokens TTL` turns them on. A
    /// reload that changes the lifetime applies to tokens made after it.
    fn tokens_of(&self, proxy: &crate::world::ProxyPlan) -> Option<Arc<ContainerTokens>> {
        let setting = proxy
            .settings
            .all("container-tokens")
            .filter_map(|v| v.as_str())
            .last()?
            .trim()
            .to_string();
        if setting == "off" {
            return None;
        }
        let ttl = acr_plugins::parse_duration(&setting).ok()?;
        let mut tokens = self.tokens.lock().ok()?;
        if let Some(t) = tokens.get(&proxy.key) {
            if t.ttl() == ttl {
                return Some(t.clone());
            }
        }
        let dir = container_token::tokens_dir(
            &self.world_dir,
            &format!("{}-{}", proxy.key.0, proxy.key.1),
        );
        let t = Arc::new(ContainerTokens::new(dir, ttl));
        tokens.insert(proxy.key.clone(), t.clone());
        Some(t)
    }

    /// The client authentication of `proxy`, when `: .users FILE` turns it on; made again
    /// when a reload changes its settings. Relative paths are relative to where acr runs.
    fn auth_of(
        &self,
        proxy: &crate::world::ProxyPlan,
    ) -> Result<Option<Arc<clients::ClientAuth>>, String> {
        let text = |name: &str| -> Vec<String> {
            proxy
                .settings
                .all(name)
                .filter_map(|v| v.as_str())
                .map(|s| s.trim().to_string())
                .collect()
        };
        let Some(users) = text("users").pop() else {
            return Ok(None);
        };
        let resolve = |p: &str| {
            let p = std::path::Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                self.base_dir.join(p)
            }
        };
        let settings = clients::AuthSettings {
            users: resolve(&users),
            rules: text("allow-pull")
                .iter()
                .filter_map(|r| {
                    let (u, g) = r.split_once(char::is_whitespace)?;
                    Some((u.to_string(), g.trim().to_string()))
                })
                .collect(),
            secret: text("token-secret").pop().map(|s| resolve(&s)),
        };
        let mut table = self
            .client_auth
            .lock()
            .map_err(|_| "client auth table poisoned".to_string())?;
        if let Some((s, a)) = table.get(&proxy.key) {
            if *s == settings {
                return Ok(Some(a.clone()));
            }
        }
        let auth = Arc::new(clients::ClientAuth::new(&settings)?);
        table.insert(proxy.key.clone(), (settings, auth.clone()));
        Ok(Some(auth))
    }

    /// Client authentication of a registry request, when the proxy has `: .users`. A path
    /// under a container token (`/v2/wt/TOKEN/...`) is checked where the token is looked up:
    /// the user who made it must still be allowed to pull its repository.
    async fn admit(
        &self,
        key: &(String, String),
        headers: &hyper::HeaderMap,
        target: &Target,
        ns: Option<&str>,
        peer: std::net::IpAddr,
    ) -> Result<(), RegistryError> {
        let pipeline = self.current();
        let Some(proxy) = pipeline.proxy(key) else {
            return Ok(());
        };
        let auth = match self.auth_of(proxy) {
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
                if name.starts_with("wt/") && self.tokens_of(proxy).is_some() {
                    return Ok(());
                }
                let mut r = vec![name.clone()];
                if let Some(ns) = ns.filter(|n| !n.is_empty()) {
                    r.push(format!("{ns}/{name}"));
                }
                r
            }
        };
        let realm = self.realm_of(proxy, headers);
        drop(pipeline);
        self.client_user(&auth, headers, &repos, &realm, peer)
            .await
            .map(|_| ())
    }

    /// The realm of acr's own `/token` as the client reaches it.
    fn realm_of(&self, proxy: &crate::world::ProxyPlan, headers: &hyper::HeaderMap) -> String {
        let host = headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&proxy.address)
            .to_string();
        let scheme = if self.tls_of(proxy) { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }

    /// The user of a request's credentials, checked for `repos` (none: any valid user), with
    /// the failed-login limit of its address.
    async fn client_user(
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

    /// With `.forward-auth`, clients authenticate to the upstream, and they learn that from
    /// the `/v2/` ping: it is asked of the upstream with the client's credentials, and its 401
    /// (with the upstream's challenge) is passed on. `None`: answer the ping as usual.
    async fn forwarded_ping(
        &self,
        key: &(String, String),
        headers: &hyper::HeaderMap,
        ns: Option<&str>,
    ) -> Option<RegistryError> {
        let pipeline = self.current();
        let proxy = pipeline.proxy(key)?;
        let forwards = proxy
            .routes
            .iter()
            .any(|r| r.calls.iter().any(|c| c.spec.caps.forwards_client_auth));
        if !forwards || proxy.settings.get("users").is_some() {
            return None;
        }
        let choice = upstream::choose(proxy, ns, "library/x").ok()?;
        drop(pipeline);
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

    /// Whether `proxy` serves https (`: .tls-cert`).
    fn tls_of(&self, proxy: &crate::world::ProxyPlan) -> bool {
        proxy.settings.get("tls-cert").is_some()
    }

    /// `/token`: acr's own token endpoint (GET with Basic, or the OAuth2 password POST).
    async fn answer_token(
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
            .auth_of(proxy)
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

    fn current(&self) -> Arc<Pipeline> {
        self.pipelines.borrow().clone()
    }

    /// The TLS files of `proxy` (`: .tls-cert`, `: .tls-key`, `: .tls-client-ca`), relative
    /// paths against the directory acr runs in.
    fn tls_files(&self, proxy: &crate::world::ProxyPlan) -> Result<Option<tls::TlsFiles>, String> {
        let get = |name: &str| {
            proxy
                .settings
                .all(name)
                .filter_map(|v| v.as_str())
                .last()
                .map(|p| {
                    let p = std::path::Path::new(p.trim());
                    if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        self.base_dir.join(p)
                    }
                })
        };
        match (get("tls-cert"), get("tls-key")) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(tls::TlsFiles {
                cert,
                key,
                client_ca: get("tls-client-ca"),
            })),
            _ => Err("https needs both `: .tls-cert FILE` and `: .tls-key FILE`".into()),
        }
    }

    async fn run_server(
        self: Arc<Self>,
        key: (String, String),
        address: String,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<(), PluginError> {
        let listener =
            tokio::net::TcpListener::bind(&address)
                .await
                .map_err(|e| PluginError::Failed {
                    plugin: "mirror",
                    id: 0,
                    message: format!("cannot listen on {address}: {e}"),
                })?;
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(address.clone());
        let limits =
            Arc::new(
                limits::ServerLimits::from_env().map_err(|message| PluginError::Failed {
                    plugin: "mirror",
                    id: 0,
                    message,
                })?,
            );
        // At the bound, connections wait in the listen queue (see `limits`).
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        tracing::info!(address = %local, block = %format!("{} {}", key.0, key.1), https = tls.is_some(), max_connections = limits.max_connections, "proxy ready");
        eprintln!("Listening on {local}");
        self.start_sampling();
        let mut stopping = self.stopping.subscribe();
        loop {
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => s,
                _ = stopped(&mut stopping) => {
                    tracing::info!(address = %local, "no longer accepting connections");
                    return Ok(());
                }
            };
            let Ok(slot) = slot else { return Ok(()) };
            if slots.available_permits() == 0 {
                tracing::warn!(address = %local, max = limits.max_connections, "at the connection bound: new connections wait until one closes");
            }
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped(&mut stopping) => {
                    tracing::info!(address = %local, "no longer accepting connections");
                    return Ok(());
                }
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let host = self.clone();
            let key = key.clone();
            let active = ActiveGuard::new(self.active.clone());
            let mut stopping = self.stopping.subscribe();
            let tls = tls.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                let _active = active;
                let _slot = slot;
                // hyper's header timeout starts with the first byte: a client that connects
                // and sends nothing would hold its connection (and a file descriptor) forever.
                let mut first = [0u8; 1];
                let peeked = tokio::select! {
                    p = tokio::time::timeout(HEADER_TIMEOUT, stream.peek(&mut first)) => p,
                    _ = stopped(&mut stopping) => return,
                };
                match peeked {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => {
                        tracing::debug!(%peer, "connection closed: nothing sent in time");
                        return;
                    }
                }
                match tls {
                    None => {
                        host.serve_io(key, TokioIo::new(stream), peer, stopping, limits)
                            .await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                host.serve_io(key, TokioIo::new(tls), peer, stopping, limits)
                                    .await
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
    }

    /// Serves HTTP/1.1 and HTTP/2 on one connection until it ends, acr stops (then the
    /// request in progress finishes and the connection closes), or it has had no request in
    /// progress for the idle bound (closed the same graceful way). A request with a body must
    /// be answered within the body bound, or it gets a 408 and the connection closes.
    async fn serve_io<I>(
        self: Arc<Self>,
        key: (String, String),
        io: I,
        peer: std::net::SocketAddr,
        mut stopping: watch::Receiver<bool>,
        limits: Arc<limits::ServerLimits>,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let host = self;
        let activity = Arc::new(limits::Activity::default());
        let in_progress = activity.clone();
        let body_timeout = limits.request_body_timeout;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let host = host.clone();
            let key = key.clone();
            let busy = in_progress.begin();
            async move {
                let carries_body = matches!(
                    *req.method(),
                    hyper::Method::POST | hyper::Method::PUT | hyper::Method::PATCH
                );
                let response = if carries_body {
                    match tokio::time::timeout(body_timeout, host.handle(&key, req, peer)).await {
                        Ok(response) => response,
                        Err(_) => limits::body_timed_out(body_timeout, peer),
                    }
                } else {
                    host.handle(&key, req, peer).await
                };
                Ok::<_, Infallible>(
                    response.map(|body| limits::BusyBody::new(body, busy).boxed_unsync()),
                )
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(64 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(64 * 1024)
            .max_concurrent_streams(limits::H2_MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(Some(limits.h2_keepalive_interval))
            .keep_alive_timeout(limits::H2_KEEPALIVE_TIMEOUT);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let idle_bound = limits.connection_idle_timeout;
        let mut idle_check = tokio::time::interval(
            (idle_bound / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)),
        );
        let mut closing = false;
        // Set when the connection was told to close for idleness: past it, still idle, dropped.
        let mut idle_deadline: Option<Instant> = None;
        let ended = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = stopped(&mut stopping), if !closing => {
                    // Finish the request in progress, then close; take no new one.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = idle_check.tick(), if !closing || idle_deadline.is_some() => {
                    if let Some(deadline) = idle_deadline {
                        if Instant::now() >= deadline && !activity.idle_for().is_zero() {
                            tracing::debug!(%peer, "dropping an idle connection that did not close");
                            return;
                        }
                    } else if activity.idle_for() >= idle_bound {
                        tracing::debug!(%peer, "closing a connection idle for {idle_bound:?}");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        idle_deadline = Some(Instant::now() + limits::IDLE_CLOSE_GRACE);
                    }
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }

    /// Serves one client connection given as a byte stream (HTTP/1.1 or h2c), as `proxy`
    /// would serve a connection from `peer`: for the HTTP entry's fuzz target and tests.
    pub async fn serve_stream<S>(
        self: Arc<Self>,
        key: (String, String),
        stream: S,
        peer: std::net::SocketAddr,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let stopping = self.stopping.subscribe();
        let limits = Arc::new(limits::ServerLimits::default());
        self.serve_io(key, TokioIo::new(stream), peer, stopping, limits)
            .await
    }

    /// Answers a request without a network: what `acr warm` pulls through, so the store
    /// fills exactly as a client's pull would fill it. `path` may carry a query.
    pub async fn in_process(
        &self,
        key: &(String, String),
        method: &str,
        path: &str,
        headers: &hyper::HeaderMap,
    ) -> Result<Reply, RegistryError> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let ns = route::query_value(query, "ns");
        let peer = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        self.answer(key, headers, method, path, query, ns.as_deref(), peer)
            .await
            .0
    }

    /// Waits (at most `limit`) until every store has finished copying blobs to its S3 tier.
    pub async fn settle_stores(&self, limit: Duration) -> usize {
        let stores: Vec<_> = self
            .stores
            .lock()
            .map(|s| s.values().flatten().cloned().collect())
            .unwrap_or_default();
        let mut left = 0;
        for s in stores {
            left += s.settle(limit).await;
        }
        left
    }

    /// Stops taking connections and waits (at most `grace`) for those open to finish what
    /// they serve. Returns how many were still open when the time ran out.
    pub async fn drain(&self, grace: Duration) -> usize {
        use std::sync::atomic::Ordering;
        self.stopping.send_replace(true);
        let deadline = Instant::now() + grace;
        loop {
            let open = self.active.load(Ordering::SeqCst);
            if open == 0 || Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Samples the store's counters every 10 s for `/status` (once per process).
    fn start_sampling(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.sampling.swap(true, Ordering::SeqCst) {
            return;
        }
        let observer = self.observer.clone();
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(observe::SAMPLE_EVERY);
            loop {
                tick.tick().await;
                observer.sample(&metrics);
            }
        });
    }

    /// `/readyz`: the store can be written and at least one upstream answers HTTP (any
    /// status: a 401 is an upstream that is there). Checked at most every 5 s.
    async fn readiness(&self, key: &(String, String)) -> Result<String, String> {
        if let Ok(last) = self.readiness.lock() {
            if let Some((at, answer)) = last.as_ref() {
                if at.elapsed() < Duration::from_secs(5) {
                    return answer.clone();
                }
            }
        }
        let answer = self.check_ready(key).await;
        if let Ok(mut last) = self.readiness.lock() {
            *last = Some((Instant::now(), answer.clone()));
        }
        answer
    }

    async fn check_ready(&self, key: &(String, String)) -> Result<String, String> {
        let pipeline = self.current();
        let proxy = pipeline
            .proxy(key)
            .ok_or("the running pipeline no longer declares this proxy")?
            .clone();
        drop(pipeline);
        let store = self.store_of(&proxy)?;
        let store_state = match &store {
            Some(s) => {
                let probe = s.temp_file("ready");
                std::fs::write(&probe, b"ok").map_err(|e| {
                    format!("the store at {} cannot be written: {e}", s.root().display())
                })?;
                let _ = std::fs::remove_file(&probe);
                format!("store {} writable", s.root().display())
            }
            None => "no store".to_string(),
        };
        let mut bases: Vec<String> = Vec::new();
        for host in &proxy.mirror_hosts {
            if let Ok(c) = upstream::choose(
                &proxy,
                Some(upstream::mirror_ns(host).as_str()),
                "library/x",
            ) {
                bases.push(c.upstream.base);
            }
        }
        for v in proxy.settings.all("endpoint").filter_map(|v| v.as_str()) {
            if let Some((_, url)) = v.split_once(char::is_whitespace) {
                bases.push(url.trim().trim_end_matches('/').to_string());
            }
        }
        if bases.is_empty() {
            return Ok(format!("{store_state}; no fixed upstream"));
        }
        let mut errors = Vec::new();
        for base in &bases {
            let probe = self
                .shared
                .http
                .get(format!("{base}/v2/"))
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            match probe {
                Ok(r) => {
                    return Ok(format!(
                        "{store_state}; upstream {base} answers ({})",
                        r.status().as_u16()
                    ))
                }
                Err(e) => errors.push(format!("{base}: {e}")),
            }
        }
        Err(format!("no upstream answers: {}", errors.join("; ")))
    }

    /// Answers one request, and logs it once it is over: for a streamed body that is when
    /// the last byte left (or the transfer broke), so `bytes` and `ms` are what really
    /// happened, not what the headers promised.
    pub async fn handle(
        &self,
        key: &(String, String),
        req: Request<Incoming>,
        peer: std::net::SocketAddr,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let ns = route::query_value(&query, "ns");
        let (result, upstream) = if method == "POST" && is_service_path(&path) {
            (self.answer_post(key, req, &path, peer.ip()).await, None)
        } else if method == "GET" && path == "/auth" {
            (self.answer_auth(key, &query, peer).await, None)
        } else if (method == "GET" || method == "POST") && path == "/token" {
            (self.answer_token(key, req, &query, peer.ip()).await, None)
        } else {
            let headers = req.headers();
            self.answer(
                key,
                headers,
                &method,
                &path,
                &query,
                ns.as_deref(),
                peer.ip(),
            )
            .await
        };
        let mut line = RequestLine {
            method,
            path: loggable(&redact_path(&path)),
            ns: ns.as_deref().map(loggable).unwrap_or_else(|| "-".into()),
            upstream: upstream
                .as_deref()
                .map(loggable)
                .unwrap_or_else(|| "-".into()),
            status: 0,
            started,
            bytes: 0,
            failed: None,
            observer: Some(self.observer.clone()),
        };
        match result {
            Ok(reply) => {
                line.status = reply.status;
                reply_response(reply, &line.method.clone(), Some(line))
            }
            Err(e) => {
                let response = error_response(&e);
                line.status = e.status;
                line.bytes = if line.method == "HEAD" {
                    0
                } else {
                    e.body().len() as u64
                };
                line.emit();
                response
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        key: &(String, String),
        headers: &hyper::HeaderMap,
        method: &str,
        path: &str,
        query: &str,
        ns: Option<&str>,
        peer: std::net::IpAddr,
    ) -> (Result<Reply, RegistryError>, Option<String>) {
        if method == "GET" || method == "HEAD" {
            match path {
                "/healthz" => return (Ok(text_reply(200, "text/plain", "ok\n".into())), None),
                "/readyz" => {
                    let answer = match self.readiness(key).await {
                        Ok(why) => text_reply(200, "text/plain", format!("ready: {why}\n")),
                        Err(why) => text_reply(503, "text/plain", format!("not ready: {why}\n")),
                    };
                    return (Ok(answer), None);
                }
                "/status" => {
                    let pipeline = self.current();
                    let Some(proxy) = pipeline.proxy(key) else {
                        return (Err(proxy_gone()), None);
                    };
                    let store = self.store_of(proxy).ok().flatten();
                    let root = store.as_ref().map(|s| s.root().display().to_string());
                    let html =
                        status::page(proxy, &self.shared.metrics, &self.observer, root.as_deref());
                    return (Ok(text_reply(200, "text/html; charset=utf-8", html)), None);
                }
                _ => {}
            }
        }
        if path == "/metrics" && method == "GET" {
            let mut text = self.shared.metrics.render();
            text.push_str(&self.observer.render());
            return (
                Ok(Reply {
                    status: 200,
                    headers: vec![
                        ("Content-Type".into(), "text/plain; version=0.0.4".into()),
                        ("Content-Length".into(), text.len().to_string()),
                    ],
                    body: Body::Full(Bytes::from(text)),
                }),
                None,
            );
        }
        let target = match route::parse(method, path) {
            Ok(t) => t,
            Err(e) => return (Err(e), None),
        };
        if let Err(e) = self.admit(key, headers, &target, ns, peer).await {
            return (Err(e), None);
        }
        let (method, resource, name, reference) = match target {
            Target::Base => {
                if let Some(challenge) = self.forwarded_ping(key, headers, ns).await {
                    return (Err(challenge), None);
                }
                return (
                    Ok(Reply {
                        status: 200,
                        headers: vec![
                            ("Content-Type".into(), "application/json".into()),
                            ("Content-Length".into(), "2".into()),
                        ],
                        body: Body::Full(Bytes::from_static(b"{}")),
                    }),
                    None,
                );
            }
            Target::Api {
                method,
                resource,
                name,
                reference,
            } => (method, resource, name, reference),
        };
        let pipeline = self.current();
        let Some(proxy) = pipeline.proxy(key) else {
            return (Err(proxy_gone()), None);
        };
        // `/v2/wt/TOKEN/<repo>/...`: the image and injection of a container token.
        let mut name = name;
        let mut ns = ns.map(String::from);
        let mut token_prefix = None;
        let mut client_injection = None;
        let mut client_scope = None;
        if let (Some(rest), Some(tokens)) = (name.strip_prefix("wt/"), self.tokens_of(proxy)) {
            let (token, repo) = rest.split_once('/').unwrap_or((rest, ""));
            let granted = match tokens.lookup(token) {
                Ok(g) => g,
                Err(e) => return (Err(e), None),
            };
            if repo != granted.record.image.name {
                return (
                    Err(RegistryError::denied(format!(
                        "container token {} opens {} only, not `{repo}`",
                        container_token::token_id(token),
                        granted.record.image.name
                    ))),
                    None,
                );
            }
            if let Err(e) = self.token_user_may_pull(proxy, &granted) {
                return (Err(e), None);
            }
            client_scope = Some(container_token::token_id(token));
            token_prefix = Some(format!("/v2/wt/{token}/{repo}"));
            ns = Some(granted.record.image.ns.clone());
            client_injection = Some(granted.injection.clone());
            name = repo.to_string();
        }
        let choice = match upstream::choose(proxy, ns.as_deref(), &name) {
            Ok(mut c) => {
                if let Some(p) = token_prefix {
                    c.client_prefix = p;
                }
                c
            }
            Err(e) => return (Err(e), None),
        };
        let upstream_name = Some(choice.upstream.ns.clone());
        let Some(route) = proxy
            .routes
            .iter()
            .find(|r| r.resource == resource && r.methods.contains(&method))
        else {
            let mut e = RegistryError::unsupported(format!(
                "this mirror has no route for {} {} (add `: .{} {}` under `+ .proxy`)",
                method.as_http(),
                resource.name(),
                resource.name(),
                method.name()
            ));
            // The distribution spec: a registry without the referrers API answers 404, and
            // clients then fall back to the referrers tag schema.
            if resource == acr_plugins::registry::Resource::Referrers {
                e.status = 404;
            }
            return (Err(e), upstream_name);
        };
        let header_values = |name: hyper::header::HeaderName| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok().map(String::from))
                .collect()
        };
        let client_auth_on = proxy.settings.get("users").is_some();
        let request = ClientRequest {
            method,
            resource,
            name: choice.name,
            reference,
            client_prefix: choice.client_prefix,
            client_ns: if client_injection.is_some() {
                None
            } else {
                ns.clone()
            },
            query: route::query_pairs(query)
                .into_iter()
                .filter(|(k, _)| k == "n" || k == "last" || k == "artifactType")
                .collect(),
            accept: header_values(hyper::header::ACCEPT),
            range: header_values(hyper::header::RANGE).into_iter().next(),
            authorization: if client_auth_on {
                None
            } else {
                header_values(hyper::header::AUTHORIZATION)
                    .into_iter()
                    .next()
                    .map(acr_plugins::registry::ClientSecret)
            },
            opt_in: headers
                .iter()
                .filter(|(k, _)| k.as_str().starts_with("x-ms-"))
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .take(16)
                .collect(),
        };
        let mut cx = Context::new(self.base_dir.clone());
        cx.world_dir = self.world_dir.clone();
        cx.registry = Some(self.shared.clone());
        cx.store = match self.store_of(proxy) {
            Ok(s) => s,
            Err(e) => {
                return (
                    Err(RegistryError::new(503, "UNAVAILABLE", e)),
                    upstream_name,
                )
            }
        };
        cx.request = Some(request);
        cx.upstream = Some(choice.upstream);
        cx.client_injection = client_injection;
        cx.client_scope = client_scope;
        let calls = route.calls.clone();
        drop(pipeline);
        for call in &calls {
            cx.vars = (*call.control).clone();
            if let Err(e) = catalogue::run(call.spec, &call.invocation, &mut cx).await {
                let e = match e {
                    PluginError::Registry(e) => e,
                    other => RegistryError::new(500, "UNKNOWN", other.to_string()),
                };
                return (Err(e), upstream_name);
            }
        }
        match cx.reply.take() {
            Some(reply) => (Ok(reply), upstream_name),
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
}

/// The largest body acr reads from a client: a container-token request with `data:` layers.
const MAX_POST_BODY: usize = 64 * 1024 * 1024;

/// The paths acr answers a POST on (Wave's names and their v1alpha2 twins).
fn is_service_path(path: &str) -> bool {
    matches!(
        path,
        "/container-token" | "/v1alpha2/container" | "/validate-creds" | "/v1alpha2/validate-creds"
    )
}

/// Now as RFC 3339 UTC.
pub fn rfc3339_now() -> String {
    container_token::rfc3339(acr_plugins::store::now_ms())
}

/// The error for a request to a proxy a reload removed.
fn proxy_gone() -> RegistryError {
    RegistryError::new(
        503,
        "UNAVAILABLE",
        "the running pipeline no longer declares this proxy",
    )
}

fn text_reply(status: u16, content_type: &str, text: String) -> Reply {
    Reply {
        status,
        headers: vec![
            ("Content-Type".into(), content_type.into()),
            ("Content-Length".into(), text.len().to_string()),
        ],
        body: Body::Full(Bytes::from(text)),
    }
}

/// Resolves once acr is stopping (holding no borrow of the channel across the wait's end).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Counts a connection as open while it lives.
struct ActiveGuard(Arc<std::sync::atomic::AtomicUsize>);

impl ActiveGuard {
    fn new(active: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        active.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(active)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn json_reply(value: &serde_json::Value) -> Reply {
    let text = value.to_string();
    Reply {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Content-Length".into(), text.len().to_string()),
        ],
        body: Body::Full(Bytes::from(text)),
    }
}

impl ProxyHost {
    /// `POST /container-token` and `POST /validate-creds`, when the proxy has
    /// `: .container-tokens TTL`. With `: .users`, both need a user's credentials (a token is
    /// made for that user, for an image the user may pull); both are limited per client
    /// address (see `throttle`).
    async fn answer_post(
        &self,
        key: &(String, String),
        req: Request<Incoming>,
        path: &str,
        peer: std::net::IpAddr,
    ) -> Result<Reply, RegistryError> {
        let pipeline = self.current();
        let proxy = pipeline.proxy(key).ok_or_else(proxy_gone)?;
        let Some(tokens) = self.tokens_of(proxy) else {
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
        let auth = self
            .auth_of(&proxy)
            .map_err(|e| RegistryError::new(503, "UNAVAILABLE", e))?;
        let user = match &auth {
            Some(auth) => {
                let realm = self.realm_of(&proxy, req.headers());
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
            let check = container_token::CredentialsCheck::parse(&body)?;
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
            let ok = container_token::validate_credentials(
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
            expires = %container_token::rfc3339(record.expires_ms),
            "container token issued"
        );
        Ok(json_reply(&serde_json::json!({
            "containerToken": token,
            "targetImage": target,
            "expiration": container_token::rfc3339(record.expires_ms),
            "containerImage": record.image.to_string(),
        })))
    }

    /// With `: .users`, a container token serves only while the user who made it is still a
    /// user allowed to pull its image; a token made before the mirror had users serves none.
    fn token_user_may_pull(
        &self,
        proxy: &crate::world::ProxyPlan,
        granted: &container_token::Granted,
    ) -> Result<(), RegistryError> {
        let auth = match self.auth_of(proxy) {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(()),
            Err(e) => return Err(RegistryError::new(503, "UNAVAILABLE", e)),
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
}

/// The names `.allow-pull` rules match for an image: its repository, and with its registry.
fn image_repos(image: &container_token::ImageRef) -> Vec<String> {
    vec![image.name.clone(), format!("{}/{}", image.ns, image.name)]
}

/// How long a client may take between two pieces of a POST body.
const POST_BODY_IDLE: Duration = Duration::from_secs(20);

/// The largest `/token` form a client may send.
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// A POST body, at most `limit` bytes, each piece within [`POST_BODY_IDLE`].
async fn read_post_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, RegistryError> {
    let mut body = http_body_util::Limited::new(req.into_body(), limit);
    let mut bytes = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(POST_BODY_IDLE, body.frame()).await {
            Err(_) => {
                return Err(RegistryError::new(
                    408,
                    "UNSUPPORTED",
                    format!(
                        "the request body stalled for {} s",
                        POST_BODY_IDLE.as_secs()
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                return Err(if e.is::<http_body_util::LengthLimitError>() {
                    RegistryError::new(
                        413,
                        "SIZE_INVALID",
                        format!("the request body is larger than {limit} bytes"),
                    )
                } else {
                    RegistryError::new(400, "UNSUPPORTED", format!("reading the request body: {e}"))
                })
            }
        };
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

/// A path as logs and `/status` show it: a container token replaced by its id.
fn redact_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/v2/wt/") {
        Some(rest) => {
            let (token, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let id = container_token::token_id(token);
            std::borrow::Cow::Owned(if tail.is_empty() {
                format!("/v2/wt/token-{id}")
            } else {
                format!("/v2/wt/token-{id}/{tail}")
            })
        }
        None => std::borrow::Cow::Borrowed(path),
    }
}

impl ProxyHost {
    /// `GET /auth?remote_url=URL`: the overlaybd snapshotter's credential request (its `http`
    /// credential mode). Answers the credentials the manifests route's `.login` calls find for
    /// that registry, in the snapshotter's format, and only to this node: upstream credentials
    /// never leave the machine acr runs on.
    async fn answer_auth(
        &self,
        key: &(String, String),
        query: &str,
        peer: std::net::SocketAddr,
    ) -> Result<Reply, RegistryError> {
        let trace = format!("{:016x}", acr_plugins::store::now_ms());
        let refuse = |status: u16, message: String| {
            let body = serde_json::json!({"traceId": trace, "success": false, "message": message});
            let mut r = json_reply(&body);
            r.status = status;
            Ok(r)
        };
        if !peer::is_trusted_local(peer) {
            tracing::warn!(%peer, "/auth refused: not a loopback client owned by root or by acr's user");
            return refuse(
                403,
                "acr answers /auth only to this node's root (the overlaybd snapshotter) or to the user acr runs as".into(),
            );
        }
        let Some(remote) = route::query_value(query, "remote_url") else {
            return refuse(
                400,
                "give the registry URL: /auth?remote_url=https://REGISTRY/v2/...".into(),
            );
        };
        let host = remote
            .split_once("://")
            .map_or(remote.as_str(), |(_, r)| r)
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let pipeline = self.current();
        let Some(proxy) = pipeline.proxy(key) else {
            return refuse(
                503,
                "the running pipeline no longer declares this proxy".into(),
            );
        };
        let choice = match upstream::choose(proxy, Some(&host), "library/x") {
            Ok(c) => c,
            Err(e) => return refuse(404, e.message),
        };
        let logins: Vec<_> = proxy
            .routes
            .iter()
            .find(|r| r.resource == acr_plugins::registry::Resource::Manifests)
            .map(|r| {
                r.calls
                    .iter()
                    .filter(|c| c.spec.caps.upstream_login)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        drop(pipeline);
        let mut cx = Context::new(self.base_dir.clone());
        cx.world_dir = self.world_dir.clone();
        cx.registry = Some(self.shared.clone());
        cx.request = Some(ClientRequest {
            method: acr_plugins::registry::Method::Get,
            resource: acr_plugins::registry::Resource::Manifests,
            name: choice.name.clone(),
            reference: "latest".into(),
            client_prefix: choice.client_prefix.clone(),
            client_ns: None,
            query: Vec::new(),
            accept: Vec::new(),
            range: None,
            authorization: None,
            opt_in: Vec::new(),
        });
        cx.upstream = Some(choice.upstream.clone());
        for call in &logins {
            cx.vars = (*call.control).clone();
            if let Err(e) = catalogue::run(call.spec, &call.invocation, &mut cx).await {
                return refuse(503, e.to_string());
            }
        }
        let Some(creds) = cx.credentials.take() else {
            return refuse(
                404,
                format!("acr has no credentials for {host}: add `.login` to the manifests route and a credential source"),
            );
        };
        let username = if creds.is_identity_token() {
            acr_plugins::registry::credentials::TOKEN_USER.to_string()
        } else {
            creds.username.clone()
        };
        tracing::info!(registry = %host, user = %username, "credentials handed to the local snapshotter");
        Ok(json_reply(&serde_json::json!({
            "traceId": trace,
            "success": true,
            "data": {"auths": {host: {"username": username, "password": creds.secret}}},
        })))
    }
}

impl Host for ProxyHost {
    fn serve(self: Arc<Self>, block: u32) -> RunFuture<'static> {
        Box::pin(async move {
            let pipeline = self.current();
            let Some(proxy) = pipeline.proxy_of_block(block) else {
                return Err(PluginError::Failed {
                    plugin: "mirror",
                    id: block,
                    message: format!("block {block} has no `+ .proxy ADDR` to serve"),
                });
            };
            let key = proxy.key.clone();
            let address = proxy.address.clone();
            // Open the store before listening: a bad cache setting stops the start.
            if let Err(message) = self.store_of(proxy) {
                return Err(PluginError::Failed {
                    plugin: "mirror",
                    id: block,
                    message,
                });
            }
            // And the TLS and client-auth files: a missing certificate is a failed start, not
            // a mirror that refuses every handshake.
            let failed = |message: String| PluginError::Failed {
                plugin: "mirror",
                id: block,
                message,
            };
            let tls = match self.tls_files(proxy).map_err(failed)? {
                Some(files) => Some(tls::acceptor(&files).map_err(failed)?),
                None => None,
            };
            self.auth_of(proxy).map_err(failed)?;
            drop(pipeline);
            let fresh = self
                .serving
                .lock()
                .map(|mut s| s.insert(key.clone()))
                .unwrap_or(false);
            if !fresh {
                // Already served (a second `.mirror` in the block, or a loop pass): keep waiting.
                std::future::pending::<()>().await;
            }
            let result = self.clone().run_server(key.clone(), address, tls).await;
            if let Ok(mut s) = self.serving.lock() {
                s.remove(&key);
            }
            result
        })
    }

    fn proxy_address(&self, block: u32) -> Option<String> {
        self.current()
            .proxy_of_block(block)
            .map(|p| p.address.clone())
    }
}

fn header_response(status: u16, headers: &[(String, String)]) -> hyper::http::response::Builder {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder.header("Docker-Distribution-API-Version", "registry/2.0")
}

/// A reply as a response; HEAD never has a body. With `log`, the request's log line is
/// written when the body is done.
pub fn reply_response(
    reply: Reply,
    method: &str,
    log: Option<RequestLine>,
) -> Response<ResponseBody> {
    let builder = header_response(reply.status, &reply.headers);
    let body: ResponseBody = match (method, reply.body) {
        ("HEAD", _) | (_, Body::Empty) => {
            if let Some(l) = log {
                l.emit();
            }
            Empty::new().map_err(|e| match e {}).boxed_unsync()
        }
        (_, Body::Full(bytes)) => {
            if let Some(mut l) = log {
                l.bytes = bytes.len() as u64;
                l.emit();
            }
            Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
        }
        (_, Body::Stream(stream)) => {
            let promised = reply
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok());
            let stream = Logged {
                inner: stream,
                line: log,
                promised,
            };
            BodyExt::boxed_unsync(StreamBody::new(stream.map_ok(Frame::data)))
        }
    };
    builder.body(body).unwrap_or_else(|_| {
        error_response(&RegistryError::new(
            500,
            "UNKNOWN",
            "the reply had an invalid header",
        ))
    })
}

/// The one log line of a request.
#[derive(Debug)]
pub struct RequestLine {
    method: String,
    path: String,
    ns: String,
    upstream: String,
    status: u16,
    started: Instant,
    /// Body bytes sent.
    bytes: u64,
    /// Why a streamed body broke off.
    failed: Option<String>,
    observer: Option<Arc<observe::Observer>>,
}

impl RequestLine {
    fn emit(&self) {
        if let Some(o) = &self.observer {
            o.record(observe::Finished {
                at_ms: acr_plugins::store::now_ms(),
                method: self.method.clone(),
                path: self.path.clone(),
                upstream: self.upstream.clone(),
                status: self.status,
                bytes: self.bytes,
                ms: self.started.elapsed().as_millis() as u64,
            });
        }
        match &self.failed {
            None => tracing::info!(
                method = %self.method,
                path = %self.path,
                ns = %self.ns,
                upstream = %self.upstream,
                status = self.status,
                bytes = self.bytes,
                ms = self.started.elapsed().as_millis() as u64,
                "request"
            ),
            Some(why) => tracing::warn!(
                method = %self.method,
                path = %self.path,
                ns = %self.ns,
                upstream = %self.upstream,
                status = self.status,
                bytes = self.bytes,
                ms = self.started.elapsed().as_millis() as u64,
                failed = %why,
                "request"
            ),
        }
    }
}

/// A streamed body that counts what it passes on and writes the request's log line when it
/// ends, breaks, or is dropped (the client went away).
struct Logged {
    inner: acr_plugins::registry::BodyStream,
    line: Option<RequestLine>,
    /// The Content-Length sent: hyper may drop a body once that many bytes went out,
    /// without asking for its end.
    promised: Option<u64>,
}

impl futures_util::Stream for Logged {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        let item = futures_util::ready!(this.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                if let Some(l) = this.line.as_mut() {
                    l.bytes += chunk.len() as u64;
                }
            }
            Some(Err(e)) => {
                if let Some(mut l) = this.line.take() {
                    l.failed = Some(e.to_string());
                    l.emit();
                }
            }
            None => {
                if let Some(l) = this.line.take() {
                    l.emit();
                }
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut l) = self.line.take() {
            if self.promised != Some(l.bytes) {
                l.failed = Some("the client went away before the end".into());
            }
            l.emit();
        }
    }
}

/// A client-supplied value as one log token: whitespace and control characters escaped, so
/// `?ns=x%0Afake line` cannot forge a log line.
fn loggable(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            if c == ' ' {
                "\\u{20}".chars().collect::<Vec<_>>()
            } else if c.is_whitespace() || c.is_control() || c == '"' || c == '\\' {
                c.escape_default().collect()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// An OCI error response.
pub fn error_response(e: &RegistryError) -> Response<ResponseBody> {
    let body = e.body();
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Content-Length".to_string(), body.len().to_string()),
    ];
    headers.extend(e.headers.iter().cloned());
    let full = Full::new(Bytes::from(body))
        .map_err(|e| match e {})
        .boxed_unsync();
    let mut response = header_response(e.status, &headers)
        .body(full)
        .unwrap_or_else(|_| Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync()));
    if let Some(reason) = reason_phrase(e) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// For a 5xx, an HTTP/1 status line that says why (`502 Bad Gateway: upstream ... is
/// unreachable`): clients such as skopeo, docker and containerd print the status line of a
/// 5xx and never read its body, so without this a user sees only "502 Bad Gateway".
fn reason_phrase(e: &RegistryError) -> Option<hyper::ext::ReasonPhrase> {
    const MAX: usize = 240;
    if e.status < 500 {
        return None;
    }
    let canonical = hyper::StatusCode::from_u16(e.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut text = format!("{canonical}: ");
    for c in e.message.chars() {
        if text.len() >= MAX {
            text.push_str("...");
            break;
        }
        // A reason phrase is visible ASCII and spaces.
        text.push(if c.is_ascii_graphic() { c } else { ' ' });
    }
    hyper::ext::ReasonPhrase::try_from(text).ok()
}

#[cfg(test)]
mod tests {
    use super::loggable;

    #[test]
    fn a_5xx_says_why_in_its_status_line() {
        use acr_plugins::registry::RegistryError;
        let e = RegistryError::bad_gateway("upstream x (http://x) is unreachable:\nrefused é");
        let r = super::reason_phrase(&e).unwrap();
        assert_eq!(
            r.as_bytes(),
            b"Bad Gateway: upstream x (http://x) is unreachable: refused  "
        );
        let long = RegistryError::bad_gateway("y".repeat(1000));
        assert!(super::reason_phrase(&long).unwrap().as_bytes().len() < 260);
        assert!(super::reason_phrase(&RegistryError::new(404, "NAME_UNKNOWN", "no")).is_none());
    }

    #[test]
    fn log_values_stay_one_token() {
        assert_eq!(loggable("docker.io"), "docker.io");
        assert_eq!(loggable("a b\nc\"d\\"), "a\\u{20}b\\nc\\\"d\\\\");
    }
}
