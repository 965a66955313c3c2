//! Manifests the plugins fetch beside the one the client asked for: the digest an earlier
//! `.resolve` answered with (for `.discover` and `.teleport`), and a manifest by digest from
//! the store or the upstream (`.teleport`'s twin, an index's children for `.inject-layer`).

use crate::call::Invocation;
use crate::call::PluginError;
use crate::context::Context;
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, Manifest, RegistryError};
use crate::registry::client::{send, upstream_error};
use crate::registry::fetch::{header, mismatch, read_limited};
use crate::registry::Resource;

/// The digest of the manifest an earlier `.resolve` put in the reply; for the calls that
/// work on it (`.discover`, `.teleport`), an error naming the call when there is none.
pub fn resolved_digest(cx: &Context, call: &Invocation) -> Result<Digest, PluginError> {
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
pub async fn manifest_by_digest(
    cx: &mut Context,
    name: &str,
    digest: &Digest,
    accept: &str,
) -> Result<Manifest, RegistryError> {
    let store = cx.store.clone();
    if let Some(store) = &store {
        if let Some((bytes, mt)) = store.manifest(digest).await {
            crate::access::may_serve(cx, store, Resource::Manifests, digest).await?;
            return Ok(Manifest {
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
    Ok(Manifest {
        bytes,
        media_type,
        digest: digest.clone(),
    })
}
