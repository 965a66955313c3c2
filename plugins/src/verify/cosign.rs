//! Cosign's simple signing, looked up where cosign puts it and checked against the trusted
//! keys.
//!
//! For an image of digest `sha256:HEX` in repository `R`, cosign pushes the tag
//! `sha256-HEX.sig` in `R`: an image manifest with one layer per signature, each layer of
//! media type `application/vnd.dev.cosign.simplesigning.v1+json` whose blob is the signed
//! payload,
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"R"},
//!              "image":{"docker-manifest-digest":"sha256:HEX"},
//!              "type":"cosign container image signature"},
//!  "optional":null}
//! ```
//!
//! and whose annotation `dev.cosignproject.cosign/signature` is the base64 signature of those
//! payload bytes. An image passes when one layer's signature verifies with a trusted key and
//! its payload names the digest (and, with `.identity`, the repository).
//!
//! The upstream is not trusted: the signature manifest, each payload and the number of layers
//! tried are bounded, and a payload must hash to its layer's digest.

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

use super::keys::TrustedKey;
use crate::context::Context;
use crate::oci::media::{DOCKER_MANIFEST, OCI_MANIFEST};
use crate::oci::{Digest, RegistryError};
use crate::registry::client::{send, upstream_error};
use crate::registry::fetch::read_limited;
use crate::registry::Resource;

/// The media type of a simple-signing layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign payload.
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The largest signature manifest read (cosign's have one small layer per signature).
const MAX_SIGNATURE_MANIFEST_BYTES: usize = 256 * 1024;
/// The largest payload read (cosign's are a few hundred bytes).
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The most signature layers tried for one image.
pub const MAX_SIGNATURES_TRIED: usize = 16;

/// Why an image is refused, from the least to the most telling: when several signatures
/// fail, the most telling reason is given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// The upstream has no `sha256-HEX.sig` tag (or it holds no simple-signing layer).
    NoSignature(String),
    /// A signature is damaged or is not one a trusted key's algorithm makes, or its payload
    /// is not a cosign payload.
    InvalidSignature(String),
    /// A trusted key signed a payload naming another image.
    OtherDigest(String),
    /// A trusted key signed this digest for another repository (`.identity`).
    OtherRepository(String),
    /// A well-formed signature that no trusted key verifies.
    UntrustedKey(String),
}

impl Refusal {
    /// The metric label and the words a person reads first.
    pub fn reason(&self) -> (&'static str, &'static str) {
        match self {
            Refusal::NoSignature(_) => ("no_signature", "no signature found"),
            Refusal::UntrustedKey(_) => ("untrusted_key", "signed by a key not trusted here"),
            Refusal::OtherDigest(_) => ("other_digest", "the signed payload is for another digest"),
            Refusal::OtherRepository(_) => (
                "other_repository",
                "the signed payload is for another repository",
            ),
            Refusal::InvalidSignature(_) => ("invalid_signature", "the signature does not verify"),
        }
    }

    /// Keeps in `worst` the more telling of it and `refusal`.
    pub fn keep_worst(worst: &mut Option<Refusal>, refusal: Refusal) {
        if worst.as_ref().is_none_or(|w| refusal > *w) {
            *worst = Some(refusal);
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Refusal::NoSignature(d)
            | Refusal::UntrustedKey(d)
            | Refusal::OtherDigest(d)
            | Refusal::OtherRepository(d)
            | Refusal::InvalidSignature(d) => d,
        }
    }
}

/// The tag cosign keeps the signatures of `digest` under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// Whether a tag is one cosign writes beside an image (`sha256-HEX.sig`, `.att`, `.sbom`):
/// those manifests are passed through to clients unverified, so they can verify again.
pub fn is_cosign_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return false;
    };
    let Some((hex, kind)) = rest.split_once('.') else {
        return false;
    };
    hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(kind, "sig" | "att" | "sbom")
}

/// What checking the signatures of one image found: `Ok(Ok(()))` when a trusted key signed
/// it, `Ok(Err(refusal))` when not; `Err(e)` is an upstream that failed to answer (not
/// remembered: asked again next time).
pub async fn check(
    cx: &mut Context,
    repository: &str,
    digest: &Digest,
    keys: &[TrustedKey],
    identity: bool,
) -> Result<Result<(), Refusal>, RegistryError> {
    let tag = signature_tag(digest);
    let Some(manifest) = signature_manifest(cx, repository, &tag).await? else {
        return Ok(Err(Refusal::NoSignature(format!(
            "the upstream has no tag {tag} in {repository} (cosign's signatures of this digest)"
        ))));
    };
    let layers: Vec<&Value> = manifest
        .get("layers")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter(|l| l.get("mediaType").and_then(Value::as_str) == Some(SIMPLE_SIGNING))
                .take(MAX_SIGNATURES_TRIED)
                .collect()
        })
        .unwrap_or_default();
    let mut worst: Option<Refusal> = None;
    for layer in layers {
        match check_layer(cx, repository, digest, keys, identity, layer).await? {
            Ok(()) => return Ok(Ok(())),
            Err(r) => Refusal::keep_worst(&mut worst, r),
        }
    }
    Ok(Err(worst.unwrap_or_else(|| {
        Refusal::NoSignature(format!(
            "the tag {tag} in {repository} holds no {SIMPLE_SIGNING} layer"
        ))
    })))
}

/// The signature manifest under `tag`, `None` when the upstream has no such tag.
async fn signature_manifest(
    cx: &mut Context,
    repository: &str,
    tag: &str,
) -> Result<Option<Value>, RegistryError> {
    let path = format!("/v2/{repository}/manifests/{tag}");
    let accept = format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}");
    let resp = send(cx, reqwest::Method::GET, &path, &[("Accept", accept)]).await?;
    if resp.status().as_u16() == 404 {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(upstream_error(cx, resp, Resource::Manifests).await);
    }
    let bytes = read_limited(cx, resp, MAX_SIGNATURE_MANIFEST_BYTES).await?;
    // A manifest that is not JSON holds no signature.
    Ok(Some(serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// One simple-signing layer: its signature against the keys, then its payload.
async fn check_layer(
    cx: &mut Context,
    repository: &str,
    digest: &Digest,
    keys: &[TrustedKey],
    identity: bool,
    layer: &Value,
) -> Result<Result<(), Refusal>, RegistryError> {
    let invalid = |why: String| Ok(Err(Refusal::InvalidSignature(why)));
    let Some(signature) = layer
        .get("annotations")
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        .and_then(Value::as_str)
    else {
        return invalid(format!(
            "a signature layer has no {SIGNATURE_ANNOTATION} annotation"
        ));
    };
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return invalid("a signature is not base64".into());
    };
    let Some(payload_digest) = layer
        .get("digest")
        .and_then(Value::as_str)
        .and_then(|d| Digest::parse(d).ok())
    else {
        return invalid("a signature layer has no sha256 digest".into());
    };
    let payload = match fetch_checked(
        cx,
        repository,
        Resource::Blobs,
        &payload_digest,
        MAX_PAYLOAD_BYTES,
    )
    .await?
    {
        Ok(p) => p,
        Err(why) => return invalid(why),
    };
    let what = format!("payload {payload_digest}");
    if let Err(refusal) = signed_by(keys, &payload, &signature, &what) {
        return Ok(Err(refusal));
    }
    Ok(payload_names(&payload, repository, digest, identity))
}

/// Whether one of `keys` signed `message`; else why not: a well-formed signature none of them
/// verifies (another key's, or an altered one), or one no trusted key's algorithm makes.
pub(super) fn signed_by(
    keys: &[TrustedKey],
    message: &[u8],
    signature: &[u8],
    what: &str,
) -> Result<(), Refusal> {
    if keys.iter().any(|k| k.verifies(message, signature)) {
        return Ok(());
    }
    if keys.iter().any(|k| k.could_have_made(signature)) {
        return Err(Refusal::UntrustedKey(format!(
            "none of the {} trusted key(s) verifies the signature over {what} (a signature by another key looks like this, and so does an altered one)",
            keys.len()
        )));
    }
    Err(Refusal::InvalidSignature(format!(
        "the signature over {what} is not one a trusted key's algorithm makes (damaged, or made with another kind of key)"
    )))
}

/// A blob (or a manifest) of `repository` by digest, at most `limit` bytes, checked against
/// the digest; `Err(why)` when the upstream lacks it or sends other bytes.
pub(super) async fn fetch_checked(
    cx: &mut Context,
    repository: &str,
    resource: Resource,
    digest: &Digest,
    limit: usize,
) -> Result<Result<Bytes, String>, RegistryError> {
    let (path, accept) = match resource {
        Resource::Manifests => (
            format!("/v2/{repository}/manifests/{digest}"),
            vec![("Accept", format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"))],
        ),
        _ => (format!("/v2/{repository}/blobs/{digest}"), Vec::new()),
    };
    let resp = send(cx, reqwest::Method::GET, &path, &accept).await?;
    if resp.status().as_u16() == 404 {
        return Ok(Err(format!("{digest} is not in {repository}")));
    }
    if !resp.status().is_success() {
        return Err(upstream_error(cx, resp, resource).await);
    }
    let bytes = read_limited(cx, resp, limit).await?;
    if Digest::of(&bytes) != *digest {
        return Ok(Err(format!(
            "the upstream sent for {digest} bytes that do not hash to it"
        )));
    }
    Ok(Ok(bytes))
}

/// Whether a verified payload names `digest` (and `repository`, with `.identity`).
pub fn payload_names(
    payload: &[u8],
    repository: &str,
    digest: &Digest,
    identity: bool,
) -> Result<(), Refusal> {
    let Ok(doc) = serde_json::from_slice::<Value>(payload) else {
        return Err(Refusal::InvalidSignature(
            "the signed payload is not JSON".into(),
        ));
    };
    let critical = &doc["critical"];
    if critical["type"].as_str() != Some(PAYLOAD_TYPE) {
        return Err(Refusal::InvalidSignature(format!(
            "the signed payload is not a `{PAYLOAD_TYPE}`"
        )));
    }
    let named = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or("");
    if named != digest.to_string() {
        return Err(Refusal::OtherDigest(format!(
            "a trusted key signed {named:?}, not {digest}"
        )));
    }
    if identity {
        let reference = critical["identity"]["docker-reference"]
            .as_str()
            .unwrap_or("");
        if repository_of(reference) != repository {
            return Err(Refusal::OtherRepository(format!(
                "a trusted key signed this digest for {reference:?}, and `.identity` asks for {repository}"
            )));
        }
    }
    Ok(())
}

/// The repository a `docker-reference` names (as its registry names it); empty when it is not
/// an image reference. Its digest, if any, plays no part.
pub fn repository_of(reference: &str) -> String {
    let name = reference.split('@').next().unwrap_or("");
    crate::oci::ImageReference::parse(name)
        .map(|image| image.registry_repository())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(digest: &str, reference: &str) -> Vec<u8> {
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"
            },
            "optional": null
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_payload_must_name_the_digest_and_with_identity_the_repository() {
        let d = Digest::of(b"image");
        let other = Digest::of(b"other");
        let ok = payload(&d.to_string(), "localhost:5000/library/test");
        assert_eq!(payload_names(&ok, "library/test", &d, true), Ok(()));
        assert!(matches!(
            payload_names(&ok, "library/test", &other, false),
            Err(Refusal::OtherDigest(_))
        ));
        assert!(matches!(
            payload_names(&ok, "team/app", &d, true),
            Err(Refusal::OtherRepository(_))
        ));
        assert_eq!(payload_names(&ok, "team/app", &d, false), Ok(()));
        assert!(matches!(
            payload_names(b"{}", "library/test", &d, false),
            Err(Refusal::InvalidSignature(_))
        ));
    }

    #[test]
    fn docker_references_name_repositories() {
        assert_eq!(repository_of("localhost:5000/library/test"), "library/test");
        assert_eq!(repository_of("busybox"), "library/busybox");
        assert_eq!(repository_of("docker.io/busybox:1"), "library/busybox");
        assert_eq!(repository_of("ghcr.io/org/app:v1"), "org/app");
        assert_eq!(repository_of("ghcr.io/org/app@sha256:ab"), "org/app");
        assert_eq!(repository_of("org/app"), "org/app");
    }

    #[test]
    fn cosign_tags_are_recognised() {
        let hex = "a".repeat(64);
        assert!(is_cosign_tag(&format!("sha256-{hex}.sig")));
        assert!(is_cosign_tag(&format!("sha256-{hex}.att")));
        assert!(!is_cosign_tag(&format!("sha256-{hex}.tar")));
        assert!(!is_cosign_tag("latest"));
        assert_eq!(
            signature_tag(&Digest::parse(&format!("sha256:{hex}")).unwrap()),
            format!("sha256-{hex}.sig")
        );
    }

    #[test]
    fn the_most_telling_refusal_wins() {
        let none = Refusal::NoSignature(String::new());
        let invalid = Refusal::InvalidSignature(String::new());
        let untrusted = Refusal::UntrustedKey(String::new());
        assert!(untrusted > invalid && invalid > none);
    }
}
