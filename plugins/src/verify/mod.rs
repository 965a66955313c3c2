//! `.verify cosign KEY...`: a manifests route serves only images signed by a trusted key.
//!
//! A call declares; `.resolve` applies (like `.inject-layer`, so it comes before `.resolve`,
//! which the compiler checks). Each `.verify` whose `.repos GLOB, GLOB` covers the request's
//! repository (all of them without `.repos`) adds a policy to the request; when `.resolve` has
//! the upstream's manifest digest, by tag or by digest and before any `.inject-layer` rewrite,
//! it calls [`admit`], which serves the manifest only when every policy finds a cosign
//! signature of that digest by one of its keys (see [`cosign`]). A refusal is a `403 DENIED`
//! naming the image, the digest and why; the log says the same.
//!
//! Decisions are kept per upstream, repository, digest and keys ([`verdicts`]): a hit costs a map lookup; an
//! admitted digest's signature is looked up again after the tag TTL. An index signed by a
//! trusted key admits its platform manifests by digest (cosign signs the index by default).
//! Signature, attestation and SBOM manifests (every layer of such a media type: nothing a
//! runtime unpacks) pass unchecked, so clients can verify again; cosign's own tags
//! (`sha256-HEX.sig`, `.att`, `.sbom`) that hold one pass without a lookup.
//!
//! The keys are read when the file is compiled ([`keys`]): a missing file, a file that is not
//! a public key, or a scheme other than `cosign` is a diagnostic at its line.

pub mod bundle;
pub mod cosign;
pub mod keys;
pub mod verdicts;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value as Json;

use crate::call::PluginError;
use crate::context::Context;
use crate::oci::{media, Digest, ManifestKind, RegistryError};
use crate::plugin::{
    run_fn, symbol_prop, Caps, InputError, Invocation, ModifierProps, ModifierSpec, PluginSpec,
};
use crate::registry::fetch::ns_of;
use crate::registry::{ClientRequest, Resource};
use keys::TrustedKey;
use verdicts::VerdictKey;

pub const SPEC: PluginSpec = PluginSpec::new(
    "verify",
    "serve only images signed by a trusted key (`cosign KEY...`; apply with `.resolve`)",
)
.input("`cosign` and one or more PEM public key files")
.modifiers(&[
    ModifierSpec {
        name: "repos",
        usage: ".repos library/*, team/app",
        parse: repos_modifier,
    },
    ModifierSpec {
        name: "identity",
        usage: ".identity  (the signed docker-reference must name the repository)",
        parse: identity_modifier,
    },
])
.check(check)
.run(run_fn!(run))
.caps(Caps {
    before_answer: true,
    ..Caps::route_of(&[Resource::Manifests])
});

/// How long a refusal is kept (at most: never longer than the tag TTL).
const REFUSAL_KEPT_FOR: Duration = Duration::from_secs(30);
/// How long an admission is kept without a store (with one, its tag TTL).
const ADMISSION_KEPT_WITHOUT_STORE: Duration = Duration::from_secs(60);

/// How many `.verify` inputs' key sets are remembered between compiles.
const MAX_KEY_SETS: usize = 256;

/// Trusted keys, read once per compile.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<TrustedKey>,
    /// Tells key sets apart in [`verdicts`]: a hash of the keys.
    pub id: u64,
}

/// One `.verify` call that applies to the request.
#[derive(Debug, Clone)]
pub struct Policy {
    pub keys: Arc<KeySet>,
    pub identity: bool,
}

/// The policies of a request, left by the `.verify` calls for `.resolve`.
#[derive(Debug, Default)]
pub struct Policies(pub Vec<Policy>);

/// Reads the keys when the file is compiled, so a bad key is a diagnostic.
fn check(input: &str) -> Result<(), InputError> {
    let base = std::env::current_dir().unwrap_or_default();
    key_set(input, &base, true).map(drop)
}

/// The key set of an input: read now when `reread` (a compile), else the one the last compile
/// read (read now if none has).
fn key_set(input: &str, base: &Path, reread: bool) -> Result<Arc<KeySet>, InputError> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Arc<KeySet>>>> = OnceLock::new();
    let compiled = COMPILED.get_or_init(Default::default);
    let input = input.trim();
    if !reread {
        if let Some(set) = compiled.lock().ok().and_then(|m| m.get(input).cloned()) {
            return Ok(set);
        }
    }
    let mut words = input.split_whitespace();
    match words.next() {
        Some("cosign") => {}
        other => {
            return Err(InputError::new(format!(
                "unknown signature scheme `{}`: `.verify` checks `cosign` signatures",
                other.unwrap_or("")
            ))
            .hint("write `.verify cosign /etc/acr/cosign.pub` (a PEM public key per file)"))
        }
    }
    let mut keys = Vec::new();
    for file in words {
        keys.extend(keys::load_key_file(file, base).map_err(|e| {
            InputError::new(e).hint("give the PEM public key files (`cosign.pub`, `openssl pkey -pubout`) of the signers you trust")
        })?);
    }
    if keys.is_empty() {
        return Err(
            InputError::new("`.verify cosign` needs at least one public key file")
                .hint("write `.verify cosign /etc/acr/cosign.pub`"),
        );
    }
    let mut all = Vec::new();
    for k in &keys {
        all.extend_from_slice(&k.fingerprint());
    }
    let hash = Digest::of(&all);
    let id = u64::from_str_radix(&hash.hex()[..16], 16).unwrap_or_default();
    let set = Arc::new(KeySet { keys, id });
    if let Ok(mut m) = compiled.lock() {
        // Bounded: inputs of pipelines long replaced are forgotten (a call reads its keys
        // again if it finds none).
        if m.len() >= MAX_KEY_SETS && !m.contains_key(input) {
            m.clear();
        }
        m.insert(input.to_string(), set.clone());
    }
    Ok(set)
}

fn repos_modifier(modifier: &str, _name: Option<&str>, value: &str) -> ModifierProps {
    let globs: Vec<&str> = value.split(',').map(str::trim).collect();
    if globs.iter().any(|g| g.is_empty()) {
        return Err(
            InputError::new("`.repos` needs repository globs separated by commas")
                .hint("write `.repos library/*, team/app`"),
        );
    }
    Ok(symbol_prop(modifier, globs.join(",")))
}

fn identity_modifier(modifier: &str, _name: Option<&str>, value: &str) -> ModifierProps {
    match value.trim() {
        "" | "on" | "true" => Ok(symbol_prop(modifier, "on")),
        other => Err(InputError::new(format!(
            "`.identity` takes no value (got `{other}`)"
        ))),
    }
}

/// `*` matches any run of characters (`/` included), `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => {
            pattern.len() == text.len()
                && pattern
                    .chars()
                    .zip(text.chars())
                    .all(|(p, t)| p == '?' || p == t)
        }
        Some((head, rest)) => {
            let head_len = head.chars().count();
            if text.chars().count() < head_len
                || !glob(head, &text.chars().take(head_len).collect::<String>())
            {
                return false;
            }
            let tail: String = text.chars().skip(head_len).collect();
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let (req, _, _) = cx.route(call)?;
    if let Some(repos) = call.props.get_str("repos") {
        if !repos.split(',').any(|g| glob(g, &req.name)) {
            return Ok(());
        }
    }
    let keys = key_set(&call.input, &cx.base_dir, false)
        .map_err(|e| PluginError::failed(call, e.message))?;
    let policy = Policy {
        keys,
        identity: call.props.get_str("identity").is_some(),
    };
    cx.slots.update(|all: &mut Policies| all.0.push(policy));
    Ok(())
}

/// Whether a `.verify` of the route applies to the request.
pub fn applies(cx: &Context) -> bool {
    cx.slots.get::<Policies>().is_some_and(|p| !p.0.is_empty())
}

/// Serves the upstream manifest `digest` for `req` only when every policy of the request
/// admits it; `manifest` is its bytes and media type when `.resolve` has them (a HEAD may
/// not). Without `.verify` in the route, nothing to do.
pub async fn admit(
    cx: &mut Context,
    req: &ClientRequest,
    digest: &Digest,
    manifest: Option<(&[u8], &str)>,
) -> Result<(), RegistryError> {
    let Some(policies) = cx.slots.get::<Policies>().map(|p| p.0.clone()) else {
        return Ok(());
    };
    // cosign's own tags name signatures and attestations: passed when that is what they hold,
    // without looking for a signature of the signature.
    if cosign::is_cosign_tag(&req.reference)
        && is_signature_artifact(cx, req, digest, manifest).await
    {
        return Ok(());
    }
    for policy in policies {
        admit_by(cx, req, digest, manifest, &policy).await?;
    }
    Ok(())
}

async fn admit_by(
    cx: &mut Context,
    req: &ClientRequest,
    digest: &Digest,
    manifest: Option<(&[u8], &str)>,
    policy: &Policy,
) -> Result<(), RegistryError> {
    let key = VerdictKey {
        upstream: ns_of(cx),
        digest: digest.to_string(),
        keys: policy.keys.id,
        repository: req.name.clone(),
        identity: policy.identity,
    };
    let metrics = cx.registry.as_ref().map(|r| r.metrics.clone());
    let kept = verdicts::get(&key);
    if let Some(v) = kept
        .as_ref()
        .filter(|v| v.until > std::time::Instant::now())
    {
        match &v.refused {
            None => {
                if !v.children_admitted {
                    if let Some((bytes, media_type)) = manifest {
                        admit_children(&key, bytes, media_type, policy, v.until);
                        verdicts::put(
                            key,
                            None,
                            true,
                            v.until.saturating_duration_since(std::time::Instant::now()),
                        );
                    }
                }
                if let Some(m) = &metrics {
                    crate::metrics::Metrics::inc(&m.verify.admitted);
                }
                return Ok(());
            }
            Some((reason, why)) => {
                if let Some(m) = &metrics {
                    m.verify.refused(reason);
                }
                return Err(RegistryError::denied(refusal_message(cx, req, digest, why)));
            }
        }
    }
    let ttl = cx
        .store
        .as_ref()
        .map(|s| s.config.ttl_for(&ns_of(cx)))
        .unwrap_or(ADMISSION_KEPT_WITHOUT_STORE);
    // Signatures and attestations have no signature of their own: a client that fetches one
    // gets it unchecked (it can run nothing), and the decision is kept like any other.
    if manifest.is_some() && is_signature_artifact(cx, req, digest, manifest).await {
        verdicts::put(key, None, true, ttl);
        return Ok(());
    }
    if let Some(m) = &metrics {
        crate::metrics::Metrics::inc(&m.verify.lookups);
    }
    let found = signatures(cx, req, digest, policy).await;
    let refusal = match found {
        Ok(Ok(())) => {
            tracing::info!(name = %req.name, reference = %req.reference, digest = %digest, "signed by a trusted key: served");
            let children = match manifest {
                Some((bytes, media_type)) => {
                    admit_children(
                        &key,
                        bytes,
                        media_type,
                        policy,
                        std::time::Instant::now() + ttl,
                    );
                    true
                }
                None => false,
            };
            verdicts::put(key, None, children, ttl);
            if let Some(m) = &metrics {
                crate::metrics::Metrics::inc(&m.verify.admitted);
            }
            return Ok(());
        }
        Ok(Err(refusal)) => refusal,
        Err(e) => {
            // The upstream did not answer: an image admitted before stays admitted until it
            // answers (as a cached tag is served stale); anything else waits for it.
            if kept.as_ref().is_some_and(|v| v.refused.is_none()) && e.status >= 500 {
                tracing::warn!(name = %req.name, digest = %digest, "could not look up the signature again ({}); serving the image admitted before", e.message);
                return Ok(());
            }
            return Err(e);
        }
    };
    // Without the manifest's bytes (a HEAD), whether it is a signature is known only now.
    if manifest.is_none() && is_signature_artifact(cx, req, digest, manifest).await {
        verdicts::put(key, None, true, ttl);
        return Ok(());
    }
    let (label, words) = refusal.reason();
    let why = format!("{words}: {}", refusal.detail());
    let message = refusal_message(cx, req, digest, &why);
    tracing::warn!(upstream = %ns_of(cx), name = %req.name, reference = %req.reference, digest = %digest, reason = label, "refused: {message}");
    verdicts::put(key, Some((label, why)), false, ttl.min(REFUSAL_KEPT_FOR));
    if let Some(m) = &metrics {
        m.verify.refused(label);
    }
    Err(RegistryError::denied(message))
}

/// What a refused client reads: the image as it asked for it, the digest, and `why`.
fn refusal_message(cx: &Context, req: &ClientRequest, digest: &Digest, why: &str) -> String {
    let ns = ns_of(cx);
    let image = if req.reference.starts_with("sha256:") {
        format!("{ns}/{}@{digest}", req.name)
    } else {
        format!("{ns}/{}:{}", req.name, req.reference)
    };
    format!("`.verify cosign` refused {image} (digest {digest}): {why}")
}

/// The signatures of `digest` where cosign puts them: the `.sig` tag, then, when that does not
/// admit it, sigstore bundles among its referrers. A failed referrers lookup leaves the
/// answer of the `.sig` tag (logged).
async fn signatures(
    cx: &mut Context,
    req: &ClientRequest,
    digest: &Digest,
    policy: &Policy,
) -> Result<Result<(), cosign::Refusal>, RegistryError> {
    let keys = &policy.keys.keys;
    let refusal = match cosign::check(cx, &req.name, digest, keys, policy.identity).await? {
        Ok(()) => return Ok(Ok(())),
        Err(r) => r,
    };
    match bundle::check(cx, &req.name, digest, keys, policy.identity).await {
        Ok(Some(Ok(()))) => Ok(Ok(())),
        Ok(Some(Err(bundle_refusal))) => Ok(Err(refusal.max(bundle_refusal))),
        Ok(None) => Ok(Err(match refusal {
            cosign::Refusal::NoSignature(why) => cosign::Refusal::NoSignature(format!(
                "{why}, and no sigstore bundle among its referrers"
            )),
            other => other,
        })),
        Err(e) => {
            tracing::warn!(name = %req.name, digest = %digest, "could not look for sigstore bundles among the referrers: {}", e.message);
            Ok(Err(refusal))
        }
    }
}

/// An index admitted by `policy` admits its platform manifests by digest, until `until`.
fn admit_children(
    parent: &VerdictKey,
    bytes: &[u8],
    media_type: &str,
    policy: &Policy,
    until: std::time::Instant,
) {
    let Ok(doc) = serde_json::from_slice::<Json>(bytes) else {
        return;
    };
    if !ManifestKind::detect(&doc, media_type).is_index() {
        return;
    }
    let ttl = until.saturating_duration_since(std::time::Instant::now());
    let children = doc["manifests"].as_array().into_iter().flatten();
    for child in children.take(1024) {
        let Some(d) = child["digest"].as_str().and_then(|d| Digest::parse(d).ok()) else {
            continue;
        };
        let key = VerdictKey {
            upstream: parent.upstream.clone(),
            digest: d.to_string(),
            keys: policy.keys.id,
            repository: parent.repository.clone(),
            identity: parent.identity,
        };
        verdicts::put(key, None, true, ttl);
    }
}

/// The media types of what cosign attaches to an image, which a runtime does not unpack:
/// signatures, in-toto and DSSE attestations, sigstore bundles, SPDX and CycloneDX SBOMs.
fn is_signature_layer(media_type: &str) -> bool {
    media_type == cosign::SIMPLE_SIGNING
        || [
            "application/vnd.dsse.envelope",
            "application/vnd.in-toto",
            "application/vnd.dev.sigstore.bundle",
            "text/spdx",
            "application/spdx",
            "application/vnd.cyclonedx",
        ]
        .iter()
        .any(|prefix| media_type.starts_with(prefix))
}

/// Whether `digest` is a signature or attestation manifest: an image manifest with layers,
/// every one of a signature media type (so nothing a runtime could run).
async fn is_signature_artifact(
    cx: &mut Context,
    req: &ClientRequest,
    digest: &Digest,
    manifest: Option<(&[u8], &str)>,
) -> bool {
    let fetched;
    let (bytes, media_type) = match manifest {
        Some(m) => m,
        None => {
            let accept = media::ALL_MANIFESTS.join(", ");
            match crate::manifests::manifest_by_digest(cx, &req.name, digest, &accept).await {
                Ok(m) => {
                    fetched = m;
                    (&fetched.bytes[..], fetched.media_type.as_str())
                }
                Err(_) => return false,
            }
        }
    };
    let Ok(doc) = serde_json::from_slice::<Json>(bytes) else {
        return false;
    };
    if !ManifestKind::detect(&doc, media_type).is_image() {
        return false;
    }
    let layers = doc["layers"].as_array();
    layers.is_some_and(|l| {
        !l.is_empty()
            && l.iter()
                .all(|l| l["mediaType"].as_str().is_some_and(is_signature_layer))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_repositories() {
        assert!(glob("library/*", "library/test"));
        assert!(glob("*", "a/b/c"));
        assert!(glob("team/app", "team/app"));
        assert!(!glob("team/app", "team/app2"));
        assert!(glob("team/*/x", "team/a/b/x"));
        assert!(glob("te?m/*", "team/x"));
        assert!(!glob("library/*", "team/test"));
    }

    #[test]
    fn inputs_are_checked_when_compiled() {
        let base = std::env::temp_dir();
        let e = key_set("gpg /k.pub", &base, true).unwrap_err();
        assert!(
            e.message.contains("unknown signature scheme `gpg`"),
            "{}",
            e.message
        );
        let e = key_set("cosign", &base, true).unwrap_err();
        assert!(e.message.contains("at least one"), "{}", e.message);
        let e = key_set("cosign /nonexistent/acr-verify.pub", &base, true).unwrap_err();
        assert!(
            e.message.contains("cannot read the key file"),
            "{}",
            e.message
        );
        let dir = std::env::temp_dir().join(format!("acr-verify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("not-a-key.pub"), "hello\n").unwrap();
        let e = key_set("cosign not-a-key.pub", &dir, true).unwrap_err();
        assert!(e.message.contains("not a PEM public key"), "{}", e.message);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn modifiers_check_their_values() {
        assert!(repos_modifier("repos", None, "library/*, team/app").is_ok());
        assert!(repos_modifier("repos", None, "library/*,").is_err());
        assert!(identity_modifier("identity", None, "").is_ok());
        assert!(identity_modifier("identity", None, "yes please").is_err());
    }

    #[test]
    fn only_signature_layers_make_a_signature_artifact() {
        assert!(is_signature_layer(cosign::SIMPLE_SIGNING));
        assert!(is_signature_layer("application/vnd.dsse.envelope.v1+json"));
        assert!(!is_signature_layer(
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ));
    }
}
