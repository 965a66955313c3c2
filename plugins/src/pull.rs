//! `.pull`: streams a blob from the upstream to the client.
//!
//! Never buffered whole: bytes go out as they arrive. A full (200) transfer is hashed on the
//! way; if the bytes do not match the digest the stream ends in an error, so the client sees a
//! broken transfer, never a complete-looking 200 with wrong bytes. The client's `Range` is
//! passed on (206). Redirects to storage are followed without sending Authorization to
//! another host.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::catalogue::{Input, Invocation, PluginSpec, RunFuture};
use crate::registry::client::{send, upstream_error};
use crate::registry::{Body, BodyStream, Digest, Method, Reply, Resource};
use crate::{Context, PluginError, RegistryError};

pub const SPEC: PluginSpec = PluginSpec {
    name: "pull",
    summary: "stream a blob from the upstream, digest verified on the way",
    input: Input::Optional,
    modifiers: &[],
    check: None,
    run: Some(run),
    planned: None,
};

fn run<'a>(call: &'a Invocation, cx: &'a mut Context) -> RunFuture<'a> {
    Box::pin(async move {
        let Some(req) = cx.request.clone() else {
            return Err(PluginError::failed(
                call,
                "`.pull` works in a proxy route (under `+ .proxy`)",
            ));
        };
        if req.resource != Resource::Blobs {
            return Err(PluginError::failed(
                call,
                "`.pull` serves blobs; use `.resolve` for manifests",
            ));
        }
        let digest = Digest::parse(&req.reference).map_err(RegistryError::digest_invalid)?;
        let path = format!("/v2/{}/blobs/{digest}", req.name);
        let mut headers = Vec::new();
        if let Some(range) = &req.range {
            headers.push(("Range", range.clone()));
        }
        let method = match req.method {
            Method::Head => reqwest::Method::HEAD,
            Method::Get => reqwest::Method::GET,
        };
        let resp = send(cx, method, &path, &headers).await?;
        let status = resp.status().as_u16();
        if !(status == 200 || status == 206) {
            return Err(upstream_error(cx, resp, Resource::Blobs).await.into());
        }
        let mut reply_headers = vec![
            ("Docker-Content-Digest".to_string(), digest.to_string()),
            ("Accept-Ranges".to_string(), "bytes".to_string()),
            (
                "Content-Type".to_string(),
                "application/octet-stream".to_string(),
            ),
        ];
        for name in ["content-length", "content-range"] {
            if let Some(v) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
                reply_headers.push((name.to_string(), v.to_string()));
            }
        }
        let body = if req.method == Method::Head {
            Body::Empty
        } else {
            let ns = cx
                .upstream
                .as_ref()
                .map(|u| u.ns.clone())
                .unwrap_or_default();
            let stream: BodyStream = Box::pin(resp.bytes_stream().map(|r| {
                r.map_err(|e| std::io::Error::other(format!("upstream transfer failed: {e}")))
            }));
            if status == 200 {
                Body::Stream(Box::pin(Verified::new(stream, digest, ns)))
            } else {
                Body::Stream(stream)
            }
        };
        cx.reply = Some(Reply {
            status,
            headers: reply_headers,
            body,
        });
        cx.calls_run += 1;
        Ok(())
    })
}

/// Passes bytes through while hashing them, one chunk behind: the last chunk leaves only
/// once the whole blob hashed to its digest. On a mismatch the stream ends in an error while
/// that chunk is still held, so the client never receives all the bytes it was promised
/// (`Content-Length`): the transfer breaks instead of looking complete.
pub struct Verified {
    inner: BodyStream,
    hasher: Option<Sha256>,
    /// The chunk read last, not yet passed on.
    held: Option<Bytes>,
    expected: Digest,
    ns: String,
}

impl Verified {
    pub fn new(inner: BodyStream, expected: Digest, ns: String) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            held: None,
            expected,
            ns,
        }
    }
}

impl Stream for Verified {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(hasher) = this.hasher.as_mut() else {
                // Verified (or failed) already: what is held is the good tail.
                return Poll::Ready(this.held.take().map(Ok));
            };
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    hasher.update(&chunk);
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                    // The first chunk: keep it and read on.
                }
                Poll::Ready(Some(Err(e))) => {
                    this.hasher = None;
                    this.held = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    let got = match this.hasher.take() {
                        Some(h) => hex::encode(h.finalize()),
                        None => return Poll::Ready(None),
                    };
                    if got == this.expected.hex() {
                        return Poll::Ready(this.held.take().map(Ok));
                    }
                    this.held = None;
                    tracing::warn!(upstream = %this.ns, expected = %this.expected, got = %format!("sha256:{got}"), "blob digest mismatch; transfer aborted");
                    return Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "blob from upstream {} does not match {}",
                        this.ns, this.expected
                    )))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> BodyStream {
        let items: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    async fn collect(v: Verified) -> (Vec<u8>, Option<String>) {
        let mut out = Vec::new();
        let mut s = Box::pin(v);
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn good_bytes_pass_whole() {
        let d = Digest::of(b"hello world");
        let (out, err) = block_on(collect(Verified::new(
            chunks(&[b"hello", b"", b" ", b"world"]),
            d,
            "up".into(),
        )));
        assert_eq!((out.as_slice(), err), (&b"hello world"[..], None));
    }

    #[test]
    fn wrong_bytes_never_arrive_whole() {
        let d = Digest::of(b"hello world");
        for parts in [
            &[&b"hello worlD"[..]][..],
            &[b"hello", b" ", b"worlD"],
            &[b"Hello", b" ", b"world"],
        ] {
            let (out, err) = block_on(collect(Verified::new(
                chunks(parts),
                d.clone(),
                "up".into(),
            )));
            assert!(err.unwrap().contains("does not match"));
            assert!(out.len() < 11, "{} bytes passed", out.len());
        }
    }
}
