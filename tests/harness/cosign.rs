//! Cosign signatures for tests, written exactly as `cosign sign --key` writes them (the cosign
//! CLI is a Go module and cannot be installed here), with keys and signatures made by openssl.
//!
//! What cosign writes (sigstore/cosign `specs/SIGNATURE_SPEC.md`): for an image of digest
//! `sha256:HEX` in repository `R`, the tag `sha256-HEX.sig` in `R` names an OCI image manifest
//! whose layers (one per signature) have media type
//! `application/vnd.dev.cosign.simplesigning.v1+json`; each layer's blob is the payload
//! `{"critical":{"identity":{"docker-reference":"HOST/R"},"image":{"docker-manifest-digest":"sha256:HEX"},"type":"cosign container image signature"},"optional":null}`
//! and its annotation `dev.cosignproject.cosign/signature` is the base64 signature of those
//! bytes (ECDSA P-256: ASN.1 DER over SHA-256; RSA: PKCS#1 v1.5 SHA-256; Ed25519: pure).

use std::path::{Path, PathBuf};

use super::*;

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The kinds of key cosign makes and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
    Ed25519,
}

/// A key pair made with openssl: `private.pem` and `public.pem` (what `.verify` reads).
pub struct SigningKey {
    pub kind: KeyKind,
    pub private: PathBuf,
    pub public: PathBuf,
}

impl SigningKey {
    /// Generates a key pair of `kind` under `dir/name.{key,pub}`.
    pub fn generate(dir: &Path, name: &str, kind: KeyKind) -> SigningKey {
        require_tools(&["openssl"]);
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        let (p, q) = (private.to_string_lossy(), public.to_string_lossy());
        let mut args = vec!["genpkey", "-out", &p];
        match kind {
            KeyKind::EcdsaP256 => {
                args.extend(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
            }
            KeyKind::Rsa2048 => {
                args.extend(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
            }
            KeyKind::Ed25519 => args.extend(["-algorithm", "ed25519"]),
        }
        run("openssl", &args).ok();
        run("openssl", &["pkey", "-in", &p, "-pubout", "-out", &q]).ok();
        SigningKey {
            kind,
            private,
            public,
        }
    }

    /// The public key file's path, for `.verify cosign PATH`.
    pub fn public_path(&self) -> String {
        self.public.to_string_lossy().into_owned()
    }

    /// The signature of `payload`, as openssl makes it for this kind of key.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let dir = self.private.parent().expect("key dir");
        let n = SIGNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let input = dir.join(format!("payload-{n}"));
        let output = dir.join(format!("signature-{n}"));
        std::fs::write(&input, payload).expect("write payload");
        let (k, i, o) = (
            self.private.to_string_lossy(),
            input.to_string_lossy(),
            output.to_string_lossy(),
        );
        match self.kind {
            KeyKind::Ed25519 => run(
                "openssl",
                &[
                    "pkeyutl", "-sign", "-rawin", "-inkey", &k, "-in", &i, "-out", &o,
                ],
            ),
            _ => run("openssl", &["dgst", "-sha256", "-sign", &k, "-out", &o, &i]),
        }
        .ok();
        std::fs::read(&output).expect("read signature")
    }
}

static SIGNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The simple-signing payload cosign signs for `digest`, as bytes (Go's `json.Marshal`
/// order, no spaces).
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":{}}},\"image\":{{\"docker-manifest-digest\":{}}},\"type\":\"cosign container image signature\"}},\"optional\":null}}",
        quoted(docker_reference),
        quoted(digest)
    )
    .into_bytes()
}

/// One signature layer: the payload bytes and the base64 signature.
pub struct SignatureLayer {
    pub payload: Vec<u8>,
    pub signature_b64: String,
}

impl SignatureLayer {
    /// `key`'s signature of cosign's payload for `digest` in `registry`/`repo`.
    pub fn by(key: &SigningKey, registry: &Registry, repo: &str, digest: &str) -> SignatureLayer {
        let payload = simple_signing_payload(&format!("{}/{repo}", registry.host()), digest);
        SignatureLayer::of(key, payload)
    }

    /// `key`'s signature of `payload`.
    pub fn of(key: &SigningKey, payload: Vec<u8>) -> SignatureLayer {
        use base64::Engine;
        let signature_b64 = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
        SignatureLayer {
            payload,
            signature_b64,
        }
    }
}

/// Signs `digest` in `repo` with `key` and pushes the signature where cosign does.
pub fn cosign_sign(registry: &Registry, key: &SigningKey, repo: &str, digest: &str) {
    push_signatures(
        registry,
        repo,
        digest,
        &[SignatureLayer::by(key, registry, repo, digest)],
    );
}

/// Pushes the `sha256-HEX.sig` manifest of `digest` in `repo` with `layers` (their payloads
/// and cosign's config blob uploaded first), as cosign does. Returns the manifest's digest.
pub fn push_signatures(
    registry: &Registry,
    repo: &str,
    digest: &str,
    layers: &[SignatureLayer],
) -> String {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| quoted(&digest_of(&l.payload)))
        .collect();
    let config = format!(
        "{{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\"history\":[{{\"created\":\"0001-01-01T00:00:00Z\"}}],\"os\":\"\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}},\"config\":{{}}}}",
        diff_ids.join(",")
    );
    upload_blob(registry, repo, config.as_bytes());
    let mut descriptors = Vec::new();
    for l in layers {
        upload_blob(registry, repo, &l.payload);
        descriptors.push(format!(
            "{{\"mediaType\":\"{SIMPLE_SIGNING}\",\"size\":{},\"digest\":{},\"annotations\":{{\"{SIGNATURE_ANNOTATION}\":{}}}}}",
            l.payload.len(),
            quoted(&digest_of(&l.payload)),
            quoted(&l.signature_b64)
        ));
    }
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"size\":{},\"digest\":{}}},\"layers\":[{}]}}",
        config.len(),
        quoted(&digest_of(config.as_bytes())),
        descriptors.join(",")
    );
    let tag = format!("sha256-{}.sig", &digest["sha256:".len()..]);
    let url = format!("{}/v2/{repo}/manifests/{tag}", registry.url());
    let r = http_request(
        "PUT",
        &url,
        &[("Content-Type", OCI_MANIFEST)],
        Some(manifest.as_bytes()),
    );
    assert_eq!(r.status, 201, "PUT {url}: {}", r.text());
    digest_of(manifest.as_bytes())
}

/// Uploads `bytes` as a blob of `repo` (POST, then PUT with the digest).
pub fn upload_blob(registry: &Registry, repo: &str, bytes: &[u8]) {
    let start = http_request(
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/", registry.url()),
        &[],
        Some(b""),
    );
    assert_eq!(start.status, 202, "start an upload: {}", start.text());
    let location = start.header("location").expect("upload location");
    let location = if location.starts_with("http") {
        location.to_string()
    } else {
        format!("{}{location}", registry.url())
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{sep}digest={}", digest_of(bytes));
    let done = http_request(
        "PUT",
        &url,
        &[("Content-Type", "application/octet-stream")],
        Some(bytes),
    );
    assert_eq!(done.status, 201, "PUT {url}: {}", done.text());
}

/// The artifact type (and layer media type) of a sigstore bundle.
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The predicate type of cosign's image signature statement.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// A sigstore bundle whose DSSE envelope `key` signed: an in-toto statement with cosign's
/// signing predicate about `subject_digest` (named `subject_name`).
pub fn keyed_bundle(key: &SigningKey, subject_name: &str, subject_digest: &str) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": subject_name, "digest": {"sha256": &subject_digest["sha256:".len()..]}}],
        "predicateType": SIGN_PREDICATE,
        "predicate": {}
    })
    .to_string();
    let payload_type = "application/vnd.in-toto+json";
    let pae = format!(
        "DSSEv1 {} {payload_type} {} {statement}",
        payload_type.len(),
        statement.len()
    );
    let signature = key.sign(pae.as_bytes());
    serde_json::json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "dsseEnvelope": {
            "payload": b64.encode(&statement),
            "payloadType": payload_type,
            "signatures": [{"sig": b64.encode(signature), "keyid": ""}]
        }
    })
    .to_string()
    .into_bytes()
}

/// Attaches `bundle` to `digest` in `repo` as an OCI 1.1 referrer (a manifest with `subject`
/// and `artifactType`, pushed by digest) and lists it in the fallback tag `sha256-HEX`, which
/// clients keep for registries without the referrers API (distribution 2.x).
pub fn attach_bundle(registry: &Registry, repo: &str, digest: &str, bundle: &[u8]) {
    let image = http_request(
        "HEAD",
        &format!("{}/v2/{repo}/manifests/{digest}", registry.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    );
    assert_eq!(image.status, 200, "the subject {digest} is not in {repo}");
    let (subject_type, subject_size) = (
        image
            .header("content-type")
            .unwrap_or(OCI_MANIFEST)
            .to_string(),
        image.header("content-length").unwrap_or("0").to_string(),
    );
    let empty = b"{}";
    upload_blob(registry, repo, empty);
    upload_blob(registry, repo, bundle);
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"{BUNDLE}\",\"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"size\":2,\"digest\":{}}},\"layers\":[{{\"mediaType\":\"{BUNDLE}\",\"size\":{},\"digest\":{}}}],\"subject\":{{\"mediaType\":{},\"size\":{subject_size},\"digest\":{}}}}}",
        quoted(&digest_of(empty)),
        bundle.len(),
        quoted(&digest_of(bundle)),
        quoted(&subject_type),
        quoted(digest)
    );
    let manifest_digest = digest_of(manifest.as_bytes());
    let put = |reference: &str, body: &str, media_type: &str| {
        let url = format!("{}/v2/{repo}/manifests/{reference}", registry.url());
        let r = http_request(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 201, "PUT {url}: {}", r.text());
    };
    put(&manifest_digest, &manifest, OCI_MANIFEST);
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"size\":{},\"digest\":{},\"artifactType\":\"{BUNDLE}\"}}]}}",
        manifest.len(),
        quoted(&manifest_digest)
    );
    put(
        &format!("sha256-{}", &digest["sha256:".len()..]),
        &index,
        OCI_INDEX,
    );
}
