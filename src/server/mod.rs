//! The HTTP side: serves a block's `+ .proxy` with hyper (HTTP/1.1 and h2c), parses each
//! request, chooses its upstream, runs the route's plugin calls over a fresh context and turns
//! the context's reply (or error) into a response. Bodies stream.
//!
//! The pipeline is read from the reload channel per request, so an edit that compiles changes
//! what new requests do without a restart.

pub mod route;
pub mod upstream;

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acr_plugins::catalogue::RunFuture;
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

/// Serves proxies for the engine: the `Host` the `.mirror` plugin calls.
pub struct ProxyHost {
    pipelines: watch::Receiver<Arc<Pipeline>>,
    shared: Arc<Shared>,
    base_dir: PathBuf,
    world_dir: PathBuf,
    serving: Mutex<HashSet<(String, String)>>,
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
        })
    }

    fn current(&self) -> Arc<Pipeline> {
        self.pipelines.borrow().clone()
    }

    async fn run_server(
        self: Arc<Self>,
        key: (String, String),
        address: String,
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
        tracing::info!(address = %local, block = %format!("{} {}", key.0, key.1), "Listening on {local}");
        eprintln!("Listening on {local}");
        loop {
            let (stream, peer) = match listener.accept().await {
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
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let host = host.clone();
                    let key = key.clone();
                    async move { Ok::<_, Infallible>(host.handle(&key, req).await) }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(20))
                    .max_buf_size(64 * 1024);
                builder.http2().max_header_list_size(64 * 1024);
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
    }

    /// Answers one request.
    pub async fn handle(
        &self,
        key: &(String, String),
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let ns = route::query_value(&query, "ns");
        let (result, upstream) = self
            .answer(key, &req, &method, &path, &query, ns.as_deref())
            .await;
        let response = match result {
            Ok(reply) => reply_response(reply, &method),
            Err(e) => error_response(&e),
        };
        let bytes = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        tracing::info!(
            method = %method,
            path = %path,
            ns = %ns.as_deref().unwrap_or("-"),
            upstream = %upstream.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            bytes = %bytes,
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
        response
    }

    async fn answer(
        &self,
        key: &(String, String),
        req: &Request<Incoming>,
        method: &str,
        path: &str,
        query: &str,
        ns: Option<&str>,
    ) -> (Result<Reply, RegistryError>, Option<String>) {
        let target = match route::parse(method, path) {
            Ok(t) => t,
            Err(e) => return (Err(e), None),
        };
        let (method, resource, name, reference) = match target {
            Target::Base => {
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
                )
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
            return (
                Err(RegistryError::new(
                    503,
                    "UNAVAILABLE",
                    "the running pipeline no longer declares this proxy",
                )),
                None,
            );
        };
        let choice = match upstream::choose(proxy, ns, &name) {
            Ok(c) => c,
            Err(e) => return (Err(e), None),
        };
        let upstream_name = Some(choice.upstream.ns.clone());
        let Some(route) = proxy
            .routes
            .iter()
            .find(|r| r.resource == resource && r.methods.contains(&method))
        else {
            return (
                Err(RegistryError::unsupported(format!(
                    "this mirror has no route for {} {} (add `: .{} {}` under `+ .proxy`)",
                    method.as_http(),
                    resource.name(),
                    resource.name(),
                    method.name()
                ))),
                upstream_name,
            );
        };
        let header_values = |name: hyper::header::HeaderName| -> Vec<String> {
            req.headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok().map(String::from))
                .collect()
        };
        let request = ClientRequest {
            method,
            resource,
            name: choice.name,
            reference,
            client_prefix: choice.client_prefix,
            client_ns: ns.map(String::from),
            query: route::query_pairs(query)
                .into_iter()
                .filter(|(k, _)| k == "n" || k == "last" || k == "artifactType")
                .collect(),
            accept: header_values(hyper::header::ACCEPT),
            range: header_values(hyper::header::RANGE).into_iter().next(),
        };
        let mut cx = Context::new(self.base_dir.clone());
        cx.world_dir = self.world_dir.clone();
        cx.registry = Some(self.shared.clone());
        cx.request = Some(request);
        cx.upstream = Some(choice.upstream);
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
            let result = self.clone().run_server(key.clone(), address).await;
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

/// A reply as a response; HEAD never has a body.
pub fn reply_response(reply: Reply, method: &str) -> Response<ResponseBody> {
    let builder = header_response(reply.status, &reply.headers);
    let body: ResponseBody = match (method, reply.body) {
        ("HEAD", _) | (_, Body::Empty) => Empty::new().map_err(|e| match e {}).boxed_unsync(),
        (_, Body::Full(bytes)) => Full::new(bytes).map_err(|e| match e {}).boxed_unsync(),
        (_, Body::Stream(stream)) => {
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
    header_response(e.status, &headers)
        .body(full)
        .unwrap_or_else(|_| Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync()))
}
