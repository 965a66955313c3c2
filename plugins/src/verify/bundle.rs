//! Keyed sigstore bundles attached as OCI 1.1 referrers (cosign's newer format): an image
//! manifest whose `subject` is the image and whose `artifactType` and layer are
//! `application/vnd.dev.sigstore.bundle.v0.3+json`, the layer a bundle holding a DSSE envelope
//!
//! ```json
//! {"dsseEnvelope": {"payloadType": "application/vnd.in-toto+json",
//!                   "payload": "BASE64(in-toto statement)",
//!                   "signatures": [{"sig": "BASE64", "keyid": ""}]}, ...}
//! ```
//!
//! whose signature is over DSSE's pre-authentication encoding
//! `DSSEv1 LEN(type) type LEN(payload) payload`, and whose statement has cosign's signing
//! predicate type and the image's digest among its subjects. The signature must verify with a
//! trusted key; the bundle's certificates and transparency-log entries are not checked (what
//! `cosign verify --key --insecure-ignore-tlog` checks). Referrers are found by the referrers
//! API, else the `sha256-HEX` tag (see `registry::referrers`).

use base64::Engine;
use serde_json::Value;

use super::cosign::{fetch_checked, repository_of, signed_by, Refusal};
use super::keys::TrustedKey;
use crate::context::Context;
use crate::oci::{Digest, RegistryError};
use crate::registry::{referrers, Resource};

/// What a bundle's artifact type and layer media type start with.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle";
/// The DSSE payload type of an in-toto statement.
const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The predicate type of cosign's image signature statement.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// The largest referrer manifest and bundle read.
const MAX_BUNDLE_BYTES: usize = 256 * 1024;
/// The most bundles tried for one image, and signatures per bundle.
const MAX_BUNDLES_TRIED: usize = 8;
const MAX_SIGNATURES_PER_ENVELOPE: usize = 4;

/// What the bundles attached to `digest` say: `None` when there is none.
pub async fn check(
    cx: &mut Context,
    repository: &str,
    digest: &Digest,
    keys: &[TrustedKey],
    identity: bool,
) -> Result<Option<Result<(), Refusal>>, RegistryError> {
    let found = referrers::lookup(cx, repository, digest, None).await?;
    let bundles: Vec<Digest> = found
        .descriptors
        .iter()
        .filter(|d| {
            d.get("artifactType")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with(BUNDLE_MEDIA_TYPE))
        })
        .filter_map(|d| Digest::parse(d.get("digest")?.as_str()?).ok())
        .take(MAX_BUNDLES_TRIED)
        .collect();
    let mut worst: Option<Refusal> = None;
    for manifest in &bundles {
        match check_bundle(cx, repository, digest, manifest, keys, identity).await? {
            Ok(()) => return Ok(Some(Ok(()))),
            Err(r) => Refusal::keep_worst(&mut worst, r),
        }
    }
    Ok(worst.map(Err))
}

async fn check_bundle(
    cx: &mut Context,
    repository: &str,
    digest: &Digest,
    manifest: &Digest,
    keys: &[TrustedKey],
    identity: bool,
) -> Result<Result<(), Refusal>, RegistryError> {
    let invalid = |why: String| Ok(Err(Refusal::InvalidSignature(why)));
    let bytes = match fetch_checked(
        cx,
        repository,
        Resource::Manifests,
        manifest,
        MAX_BUNDLE_BYTES,
    )
    .await?
    {
        Ok(b) => b,
        Err(why) => return invalid(format!("the bundle manifest: {why}")),
    };
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let layer = doc["layers"].as_array().and_then(|layers| {
        layers.iter().find(|l| {
            l["mediaType"]
                .as_str()
                .is_some_and(|t| t.starts_with(BUNDLE_MEDIA_TYPE))
        })
    });
    let Some(layer_digest) = layer
        .and_then(|l| l["digest"].as_str())
        .and_then(|d| Digest::parse(d).ok())
    else {
        return invalid(format!(
            "the bundle manifest {manifest} has no bundle layer"
        ));
    };
    let bundle = match fetch_checked(
        cx,
        repository,
        Resource::Blobs,
        &layer_digest,
        MAX_BUNDLE_BYTES,
    )
    .await?
    {
        Ok(b) => b,
        Err(why) => return invalid(format!("the bundle: {why}")),
    };
    Ok(envelope_names(&bundle, repository, digest, keys, identity))
}

/// DSSE's pre-authentication encoding: what the signature is over.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Whether a bundle's envelope is signed by a trusted key and its statement is cosign's
/// signature of `digest` (and of `repository`, with `.identity`).
pub fn envelope_names(
    bundle: &[u8],
    repository: &str,
    digest: &Digest,
    keys: &[TrustedKey],
    identity: bool,
) -> Result<(), Refusal> {
    let invalid = |why: &str| Err(Refusal::InvalidSignature(why.to_string()));
    let b64 = base64::engine::general_purpose::STANDARD;
    let doc: Value = serde_json::from_slice(bundle).unwrap_or(Value::Null);
    let envelope = &doc["dsseEnvelope"];
    let (Some(payload_type), Some(payload)) = (
        envelope["payloadType"].as_str(),
        envelope["payload"]
            .as_str()
            .and_then(|p| b64.decode(p).ok()),
    ) else {
        return invalid("the bundle holds no DSSE envelope (a message signature or keyless bundle is not verified)");
    };
    let message = pae(payload_type, &payload);
    let mut worst: Option<Refusal> = None;
    let signatures = envelope["signatures"].as_array().into_iter().flatten();
    let mut verified = false;
    for sig in signatures.take(MAX_SIGNATURES_PER_ENVELOPE) {
        let Some(sig) = sig["sig"].as_str().and_then(|s| b64.decode(s).ok()) else {
            continue;
        };
        match signed_by(keys, &message, &sig, "the bundle's DSSE envelope") {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(r) => Refusal::keep_worst(&mut worst, r),
        }
    }
    if !verified {
        return Err(worst.unwrap_or_else(|| {
            Refusal::InvalidSignature("the bundle's DSSE envelope has no signature".into())
        }));
    }
    if payload_type != IN_TOTO {
        return invalid("the signed DSSE payload is not an in-toto statement");
    }
    let statement: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    if !statement["_type"]
        .as_str()
        .is_some_and(|t| t.starts_with("https://in-toto.io/Statement/"))
    {
        return invalid("the signed DSSE payload is not an in-toto statement");
    }
    let predicate = statement["predicateType"].as_str().unwrap_or("");
    if predicate != SIGN_PREDICATE {
        return Err(Refusal::InvalidSignature(format!(
            "the signed statement's predicate is {predicate:?}: an attestation, not cosign's signature ({SIGN_PREDICATE})"
        )));
    }
    let subjects: Vec<&Value> = statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let named = subjects
        .iter()
        .find(|s| s["digest"]["sha256"].as_str() == Some(digest.hex()));
    let Some(subject) = named else {
        return Err(Refusal::OtherDigest(format!(
            "a trusted key signed a statement about {}, not {digest}",
            subjects
                .iter()
                .filter_map(|s| s["digest"]["sha256"].as_str())
                .map(|h| format!("sha256:{h}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if identity {
        let name = subject["name"].as_str().unwrap_or("");
        if repository_of(name) != repository {
            return Err(Refusal::OtherRepository(format!(
                "a trusted key signed this digest for {name:?}, and `.identity` asks for {repository}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae("application/example", b"hello world"),
            b"DSSEv1 19 application/example 11 hello world".to_vec()
        );
    }

    #[test]
    fn envelopes_without_a_trusted_signature_are_refused() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "r", "digest": {"sha256": Digest::of(b"x").hex()}}],
            "predicateType": SIGN_PREDICATE,
            "predicate": {}
        });
        let bundle = serde_json::json!({"dsseEnvelope": {
            "payloadType": IN_TOTO,
            "payload": b64.encode(statement.to_string()),
            "signatures": [{"sig": b64.encode(b"not a signature"), "keyid": ""}]
        }});
        let r = envelope_names(
            bundle.to_string().as_bytes(),
            "r",
            &Digest::of(b"x"),
            &[],
            false,
        );
        assert!(matches!(r, Err(Refusal::InvalidSignature(_))), "{r:?}");
        let r = envelope_names(b"{}", "r", &Digest::of(b"x"), &[], false);
        assert!(matches!(r, Err(Refusal::InvalidSignature(_))), "{r:?}");
    }
}
