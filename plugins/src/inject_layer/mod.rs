//! `.inject-layer SOURCE`: appends a layer (and config changes) to every image pulled through
//! the route, with digests a strict client accepts.
//!
//! A call declares; `.resolve` applies. Each `.inject-layer` in a manifests route adds its
//! layer and its `.entrypoint/.cmd/.env/.working-dir` to the request's injection; when
//! `.resolve` has the upstream's manifest for a tag, it hands it to [`apply`], which rewrites
//! the manifest (or every platform of an index), keeps the new manifests and configs and the
//! layers in the store, and answers with the new bytes. `.pull` then serves the new config and
//! the layers from the store like any cached blob.
//!
//! A request by digest is never rewritten: a digest names fixed content, so an upstream digest
//! gets the upstream's bytes and a rewritten digest the rewritten bytes (from the store).
//!
//! The pieces: `layer` (sources and deterministic packing), `rewrite` (pure JSON over bytes),
//! `token` (`/container-token`: injections asked for by clients); platforms are
//! [`crate::oci::Platform`].

pub mod layer;
pub mod rewrite;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::call::PluginError;
use crate::context::Context;
use crate::manifests::manifest_by_digest;
use crate::oci::{media, Digest, Manifest, ManifestKind, Platform, RegistryError};
use crate::plugin::{run_fn, Caps, InputError, Invocation, ModifierSpec, PluginSpec};
use crate::registry::client::{send, upstream_error};
use crate::registry::fetch::read_limited;
use crate::registry::{ClientRequest, Resource};
use crate::store::Store;
use crate::value::Value;

use crate::injection::{describe, known_layer, remember, ConfigEdits, Content, Injection, Layer};

pub const SPEC: PluginSpec = PluginSpec::new(
    "inject-layer",
    "append a layer and rewrite the config of every image pulled (apply with `.resolve`)",
)
.input("a directory, a .tar.gz file, or a data: or https:// location")
.modifiers(&[
    ModifierSpec {
        name: "entrypoint",
        usage: ".entrypoint /opt/tool/entry.sh  (or a JSON list)",
        parse: words_modifier,
    },
    ModifierSpec {
        name: "cmd",
        usage: ".cmd ARG...  (or a JSON list)",
        parse: words_modifier,
    },
    ModifierSpec {
        name: "env",
        usage: ".env KEY=VALUE",
        parse: env_modifier,
    },
    ModifierSpec {
        name: "working-dir",
        usage: ".working-dir /dir",
        parse: crate::plugin::symbol_modifier,
    },
    ModifierSpec {
        name: "platform",
        usage: ".platform linux/arm64",
        parse: platform_modifier,
    },
    ModifierSpec {
        name: "digest",
        usage: ".digest sha256:...  (of the .tar.gz)",
        parse: digest_modifier,
    },
    ModifierSpec {
        name: "diff-id",
        usage: ".diff-id sha256:...  (of the uncompressed tar)",
        parse: digest_modifier,
    },
])
.check(check)
.run(run_fn!(run))
.caps(Caps {
    before_answer: true,
    needs_store: true,
    ..Caps::route_of(&[Resource::Manifests])
});

/// Reads the source when the file is compiled: a directory is packed, a file or `data:` is
/// read, so a bad source is a diagnostic and the digests are fixed from then on.
fn check(input: &str) -> Result<(), InputError> {
    let base = std::env::current_dir().unwrap_or_default();
    layer::load_source(input, &base)
        .map(|_| ())
        .map_err(|e| InputError::new(e).hint("a layer is a directory, a .tar.gz file, data:BASE64 or an https:// URL with `.digest` and `.diff-id`"))
}

fn words_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    words(value).map_err(InputError::new)?;
    Ok(vec![(
        modifier.to_string(),
        Value::Symbol(value.to_string()),
    )])
}

/// `a b c` or `["a", "b c"]`.
pub fn words(value: &str) -> Result<Vec<String>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("needs a value".into());
    }
    if v.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(v)
            .map_err(|e| format!("`{v}` is not a JSON list of strings: {e}"));
    }
    Ok(v.split_whitespace().map(String::from).collect())
}

fn env_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    let v = value.trim();
    match v.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok(vec![(modifier.to_string(), Value::Symbol(v.to_string()))])
        }
        _ => Err(InputError::new(format!("`{v}` is not KEY=VALUE")).hint("write `.env KEY=VALUE`")),
    }
}

fn platform_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    Platform::parse(value).map_err(InputError::new)?;
    Ok(vec![(
        modifier.to_string(),
        Value::Symbol(value.trim().to_string()),
    )])
}

fn digest_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    Digest::parse(value.trim()).map_err(|e| InputError::new(format!("`{value}`: {e}")))?;
    Ok(vec![(
        modifier.to_string(),
        Value::Symbol(value.trim().to_string()),
    )])
}

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    cx.route(call)?;
    let layer = layer_of_call(call, cx)?;
    remember(&layer);
    let mut mine = Injection {
        layers: vec![layer],
        edits: ConfigEdits::default(),
    };
    let props = &call.props;
    if let Some(v) = props.get_str("entrypoint") {
        mine.edits.entrypoint = Some(words(v).map_err(|e| PluginError::failed(call, e))?);
    }
    if let Some(v) = props.get_str("cmd") {
        mine.edits.cmd = Some(words(v).map_err(|e| PluginError::failed(call, e))?);
    }
    if let Some(v) = props.get_str("working-dir") {
        mine.edits.working_dir = Some(v.to_string());
    }
    mine.edits.env = props
        .all("env")
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    cx.slots.update(|all: &mut Injection| all.merge(&mine));
    Ok(())
}

/// The layer of a call: its source as compiled, with the call's platform and declared digests.
fn layer_of_call(call: &Invocation, cx: &Context) -> Result<Arc<Layer>, PluginError> {
    let source = layer::compiled_source(&call.input, &cx.base_dir)
        .map_err(|e| PluginError::failed(call, e))?;
    let declared = |name: &str| -> Result<Option<Digest>, PluginError> {
        call.props
            .get_str(name)
            .map(|d| {
                Digest::parse(d).map_err(|e| PluginError::failed(call, format!("`.{name}`: {e}")))
            })
            .transpose()
    };
    let gzip_declared = declared("digest")?;
    let tar_declared = declared("diff-id")?;
    let (gzip_digest, tar_digest) = match &source.content {
        Content::Remote(url) => match (gzip_declared, tar_declared) {
            (Some(g), Some(t)) => (g, t),
            _ => {
                return Err(PluginError::failed(
                    call,
                    format!("the layer at {url} needs its digests declared: add `.digest sha256:...` (of the .tar.gz) and `.diff-id sha256:...` (of the tar); `acr layer pack` prints both"),
                ))
            }
        },
        _ => {
            let tar = source.tar_digest.clone().unwrap_or_else(|| Digest::of(b""));
            for (what, want, got) in [
                ("digest", &gzip_declared, &source.gzip_digest),
                ("diff-id", &tar_declared, &tar),
            ] {
                if let Some(want) = want {
                    if want != got {
                        return Err(PluginError::failed(
                            call,
                            format!("the layer {} has {what} {got}, not the declared {want}", describe(&call.input, &source.gzip_digest)),
                        ));
                    }
                }
            }
            (source.gzip_digest.clone(), tar)
        }
    };
    let platform = match call.props.get_str("platform") {
        Some(p) => Some(Platform::parse(p).map_err(|e| PluginError::failed(call, e))?),
        None => layer::platform_from_name(&call.input),
    };
    Ok(Arc::new(Layer {
        source: call.input.clone(),
        gzip_digest,
        gzip_size: source.gzip_size,
        tar_digest,
        platform,
        content: source.content.clone(),
    }))
}

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

/// The HTTP client for layer URLs: the mirror's, else a new one.
pub fn http_of(cx: &Context) -> reqwest::Client {
    match &cx.registry {
        Some(shared) => shared.http.clone(),
        None => reqwest::Client::new(),
    }
}

fn store_failed(e: std::io::Error) -> RegistryError {
    RegistryError::new(500, "UNKNOWN", format!("the store failed: {e}"))
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
    let digest = Digest::of(&new_manifest);
    let media_type = if original.media_type.is_empty() {
        match kind {
            ManifestKind::DockerManifest => media::DOCKER_MANIFEST.to_string(),
            _ => media::OCI_MANIFEST.to_string(),
        }
    } else {
        original.media_type.clone()
    };
    store
        .put_manifest(&digest, &new_manifest, &media_type)
        .await
        .map_err(store_failed)?;
    crate::access::record_own(cx, store, &digest);
    tracing::info!(
        name = %req.name,
        from = %original.digest,
        to = %digest,
        layers = layers.len(),
        platform = %platform.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()),
        "injected"
    );
    Ok(Some(Manifest {
        bytes: Bytes::from(new_manifest),
        media_type,
        digest,
    }))
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
    let digest = Digest::of(&new_index);
    let media_type = if original.media_type.is_empty() {
        media::OCI_INDEX.to_string()
    } else {
        original.media_type.clone()
    };
    store
        .put_manifest(&digest, &new_index, &media_type)
        .await
        .map_err(store_failed)?;
    crate::access::record_own(cx, store, &digest);
    tracing::info!(name = %req.name, from = %original.digest, to = %digest, platforms = replaced.len(), "injected into an index");
    Ok(Some(Manifest {
        bytes: Bytes::from(new_index),
        media_type,
        digest,
    }))
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

/// Puts each layer in the store (a no-op when it is there) and returns their sizes.
async fn ensure_layers(
    http: &reqwest::Client,
    store: &Arc<Store>,
    layers: &[&Layer],
) -> Result<Vec<u64>, RegistryError> {
    let mut sizes = Vec::with_capacity(layers.len());
    for l in layers {
        sizes.push(ensure_layer(http, store, l).await?);
    }
    Ok(sizes)
}

/// Puts one layer in the store, fetching a remote one (checked against both declared
/// digests). Returns its size.
pub async fn ensure_layer(
    http: &reqwest::Client,
    store: &Arc<Store>,
    l: &Layer,
) -> Result<u64, RegistryError> {
    if let Some(size) = store.blob_size(&l.gzip_digest) {
        return Ok(size);
    }
    match &l.content {
        Content::Bytes(b) => {
            store
                .put_blob(&l.gzip_digest, b)
                .await
                .map_err(store_failed)?;
            Ok(b.len() as u64)
        }
        Content::File(path) => store
            .put_blob_file(&l.gzip_digest, path)
            .await
            .map_err(|e| {
                RegistryError::new(500, "UNKNOWN", format!("the layer {}: {e}", path.display()))
            }),
        Content::Remote(url) => fetch_remote(http, store, l, url).await,
    }
}

/// The largest layer acr fetches from a URL.
const MAX_REMOTE_LAYER: u64 = 4 * 1024 * 1024 * 1024;

async fn fetch_remote(
    http: &reqwest::Client,
    store: &Arc<Store>,
    l: &Layer,
    url: &str,
) -> Result<u64, RegistryError> {
    use std::io::Write;
    let failed = |what: String| RegistryError::bad_gateway(format!("the layer at {url}: {what}"));
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| failed(format!("unreachable: {e}")))?;
    if !resp.status().is_success() {
        return Err(failed(format!("answered {}", resp.status())));
    }
    let tmp = store.temp_file(l.gzip_digest.hex());
    let mut file = std::fs::File::create(&tmp).map_err(store_failed)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let result: Result<(), RegistryError> = async {
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed(format!("the transfer broke: {e}")))?
        {
            size += chunk.len() as u64;
            if size > MAX_REMOTE_LAYER {
                return Err(failed(format!("larger than {MAX_REMOTE_LAYER} bytes")));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(store_failed)?;
        }
        file.sync_all().map_err(store_failed)?;
        let got = Digest::from_sha256(hasher.finalize().into());
        if got != l.gzip_digest {
            return Err(failed(format!(
                "its bytes hash to {got}, not the declared {}",
                l.gzip_digest
            )));
        }
        let path = tmp.clone();
        let tar =
            tokio::task::spawn_blocking(move || layer::gunzip_digest(std::fs::File::open(path)?))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(format!("not a gzipped tar: {e}")))?;
        if tar != l.tar_digest {
            return Err(failed(format!(
                "it unpacks to {tar}, not the declared diff-id {}",
                l.tar_digest
            )));
        }
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    store
        .commit_blob_file(&l.gzip_digest, &tmp, size)
        .await
        .map_err(store_failed)?;
    Ok(size)
}

/// For `.pull`: a layer acr injects that the store lacks (evicted, or never stored on this
/// replica) is put back from its source. Returns whether it now is in the store.
pub async fn restore_layer(http: &reqwest::Client, store: &Arc<Store>, digest: &Digest) -> bool {
    let Some(l) = known_layer(digest) else {
        return false;
    };
    match ensure_layer(http, store, &l).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(digest = %digest, "could not restore an injected layer: {}", e.message);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn words_are_a_json_list_or_split_on_spaces() {
        assert_eq!(words(r#"["/bin/sh", "-c"]"#).unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(words("/bin/sh -c").unwrap(), ["/bin/sh", "-c"]);
        assert!(words("[1]").is_err());
    }
}
