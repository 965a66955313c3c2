//! Images pushed through the registry API (blobs, configs, manifests).

use super::*;

// ------------------------------------------------------------------------------------------
// pushing images through the registry API

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Uploads `data` as a blob of `repo` (monolithic: POST, then PUT with the digest); returns
/// its digest.
#[track_caller]
pub fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = digest_of(data);
    let r = http_request(
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/", reg.url()),
        &[("Content-Length", "0")],
        Some(b""),
    );
    assert_eq!(r.status, 202, "start an upload: {}", r.text());
    let location = r.header("location").expect("upload Location").to_string();
    let location = if location.starts_with('/') {
        format!("{}{location}", reg.url())
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = http_request(
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    );
    assert_eq!(r.status, 201, "finish the upload of {digest}: {}", r.text());
    digest
}

/// An image pushed with [`push_image`].
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `library/x:tag`
    pub repo_ref: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config_digest: String,
    /// `(digest, bytes)` of each layer.
    pub layers: Vec<(String, Vec<u8>)>,
}

impl Pushed {
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|(d, _)| d.clone()).collect()
    }
    /// Every blob and manifest digest of the image.
    pub fn all_digests(&self) -> Vec<String> {
        let mut v = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        v.extend(self.layer_digests());
        v
    }
}

/// An OCI image config naming `layers` (uncompressed tars, so diff ids are their digests).
pub fn image_config(label: &str, layer_digests: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"acr.test": label}},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }))
    .expect("config json")
}

/// The OCI manifest of `config` and `layers`.
pub fn image_manifest(config: &[u8], layers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, b)| serde_json::json!({"mediaType": OCI_LAYER_TAR, "digest": d, "size": b.len()}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": config.len()},
        "layers": layers,
    }))
    .expect("manifest json")
}

/// Pushes an OCI image `repo:tag` with `layers` (raw bytes, uploaded as they are) and a
/// config of its own, through the registry's HTTP API.
#[track_caller]
pub fn push_image(reg: &Registry, repo: &str, tag: &str, layers: Vec<Vec<u8>>) -> Pushed {
    let layers: Vec<(String, Vec<u8>)> = layers
        .into_iter()
        .map(|b| (push_blob(reg, repo, &b), b))
        .collect();
    let digests: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let config = image_config(&format!("{repo}:{tag}"), &digests);
    let config_digest = push_blob(reg, repo, &config);
    let manifest = image_manifest(&config, &layers);
    let r = http_request(
        "PUT",
        &format!("{}/v2/{repo}/manifests/{tag}", reg.url()),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&manifest),
    );
    assert_eq!(
        r.status,
        201,
        "push the manifest of {repo}:{tag}: {}",
        r.text()
    );
    Pushed {
        repo_ref: format!("{repo}:{tag}"),
        manifest_digest: digest_of(&manifest),
        manifest,
        config_digest,
        layers,
    }
}
