//! Applying an injection: the manifest `.resolve` found for a tag, rewritten with the
//! request's layers and config changes (every platform of an index), the new manifests and
//! configs kept in the store and linked to the request's scope (see `access`).
//!
//! [`super::rewrite`] does the JSON; this file fetches the config, stores what it
//! makes and remembers, per (manifest, injection), what it made, so a repeated pull costs no
//! config read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use super::layer_store::{ensure_layers, http_of, store_failed};
use super::rewrite;
use crate::context::Context;
use crate::injection::{Injection, Layer};
use crate::manifests::manifest_by_digest;
use crate::oci::{media, Digest, Manifest, ManifestKind, Platform, RegistryError};
use crate::registry::client::{send, upstream_error};
use crate::registry::fetch::read_limited;
use crate::registry::{ClientRequest, Resource};
use crate::store::Store;

/// The largest config acr reads to rewrite.
const MAX_CONFIG: u64 = 4 * 1024 * 1024;

/// Rewritten manifests by (original digest, injection fingerprint): what a repeated pull
/// finds without reading the config again. The store holds the bytes.
type DerivedTable = Mutex<HashMap<(Digest, String), Manifest>>;

/// How many rewritten manifests are kept in memory (each a few KiB).
const DERIVED_MAX: usize = 4096;

fn derived() -> &'static DerivedTable {
    static DERIVED: OnceLock<DerivedTable> = OnceLock::new();
    DERIVED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The injection a request gets: the route's `.inject-layer` calls, then a container token's.
pub fn effective(cx: &Context) -> Injection {
    let mut all = cx.slots.get::<Injection>().cloned().unwrap_or_default();
    if let Some(client) = &cx.client_injection {
        all.merge(client);
    }
    all
}

/// Rewrites the manifest `.resolve` found for a tag with the request's injection. A manifest
/// it cannot rewrite (schema 1, an unknown kind, a platform without its layers) is returned
/// as it is, with a warning.
pub async fn apply(
    cx: &mut Context,
    req: &ClientRequest,
    original: Manifest,
) -> Result<Manifest, RegistryError> {
    let injection = effective(cx);
    if injection.is_empty() {
        return Ok(original);
    }
    let Some(store) = cx.store.clone() else {
        return Err(RegistryError::new(
            500,
            "UNKNOWN",
            "`.inject-layer` keeps the rewritten manifests, configs and layers in the store, and this proxy has `: .cache off`: give it a store",
        ));
    };
    let fingerprint = injection.fingerprint();
    let key = (original.digest.clone(), fingerprint);
    let memo = derived().lock().ok().and_then(|m| m.get(&key).cloned());
    if let Some(known) = memo {
        // The bytes are in memory; the store must still hold them for requests by digest, and
        // they must have been made for this scope (else the slow way links what it makes).
        let stored = if store.has_manifest(&known.digest)
            && crate::access::made_here(cx, &store, &known.digest)
        {
            Some((known.bytes.clone(), known.media_type.clone()))
        } else {
            None
        };
        if let Some((bytes, media_type)) = stored {
            let digest = known.digest;
            let http = http_of(cx);
            ensure_layers(
                &http,
                &store,
                &injection
                    .layers
                    .iter()
                    .map(|l| l.as_ref())
                    .collect::<Vec<_>>(),
            )
            .await?;
            return Ok(Manifest {
                bytes,
                media_type,
                digest,
            });
        }
    }
    let doc: serde_json::Value = match serde_json::from_slice(&original.bytes) {
        Ok(v) => v,
        Err(_) => {
            tracing::warn!(name = %req.name, "the manifest is not JSON; passed on without injection");
            return Ok(original);
        }
    };
    let kind = ManifestKind::detect(&doc, &original.media_type);
    let result = match kind {
        ManifestKind::OciManifest | ManifestKind::DockerManifest => {
            augment_manifest(cx, &store, req, &original, kind, &injection, None).await?
        }
        ManifestKind::OciIndex | ManifestKind::DockerList => {
            augment_index(cx, &store, req, &original, &doc, &injection).await?
        }
        ManifestKind::Schema1 => {
            tracing::warn!(name = %req.name, reference = %req.reference, "a Docker schema 1 manifest is passed on unmodified: acr injects only into schema 2 and OCI images");
            None
        }
        ManifestKind::Other => {
            tracing::warn!(name = %req.name, media_type = %original.media_type, "not an image manifest or index; passed on without injection");
            None
        }
    };
    let Some(new) = result else {
        return Ok(original);
    };
    if let Ok(mut m) = derived().lock() {
        if m.len() >= DERIVED_MAX {
            m.clear();
        }
        m.insert(key, new.clone());
    }
    Ok(new)
}

/// Rewrites one image manifest: reads its config, appends the layers meant for its platform
/// (`platform` from the index entry, else the config's), stores the layers, the new config
/// and the new manifest. `None`: nothing to inject for this platform.
async fn augment_manifest(
    cx: &mut Context,
    store: &Arc<Store>,
    req: &ClientRequest,
    original: &Manifest,
    kind: ManifestKind,
    injection: &Injection,
    platform: Option<Platform>,
) -> Result<Option<Manifest>, RegistryError> {
    let doc: serde_json::Value = serde_json::from_slice(&original.bytes).map_err(|e| {
        RegistryError::bad_gateway(format!("the upstream's manifest is not JSON: {e}"))
    })?;
    let config_digest = doc
        .pointer("/config/digest")
        .and_then(|d| d.as_str())
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| {
            RegistryError::bad_gateway("the upstream's manifest has no sha256 config digest")
        })?;
    let config = fetch_config(cx, store, req, &config_digest).await?;
    let config_doc: serde_json::Value = serde_json::from_slice(&config).map_err(|e| {
        RegistryError::bad_gateway(format!("the image config {config_digest} is not JSON: {e}"))
    })?;
    let platform = platform.or_else(|| Platform::from_json(&config_doc));
    let Some(layers) = injection.layers_for(platform.as_ref()) else {
        tracing::warn!(
            name = %req.name,
            platform = %platform.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()),
            "no injected layer is meant for this platform; the image is passed on unmodified"
        );
        return Ok(None);
    };
    let http = http_of(cx);
    let sizes = ensure_layers(&http, store, &layers).await?;
    let new_config = rewrite::config(&config, &layers, &injection.edits).map_err(|e| {
        RegistryError::bad_gateway(format!("cannot rewrite the config {config_digest}: {e}"))
    })?;
    let new_config_digest = Digest::of(&new_config);
    store
        .put_blob(&new_config_digest, &new_config)
        .await
        .map_err(store_failed)?;
    crate::access::record_own(cx, store, &new_config_digest);
    let with_sizes: Vec<(&Layer, u64)> = layers.iter().copied().zip(sizes).collect();
    let new_manifest = rewrite::manifest(
        &original.bytes,
        kind,
        &new_config_digest.to_string(),
        new_config.len() as u64,
        &with_sizes,
    )
    .map_err(|e| RegistryError::bad_gateway(format!("cannot rewrite the manifest: {e}")))?;
    let default_type = match kind {
        ManifestKind::DockerManifest => media::DOCKER_MANIFEST,
        _ => media::OCI_MANIFEST,
    };
    let made = keep_made(cx, store, new_manifest, original, default_type).await?;
    tracing::info!(
        name = %req.name,
        from = %original.digest,
        to = %made.digest,
        layers = layers.len(),
        platform = %platform.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()),
        "injected"
    );
    Ok(Some(made))
}

/// Rewrites every platform entry of an index that has layers meant for it; attestations and
/// entries of other kinds stay. The index gets the new digests and sizes.
async fn augment_index(
    cx: &mut Context,
    store: &Arc<Store>,
    req: &ClientRequest,
    original: &Manifest,
    doc: &serde_json::Value,
    injection: &Injection,
) -> Result<Option<Manifest>, RegistryError> {
    let entries = doc
        .get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let mut replaced = HashMap::new();
    for entry in entries {
        let Some(platform) = entry.get("platform").and_then(Platform::from_json) else {
            continue;
        };
        if platform.is_unknown() {
            continue; // attestations
        }
        let media_type = entry
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or("");
        if !(media_type == media::OCI_MANIFEST || media_type == media::DOCKER_MANIFEST) {
            continue;
        }
        let Some(child_digest) = entry
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| Digest::parse(d).ok())
        else {
            continue;
        };
        let child = manifest_by_digest(cx, &req.name, &child_digest, media_type).await?;
        let kind = if media_type == media::DOCKER_MANIFEST {
            ManifestKind::DockerManifest
        } else {
            ManifestKind::OciManifest
        };
        if let Some(new) =
            augment_manifest(cx, store, req, &child, kind, injection, Some(platform)).await?
        {
            replaced.insert(
                child_digest.to_string(),
                (new.digest.to_string(), new.bytes.len() as u64),
            );
        }
    }
    if replaced.is_empty() {
        return Ok(None);
    }
    let new_index = rewrite::index(&original.bytes, &replaced)
        .map_err(|e| RegistryError::bad_gateway(format!("cannot rewrite the index: {e}")))?;
    let made = keep_made(cx, store, new_index, original, media::OCI_INDEX).await?;
    tracing::info!(name = %req.name, from = %original.digest, to = %made.digest, platforms = replaced.len(), "injected into an index");
    Ok(Some(made))
}

/// Keeps a manifest acr made from `original` in the store, linked to the request's scope,
/// with the original's media type (`default_type` when it had none).
async fn keep_made(
    cx: &mut Context,
    store: &Arc<Store>,
    bytes: Vec<u8>,
    original: &Manifest,
    default_type: &str,
) -> Result<Manifest, RegistryError> {
    let digest = Digest::of(&bytes);
    let media_type = if original.media_type.is_empty() {
        default_type.to_string()
    } else {
        original.media_type.clone()
    };
    store
        .put_manifest(&digest, &bytes, &media_type)
        .await
        .map_err(store_failed)?;
    crate::access::record_own(cx, store, &digest);
    Ok(Manifest {
        bytes: Bytes::from(bytes),
        media_type,
        digest,
    })
}

/// An image config: from the store, else from the upstream (checked, then stored).
async fn fetch_config(
    cx: &mut Context,
    store: &Arc<Store>,
    req: &ClientRequest,
    digest: &Digest,
) -> Result<Bytes, RegistryError> {
    if let Some(b) = store.small_blob(digest, MAX_CONFIG).await {
        return Ok(b);
    }
    let path = format!("/v2/{}/blobs/{digest}", req.name);
    let resp = send(cx, reqwest::Method::GET, &path, &[]).await?;
    if !resp.status().is_success() {
        return Err(upstream_error(cx, resp, Resource::Blobs).await);
    }
    let bytes = read_limited(cx, resp, MAX_CONFIG as usize).await?;
    if Digest::of(&bytes) != *digest {
        return Err(RegistryError::bad_gateway(format!(
            "the upstream sent a config that does not match its digest {digest}; not used"
        )));
    }
    if let Err(e) = store.put_blob(digest, &bytes).await {
        tracing::warn!(digest = %digest, "could not store the config: {e}");
    }
    crate::access::record(cx, store, digest);
    Ok(bytes)
}
