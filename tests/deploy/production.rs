//! End-to-end tests of what running acr in production needs, with real clients and a real
//! CNCF distribution upstream:
//! * client authentication (`: .users` htpasswd, `: .allow-pull` rules, acr's own `/token`
//!   for skopeo, podman and containerd, `: .token-secret` shared by replicas) while the
//!   upstream only ever sees acr's own credentials; `.forward-auth`, where the client's
//!   credentials are the upstream's;
//! * https (`: .tls-cert`, `: .tls-key`) verified by skopeo and curl, a renewed certificate
//!   served without a restart, client certificates (`: .tls-client-ca`);
//! * `/metrics` (request counters, latency histograms, cache hits), `/healthz`, `/readyz`,
//!   and the `/status` page rendered by headless Chromium;
//! * SIGTERM: transfers in progress finish within `--shutdown-grace`, new connections are
//!   refused, and a transfer cut by the end of the grace ends in an error for its client.
//!
//! Every test starts its own upstream and its own acr, so they run in parallel.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::production::*;
use crate::harness::*;
use sha2::{Digest as _, Sha256};

/// acr's own credentials for the upstream; no client ever gets them.
const UP_USER: &str = "upstream-robot";
const UP_PASS: &str = "Upstream-0nly-pa55";
/// Users of acr (not users of the upstream).
const ALICE: (&str, &str) = ("alice", "al1ce-secret");
const BOB: (&str, &str) = ("bob", "b0b-secret");

// ------------------------------------------------------------------------------------------
// client authentication

/// An upstream behind htpasswd with a user no client knows, holding `library/test:1` and
/// `public/test:1`.
fn auth_upstream() -> Registry {
    let reg = Registry::start(RegistryAuth::htpasswd(UP_USER, UP_PASS));
    push(&reg, &fixtures().test, "library/test:1", &[]);
    push(&reg, &fixtures().test, "public/test:1", &[]);
    reg
}

/// The client-auth settings: alice and bob in `users.htpasswd`; alice may pull `library/*`,
/// anyone `public/*`.
const AUTH_SETTINGS: [&str; 3] = [
    ".users users.htpasswd",
    ".allow-pull alice library/*",
    ".allow-pull * public/*",
];

/// acr in front of `reg` with client auth (`AUTH_SETTINGS` and `extra` settings), and its
/// own upstream credentials in `ACR_AUTH_127_0_0_1_PORT`.
fn auth_mirror(reg: &Registry, extra: &[&str], files: &[(&str, &str)]) -> Acr {
    let mut settings: Vec<&str> = AUTH_SETTINGS.to_vec();
    settings.extend_from_slice(extra);
    let mut opts = AcrOptions {
        env: vec![(acr_auth_var(reg), format!("{UP_USER}:{UP_PASS}"))],
        files: vec![("users.htpasswd".into(), htpasswd_file(&[ALICE, BOB]))],
        ..AcrOptions::default()
    };
    for (name, content) in files {
        opts.files.push((name.to_string(), content.to_string()));
    }
    Acr::launch(&pipeline(&reg.url(), &[], &settings, &routes("")), opts)
}

/// The upstream saw none of the clients' credentials: its log names none of acr's users,
/// and every request it authenticated was acr's own user.
fn assert_upstream_saw_only_acrs_credentials(reg: &Registry) {
    let log = reg.log();
    for secret in [ALICE.0, ALICE.1, BOB.0, BOB.1] {
        assert!(
            !log.contains(secret),
            "the upstream's log mentions {secret:?}: a client's credential reached it\n{log}"
        );
    }
    let users: Vec<&str> = log
        .split("auth.user.name=")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|u| u.trim_matches('"'))
        .collect();
    assert!(
        !users.is_empty() && users.iter().all(|u| *u == UP_USER),
        "the upstream authenticated {users:?}, not only {UP_USER}\n{log}"
    );
}

fn lower(out: &CmdOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr).to_ascii_lowercase()
}

/// `skopeo login` then `inspect --raw` and `copy` work for alice on a repository her rule
/// allows; bob, a valid user outside the rule, gets 403 `denied` there but may pull
/// `public/*` (the `*` rule); a wrong password fails `skopeo login`; without a login every
/// pull is 401. The upstream needs credentials the clients do not have: pulls work only
/// because acr uses its own, and the upstream never sees the clients'.
#[test]
fn skopeo_logs_in_to_acr_and_the_pull_rules_decide_what_each_user_gets() {
    let reg = auth_upstream();
    let acr = auth_mirror(&reg, &[], &[]);
    let scratch = temp_dir("acr-logins-");
    let auth = |name: &str| scratch.path().join(format!("{name}.json"));
    let test = format!("docker://{}/library/test:1", acr.host());
    let public = format!("docker://{}/public/test:1", acr.host());

    // No login: 401, and acr asked for credentials.
    let anon = skopeo_as(&auth("anon"), true, &["inspect", "--raw", &test]);
    assert!(!anon.success(), "pulled without credentials: {anon:?}");
    let text = lower(&anon);
    assert!(
        text.contains("unauthorized") || text.contains("401"),
        "{anon:?}"
    );

    // alice: login, inspect, copy.
    skopeo_as(
        &auth("alice"),
        true,
        &["login", "-u", ALICE.0, "-p", ALICE.1, &acr.host()],
    )
    .ok();
    let saved = std::fs::read_to_string(auth("alice")).expect("auth file");
    assert!(saved.contains(&acr.host()), "skopeo login saved {saved}");
    let raw = skopeo_as(&auth("alice"), true, &["inspect", "--raw", &test])
        .ok()
        .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);
    let out = scratch.path().join("alice-dir");
    let dest = format!("dir:{}", out.display());
    skopeo_as(&auth("alice"), true, &["copy", &test, &dest]).ok();
    let manifest = std::fs::read(out.join("manifest.json")).expect("manifest.json");
    assert_eq!(digest_of(&manifest), fixtures().test.digest);
    for (digest, size) in fixtures().test.layers() {
        let blob = std::fs::read(out.join(digest.trim_start_matches("sha256:"))).expect("layer");
        assert_eq!(blob.len() as u64, size);
        assert_eq!(digest_of(&blob), digest);
    }

    // bob: a user of the file, but library/* is alice's.
    skopeo_as(
        &auth("bob"),
        true,
        &["login", "-u", BOB.0, "-p", BOB.1, &acr.host()],
    )
    .ok();
    let denied = skopeo_as(&auth("bob"), true, &["inspect", "--raw", &test]);
    assert!(!denied.success(), "bob pulled library/test: {denied:?}");
    let text = lower(&denied);
    assert!(
        text.contains("denied") || text.contains("403"),
        "{denied:?}"
    );
    let raw = skopeo_as(&auth("bob"), true, &["inspect", "--raw", &public])
        .ok()
        .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);

    // A wrong password: the login fails.
    let wrong = skopeo_as(
        &auth("wrong"),
        true,
        &[
            "login",
            "-u",
            ALICE.0,
            "-p",
            "not-her-password",
            &acr.host(),
        ],
    );
    assert!(
        !wrong.success(),
        "logged in with a wrong password: {wrong:?}"
    );
    let text = lower(&wrong);
    assert!(
        text.contains("invalid username/password")
            || text.contains("unauthorized")
            || text.contains("401"),
        "{wrong:?}"
    );

    // acr answered 403 to bob and 401 without credentials; the upstream saw only acr's user.
    let log = acr.log();
    assert!(log.contains("status=403"), "no 403 in acr's log:\n{log}");
    assert!(log.contains("status=401"), "no 401 in acr's log:\n{log}");
    assert_upstream_saw_only_acrs_credentials(&reg);
}

/// The protocol as a raw client sees it: a 401 with the Bearer challenge naming acr's
/// `/token` and the scope, and a second Basic challenge, and an OCI error body; tokens from
/// `GET /token` (Basic) and `POST /token` (the OAuth2 password grant containerd sends) open
/// exactly the repositories they name; 403 `DENIED` outside the rules; a wrong password or a
/// forged token is 401.
#[test]
fn raw_requests_see_the_challenge_tokens_and_oci_errors() {
    let reg = auth_upstream();
    let acr = auth_mirror(&reg, &[], &[]);
    let manifest_url = |repo: &str| format!("{}/v2/{repo}/manifests/1", acr.url());
    let get = |url: &str, auth: Option<&str>| {
        let mut headers = vec![("Accept", ACCEPT_MANIFESTS)];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        http_request("GET", url, &headers, None)
    };

    // No credentials: exactly the two challenges on the wire (curl shows the real head).
    let (status, head) = curl_head(
        &["-H", &format!("Accept: {ACCEPT_MANIFESTS}")],
        &manifest_url("library/test"),
    );
    assert_eq!(status, 401, "{head:?}");
    assert_eq!(
        header_values(&head, "www-authenticate"),
        vec![
            format!(
                "Bearer realm=\"http://{}/token\",service=\"acr\",scope=\"repository:library/test:pull\"",
                acr.host()
            )
            .as_str(),
            "Basic realm=\"acr\"",
        ],
        "{head:?}"
    );
    let r = get(&manifest_url("library/test"), None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    assert_eq!(oci_code(&r.text()), "UNAUTHORIZED", "{}", r.text());
    let (status, head) = curl_head(&[], &format!("{}/v2/", acr.url()));
    assert_eq!(status, 401, "GET /v2/ without credentials");
    assert_eq!(
        header_values(&head, "www-authenticate"),
        vec![
            format!(
                "Bearer realm=\"http://{}/token\",service=\"acr\"",
                acr.host()
            )
            .as_str(),
            "Basic realm=\"acr\"",
        ],
        "{head:?}"
    );

    // Basic: alice may, bob may not (403 DENIED), a wrong password is 401.
    let (_, upstream_raw) = raw_manifest(&reg, "library/test:1");
    let alice = basic_auth(ALICE.0, ALICE.1);
    let r = get(&manifest_url("library/test"), Some(&alice));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, upstream_raw);
    let bob = basic_auth(BOB.0, BOB.1);
    let r = get(&manifest_url("library/test"), Some(&bob));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "DENIED");
    let r = get(&manifest_url("public/test"), Some(&bob));
    assert_eq!(r.status, 200, "bob on public/*: {}", r.text());
    let r = get(
        &manifest_url("library/test"),
        Some(&basic_auth(ALICE.0, "wrong")),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAUTHORIZED");
    assert!(r.header("www-authenticate").is_some(), "{:?}", r.headers);
    let r = get(
        &manifest_url("library/test"),
        Some(&basic_auth("mallory", ALICE.1)),
    );
    assert_eq!(r.status, 401, "an unknown user: {}", r.text());

    // GET /token with Basic.
    let token_url = format!(
        "{}/token?service=acr&scope=repository:library/test:pull",
        acr.url()
    );
    let t = http_request("GET", &token_url, &[("Authorization", &alice)], None);
    assert_eq!(t.status, 200, "{}", t.text());
    let j = t.json();
    let token = j["token"].as_str().expect("token").to_string();
    assert_eq!(j["access_token"].as_str(), Some(token.as_str()));
    assert!(j["expires_in"].as_u64().is_some_and(|s| s > 0), "{j}");
    let bearer = format!("Bearer {token}");
    let r = get(&manifest_url("library/test"), Some(&bearer));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, upstream_raw);
    // The blobs too.
    for (digest, size) in fixtures().test.layers() {
        let r = http_request(
            "GET",
            &format!("{}/v2/library/test/blobs/{digest}", acr.url()),
            &[("Authorization", &bearer)],
            None,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len() as u64, size);
        assert_eq!(digest_of(&r.body), digest);
    }
    // A token opens what it names, nothing else: alice may pull library/other, but this
    // token is not for it, so the client is told to ask for that scope.
    let r = get(&manifest_url("library/other"), Some(&bearer));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.header("www-authenticate").is_some_and(|c| c
            .contains(&format!("realm=\"http://{}/token\"", acr.host()))
            && c.contains("scope=\"repository:library/other:pull\"")),
        "{:?}",
        r.headers
    );
    // A forged token (its payload changed, the signature kept).
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let forged = format!("Bearer {}.{}x.{}", parts[0], parts[1], parts[2]);
    let r = get(&manifest_url("library/test"), Some(&forged));
    assert_eq!(r.status, 401, "a forged token: {}", r.text());
    // Without credentials /token says how to log in.
    let r = http_request("GET", &token_url, &[], None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.headers
            .get_all("www-authenticate")
            .contains(&"Basic realm=\"acr\""),
        "{:?}",
        r.headers
    );

    // POST /token, as containerd sends it.
    let form = |user: &str, pass: &str, repo: &str| {
        format!(
            "grant_type=password&username={user}&password={pass}&scope=repository%3A{}%3Apull&service=acr&client_id=containerd-client",
            repo.replace('/', "%2F")
        )
    };
    let post = |body: String| {
        http_request(
            "POST",
            &format!("{}/token", acr.url()),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(body.as_bytes()),
        )
    };
    let t = post(form(ALICE.0, ALICE.1, "library/test"));
    assert_eq!(t.status, 200, "{}", t.text());
    let posted = t.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let r = get(
        &manifest_url("library/test"),
        Some(&format!("Bearer {posted}")),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t = post(form(ALICE.0, "wrong", "library/test"));
    assert_eq!(t.status, 401, "{}", t.text());
    // bob gets a token, but it opens nothing of library/*: 403 with it.
    let t = post(form(BOB.0, BOB.1, "library/test"));
    assert_eq!(t.status, 200, "{}", t.text());
    let bobs = t.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let r = get(
        &manifest_url("library/test"),
        Some(&format!("Bearer {bobs}")),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "DENIED");

    assert_upstream_saw_only_acrs_credentials(&reg);
}

/// `: .token-secret FILE`: replicas that share the file accept each other's tokens; a
/// replica with another key refuses them (401).
#[test]
fn replicas_sharing_a_token_secret_accept_each_others_tokens() {
    let reg = auth_upstream();
    let secret = "a-shared-token-secret-of-more-than-16-bytes\n";
    let files = [("token.secret", secret)];
    let one = auth_mirror(&reg, &[".token-secret token.secret"], &files);
    let two = auth_mirror(&reg, &[".token-secret token.secret"], &files);
    let other = auth_mirror(&reg, &[], &[]);
    let t = http_request(
        "GET",
        &format!(
            "{}/token?service=acr&scope=repository:library/test:pull",
            one.url()
        ),
        &[("Authorization", &basic_auth(ALICE.0, ALICE.1))],
        None,
    );
    assert_eq!(t.status, 200, "{}", t.text());
    let bearer = format!("Bearer {}", t.json()["token"].as_str().expect("token"));
    let get = |acr: &Acr| {
        http_request(
            "GET",
            &format!("{}/v2/library/test/manifests/1", acr.url()),
            &[("Accept", ACCEPT_MANIFESTS), ("Authorization", &bearer)],
            None,
        )
    };
    assert_eq!(get(&one).status, 200, "the issuer itself");
    let r = get(&two);
    assert_eq!(
        r.status,
        200,
        "the replica sharing the secret: {}",
        r.text()
    );
    assert_eq!(digest_of(&r.body), fixtures().test.digest);
    let r = get(&other);
    assert_eq!(r.status, 401, "a replica with its own key: {}", r.text());
}

/// `podman login` to acr, then `podman pull` from it: the image podman stores is the
/// upstream's; bob's pull of alice's repository fails; a wrong password fails the login.
#[test]
fn podman_logs_in_and_pulls_through_acr() {
    let reg = auth_upstream();
    let acr = auth_mirror(&reg, &[], &[]);
    let podman = Podman::new(&registries_conf(&acr.host(), &[]));
    let authfile = podman.dir().join("auth.json");
    let authfile = authfile.to_string_lossy().into_owned();
    let image = format!("{}/library/test:1", acr.host());

    let wrong = podman.podman(&[
        "login",
        "--authfile",
        &authfile,
        "--tls-verify=false",
        "-u",
        ALICE.0,
        "-p",
        "wrong",
        &acr.host(),
    ]);
    assert!(
        !wrong.success(),
        "podman logged in with a wrong password: {wrong:?}"
    );

    podman
        .podman(&[
            "login",
            "--authfile",
            &authfile,
            "--tls-verify=false",
            "-u",
            ALICE.0,
            "-p",
            ALICE.1,
            &acr.host(),
        ])
        .ok();
    podman
        .pull_with(&image, &["--authfile", &authfile, "--tls-verify=false"])
        .ok();
    assert_eq!(podman.image_digest(&image), fixtures().test.digest);

    // bob logs in (he is a user) but may not pull alice's repository.
    let bobs = podman.dir().join("bob.json").to_string_lossy().into_owned();
    podman
        .podman(&[
            "login",
            "--authfile",
            &bobs,
            "--tls-verify=false",
            "-u",
            BOB.0,
            "-p",
            BOB.1,
            &acr.host(),
        ])
        .ok();
    let other = format!("{}/library/test:1", acr.host());
    podman.podman(&["rmi", "-f", &other]).ok();
    let denied = podman.pull_with(&other, &["--authfile", &bobs, "--tls-verify=false"]);
    assert!(!denied.success(), "bob pulled library/test: {denied:?}");
    let text = lower(&denied);
    assert!(
        text.contains("denied") || text.contains("403"),
        "{denied:?}"
    );
    assert_upstream_saw_only_acrs_credentials(&reg);
}

/// containerd (`ctr images pull --user`, hosts.toml naming acr as the mirror) pulls through
/// acr with a user of acr: containerd follows the challenge to acr's `/token`. A wrong
/// password and a user outside the rules fail. (The hosts.toml `server`, containerd's
/// fallback, is a dead port: nothing but acr can answer, and the upstream sees no request
/// of containerd's.)
#[test]
fn ctr_pulls_through_acr_as_a_user_of_acr() {
    let reg = auth_upstream();
    let acr = auth_mirror(&reg, &[], &[]);
    let hosts = HostsDir::new();
    hosts.add(&reg.host(), &dead_url(), &[&acr.url()]);
    let ctrd = Containerd::start();
    let image = reg.image("library/test:1");

    let wrong_user = format!("{}:wrong", ALICE.0);
    let wrong = ctrd.ctr_pull_with(&image, Some(hosts.path()), &["--user", &wrong_user]);
    assert!(
        !wrong.success(),
        "ctr pulled with a wrong password: {wrong:?}"
    );
    let bob = format!("{}:{}", BOB.0, BOB.1);
    let denied = ctrd.ctr_pull_with(&image, Some(hosts.path()), &["--user", &bob]);
    assert!(!denied.success(), "ctr pulled as bob: {denied:?}");
    assert!(ctrd.images().is_empty(), "{:?}", ctrd.images());

    let alice = format!("{}:{}", ALICE.0, ALICE.1);
    let out = ctrd
        .ctr_pull_with(&image, Some(hosts.path()), &["--user", &alice])
        .ok();
    assert!(out.stdout.contains("done"), "{out:?}");
    let digests = ctrd.image_digests();
    assert!(
        digests
            .iter()
            .any(|(name, d)| *name == image && *d == fixtures().test.digest),
        "{digests:?}"
    );
    // Through acr: it served the manifest and the layer, containerd fetched a token from
    // acr, and no request of containerd reached the upstream with a 200.
    let log = acr.log();
    let served = |part: &str| {
        log.lines()
            .any(|l| l.contains(" method=") && l.contains(part) && l.contains("status=200"))
    };
    assert!(
        served("/manifests/1"),
        "acr did not serve the manifest:\n{log}"
    );
    let layer = &fixtures().test.layers()[0].0;
    assert!(
        served(layer.as_str()),
        "acr did not serve the layer:\n{log}"
    );
    assert!(served("path=/token"), "no token from acr's /token:\n{log}");
    let direct: Vec<_> = reg
        .access_log()
        .into_iter()
        .filter(|e| e.user_agent.contains("containerd"))
        .collect();
    assert!(
        direct.is_empty(),
        "containerd reached the upstream directly: {direct:?}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("status=401") && l.contains("/manifests/1")),
        "acr never challenged containerd:\n{log}"
    );
    assert_upstream_saw_only_acrs_credentials(&reg);
}

/// `.forward-auth` routes (instead of `.login`/`.authn`, acr without `: .users`): the
/// client's own credentials go to the upstream. A raw request without them gets the
/// upstream's challenge (exactly, on the wire) and with them the manifest; containerd
/// (`ctr --user`) pulls; skopeo without credentials, or with wrong ones, fails with 401, and
/// with `--creds` / `--src-creds` pulls.
#[test]
fn forward_auth_sends_the_clients_credentials_upstream() {
    const FW_USER: &str = "fwd-user";
    const FW_PASS: &str = "fwd-pa55";
    let reg = Registry::start(RegistryAuth::htpasswd(FW_USER, FW_PASS));
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let routes = ": .manifests head, get\n:   .forward-auth\n:   .resolve\n\
                  : .blobs head, get\n:   .forward-auth\n:   .pull\n\
                  : .tags get\n:   .forward-auth\n:   .resolve\n";
    let acr = Acr::launch(
        &pipeline(&reg.url(), &[], &[], routes),
        AcrOptions::default(),
    );
    let url = format!("{}/v2/library/test/manifests/1", acr.url());

    // Raw: the upstream's challenge, then the manifest with the upstream's credentials.
    let (status, head) = curl_head(&["-H", &format!("Accept: {ACCEPT_MANIFESTS}")], &url);
    assert_eq!(status, 401, "{head:?}");
    assert_eq!(
        header_values(&head, "www-authenticate"),
        vec!["Basic realm=\"acr-basic-realm\""],
        "not the upstream's challenge: {head:?}"
    );
    let r = http_request("GET", &url, &[("Accept", ACCEPT_MANIFESTS)], None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAUTHORIZED");
    let r = http_request(
        "GET",
        &url,
        &[
            ("Accept", ACCEPT_MANIFESTS),
            ("Authorization", &basic_auth(FW_USER, FW_PASS)),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(digest_of(&r.body), fixtures().test.digest);
    let r = http_request(
        "GET",
        &url,
        &[
            ("Accept", ACCEPT_MANIFESTS),
            ("Authorization", &basic_auth(FW_USER, "wrong")),
        ],
        None,
    );
    assert_eq!(r.status, 401, "a wrong password: {}", r.text());

    // containerd answers the challenge of any request: it pulls with --user.
    let hosts = HostsDir::new();
    hosts.add(&reg.host(), &dead_url(), &[&acr.url()]);
    let ctrd = Containerd::start();
    let image = reg.image("library/test:1");
    let creds = format!("{FW_USER}:{FW_PASS}");
    let out = ctrd
        .ctr_pull_with(&image, Some(hosts.path()), &["--user", &creds])
        .ok();
    assert!(out.stdout.contains("done"), "{out:?}");

    // skopeo: without credentials, or with wrong ones, 401.
    let src = format!("docker://{}/library/test:1", acr.host());
    let anon = skopeo(&["inspect", "--raw", &src]);
    assert!(!anon.success(), "pulled without credentials: {anon:?}");
    let text = lower(&anon);
    assert!(
        text.contains("401") || text.contains("unauthorized"),
        "{anon:?}"
    );
    let bad = format!("{FW_USER}:wrong");
    let wrong = skopeo(&["inspect", "--raw", "--creds", &bad, &src]);
    assert!(!wrong.success(), "pulled with a wrong password: {wrong:?}");

    // skopeo with the upstream's credentials. containers/image sends credentials only when
    // its `GET /v2/` ping was challenged, so acr's `/v2/` must carry the upstream's challenge.
    let inspect = skopeo(&["inspect", "--raw", "--creds", &creds, &src]);
    let ping = curl_head(&[], &format!("{}/v2/", acr.url()));
    let upstream_ping = curl_head(&[], &format!("{}/v2/", reg.url()));
    assert!(
        inspect.success(),
        "skopeo --creds through .forward-auth: {inspect:?}\n\
         acr's GET /v2/ without credentials answered {ping:?}\n\
         the upstream's GET /v2/ answers {upstream_ping:?}\nacr:\n{}",
        acr.log()
    );
    assert_eq!(digest_of(inspect.stdout.as_bytes()), fixtures().test.digest);
    let out = temp_dir("acr-fwd-out-");
    let dest = format!("dir:{}", out.path().join("d").display());
    let copy = skopeo(&["copy", "--src-creds", &creds, &src, &dest]);
    assert!(copy.success(), "{copy:?}\nacr:\n{}", acr.log());
    let manifest = std::fs::read(out.path().join("d/manifest.json")).expect("manifest.json");
    assert_eq!(digest_of(&manifest), fixtures().test.digest);
}

// ------------------------------------------------------------------------------------------
// TLS

fn tls_settings(cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!(".tls-cert {}", cert.display()),
        format!(".tls-key {}", key.display()),
    ]
}

fn plain_upstream() -> Registry {
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    reg
}

fn tls_mirror(reg: &Registry, settings: &[String]) -> Acr {
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Acr::launch(
        &pipeline(&reg.url(), &[], &settings, &routes("")),
        AcrOptions::default(),
    )
}

/// `curl -w '%{http_code} %{http_version}'` of `url` with `args`: (exit success, output).
fn curl_status(args: &[&str], url: &str) -> (bool, String, CmdOutput) {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code} %{http_version}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all);
    (out.success(), out.stdout.trim().to_string(), out)
}

/// https with a certificate from a CA the clients trust: skopeo (`--cert-dir`,
/// `--src-cert-dir`) inspects and copies, curl speaks HTTP/2 and HTTP/1.1; skopeo without the
/// CA refuses the certificate; plain http to the port gets no answer.
#[test]
fn https_serves_clients_that_trust_the_ca_and_refuses_plain_http() {
    let reg = plain_upstream();
    let pki = Pki::new("acr test CA");
    let (cert, key) = pki.server("server", "acr-tls-one");
    let acr = tls_mirror(&reg, &tls_settings(&cert, &key));
    let ca = pki.ca_cert();
    let ca = ca.to_string_lossy();
    let trust = pki.cert_dir();
    let trust = trust.to_string_lossy();

    let (ok, status, out) = curl_status(&["--cacert", &ca], &format!("{}/v2/", acr.https_url()));
    assert!(ok, "{out:?}");
    assert_eq!(status, "200 2", "HTTP/2 over ALPN");
    let (ok, status, out) = curl_status(
        &["--cacert", &ca, "--http1.1"],
        &format!("{}/v2/", acr.https_url()),
    );
    assert!(ok, "{out:?}");
    assert_eq!(status, "200 1.1");
    assert!(
        served_subject(acr.port()).contains("acr-tls-one"),
        "{}",
        served_subject(acr.port())
    );

    let scratch = temp_dir("acr-tls-");
    let auth = scratch.path().join("auth.json");
    let src = format!("docker://{}/library/test:1", acr.host());
    let raw = skopeo_as(
        &auth,
        false,
        &["inspect", "--raw", "--cert-dir", &trust, &src],
    )
    .ok()
    .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);
    let out = scratch.path().join("copied");
    let dest = format!("dir:{}", out.display());
    skopeo_as(
        &auth,
        false,
        &["copy", "--src-cert-dir", &trust, &src, &dest],
    )
    .ok();
    let manifest = std::fs::read(out.join("manifest.json")).expect("manifest.json");
    assert_eq!(digest_of(&manifest), fixtures().test.digest);
    for (digest, _) in fixtures().test.layers() {
        let blob = std::fs::read(out.join(digest.trim_start_matches("sha256:"))).expect("layer");
        assert_eq!(digest_of(&blob), digest);
    }

    // Not trusting the CA: refused.
    let untrusted = skopeo_as(&auth, false, &["inspect", "--raw", &src]);
    assert!(!untrusted.success(), "{untrusted:?}");
    let text = lower(&untrusted);
    assert!(
        text.contains("x509") || text.contains("certificate"),
        "{untrusted:?}"
    );
    // Plain http to the https port: no HTTP answer.
    let (ok, status, out) = curl_status(&["-m", "30"], &format!("{}/v2/", acr.url()));
    assert!(
        !ok && !status.starts_with("200"),
        "plain http to the https port answered: {out:?}"
    );
    assert!(
        try_http_request("GET", &format!("{}/v2/", acr.url()), &[], None)
            .map(|r| r.status != 200)
            .unwrap_or(true),
        "plain http got a 200"
    );
    assert!(acr.is_running(), "{}", acr.log());
}

/// A renewed certificate (new files renamed over the old ones, another subject) is served
/// within about two seconds, by the same process; a broken pair written over it is refused
/// and the current certificate kept.
#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let reg = plain_upstream();
    let pki = Pki::new("acr test CA");
    let (cert, key) = pki.server("server", "acr-before-renewal");
    let acr = tls_mirror(&reg, &tls_settings(&cert, &key));
    let pid = acr.pid();
    let subject = served_subject(acr.port());
    assert!(subject.contains("acr-before-renewal"), "{subject}");

    // The new pair, written under other names, then renamed over the served files.
    let (new_cert, new_key) = pki.server("renewed", "acr-after-renewal");
    std::fs::rename(&new_cert, &cert).expect("rename the certificate");
    std::fs::rename(&new_key, &key).expect("rename the key");
    let swapped = Instant::now();
    // When the probe that first saw the new certificate started (a probe itself takes time
    // on a loaded machine).
    let seen = poll(Duration::from_secs(10), || {
        let asked = swapped.elapsed();
        served_subject(acr.port())
            .contains("acr-after-renewal")
            .then_some(asked)
    });
    assert!(
        seen.is_some(),
        "still serving {} 10 s after the renewal\n{}",
        served_subject(acr.port()),
        acr.log()
    );
    let took = seen.unwrap_or_default();
    assert!(
        took <= Duration::from_secs(3),
        "the renewed certificate was first served {took:?} after the renewal"
    );
    assert_eq!(acr.pid(), pid);
    assert!(acr.is_running());
    assert!(
        acr.log().contains("serving the renewed certificate"),
        "{}",
        acr.log()
    );
    // Clients that trust the CA still pull.
    let scratch = temp_dir("acr-tls-");
    let trust = pki.cert_dir();
    let src = format!("docker://{}/library/test:1", acr.host());
    let raw = skopeo_as(
        &scratch.path().join("a.json"),
        false,
        &[
            "inspect",
            "--raw",
            "--cert-dir",
            &trust.to_string_lossy(),
            &src,
        ],
    )
    .ok()
    .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);

    // A broken certificate file: the current pair stays.
    let junk = pki.dir().join("junk.crt");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .expect("write junk");
    std::fs::rename(&junk, &cert).expect("rename junk over the certificate");
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        let s = served_subject(acr.port());
        assert!(
            s.contains("acr-after-renewal"),
            "after a broken renewal: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        acr.log().contains("keeping the current certificate"),
        "{}",
        acr.log()
    );
}

/// `: .tls-client-ca`: a client without a certificate, or with one from another CA, is
/// refused; curl with a certificate the CA signed gets its answer, and so does skopeo with
/// the certificate in its `--cert-dir`.
#[test]
fn client_certificates_are_required_with_a_client_ca() {
    let reg = plain_upstream();
    let pki = Pki::new("acr test CA");
    let (cert, key) = pki.server("server", "acr-mtls");
    let clients = Pki::new("acr client CA");
    let (client_cert, client_key) = clients.client("client", "a-trusted-node");
    let (rogue_cert, rogue_key) = pki.client("rogue", "a-node-of-another-ca");
    let mut settings = tls_settings(&cert, &key);
    settings.push(format!(".tls-client-ca {}", clients.ca_cert().display()));
    let acr = tls_mirror(&reg, &settings);
    let ca = pki.ca_cert().to_string_lossy().into_owned();
    let url = format!("{}/v2/", acr.https_url());

    let (ok, status, out) = curl_status(&["--cacert", &ca, "-m", "30"], &url);
    assert!(
        !ok && !status.starts_with("200"),
        "answered without a client certificate: {out:?}"
    );
    let (ok, status, out) = curl_status(
        &[
            "--cacert",
            &ca,
            "-m",
            "30",
            "--cert",
            &rogue_cert.to_string_lossy(),
            "--key",
            &rogue_key.to_string_lossy(),
        ],
        &url,
    );
    assert!(
        !ok && !status.starts_with("200"),
        "answered a certificate of another CA: {out:?}"
    );
    let (ok, status, out) = curl_status(
        &[
            "--cacert",
            &ca,
            "--cert",
            &client_cert.to_string_lossy(),
            "--key",
            &client_key.to_string_lossy(),
        ],
        &url,
    );
    assert!(ok, "{out:?}");
    assert!(status.starts_with("200"), "{out:?}");

    // skopeo: ca.crt plus client.cert / client.key in --cert-dir.
    let trust = pki.cert_dir();
    std::fs::copy(&client_cert, trust.join("client.cert")).expect("copy client cert");
    std::fs::copy(&client_key, trust.join("client.key")).expect("copy client key");
    let scratch = temp_dir("acr-mtls-");
    let src = format!("docker://{}/library/test:1", acr.host());
    let raw = skopeo_as(
        &scratch.path().join("a.json"),
        false,
        &[
            "inspect",
            "--raw",
            "--cert-dir",
            &trust.to_string_lossy(),
            &src,
        ],
    )
    .ok()
    .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);
}

/// Client auth over https: the challenge's realm is `https://.../token`, and skopeo, trusting
/// the CA, logs in and pulls with acr's token.
#[test]
fn client_auth_over_https_names_an_https_realm() {
    let reg = auth_upstream();
    let pki = Pki::new("acr test CA");
    let (cert, key) = pki.server("server", "acr-auth-tls");
    let tls = tls_settings(&cert, &key);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let acr = auth_mirror(&reg, &tls, &[]);
    let ca = pki.ca_cert().to_string_lossy().into_owned();

    let out = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-H",
        &format!("Accept: {ACCEPT_MANIFESTS}"),
        &format!("{}/v2/library/test/manifests/1", acr.https_url()),
    ])
    .ok();
    let head = out.stdout.to_ascii_lowercase();
    assert!(
        head.lines().next().is_some_and(|l| l.contains(" 401")),
        "{out:?}"
    );
    let challenge = format!(
        "www-authenticate: bearer realm=\"https://{}/token\",service=\"acr\",scope=\"repository:library/test:pull\"",
        acr.host()
    );
    assert!(head.contains(&challenge), "no {challenge} in {out:?}");

    let scratch = temp_dir("acr-auth-tls-");
    let auth = scratch.path().join("alice.json");
    let trust = pki.cert_dir();
    let trust = trust.to_string_lossy();
    skopeo_as(
        &auth,
        false,
        &[
            "login",
            "--cert-dir",
            &trust,
            "-u",
            ALICE.0,
            "-p",
            ALICE.1,
            &acr.host(),
        ],
    )
    .ok();
    let src = format!("docker://{}/library/test:1", acr.host());
    let raw = skopeo_as(
        &auth,
        false,
        &["inspect", "--raw", "--cert-dir", &trust, &src],
    )
    .ok()
    .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);
    assert!(
        acr.log()
            .lines()
            .any(|l| l.contains("path=/token") && l.contains("status=200")),
        "skopeo did not use acr's /token:\n{}",
        acr.log()
    );
    assert_upstream_saw_only_acrs_credentials(&reg);
}

// ------------------------------------------------------------------------------------------
// observability

const MANIFESTS_GET_200: &str =
    "acr_requests_total{route=\"manifests\",method=\"GET\",status=\"200\"}";
const BLOBS_GET_200: &str = "acr_requests_total{route=\"blobs\",method=\"GET\",status=\"200\"}";
const BLOBS_COUNT: &str = "acr_request_duration_seconds_count{route=\"blobs\"}";
const MANIFESTS_COUNT: &str = "acr_request_duration_seconds_count{route=\"manifests\"}";
const HITS: &str = "acr_cache_hits_total";
const MISSES: &str = "acr_cache_misses_total";

/// The digests of the config and layers of `test:1`.
fn test_blobs() -> Vec<String> {
    let m = fixtures().test.manifest();
    let mut blobs = vec![m["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string()];
    blobs.extend(fixtures().test.layers().into_iter().map(|(d, _)| d));
    blobs
}

/// One pull of `library/test:1` by raw requests: `manifests` GETs of the tag, then each blob.
fn raw_pull(acr: &Acr, manifests: usize) -> usize {
    for _ in 0..manifests {
        let r = http_request(
            "GET",
            &format!("{}/v2/library/test/manifests/1", acr.url()),
            &[("Accept", ACCEPT_MANIFESTS)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(digest_of(&r.body), fixtures().test.digest);
    }
    let blobs = test_blobs();
    for digest in &blobs {
        let r = http_request(
            "GET",
            &format!("{}/v2/library/test/blobs/{digest}", acr.url()),
            &[],
            None,
        );
        assert_eq!(r.status, 200);
        assert_eq!(&digest_of(&r.body), digest);
    }
    blobs.len()
}

/// Scrapes until `key` has grown by `by` over `before` (a request is counted when its last
/// byte has left, which may be just after the client has it), then returns that scrape.
fn scrape_until(acr: &Acr, before: &Metrics, waits: &[(&str, f64)]) -> Metrics {
    let mut last = scrape(&acr.url());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && !waits
            .iter()
            .all(|(k, by)| last.get(k) - before.get(k) >= *by)
    {
        std::thread::sleep(Duration::from_millis(200));
        last = scrape(&acr.url());
    }
    last
}

/// Every histogram of `/metrics` has cumulative buckets (non-decreasing with `le`), ends with
/// `+Inf`, and its `+Inf` bucket is its `_count`.
fn assert_histograms_cumulative(m: &Metrics) {
    let routes = m.label_values("acr_request_duration_seconds_bucket", "route");
    assert!(
        routes.iter().any(|r| r == "manifests") && routes.iter().any(|r| r == "blobs"),
        "{routes:?}"
    );
    for route in &routes {
        let buckets = m.buckets("acr_request_duration_seconds", route);
        assert!(buckets.len() >= 2, "{route}: {buckets:?}");
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{route}: le not increasing: {buckets:?}");
            assert!(w[0].1 <= w[1].1, "{route}: not cumulative: {buckets:?}");
        }
        let (le, inf) = *buckets.last().expect("buckets");
        assert!(le.is_infinite(), "{route}: the last bucket is not +Inf");
        let count = m.get(&format!(
            "acr_request_duration_seconds_count{{route=\"{route}\"}}"
        ));
        assert_eq!(inf, count, "{route}: +Inf bucket != _count");
        let sum = m.get(&format!(
            "acr_request_duration_seconds_sum{{route=\"{route}\"}}"
        ));
        assert!(sum >= 0.0, "{route}: _sum {sum}");
    }
}

/// `/metrics` after pulls: the request counter of manifests and the latency count of blobs
/// grow by exactly the requests made, a second pull is served from the store (hits grow,
/// misses do not), histograms are cumulative. `/healthz` is 200; `/readyz` is 200 while the
/// upstream answers and 503 once it is gone (after the 5 s readiness cache).
#[test]
fn metrics_health_and_readiness() {
    let reg = plain_upstream();
    let acr = Acr::launch(
        &pipeline(&reg.url(), &[], &[".cache store"], &routes("")),
        AcrOptions::default(),
    );

    let m0 = scrape(&acr.url());
    assert!(m0.samples.contains_key("acr_uptime_seconds"), "{m0:?}");
    // First pull: 3 manifest GETs and every blob.
    let blobs = raw_pull(&acr, 3);
    let m1 = scrape_until(
        &acr,
        &m0,
        &[(MANIFESTS_GET_200, 3.0), (BLOBS_COUNT, blobs as f64)],
    );
    assert_eq!(m1.get(MANIFESTS_GET_200) - m0.get(MANIFESTS_GET_200), 3.0);
    assert_eq!(m1.get(MANIFESTS_COUNT) - m0.get(MANIFESTS_COUNT), 3.0);
    assert_eq!(m1.get(BLOBS_COUNT) - m0.get(BLOBS_COUNT), blobs as f64);
    assert_eq!(m1.get(BLOBS_GET_200) - m0.get(BLOBS_GET_200), blobs as f64);
    assert!(m1.get(MISSES) > m0.get(MISSES), "the first pull missed");
    assert_histograms_cumulative(&m1);

    // Second pull: from the store.
    let blobs = raw_pull(&acr, 1);
    let m2 = scrape_until(
        &acr,
        &m1,
        &[(MANIFESTS_GET_200, 1.0), (BLOBS_COUNT, blobs as f64)],
    );
    assert_eq!(m2.get(MANIFESTS_GET_200) - m1.get(MANIFESTS_GET_200), 1.0);
    assert_eq!(m2.get(BLOBS_COUNT) - m1.get(BLOBS_COUNT), blobs as f64);
    assert!(
        m2.get(HITS) - m1.get(HITS) >= blobs as f64,
        "hits {} -> {} on the second pull of {blobs} blobs",
        m1.get(HITS),
        m2.get(HITS)
    );
    assert_eq!(
        m2.get(MISSES),
        m1.get(MISSES),
        "the second pull asked the upstream"
    );
    assert_histograms_cumulative(&m2);
    // A pull by skopeo is served from the store too.
    let out = temp_dir("acr-metrics-");
    let dest = format!("dir:{}", out.path().join("d").display());
    skopeo(&[
        "copy",
        &format!("docker://{}/library/test:1", acr.host()),
        &dest,
    ])
    .ok();
    let m3 = scrape(&acr.url());
    assert!(m3.get(HITS) > m2.get(HITS), "skopeo's pull hit nothing");
    assert_histograms_cumulative(&m3);

    // Health and readiness.
    let h = http_request("GET", &format!("{}/healthz", acr.url()), &[], None);
    assert_eq!(h.status, 200);
    let ready = http_request("GET", &format!("{}/readyz", acr.url()), &[], None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(ready.text().contains(&reg.url()), "{}", ready.text());
    drop(reg);
    std::thread::sleep(Duration::from_secs(7));
    let r = http_request("GET", &format!("{}/readyz", acr.url()), &[], None);
    assert_eq!(
        r.status,
        503,
        "/readyz with the upstream stopped: {}",
        r.text()
    );
    assert!(r.text().contains("not ready"), "{}", r.text());
    let h = http_request("GET", &format!("{}/healthz", acr.url()), &[], None);
    assert_eq!(h.status, 200, "/healthz does not depend on the upstream");
    let m4 = scrape(&acr.url());
    assert!(
        m4.get("acr_requests_total{route=\"readyz\",method=\"GET\",status=\"503\"}") >= 1.0,
        "{:?}",
        m4.samples
    );
}

/// The text between `start` and the first `end` after it, in `html`.
fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let i = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in the page:\n{html}"));
    let rest = &html[i..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// `/status` in headless Chromium: the DOM names acr's address, the upstream, the hit ratio
/// and the requests of the pull just made; the screenshot is a real 1200x900 picture.
#[test]
fn status_page_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        panic!(
            "no headless Chromium: install Debian's chromium-headless-shell (scripts/deps.sh does)"
        );
    };
    let reg = plain_upstream();
    let acr = Acr::launch(
        &pipeline(&reg.url(), &[], &[".cache store"], &routes("")),
        AcrOptions::default(),
    );
    let out = temp_dir("acr-status-");
    let dest = format!("dir:{}", out.path().join("d").display());
    let src = format!("docker://{}/library/test:1", acr.host());
    skopeo(&["copy", &src, &dest]).ok();
    skopeo(&[
        "copy",
        &src,
        &format!("dir:{}", out.path().join("e").display()),
    ])
    .ok();
    let url = format!("{}/status", acr.url());

    let dom = run_chromium(&browser, &["--dump-dom"], &url).ok().stdout;
    assert!(
        dom.contains(&format!("acr on {}", acr.host())),
        "no `acr on {}` in:\n{dom}",
        acr.host()
    );
    let upstreams = section(&dom, "id=\"upstreams\"", "</ul>");
    assert!(upstreams.contains(&reg.url()), "{upstreams}");
    let ratio = section(&dom, "id=\"hit-ratio\"", "</dd>");
    assert!(ratio.contains("hits") && ratio.contains('%'), "{ratio}");
    let recent = section(&dom, "id=\"recent\"", "</table>");
    assert!(
        recent.contains("/v2/library/test/manifests/1"),
        "the manifest pull is not listed:\n{recent}"
    );
    for digest in test_blobs() {
        assert!(
            recent.contains(&format!("/v2/library/test/blobs/{digest}")),
            "the blob {digest} is not listed:\n{recent}"
        );
    }
    assert!(
        recent.matches("<tr>").count() > test_blobs().len() + 1, // the head, the manifest, each blob
        "{recent}"
    );

    let png = out.path().join("status.png");
    let shot = run_chromium(
        &browser,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,900",
        ],
        &url,
    );
    assert!(shot.success() && png.exists(), "{shot:?}");
    // For a person to look at: ACR_TEST_ARTIFACTS=DIR keeps the picture.
    if let Some(dir) = std::env::var_os("ACR_TEST_ARTIFACTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&png, Path::new(&dir).join("status.png"));
    }
    let size = file_len(&png);
    assert!(size > 10 * 1024, "the screenshot is only {size} bytes");
    let facts = png_facts(&png);
    assert_eq!((facts.width, facts.height), (1200, 900), "{facts:?}");
    assert!(
        facts.distinct_colours > 16,
        "the screenshot is (nearly) one colour: {facts:?}"
    );
    assert!(distinct_bytes(&png) > 200, "{facts:?}");
}

// ------------------------------------------------------------------------------------------
// graceful shutdown

const BIG_MIB: u32 = 64;

/// `curl --limit-rate RATE -o FILE -w '%{http_code} %{size_download}'` in the background.
fn slow_client(url: &str, rate: &str, file: &Path, log: &Path) -> Proc {
    require_tools(&["curl"]);
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--limit-rate", rate, "-o"])
        .arg(file)
        .args(["-w", "%{http_code} %{size_download}\n", url]);
    Proc::spawn("curl", cmd, log)
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash");
    format!("sha256:{}", hex(&h.finalize()))
}

/// Whether a new TCP connection to `port` is refused.
fn refused(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Waits (up to `timeout`) for a background client to end; its exit status.
fn wait_client(client: &mut Proc, timeout: Duration) -> std::process::ExitStatus {
    assert!(
        wait_until(timeout, || !client.is_running()),
        "the client still runs after {timeout:?}: {}",
        client.log()
    );
    client.stop().expect("exit status")
}

/// SIGTERM while a client slowly reads a 64 MiB blob: acr refuses new connections at once,
/// the client gets the whole blob (200, size and sha256), and acr then exits 0 saying every
/// transfer finished.
#[test]
fn sigterm_lets_a_transfer_in_progress_finish() {
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, BIG_MIB);
    let mut acr = Acr::launch(&pull_through(&reg.url()), AcrOptions::default());
    let scratch = temp_dir("acr-shutdown-");
    let file = scratch.path().join("blob");
    let url = format!("{}/v2/library/big/blobs/{}", acr.url(), big.layer_digest);
    let mut client = slow_client(&url, "8M", &file, &scratch.path().join("curl.log"));
    assert!(
        wait_until(Duration::from_secs(60), || file_len(&file) > 0),
        "the transfer did not start: {}\n{}",
        client.log(),
        acr.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    acr.signal(libc::SIGTERM);
    let at_signal = file_len(&file);
    assert!(
        at_signal < big.layer_size,
        "the blob was already complete at the signal ({at_signal} bytes): slow the client"
    );
    assert!(
        poll(Duration::from_secs(5), || refused(acr.port()).then_some(())).is_some(),
        "acr still accepts connections after SIGTERM\n{}",
        acr.log()
    );
    assert!(
        try_http_request("GET", &format!("{}/v2/", acr.url()), &[], None).is_err(),
        "a new request after SIGTERM was answered"
    );

    let status = wait_client(&mut client, Duration::from_secs(180));
    let said = client.log();
    assert!(status.success(), "the client failed: {status:?} {said}");
    assert_eq!(
        said.trim(),
        format!("200 {}", big.layer_size),
        "curl's status and size"
    );
    assert_eq!(file_len(&file), big.layer_size);
    assert_eq!(sha256_file(&file), big.layer_digest);

    let exit = acr
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("acr did not exit after the transfer:\n{}", acr.log()));
    let log = acr.log();
    assert!(exit.success(), "acr exited with {exit:?}:\n{log}");
    assert!(log.contains("every transfer finished"), "{log}");
}

/// With `--shutdown-grace 1`, a client too slow to finish in the grace: acr exits about a
/// second after SIGTERM, and the client's transfer ends in an error (curl's exit code 18,
/// "transfer closed with N bytes remaining"), never a complete-looking success.
#[test]
fn sigterm_past_the_grace_breaks_slow_transfers_with_an_error() {
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, BIG_MIB);
    let mut acr = Acr::launch(
        &pull_through(&reg.url()),
        AcrOptions {
            args: vec!["--shutdown-grace".into(), "1".into()],
            ..AcrOptions::default()
        },
    );
    let scratch = temp_dir("acr-shutdown-");
    let file = scratch.path().join("blob");
    let url = format!("{}/v2/library/big/blobs/{}", acr.url(), big.layer_digest);
    let mut client = slow_client(&url, "2M", &file, &scratch.path().join("curl.log"));
    assert!(
        wait_until(Duration::from_secs(60), || file_len(&file) > 0),
        "the transfer did not start: {}\n{}",
        client.log(),
        acr.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    acr.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let exit = acr
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("acr did not exit within 30 s:\n{}", acr.log()));
    let took = signalled.elapsed();
    let log = acr.log();
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(6),
        "acr exited {took:?} after SIGTERM with a 1 s grace:\n{log}"
    );
    assert!(log.contains("transfers still open"), "{log}");
    assert!(exit.code().is_some(), "acr died of a signal: {exit:?}");

    let status = wait_client(&mut client, Duration::from_secs(60));
    let said = client.log();
    let got = file_len(&file);
    assert!(
        got < big.layer_size,
        "the client got all {got} bytes though acr left"
    );
    assert!(
        !status.success(),
        "curl exited 0 with {got} of {} bytes: a cut transfer looked complete ({said})",
        big.layer_size
    );
    // 18: "transfer closed with N bytes remaining" (acr closed the connection short of the
    // Content-Length it sent); 56: the connection broke while receiving.
    assert!(
        matches!(status.code(), Some(18 | 56)),
        "curl should report a cut transfer (exit 18 or 56), got {status:?}: {said}"
    );
    assert!(
        said.contains("bytes remaining") || status.code() == Some(56),
        "{said}"
    );
}
