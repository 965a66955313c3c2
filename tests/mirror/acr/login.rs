//! `acr init` and `mirror start` with the stand-in `az`, and without `az`.

use super::*;

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
    let r = pull_token_with_refresh(&reg, &token);
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
    let (image, got) = ctr_pull_test_1(&m, &reg);
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
    let reg = short_lived_registry();
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
        let r = m.fetch("GET", &format!("/v2/library/test/blobs/{layer}"), &[]);
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
        |standin| client_secret_env(standin.url()),
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
        |standin| workload_identity_env(token_file.clone(), format!("{}/", standin.url())),
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
    let m = mirror_without_az(&reg, env(&reg.standin));
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
    // The instance metadata service is the last resort: here, a port nothing serves (tests
    // talk to 127.0.0.1 only).
    let imds = format!(
        "http://127.0.0.1:{}/metadata/identity/oauth2/token",
        free_port()
    );
    let (_ws, out, text) =
        mirror_start_fails(&reg, Az::Absent, vec![("ACR_IMDS_ENDPOINT".into(), imds)]);
    assert!(text.contains("az login"), "no `az login` advice: {out:?}");
    assert!(text.contains("AZURE_"), "no AZURE_* advice: {out:?}");
    assert_eq!(reg.standin.exchanges(), 0);
}

/// az that is not logged in: `mirror start` fails with an error that names az.
#[test]
fn a_failing_az_is_an_error_naming_az() {
    let reg = AcrRegistry::start(&AcrStandinOptions::default());
    let (ws, out, text) = mirror_start_fails(&reg, Az::Failing, vec![]);
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
