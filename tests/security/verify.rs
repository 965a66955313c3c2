//! `.verify cosign KEY...` end to end: a real upstream (CNCF distribution) holding images and
//! cosign signatures written as cosign writes them (`harness::cosign`: keys and signatures by
//! openssl; the cosign CLI cannot be installed here), acr in front, and real clients (skopeo,
//! containerd's `ctr`). A signed image pulls; an unsigned one, one signed by another key, a
//! signature of another digest and damaged signatures are refused with 403 DENIED and the
//! reason in the client's error.

use crate::harness::cosign::*;
use crate::harness::inject::*;
use crate::harness::*;

/// A pipeline over `reg` whose manifests route runs `verify` lines before `.resolve`; with a
/// store when `store`.
fn verify_pipeline(reg: &Registry, verify: &[&str], store: bool) -> String {
    if store {
        inject_pipeline(&reg.url(), verify, &[])
    } else {
        pipeline(&reg.url(), &[], &[], &inject_routes(verify))
    }
}

/// `skopeo copy [--all] docker://ACR/REPO_REF dir:TMP` (plain HTTP, no retries).
fn skopeo_pull(acr: &Acr, repo_ref: &str, all: bool) -> CmdOutput {
    let out = temp_dir("acr-verify-out-");
    let src = format!("docker://{}/{repo_ref}", acr.host());
    let dest = format!("dir:{}", out.path().display());
    let mut args = vec!["copy", "--retry-times", "0"];
    if all {
        args.push("--all");
    }
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(&args)
}

/// Asserts skopeo was refused with 403 DENIED and `reason` in its error, and that acr's log
/// says the same.
#[track_caller]
fn assert_refused(acr: &Acr, out: &CmdOutput, reason: &str) {
    assert!(
        !out.success(),
        "{} was served:\n{}\nacr's log:\n{}",
        out.cmdline,
        out.stdout,
        acr.log()
    );
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("denied") || err.contains("403"),
        "no 403 DENIED in skopeo's error:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(reason),
        "{reason:?} not in skopeo's error:\n{}",
        out.stderr
    );
    assert!(
        acr.log().contains(reason),
        "{reason:?} not in acr's log:\n{}",
        acr.log()
    );
}

/// One counter of acr's `/metrics` (the whole line's value), 0 when absent.
fn metric(acr: &Acr, line_start: &str) -> u64 {
    let text = acr.fetch("GET", "/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Pushes `test:1` to `repo:1` and returns its digest.
fn push_test(reg: &Registry, repo: &str) -> String {
    push(reg, &fixtures().test, &format!("{repo}:1"), &[]);
    raw_manifest(reg, &format!("{repo}:1")).0
}

/// The three kinds of key cosign makes, trusted, and one more P-256 key that is not.
struct Keys {
    _dir: tempfile::TempDir,
    p256: SigningKey,
    rsa: SigningKey,
    ed25519: SigningKey,
    untrusted: SigningKey,
}

fn keys() -> Keys {
    let dir = temp_dir("acr-verify-keys-");
    let at = |name, kind| SigningKey::generate(dir.path(), name, kind);
    Keys {
        p256: at("release", KeyKind::EcdsaP256),
        rsa: at("rsa", KeyKind::Rsa2048),
        ed25519: at("ed", KeyKind::Ed25519),
        untrusted: at("stranger", KeyKind::EcdsaP256),
        _dir: dir,
    }
}

fn trusting(k: &Keys) -> String {
    format!(
        ".verify cosign {} {} {}",
        k.p256.public_path(),
        k.rsa.public_path(),
        k.ed25519.public_path()
    )
}

/// skopeo pulls images signed by each kind of trusted key; an unsigned image, one signed by
/// another key, a signature of another digest, a damaged signature and an altered payload
/// are each refused with 403 and the reason; a repository outside `.repos` pulls unsigned;
/// the metrics count both. No store: the HEAD-then-GET path of `.resolve`.
#[test]
fn verify_admits_signed_images_and_refuses_the_rest_with_skopeo() {
    let k = keys();
    let reg = Registry::start(RegistryAuth::None);
    for (repo, key) in [
        ("library/p256", &k.p256),
        ("library/rsa", &k.rsa),
        ("library/ed25519", &k.ed25519),
    ] {
        let digest = push_test(&reg, repo);
        cosign_sign(&reg, key, repo, &digest);
    }
    push_test(&reg, "library/unsigned");
    let d = push_test(&reg, "library/stranger");
    cosign_sign(&reg, &k.untrusted, "library/stranger", &d);
    let d = push_test(&reg, "library/elsewhere");
    let another = digest_of(b"another image");
    let for_another =
        simple_signing_payload(&format!("{}/library/elsewhere", reg.host()), &another);
    push_signatures(
        &reg,
        "library/elsewhere",
        &d,
        &[SignatureLayer::of(&k.p256, for_another)],
    );
    let d = push_test(&reg, "library/damaged");
    let mut layer = SignatureLayer::by(&k.p256, &reg, "library/damaged", &d);
    layer.signature_b64 = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut sig = b64.decode(&layer.signature_b64).expect("base64");
        sig.truncate(sig.len() - 3);
        b64.encode(sig)
    };
    push_signatures(&reg, "library/damaged", &d, &[layer]);
    let d = push_test(&reg, "library/altered");
    let mut layer = SignatureLayer::by(&k.p256, &reg, "library/altered", &d);
    let text = String::from_utf8(layer.payload.clone()).expect("utf-8");
    layer.payload = text
        .replace("\"optional\":null", "\"optional\":{\"added\":\"later\"}")
        .into_bytes();
    push_signatures(&reg, "library/altered", &d, &[layer]);
    push_test(&reg, "other/unsigned");

    let verify = trusting(&k);
    let acr = Acr::start(&verify_pipeline(
        &reg,
        &[&verify, "  .repos library/*"],
        false,
    ));
    for repo in ["library/p256", "library/rsa", "library/ed25519"] {
        skopeo_pull(&acr, &format!("{repo}:1"), false).ok();
    }
    for (repo_ref, reason) in [
        ("library/unsigned:1", "no signature found"),
        ("library/stranger:1", "signed by a key not trusted here"),
        (
            "library/elsewhere:1",
            "the signed payload is for another digest",
        ),
        ("library/damaged:1", "the signature does not verify"),
        ("library/altered:1", "an altered one"),
    ] {
        assert_refused(&acr, &skopeo_pull(&acr, repo_ref, false), reason);
    }
    skopeo_pull(&acr, "other/unsigned:1", false).ok();
    // A runnable image under a name like cosign's is still checked.
    let disguised = format!("library/unsigned:sha256-{}.sig", "a".repeat(64));
    push(&reg, &fixtures().test, &disguised, &[]);
    assert_refused(
        &acr,
        &skopeo_pull(&acr, &disguised, false),
        "no signature found",
    );

    // The refusal names the image and the digest; a direct request gets the OCI error.
    let unsigned = raw_manifest(&reg, "library/unsigned:1").0;
    let r = acr.fetch(
        "GET",
        "/v2/library/unsigned/manifests/1",
        &[("Accept", ACCEPT_MANIFESTS)],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "DENIED");
    let message = oci_message(&r.text());
    assert!(
        message.contains("library/unsigned:1") && message.contains(&unsigned),
        "{message}"
    );
    let by_digest = acr.fetch(
        "GET",
        &format!("/v2/library/unsigned/manifests/{unsigned}"),
        &[("Accept", ACCEPT_MANIFESTS)],
    );
    assert_eq!(by_digest.status, 403, "{}", by_digest.text());
    let message = oci_message(&by_digest.text());
    assert!(
        message.contains(&format!("library/unsigned@{unsigned}"))
            && message.contains("no signature found"),
        "a kept refusal names the image as asked for: {message}"
    );

    // Signatures pass through unchanged, so clients can verify again.
    let signed = raw_manifest(&reg, "library/p256:1").0;
    let sig_tag = format!("sha256-{}.sig", &signed["sha256:".len()..]);
    let sig = acr.fetch(
        "GET",
        &format!("/v2/library/p256/manifests/{sig_tag}"),
        &[("Accept", ACCEPT_MANIFESTS)],
    );
    assert_eq!(sig.status, 200, "{}", sig.text());
    let sig_digest = digest_of(&sig.body);
    assert_eq!(
        raw_manifest(&reg, &format!("library/p256:{sig_tag}")).0,
        sig_digest
    );
    let by_digest = acr.fetch(
        "GET",
        &format!("/v2/library/p256/manifests/{sig_digest}"),
        &[("Accept", ACCEPT_MANIFESTS)],
    );
    assert_eq!(by_digest.status, 200, "{}", by_digest.text());

    assert!(metric(&acr, "acr_verify_admitted_total") >= 3);
    for reason in [
        "no_signature",
        "untrusted_key",
        "other_digest",
        "invalid_signature",
    ] {
        let n = metric(
            &acr,
            &format!("acr_verify_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1, "no refusal counted for {reason}");
    }
}

/// A decision is kept per digest: pulling a signed image again asks the upstream for no
/// signature (the lookups counter stays) until the tag TTL has passed, when the signature is
/// looked up again.
#[test]
fn verify_keeps_its_decisions_until_the_tag_ttl() {
    const TTL_SECS: u64 = 4;
    let k = keys();
    let reg = Registry::start(RegistryAuth::None);
    let d = push_test(&reg, "library/signed");
    cosign_sign(&reg, &k.p256, "library/signed", &d);
    let verify = trusting(&k);
    let ttl = format!(".ttl {TTL_SECS}s");
    let acr = Acr::start(&inject_pipeline(&reg.url(), &[&verify], &[&ttl]));
    let started = std::time::Instant::now();
    skopeo_pull(&acr, "library/signed:1", false).ok();
    let lookups = metric(&acr, "acr_verify_lookups_total");
    assert_eq!(lookups, 1, "one lookup for the first pull");
    let sig_gets = reg.count_requests("GET", ".sig");
    let get = |reference: &str| {
        acr.fetch(
            "GET",
            &format!("/v2/library/signed/manifests/{reference}"),
            &[("Accept", ACCEPT_MANIFESTS)],
        )
    };
    for reference in ["1", d.as_str(), "1"] {
        assert_eq!(get(reference).status, 200);
    }
    if started.elapsed() < std::time::Duration::from_secs(TTL_SECS) {
        assert_eq!(metric(&acr, "acr_verify_lookups_total"), lookups);
        assert_eq!(reg.count_requests("GET", ".sig"), sig_gets);
    }
    assert!(metric(&acr, "acr_verify_admitted_total") >= 4);
    std::thread::sleep(std::time::Duration::from_secs(TTL_SECS + 1));
    assert_eq!(get("1").status, 200);
    assert_eq!(metric(&acr, "acr_verify_lookups_total"), lookups + 1);
}

/// With `.identity`, the signed `docker-reference` must name the repository: a signature made
/// for another repository is refused.
#[test]
fn verify_identity_checks_the_signed_repository() {
    let k = keys();
    let reg = Registry::start(RegistryAuth::None);
    let d = push_test(&reg, "library/right");
    cosign_sign(&reg, &k.p256, "library/right", &d);
    let d = push_test(&reg, "library/wrong");
    let layer = SignatureLayer::by(&k.p256, &reg, "library/elsewhere", &d);
    push_signatures(&reg, "library/wrong", &d, &[layer]);
    let verify = trusting(&k);
    let acr = Acr::start(&verify_pipeline(&reg, &[&verify, "  .identity"], false));
    skopeo_pull(&acr, "library/right:1", false).ok();
    assert_refused(
        &acr,
        &skopeo_pull(&acr, "library/wrong:1", false),
        "the signed payload is for another repository",
    );
}

/// A signed index pulls with `skopeo copy --all` (its platform manifests admitted by
/// digest); an unsigned index is refused.
#[test]
fn verify_admits_a_signed_index_and_its_platforms() {
    let k = keys();
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().multi, "library/multi:1", &["--all"]);
    let index = raw_manifest(&reg, "library/multi:1").0;
    cosign_sign(&reg, &k.ed25519, "library/multi", &index);
    push(
        &reg,
        &fixtures().multi,
        "library/multi-unsigned:1",
        &["--all"],
    );
    let verify = trusting(&k);
    let acr = Acr::start(&verify_pipeline(&reg, &[&verify], true));
    let out = skopeo_pull(&acr, "library/multi:1", true).ok();
    assert!(out.success());
    assert_refused(
        &acr,
        &skopeo_pull(&acr, "library/multi-unsigned:1", true),
        "no signature found",
    );
    // The platform manifests were admitted with their signed index, by digest: a digest
    // names content, so the same content is admitted in any repository the policy covers.
    let raw = raw_manifest(&reg, "library/multi:1").1;
    let index: serde_json::Value = serde_json::from_slice(&raw).expect("index json");
    let child = index["manifests"][0]["digest"]
        .as_str()
        .expect("child digest");
    let r = acr.fetch(
        "GET",
        &format!("/v2/library/multi/manifests/{child}"),
        &[("Accept", ACCEPT_MANIFESTS)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// containerd's `ctr` pulls a signed image through acr and is refused an unsigned one.
#[test]
fn verify_with_ctr() {
    let k = keys();
    let reg = Registry::start(RegistryAuth::None);
    let d = push_test(&reg, "library/signed");
    cosign_sign(&reg, &k.rsa, "library/signed", &d);
    push_test(&reg, "library/unsigned");
    let verify = trusting(&k);
    let acr = Acr::start(&verify_pipeline(&reg, &[&verify], false));
    let ctrd = Containerd::start();
    let signed = format!("{}/library/signed:1", acr.host());
    ctrd.ctr_pull_with(&signed, None, &[]).ok();
    ctrd.assert_has_image(&signed, &d);
    let unsigned = format!("{}/library/unsigned:1", acr.host());
    let out = ctrd.ctr_pull_with(&unsigned, None, &[]);
    assert!(
        !out.success(),
        "ctr pulled an unsigned image:\n{}",
        out.stdout
    );
    let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(
        said.contains("403") || said.contains("forbidden") || said.contains("denied"),
        "{said}"
    );
    assert!(acr.log().contains("no signature found"), "{}", acr.log());
    assert!(!ctrd.images().iter().any(|i| i == &unsigned));
}

/// With `.inject-layer` in the route, the upstream's manifest is checked before the rewrite:
/// a signed image is served rewritten (a digest of acr's own), an unsigned one is refused.
#[test]
fn verify_checks_the_upstream_manifest_before_inject_layer() {
    let k = keys();
    let reg = Registry::start(RegistryAuth::None);
    let d = push_test(&reg, "library/signed");
    cosign_sign(&reg, &k.p256, "library/signed", &d);
    push_test(&reg, "library/unsigned");
    let root = temp_dir("acr-verify-inject-");
    let layer = standard_layer(root.path());
    let verify = trusting(&k);
    let mut lines = vec![verify];
    lines.extend(standard_inject(&layer));
    let acr = Acr::start(&inject_pipeline(&reg.url(), &strs(&lines), &[]));
    let out = temp_dir("acr-verify-out-");
    let dest = format!("oci:{}:t", out.path().display());
    let src = format!("docker://{}/library/signed:1", acr.host());
    skopeo(&["copy", &src, &dest]).ok();
    let served = layout_digest(out.path(), "t");
    assert_ne!(served, d, "the image was not rewritten");
    assert_refused(
        &acr,
        &skopeo_pull(&acr, "library/unsigned:1", false),
        "no signature found",
    );
}

/// Keyed sigstore bundles attached as OCI 1.1 referrers (cosign's newer format, found through
/// the `sha256-HEX` fallback tag on distribution 2.x): one signed by a trusted key admits the
/// image; one signed by another key, or about another digest, is refused.
#[test]
fn verify_admits_keyed_sigstore_bundles_among_the_referrers() {
    let k = keys();
    let reg = Registry::start(RegistryAuth::None);
    let d = push_test(&reg, "library/bundled");
    let bundle = keyed_bundle(&k.ed25519, &format!("{}/library/bundled", reg.host()), &d);
    attach_bundle(&reg, "library/bundled", &d, &bundle);
    let d = push_test(&reg, "library/stranger");
    let bundle = keyed_bundle(&k.untrusted, "library/stranger", &d);
    attach_bundle(&reg, "library/stranger", &d, &bundle);
    let d = push_test(&reg, "library/elsewhere");
    let bundle = keyed_bundle(&k.p256, "library/elsewhere", &digest_of(b"another image"));
    attach_bundle(&reg, "library/elsewhere", &d, &bundle);
    let verify = trusting(&k);
    let acr = Acr::start(&verify_pipeline(&reg, &[&verify], false));
    skopeo_pull(&acr, "library/bundled:1", false).ok();
    for (repo_ref, reason) in [
        ("library/stranger:1", "signed by a key not trusted here"),
        (
            "library/elsewhere:1",
            "the signed payload is for another digest",
        ),
    ] {
        assert_refused(&acr, &skopeo_pull(&acr, repo_ref, false), reason);
    }
}
