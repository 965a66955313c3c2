//! Proves that the real-component harness in `tests/harness` works: each test starts real
//! processes (distribution, the token server, skopeo, containerd, podman) and checks what
//! they did.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

const USER: &str = "testuser";
const PASS: &str = "testpass";

fn pid_alive(pid: u32) -> bool {
    // a reaped child has no /proc entry; a zombie would show state Z
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn pure_helpers() {
    check_pure_helpers();
}

#[test]
fn require_tools_fails_loudly_naming_deps_script() {
    require_tools(&["sh"]);
    let err = std::panic::catch_unwind(|| require_tools(&["acr-no-such-tool-xyz"]))
        .expect_err("a missing tool must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("scripts/deps.sh"), "message: {msg}");
    assert!(msg.contains("acr-no-such-tool-xyz"), "message: {msg}");
}

#[test]
fn plain_registry_answers_v2() {
    let reg = Registry::start(RegistryAuth::None);
    let (status, headers, body) = http_get(&format!("{}/v2/", reg.url()), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    assert_eq!(body, b"{}");
    // the access log is on and parsed (start() itself probed /v2/ before)
    assert!(reg.wait_requests("GET", "/v2/", 2, Duration::from_secs(5)) >= 2);
    let e = reg.access_log().pop().expect("an access log line");
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.status),
        ("GET", "/v2/", 200)
    );
    assert!(e.user_agent.starts_with("ureq/"), "{e:?}");
    // unknown manifest: a registry error document
    let r = reg.fetch_manifest("GET", "library/nothing", "1");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[test]
fn processes_die_with_their_owner_even_on_panic() {
    let reg = Registry::start(RegistryAuth::None);
    let pid = reg.pid();
    assert!(pid_alive(pid));
    drop(reg);
    assert!(!pid_alive(pid), "registry {pid} survived its Drop");

    let pid = std::panic::catch_unwind(|| {
        let reg = Registry::start(RegistryAuth::None);
        let pid = reg.pid();
        std::panic::panic_any(pid);
    })
    .expect_err("the closure panics")
    .downcast::<u32>()
    .expect("pid payload");
    assert!(!pid_alive(*pid), "registry {pid} survived a panicking test");
}

#[test]
fn htpasswd_registry_requires_credentials() {
    let reg = Registry::start(RegistryAuth::htpasswd(USER, PASS));
    let url = format!("{}/v2/", reg.url());

    let (status, headers, _) = http_get(&url, &[]);
    assert_eq!(status, 401);
    assert_eq!(
        headers.get("www-authenticate"),
        Some("Basic realm=\"acr-basic-realm\"")
    );

    let good = basic_auth(USER, PASS);
    let (status, _, _) = http_get(&url, &[("Authorization", &good)]);
    assert_eq!(status, 200);

    let bad = basic_auth(USER, "wrong");
    let (status, _, _) = http_get(&url, &[("Authorization", &bad)]);
    assert_eq!(status, 401);

    // skopeo: anonymous push is refused, push with credentials works
    let f = fixtures();
    let dest = format!("docker://{}", reg.image("library/test:1"));
    let anon = skopeo(&["copy", "-q", &f.test.oci_ref(), &dest]);
    assert!(!anon.success(), "anonymous push succeeded: {anon:?}");
    push(&reg, &f.test, "library/test:1", &[]);
    let r = reg.fetch_manifest("HEAD", "library/test", "1");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(f.test.digest.as_str())
    );
    assert!(reg.count_requests("PUT", "/v2/library/test/manifests/1") >= 1);
    let log = reg.access_log();
    assert!(
        log.iter().filter(|e| e.status == 401).count() >= 2,
        "{log:#?}"
    );
    assert!(
        log.iter().any(|e| e.status == 201 && e.method == "PUT"),
        "{log:#?}"
    );
}

#[test]
fn token_registry_anonymous_pull_through_skopeo() {
    let reg = Registry::start(RegistryAuth::token(USER, PASS, true));
    let ts = reg.token_server().expect("token server");
    // scripts/deps.sh installs python3-cryptography, so the default signer uses it
    assert!(ts.log().contains("signer=cryptography"), "{}", ts.log());

    // challenge points at our token server
    let (status, headers, _) = http_get(&format!("{}/v2/", reg.url()), &[]);
    assert_eq!(status, 401);
    let challenge = headers.get("www-authenticate").expect("challenge");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("realm=\"{}\"", ts.realm())),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("service=\"{TOKEN_SERVICE}\"")),
        "{challenge}"
    );

    // pushing needs the user (seed uses the registry's creds)
    let seeded = seed(&reg);
    let before = ts.token_requests().len();
    let issued_before = ts.stats()["issued_anonymous"].as_u64().unwrap_or(0);

    // anonymous pull: skopeo without credentials
    assert_eq!(
        raw_manifest_digest(&reg.image("library/test:1")),
        seeded.test_oci
    );
    skopeo_copy_to_a_layout(&reg.image("library/multi:1"), &["--all"]);

    let lines = ts.token_requests();
    assert!(
        lines.len() > before,
        "no token round trip logged:\n{}",
        ts.log()
    );
    assert!(
        lines[before..].iter().any(|l| l.contains("status=200")
            && l.contains("grant=anonymous")
            && l.contains("repository:library/test:pull")),
        "{lines:#?}"
    );
    let stats = ts.stats();
    assert!(
        stats["issued_anonymous"].as_u64().unwrap() > issued_before,
        "{stats}"
    );
    assert!(
        stats["issued_basic"].as_u64().unwrap() >= 1,
        "push used no credentials: {stats}"
    );

    // anonymous push is denied
    let f = fixtures();
    let anon = skopeo(&[
        "copy",
        "-q",
        &f.test.oci_ref(),
        &format!("docker://{}", reg.image("library/anon:1")),
    ]);
    assert!(!anon.success(), "anonymous push succeeded: {anon:?}");

    // a token for another repository does not open this one
    let wrong = ts.token("repository:library/other:pull", None);
    let r = reg.fetch(
        "GET",
        "/v2/library/test/manifests/1",
        &[
            ("Authorization", &format!("Bearer {wrong}")),
            ("Accept", OCI_MANIFEST),
        ],
    );
    assert_eq!(r.status, 401);
}

#[test]
fn tokenserver_oauth_password_and_refresh_grants() {
    // the openssl-CLI signer (the fallback without python3-cryptography) must also be accepted
    let ts = std::sync::Arc::new(TokenServer::start(TokenServerOptions {
        anonymous_pull: false,
        expires_in: 60,
        signer: "openssl".into(),
        ..TokenServerOptions::default()
    }));
    assert!(ts.log().contains("signer=openssl"), "{}", ts.log());
    let reg = Registry::start(RegistryAuth::SharedToken {
        server: ts.clone(),
        creds: Some((USER.into(), PASS.into())),
    });
    push(&reg, &fixtures().test, "library/test:1", &[]);

    let form = format!(
        "grant_type=password&username={USER}&password={PASS}&service={TOKEN_SERVICE}\
         &scope=repository:library/test:pull&access_type=offline&client_id=acr-test"
    );
    let r = http_request(
        "POST",
        &ts.realm(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["expires_in"], 60);
    let access = j["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let refresh = j["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();

    let get_manifest = |token: &str| {
        reg.fetch(
            "GET",
            "/v2/library/test/manifests/1",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Accept", OCI_MANIFEST),
            ],
        )
    };
    let m = get_manifest(&access);
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(digest_of(&m.body), fixtures().test.digest);

    let form = format!(
        "grant_type=refresh_token&refresh_token={refresh}&service={TOKEN_SERVICE}\
         &scope=repository:library/test:pull"
    );
    let r = http_request("POST", &ts.realm(), &[], Some(form.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let refreshed = r.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(get_manifest(&refreshed).status, 200);

    // without offline access no refresh token; bad password and bad refresh token: 401
    let form =
        format!("grant_type=password&username={USER}&password={PASS}&service={TOKEN_SERVICE}");
    let r = http_request("POST", &ts.realm(), &[], Some(form.as_bytes()));
    assert!(r.json().get("refresh_token").is_none());
    let form = format!("grant_type=password&username={USER}&password=nope&service={TOKEN_SERVICE}");
    assert_eq!(
        http_request("POST", &ts.realm(), &[], Some(form.as_bytes())).status,
        401
    );
    let r = http_request(
        "POST",
        &ts.realm(),
        &[],
        Some(b"grant_type=refresh_token&refresh_token=bogus"),
    );
    assert_eq!(r.status, 401);
    // anonymous pull is off: an anonymous token grants nothing
    let anon = ts.token("repository:library/test:pull", None);
    assert_eq!(get_manifest(&anon).status, 401);

    let stats = ts.stats();
    assert!(stats["issued_password"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["issued_refresh"], 1, "{stats}");
    assert_eq!(stats["refresh_tokens_issued"], 1, "{stats}");
    assert!(stats["denied"].as_u64().unwrap() >= 2, "{stats}");
    assert!(ts.token_requests().iter().any(|l| l
        .starts_with("tokenserver: POST /token status=200")
        && l.contains("grant=refresh")));
}

#[test]
fn seeding_is_deterministic_across_fresh_registries() {
    let a = Registry::start(RegistryAuth::None);
    let b = Registry::start(RegistryAuth::None);
    let sa = seed(&a);
    let sb = seed(&b);
    assert_eq!(sa, sb);

    let f = fixtures();
    assert_eq!(sa.test_oci, f.test.digest);
    assert_eq!(sa.multi_oci, f.multi.digest);
    assert_eq!(
        sa.multi_oci_children,
        vec![
            ("amd64".to_string(), f.multi_amd64.digest.clone()),
            ("arm64".to_string(), f.multi_arm64.digest.clone())
        ]
    );
    assert_ne!(sa.test_v2s2, sa.test_oci);
    assert_ne!(sa.multi_v2s2, sa.multi_oci);
    assert_eq!(sa.multi_v2s2_children.len(), 2);

    // each tag is served with the media type and digest seed() reported
    for (tag_repo, tag, digest, media_type) in [
        ("library/test", "1", &sa.test_oci, OCI_MANIFEST),
        ("library/test", "v2s2", &sa.test_v2s2, DOCKER_MANIFEST),
        ("library/multi", "1", &sa.multi_oci, OCI_INDEX),
        (
            "library/multi",
            "v2s2",
            &sa.multi_v2s2,
            DOCKER_MANIFEST_LIST,
        ),
    ] {
        let r = b.fetch_manifest("GET", tag_repo, tag);
        assert_eq!(r.status, 200, "{tag_repo}:{tag}");
        assert_eq!(
            r.header("content-type"),
            Some(media_type),
            "{tag_repo}:{tag}"
        );
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(&digest_of(&r.body), digest);
    }

    // the layer blob really is the one in the layout
    let (layer, size) = f.test.layers().remove(0);
    let (status, _, body) = http_get(&format!("{}/v2/library/test/blobs/{layer}", a.url()), &[]);
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, size);
    assert_eq!(digest_of(&body), layer);
}

#[test]
fn fixture_builds_are_byte_reproducible() {
    let cached = fixtures();
    let dir = temp_dir("acr-fixtures-rebuild-");
    let again = build_fixtures_in(dir.path());
    assert_eq!(again.test.digest, cached.test.digest);
    assert_eq!(again.multi.digest, cached.multi.digest);
    assert_eq!(again.multi_amd64.digest, cached.multi_amd64.digest);
    assert_eq!(again.multi_arm64.digest, cached.multi_arm64.digest);
    // the index is the hand-written one over both platforms
    let index = cached.multi.manifest();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    assert_eq!(cached.test.media_type, OCI_MANIFEST);
}

#[test]
fn big_image_layer_is_incompressible_and_served() {
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, 2);
    // gzip could not shrink it: the compressed layer is at least the raw 2 MiB
    assert!(
        big.layer_size >= 2 << 20,
        "layer only {} bytes",
        big.layer_size
    );
    assert!(
        big.layer_size < (2 << 20) + (64 << 10),
        "layer {} bytes",
        big.layer_size
    );
    assert_eq!(big_fixture(2).digest, big.manifest_digest);
    let (status, headers, body) = http_get(
        &format!("{}/v2/library/big/blobs/{}", reg.url(), big.layer_digest),
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-length"),
        Some(big.layer_size.to_string().as_str())
    );
    assert_eq!(digest_of(&body), big.layer_digest);
}

#[test]
fn distribution_proxy_pulls_through_from_token_upstream() {
    let upstream = Registry::start(RegistryAuth::token(USER, PASS, false));
    let seeded = seed(&upstream);
    let proxy = Registry::start_proxy(&upstream.url(), Some((USER, PASS)));
    assert_eq!(proxy.remote(), Some(upstream.url().as_str()));
    assert!(proxy.log().contains("Registry configured as a proxy cache"));

    assert_eq!(
        raw_manifest_digest(&proxy.image("library/multi:1")),
        seeded.multi_oci
    );
    skopeo_copy_to_a_layout(&proxy.image("library/test:1"), &[]);

    // the proxy fetched from the upstream with the user's tokens
    assert!(
        upstream.wait_requests("", "/v2/library/test/manifests/", 1, Duration::from_secs(5)) >= 1
    );
    assert!(upstream.count_requests("GET", "/v2/library/test/blobs/sha256:") >= 1);
    assert!(upstream
        .access_log()
        .iter()
        .any(|e| e.user_agent.starts_with("Go-http-client") && e.status == 200));
    let ts = upstream.token_server().unwrap();
    assert!(ts
        .token_requests()
        .iter()
        .any(|l| l.contains("user=testuser")));
}

#[test]
fn containerd_ctr_pulls_from_seeded_registry() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let ctrd = Containerd::start();

    let hosts = HostsDir::new();
    hosts.add(&reg.host(), &reg.url(), &[]);
    let image = reg.image("library/test:1");
    ctrd.ctr_pull(&image, hosts.path()).ok();
    assert!(ctrd.images().contains(&image), "{:?}", ctrd.images());
    ctrd.assert_has_image(&image, &seeded.test_oci);
    assert!(reg
        .access_log()
        .iter()
        .any(|e| e.user_agent.starts_with("containerd/") && e.path.contains("/manifests/1")));

    // mirror for docker.io with a dead server: containerd asks the mirror with ?ns=docker.io
    let hosts = HostsDir::new();
    hosts.add("docker.io", &dead_url(), &[&reg.url()]);
    ctrd.ctr_pull_with(
        "docker.io/library/multi:1",
        Some(hosts.path()),
        &["--platform", "linux/arm64"],
    )
    .ok();
    assert!(
        reg.count_requests("HEAD", "/v2/library/multi/manifests/1?ns=docker.io") >= 1,
        "{:#?}",
        reg.access_log()
    );
    let arm64 = &seeded.multi_oci_children[1].1;
    assert!(reg.count_requests("GET", &format!("/manifests/{arm64}?ns=docker.io")) >= 1);
    assert!(ctrd
        .images()
        .contains(&"docker.io/library/multi:1".to_string()));
}

#[test]
fn podman_pulls_from_seeded_registry() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);

    let podman = Podman::new(&registries_conf(&reg.host(), &[]));
    let image = reg.image("library/test:1");
    podman.pull(&image).ok();
    assert_eq!(podman.image_digest(&image), seeded.test_oci);
    assert!(reg.access_log().iter().any(
        |e| e.user_agent.starts_with("containers/") && e.path == "/v2/library/test/manifests/1"
    ));

    // registries.conf mirror in front of a dead location: the pull goes to the mirror, no ns
    let dead = dead_url();
    let dead_host = dead.trim_start_matches("http://");
    let podman = Podman::new(&registries_conf(dead_host, &[&reg.host()]));
    let before = reg.count_requests("GET", "/v2/library/multi/manifests/v2s2");
    podman.pull(&format!("{dead_host}/library/multi:v2s2")).ok();
    assert!(reg.count_requests("GET", "/v2/library/multi/manifests/v2s2") > before);
    assert_eq!(reg.count_requests("", "ns="), 0);
    assert!(Path::new(podman.dir()).join("root").is_dir());
}

/// The digest of the manifest `skopeo inspect --raw docker://IMAGE` prints.
fn raw_manifest_digest(image: &str) -> String {
    let out = skopeo(&["inspect", "--raw", &format!("docker://{image}")]).ok();
    digest_of(out.stdout.as_bytes())
}

/// `skopeo copy -q docker://IMAGE oci:<a new directory>:t EXTRA...`, which must succeed.
fn skopeo_copy_to_a_layout(image: &str, extra: &[&str]) {
    let dir = temp_dir("acr-pull-");
    let dest = format!("oci:{}:t", dir.path().join("out").display());
    let src = format!("docker://{image}");
    let mut args = vec!["copy", "-q", &src, &dest];
    args.extend_from_slice(extra);
    skopeo(&args).ok();
}
