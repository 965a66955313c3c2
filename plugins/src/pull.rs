//! `.pull`: streams a blob from the upstream to the client.
//!
//! Never buffered whole: bytes go out as they arrive. A full (200) transfer is hashed on the
//! way; if the bytes do not match the digest the stream ends in an error, so the client sees a
//! broken transfer, never a complete-looking 200 with wrong bytes. The client's `Range` is
//! passed on (206). Redirects to storage are followed without sending Authorization to
//! another host (the rules are `registry::destination`'s), and a body that pauses longer
//! than the upstream idle bound breaks off. With a store, a range of a blob still on its way
//! is served as soon as its bytes are there (`ahead`).

mod ahead;

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::plugin::{run_fn, Caps, Invocation, PluginSpec};
use crate::registry::client::{send, upstream_error};
use std::sync::Arc;

use crate::call::PluginError;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::oci::RegistryError;
use crate::oci::{Body, BodyStream, Digest};
use crate::registry::{ClientRequest, Method, Reply, Resource};
use crate::store::fleet::{Source, UpstreamFetch};
use crate::store::flight::parse_range;
use crate::store::{BlobLookup, Follow, Store};
use crate::upstream_metrics::Onto;

pub const SPEC: PluginSpec = PluginSpec::new(
    "pull",
    "stream a blob from the upstream, digest verified on the way",
)
.caps(Caps {
    answers: true,
    ..Caps::route_of(&[Resource::Blobs])
})
.run(run_fn!(run));

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let (req, _, _) = cx.route(call)?;
    let digest = Digest::parse(&req.reference).map_err(RegistryError::digest_invalid)?;
    let path = format!("/v2/{}/blobs/{digest}", req.name);
    if let Some(store) = cx.store.clone() {
        // A layer acr injects is served from the store; if the store lost it (evicted, or
        // another replica made the manifest), it is put back from its source first.
        if store.blob_size(&digest).is_none() {
            let http = crate::inject_layer::layer_store::http_of(cx);
            let client_layer = cx
                .client_injection
                .as_ref()
                .and_then(|i| i.layers.iter().find(|l| l.gzip_digest == digest).cloned());
            match client_layer {
                Some(l) => {
                    if let Err(e) =
                        crate::inject_layer::layer_store::ensure_layer(&http, &store, &l).await
                    {
                        tracing::warn!(digest = %digest, "could not restore a container token's layer: {}", e.message);
                    }
                }
                None if crate::injection::known_layer(&digest).is_some() => {
                    crate::inject_layer::layer_store::restore_layer(&http, &store, &digest).await;
                }
                None => {}
            }
        }
        if let Some(reply) = through_store(cx, &store, &req, &digest, &path).await? {
            cx.reply = Some(reply);
            return Ok(());
        }
    }
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
        let stream: BodyStream = crate::registry::fetch::body_stream(cx, resp);
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
    Ok(())
}

fn store_error(e: std::io::Error) -> RegistryError {
    RegistryError::new(500, "UNKNOWN", format!("the store failed: {e}"))
}

fn blob_headers(digest: &Digest) -> Vec<(String, String)> {
    vec![
        ("Docker-Content-Digest".to_string(), digest.to_string()),
        ("Accept-Ranges".to_string(), "bytes".to_string()),
        (
            "Content-Type".to_string(),
            "application/octet-stream".to_string(),
        ),
    ]
}

/// A reply for `[start, end)` of a blob of `size` bytes, honouring the client's Range.
fn ranged(
    req: &ClientRequest,
    digest: &Digest,
    size: u64,
    body: impl FnOnce(u64, u64) -> Body,
) -> Result<Reply, RegistryError> {
    let mut headers = blob_headers(digest);
    let (status, start, end) = match parse_range(req.range.as_deref(), size) {
        Ok(None) => (200, 0, size),
        Ok(Some((start, end))) => {
            headers.push((
                "Content-Range".to_string(),
                format!("bytes {start}-{}/{size}", end - 1),
            ));
            (206, start, end)
        }
        Err(_) => {
            return Err(RegistryError::new(
                416,
                "SIZE_INVALID",
                format!("the range is outside the blob's {size} bytes"),
            )
            .with_header("Content-Range", &format!("bytes */{size}")))
        }
    };
    headers.push(("Content-Length".to_string(), (end - start).to_string()));
    let body = if req.method == Method::Head {
        Body::Empty
    } else {
        body(start, end)
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Serves a fetch in flight: its size once the upstream has answered, then its bytes. With
/// `counter`, the body bytes sent are added to it (a hit's bytes come from the store).
async fn follow(
    req: &ClientRequest,
    digest: &Digest,
    mut f: Follow,
    counter: Option<Arc<Metrics>>,
) -> Result<Reply, RegistryError> {
    let counted = move |stream: BodyStream| -> Body {
        match counter {
            Some(metrics) => Body::Stream(Box::pin(stream.inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    Metrics::add(&metrics.bytes_from_store, bytes.len() as u64);
                }
            }))),
            None => Body::Stream(stream),
        }
    };
    match f.started().await? {
        // A part goes out as its bytes arrive; the whole blob keeps its last byte until the
        // digest is verified.
        Some(size) => ranged(req, digest, size, |start, end| {
            counted(if (start, end) == (0, size) {
                f.stream(start, Some(end))
            } else {
                f.stream_part(start, end)
            })
        }),
        None => Ok(Reply {
            status: 200,
            headers: blob_headers(digest),
            body: counted(f.stream(0, None)),
        }),
    }
}

/// The store's way: a hit from disk, a fetch already in flight, or a new one (from the S3 tier
/// if it has the blob, else from the upstream) that every client follows. `None`: a HEAD for a
/// blob the store lacks, answered by the upstream.
///
/// Counted: a request the store answers without asking the upstream for the blob (on disk,
/// in the S3 tier, or joining a fetch in flight) is a hit, and the body bytes it is sent are
/// bytes from the store; a request that makes the upstream fetch (or a HEAD the upstream
/// answers) is a miss, and what the upstream sends counts once, as it arrives.
async fn through_store(
    cx: &mut Context,
    store: &Arc<Store>,
    req: &ClientRequest,
    digest: &Digest,
    path: &str,
) -> Result<Option<Reply>, RegistryError> {
    if req.method == Method::Head {
        return match store.blob_size_anywhere(digest).await {
            Some(size) => {
                crate::access::may_serve(cx, store, Resource::Blobs, digest).await?;
                Metrics::inc(&store.metrics.hits);
                ranged(req, digest, size, |_, _| Body::Empty).map(Some)
            }
            None => {
                Metrics::inc(&store.metrics.misses);
                Ok(None)
            }
        };
    }
    let hit_bytes = Some(store.metrics.clone());
    match store.lookup_blob(digest).map_err(store_error)? {
        BlobLookup::Hit(hit) => {
            crate::access::may_serve(cx, store, Resource::Blobs, digest).await?;
            Metrics::inc(&store.metrics.hits);
            let size = hit.size;
            ranged(req, digest, size, |start, end| {
                Body::Stream(hit.stream(start, end))
            })
            .map(Some)
        }
        BlobLookup::Follow(mut f) => {
            // Once the upstream has answered the fetch's leader, a leader from this repository
            // has linked the blob to it: only a request from another repository asks.
            let size = f.started().await?;
            crate::access::may_serve(cx, store, Resource::Blobs, digest).await?;
            if let Some(range) = ahead::far_range(req.range.as_deref(), size, f.written()) {
                if let Some(reply) =
                    ahead::from_upstream(cx, path, range, digest, size, store).await
                {
                    Metrics::inc(&store.metrics.misses);
                    return Ok(Some(reply));
                }
            }
            Metrics::inc(&store.metrics.hits);
            if let Some(upstream) = &cx.upstream {
                store
                    .metrics
                    .upstreams
                    .coalesced(&upstream.base, Onto::Request);
            }
            follow(req, digest, f, hit_bytes).await.map(Some)
        }
        BlobLookup::Lead(lead) => {
            if let Some((size, body)) = store.remote_blob(digest).await {
                if let Err(e) = crate::access::may_serve(cx, store, Resource::Blobs, digest).await {
                    store.fail(lead, e.clone());
                    return Err(e);
                }
                Metrics::inc(&store.metrics.hits);
                let f = store.start_from_remote(lead, body, size, digest.clone());
                return follow(req, digest, f, hit_bytes).await.map(Some);
            }
            // The fetch runs detached, with a copy of what the request knows about the
            // upstream: a client that leaves (even before the upstream answers) stops only its
            // own reading, never the fetch the others follow.
            let own = lead.follower().map_err(store_error)?;
            let detached = detached_context(cx);
            // A part of a cold blob (what a lazy snapshotter asks for) is asked of the upstream
            // at once; the whole blob (which the next clients need) follows.
            let part = ahead::cold_part(req.range.as_deref());
            // Replicas on one shared tier fetch it once for the fleet; a lone replica asks the
            // upstream straight away (see `store::fleet`).
            let shared_cx = Arc::new(tokio::sync::Mutex::new(detached));
            let (fetch_store, fetch_digest, fetch_path) =
                (store.clone(), digest.clone(), path.to_string());
            let upstream: UpstreamFetch = Box::new(move || {
                let (cx, store, digest, path) = (
                    shared_cx.clone(),
                    fetch_store.clone(),
                    fetch_digest.clone(),
                    fetch_path.clone(),
                );
                Box::pin(async move {
                    let mut cx = cx.lock().await;
                    upstream_blob(&mut cx, &store, &digest, &path).await
                })
            });
            if let Some(range) = part {
                Metrics::inc(&store.metrics.misses);
                let part_sent = ahead::whole_after_part(store, lead, digest, upstream);
                if let Some(reply) =
                    ahead::from_upstream(cx, path, range, digest, None, store).await
                {
                    return Ok(Some(ahead::keeping(reply, part_sent)));
                }
                drop(part_sent);
                // The bytes may come from another replica: the upstream has not vouched for
                // this repository.
                let mut own = own;
                own.started().await?;
                crate::access::may_serve(cx, store, Resource::Blobs, digest).await?;
                return follow(req, digest, own, None).await.map(Some);
            }
            match store
                .fetch_through_fleet(lead, digest.clone(), upstream)
                .await
            {
                Ok(Source::Upstream) => {
                    Metrics::inc(&store.metrics.misses);
                    follow(req, digest, own, None).await.map(Some)
                }
                Ok(source) => {
                    // The bytes come from another replica or the shared tier: the upstream has
                    // not said this repository holds them.
                    crate::access::may_serve(cx, store, Resource::Blobs, digest).await?;
                    Metrics::inc(&store.metrics.hits);
                    if let (Source::Peer, Some(upstream)) = (source, &cx.upstream) {
                        store
                            .metrics
                            .upstreams
                            .coalesced(&upstream.base, Onto::Replica);
                    }
                    follow(req, digest, own, hit_bytes).await.map(Some)
                }
                // The fetch failed before its first byte (the upstream was asked, or no
                // replica could be): the flight carries the error.
                Err(_) => {
                    Metrics::inc(&store.metrics.misses);
                    follow(req, digest, own, None).await.map(Some)
                }
            }
        }
    }
}

/// What a detached fetch needs of the request that started it.
fn detached_context(cx: &Context) -> Context {
    let mut detached = Context::new(cx.base_dir.clone());
    detached.world_dir = cx.world_dir.clone();
    detached.vars = cx.vars.clone();
    detached.registry = cx.registry.clone();
    detached.upstream = cx.upstream.clone();
    detached.request = cx.request.clone();
    detached.credentials = cx.credentials.clone();
    detached.authn = cx.authn;
    detached.forward_auth = cx.forward_auth;
    detached.authorization = cx.authorization.clone();
    detached.client_scope = cx.client_scope.clone();
    detached.upstream_unavailable = cx.upstream_unavailable.clone();
    detached
}

/// The blob from the upstream, for the store: its length and body once the upstream said
/// 200 (and the blob is linked to the repository asked), or the error every follower gets. A
/// blob the store has no room for is refused with 507 before its first byte.
async fn upstream_blob(
    cx: &mut Context,
    store: &Arc<Store>,
    digest: &Digest,
    path: &str,
) -> Result<(Option<u64>, BodyStream), RegistryError> {
    let idle = store.config.idle_timeout;
    let resp = tokio::time::timeout(idle, send(cx, reqwest::Method::GET, path, &[]))
        .await
        .unwrap_or_else(|_| {
            Err(RegistryError::new(
                504,
                "UNAVAILABLE",
                format!("the upstream did not answer for {} s", idle.as_secs_f32()),
            ))
        })?;
    if resp.status().as_u16() != 200 {
        return Err(upstream_error(cx, resp, Resource::Blobs).await);
    }
    crate::access::record(cx, store, digest);
    let total = resp.content_length();
    if let Some(t) = total {
        if !store.make_room(t) {
            let free = store.free_bytes().unwrap_or(0);
            tracing::warn!(digest = %digest, size = t, free, "not enough space on the store's disk for the blob: not stored, refused with 507");
            return Err(RegistryError::new(
                507,
                "UNAVAILABLE",
                format!(
                    "the mirror's store has no room for this {t}-byte blob ({free} bytes free, nothing left to evict); pull from the registry or give the store more space"
                ),
            ));
        }
    }
    Ok((total, crate::registry::fetch::body_stream(cx, resp)))
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

/// A blob this replica holds or is receiving, whole, for another replica of the fleet (see
/// `store::peer`; the server checks the peer's token first). Never starts a fetch: 404 when
/// the blob is neither here nor on its way.
pub async fn for_peer(store: &Arc<Store>, digest: &Digest) -> Result<Reply, RegistryError> {
    let whole = |size: Option<u64>, body: BodyStream| {
        let mut headers = blob_headers(digest);
        if let Some(size) = size {
            headers.push(("Content-Length".to_string(), size.to_string()));
        }
        Reply {
            status: 200,
            headers,
            body: Body::Stream(body),
        }
    };
    match store.peek_blob(digest).map_err(store_error)? {
        Some(BlobLookup::Hit(hit)) => {
            let size = hit.size;
            Ok(whole(Some(size), hit.stream(0, size)))
        }
        Some(BlobLookup::Follow(mut f)) => {
            let size = f.started().await?;
            Ok(whole(size, f.stream(0, size)))
        }
        _ => Err(RegistryError::not_found(
            "BLOB_UNKNOWN",
            format!("{digest} is neither stored nor being fetched here"),
        )),
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
