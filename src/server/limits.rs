//! The bounds of acr's HTTP side, named in one place. Each has a default that suits a node
//! mirror or a shared cache; an operator can change it with the environment variable named
//! beside it, read once when a proxy starts serving (a bad value stops the start with a
//! message, it is never silently ignored). The README's production section lists them.
//!
//! The bounds of a request are all here: its headers ([`HEADER_TIMEOUT`], 64 KiB), and a body
//! acr reads (a POST to `/token`, `/container-token`, `/validate-creds`) twice over: each
//! piece within [`POST_BODY_IDLE`] and at most [`MAX_TOKEN_BODY`] or [`MAX_POST_BODY`] bytes
//! ([`read_post_body`]), and the whole request answered within the request-body deadline
//! ([`DEFAULT_REQUEST_BODY_TIMEOUT`], applied by the connection to every POST, PUT and PATCH).
//!
//! What is bounded elsewhere, for the whole picture: manifests (4 MiB), an upstream that goes
//! silent (`store::DEFAULT_IDLE_TIMEOUT`), the store (`: .max-size` and the disk, with the
//! largest blob from `ACR_MAX_BLOB_SIZE` below).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use acr_plugins::oci::RegistryError;
use acr_plugins::parse_duration;
use acr_plugins::store::parse_size;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::Request;

/// Connections open at once on one listening address (`ACR_MAX_CONNECTIONS`). At the bound
/// acr stops accepting: further connections wait in the kernel's listen queue (which has
/// its own bound, the backlog) and are served as soon as one closes, instead of being
/// refused. Every connection has bounded idle times (headers, bodies, idleness below), so
/// slots always come free; a client that cannot wait times out and, for containerd, falls
/// back to its next host as it does for any error.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long a connection may have no request in progress (HTTP/1.1 keep-alive, HTTP/2
/// alike) before acr closes it gracefully (`ACR_CONNECTION_IDLE_TIMEOUT`). A response still
/// streaming (a large blob to a slow client) is a request in progress.
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a connection closed for idleness may take to end once told (an HTTP/2 peer
/// must answer the closing PING) before it is dropped, if it is still idle by then.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a request that carries a body (POST, PUT, PATCH) may take to be answered, its
/// body read included (`ACR_REQUEST_BODY_TIMEOUT`): the bodies acr accepts are small (at
/// most [`MAX_TOKEN_BODY`] or [`MAX_POST_BODY`]), so a client that starts one and stalls is
/// cut off with a 408; each piece of it must also come within [`POST_BODY_IDLE`].
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's headers (from connecting, or from the end
/// of its previous request) before the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a client may take between two pieces of a POST body acr reads (see
/// [`read_post_body`]); the whole request is bounded by [`DEFAULT_REQUEST_BODY_TIMEOUT`].
pub const POST_BODY_IDLE: Duration = Duration::from_secs(20);

/// The largest `/token` form a client may send.
pub const MAX_TOKEN_BODY: usize = 64 * 1024;

/// The largest body acr reads from a client: a container-token request with `data:` layers.
pub const MAX_POST_BODY: usize = 64 * 1024 * 1024;

/// How often an HTTP/2 connection is pinged to find a peer that is gone
/// (`ACR_H2_KEEPALIVE_INTERVAL`); one that does not answer within
/// [`H2_KEEPALIVE_TIMEOUT`] is closed.
pub const DEFAULT_H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long an HTTP/2 ping may go unanswered.
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams (requests) open at once on one HTTP/2 connection.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// The bounds one listening address serves with.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub connection_idle_timeout: Duration,
    pub request_body_timeout: Duration,
    pub h2_keepalive_interval: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connection_idle_timeout: DEFAULT_CONNECTION_IDLE_TIMEOUT,
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            h2_keepalive_interval: DEFAULT_H2_KEEPALIVE_INTERVAL,
        }
    }
}

impl ServerLimits {
    /// The defaults, with what the environment changes.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// [`ServerLimits::from_env`] with the environment given as a function (for tests).
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut limits = Self::default();
        if let Some(v) = env("ACR_MAX_CONNECTIONS") {
            limits.max_connections = v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("ACR_MAX_CONNECTIONS `{v}` is not a positive number"))?;
        }
        let duration = |name: &str, into: &mut Duration| -> Result<(), String> {
            if let Some(v) = env(name) {
                let d =
                    parse_duration(v.trim()).map_err(|e| format!("{name} `{v}`: {}", e.message))?;
                if d.is_zero() {
                    return Err(format!("{name} must be more than 0"));
                }
                *into = d;
            }
            Ok(())
        };
        duration(
            "ACR_CONNECTION_IDLE_TIMEOUT",
            &mut limits.connection_idle_timeout,
        )?;
        duration("ACR_REQUEST_BODY_TIMEOUT", &mut limits.request_body_timeout)?;
        duration(
            "ACR_H2_KEEPALIVE_INTERVAL",
            &mut limits.h2_keepalive_interval,
        )?;
        Ok(limits)
    }
}

/// The largest blob a store takes (`ACR_MAX_BLOB_SIZE`, e.g. `10GiB`; default: as large as
/// `: .max-size` and the disk allow). Larger ones are refused with 507, a body without a
/// length is cut off there.
pub fn max_blob_size() -> Result<Option<u64>, String> {
    match std::env::var("ACR_MAX_BLOB_SIZE") {
        Ok(v) if !v.trim().is_empty() => parse_size(&v)
            .map(Some)
            .ok_or_else(|| format!("ACR_MAX_BLOB_SIZE `{v}` is not a size")),
        _ => Ok(None),
    }
}

/// What a connection is doing: requests in progress, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    busy: AtomicUsize,
    /// Milliseconds after `started` when the connection last became idle.
    idle_since_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// A request begins; it is in progress until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// How long the connection has had no request in progress (zero while it has one).
    pub fn idle_for(&self) -> Duration {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        self.started.elapsed().saturating_sub(since)
    }
}

/// A request in progress on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.0.started.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(now, Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request in progress until its last byte left (or the
/// transfer broke): a blob streaming to a slow client is not an idle connection.
pub struct BusyBody<B> {
    inner: B,
    _busy: Busy,
}

impl<B> BusyBody<B> {
    pub fn new(inner: B, busy: Busy) -> Self {
        Self { inner, _busy: busy }
    }
}

impl<B> Body for BusyBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A POST body, at most `limit` bytes, each piece within [`POST_BODY_IDLE`].
pub async fn read_post_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, RegistryError> {
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

/// The answer to a request whose body did not arrive within `bound`; the connection closes.
pub fn body_timed_out(
    bound: Duration,
    peer: std::net::SocketAddr,
) -> hyper::Response<super::ResponseBody> {
    tracing::info!(%peer, "request body not received within {bound:?}: 408, connection closed");
    let mut response = super::error_response(&acr_plugins::oci::RegistryError::new(
        408,
        "UNAVAILABLE",
        format!(
            "the request was not received within {} s",
            bound.as_secs_f32()
        ),
    ));
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let none = ServerLimits::from_lookup(&|_| None).unwrap();
        assert_eq!(none.max_connections, DEFAULT_MAX_CONNECTIONS);
        let set = ServerLimits::from_lookup(&|k| match k {
            "ACR_MAX_CONNECTIONS" => Some("8".into()),
            "ACR_REQUEST_BODY_TIMEOUT" => Some("2s".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(set.max_connections, 8);
        assert_eq!(set.request_body_timeout, Duration::from_secs(2));
        assert!(
            ServerLimits::from_lookup(&|k| (k == "ACR_MAX_CONNECTIONS").then(|| "0".into()))
                .is_err()
        );
        assert!(ServerLimits::from_lookup(
            &|k| (k == "ACR_REQUEST_BODY_TIMEOUT").then(|| "soon".into())
        )
        .is_err());
    }

    #[test]
    fn a_connection_is_idle_only_without_requests() {
        let a = Arc::new(Activity::default());
        let busy = a.begin();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(a.idle_for(), Duration::ZERO);
        drop(busy);
        std::thread::sleep(Duration::from_millis(20));
        assert!(a.idle_for() >= Duration::from_millis(15));
    }
}
