//! `.resolve [MEDIA-TYPE...]`: fetches a manifest (or a tag list, or a referrers index) from
//! the upstream.
//!
//! The listed media types are added to the client's Accept, never substituted for it. A
//! manifest's bytes are checked: by digest they must hash to that digest, by tag to the
//! upstream's `Docker-Content-Digest`; a mismatch is a 502 and is never served.

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, LINK};

use crate::plugin::{run_fn, Caps, Invocation, PluginSpec};
use crate::registry::client::{send, upstream_error};
use crate::registry::media::{ALL_MANIFESTS, MAX_MANIFEST_BYTES};
use crate::registry::{Body, Digest, Method, Reference, RegistryError, Reply, Resource};
use crate::store::{Metrics, Store, TagEntry};
use crate::{Context, PluginError};

pub const SPEC: PluginSpec = PluginSpec::new(
    "resolve",
    "fetch a manifest, tag list or referrers index from the upstream, digest checked",
)
.run(run_fn!(run))
.caps(Caps {
    answers: true,
    ..Caps::route_of(&[Resource::Manifests, Resource::Tags, Resource::Referrers])
});

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let (req, _, _) = cx.route(call)?;
    let reply = match req.resource {
        Resource::Manifests => {
            // A tag is rewritten when the route injects layers; a digest never is.
            let inject = !crate::inject_layer::effective(cx).is_empty()
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
        Resource::Tags => {
            document(
                cx,
                &req,
                format!("/v2/{}/tags/list", req.name),
                "application/json",
            )
            .await?
        }
        Resource::Referrers => referrers(cx, &req).await?,
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

/// The Accept list: the client's types, then the listed ones. When that names no manifest
/// type at all (no Accept, `*/*`, `application/json`), every manifest kind acr passes on is
/// added: registries read a missing type as "not accepted" (distribution answers 404 for an
/// OCI manifest, or rewrites a schema 2 one to schema 1), which no client that sends `*/*`
/// wants.
fn accept(client: &[String], extra: &str) -> String {
    let mut types: Vec<String> = Vec::new();
    let listed = extra
        .split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty());
    for t in client
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .chain(listed)
    {
        if !t.is_empty() && !types.iter().any(|x| x == t) {
            types.push(t.to_string());
        }
    }
    let names_a_manifest = types.iter().any(|t| {
        let bare = t.split(';').next().unwrap_or("").trim();
        ALL_MANIFESTS.contains(&bare)
            || bare.starts_with("application/vnd.docker.distribution.manifest.")
            || (bare.starts_with("application/vnd.") && !bare.contains('*'))
    });
    if !names_a_manifest {
        for t in ALL_MANIFESTS {
            if !types.iter().any(|x| x == t) {
                types.push(t.to_string());
            }
        }
    }
    types.join(", ")
}

async fn manifest(
    cx: &mut Context,
    req: &crate::registry::ClientRequest,
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
        if let (Some(digest), Some(length)) = (digest, length) {
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
    Ok(manifest_reply(req.method, &digest, bytes, &media_type))
}

/// GETs a manifest from the upstream and checks its bytes: by digest against it, by tag
/// against the upstream's `Docker-Content-Digest`. Returns the bytes, media type and digest.
async fn get_manifest(
    cx: &mut Context,
    req: &crate::registry::ClientRequest,
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

pub(crate) fn manifest_reply(
    method: Method,
    digest: &Digest,
    bytes: Bytes,
    media_type: &str,
) -> Reply {
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

/// Whether a client that sent `accept` (plus the route's `extra` types) takes `media_type`.
fn accepts(accept: &[String], extra: &str, media_type: &str) -> bool {
    let listed: Vec<&str> = accept
        .iter()
        .flat_map(|a| a.split(','))
        .chain(extra.split([',', ' ']))
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .filter(|t| !t.is_empty())
        .collect();
    listed.is_empty() || listed.iter().any(|t| *t == "*/*" || *t == media_type)
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
    req: &crate::registry::ClientRequest,
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
    manifest_reply(method, digest, bytes, media_type)
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
    req: &crate::registry::ClientRequest,
    inject: bool,
    hit: bool,
    digest: Digest,
    bytes: Bytes,
    media_type: String,
) -> Result<Reply, RegistryError> {
    if hit {
        count_hit(store, req.method, bytes.len());
    }
    if !inject {
        return Ok(manifest_reply(req.method, &digest, bytes, &media_type));
    }
    let original = crate::inject_layer::Resolved {
        bytes,
        media_type,
        digest,
    };
    let new = crate::inject_layer::apply(cx, req, original).await?;
    Ok(manifest_reply(
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
    req: &crate::registry::ClientRequest,
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

/// Manifests through the store: by digest, kept for good; by tag, kept for the TTL, then
/// revalidated with one HEAD, and served stale when the upstream is down (stale-if-error).
async fn cached_manifest(
    cx: &mut Context,
    store: &std::sync::Arc<Store>,
    req: &crate::registry::ClientRequest,
    extra: &str,
    inject: bool,
) -> Result<Reply, RegistryError> {
    let reference = Reference::parse(&req.reference).map_err(RegistryError::manifest_invalid)?;
    let ns = ns_of(cx);
    let tag = match &reference {
        Reference::Digest(d) => {
            if let Some((bytes, media_type)) = store.manifest(d).await {
                crate::access::may_serve(cx, store, Resource::Manifests, d).await?;
                return Ok(stored_reply(store, req.method, d, bytes, &media_type));
            }
            let (bytes, media_type, digest) =
                fetch_and_store(cx, store, req, extra, &reference).await?;
            return Ok(manifest_reply(req.method, &digest, bytes, &media_type));
        }
        Reference::Tag(tag) => tag.clone(),
    };
    let mut cached = None;
    if let Some(entry) = store.tag(&ns, &req.name, &tag).await {
        if accepts(&req.accept, extra, &entry.media_type) {
            if let Ok(d) = Digest::parse(&entry.digest) {
                if let Some((bytes, media_type)) = store.manifest(&d).await {
                    cached = Some((entry, d, bytes, media_type));
                }
            }
        }
    }
    if let Some((entry, digest, bytes, media_type)) = cached {
        if entry.age() < store.config.ttl_for(&ns) {
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

/// The digest of the manifest an earlier `.resolve` put in the reply; for the calls that
/// work on it (`.discover`, `.teleport`), an error naming the call when there is none.
pub(crate) fn resolved_digest(cx: &Context, call: &Invocation) -> Result<Digest, PluginError> {
    cx.reply
        .as_ref()
        .and_then(|r| r.header("docker-content-digest"))
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| {
            PluginError::failed(
                call,
                format!(
                    "`.{}` needs the manifest `.resolve` found: put it after `.resolve`",
                    call.plugin
                ),
            )
        })
}

/// A manifest by digest: from the store when the route has one, else the upstream (checked
/// against the digest, then stored). For `.teleport`'s twin and an index's children.
pub(crate) async fn manifest_by_digest(
    cx: &mut Context,
    name: &str,
    digest: &Digest,
    accept: &str,
) -> Result<crate::inject_layer::Resolved, RegistryError> {
    let store = cx.store.clone();
    if let Some(store) = &store {
        if let Some((bytes, mt)) = store.manifest(digest).await {
            crate::access::may_serve(cx, store, Resource::Manifests, digest).await?;
            return Ok(crate::inject_layer::Resolved {
                bytes,
                media_type: if mt.is_empty() {
                    accept.to_string()
                } else {
                    mt
                },
                digest: digest.clone(),
            });
        }
    }
    let path = format!("/v2/{name}/manifests/{digest}");
    let resp = send(
        cx,
        reqwest::Method::GET,
        &path,
        &[("Accept", accept.to_string())],
    )
    .await?;
    if !resp.status().is_success() {
        return Err(upstream_error(cx, resp, Resource::Manifests).await);
    }
    let media_type = header(&resp, "content-type").unwrap_or_else(|| accept.to_string());
    let bytes = read_limited(cx, resp, MAX_MANIFEST_BYTES).await?;
    if Digest::of(&bytes) != *digest {
        return Err(mismatch(
            cx,
            &digest.to_string(),
            &Digest::of(&bytes).to_string(),
        ));
    }
    if let Some(store) = &store {
        if let Err(e) = store.put_manifest(digest, &bytes, &media_type).await {
            tracing::warn!(digest = %digest, "could not store the manifest: {e}");
        }
        crate::access::record(cx, store, digest);
    }
    Ok(crate::inject_layer::Resolved {
        bytes,
        media_type,
        digest: digest.clone(),
    })
}

fn ns_of(cx: &Context) -> String {
    cx.upstream
        .as_ref()
        .map(|u| u.ns.clone())
        .unwrap_or_default()
}

fn mismatch(cx: &Context, expected: &str, got: &str) -> RegistryError {
    let ns = cx.upstream.as_ref().map(|u| u.ns.as_str()).unwrap_or("?");
    tracing::warn!(upstream = %ns, expected, got, "digest mismatch from upstream; not served");
    RegistryError::bad_gateway(format!(
        "upstream {ns} sent content that does not match its digest (expected {expected}, got {got}); not served"
    ))
}

/// The referrers of a digest as an OCI index: the upstream's API, else its fallback tag, else
/// an empty index (acr serves the API whatever the upstream has, so clients need no fallback
/// of their own). Filtered by `artifactType` when asked, with `OCI-Filters-Applied`.
async fn referrers(
    cx: &mut Context,
    req: &crate::registry::ClientRequest,
) -> Result<Reply, RegistryError> {
    let digest = Digest::parse(&req.reference).map_err(RegistryError::digest_invalid)?;
    let artifact_type = req
        .query
        .iter()
        .find(|(k, _)| k == "artifactType")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    let found =
        crate::registry::referrers::lookup(cx, &req.name, &digest, artifact_type.as_deref())
            .await?;
    let body = Bytes::from(found.index().to_string());
    let mut headers = vec![
        (
            "Content-Type".to_string(),
            crate::registry::media::OCI_INDEX.to_string(),
        ),
        ("Content-Length".to_string(), body.len().to_string()),
    ];
    if found.filtered {
        headers.push((
            "OCI-Filters-Applied".to_string(),
            "artifactType".to_string(),
        ));
    }
    tracing::debug!(name = %req.name, digest = %digest, source = found.source, n = found.descriptors.len(), "referrers");
    Ok(Reply {
        status: 200,
        headers,
        body: Body::Full(body),
    })
}

/// A JSON document (a tag list), passed on with its Link header pointed at acr.
async fn document(
    cx: &mut Context,
    req: &crate::registry::ClientRequest,
    path: String,
    default_type: &str,
) -> Result<Reply, RegistryError> {
    let mut path = path;
    if !req.query.is_empty() {
        let query: Vec<String> = req
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        path = format!("{path}?{}", query.join("&"));
    }
    let resp = send(
        cx,
        reqwest::Method::GET,
        &path,
        &[("Accept", format!("{default_type}, application/json"))],
    )
    .await?;
    if !resp.status().is_success() {
        return Err(upstream_error(cx, resp, req.resource).await);
    }
    let content_type =
        header(&resp, CONTENT_TYPE.as_str()).unwrap_or_else(|| default_type.to_string());
    let link = header(&resp, LINK.as_str());
    let filters = header(&resp, "oci-filters-applied");
    let mut body = read_limited(cx, resp, MAX_MANIFEST_BYTES).await?;
    let mut link = link.map(|l| rewrite_link(&l, req));
    if req.resource == Resource::Tags && link.is_none() {
        if let Some((page, next)) = paginate_tags(&body, req) {
            body = page;
            link = next;
        }
    }
    let mut headers = vec![
        ("Content-Type".to_string(), content_type),
        ("Content-Length".to_string(), body.len().to_string()),
    ];
    if let Some(link) = link {
        headers.push(("Link".to_string(), link));
    }
    if let Some(f) = filters {
        headers.push(("OCI-Filters-Applied".to_string(), f));
    }
    Ok(Reply {
        status: 200,
        headers,
        body: Body::Full(body),
    })
}

/// Pages a tag list the upstream sent whole although the client asked for `n` or `last`
/// (CNCF distribution 2.x ignores both): the tags in lexical order after `last`, at most `n`,
/// and a `Link` to the next page when more remain, as the distribution spec asks. `None`
/// when the client asked for no page or the document is not a tag list.
fn paginate_tags(
    body: &[u8],
    req: &crate::registry::ClientRequest,
) -> Option<(Bytes, Option<String>)> {
    let param = |k: &str| {
        req.query
            .iter()
            .find(|(q, _)| q == k)
            .map(|(_, v)| v.clone())
    };
    let n = param("n").and_then(|n| n.parse::<usize>().ok());
    let last = param("last");
    if n.is_none() && last.is_none() {
        return None;
    }
    let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut tags: Vec<String> = doc
        .get("tags")?
        .as_array()?
        .iter()
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    tags.sort();
    tags.dedup();
    if let Some(last) = &last {
        tags.retain(|t| t.as_str() > last.as_str());
    }
    let mut next = None;
    if let Some(n) = n {
        if tags.len() > n {
            tags.truncate(n);
            if let Some(last_tag) = tags.last() {
                let mut query = format!("n={n}&last={}", encode(last_tag));
                if let Some(ns) = &req.client_ns {
                    query.push_str(&format!("&ns={}", encode(ns)));
                }
                next = Some(format!(
                    "<{}/tags/list?{query}>; rel=\"next\"",
                    req.client_prefix
                ));
            }
        }
    }
    doc["tags"] = serde_json::Value::from(tags);
    let page = serde_json::to_vec(&doc).ok()?;
    Some((Bytes::from(page), next))
}

/// `</v2/library/x/tags/list?n=2&last=b>; rel="next"` as the client addressed the repository.
fn rewrite_link(link: &str, req: &crate::registry::ClientRequest) -> String {
    let upstream_prefix = format!("/v2/{}/", req.name);
    let Some(start) = link.find(&upstream_prefix) else {
        return link.to_string();
    };
    let rest = &link[start + upstream_prefix.len()..];
    let mut out = format!("{}{}/{}", &link[..start], req.client_prefix, rest);
    if let Some(ns) = &req.client_ns {
        if let Some(close) = out.find('>') {
            let sep = if out[..close].contains('?') { '&' } else { '?' };
            out.insert_str(close, &format!("{sep}ns={}", encode(ns)));
        }
    }
    out
}

/// Query values keep the unreserved characters of RFC 3986 as they are.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY).to_string()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// Reads a document from the upstream, refusing one larger than `limit` bytes or one that
/// pauses longer than the upstream idle bound (a 504). (The future holds no borrow of the
/// context, which is not `Sync`.)
pub(crate) fn read_limited(
    cx: &Context,
    resp: reqwest::Response,
    limit: usize,
) -> impl std::future::Future<Output = Result<Bytes, RegistryError>> + Send + 'static {
    use crate::registry::client::{idle_of, read_body, BodyError};
    let (ns, idle) = (ns_of(cx), idle_of(cx));
    async move {
        read_body(resp, limit, idle).await.map_err(|e| match e {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_adds_never_replaces() {
        let client = vec!["application/vnd.docker.distribution.manifest.v2+json".to_string()];
        assert_eq!(
            accept(&client, "application/vnd.oci.image.manifest.v1+json"),
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
        );
        assert!(accept(&[], "").contains("application/vnd.oci.image.index.v1+json"));
        let any = accept(&["*/*".to_string()], "");
        assert!(any.starts_with("*/*, "), "{any}");
        assert!(
            any.contains("application/vnd.oci.image.manifest.v1+json"),
            "{any}"
        );
        let docker_only = accept(
            &["application/vnd.docker.distribution.manifest.v2+json;q=0.9, */*".to_string()],
            "",
        );
        assert!(!docker_only.contains("oci"), "{docker_only}");
    }

    #[test]
    fn tags_are_paged_when_the_upstream_ignores_n() {
        let mut req = crate::registry::ClientRequest {
            method: Method::Get,
            resource: Resource::Tags,
            name: "library/test".into(),
            reference: String::new(),
            client_prefix: "/v2/test".into(),
            client_ns: Some("docker.io".into()),
            query: vec![("n".into(), "2".into())],
            accept: vec![],
            range: None,
            authorization: None,
            opt_in: vec![],
        };
        let body = br#"{"name":"library/test","tags":["v2s2","b","1","a"]}"#;
        let (page, link) = paginate_tags(body, &req).unwrap();
        let page: serde_json::Value = serde_json::from_slice(&page).unwrap();
        assert_eq!(page["tags"], serde_json::json!(["1", "a"]));
        assert_eq!(
            link.as_deref(),
            Some(r#"</v2/test/tags/list?n=2&last=a&ns=docker.io>; rel="next""#)
        );
        req.query.push(("last".into(), "a".into()));
        let (page, link) = paginate_tags(body, &req).unwrap();
        let page: serde_json::Value = serde_json::from_slice(&page).unwrap();
        assert_eq!(page["tags"], serde_json::json!(["b", "v2s2"]));
        assert_eq!(link, None);
        req.query.clear();
        assert!(paginate_tags(body, &req).is_none());
    }

    #[test]
    fn link_points_back_at_acr() {
        let req = crate::registry::ClientRequest {
            method: Method::Get,
            resource: Resource::Tags,
            name: "library/test".into(),
            reference: String::new(),
            client_prefix: "/v2/test".into(),
            client_ns: Some("docker.io".into()),
            query: vec![],
            accept: vec![],
            range: None,
            authorization: None,
            opt_in: vec![],
        };
        assert_eq!(
            rewrite_link(
                r#"</v2/library/test/tags/list?n=2&last=b>; rel="next""#,
                &req
            ),
            r#"</v2/test/tags/list?n=2&last=b&ns=docker.io>; rel="next""#
        );
    }
}
