//! Azure Container Registry support end to end, against stand-ins that speak the real wire
//! protocols (`tests/support/acr_standin.py`: Azure AD, managed identity, ACR's
//! `/oauth2/exchange` and `/oauth2/token`, in front of a CNCF distribution; the stand-in `az`
//! in `tests/support/az`):
//!
//! * `acr --registry example --registry-host http://127.0.0.1:P init`, then `mirror start`
//!   unchanged: log in with `az` (or, without az, from AZURE_* / workload identity /
//!   MSI_ENDPOINT), keep the refresh token in `access_token` (0600), renew it before it
//!   expires, serve skopeo and containerd (through the hosts.toml acr wrote);
//! * `.discover` + `.teleport overlaybd`: a tag asked for with `x-ms-upgrade-if-streamable:
//!   overlaybd` is answered with its streamable twin found through the referrers (API or
//!   the `sha256-<hex>` fallback tag), never a digest, never without the header;
//! * the referrers API through acr, and the overlaybd snapshotter's `/auth` request;
//! * ECR and GAR/GCR hosts through their docker credential helpers.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::acr_standin::*;
use crate::harness::*;

// ------------------------------------------------------------------------------------------
// helpers

/// `skopeo copy --preserve-digests docker://<acr>/<repo_ref> oci:<tmp>:t`; the digest copied.
fn skopeo_pull(acr_host: &str, repo_ref: &str) -> String {
    let out = temp_dir("acr-azure-out-");
    let dest = format!("oci:{}:t", out.path().display());
    let src = format!("docker://{acr_host}/{repo_ref}");
    skopeo(&["copy", "--preserve-digests", &src, &dest]).ok();
    layout_digest(out.path(), "t")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[track_caller]
fn assert_token_file_is_private(ws: &AcrWorkspace) {
    let path = ws.access_token_path();
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
        panic!(
            "no access_token at {}: {e}\nworld dir: {:?}",
            path.display(),
            std::fs::read_dir(ws.world_dir())
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                .unwrap_or_default()
        )
    });
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{} must be 0600",
        path.display()
    );
}

/// The whole output of a command, for messages.
fn all_output(out: &CmdOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

/// True when `word` occurs in `text` delimited by non-alphanumeric characters.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| w == word)
}

// ------------------------------------------------------------------------------------------
// init + mirror start with az

/// `init --registry-host http://127.0.0.1:P` writes `.world/127.0.0.1:P/example/mirror.runmd`
/// and prints its path; `mirror start` logs in with `az acr login --expose-token`, keeps the
/// refresh token in `access_token` (0600) and serves skopeo the upstream's image.
#[test]
fn init_and_mirror_start_log_in_with_az_and_serve_skopeo() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let digest = reg.seed_test();
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());

    let printed = m.init.stdout.trim().to_string();
    let expected = m.ws.world_dir().join("mirror.runmd");
    assert!(
        printed.ends_with(&format!(".world/{}/example/mirror.runmd", reg.host())),
        "init printed {printed:?}"
    );
    assert!(expected.exists(), "{} is missing", expected.display());

    assert_eq!(skopeo_pull(&m.host(), "library/test:1"), digest);

    assert_token_file_is_private(&m.ws);
    let token = m.ws.access_token().expect("access_token");
    let claims = jwt_claims(&token)
        .unwrap_or_else(|| panic!("access_token is not the ACR refresh token (a JWT)"));
    assert!(
        claims["exp"].as_u64().unwrap_or(0) > now_secs(),
        "the refresh token in access_token has expired: {claims}"
    );
    let r = reg
        .standin
        .try_access_token_with_refresh(&token, "repository:library/test:pull");
    assert_eq!(
        r.status,
        200,
        "the stand-in does not take access_token as a refresh token: {}",
        r.text()
    );

    let calls = m.ws.az_calls();
    assert!(
        calls.iter().any(|l| l.contains("acr login")
            && l.contains("--name example")
            && l.contains("--expose-token")
            && l.contains("exchange=200")),
        "az acr login --name example --expose-token was not run: {calls:#?}"
    );
    // acr's pulls were authorised with tokens for the refresh token's user
    let grants = reg.standin.lines_with(&[
        "/oauth2/token ",
        "status=200",
        &format!("user={TOKEN_USER}"),
        "scope=repository:library/test:pull",
    ]);
    assert!(!grants.is_empty(), "{}", reg.standin.log());
    assert_eq!(reg.standin.stat("token_denied"), 0, "{}", reg.standin.log());
    assert!(
        !m.log().contains(&token),
        "the refresh token reached acr's log:\n{}",
        m.log()
    );
}

/// containerd pulls `127.0.0.1:P/library/test:1` through the hosts.toml that `mirror start
/// --hosts-dir DIR` wrote into DIR, and acr served it.
#[test]
fn containerd_pulls_through_the_hosts_toml_acr_wrote() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let digest = reg.seed_test();
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    let hosts_toml = m.ws.hosts_dir().join(reg.host()).join("hosts.toml");
    assert!(
        hosts_toml.exists(),
        "no {}; hosts.toml files under the hosts dir: {:?}\n{}",
        hosts_toml.display(),
        m.ws.hosts_tomls(),
        m.log()
    );
    let text = std::fs::read_to_string(&hosts_toml).expect("hosts.toml");
    assert!(
        text.contains(&format!("[host.\"http://{}\"]", m.host())),
        "hosts.toml does not point at acr:\n{text}"
    );
    assert!(
        text.contains(&format!("server = \"{}\"", reg.url())),
        "hosts.toml's server is not the login server {}:\n{text}",
        reg.url()
    );
    let ctrd = Containerd::start();
    let image = format!("{}/library/test:1", reg.host());
    ctrd.ctr_pull_with(&image, Some(&m.ws.hosts_dir()), &[])
        .ok();
    let got = ctrd.image_digests();
    assert!(
        got.contains(&(image.clone(), digest.clone())),
        "{got:?}, want {image} @ {digest}"
    );
    assert!(
        !m.requests_with(&["/manifests/", "status=200"]).is_empty(),
        "containerd did not pull through acr:\n{}",
        m.log()
    );
}

/// Refresh tokens that live 6 s and access tokens that live 2 s: over ~25 s of pulls, acr
/// renews the refresh token (through az) before it expires, every pull succeeds, and the
/// token service never sees an expired refresh token.
#[test]
fn short_lived_tokens_are_renewed_and_no_pull_fails() {
    let reg = AcrRegistry::start(&AcrStandinOptions {
        refresh_ttl: 6,
        access_ttl: 2,
        send_expires_in: true,
        ..AcrStandinOptions::default()
    });
    reg.seed_test();
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    let layer = fixtures().test.layers()[0].0.clone();
    let start = Instant::now();
    let mut pulls = 0;
    let mut tokens = HashSet::new();
    while start.elapsed() < Duration::from_secs(25) {
        let out = skopeo(&["inspect", &format!("docker://{}/library/test:1", m.host())]);
        assert!(
            out.success(),
            "pull {pulls} after {:.1?} failed: {out:?}\n--- acr ---\n{}\n--- stand-in ---\n{}",
            start.elapsed(),
            m.log(),
            reg.standin.log()
        );
        let r = http_request(
            "GET",
            &format!("{}/v2/library/test/blobs/{layer}", m.url()),
            &[],
            None,
        );
        assert_eq!(
            r.status,
            200,
            "blob after {:.1?}: {}\n{}",
            start.elapsed(),
            r.text(),
            m.log()
        );
        assert_eq!(digest_of(&r.body), layer);
        pulls += 1;
        if let Some(t) = m.ws.access_token() {
            tokens.insert(t);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let renewals: Vec<String> =
        m.ws.az_calls()
            .into_iter()
            .filter(|l| l.contains("exchange=200"))
            .collect();
    assert!(
        renewals.len() >= 3,
        "az acr login ran {} times in 25 s with 6 s refresh tokens: {renewals:#?}\n{}",
        renewals.len(),
        m.log()
    );
    assert!(reg.standin.exchanges() >= 3, "{}", reg.standin.log());
    assert!(
        tokens.len() >= 3,
        "access_token changed only {} times",
        tokens.len()
    );
    let expired = reg.standin.expired_refusals();
    assert!(
        expired.is_empty(),
        "acr used an expired refresh token:\n{}",
        expired.join("\n")
    );
    let stats = reg.standin.stats();
    assert_eq!(stats["token_denied"], 0, "{stats}\n{}", reg.standin.log());
    assert_eq!(stats["exchange_denied"], 0, "{stats}");
    // With expires_in = 2 s acr fetched access tokens again and again, with the refresh
    // token of the moment.
    let fetched = stats["access_issued"].as_u64().unwrap_or(0)
        - stats["access_issued_admin"].as_u64().unwrap_or(0);
    eprintln!(
        "{pulls} pulls, {} az renewals, {} distinct refresh tokens, {fetched} access tokens; stand-in stats: {stats}",
        renewals.len(),
        tokens.len()
    );
    assert!(
        fetched >= 3,
        "only {fetched} access tokens in 25 s with 2 s lifetimes: {stats}"
    );
    assert!(pulls >= 5, "only {pulls} pulls");
}

// ------------------------------------------------------------------------------------------
// without az

#[test]
fn without_az_a_client_secret_from_the_environment_logs_in() {
    pulls_without_az_with(
        |standin| {
            vec![
                ("AZURE_TENANT_ID".into(), TENANT.into()),
                ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
                ("AZURE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
                ("AZURE_AUTHORITY_HOST".into(), standin.url()),
            ]
        },
        "aad_issued_secret",
    );
}

#[test]
fn without_az_workload_identity_logs_in() {
    let files = temp_dir("acr-wi-");
    let token_file = files.path().join("azure-identity-token");
    std::fs::write(&token_file, federated_assertion()).expect("token file");
    let token_file = token_file.display().to_string();
    // AKS's workload identity webhook sets the authority host with a trailing slash.
    pulls_without_az_with(
        |standin| {
            vec![
                ("AZURE_TENANT_ID".into(), TENANT.into()),
                ("AZURE_CLIENT_ID".into(), WI_CLIENT_ID.into()),
                ("AZURE_FEDERATED_TOKEN_FILE".into(), token_file.clone()),
                ("AZURE_AUTHORITY_HOST".into(), format!("{}/", standin.url())),
            ]
        },
        "aad_issued_assertion",
    );
}

#[test]
fn without_az_a_managed_identity_at_msi_endpoint_logs_in() {
    pulls_without_az_with(
        |standin| vec![("MSI_ENDPOINT".into(), standin.msi_endpoint())],
        "aad_issued_msi",
    );
}

/// Without `az`, acr logs in from the environment `env` gives (it names the stand-in);
/// `stat` names the AAD grant it must have used.
fn pulls_without_az_with(env: impl Fn(&AcrStandin) -> Vec<(String, String)>, stat: &str) {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let digest = reg.seed_test();
    let m = AcrMirror::start(
        &reg,
        AcrMirrorOptions {
            az: Az::Absent,
            env: env(&reg.standin),
        },
    );
    assert_eq!(skopeo_pull(&m.host(), "library/test:1"), digest);
    let stats = reg.standin.stats();
    assert!(
        stats[stat].as_u64().unwrap_or(0) >= 1,
        "no AAD token through {stat}: {stats}\n{}",
        reg.standin.log()
    );
    assert!(reg.standin.exchanges() >= 1, "{}", reg.standin.log());
    assert_eq!(stats["aad_denied"], 0, "{}", reg.standin.log());
    assert_eq!(stats["exchange_denied"], 0, "{}", reg.standin.log());
    assert_token_file_is_private(&m.ws);
    assert!(m.ws.az_calls().is_empty());
}

/// Neither az nor any Azure identity: `mirror start` stops with an error that says what to
/// do (`az login`, or the AZURE_* variables).
#[test]
fn without_az_or_azure_environment_mirror_start_says_what_to_do() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let ws = AcrWorkspace::new(
        &reg,
        AcrMirrorOptions {
            az: Az::Absent,
            // The instance metadata service is the last resort: here, a port nothing serves
            // (tests talk to 127.0.0.1 only).
            env: vec![(
                "ACR_IMDS_ENDPOINT".into(),
                format!(
                    "http://127.0.0.1:{}/metadata/identity/oauth2/token",
                    free_port()
                ),
            )],
        },
    );
    ws.init(&format!("127.0.0.1:{}", free_port())).ok();
    let out = ws.start_to_completion(Duration::from_secs(120));
    let text = all_output(&out);
    assert!(!out.success(), "mirror start succeeded: {out:?}");
    assert!(!text.contains("panicked"), "{out:?}");
    assert!(text.contains("az login"), "no `az login` advice: {out:?}");
    assert!(text.contains("AZURE_"), "no AZURE_* advice: {out:?}");
    assert_eq!(reg.standin.exchanges(), 0);
}

/// az that is not logged in: `mirror start` fails with an error that names az.
#[test]
fn a_failing_az_is_an_error_naming_az() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let ws = AcrWorkspace::new(
        &reg,
        AcrMirrorOptions {
            az: Az::Failing,
            env: vec![],
        },
    );
    ws.init(&format!("127.0.0.1:{}", free_port())).ok();
    let out = ws.start_to_completion(Duration::from_secs(120));
    assert!(!out.success(), "mirror start succeeded: {out:?}");
    let text = all_output(&out);
    assert!(!text.contains("panicked"), "{out:?}");
    assert!(has_word(&text, "az"), "the error does not name az: {out:?}");
    let calls = ws.az_calls();
    assert!(
        calls
            .iter()
            .any(|l| l.contains("acr login") && l.contains("exit=1")),
        "az was not run: {calls:#?}"
    );
    assert!(ws.access_token().is_none_or(|t| t.is_empty()));
}

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
    let (reg, s, m) = streaming_mirror(
        AcrStandinOptions {
            referrers_api: true,
            ..AcrStandinOptions::default()
        },
        vec![],
    );
    let r = m.manifest("GET", "library/test", "1", "", &[UPGRADE]);
    assert_manifest(&r, &s.twin, "GET tag", &m.log());
    assert!(
        reg.standin.stat("referrers_api") >= 1,
        "acr did not ask the referrers API:\n{}",
        reg.standin.log()
    );
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
    let ctrd = Containerd::start();
    let image = format!("{}/library/test:1", reg.host());
    ctrd.ctr_pull_with(&image, Some(&m.ws.hosts_dir()), &[])
        .ok();
    let got = ctrd.image_digests();
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
        http_request(
            "GET",
            &format!("{}/v2/library/test/manifests/{reference}", acr.url()),
            &[("Accept", ACCEPT_MANIFESTS)],
            None,
        )
    };
    assert_manifest(&get("1"), &seeded.test_v2s2, "test:1 (from)", &acr.log());
    assert_manifest(
        &get("v2s2"),
        &seeded.test_v2s2,
        "test:v2s2 (to)",
        &acr.log(),
    );
    let r = http_request(
        "GET",
        &format!("{}/v2/library/multi/manifests/1", acr.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    );
    assert_manifest(&r, &seeded.multi_oci, "multi:1 (another)", &acr.log());
}

// ------------------------------------------------------------------------------------------
// referrers through acr

fn referrers(m: &AcrMirror, digest: &str, query: &str) -> HttpResponse {
    http_request(
        "GET",
        &format!("{}/v2/library/test/referrers/{digest}{query}", m.url()),
        &[],
        None,
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
    let (reg, s, m) = streaming_mirror(
        AcrStandinOptions {
            referrers_api: true,
            ..AcrStandinOptions::default()
        },
        vec![],
    );
    check_referrers(&m, &s);
    assert!(
        reg.standin.stat("referrers_api") >= 1,
        "{}",
        reg.standin.log()
    );
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
    let r = http_request(
        "GET",
        &format!("{}/auth?remote_url={}", m.url(), form_encode(&remote)),
        &[],
        None,
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
    let r = reg
        .standin
        .try_access_token_with_refresh(&token, "repository:library/test:pull");
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
        let r = http_request(
            "GET",
            &format!("{}/auth?remote_url={}", m.url(), form_encode(&remote)),
            &[],
            None,
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

// ------------------------------------------------------------------------------------------
// ECR and GAR through docker credential helpers

const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const ECR_SECRET: &str = "ecr-standin-Zm9vYmFyYmF6";
const GAR_HOST: &str = "us-central1-docker.pkg.dev";
const GCR_HOST: &str = "gcr.io";
const REGIONAL_GCR_HOST: &str = "eu.gcr.io";
const GAR_SECRET: &str = "ya29.gar-standin-token";

/// A token-auth upstream that takes `AWS` and `oauth2accesstoken` with the helpers' secrets
/// (and refuses anonymous pulls), with `library/test:1`.
fn cloud_upstream() -> Registry {
    let reg = Registry::start(RegistryAuth::Token {
        users: vec![
            ("AWS".into(), ECR_SECRET.into()),
            ("oauth2accesstoken".into(), GAR_SECRET.into()),
        ],
        anonymous_pull: false,
    });
    push(&reg, &fixtures().test, "library/test:1", &[]);
    reg
}

/// A `docker-credential-NAME` in `bin` speaking the real protocol: `get`, the server URL on
/// stdin (with or without scheme), JSON on stdout for the `hosts` it knows, "credentials not
/// found in native keychain" otherwise. Every server asked about is appended to `calls`.
fn write_helper(bin: &Path, name: &str, hosts: &[&str], user: &str, secret: &str, calls: &Path) {
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = get ] || {{ echo \"unsupported: $1\" >&2; exit 1; }}\n\
         read -r server || true\n\
         echo \"$server\" >> '{calls}'\n\
         host=${{server#*://}}\n\
         host=${{host%%/*}}\n\
         case \"$host\" in\n\
           {patterns})\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}\\n' \"$server\" ;;\n\
           *) echo 'credentials not found in native keychain'; exit 1 ;;\n\
         esac\n",
        calls = calls.display(),
        patterns = hosts.join("|"),
    );
    let p = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&p, script).expect("write helper");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
}

struct Cloud {
    reg: Registry,
    acr: Acr,
    scratch: tempfile::TempDir,
}

impl Cloud {
    fn calls(&self, helper: &str) -> String {
        std::fs::read_to_string(self.scratch.path().join(format!("{helper}.calls")))
            .unwrap_or_default()
    }
}

/// acr with `.endpoint HOST <upstream>` for each of `hosts` and path routing; `helpers`
/// (name, hosts, user, secret) on PATH; `config` as `$DOCKER_CONFIG/config.json` if given
/// (an empty DOCKER_CONFIG dir otherwise).
fn cloud_acr(
    hosts: &[&str],
    helpers: &[(&str, &[&str], &str, &str)],
    config: Option<serde_json::Value>,
) -> Cloud {
    let reg = cloud_upstream();
    let scratch = temp_dir("acr-cloud-");
    let bin = scratch.path().join("bin");
    let docker = scratch.path().join("docker");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(&docker).expect("mkdir");
    for (name, helper_hosts, user, secret) in helpers {
        let calls = scratch.path().join(format!("{name}.calls"));
        write_helper(&bin, name, helper_hosts, user, secret, &calls);
    }
    if let Some(c) = config {
        std::fs::write(docker.join("config.json"), c.to_string()).expect("config.json");
    }
    let mut settings: Vec<String> = hosts
        .iter()
        .map(|h| format!(".endpoint {h} {}", reg.url()))
        .collect();
    settings.push(".path-routing".into());
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let acr = Acr::start_with(
        &pipeline(&reg.url(), &[], &settings, &routes("")),
        AcrOptions {
            env: vec![
                ("PATH".into(), path),
                ("DOCKER_CONFIG".into(), docker.display().to_string()),
                ("RUST_LOG".into(), "info,acr=debug,acr_plugins=debug".into()),
            ],
            ..AcrOptions::default()
        },
    );
    Cloud { reg, acr, scratch }
}

/// Pulls `HOST/library/test:1` through acr (path routing, skopeo) and by raw HTTP with `?ns=`.
fn pulls_cloud_host(c: &Cloud, host: &str, user: &str, secret: &str) {
    assert_eq!(
        skopeo_pull(&c.acr.host(), &format!("{host}/library/test:1")),
        fixtures().test.digest
    );
    let r = http_request(
        "GET",
        &format!("{}/v2/library/test/manifests/1?ns={host}", c.acr.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    );
    assert_eq!(r.status, 200, "?ns={host}: {}\n{}", r.text(), c.acr.log());
    assert_eq!(digest_of(&r.body), fixtures().test.digest);
    let ts = c.reg.token_server().expect("token server");
    assert!(
        ts.token_requests().iter().any(|l| l.contains("status=200")
            && l.contains(&format!("user={user}"))
            && l.contains("scope=repository:library/test:pull")),
        "no token for {user}:\n{}",
        ts.log()
    );
    assert!(
        !c.acr.log().contains(secret),
        "a helper's secret reached acr's log"
    );
}

/// An ECR host without any config.json: acr asks `docker-credential-ecr-login`.
#[test]
fn an_ecr_host_gets_credentials_from_docker_credential_ecr_login() {
    let c = cloud_acr(
        &[ECR_HOST],
        &[("ecr-login", &[ECR_HOST], "AWS", ECR_SECRET)],
        None,
    );
    pulls_cloud_host(&c, ECR_HOST, "AWS", ECR_SECRET);
    let calls = c.calls("ecr-login");
    assert!(
        calls.lines().any(|l| l.contains(ECR_HOST)),
        "docker-credential-ecr-login was not asked for {ECR_HOST}: {calls:?}\n{}",
        c.acr.log()
    );
}

/// GAR (`*-docker.pkg.dev`) and GCR (`gcr.io`, `*.gcr.io`) hosts without config.json: acr
/// asks `docker-credential-gcr`.
#[test]
fn gar_and_gcr_hosts_get_credentials_from_docker_credential_gcr() {
    let hosts = [GAR_HOST, GCR_HOST, REGIONAL_GCR_HOST];
    let c = cloud_acr(
        &hosts,
        &[("gcr", &hosts, "oauth2accesstoken", GAR_SECRET)],
        None,
    );
    for host in hosts {
        pulls_cloud_host(&c, host, "oauth2accesstoken", GAR_SECRET);
    }
    let calls = c.calls("gcr");
    for host in hosts {
        assert!(
            calls.lines().any(|l| l.contains(host)),
            "docker-credential-gcr was not asked for {host}: {calls:?}\n{}",
            c.acr.log()
        );
    }
}

/// A helper named in config.json `credHelpers` serves a GAR-style host.
#[test]
fn a_cred_helper_from_config_json_serves_a_gar_host() {
    let host = "europe-west4-docker.pkg.dev";
    let c = cloud_acr(
        &[host],
        &[("gcloud", &[host], "oauth2accesstoken", GAR_SECRET)],
        Some(serde_json::json!({"credHelpers": {host: "gcloud"}})),
    );
    pulls_cloud_host(&c, host, "oauth2accesstoken", GAR_SECRET);
    let calls = c.calls("gcloud");
    assert!(
        calls.lines().any(|l| l.contains(host)),
        "docker-credential-gcloud was not asked for {host}: {calls:?}"
    );
}

// ------------------------------------------------------------------------------------------
// more of the default pipeline

/// The default pipeline (`init`, unchanged) serves every kind of image, not only OCI
/// manifests: Docker schema 2, an OCI index and a Docker manifest list (skopeo `--all`),
/// and tag lists.
#[test]
fn the_default_pipeline_serves_every_image_kind() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let seeded = seed(&reg.backend);
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    let out = temp_dir("acr-kinds-");
    for (i, (repo_ref, digest)) in [
        ("library/test:v2s2", &seeded.test_v2s2),
        ("library/multi:1", &seeded.multi_oci),
        ("library/multi:v2s2", &seeded.multi_v2s2),
    ]
    .into_iter()
    .enumerate()
    {
        let src = format!("docker://{}/{repo_ref}", m.host());
        let raw = skopeo(&["inspect", "--raw", &src]);
        assert!(raw.success(), "{repo_ref}: {raw:?}\n{}", m.log());
        assert_eq!(&digest_of(raw.stdout.as_bytes()), digest, "{repo_ref}");
        // every child and blob (a manifest list becomes an OCI index in the layout)
        let dest = format!("oci:{}/{i}:t", out.path().display());
        let copy = skopeo(&["copy", "--all", &src, &dest]);
        assert!(copy.success(), "{repo_ref}: {copy:?}\n{}", m.log());
    }
    let tags = skopeo(&["list-tags", &format!("docker://{}/library/test", m.host())]);
    assert!(tags.success(), "{tags:?}\n{}", m.log());
    assert!(
        tags.stdout.contains("\"v2s2\"") && tags.stdout.contains("\"1\""),
        "{tags:?}"
    );
}

/// Renewal does not depend on az: with a service principal in the environment and 6 s
/// refresh tokens, acr exchanges a new AAD token again and again and no pull fails.
#[test]
fn short_lived_tokens_are_renewed_without_az_too() {
    let reg = AcrRegistry::start(&AcrStandinOptions {
        refresh_ttl: 6,
        access_ttl: 2,
        send_expires_in: true,
        ..AcrStandinOptions::default()
    });
    reg.seed_test();
    let m = AcrMirror::start(
        &reg,
        AcrMirrorOptions {
            az: Az::Absent,
            env: vec![
                ("AZURE_TENANT_ID".into(), TENANT.into()),
                ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
                ("AZURE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
                ("AZURE_AUTHORITY_HOST".into(), reg.url()),
            ],
        },
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let r = m.manifest("GET", "library/test", "1", "", &[]);
        assert_eq!(
            r.status,
            200,
            "after {:.1?}: {}\n--- acr ---\n{}\n--- stand-in ---\n{}",
            start.elapsed(),
            r.text(),
            m.log(),
            reg.standin.log()
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let stats = reg.standin.stats();
    assert!(
        stats["aad_issued_secret"].as_u64().unwrap_or(0) >= 3
            && stats["exchanges"].as_u64().unwrap_or(0) >= 3,
        "not renewed: {stats}\n{}",
        reg.standin.log()
    );
    assert!(
        reg.standin.expired_refusals().is_empty(),
        "{}",
        reg.standin.log()
    );
    assert_eq!(stats["token_denied"], 0, "{stats}");
}

/// acr restarted after its refresh token expired logs in again instead of using the stale
/// `access_token`.
/// `mirror start --id 6` on the default pipeline starts at `6: install "access_token"` (as the
/// old tool's README says): no login, the token of the last run confirmed where `.login` reads
/// it, then `7: mirror` serves.
#[test]
fn mirror_start_id_6_begins_at_install() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let digest = reg.seed_test();
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    assert_eq!(skopeo_pull(&m.host(), "library/test:1"), digest);
    let token =
        m.ws.access_token()
            .expect("access_token after the first start");
    let az_before = m.ws.az_calls().len();

    let m = m.restart_with(&["--id", "6"]);
    let calls: Vec<String> = m
        .log()
        .lines()
        .filter(|l| l.contains(" call ") && l.contains("plugin="))
        .map(str::to_string)
        .collect();
    assert!(calls.len() >= 2, "no call lines in the log:\n{}", m.log());
    assert!(
        calls[0].contains("id=6") && calls[0].contains("plugin=\"install\""),
        "the first call run is not 6: install: {calls:#?}"
    );
    assert!(
        calls[1].contains("id=7") && calls[1].contains("plugin=\"mirror\""),
        "the second call run is not 7: mirror: {calls:#?}"
    );
    assert!(
        !calls.iter().any(|l| l.contains("plugin=\"login-acr\"")),
        "--id 6 ran the login: {calls:#?}"
    );
    assert_eq!(m.ws.az_calls().len(), az_before, "--id 6 ran az again");
    assert!(m.log().contains("already installed"), "{}", m.log());
    // The token of the first run, untouched, still serves the pull.
    assert_eq!(m.ws.access_token().as_deref(), Some(token.as_str()));
    assert_token_file_is_private(&m.ws);
    assert_eq!(skopeo_pull(&m.host(), "library/test:1"), digest);
}

#[test]
fn a_restart_after_the_refresh_token_expired_logs_in_again() {
    let reg = AcrRegistry::start(&AcrStandinOptions {
        refresh_ttl: 5,
        ..AcrStandinOptions::default()
    });
    let digest = reg.seed_test();
    let mut m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    let first = m.ws.access_token().expect("access_token");
    m.stop();
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        jwt_claims(&first)
            .and_then(|c| c["exp"].as_u64())
            .unwrap_or(0)
            < now_secs(),
        "the first token has not expired yet"
    );
    let exchanges = reg.standin.exchanges();
    let m = m.restart();
    let r = m.manifest("GET", "library/test", "1", "", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    assert_eq!(digest_of(&r.body), digest);
    assert!(
        reg.standin.exchanges() > exchanges,
        "no new login after the restart:\n{}",
        reg.standin.log()
    );
    assert_ne!(m.ws.access_token().expect("access_token"), first);
    assert!(
        reg.standin.expired_refusals().is_empty(),
        "acr used the expired token:\n{}",
        reg.standin.log()
    );
}

/// The overlaybd snapshotter asks `/auth` at any time: after renewals it gets the refresh
/// token of the moment, one the registry still takes.
#[test]
fn auth_hands_out_the_current_token_after_renewals() {
    let reg = AcrRegistry::start(&AcrStandinOptions {
        refresh_ttl: 6,
        ..AcrStandinOptions::default()
    });
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    let first = m.ws.access_token().expect("access_token");
    let mut seen = HashSet::from([first]);
    assert!(
        wait_until(Duration::from_secs(30), || {
            if let Some(t) = m.ws.access_token().filter(|t| !t.is_empty()) {
                seen.insert(t);
            }
            seen.len() >= 3
        }),
        "the token was not renewed twice in 30 s:\n{}",
        m.log()
    );
    let remote = format!(
        "http://{}/v2/library/test/blobs/sha256:{}",
        reg.host(),
        "1".repeat(64)
    );
    let r = http_request(
        "GET",
        &format!("{}/auth?remote_url={}", m.url(), form_encode(&remote)),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    let password = r.json()["data"]["auths"][reg.host()]["password"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let current = m.ws.access_token().expect("access_token");
    let accepted = reg
        .standin
        .try_access_token_with_refresh(&password, "repository:library/test:pull");
    assert_eq!(
        accepted.status,
        200,
        "/auth handed out a token the registry refuses ({}; current file token {}): {}",
        if seen.contains(&password) {
            "an older one"
        } else {
            "unknown"
        },
        if password == current {
            "same"
        } else {
            "different"
        },
        accepted.text()
    );
}

/// az fails for a while during a renewal: acr keeps serving, retries, and renews once az
/// works again.
#[test]
fn a_failed_renewal_is_retried_and_the_mirror_keeps_serving() {
    let reg = AcrRegistry::start(&AcrStandinOptions {
        refresh_ttl: 8,
        ..AcrStandinOptions::default()
    });
    let digest = reg.seed_test();
    let m = AcrMirror::start(&reg, AcrMirrorOptions::default());
    let first = m.ws.access_token().expect("access_token");
    m.ws.set_az_failing(true);
    // the renewal is due at 6 s; let it fail a few times
    assert!(
        wait_until(Duration::from_secs(40), || {
            m.ws.az_calls()
                .iter()
                .filter(|l| l.contains("exit=1"))
                .count()
                >= 2
        }),
        "acr did not try to renew: {:#?}\n{}",
        m.ws.az_calls(),
        m.log()
    );
    assert!(m.is_running(), "acr died when az failed:\n{}", m.log());
    m.ws.set_az_failing(false);
    assert!(
        wait_until(Duration::from_secs(90), || {
            m.ws.access_token()
                .is_some_and(|t| !t.is_empty() && t != first)
        }),
        "no renewal after az recovered: {:#?}\n{}",
        m.ws.az_calls(),
        m.log()
    );
    let r = m.manifest("GET", "library/test", "1", "", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    assert_eq!(digest_of(&r.body), digest);
    let token = m.ws.access_token().expect("access_token");
    let r = reg
        .standin
        .try_access_token_with_refresh(&token, "repository:library/test:pull");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Workload identity tokens rotate (AKS replaces the projected file hourly): every renewal
/// reads AZURE_FEDERATED_TOKEN_FILE again.
#[test]
fn workload_identity_reads_the_rotated_token_file_at_each_renewal() {
    let reg = AcrRegistry::start(&AcrStandinOptions {
        refresh_ttl: 6,
        ..AcrStandinOptions::default()
    });
    let digest = reg.seed_test();
    let files = temp_dir("acr-wi-rotate-");
    let token_file = files.path().join("azure-identity-token");
    std::fs::write(&token_file, federated_assertion()).expect("token file");
    let m = AcrMirror::start(
        &reg,
        AcrMirrorOptions {
            az: Az::Absent,
            env: vec![
                ("AZURE_TENANT_ID".into(), TENANT.into()),
                ("AZURE_CLIENT_ID".into(), WI_CLIENT_ID.into()),
                (
                    "AZURE_FEDERATED_TOKEN_FILE".into(),
                    token_file.display().to_string(),
                ),
                ("AZURE_AUTHORITY_HOST".into(), reg.url()),
            ],
        },
    );
    // the next projected token: another key id and signature, the same subject
    let rotated = format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256","kid":"standin-sa-key-2"}"#),
        federated_assertion().split('.').nth(1).expect("claims"),
        b64url(b"rotated-signature")
    );
    assert_ne!(rotated, federated_assertion());
    // the identity provider takes both for a moment, the file rotates, the old one is revoked
    reg.standin.configure(serde_json::json!({
        "federated": {WI_CLIENT_ID: [federated_assertion(), rotated.clone()]}
    }));
    let tmp = files.path().join("azure-identity-token.new");
    std::fs::write(&tmp, &rotated).expect("rotated token");
    std::fs::rename(&tmp, &token_file).expect("rotate");
    reg.standin
        .configure(serde_json::json!({"federated": {WI_CLIENT_ID: [rotated]}}));
    let before = reg.standin.stat("aad_issued_assertion");
    let denied_before = reg.standin.stat("aad_denied");
    assert!(
        wait_until(Duration::from_secs(40), || {
            reg.standin.stat("aad_issued_assertion") >= before + 2
        }),
        "no renewals with the rotated assertion: {}\n{}",
        reg.standin.stats(),
        m.log()
    );
    assert_eq!(
        reg.standin.stat("aad_denied"),
        denied_before,
        "acr presented the revoked assertion:\n{}",
        reg.standin.log()
    );
    let r = m.manifest("GET", "library/test", "1", "", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    assert_eq!(digest_of(&r.body), digest);
}

/// Hosts that only look like ECR or GAR/GCR (the patterns are anchored) never reach those
/// helpers; without credentials the upstream refuses the pull (401).
#[test]
fn look_alike_hosts_do_not_run_the_cloud_helpers() {
    let fake_ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example";
    let fake_gcr = "gcr.io.evil.example";
    let fake_gar = "us-docker.pkg.dev.evil.example";
    let hosts = [fake_ecr, fake_gcr, fake_gar];
    let c = cloud_acr(
        &hosts,
        &[
            ("ecr-login", &hosts, "AWS", ECR_SECRET),
            ("gcr", &hosts, "oauth2accesstoken", GAR_SECRET),
        ],
        None,
    );
    for host in hosts {
        let r = http_request(
            "GET",
            &format!("{}/v2/library/test/manifests/1?ns={host}", c.acr.url()),
            &[("Accept", ACCEPT_MANIFESTS)],
            None,
        );
        assert_eq!(r.status, 401, "{host}: {}\n{}", r.text(), c.acr.log());
    }
    assert_eq!(
        c.calls("ecr-login"),
        "",
        "docker-credential-ecr-login was run"
    );
    assert_eq!(c.calls("gcr"), "", "docker-credential-gcr was run");
}
