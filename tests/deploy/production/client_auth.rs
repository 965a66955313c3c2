//! Client authentication (htpasswd, acr's tokens, who may pull).

use super::*;

// ------------------------------------------------------------------------------------------
// client authentication

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
        fetch("GET", url, &headers)
    };

    // No credentials: exactly the two challenges on the wire (curl shows the real head).
    let (status, head) = curl_head(
        &["-H", &format!("Accept: {ACCEPT_MANIFESTS}")],
        &manifest_url("library/test"),
    );
    assert_eq!(status, 401, "{head:?}");
    assert_bearer_and_basic_challenges(&acr, &head, ",scope=\"repository:library/test:pull\"");
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
    assert_bearer_and_basic_challenges(&acr, &head, "");

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
    let t = fetch("GET", &token_url, &[("Authorization", &alice)]);
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
        let r = acr.fetch(
            "GET",
            &format!("/v2/library/test/blobs/{digest}"),
            &[("Authorization", &bearer)],
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
    let r = fetch("GET", &token_url, &[]);
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
    // The manifest with the token /token posts for (user, pass): its response.
    let manifest_with_posted_token = |(user, pass): (&str, &str)| {
        let t = post(form(user, pass, "library/test"));
        assert_eq!(t.status, 200, "{user}: {}", t.text());
        let posted = t.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        get(
            &manifest_url("library/test"),
            Some(&format!("Bearer {posted}")),
        )
    };
    let r = manifest_with_posted_token(ALICE);
    assert_eq!(r.status, 200, "{}", r.text());
    let t = post(form(ALICE.0, "wrong", "library/test"));
    assert_eq!(t.status, 401, "{}", t.text());
    // bob gets a token, but it opens nothing of library/*: 403 with it.
    let r = manifest_with_posted_token(BOB);
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
    let t = one.fetch(
        "GET",
        "/token?service=acr&scope=repository:library/test:pull",
        &[("Authorization", &basic_auth(ALICE.0, ALICE.1))],
    );
    assert_eq!(t.status, 200, "{}", t.text());
    let bearer = format!("Bearer {}", t.json()["token"].as_str().expect("token"));
    let get = |acr: &Acr| {
        acr.fetch(
            "GET",
            "/v2/library/test/manifests/1",
            &[("Accept", ACCEPT_MANIFESTS), ("Authorization", &bearer)],
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

    // `podman login` to acr as (user, password), keeping the credentials in `authfile`.
    let login = |authfile: &str, (user, password): (&str, &str)| {
        podman.podman(&[
            "login",
            "--authfile",
            authfile,
            "--tls-verify=false",
            "-u",
            user,
            "-p",
            password,
            &acr.host(),
        ])
    };
    let wrong = login(&authfile, (ALICE.0, "wrong"));
    assert!(
        !wrong.success(),
        "podman logged in with a wrong password: {wrong:?}"
    );

    login(&authfile, ALICE).ok();
    podman
        .pull_with(&image, &["--authfile", &authfile, "--tls-verify=false"])
        .ok();
    assert_eq!(podman.image_digest(&image), fixtures().test.digest);

    // bob logs in (he is a user) but may not pull alice's repository.
    let bobs = podman.dir().join("bob.json").to_string_lossy().into_owned();
    login(&bobs, BOB).ok();
    let other = format!("{}/library/test:1", acr.host());
    podman.podman(&["rmi", "-f", &other]).ok();
    let denied = podman.pull_with(&other, &["--authfile", &bobs, "--tls-verify=false"]);
    assert_failed_saying_one_of(&denied, "bob pulled library/test", &["denied", "403"]);
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
    ctrd.assert_has_image(&image, &fixtures().test.digest);
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
    let reg = forward_auth_upstream();
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
    let r = fetch("GET", &url, &[("Accept", ACCEPT_MANIFESTS)]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAUTHORIZED");
    let r = fetch(
        "GET",
        &url,
        &[
            ("Accept", ACCEPT_MANIFESTS),
            ("Authorization", &basic_auth(FW_USER, FW_PASS)),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(digest_of(&r.body), fixtures().test.digest);
    let r = fetch(
        "GET",
        &url,
        &[
            ("Accept", ACCEPT_MANIFESTS),
            ("Authorization", &basic_auth(FW_USER, "wrong")),
        ],
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
    assert_failed_saying_one_of(
        &anon,
        "pulled without credentials",
        &["401", "unauthorized"],
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

/// Asserts that a response `head` challenges with exactly acr's Bearer realm (its parameters
/// then `scope`, which is empty or starts with a comma) and Basic, in that order.
#[track_caller]
fn assert_bearer_and_basic_challenges(acr: &Acr, head: &[(String, String)], scope: &str) {
    let bearer = format!(
        "Bearer realm=\"http://{}/token\",service=\"acr\"{scope}",
        acr.host()
    );
    assert_eq!(
        header_values(head, "www-authenticate"),
        vec![bearer.as_str(), "Basic realm=\"acr\""],
        "{head:?}"
    );
}
