//! `/container-token` and `/validate-creds`.

use super::*;

// ------------------------------------------------------------------------------------------
// /container-token and /validate-creds

fn post_json(acr: &Acr, path: &str, body: &[u8]) -> HttpResponse {
    http_request(
        "POST",
        &format!("{}{path}", acr.url()),
        &[("Content-Type", "application/json")],
        Some(body),
    )
}

/// `POST /container-token` asking for `library/test:1` with `config` on `platform`.
fn post_token_request(
    acr: &Acr,
    reg: &Registry,
    config: serde_json::Value,
    platform: &str,
) -> HttpResponse {
    let body = serde_json::to_vec(&serde_json::json!({
        "containerImage": reg.image("library/test:1"),
        "containerConfig": config,
        "containerPlatform": platform,
    }))
    .expect("json");
    post_json(acr, "/container-token", &body)
}

/// `POST /container-token` asking for `library/test:1` with `layer` only, on `platform`.
fn post_token_layer(acr: &Acr, reg: &Registry, layer: &Packed, platform: &str) -> HttpResponse {
    post_token_request(
        acr,
        reg,
        serde_json::json!({"layers": [layer.token_layer()]}),
        platform,
    )
}

/// The token layer: `opt/token/hello.txt` (0644), packed with `--location`.
fn token_layer(root: &Path) -> Packed {
    let dir = make_layer_dir(
        root,
        "token-layer",
        &[("opt/token/hello.txt", b"hello from a token layer\n", 0o644)],
    );
    pack(&dir, &["--location"])
}

/// What the upstream of [`token_mirror`] holds.
enum Upstream {
    /// `library/test:1` only.
    TestOnly,
    /// Every fixture image ([`seed`]).
    AllImages,
}

/// A new upstream holding `images`, acr over it injecting the standard layer with
/// `settings`, and the token layer: the upstream, the temporary directory holding both
/// layers (keep it), acr, the token layer.
fn token_mirror(images: Upstream, settings: &[&str]) -> (Registry, TempDir, Acr, Packed) {
    let reg = Registry::start(RegistryAuth::None);
    match images {
        Upstream::TestOnly => {
            seed_test_only(&reg);
        }
        Upstream::AllImages => {
            seed(&reg);
        }
    }
    let (root, _layer, acr) = injecting(&reg, settings);
    let tl = token_layer(root.path());
    (reg, root, acr, tl)
}

/// Creates a token for `library/test:1`; returns (token, targetImage, whole answer).
#[track_caller]
fn create_token(acr: &Acr, reg: &Registry, layer: &Packed) -> (String, String, serde_json::Value) {
    let r = post_token_request(
        acr,
        reg,
        serde_json::json!({
            "entrypoint": ["/opt/token/run"],
            "env": ["K=V"],
            "layers": [layer.token_layer()],
        }),
        "linux/amd64",
    );
    assert_eq!(
        r.status,
        200,
        "POST /container-token: {}\n{}",
        r.text(),
        acr.log()
    );
    let j = r.json();
    let token = j["containerToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no containerToken: {j}"))
        .to_string();
    assert!(!token.is_empty() && !token.contains('/'), "token {token:?}");
    let target = j["targetImage"]
        .as_str()
        .unwrap_or_else(|| panic!("no targetImage: {j}"))
        .to_string();
    (token, target, j)
}

/// `POST /container-token` answers a token and a target image under `/wt/TOKEN/`; skopeo
/// pulls that image and gets the token's layer, entrypoint and env; the same tag without the
/// token does not get them.
#[test]
fn a_container_token_serves_its_augmented_image() {
    let (reg, _root, acr, tl) = token_mirror(Upstream::TestOnly, &[".container-tokens 1h"]);
    let (token, target, j) = create_token(&acr, &reg, &tl);
    assert_eq!(
        target,
        format!("{}/wt/{token}/library/test:1", acr.host()),
        "targetImage: {j}"
    );
    assert_eq!(j["containerImage"], reg.image("library/test:1"), "{j}");
    assert!(
        j["expiration"].as_str().is_some_and(|e| !e.is_empty()),
        "expiration: {j}"
    );

    let out = temp_dir("acr-token-out-");
    let layout = out.path().join("oci");
    skopeo(&[
        "copy",
        &format!("docker://{target}"),
        &format!("oci:{}:t", layout.display()),
    ])
    .ok();
    let (_, m) = layout_manifest(&layout, "t");
    let layers = layers_of(&m);
    assert_eq!(
        layers.last().map(|l| (l.1.clone(), l.2)),
        Some((tl.gzip_digest.clone(), tl.gzip_size)),
        "the token's layer is not the last layer: {layers:?}"
    );
    let config = layout_blob_json(&layout, m["config"]["digest"].as_str().expect("config"));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(diff_ids.len(), layers.len());
    assert_eq!(
        diff_ids.last().and_then(|d| d.as_str()),
        Some(tl.tar_digest.as_str())
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/opt/token/run"])
    );
    assert_eq!(
        env_value(&config, "K").as_deref(),
        Some("V"),
        "{:?}",
        env_of(&config)
    );
    let rootfs = umoci_unpack(&layout, "t", &out.path().join("bundle"));
    assert_file(
        &rootfs,
        "opt/token/hello.txt",
        b"hello from a token layer\n",
        0o644,
    );
    // HEAD and GET under the token agree
    let wt_repo = format!("wt/{token}/library/test");
    let (head, _, _) = head_manifest(&acr, &wt_repo, "1");
    let (get, _, _) = get_manifest_checked(&acr, &wt_repo, "1");
    assert_eq!(head, get);
    assert_eq!(
        layout_digest(&layout, "t"),
        get,
        "skopeo got another manifest"
    );

    // Without the token: no token layer, no token env.
    let (plain, _, pm) = get_manifest_checked(&acr, "library/test", "1");
    assert_ne!(plain, get, "the token's injection leaks into plain pulls");
    assert!(
        !layers_of(&pm).iter().any(|l| l.1 == tl.gzip_digest),
        "the token's layer leaks into plain pulls"
    );
}

/// Tokens that do not open the request: a made-up token (404), another repository under a
/// valid token (403 or 404), each with an OCI error body; bad requests are 400: malformed
/// JSON, a layer whose bytes do not match its gzipDigest (the message says so), an unknown
/// platform.
#[test]
fn container_token_errors() {
    let (reg, _root, acr, tl) = token_mirror(Upstream::AllImages, &[".container-tokens 1h"]);
    let (token, _, _) = create_token(&acr, &reg, &tl);

    for method in ["GET", "HEAD"] {
        let r = manifest(&acr, method, "wt/0123456789ab/library/test", "1");
        assert_eq!(
            r.status,
            404,
            "{method} under a made-up token: {}",
            r.text()
        );
        if method == "GET" {
            assert!(!oci_code(&r.text()).is_empty());
        }
    }
    let r = fetch(
        "GET",
        &format!(
            "{}/v2/wt/0123456789ab/library/test/blobs/{}",
            acr.url(),
            tl.gzip_digest
        ),
        &[],
    );
    assert_eq!(r.status, 404, "blob under a made-up token: {}", r.text());
    assert!(!oci_code(&r.text()).is_empty());

    // library/multi exists upstream; the token is for library/test.
    let r = manifest(&acr, "GET", &format!("wt/{token}/library/multi"), "1");
    assert!(
        r.status == 403 || r.status == 404,
        "another repository under the token: {} {}",
        r.status,
        r.text()
    );
    assert!(!oci_code(&r.text()).is_empty());

    let r = post_json(&acr, "/container-token", b"{\"containerImage\": ");
    assert_eq!(r.status, 400, "malformed JSON: {}", r.text());

    let mut bad = tl.token_layer();
    let wrong = digest_of(b"something else");
    bad["gzipDigest"] = serde_json::Value::String(wrong.clone());
    let r = post_token_request(
        &acr,
        &reg,
        serde_json::json!({"layers": [bad]}),
        "linux/amd64",
    );
    assert_eq!(
        r.status,
        400,
        "a layer that does not match its gzipDigest: {}",
        r.text()
    );
    let text = r.text();
    assert!(
        text.contains(&wrong)
            || text.contains(&tl.gzip_digest)
            || text.to_lowercase().contains("digest"),
        "the message does not mention the digest: {text}"
    );

    let r = post_token_layer(&acr, &reg, &tl, "linux/mips99");
    assert_eq!(r.status, 400, "unknown platform: {}", r.text());

    // the valid token still works
    let (_, _, _) = get_manifest_checked(&acr, &format!("wt/{token}/library/test"), "1");
}

/// A token made with `.container-tokens 1s` is 404 (with an OCI body) two seconds later.
#[test]
fn an_expired_container_token_is_404() {
    let (reg, _root, acr, tl) = token_mirror(Upstream::TestOnly, &[".container-tokens 1s"]);
    let (token, _, _) = create_token(&acr, &reg, &tl);
    std::thread::sleep(Duration::from_millis(2500));
    let r = manifest(&acr, "GET", &format!("wt/{token}/library/test"), "1");
    assert_eq!(r.status, 404, "an expired token: {}", r.text());
    assert!(!oci_code(&r.text()).is_empty());
    let r = manifest(&acr, "HEAD", &format!("wt/{token}/library/test"), "1");
    assert_eq!(r.status, 404, "HEAD under an expired token");
    let r = blob(
        &acr,
        "GET",
        &format!("wt/{token}/library/test"),
        &tl.gzip_digest,
    );
    assert_eq!(r.status, 404, "a blob under an expired token: {}", r.text());
    assert!(!oci_code(&r.text()).is_empty());
}

/// Without `.container-tokens` there is no `/container-token`.
#[test]
fn without_container_tokens_the_endpoint_is_404() {
    let (reg, _root, acr, tl) = token_mirror(Upstream::TestOnly, &[]);
    let r = post_token_layer(&acr, &reg, &tl, "linux/amd64");
    assert_eq!(r.status, 404, "{}", r.text());
    // and the mirror still injects
    let (_, _, m) = get_manifest_checked(&acr, "library/test", "1");
    assert!(layers_of(&m).len() >= 2);
}

/// `POST /validate-creds` says `true` for the upstream's credentials and `false` for wrong
/// ones (htpasswd upstream).
#[test]
fn validate_creds_checks_credentials_against_the_upstream() {
    let reg = Registry::start(RegistryAuth::htpasswd("u", "p"));
    let (_root, _layer, acr) = injecting(&reg, &[".container-tokens 1h"]);
    for (user, pass, want) in [
        ("u", "p", "true"),
        ("u", "wrong", "false"),
        ("nobody", "p", "false"),
    ] {
        let body = serde_json::to_vec(&serde_json::json!({
            "userName": user,
            "password": pass,
            "registry": reg.host(),
        }))
        .expect("json");
        let r = post_json(&acr, "/validate-creds", &body);
        assert_eq!(r.status, 200, "{user}:{pass}: {}", r.text());
        assert_eq!(r.text().trim(), want, "{user}:{pass}");
    }
}
