//! More of the default pipeline.

use super::*;

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
    let reg = short_lived_registry();
    reg.seed_test();
    let m = mirror_without_az(&reg, client_secret_env(reg.url()));
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
    let reg = registry_with_refresh_ttl(5);
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
    let reg = registry_with_refresh_ttl(6);
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
    let r = fetch(
        "GET",
        &format!("{}/auth?remote_url={}", m.url(), form_encode(&remote)),
        &[],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.log());
    let password = r.json()["data"]["auths"][reg.host()]["password"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let current = m.ws.access_token().expect("access_token");
    let accepted = pull_token_with_refresh(&reg, &password);
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
    let reg = registry_with_refresh_ttl(8);
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
    let r = pull_token_with_refresh(&reg, &token);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Workload identity tokens rotate (AKS replaces the projected file hourly): every renewal
/// reads AZURE_FEDERATED_TOKEN_FILE again.
#[test]
fn workload_identity_reads_the_rotated_token_file_at_each_renewal() {
    let reg = registry_with_refresh_ttl(6);
    let digest = reg.seed_test();
    let files = temp_dir("acr-wi-rotate-");
    let token_file = files.path().join("azure-identity-token");
    std::fs::write(&token_file, federated_assertion()).expect("token file");
    let m = mirror_without_az(
        &reg,
        workload_identity_env(token_file.display().to_string(), reg.url()),
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
        let r = c
            .acr
            .fetch_manifest("GET", &format!("/v2/library/test/manifests/1?ns={host}"));
        assert_eq!(r.status, 401, "{host}: {}\n{}", r.text(), c.acr.log());
    }
    assert_eq!(
        c.calls("ecr-login"),
        "",
        "docker-credential-ecr-login was run"
    );
    assert_eq!(c.calls("gcr"), "", "docker-credential-gcr was run");
}
