//! The connection stage: the listener of a proxy's address (with its connection bound), and
//! each connection served with hyper (HTTP/1.1 and h2c, or both over TLS) under the bounds of
//! `limits`, until it ends, idles out or acr stops; `drain` is how acr stops.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acr_plugins::PluginError;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use super::limits::{self, HEADER_TIMEOUT};
use super::ProxyHost;

impl ProxyHost {
    pub(super) async fn run_server(
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

    /// Stops taking connections and waits (at most `grace`) for those open to finish what
    /// they serve. Returns how many were still open when the time ran out.
    pub async fn drain(&self, grace: Duration) -> usize {
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
}

/// Resolves once acr is stopping (holding no borrow of the channel across the wait's end).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Counts a connection as open while it lives.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(active: Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        Self(active)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
