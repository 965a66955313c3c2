//! Who may read what through acr (issue 15's reproductions, each as it was reported, with curl
//! against a real CNCF distribution upstream):
//! 1. `/container-token` needs the same credentials as a pull when the mirror has `: .users`,
//!    and a token serves only while the user who made it may still pull its image;
//! 2. a container token never appears in acr's log or on `/status`;
//! 3. with `.forward-auth` and a store, a hit is served only after the upstream confirms this
//!    client's credentials for the repository;
//! 4. the store serves an object to a repository only when the upstream holds it there.

use crate::harness::production::*;
use crate::harness::*;
use sha2::{Digest as _, Sha256};

const UP_USER: &str = "upstream-robot";
const UP_PASS: &str = "Upstream-0nly-pa55";
const ALICE: (&str, &str) = ("alice", "al1ce-secret");
const BOB: (&str, &str) = ("bob", "b0b-secret");

/// `curl -s -o BODY -w '%{http_code}' ARGS URL`: (status, body as text).
fn curl_status(args: &[&str], url: &str) -> (u16, String) {
    let (status, body) = curl_bytes(args, url);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// [`curl_status`] with the body's bytes.
fn curl_bytes(args: &[&str], url: &str) -> (u16, Vec<u8>) {
    let out_dir = temp_dir("acr-curl-");
    let body = out_dir.path().join("body");
    let body_arg = body.display().to_string();
    let mut all: Vec<&str> = vec!["-o", &body_arg, "-w", "%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all);
    let status = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed no status: {out:?}"));
    (status, std::fs::read(&body).unwrap_or_default())
}

fn creds(user: (&str, &str)) -> String {
    format!("{}:{}", user.0, user.1)
}

/// The upstream (htpasswd, acr's own user) holding `library/test:1`, and `public/x:1`, an image
/// that shares no blob with it.
fn private_upstream() -> Registry {
    let reg = Registry::start(RegistryAuth::htpasswd(UP_USER, UP_PASS));
    push(&reg, &fixtures().test, "library/test:1", &[]);
    push(&reg, &fixtures().multi_amd64, "public/x:1", &[]);
    reg
}

/// acr with users alice (`library/*`) and bob (`public/*`), a store, and `extra` settings.
fn users_mirror(reg: &Registry, extra: &[&str]) -> Acr {
    let mut settings = vec![
        ".users users.htpasswd",
        ".allow-pull alice library/*",
        ".allow-pull bob public/*",
        ".cache store",
    ];
    settings.extend_from_slice(extra);
    Acr::launch(
        &pipeline(&reg.url(), &[], &settings, &routes("")),
        AcrOptions {
            env: vec![(acr_auth_var(reg), format!("{UP_USER}:{UP_PASS}"))],
            files: vec![("users.htpasswd".into(), htpasswd_file(&[ALICE, BOB]))],
            ..AcrOptions::default()
        },
    )
}

fn token_id(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------------------------------
// 1 and 2: container tokens

#[test]
fn container_tokens_need_the_credentials_of_a_pull_and_never_show() {
    let reg = private_upstream();
    let acr = users_mirror(&reg, &[".container-tokens 1h"]);
    let manifest = format!("{}/v2/library/test/manifests/1", acr.url());
    let accept = format!("Accept: {ACCEPT_MANIFESTS}");
    let request = format!("{{\"containerImage\":\"{}/library/test:1\"}}", reg.host());
    let post = |user: Option<(&str, &str)>, path: &str, body: &str| {
        let mut args = vec!["-X", "POST", "-H", "Content-Type: application/json", "-d"];
        args.push(body);
        let c;
        if let Some(u) = user {
            c = creds(u);
            args.push("-u");
            args.push(&c);
        }
        curl_status(&args, &format!("{}{path}", acr.url()))
    };

    // A pull without credentials: 401. So is a token without them (it was a 200 that opened
    // every image acr can reach), and so is a credential check.
    assert_eq!(curl_status(&["-H", &accept], &manifest).0, 401);
    let (status, body) = post(None, "/container-token", &request);
    assert_eq!(status, 401, "{body}");
    assert_eq!(oci_code(&body), "UNAUTHORIZED");
    let check = format!(
        "{{\"registry\":\"{}\",\"userName\":\"x\",\"password\":\"y\"}}",
        reg.host()
    );
    assert_eq!(post(None, "/validate-creds", &check).0, 401);
    // Wrong credentials: 401; bob may not pull library/*: 403.
    assert_eq!(
        post(Some((ALICE.0, "wrong")), "/container-token", &request).0,
        401
    );
    let (status, body) = post(Some(BOB), "/container-token", &request);
    assert_eq!(status, 403, "{body}");
    assert_eq!(oci_code(&body), "DENIED");

    // alice gets a token, and the token is a credential for that image alone.
    let (status, body) = post(Some(ALICE), "/container-token", &request);
    assert_eq!(status, 200, "{body}");
    let grant: serde_json::Value = serde_json::from_str(&body).expect("token JSON");
    let token = grant["containerToken"].as_str().expect("containerToken");
    let through = format!("{}/v2/wt/{token}/library/test/manifests/1", acr.url());
    let (status, body) = curl_status(&["-H", &accept], &through);
    assert_eq!(status, 200, "{body}");
    assert_eq!(digest_of(body.as_bytes()), fixtures().test.digest);
    let other = format!("{}/v2/wt/{token}/public/x/manifests/1", acr.url());
    assert_eq!(curl_status(&["-H", &accept], &other).0, 403);

    // 2: the token is on neither the log nor /status; its id is.
    let (status, page) = curl_status(&[], &format!("{}/status", acr.url()));
    assert_eq!(status, 200);
    let id = token_id(token);
    assert!(
        page.contains(&format!("token-{id}")),
        "/status does not list the request"
    );
    assert!(!page.contains(token), "the token is on /status");
    let log = acr.log();
    assert!(log.contains(&format!("token-{id}")), "{log}");
    assert!(!log.contains(token), "the token is in acr's log:\n{log}");

    // alice leaves the users file: her token stops serving.
    std::fs::write(acr.dir().join("users.htpasswd"), htpasswd_file(&[BOB])).expect("rewrite users");
    let (status, body) = curl_status(&["-H", &accept], &through);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("may no longer pull"), "{body}");
}

/// Without `: .users`, a token made before users were turned on serves nothing afterwards.
#[test]
fn an_anonymous_token_stops_when_the_mirror_gets_users() {
    let reg = private_upstream();
    let settings = [".container-tokens 1h", ".cache store"];
    let runmd = pipeline(&reg.url(), &[], &settings, &routes(""));
    let acr = Acr::launch(
        &runmd,
        AcrOptions {
            env: vec![(acr_auth_var(&reg), format!("{UP_USER}:{UP_PASS}"))],
            files: vec![("users.htpasswd".into(), htpasswd_file(&[ALICE]))],
            ..AcrOptions::default()
        },
    );
    let request = format!("{{\"containerImage\":\"{}/library/test:1\"}}", reg.host());
    let (status, body) = curl_status(
        &["-X", "POST", "-d", &request],
        &format!("{}/container-token", acr.url()),
    );
    assert_eq!(status, 200, "{body}");
    let grant: serde_json::Value = serde_json::from_str(&body).expect("token JSON");
    let token = grant["containerToken"].as_str().expect("containerToken");
    let through = format!("{}/v2/wt/{token}/library/test/manifests/1", acr.url());
    let accept = format!("Accept: {ACCEPT_MANIFESTS}");
    assert_eq!(curl_status(&["-H", &accept], &through).0, 200);
    // The same file, now with users: the reload applies to the next request.
    let with_users = runmd.replace(
        ": .container-tokens 1h\n",
        ": .container-tokens 1h\n: .users users.htpasswd\n",
    );
    let path = acr.dir().join("mirror.runmd");
    let current = std::fs::read_to_string(&path).expect("runmd");
    let addr = acr.host();
    assert!(current.contains(&addr));
    std::fs::write(&path, with_users.replace("{ACR}", &addr)).expect("write runmd");
    let refused = wait_until(std::time::Duration::from_secs(20), || {
        curl_status(&["-H", &accept], &through).0 == 401
    });
    assert!(refused, "the anonymous token still serves:\n{}", acr.log());
}

// ------------------------------------------------------------------------------------------
// 3: .forward-auth and the store

#[test]
fn forward_auth_serves_the_store_only_after_the_upstream_says_yes() {
    let reg = forward_auth_upstream();
    let routes = ": .manifests head, get\n:   .forward-auth\n:   .resolve\n\
                  : .blobs head, get\n:   .forward-auth\n:   .pull\n";
    let acr = Acr::launch(
        &pipeline(&reg.url(), &[], &[".cache store"], routes),
        AcrOptions::default(),
    );
    let accept = format!("Accept: {ACCEPT_MANIFESTS}");
    let by_tag = format!("{}/v2/library/test/manifests/1", acr.url());
    let by_digest = format!(
        "{}/v2/library/test/manifests/{}",
        acr.url(),
        fixtures().test.digest
    );
    let (layer, _) = fixtures().test.layers()[0].clone();
    let blob = format!("{}/v2/library/test/blobs/{layer}", acr.url());
    let good = format!("{FW_USER}:{FW_PASS}");
    let bad = format!("{FW_USER}:wrong");

    assert_eq!(curl_status(&["-H", &accept], &by_tag).0, 401);
    // The right credentials fill the store.
    for url in [&by_tag, &by_digest, &blob] {
        let (status, _) = curl_status(&["-H", &accept, "-u", &good], url);
        assert_eq!(status, 200, "{url}");
    }
    // Then, without credentials or with wrong ones, nothing comes from the store (it was a
    // 200 for the tag within its TTL, the manifest by digest and the blob).
    for url in [&by_tag, &by_digest, &blob] {
        let (status, body) = curl_status(&["-H", &accept], url);
        assert_eq!(status, 401, "{url} without credentials: {body}");
        let (status, body) = curl_status(&["-H", &accept, "-u", &bad], url);
        assert_eq!(status, 401, "{url} with a wrong password: {body}");
        let (status, _) = curl_status(&["-I", "-H", &accept], url);
        assert_eq!(status, 401, "HEAD {url} without credentials");
    }
    // And with the right ones it still is a hit: the blob's bytes came from the store once.
    let (status, body) = curl_bytes(&["-H", &accept, "-u", &good], &blob);
    assert_eq!(status, 200);
    assert_eq!(digest_of(&body), layer);
    assert_upstream_gets(
        &reg,
        &format!("/blobs/{layer}"),
        1,
        "the blob was fetched more than once",
    );
}

// ------------------------------------------------------------------------------------------
// 4: the store and repositories

#[test]
fn a_stored_blob_is_served_only_to_repositories_that_hold_it() {
    let reg = private_upstream();
    let acr = users_mirror(&reg, &[]);
    let (layer, _) = fixtures().test.layers()[0].clone();
    let alice = creds(ALICE);
    let bob = creds(BOB);
    let accept = format!("Accept: {ACCEPT_MANIFESTS}");

    // alice pulls library/test: its manifest and layer are in the store now.
    let url = |repo: &str, what: &str| format!("{}/v2/{repo}/{what}", acr.url());
    let (status, body) = curl_bytes(
        &["-u", &alice],
        &url("library/test", &format!("blobs/{layer}")),
    );
    assert_eq!(status, 200);
    assert_eq!(digest_of(&body), layer);
    let manifest = format!("manifests/{}", fixtures().test.digest);
    assert_eq!(
        curl_status(
            &["-u", &alice, "-H", &accept],
            &url("library/test", &manifest)
        )
        .0,
        200
    );

    // bob may not pull library/*: 403. Through a repository he may pull that does not hold
    // the blob: 404, not the private bytes (it was a 200 once anyone had pulled it).
    assert_eq!(
        curl_status(
            &["-u", &bob],
            &url("library/test", &format!("blobs/{layer}"))
        )
        .0,
        403
    );
    let (status, body) = curl_status(&["-u", &bob], &url("public/x", &format!("blobs/{layer}")));
    assert_eq!(status, 404, "{body}");
    assert_eq!(oci_code(&body), "BLOB_UNKNOWN");
    let (status, _) = curl_status(
        &["-I", "-u", &bob],
        &url("public/x", &format!("blobs/{layer}")),
    );
    assert_eq!(status, 404);
    let (status, body) = curl_status(&["-u", &bob, "-H", &accept], &url("public/x", &manifest));
    assert_eq!(status, 404, "{body}");
    assert_eq!(oci_code(&body), "MANIFEST_UNKNOWN");

    // Where the upstream does hold it, it is served from the store after one HEAD.
    push(&reg, &fixtures().test, "public/copy:1", &[]);
    let path = format!("/v2/public/copy/blobs/{layer}");
    for _ in 0..3 {
        let (status, body) = curl_bytes(
            &["-u", &bob],
            &url("public/copy", &format!("blobs/{layer}")),
        );
        assert_eq!(status, 200);
        assert_eq!(digest_of(&body), layer);
    }
    reg.wait_requests("HEAD", &path, 1, std::time::Duration::from_secs(5));
    let answered: Vec<_> = reg
        .access_log()
        .into_iter()
        .filter(|e| e.path.contains(&path) && e.status == 200)
        .collect();
    assert!(
        answered.len() == 1 && answered[0].method == "HEAD",
        "not one HEAD (past the upstream's 401 challenge) for the copy: {answered:#?}"
    );
    assert_upstream_gets(&reg, &path, 0, "fetched again");
}

// ------------------------------------------------------------------------------------------
// /auth

/// `/auth` hands the manifests route's upstream credentials to the node's root (the overlaybd
/// snapshotter); another local user, though on loopback, gets 403 and no credentials.
#[test]
fn auth_answers_root_on_this_node_and_no_other_local_user() {
    let reg = private_upstream();
    let acr = users_mirror(&reg, &[]);
    let url = format!(
        "{}/auth?remote_url=http://{}/v2/library/test/manifests/1",
        acr.url(),
        reg.host()
    );
    let (status, body) = curl_status(&[], &url);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(UP_PASS),
        "root does not get the credentials: {body}"
    );

    // The same request from uid 65534 (nobody), through setpriv.
    let out_dir = temp_dir("acr-nobody-");
    std::fs::set_permissions(
        out_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let body_path = out_dir.path().join("body");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "curl",
        "-sS",
        "-o",
    ])
    .arg(&body_path)
    .args(["-w", "%{http_code}", &url]);
    let out = run_cmd(cmd, std::time::Duration::from_secs(60));
    assert_eq!(out.stdout.trim(), "403", "{out:?}");
    let body = std::fs::read_to_string(&body_path).unwrap_or_default();
    assert!(!body.contains(UP_PASS), "{body}");
    assert!(body.contains("\"success\":false"), "{body}");
}

// ------------------------------------------------------------------------------------------
// bounds on what anyone may ask

/// A token request whose layer is a few hundred KiB of gzip that inflates to 300 MiB: 400
/// `SIZE_INVALID` (acr stops inflating at its bound), and acr goes on serving.
#[test]
fn a_gzip_bomb_in_a_token_request_is_refused() {
    use base64::Engine as _;
    let reg = private_upstream();
    let settings = [".container-tokens 1h", ".cache store"];
    let acr = Acr::launch(
        &pipeline(&reg.url(), &[], &settings, &routes("")),
        AcrOptions {
            env: vec![(acr_auth_var(&reg), format!("{UP_USER}:{UP_PASS}"))],
            ..AcrOptions::default()
        },
    );
    let dir = temp_dir("acr-bomb-");
    let gz_path = dir.path().join("bomb.gz");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!(
        "head -c 314572800 /dev/zero | gzip -9 > {}",
        gz_path.display()
    ));
    run_cmd(cmd, std::time::Duration::from_secs(120)).ok();
    let gz = std::fs::read(&gz_path).expect("bomb");
    assert!(gz.len() < 1024 * 1024, "{} bytes of gzip", gz.len());
    let request = serde_json::json!({
        "containerImage": format!("{}/library/test:1", reg.host()),
        "containerConfig": {"layers": [{
            "location": format!("data:application/gzip;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(&gz)),
            "gzipDigest": digest_of(&gz),
            "gzipSize": gz.len(),
            "tarDigest": digest_of(b"not what it inflates to"),
        }]},
    });
    let body_path = dir.path().join("request.json");
    std::fs::write(&body_path, request.to_string()).expect("request");
    let at_body = format!("@{}", body_path.display());
    let (status, body) = curl_status(
        &["-X", "POST", "--data-binary", &at_body],
        &format!("{}/container-token", acr.url()),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(oci_code(&body), "SIZE_INVALID");
    assert!(body.contains("inflate"), "{body}");
    let (status, _) = curl_status(&[], &format!("{}/healthz", acr.url()));
    assert_eq!(status, 200);
}

/// Password guessing is limited per client address: after 20 wrong passwords a minute, 429
/// with Retry-After (even for the right password), while another address still logs in.
/// `/validate-creds`, an oracle for the upstream's passwords, allows 10 checks a minute.
#[test]
fn password_guessing_is_limited_per_address() {
    let reg = private_upstream();
    let acr = users_mirror(&reg, &[".container-tokens 1h"]);
    let token_url = format!(
        "{}/token?service=acr&scope=repository:library/test:pull",
        acr.url()
    );
    let wrong = format!("{}:guess", ALICE.0);
    let mut statuses = Vec::new();
    for _ in 0..22 {
        statuses.push(curl_status(&["-u", &wrong], &token_url).0);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[21], 429, "{statuses:?}");
    let right = creds(ALICE);
    let out = curl(&["-i", "-u", &right, &token_url]);
    assert!(out.stdout.starts_with("HTTP/1.1 429"), "{out:?}");
    assert!(
        out.stdout.to_ascii_lowercase().contains("retry-after: "),
        "{out:?}"
    );
    // The same login from another loopback address works.
    let (status, body) = curl_status(&["--interface", "127.0.0.2", "-u", &right], &token_url);
    assert_eq!(status, 200, "{body}");

    let check = format!(
        "{{\"registry\":\"{}\",\"userName\":\"{UP_USER}\",\"password\":\"guess\"}}",
        reg.host()
    );
    let checks: Vec<u16> = (0..12)
        .map(|_| {
            curl_status(
                &[
                    "--interface",
                    "127.0.0.3",
                    "-u",
                    &right,
                    "-X",
                    "POST",
                    "-d",
                    &check,
                ],
                &format!("{}/validate-creds", acr.url()),
            )
            .0
        })
        .collect();
    assert!(checks[..10].iter().all(|s| *s == 200), "{checks:?}");
    assert_eq!(checks[11], 429, "{checks:?}");
}

/// Asserts that the upstream answered `n` GETs of paths holding `path`.
#[track_caller]
fn assert_upstream_gets(reg: &Registry, path: &str, n: usize, what: &str) {
    assert_eq!(reg.count_requests("GET", path), n, "{what}:\n{}", reg.log());
}
