//! Manifests, configs and blobs fetched through acr (and from the upstream), and the checks of an injected image.

use super::*;

// ------------------------------------------------------------------------------------------
// fetching through acr

/// HEAD or GET `/v2/<repo>/manifests/<reference>` at acr, accepting every manifest type.
pub fn manifest(acr: &Acr, method: &str, repo: &str, reference: &str) -> HttpResponse {
    fetch(
        method,
        &format!("{}/v2/{repo}/manifests/{reference}", acr.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
    )
}

/// GET a manifest at acr, asserting 200 and the headers every manifest answer must carry:
/// `Docker-Content-Digest` = sha256 of the body, `Content-Length` = its length,
/// `Content-Type` = its `mediaType`. Returns (digest, body, parsed JSON).
#[track_caller]
pub fn get_manifest_checked(
    acr: &Acr,
    repo: &str,
    reference: &str,
) -> (String, Vec<u8>, serde_json::Value) {
    let r = manifest(acr, "GET", repo, reference);
    assert_eq!(
        r.status,
        200,
        "GET /v2/{repo}/manifests/{reference}: {}\n{}",
        r.text(),
        acr.log()
    );
    let digest = digest_of(&r.body);
    assert_digest_and_length(
        &r,
        &digest,
        r.body.len(),
        &format!("GET {repo}:{reference}"),
    );
    let json: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("manifest of {repo}:{reference} is not JSON ({e})"));
    if let Some(mt) = json["mediaType"].as_str() {
        assert_eq!(
            r.header("content-type"),
            Some(mt),
            "GET {repo}:{reference}: Content-Type is not the manifest's mediaType"
        );
    }
    (digest, r.body, json)
}

/// HEAD a manifest at acr: asserts 200 and returns (Docker-Content-Digest, Content-Length,
/// Content-Type).
#[track_caller]
pub fn head_manifest(acr: &Acr, repo: &str, reference: &str) -> (String, String, String) {
    let r = manifest(acr, "HEAD", repo, reference);
    assert_eq!(
        r.status,
        200,
        "HEAD /v2/{repo}/manifests/{reference}: {}",
        acr.log()
    );
    let h = |k: &str| {
        r.header(k)
            .unwrap_or_else(|| panic!("HEAD {repo}:{reference}: no {k}: {:?}", r.headers))
            .to_string()
    };
    (
        h("docker-content-digest"),
        h("content-length"),
        h("content-type"),
    )
}

/// GET (or HEAD) `/v2/<repo>/blobs/<digest>` at acr.
pub fn blob(acr: &Acr, method: &str, repo: &str, digest: &str) -> HttpResponse {
    fetch(
        method,
        &format!("{}/v2/{repo}/blobs/{digest}", acr.url()),
        &[],
    )
}

/// GET a blob at acr, asserting 200, `Docker-Content-Digest` and that the bytes hash to
/// `digest`; also HEAD, asserting 200, the same digest and `Content-Length`.
#[track_caller]
pub fn get_blob_checked(acr: &Acr, repo: &str, digest: &str) -> Vec<u8> {
    let r = blob(acr, "GET", repo, digest);
    assert_eq!(
        r.status,
        200,
        "GET /v2/{repo}/blobs/{digest}: {}\n{}",
        r.text(),
        acr.log()
    );
    assert_eq!(digest_of(&r.body), digest, "GET blob {digest}: wrong bytes");
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest),
        "GET blob {digest}: Docker-Content-Digest"
    );
    let h = blob(acr, "HEAD", repo, digest);
    assert_eq!(h.status, 200, "HEAD /v2/{repo}/blobs/{digest}");
    assert_digest_and_length(&h, digest, r.body.len(), &format!("HEAD blob {digest}"));
    r.body
}

/// Asserts that `r` says `Docker-Content-Digest: digest` (the sha256 of the content) and
/// `Content-Length: len`.
#[track_caller]
fn assert_digest_and_length(r: &HttpResponse, digest: &str, len: usize, what: &str) {
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest),
        "{what}: Docker-Content-Digest is not the sha256 of the content"
    );
    let len = len.to_string();
    assert_eq!(
        r.header("content-length"),
        Some(len.as_str()),
        "{what}: Content-Length"
    );
}

/// The manifest's layers as (mediaType, digest, size).
pub fn layers_of(manifest: &serde_json::Value) -> Vec<(String, String, u64)> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap_or_default().to_string(),
                l["digest"].as_str().expect("layer digest").to_string(),
                l["size"].as_u64().expect("layer size"),
            )
        })
        .collect()
}

/// The config of a manifest fetched through acr (checked as a blob: HEAD and GET, digest,
/// and `config.size` = its byte length). Returns (bytes, JSON).
#[track_caller]
pub fn config_of(
    acr: &Acr,
    repo: &str,
    manifest: &serde_json::Value,
) -> (Vec<u8>, serde_json::Value) {
    let digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let bytes = get_blob_checked(acr, repo, digest);
    assert_eq!(
        manifest["config"]["size"].as_u64(),
        Some(bytes.len() as u64),
        "config.size is not the config's byte length"
    );
    let json = serde_json::from_slice(&bytes).expect("config json");
    (bytes, json)
}

/// The upstream's raw manifest (GET with every Accept type).
pub fn upstream_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
) -> (String, serde_json::Value) {
    let r = reg.fetch_manifest("GET", repo, reference);
    assert_eq!(r.status, 200, "upstream {repo}:{reference}: {}", r.text());
    (
        digest_of(&r.body),
        serde_json::from_slice(&r.body).expect("json"),
    )
}

/// The upstream's config for a single-platform manifest.
pub fn upstream_config(
    reg: &Registry,
    repo: &str,
    manifest: &serde_json::Value,
) -> serde_json::Value {
    let d = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let r = reg.fetch("GET", &format!("/v2/{repo}/blobs/{d}"), &[]);
    assert_eq!(r.status, 200);
    r.json()
}

/// `config.Env` as strings.
pub fn env_of(config: &serde_json::Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `key` in `config.Env` when present exactly once (panics when repeated).
pub fn env_value(config: &serde_json::Value, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    let vals: Vec<String> = env_of(config)
        .into_iter()
        .filter_map(|e| e.strip_prefix(&prefix).map(str::to_string))
        .collect();
    assert!(
        vals.len() <= 1,
        "{key} appears {} times in Env: {:?}",
        vals.len(),
        env_of(config)
    );
    vals.into_iter().next()
}

/// Asserts what injecting `injected` (in order) into an image whose upstream manifest and
/// config are `up_manifest`/`up_config` must give: the original layers then the injected
/// ones with `layer_media_type`, diff_ids extended by their tarDigests (count == layers),
/// and one history entry per injected layer dated [`INJECTED_CREATED`].
#[track_caller]
pub fn assert_injected(
    what: &str,
    up_manifest: &serde_json::Value,
    up_config: &serde_json::Value,
    manifest: &serde_json::Value,
    config: &serde_json::Value,
    injected: &[&Packed],
    layer_media_type: &str,
) {
    let up_layers = layers_of(up_manifest);
    let layers = layers_of(manifest);
    let mut want = up_layers.clone();
    for p in injected {
        want.push((
            layer_media_type.to_string(),
            p.gzip_digest.clone(),
            p.gzip_size,
        ));
    }
    assert_eq!(layers, want, "{what}: layers = upstream layers + injected");
    assert_eq!(
        manifest["mediaType"], up_manifest["mediaType"],
        "{what}: mediaType changed"
    );
    assert_eq!(
        manifest["config"]["mediaType"], up_manifest["config"]["mediaType"],
        "{what}: config mediaType changed"
    );
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_string())
        .collect();
    let mut want_ids: Vec<String> = up_config["rootfs"]["diff_ids"]
        .as_array()
        .expect("upstream diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_string())
        .collect();
    want_ids.extend(injected.iter().map(|p| p.tar_digest.clone()));
    assert_eq!(diff_ids, want_ids, "{what}: diff_ids");
    assert_eq!(diff_ids.len(), layers.len(), "{what}: diff_ids vs layers");
    let up_history = up_config["history"].as_array().cloned().unwrap_or_default();
    let history = config["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        history.len(),
        up_history.len() + injected.len(),
        "{what}: one history entry per injected layer: {history:?}"
    );
    assert_eq!(
        &history[..up_history.len()],
        &up_history[..],
        "{what}: old history"
    );
    for h in &history[up_history.len()..] {
        assert_eq!(h["created"], INJECTED_CREATED, "{what}: history {h}");
        assert_ne!(h["empty_layer"], true, "{what}: history {h}");
    }
    for k in ["architecture", "os"] {
        assert_eq!(config[k], up_config[k], "{what}: config {k} changed");
    }
}
