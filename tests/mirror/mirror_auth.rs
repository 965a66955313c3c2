//! Upstream auth through acr: a CNCF distribution behind htpasswd (Basic) and one behind
//! Bearer-token auth (our token server, anonymous pulls refused), pulled with the right
//! credentials from each source `.login` knows (a credential file beside the pipeline,
//! docker's config.json `auths` / `credHelpers` / `credsStore` with a real
//! `docker-credential-*` helper, environment variables); wrong or missing credentials are a
//! 401 `UNAUTHORIZED` naming the upstream; tokens are fetched once per scope and lifetime.

use std::path::Path;
use std::time::Duration;

use acr_plugins::registry::credentials::env_var_of;

use crate::harness::*;

const USER: &str = "mirroruser";
const PASS: &str = "S3cret-pa55word";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    Basic,
    Token,
}

fn upstream(auth: Auth) -> Registry {
    let reg = Registry::start(match auth {
        Auth::Basic => RegistryAuth::htpasswd(USER, PASS),
        Auth::Token => RegistryAuth::token(USER, PASS, false),
    });
    push(&reg, &fixtures().test, "library/test:1", &[]);
    reg
}

/// Where acr finds the credentials.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// `.login creds`, the file `creds` beside the runmd.
    File,
    /// `$DOCKER_CONFIG/config.json` `auths` with `auth` = base64(user:pass).
    DockerAuths,
    /// `config.json` `credHelpers` naming a `docker-credential-*` helper on PATH.
    CredHelpers,
    /// `config.json` `credsStore` naming the helper.
    CredsStore,
    /// `ACR_AUTH_<HOST>=user:pass`.
    EnvHost,
    /// `ACR_UPSTREAM_USERNAME` / `ACR_UPSTREAM_PASSWORD`.
    EnvUser,
    /// The containers `auth.json` named by `REGISTRY_AUTH_FILE` (podman, skopeo).
    AuthJson,
}

/// A `docker-credential-NAME` in `bin` speaking the real protocol: `get`, the server URL on
/// stdin, JSON on stdout; a miss prints "credentials not found in native keychain". Every
/// server it is asked about is appended to `calls`.
fn write_helper(bin: &Path, name: &str, server: &str, user: &str, pass: &str, calls: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = get ] || {{ echo \"unsupported: $1\" >&2; exit 1; }}\n\
         read -r server || true\n\
         echo \"$server\" >> '{calls}'\n\
         if [ \"$server\" = '{server}' ]; then\n\
           printf '{{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}}\\n' \"$server\" '{user}' '{pass}'\n\
         else\n\
           echo 'credentials not found in native keychain'\n\
           exit 1\n\
         fi\n",
        calls = calls.display(),
    );
    let p = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&p, script).expect("write helper");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
}

struct Setup {
    acr: Acr,
    _scratch: tempfile::TempDir,
    helper_calls: std::path::PathBuf,
}

/// acr in front of `reg`, given `user:pass` through `source`.
fn acr_with(reg: &Registry, source: Source, user: &str, pass: &str) -> Setup {
    let scratch = temp_dir("acr-auth-");
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    let helper_calls = scratch.path().join("helper-calls.log");
    let mut opts = AcrOptions::default();
    // Debug logs on: they must still hold no secret.
    opts.env
        .push(("RUST_LOG".into(), "info,acr=debug,acr_plugins=debug".into()));
    let docker_config = |json: serde_json::Value| {
        let dir = scratch.path().join("docker");
        std::fs::create_dir_all(&dir).expect("mkdir docker config");
        std::fs::write(dir.join("config.json"), json.to_string()).expect("write config.json");
        ("DOCKER_CONFIG".to_string(), dir.display().to_string())
    };
    let mut login = "";
    match source {
        Source::File => {
            login = "creds";
            opts.files
                .push(("creds".into(), format!("{user}:{pass}\n")));
        }
        Source::DockerAuths => {
            let auth = base64(format!("{user}:{pass}").as_bytes());
            opts.env.push(docker_config(serde_json::json!({
                "auths": {
                    "other.example:5000": {"auth": base64(b"nobody:nothing")},
                    reg.host(): {"auth": auth},
                }
            })));
        }
        Source::CredHelpers => {
            write_helper(&bin, "acrtest", &reg.host(), user, pass, &helper_calls);
            opts.env.push(docker_config(serde_json::json!({
                "credHelpers": {reg.host(): "acrtest"}
            })));
        }
        Source::CredsStore => {
            write_helper(&bin, "acrstore", &reg.host(), user, pass, &helper_calls);
            opts.env.push(docker_config(serde_json::json!({
                "auths": {},
                "credsStore": "acrstore"
            })));
        }
        Source::EnvHost => {
            opts.env
                .push((env_var_of(&reg.host()), format!("{user}:{pass}")));
        }
        Source::EnvUser => {
            opts.env.push(("ACR_UPSTREAM_USERNAME".into(), user.into()));
            opts.env.push(("ACR_UPSTREAM_PASSWORD".into(), pass.into()));
        }
        Source::AuthJson => {
            let file = scratch.path().join("auth.json");
            let auth = base64(format!("{user}:{pass}").as_bytes());
            std::fs::write(
                &file,
                serde_json::json!({"auths": {reg.host(): {"auth": auth}}}).to_string(),
            )
            .expect("auth.json");
            opts.env
                .push(("REGISTRY_AUTH_FILE".into(), file.display().to_string()));
        }
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    opts.env.push(("PATH".into(), path));
    let runmd = pipeline(&reg.url(), &[], &[], &routes(login));
    Setup {
        acr: Acr::start_with(&runmd, opts),
        _scratch: scratch,
        helper_calls,
    }
}

/// Pulls `library/test:1` through acr with skopeo and checks it is the upstream's image;
/// then checks the logs name the source but never the secret.
fn pulls_with(auth: Auth, source: Source) {
    let reg = upstream(auth);
    // Anonymous pulls really are refused by this upstream.
    let direct = skopeo(&[
        "inspect",
        "--raw",
        &format!("docker://{}", reg.image("library/test:1")),
    ]);
    assert!(
        !direct.success(),
        "the upstream lets anonymous pulls through"
    );
    let setup = acr_with(&reg, source, USER, PASS);
    let acr = &setup.acr;
    let out = temp_dir("acr-auth-out-");
    let dest = format!("oci:{}:t", out.path().display());
    let src = format!("docker://{}/library/test:1", acr.host());
    skopeo(&["copy", "--preserve-digests", &src, &dest]).ok();
    assert_eq!(layout_digest(out.path(), "t"), fixtures().test.digest);
    assert!(
        acr.wait_requests(&["/blobs/", "status=200"], 2).len() >= 2,
        "{}",
        acr.log()
    );
    let log = acr.log();
    assert!(!log.contains(PASS), "a password reached acr's log:\n{log}");
    assert!(
        log.contains(&format!("user={USER}")),
        "acr's debug log does not say whose credentials it used:\n{log}"
    );
    match source {
        Source::CredHelpers | Source::CredsStore => {
            let calls = std::fs::read_to_string(&setup.helper_calls).unwrap_or_default();
            assert!(
                calls.lines().any(|l| l == reg.host()),
                "the helper was not asked for {}: {calls:?}",
                reg.host()
            );
        }
        _ => {}
    }
    if auth == Auth::Token {
        let ts = reg.token_server().expect("token server");
        let granted: Vec<String> = ts
            .token_requests()
            .into_iter()
            .filter(|l| {
                l.contains("scope=repository:library/test:pull") && l.contains("status=200")
            })
            .collect();
        assert!(
            granted.iter().any(|l| l.contains(&format!("user={USER}"))),
            "no token for {USER}: {granted:?}"
        );
        let leaked = ts.log();
        assert!(!leaked.contains(PASS));
    }
}

#[test]
fn basic_upstream_pulls_with_a_credential_file() {
    pulls_with(Auth::Basic, Source::File);
}

#[test]
fn basic_upstream_pulls_with_docker_config_auths() {
    pulls_with(Auth::Basic, Source::DockerAuths);
}

#[test]
fn basic_upstream_pulls_with_a_cred_helper() {
    pulls_with(Auth::Basic, Source::CredHelpers);
}

#[test]
fn basic_upstream_pulls_with_a_creds_store() {
    pulls_with(Auth::Basic, Source::CredsStore);
}

#[test]
fn basic_upstream_pulls_with_acr_auth_host_env() {
    pulls_with(Auth::Basic, Source::EnvHost);
}

#[test]
fn basic_upstream_pulls_with_acr_upstream_username_env() {
    pulls_with(Auth::Basic, Source::EnvUser);
}

#[test]
fn basic_upstream_pulls_with_a_containers_auth_json() {
    pulls_with(Auth::Basic, Source::AuthJson);
}

#[test]
fn token_upstream_pulls_with_a_credential_file() {
    pulls_with(Auth::Token, Source::File);
}

#[test]
fn token_upstream_pulls_with_docker_config_auths() {
    pulls_with(Auth::Token, Source::DockerAuths);
}

#[test]
fn token_upstream_pulls_with_a_cred_helper() {
    pulls_with(Auth::Token, Source::CredHelpers);
}

#[test]
fn token_upstream_pulls_with_a_creds_store() {
    pulls_with(Auth::Token, Source::CredsStore);
}

#[test]
fn token_upstream_pulls_with_acr_auth_host_env() {
    pulls_with(Auth::Token, Source::EnvHost);
}

#[test]
fn token_upstream_pulls_with_acr_upstream_username_env() {
    pulls_with(Auth::Token, Source::EnvUser);
}

/// docker's `identitytoken` (a refresh token) is exchanged with `grant_type=refresh_token`.
#[test]
fn token_upstream_pulls_with_an_identity_token_from_config_json() {
    let reg = upstream(Auth::Token);
    let ts = reg.token_server().expect("token server");
    let r = http_request(
        "POST",
        &ts.realm(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(
            format!(
                "grant_type=password&username={USER}&password={PASS}&service={}&client_id=test&access_type=offline&scope=",
                ts.service()
            )
            .as_bytes(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let refresh = r.json()["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string();
    let scratch = temp_dir("acr-auth-id-");
    std::fs::write(
        scratch.path().join("config.json"),
        serde_json::json!({"auths": {reg.host(): {"auth": "", "identitytoken": refresh}}})
            .to_string(),
    )
    .expect("config.json");
    let acr = Acr::start_with(
        &pull_through(&reg.url()),
        AcrOptions {
            env: vec![("DOCKER_CONFIG".into(), scratch.path().display().to_string())],
            ..Default::default()
        },
    );
    let r = acr.fetch_manifest("GET", "/v2/library/test/manifests/1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), acr.log());
    assert_eq!(digest_of(&r.body), fixtures().test.digest);
    assert!(
        ts.token_requests()
            .iter()
            .any(|l| l.contains("grant=refresh") && l.contains("status=200")),
        "{}",
        ts.log()
    );
    assert!(!acr.log().contains(&refresh));
}

/// Wrong credentials (and none) are a 401 `UNAUTHORIZED` whose message names the upstream
/// that refused; no secret is echoed; acr keeps serving.
fn refused(auth: Auth) {
    let reg = upstream(auth);
    let wrong = acr_with(&reg, Source::File, USER, "not-the-password");
    let none = Acr::start(&pull_through(&reg.url()));
    for (acr, what) in [(&wrong.acr, "wrong"), (&none, "none")] {
        for path in [
            "/v2/library/test/manifests/1".to_string(),
            format!("/v2/library/test/blobs/{}", fixtures().test.layers()[0].0),
        ] {
            let r = acr.fetch_manifest("GET", &path);
            let body = r.text();
            assert_eq!(r.status, 401, "{what} {path}: {body}\n{}", acr.log());
            assert_eq!(oci_code(&body), "UNAUTHORIZED", "{body}");
            let message = oci_message(&body);
            assert!(
                message.contains(&format!("upstream {}", reg.host())),
                "the message does not say which upstream refused: {message}"
            );
            assert!(!body.contains("not-the-password"), "{body}");
            // Whose credentials were refused, and where acr keeps them, is for acr's log
            // (issue 15), never for a client.
            assert!(!message.contains(USER), "{message}");
            assert!(!message.contains("creds"), "{message}");
        }
        acr.assert_serves(None);
        assert!(!acr.log().contains("not-the-password"));
    }
    // A client that skopeo-copies sees a failed pull, not garbage.
    let out = temp_dir("acr-auth-refused-");
    let copy = skopeo(&[
        "copy",
        &format!("docker://{}/library/test:1", wrong.acr.host()),
        &format!("oci:{}:t", out.path().display()),
    ]);
    assert!(!copy.success(), "{copy:?}");
}

#[test]
fn basic_upstream_wrong_or_missing_credentials_are_401_naming_the_upstream() {
    refused(Auth::Basic);
}

#[test]
fn token_upstream_wrong_or_missing_credentials_are_401_naming_the_upstream() {
    refused(Auth::Token);
}

/// Over several pulls (sequential and concurrent) the token server issues one token per
/// scope, not one per request; a token is fetched again only when its lifetime is over.
#[test]
fn tokens_are_fetched_once_per_scope_and_lifetime() {
    let reg = Registry::start(RegistryAuth::Token {
        users: vec![(USER.into(), PASS.into())],
        anonymous_pull: false,
    });
    seed(&reg);
    let ts = reg.token_server().expect("token server");
    let before = ts.token_requests().len();
    let setup = acr_with(&reg, Source::File, USER, PASS);
    let acr = &setup.acr;
    let out = temp_dir("acr-token-cache-");
    let mut requests = 0;
    for (i, repo_ref) in [
        "library/test:1",
        "library/test:v2s2",
        "library/test:1",
        "library/multi:1",
        "library/multi:v2s2",
    ]
    .iter()
    .enumerate()
    {
        let src = format!("docker://{}/{repo_ref}", acr.host());
        let dest = format!("oci:{}/{i}:t", out.path().display());
        skopeo(&["copy", "--all", &src, &dest]).ok();
    }
    // And 8 clients at once on a cold scope.
    let layer = fixtures().test.layers()[0].0.clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{}/v2/library/test/blobs/{layer}", acr.url());
            std::thread::spawn(move || fetch("GET", &url, &[]).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("client"), 200);
    }
    requests += acr.request_lines().len();
    let tokens: Vec<String> = ts.token_requests().split_off(before);
    let for_scope = |scope: &str| {
        tokens
            .iter()
            .filter(|l| l.contains(&format!("scope={scope}")))
            .count()
    };
    assert!(requests > 20, "only {requests} requests through acr");
    assert_eq!(
        for_scope("repository:library/test:pull"),
        1,
        "tokens for library/test over {requests} requests: {tokens:#?}"
    );
    assert_eq!(
        for_scope("repository:library/multi:pull"),
        1,
        "tokens for library/multi: {tokens:#?}"
    );
    assert_eq!(tokens.len(), 2, "{tokens:#?}");
    let stats = ts.stats();
    assert_eq!(stats["denied"].as_u64(), Some(0), "{stats}");
}

/// With a 6 s token lifetime, a pull after the lifetime gets a new token; pulls within it
/// do not.
#[test]
fn an_expired_token_is_renewed() {
    let ts = std::sync::Arc::new(TokenServer::start(TokenServerOptions {
        users: vec![(USER.into(), PASS.into())],
        anonymous_pull: false,
        expires_in: 6,
        ..TokenServerOptions::default()
    }));
    let reg = Registry::start(RegistryAuth::SharedToken {
        server: ts.clone(),
        creds: Some((USER.into(), PASS.into())),
    });
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let before = ts.token_requests().len();
    let setup = acr_with(&reg, Source::EnvHost, USER, PASS);
    let url = format!("{}/v2/library/test/manifests/1", setup.acr.url());
    let get = || {
        let r = fetch("GET", &url, &[("Accept", ACCEPT_MANIFESTS)]);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    get();
    get();
    let count = || ts.token_requests().len() - before;
    assert_eq!(count(), 1, "{}", ts.log());
    std::thread::sleep(Duration::from_secs(7));
    get();
    get();
    assert_eq!(count(), 2, "{}", ts.log());
}

/// What the fake Bearer upstream does with the tokens it issued.
#[derive(Default)]
struct FakeAuthState {
    issued: u32,
    /// Tokens below this number are refused (401), as after a revocation.
    valid_from: u32,
    /// Refuse every token.
    refuse_all: bool,
}

/// A Bearer-auth upstream (and its own token realm, which refuses the OAuth2 POST with 404
/// as GCR does) serving one manifest.
fn fake_bearer_upstream(
    manifest: Vec<u8>,
) -> (
    FakeUpstream,
    std::sync::Arc<std::sync::Mutex<FakeAuthState>>,
) {
    let state = std::sync::Arc::new(std::sync::Mutex::new(FakeAuthState::default()));
    let st = state.clone();
    let fake = FakeUpstream::start(move |r: &FakeRequest| {
        let host = r.header("host").unwrap_or("?").to_string();
        let challenge = format!(
            "Bearer realm=\"http://{host}/token\",service=\"fake\",scope=\"repository:library/x:pull\""
        );
        let unauthorized = || {
            FakeReply::new(
                401,
                &[
                    ("WWW-Authenticate", challenge.as_str()),
                    ("Content-Type", "application/json"),
                ],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"token please"}]}"#,
            )
        };
        let mut s = st.lock().expect("state");
        if r.path.starts_with("/token") {
            if r.method == "POST" {
                return FakeReply::new(404, &[], "no oauth here");
            }
            if r.header("authorization") != Some(basic_auth(USER, PASS).as_str()) {
                return FakeReply::new(401, &[], "bad credentials");
            }
            s.issued += 1;
            let body = format!(r#"{{"token":"tok-{}","expires_in":300}}"#, s.issued);
            return FakeReply::new(200, &[("Content-Type", "application/json")], body);
        }
        let token = r
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer tok-"))
            .and_then(|n| n.parse::<u32>().ok());
        match token {
            Some(n) if !s.refuse_all && n >= s.valid_from => {
                if r.path == "/v2/" {
                    return FakeReply::new(200, &[], "{}");
                }
                let digest = digest_of(&manifest);
                FakeReply::new(
                    200,
                    &[
                        ("Content-Type", OCI_MANIFEST),
                        ("Docker-Content-Digest", digest.as_str()),
                    ],
                    manifest.clone(),
                )
            }
            _ => unauthorized(),
        }
    });
    (fake, state)
}

/// A token the upstream stops taking (401) is renewed once and the request retried; a
/// upstream that refuses every token gets exactly one renewal, then the client a 401. The
/// OAuth2 POST refused with 404 falls back to GET with Basic auth.
#[test]
fn a_refused_token_is_renewed_once_and_the_request_retried() {
    let manifest = std::fs::read(
        fixtures()
            .test
            .layout
            .join("blobs/sha256")
            .join(&fixtures().test.digest["sha256:".len()..]),
    )
    .expect("manifest");
    let (fake, state) = fake_bearer_upstream(manifest.clone());
    let acr = acr_with_fake(&fake);
    let url = format!("{}/v2/library/x/manifests/1", acr.url());
    let get = || fetch("GET", &url, &[("Accept", OCI_MANIFEST)]);
    let issued = || state.lock().expect("state").issued;

    let r = get();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), acr.log());
    assert_eq!(r.body, manifest);
    assert_eq!(issued(), 1);
    // Both token requests of that fetch: the POST (refused with 404), then GET + Basic.
    let token_requests: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.contains("/token"))
        .collect();
    assert_eq!(token_requests.len(), 2, "{token_requests:?}");
    assert!(token_requests[0].starts_with("POST /token"));
    assert!(token_requests[1].starts_with("GET /token?"));
    assert!(
        token_requests[1].contains("scope=repository%3Alibrary%2Fx%3Apull"),
        "{token_requests:?}"
    );
    let post = fake
        .received()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("the POST");
    let form = String::from_utf8_lossy(&post.body).into_owned();
    assert!(form.contains("grant_type=password"), "{form}");
    assert!(form.contains(&format!("username={USER}")), "{form}");
    assert!(form.contains("client_id="), "{form}");

    // Cached: no new token.
    assert_eq!(get().status, 200);
    assert_eq!(issued(), 1);
    // Revoked: one renewal, the client never sees the 401.
    state.lock().expect("state").valid_from = 2;
    let r = get();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(issued(), 2);
    assert_eq!(get().status, 200);
    assert_eq!(issued(), 2);
    // Refused whatever the token: one renewal, then a 401 naming the upstream.
    state.lock().expect("state").refuse_all = true;
    let r = get();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAUTHORIZED");
    assert!(
        oci_message(&r.text()).contains(&fake.host()),
        "{}",
        r.text()
    );
    assert_eq!(issued(), 3, "renewed more than once for one request");
    let log = acr.log();
    assert!(!log.contains("tok-"), "a token reached the log:\n{log}");
    assert!(!log.contains(PASS));
}

fn acr_with_fake(fake: &FakeUpstream) -> Acr {
    Acr::start_with(
        &pull_through(&fake.url()),
        AcrOptions {
            env: vec![
                (env_var_of(&fake.host()), format!("{USER}:{PASS}")),
                ("RUST_LOG".into(), "info,acr=debug,acr_plugins=debug".into()),
            ],
            ..Default::default()
        },
    )
}

/// A blob redirected to storage on another host is fetched from there without the
/// upstream's Authorization; a redirect on the same host keeps it.
#[test]
fn a_redirect_to_another_host_never_gets_the_authorization() {
    let blob = pseudo_random_bytes("redirected", 200_000);
    let digest = digest_of(&blob);
    let served = blob.clone();
    let storage = FakeUpstream::start(move |_: &FakeRequest| {
        FakeReply::new(
            200,
            &[("Content-Type", "application/octet-stream")],
            served.clone(),
        )
    });
    let storage_url = storage.url();
    let basic = basic_auth(USER, PASS);
    let registry = FakeUpstream::start(move |r: &FakeRequest| {
        if r.header("authorization") != Some(basic.as_str()) {
            return FakeReply::new(
                401,
                &[("WWW-Authenticate", "Basic realm=\"fake\"")],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"who?"}]}"#,
            );
        }
        if r.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        if r.path.starts_with("/v2/library/x/blobs/") {
            // First to another path on this host, then to storage elsewhere.
            let location = format!("/_storage{}", r.path);
            return FakeReply::new(307, &[("Location", location.as_str())], "");
        }
        if r.path.starts_with("/_storage/") {
            let location = format!("{storage_url}/blob?sig=abc");
            return FakeReply::new(307, &[("Location", location.as_str())], "");
        }
        FakeReply::new(404, &[], "")
    });
    let acr = acr_with_fake(&registry);
    let r = acr.fetch("GET", &format!("/v2/library/x/blobs/{digest}"), &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), acr.log());
    assert_eq!(digest_of(&r.body), digest);
    let at_storage = storage.received();
    assert_eq!(at_storage.len(), 1, "{:?}", storage.requests());
    assert_eq!(at_storage[0].path, "/blob?sig=abc");
    assert_eq!(
        at_storage[0].header("authorization"),
        None,
        "the upstream's credentials went to another host"
    );
    assert!(
        registry
            .received()
            .iter()
            .any(|r| r.path.starts_with("/_storage/") && r.header("authorization").is_some()),
        "a same-host redirect lost its Authorization: {:?}",
        registry.requests()
    );
}

/// Sources are tried in order and the first that has credentials wins: the credential file
/// before config.json before the environment.
#[test]
fn the_credential_file_wins_over_config_json_and_the_environment() {
    let reg = upstream(Auth::Basic);
    let scratch = temp_dir("acr-auth-order-");
    std::fs::write(
        scratch.path().join("config.json"),
        serde_json::json!({"auths": {reg.host(): {"auth": base64(format!("{USER}:wrong-config").as_bytes())}}})
            .to_string(),
    )
    .expect("config.json");
    let acr = Acr::start_with(
        &pipeline(&reg.url(), &[], &[], &routes("creds")),
        AcrOptions {
            env: vec![
                ("DOCKER_CONFIG".into(), scratch.path().display().to_string()),
                (env_var_of(&reg.host()), format!("{USER}:wrong-env")),
                ("RUST_LOG".into(), "info,acr_plugins=debug".into()),
            ],
            files: vec![("creds".into(), format!("{USER}:{PASS}\n"))],
            ..Default::default()
        },
    );
    let r = acr.fetch_manifest("GET", "/v2/library/test/manifests/1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), acr.log());
    assert!(acr.log().contains("source=file "), "{}", acr.log());
}
