//! Reading what an upstream sends: a body as a stream whose pauses are bounded, a document
//! read whole under a size bound, a response header, the error for content that does not
//! match its digest, and query encoding. Shared by `.resolve`, `.pull`, `.teleport`,
//! `.inject-layer` and the referrers lookup.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt;

use super::{destination, limits, RequestState};
use crate::oci::{BodyStream, RegistryError};

/// A body stream that fails when the upstream sends nothing for `idle` while it is being
/// read. The wait starts when the reader asks for the next piece, not when it got the last
/// one: a client that reads slowly (so acr stops reading) never makes the upstream look idle.
pub struct IdleBounded {
    inner: BodyStream,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// A read is in progress and the deadline runs for it.
    waiting: bool,
    done: bool,
}

impl IdleBounded {
    pub fn new(inner: BodyStream, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            done: false,
        }
    }
}

impl Stream for IdleBounded {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.waiting {
            this.waiting = true;
            let until = tokio::time::Instant::now() + this.idle;
            this.deadline.as_mut().reset(until);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(item) => {
                this.waiting = false;
                if item.is_none() {
                    this.done = true;
                }
                Poll::Ready(item)
            }
            Poll::Pending => match std::future::Future::poll(this.deadline.as_mut(), cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the upstream sent nothing for {} s",
                            this.idle.as_secs_f32()
                        ),
                    ))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The body of an upstream answer as a stream whose pauses are bounded by the body idle wait;
/// errors never carry the URL. What arrives counts as fetched from the request's upstream
/// (`acr_upstream_bytes_fetched_total`): a body from anywhere else (another replica) must not
/// come this way.
pub fn body_stream(cx: &impl RequestState, resp: reqwest::Response) -> BodyStream {
    let idle = idle_of(cx);
    let fetched = fetched_counter(cx);
    let raw: BodyStream = Box::pin(resp.bytes_stream().map(move |r| {
        if let (Ok(chunk), Some(c)) = (&r, &fetched) {
            c.fetched(chunk.len() as u64);
        }
        r.map_err(|e| {
            std::io::Error::other(format!(
                "upstream transfer failed: {}",
                destination::redact_text(&e.without_url().to_string())
            ))
        })
    }));
    Box::pin(IdleBounded::new(raw, idle))
}

/// The counters of the request's upstream, when it has one.
fn fetched_counter(
    cx: &impl RequestState,
) -> Option<std::sync::Arc<crate::upstream_metrics::UpstreamCounters>> {
    let (shared, upstream) = (cx.shared()?, cx.upstream()?);
    Some(shared.metrics.upstreams.of(&upstream.base))
}

/// The body idle wait of this request's upstream client.
pub fn idle_of(cx: &impl RequestState) -> Duration {
    cx.shared()
        .map_or(limits::BODY_IDLE_TIMEOUT, |s| s.limits.body_idle)
}

/// Why a whole body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    #[error("nothing arrived for {} s", .0.as_secs_f32())]
    Idle(Duration),
    #[error("{0}")]
    Broken(String),
}

/// Reads a whole body of at most `limit` bytes, each pause at most `idle`.
pub async fn read_body(
    mut resp: reqwest::Response,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => return Err(BodyError::Idle(idle)),
            Ok(Ok(Some(chunk))) => {
                if buf.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => return Ok(buf.freeze()),
            // The client's own read bound (the backstop) may fire first.
            Ok(Err(e)) if e.is_timeout() => return Err(BodyError::Idle(idle)),
            Ok(Err(e)) => {
                return Err(BodyError::Broken(destination::redact_text(
                    &e.without_url().to_string(),
                )))
            }
        }
    }
}

/// Reads a document from the upstream, refusing one larger than `limit` bytes or one that
/// pauses longer than the upstream idle bound (a 504). (The future holds no borrow of the
/// context, which is not `Sync`.)
pub fn read_limited(
    cx: &impl RequestState,
    resp: reqwest::Response,
    limit: usize,
) -> impl std::future::Future<Output = Result<Bytes, RegistryError>> + Send + 'static {
    let (ns, idle, fetched) = (ns_of(cx), idle_of(cx), fetched_counter(cx));
    async move {
        let body = read_body(resp, limit, idle).await;
        if let (Ok(bytes), Some(c)) = (&body, &fetched) {
            c.fetched(bytes.len() as u64);
        }
        body.map_err(|e| match e {
            BodyError::TooLarge(limit) => RegistryError::bad_gateway(format!(
                "upstream {ns} sent a document larger than {limit} bytes"
            )),
            BodyError::Idle(idle) => RegistryError::gateway_timeout(format!(
                "upstream {ns} stopped sending the document for {} s",
                idle.as_secs_f32()
            )),
            BodyError::Broken(why) => {
                RegistryError::bad_gateway(format!("reading from upstream {ns}: {why}"))
            }
        })
    }
}

/// The value of a response header, when it is text.
pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// The upstream this request goes to (`docker.io`), empty when none is chosen yet.
pub fn ns_of(cx: &impl RequestState) -> String {
    cx.upstream().map(|u| u.ns.clone()).unwrap_or_default()
}

/// The error for upstream content that does not hash to the digest it should have (a 502:
/// it is never served, never cached), logged with both digests.
pub fn mismatch(cx: &impl RequestState, expected: &str, got: &str) -> RegistryError {
    let ns = cx.upstream().map(|u| u.ns.as_str()).unwrap_or("?");
    tracing::warn!(upstream = %ns, expected, got, "digest mismatch from upstream; not served");
    RegistryError::bad_gateway(format!(
        "upstream {ns} sent content that does not match its digest (expected {expected}, got {got}); not served"
    ))
}

/// Query values keep the unreserved characters of RFC 3986 as they are.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// A query value percent-encoded.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_body_fails_but_a_slow_reader_does_not() {
        let ms = Duration::from_millis;
        // Pieces 300 ms apart: fine under a 2 s bound, broken under a 100 ms one.
        let paced = || -> BodyStream {
            Box::pin(futures_util::stream::unfold(0u8, |n| async move {
                if n == 3 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some((Ok(Bytes::from(vec![n])), n + 1))
            }))
        };
        let mut ok = IdleBounded::new(paced(), ms(2000));
        let mut got = Vec::new();
        while let Some(piece) = ok.next().await {
            got.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(got, [0, 1, 2]);
        let mut idle = IdleBounded::new(paced(), ms(100));
        let e = idle.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(idle.next().await.is_none());
        // A reader that pauses 300 ms between pieces of a prompt upstream (each piece one
        // scheduler turn away) is not idle.
        let prompt: BodyStream = Box::pin(futures_util::stream::unfold(0u8, |n| async move {
            if n == 3 {
                return None;
            }
            tokio::task::yield_now().await;
            Some((Ok(Bytes::from(vec![n])), n + 1))
        }));
        let mut slow_reader = IdleBounded::new(prompt, ms(100));
        for _ in 0..3 {
            tokio::time::sleep(ms(300)).await;
            assert!(slow_reader.next().await.unwrap().is_ok());
        }
    }
}
