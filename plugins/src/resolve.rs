//! `.resolve [MEDIA-TYPE...]`: fetches a manifest (or a tag list, or a referrers index) from
//! the upstream.
//!
//! The listed media types are added to the client's Accept, never substituted for it. A
//! manifest's bytes are checked: by digest they must hash to that digest, by tag to the
//! upstream's `Docker-Content-Digest`; a mismatch is a 502 and is never served.

use bytes::Bytes;

use crate::call::PluginError;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::oci::media::{accept_header as accept, accepts, MAX_MANIFEST_BYTES};
use crate::oci::{Body, Digest, Manifest, Reference, RegistryError};
use crate::plugin::{run_fn, Caps, Invocation, PluginSpec};
use crate::registry::client::{send, upstream_error};
use crate::registry::fetch::{header, mismatch, ns_of, read_limited};
use crate::registry::{referrers, tag_list, ClientRequest, Method, Reply, Resource};
use crate::store::{Store, TagEntry};

pub const SPEC: PluginSpec = PluginSpec::new(
    "resolve",
    "fetch a manifest, tag list or referrers index from the upstream, digest checked",
)
.caps(Caps {
    answers: true,
    ..Caps::route_of(&[Resource::Manifests, Resource::Tags, Resource::Referrers])
})
.run(run_fn!(run));

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let (req, _, _) = cx.route(call)?;
    let reply = match req.resource {
        Resource::Manifests => {
            // A tag is rewritten when the route injects layers; a digest never is.
            let inject = !crate::inject_layer::apply::effective(cx).is_empty()
                && matches!(Reference::parse(&req.reference), Ok(Reference::Tag(_)));
            match cx.store.clone() {
                Some(store) => cached_manifest(cx, &store, &req, &call.input, inject).await?,
                None if inject => {
                    return Err(RegistryError::new(
                        500,
                        "UNKNOWN",
                        "`.inject-layer` keeps the rewritten manifests, configs and layers in the store, and this proxy has `: .cache off`: give it a store",
                    )
                    .into())
                }
                None => manifest(cx, &req, &call.input).await?,
            }
        }
        Resource::Tags => tag_list::tag_list(cx, &req).await?,
        Resource::Referrers => referrers::reply(cx, &req).await?,
        Resource::Blobs => {
            return Err(PluginError::failed(
                call,
                "blobs are fetched with `.pull`, not `.resolve`",
            ));
        }
    };
    cx.reply = Some(reply);
    Ok(())
}

async fn manifest(
    cx: &mut Context,
    req: &ClientRequest,
    extra: &str,
) -> Result<Reply, RegistryError> {
    let reference = Reference::parse(&req.reference).map_err(RegistryError::manifest_invalid)?;
    let path = format!("/v2/{}/manifests/{}", req.name, req.reference);
    let headers = [("Accept", accept(&req.accept, extra))];
    if req.method == Method::Head {
        let resp = send(cx, reqwest::Method::HEAD, &path, &headers).await?;
        if !resp.status().is_success() {
            return Err(upstream_error(cx, resp, Resource::Manifests).await);
        }
        let digest = header(&resp, "docker-content-digest");
        let length = header(&resp, "content-length");
        // `.verify` needs a sha256 digest: without one, GET and compute it.
        let checked = digest.as_deref().and_then(|d| Digest::parse(d).ok());
        let digest = digest.filter(|_| checked.is_some() || !crate::verify::applies(cx));
        if let (Some(digest), Some(length)) = (digest, length) {
            if let Some(checked) = &checked {
                crate::verify::admit(cx, req, checked, None).await?;
            }
            if let Reference::Digest(want) = &reference {
                if *want.to_string() != digest {
                    return Err(mismatch(cx, &want.to_string(), &digest));
                }
            }
            let mut headers = vec![
                ("Docker-Content-Digest".to_string(), digest),
                ("Content-Length".to_string(), length),
            ];
            if let Some(ct) = header(&resp, "content-type") {
                headers.push(("Content-Type".to_string(), ct));
            }
            return Ok(Reply {
                status: 200,
                headers,
                body: Body::Empty,
            });
        }
        // The upstream's HEAD lacks the digest or length: GET and compute them.
    }
    let (bytes, media_type, digest) = get_manifest(cx, req, extra, &reference).await?;
    crate::verify::admit(cx, req, &digest, Some((&bytes, &media_type))).await?;
    Ok(Reply::manifest(req.method, &digest, bytes, &media_type))
}

/// GETs a manifest from the upstream and checks its bytes: by digest against it, by tag
/// against the upstream's `Docker-Content-Digest`. Returns the bytes, media type and digest.
async fn get_manifest(
    cx: &mut Context,
    req: &ClientRequest,
    extra: &str,
    reference: &Reference,
) -> Result<(Bytes, String, Digest), RegistryError> {
    let path = format!("/v2/{}/manifests/{}", req.name, req.reference);
    let headers = [("Accept", accept(&req.accept, extra))];
    let resp = send(cx, reqwest::Method::GET, &path, &headers).await?;
    if !resp.status().is_success() {
        return Err(upstream_error(cx, resp, Resource::Manifests).await);
    }
    let content_type = header(&resp, "content-type").unwrap_or_default();
    let upstream_digest = header(&resp, "docker-content-digest");
    let body = read_limited(cx, resp, MAX_MANIFEST_BYTES).await?;
    let digest = Digest::of(&body);
    let expected = match reference {
        Reference::Digest(d) => Some(d.to_string()),
        Reference::Tag(_) => upstream_digest.filter(|d| d.starts_with("sha256:")),
    };
    if let Some(expected) = expected {
        if expected != digest.to_string() {
            return Err(mismatch(cx, &expected, &digest.to_string()));
        }
    }
    Ok((body, content_type, digest))
}

/// What a HEAD to the upstream says about a cached tag.
enum Revalidation {
    Same,
    Changed,
    /// Unreachable, timed out, 5xx or 429: serve what is cached (stale-if-error).
    Unavailable(RegistryError),
    /// The upstream answered with an error that stands (401, 403, 404, ...).
    Refused(RegistryError),
}

async fn revalidate(
    cx: &mut Context,
    req: &ClientRequest,
    extra: &str,
    digest: &str,
) -> Revalidation {
    let path = format!("/v2/{}/manifests/{}", req.name, req.reference);
    let headers = [("Accept", accept(&req.accept, extra))];
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::registry::client::send_with(cx, reqwest::Method::HEAD, &path, &headers, false),
    )
    .await;
    match sent {
        Err(_) => Revalidation::Unavailable(RegistryError::bad_gateway(
            "the upstream did not answer in 10 s",
        )),
        Ok(Err(e)) if e.status >= 500 => Revalidation::Unavailable(e),
        Ok(Err(e)) => Revalidation::Refused(e),
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                match header(&resp, "docker-content-digest") {
                    Some(d) if d == digest => Revalidation::Same,
                    _ => Revalidation::Changed,
                }
            } else {
                let e = upstream_error(cx, resp, Resource::Manifests).await;
                if status >= 500 || status == 429 {
                    Revalidation::Unavailable(e)
                } else {
                    Revalidation::Refused(e)
                }
            }
        }
    }
}

/// A manifest answered from the store: a hit, whose body bytes (GET) come from the store.
fn stored_reply(
    store: &Store,
    method: Method,
    digest: &Digest,
    bytes: Bytes,
    media_type: &str,
) -> Reply {
    count_hit(store, method, bytes.len());
    Reply::manifest(method, digest, bytes, media_type)
}

fn count_hit(store: &Store, method: Method, len: usize) {
    Metrics::inc(&store.metrics.hits);
    if method == Method::Get {
        Metrics::add(&store.metrics.bytes_from_store, len as u64);
    }
}

/// The reply for a tag: the manifest found (from the store when `hit`), rewritten first when
/// the route injects layers.
#[allow(clippy::too_many_arguments)]
async fn tag_reply(
    cx: &mut Context,
    store: &Store,
    req: &ClientRequest,
    inject: bool,
    hit: bool,
    digest: Digest,
    bytes: Bytes,
    media_type: String,
) -> Result<Reply, RegistryError> {
    // The upstream's manifest is checked, before any rewrite (the rewrite is acr's own).
    crate::verify::admit(cx, req, &digest, Some((&bytes, &media_type))).await?;
    if hit {
        count_hit(store, req.method, bytes.len());
    }
    if !inject {
        return Ok(Reply::manifest(req.method, &digest, bytes, &media_type));
    }
    let original = Manifest {
        bytes,
        media_type,
        digest,
    };
    let new = crate::inject_layer::apply::apply(cx, req, original).await?;
    Ok(Reply::manifest(
        req.method,
        &new.digest,
        new.bytes,
        &new.media_type,
    ))
}

/// A manifest the store lacks: a miss, fetched from the upstream (and counted) and stored.
async fn fetch_and_store(
    cx: &mut Context,
    store: &std::sync::Arc<Store>,
    req: &ClientRequest,
    extra: &str,
    reference: &Reference,
) -> Result<(Bytes, String, Digest), RegistryError> {
    Metrics::inc(&store.metrics.misses);
    let (bytes, media_type, digest) = get_manifest(cx, req, extra, reference).await?;
    Metrics::add(&store.metrics.bytes_from_upstream, bytes.len() as u64);
    if let Err(e) = store.put_manifest(&digest, &bytes, &media_type).await {
        tracing::warn!(digest = %digest, "could not store the manifest: {e}");
    }
    crate::access::record(cx, store, &digest);
    Ok((bytes, media_type, digest))
}

/// The tag's record and its manifest from the store, when both are there and the client
/// accepts its media type.
async fn cached_tag(
    store: &Store,
    req: &ClientRequest,
    extra: &str,
    ns: &str,
    tag: &str,
) -> Option<(TagEntry, Digest, Bytes, String)> {
    let entry = store.tag(ns, &req.name, tag).await?;
    if !accepts(&req.accept, extra, &entry.media_type) {
        return None;
    }
    let digest = Digest::parse(&entry.digest).ok()?;
    let (bytes, media_type) = store.manifest(&digest).await?;
    Some((entry, digest, bytes, media_type))
}

/// Manifests through the store: by digest, kept for good; by tag, kept for the TTL, then
/// revalidated with one HEAD, and served stale when the upstream is down (stale-if-error).
async fn cached_manifest(
    cx: &mut Context,
    store: &std::sync::Arc<Store>,
    req: &ClientRequest,
    extra: &str,
    inject: bool,
) -> Result<Reply, RegistryError> {
    let reference = Reference::parse(&req.reference).map_err(RegistryError::manifest_invalid)?;
    let ns = ns_of(cx);
    let tag = match &reference {
        Reference::Digest(d) => {
            if let Some((bytes, media_type)) = store.manifest(d).await {
                crate::access::may_serve(cx, store, Resource::Manifests, d).await?;
                crate::verify::admit(cx, req, d, Some((&bytes, &media_type))).await?;
                return Ok(stored_reply(store, req.method, d, bytes, &media_type));
            }
            let (bytes, media_type, digest) =
                fetch_and_store(cx, store, req, extra, &reference).await?;
            crate::verify::admit(cx, req, &digest, Some((&bytes, &media_type))).await?;
            return Ok(Reply::manifest(req.method, &digest, bytes, &media_type));
        }
        Reference::Tag(tag) => tag.clone(),
    };
    let ttl = store.config.ttl_for(&ns);
    let mut cached = cached_tag(store, req, extra, &ns, &tag).await;
    // Stale or never seen: one request of the fleet asks the upstream (see `store::tag_turn`),
    // the others find the tag fresh once it has.
    let _turn = match &cached {
        Some((entry, ..)) if entry.age() < ttl => None,
        _ => {
            let turn = store.tag_turn(&ns, &req.name, &tag).await;
            cached = cached_tag(store, req, extra, &ns, &tag).await;
            Some(turn)
        }
    };
    if let Some((entry, digest, bytes, media_type)) = cached {
        if entry.age() < ttl {
            // The tag record is this repository's; a client's own credentials (`.forward-auth`)
            // still need the upstream's yes for it.
            if cx.forward_auth {
                crate::access::may_serve(cx, store, Resource::Manifests, &digest).await?;
            }
            return tag_reply(cx, store, req, inject, true, digest, bytes, media_type).await;
        }
        match revalidate(cx, req, extra, &entry.digest).await {
            Revalidation::Same => {
                if let Err(e) = store
                    .put_tag(&ns, &req.name, &tag, &entry.reconfirmed())
                    .await
                {
                    tracing::warn!("could not record the tag: {e}");
                }
                return tag_reply(cx, store, req, inject, true, digest, bytes, media_type).await;
            }
            Revalidation::Unavailable(e) if cx.forward_auth => {
                // Without the upstream, nothing can say this client may read the repository.
                return Err(e);
            }
            Revalidation::Unavailable(e) => {
                Metrics::inc(&store.metrics.stale_serves);
                tracing::warn!(
                    upstream = %ns,
                    name = %req.name,
                    tag = %tag,
                    age_s = entry.age().as_secs(),
                    "the upstream is unavailable ({}); serving the cached manifest past its TTL",
                    e.message
                );
                return tag_reply(cx, store, req, inject, true, digest, bytes, media_type).await;
            }
            Revalidation::Refused(e) => return Err(e),
            Revalidation::Changed => {}
        }
    }
    let (bytes, media_type, digest) = fetch_and_store(cx, store, req, extra, &reference).await?;
    let entry = TagEntry::confirmed_now(digest.to_string(), media_type.clone());
    if let Err(e) = store.put_tag(&ns, &req.name, &tag, &entry).await {
        tracing::warn!("could not record the tag: {e}");
    }
    tag_reply(cx, store, req, inject, false, digest, bytes, media_type).await
}
