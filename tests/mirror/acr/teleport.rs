//! `.discover` + `.teleport` (overlaybd), referrers through acr, and `/auth` for the snapshotter.

use super::*;

// ------------------------------------------------------------------------------------------
// .discover + .teleport overlaybd

fn streaming_mirror(
    standin: AcrStandinOptions,
    env: Vec<(String, String)>,
) -> (AcrRegistry, Streaming, AcrMirror) {
    let reg = AcrRegistry::start(&standin);
    let s = reg.seed_streaming();
    let m = AcrMirror::start(
        &reg,
        AcrMirrorOptions {
            az: Az::Standin,
            env,
        },
    );
    (reg, s, m)
}

const UPGRADE: (&str, &str) = (STREAMABLE_HEADER, "overlaybd");

#[track_caller]
fn assert_manifest(r: &HttpResponse, want: &str, what: &str, log: &str) {
    assert_eq!(r.status, 200, "{what}: {}\n{log}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(want),
        "{what}: wrong Docker-Content-Digest\n{log}"
    );
    if !r.body.is_empty() {
        assert_eq!(digest_of(&r.body), want, "{what}: body is another manifest");
    }
}

/// By tag with `x-ms-upgrade-if-streamable: overlaybd`: the twin (GET and HEAD, with and
/// without `?ns=`), found through the referrers tag (distribution 2.8 has no referrers API).
#[test]
fn a_tag_with_the_upgrade_header_is_answered_with_its_overlaybd_twin() {
    let (reg, s, m) = streaming_mirror(AcrStandinOptions::default(), vec![]);
    let ns = format!("?ns={}", reg.host());
    for query in ["", ns.as_str()] {
        let r = m.manifest("GET", "library/test", "1", query, &[UPGRADE]);
        assert_manifest(&r, &s.twin, &format!("GET tag{query}"), &m.log());
        assert_eq!(
            r.header("content-type"),
            Some(DOCKER_MANIFEST),
            "the twin's media type"
        );
        let r = m.manifest("HEAD", "library/test", "1", query, &[UPGRADE]);
        assert_manifest(&r, &s.twin, &format!("HEAD tag{query}"), &m.log());
        // containerd builds its descriptor from HEAD: the twin's size and type
        assert_eq!(
            r.header("content-length"),
            Some(s.twin_size.to_string().as_str()),
            "HEAD tag{query}: not the twin's size"
        );
        assert_eq!(r.header("content-type"), Some(DOCKER_MANIFEST));
    }
    assert!(
        reg.backend.count_requests(
            "GET",
            &format!("/manifests/{}", s.subject.replace(':', "-"))
        ) >= 1,
        "acr did not read the referrers tag:\n{}",
        reg.backend.log()
    );
}

/// A request by digest, or one without the header, gets the manifest it asked for.
#[test]
fn digests_and_requests_without_the_header_are_never_swapped() {
    let (_reg, s, m) = streaming_mirror(AcrStandinOptions::default(), vec![]);
    for method in ["GET", "HEAD"] {
        let r = m.manifest(method, "library/test", &s.subject, "", &[UPGRADE]);
        assert_manifest(&r, &s.subject, &format!("{method} by digest"), &m.log());
        let r = m.manifest(method, "library/test", "1", "", &[]);
        assert_manifest(
            &r,
            &s.subject,
            &format!("{method} without header"),
            &m.log(),
        );
        let r = m.manifest(method, "library/test", &s.twin, "", &[UPGRADE]);
        assert_manifest(&r, &s.twin, &format!("{method} twin by digest"), &m.log());
        // a tag nothing refers to
        let r = m.manifest(method, "library/test", "obd", "", &[UPGRADE]);
        assert_manifest(
            &r,
            &s.twin,
            &format!("{method} tag without referrers"),
            &m.log(),
        );
    }
}

/// `ACR_PLATFORM=linux/arm64`: there is no arm64 twin, so the original.
#[test]
fn a_platform_without_a_twin_keeps_the_original() {
    let (_reg, s, m) = streaming_mirror(
        AcrStandinOptions::default(),
        vec![("ACR_PLATFORM".into(), "linux/arm64".into())],
    );
    let r = m.manifest("GET", "library/test", "1", "", &[UPGRADE]);
    assert_manifest(&r, &s.subject, "GET tag on linux/arm64", &m.log());
}

/// With a registry that has the referrers API (as ACR does), the twin is found through it.
#[test]
fn the_twin_is_found_through_the_referrers_api_when_the_registry_has_one() {
    let (reg, s, m) = streaming_mirror(with_referrers_api(), vec![]);
    let r = m.manifest("GET", "library/test", "1", "", &[UPGRADE]);
    assert_manifest(&r, &s.twin, "GET tag", &m.log());
    assert_referrers_api_asked(&reg);
}

/// containerd sends the header from the hosts.toml acr wrote and ends up with the twin.
#[test]
fn containerd_gets_the_streamable_twin_through_hosts_toml() {
    let (reg, s, m) = streaming_mirror(AcrStandinOptions::default(), vec![]);
    let hosts_toml = m.ws.hosts_dir().join(reg.host()).join("hosts.toml");
    let text = std::fs::read_to_string(&hosts_toml).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; found {:?}",
            hosts_toml.display(),
            m.ws.hosts_tomls()
        )
    });
    assert!(
        text.contains(STREAMABLE_HEADER) && text.contains("overlaybd"),
        "hosts.toml does not send {STREAMABLE_HEADER}:\n{text}"
    );
    let (image, got) = ctr_pull_test_1(&m, &reg);
    assert!(
        got.contains(&(image.clone(), s.twin.clone())),
        "{got:?}, want {image} @ twin {}\n{}",
        s.twin,
        m.log()
    );
}

/// `.teleport manual` with `.from D1` `.to D2` swaps exactly that pair.
#[test]
fn teleport_manual_swaps_exactly_the_given_pair() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let manifests = format!(
        ": .manifests head, get\n:   .login\n:   .authn\n:   .resolve\n\
         :   .teleport manual\n:   .from {}\n:   .to {}\n",
        seeded.test_oci, seeded.test_v2s2
    );
    let blobs = ": .blobs head, get\n:   .login\n:   .authn\n:   .pull\n";
    let acr = Acr::start(&pipeline(
        &reg.url(),
        &[],
        &[],
        &format!("{manifests}{blobs}"),
    ));
    let get = |reference: &str| {
        acr.fetch_manifest("GET", &format!("/v2/library/test/manifests/{reference}"))
    };
    assert_manifest(&get("1"), &seeded.test_v2s2, "test:1 (from)", &acr.log());
    assert_manifest(
        &get("v2s2"),
        &seeded.test_v2s2,
        "test:v2s2 (to)",
        &acr.log(),
    );
    let r = acr.fetch_manifest("GET", "/v2/library/multi/manifests/1");
    assert_manifest(&r, &seeded.multi_oci, "multi:1 (another)", &acr.log());
}

// ------------------------------------------------------------------------------------------
// referrers through acr

fn referrers(m: &AcrMirror, digest: &str, query: &str) -> HttpResponse {
    m.fetch(
        "GET",
        &format!("/v2/library/test/referrers/{digest}{query}"),
        &[],
    )
}

fn referrer_digests(r: &HttpResponse) -> HashSet<String> {
    let index = r.json();
    assert_eq!(index["schemaVersion"], 2, "{index}");
    assert_eq!(index["mediaType"], OCI_INDEX, "{index}");
    index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests array: {index}"))
        .iter()
        .map(|d| {
            assert!(
                d["artifactType"].is_string(),
                "descriptor without artifactType: {d}"
            );
            d["digest"].as_str().expect("digest").to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn check_referrers(m: &AcrMirror, s: &Streaming) {
    let r = referrers(m, &s.subject, "");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with(OCI_INDEX),
        "{:?}",
        r.header("content-type")
    );
    assert_eq!(
        referrer_digests(&r),
        set(&[&s.signature, &s.decoy, &s.link])
    );

    let r = referrers(
        m,
        &s.subject,
        &format!("?artifactType={}", form_encode(LINK_TYPE)),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    assert_eq!(referrer_digests(&r), set(&[&s.decoy, &s.link]));
    assert!(
        r.header("oci-filters-applied")
            .is_some_and(|v| v.contains("artifactType")),
        "no OCI-Filters-Applied: {:?}",
        r.headers
    );

    let r = referrers(
        m,
        &s.subject,
        "?artifactType=application%2Fvnd.example.none",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(referrer_digests(&r).is_empty(), "{}", r.text());

    let r = referrers(m, &s.subject, &format!("?ns={}", m.ws.registry_host));
    assert_eq!(r.status, 200, "with ?ns=: {}\n{}", r.text(), m.log());
    assert_eq!(
        referrer_digests(&r),
        set(&[&s.signature, &s.decoy, &s.link])
    );

    // a manifest nobody refers to: an empty index, not a 404
    let r = referrers(m, &s.twin, "");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    assert!(referrer_digests(&r).is_empty(), "{}", r.text());
}

/// distribution 2.8 has no referrers API: acr builds the answer from the referrers tag.
#[test]
fn referrers_through_acr_come_from_the_fallback_tag() {
    let (_reg, s, m) = streaming_mirror(AcrStandinOptions::default(), vec![]);
    check_referrers(&m, &s);
}

/// A registry with the referrers API: the same answers through acr.
#[test]
fn referrers_through_acr_from_a_registry_with_the_api() {
    let (reg, s, m) = streaming_mirror(with_referrers_api(), vec![]);
    check_referrers(&m, &s);
    assert_referrers_api_asked(&reg);
}

// ------------------------------------------------------------------------------------------
// /auth for the overlaybd snapshotter

/// `GET /auth?remote_url=...` of a registry acr serves: the refresh token in `access_token`,
/// for the ACR token user, keyed by the registry host.
#[test]
fn auth_hands_the_snapshotter_the_refresh_token() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    reg.seed_test();
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    let layer = fixtures().test.layers()[0].0.clone();
    let remote = format!("http://{}/v2/library/test/blobs/{layer}", reg.host());
    let r = fetch(
        "GET",
        &format!("{}/auth?remote_url={}", m.url(), form_encode(&remote)),
        &[],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    let j = r.json();
    assert_eq!(j["success"], true, "{j}");
    assert!(j["traceId"].is_string(), "{j}");
    let entry = &j["data"]["auths"][reg.host()];
    assert_eq!(entry["username"], TOKEN_USER, "{j}");
    let token = m.ws.access_token().expect("access_token");
    assert_eq!(
        entry["password"].as_str(),
        Some(token.as_str()),
        "not the refresh token in access_token"
    );
    let r = pull_token_with_refresh(&reg, &token);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `/auth` for registries acr does not serve: `success: false` with a message, 403 or 404.
#[test]
fn auth_refuses_registries_it_does_not_serve() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    let token = m.ws.access_token().expect("access_token");
    for remote in [
        format!(
            "http://{}/v2/library/test/blobs/sha256:{}",
            dead_url().trim_start_matches("http://"),
            "0".repeat(64)
        ),
        format!(
            "https://evil.example/v2/library/test/blobs/sha256:{}",
            "0".repeat(64)
        ),
    ] {
        let r = fetch(
            "GET",
            &format!("{}/auth?remote_url={}", m.url(), form_encode(&remote)),
            &[],
        );
        assert!(
            r.status == 403 || r.status == 404,
            "{remote}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains(&token), "leaked the token for {remote}");
        let j = r.json();
        assert_eq!(j["success"], false, "{j}");
        let message = [&j["message"], &j["error"], &j["data"]["message"]]
            .into_iter()
            .find_map(|v| v.as_str())
            .unwrap_or_default();
        assert!(!message.is_empty(), "no message: {j}");
    }
}

#[track_caller]
fn assert_referrers_api_asked(reg: &AcrRegistry) {
    assert!(
        reg.standin.stat("referrers_api") >= 1,
        "acr did not ask the referrers API:\n{}",
        reg.standin.log()
    );
}

/// The stand-in's options with the referrers API on (as ACR has it).
fn with_referrers_api() -> AcrStandinOptions {
    AcrStandinOptions {
        referrers_api: true,
        ..AcrStandinOptions::default()
    }
}
