//! Security issue 15, the upstream side: acr trusts the pipeline and the upstreams it names,
//! never their answers. Each test runs a real `acr mirror start` in front of a hostile
//! upstream on loopback (silent, redirecting anywhere, naming a foreign realm, answering
//! huge or secret-laden bodies), attacks one rule, and checks the status the client gets,
//! what the hostile side received, and that acr keeps serving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The upstream waits acr runs with here (the defaults are 10 s, 30 s, 30 s).
const CONNECT: &str = "1s";
const HEADER: &str = "2s";
const IDLE: &str = "2s";
/// How long acr may wait for an answer under those: connect + headers.
const BOUND: Duration = Duration::from_secs(3);
/// What a hostile upstream sleeps to be "silent".
const FOREVER: Duration = Duration::from_secs(90);

fn short_waits() -> Vec<(String, String)> {
    vec![
        ("ACR_UPSTREAM_CONNECT_TIMEOUT".into(), CONNECT.into()),
        ("ACR_UPSTREAM_HEADER_TIMEOUT".into(), HEADER.into()),
        ("ACR_UPSTREAM_IDLE_TIMEOUT".into(), IDLE.into()),
    ]
}

fn acr_with(runmd: &str, env: Vec<(String, String)>, files: Vec<(String, String)>) -> Acr {
    Acr::start_with(
        runmd,
        AcrOptions {
            env,
            files,
            ..AcrOptions::default()
        },
    )
}

fn get(acr: &Acr, path: &str) -> HttpResponse {
    acr.fetch("GET", path, &[])
}

/// GETs every path at once (a thread each): each answer is a 504 or 502 OCI error, and all
/// of them come within 3 × [`BOUND`].
#[track_caller]
fn assert_concurrent_gets_fail_in_bound(acr: &Arc<Acr>, paths: Vec<String>, what: &str) {
    let started = Instant::now();
    let handles: Vec<_> = paths
        .into_iter()
        .map(|path| {
            let acr = acr.clone();
            thread::spawn(move || get(&acr, &path))
        })
        .collect();
    for h in handles {
        let r = h.join().expect("request");
        assert!(r.status == 504 || r.status == 502, "{}", r.text());
        assert_oci_error(&r, r.status);
    }
    assert!(
        started.elapsed() < 3 * BOUND,
        "{what} took {:?}",
        started.elapsed()
    );
}

/// `GET path` and how long the answer took.
fn timed_get(acr: &Acr, path: &str) -> (HttpResponse, Duration) {
    let started = Instant::now();
    let r = get(acr, path);
    (r, started.elapsed())
}

#[track_caller]
fn assert_oci_error(r: &HttpResponse, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let _ = oci_code(&r.text());
}

// ------------------------------------------------------------------------------------------
// 1. every wait upstream is bounded

/// An upstream that serves `ok`, never answers `stall` (nor anything while `all_silent`),
/// and stalls the body of `slowbody` after its headers.
fn stalling_upstream(all_silent: Arc<AtomicBool>) -> FakeUpstream {
    FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if all_silent.load(Ordering::SeqCst) || req.path.contains("/stall/") {
            thread::sleep(FOREVER);
            return FakeReply::new(500, &[], "");
        }
        if req.path.contains("/slowbody/") {
            let mut r = manifest_reply();
            r.pause = Some((10, FOREVER));
            return r;
        }
        if req.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        if req.path.contains("/ok/manifests/") {
            return manifest_reply();
        }
        FakeReply::new(404, &[], oci_error("NAME_UNKNOWN", "no"))
    })
}

/// Clears `silent` (the upstream or its realm answers again): `path` is served, and acr
/// still serves.
#[track_caller]
fn assert_serves_once_recovered(acr: &Acr, silent: &AtomicBool, path: &str) {
    silent.store(false, Ordering::SeqCst);
    let r = get(acr, path);
    assert_eq!(r.status, 200, "after the upstream recovered: {}", r.text());
    acr.assert_serves(None);
}

/// A fake upstream on 127.0.0.1 that answers `/v2/` with 200 and everything else with
/// `handler`.
fn upstream_past_v2(
    handler: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
) -> FakeUpstream {
    FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if req.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        handler(req)
    })
}

/// acr with the short waits, in front of `up` with the credential file `creds` holding
/// `user_pass` (`USER:PASSWORD`).
fn acr_logging_in_to(up: &FakeUpstream, user_pass: &str) -> Acr {
    let runmd = pipeline(&up.url(), &[], &[], &routes("creds"));
    acr_with(
        &runmd,
        short_waits(),
        vec![("creds".into(), format!("{user_pass}\n"))],
    )
}

/// Runs `request` on a thread: a flag that turns true once it returned, and the thread.
fn in_background<R: Send + 'static>(
    request: impl FnOnce() -> R + Send + 'static,
) -> (Arc<AtomicBool>, thread::JoinHandle<R>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let handle = thread::spawn(move || {
        let r = request();
        flag.store(true, Ordering::SeqCst);
        r
    });
    (done, handle)
}

#[test]
fn a_silent_upstream_is_a_504_within_the_bound_and_waits_for_no_other_request() {
    let silent = Arc::new(AtomicBool::new(false));
    let up = stalling_upstream(silent.clone());
    let acr = Arc::new(acr_with(&pull_through(&up.url()), short_waits(), vec![]));
    assert_eq!(get(&acr, "/v2/ok/manifests/1").status, 200);

    // A request for a repository the upstream never answers, and meanwhile others.
    let (stalled_done, stalled) = in_background({
        let acr = acr.clone();
        move || timed_get(&acr, "/v2/stall/manifests/1")
    });
    thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let r = get(&acr, "/v2/ok/manifests/1");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        !stalled_done.load(Ordering::SeqCst),
        "the other requests waited for the stalled one"
    );
    let (r, took) = stalled.join().expect("stalled request");
    assert_oci_error(&r, 504);
    assert!(took < 3 * BOUND, "answered after {took:?}");

    // A body that stops after its headers: 504 within the idle bound.
    let (r, took) = timed_get(&acr, "/v2/slowbody/manifests/1");
    assert_oci_error(&r, 504);
    assert!(took < 3 * BOUND, "answered after {took:?}");

    // The whole upstream goes silent, then recovers.
    silent.store(true, Ordering::SeqCst);
    let (r, took) = timed_get(&acr, "/v2/ok/manifests/1");
    assert!(r.status == 504 || r.status == 502, "{}", r.text());
    assert_oci_error(&r, r.status);
    assert!(took < 3 * BOUND, "answered after {took:?}");
    assert_serves_once_recovered(&acr, &silent, "/v2/ok/manifests/1");
}

#[test]
fn cache_hits_never_wait_for_a_silent_upstream() {
    let silent = Arc::new(AtomicBool::new(false));
    let up = stalling_upstream(silent.clone());
    let runmd = pipeline(&up.url(), &[], &[".cache cache", ".ttl 1s"], &routes(""));
    let acr = Arc::new(acr_with(&runmd, short_waits(), vec![]));
    let (_, digest) = tiny_manifest();
    assert_eq!(get(&acr, "/v2/ok/manifests/1").status, 200);
    silent.store(true, Ordering::SeqCst);
    let (stalled_done, stalled) = in_background({
        let acr = acr.clone();
        move || get(&acr, "/v2/stall/manifests/1")
    });
    thread::sleep(Duration::from_millis(300));
    // By digest: a hit, answered while the upstream holds the other request.
    let r = get(&acr, &format!("/v2/ok/manifests/{digest}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!stalled_done.load(Ordering::SeqCst), "the hit waited");
    // By tag past its TTL: the revalidation gives up within the bound, the cached one is served.
    thread::sleep(Duration::from_millis(1200));
    let (r, took) = timed_get(&acr, "/v2/ok/manifests/1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took < 3 * BOUND, "{took:?}");
    assert_oci_error(&stalled.join().expect("stalled"), 504);
}

#[test]
fn a_silent_upstream_on_a_cold_start_holds_no_queue_of_probes() {
    let silent = Arc::new(AtomicBool::new(true));
    let up = stalling_upstream(silent.clone());
    let acr = Arc::new(acr_with(&pull_through(&up.url()), short_waits(), vec![]));
    // Four cold requests at once: one probe of /v2/, and every request answered within the
    // bound of that probe (not one probe after another).
    let paths = (0..4).map(|i| format!("/v2/ok/manifests/{i}")).collect();
    assert_concurrent_gets_fail_in_bound(&acr, paths, "four cold requests");
    silent.store(false, Ordering::SeqCst);
    assert_eq!(get(&acr, "/v2/ok/manifests/1").status, 200);
}

#[test]
fn a_silent_token_realm_is_a_504_within_the_bound_and_recovers() {
    let realm_silent = Arc::new(AtomicBool::new(true));
    let flag = realm_silent.clone();
    let realm = FakeUpstream::start_on("127.0.0.1", move |_: &FakeRequest| {
        if flag.load(Ordering::SeqCst) {
            thread::sleep(FOREVER);
        }
        FakeReply::new(200, &[], r#"{"token":"good-token","expires_in":300}"#)
    });
    let challenge = format!(r#"Bearer realm="{}/token",service="svc""#, realm.url());
    let up = FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if req.header("authorization") != Some("Bearer good-token") {
            return FakeReply::new(401, &[("WWW-Authenticate", &challenge)], "");
        }
        manifest_reply()
    });
    let acr = Arc::new(acr_with(&pull_through(&up.url()), short_waits(), vec![]));
    let paths = vec!["/v2/app/manifests/1".to_string(); 3];
    assert_concurrent_gets_fail_in_bound(&acr, paths, "three requests behind a silent realm");
    assert_serves_once_recovered(&acr, &realm_silent, "/v2/app/manifests/1");
}

// ------------------------------------------------------------------------------------------
// 2. redirects

#[test]
fn a_redirect_from_https_down_to_http_is_refused() {
    let tls = TestTls::new();
    let storage = FakeUpstream::start_on("127.0.0.1", |_: &FakeRequest| {
        FakeReply::new(200, &[], "stolen")
    });
    let location = format!("http://{}/blob", storage.host());
    let up = FakeUpstream::start_tls(&tls, move |req: &FakeRequest| {
        if req.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        FakeReply::new(307, &[("Location", &location)], "")
    });
    let mut env = short_waits();
    env.push(("SSL_CERT_FILE".into(), tls.ca_file().display().to_string()));
    let acr = acr_with(&pull_through(&up.url()), env, vec![]);
    let digest = digest_of(b"stolen");
    let r = get(&acr, &format!("/v2/app/blobs/{digest}"));
    assert_oci_error(&r, 502);
    assert!(oci_message(&r.text()).contains("https"), "{}", r.text());
    assert_eq!(storage.connections(), 0, "{:?}", storage.requests());
    // The upstream was asked (so the refusal is acr's, not a failed connection).
    assert!(up.requests().iter().any(|r| r.contains("/blobs/")));
    acr.assert_serves(None);
}

#[test]
fn a_redirect_to_a_metadata_address_is_refused_at_once() {
    let up = upstream_past_v2(|req: &FakeRequest| {
        let to = if req.path.contains("/blobs/") {
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
        } else if req.path.contains("/manifests/") {
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
        } else {
            "http://[fd00:ec2::254]/latest/meta-data/"
        };
        FakeReply::new(302, &[("Location", to)], "")
    });
    let acr = acr_with(&pull_through(&up.url()), short_waits(), vec![]);
    for path in [
        format!("/v2/app/blobs/{}", digest_of(b"x")),
        "/v2/app/manifests/1".to_string(),
        "/v2/app/tags/list".to_string(),
    ] {
        // Refused before any connection: well inside the connect bound.
        let (r, took) = timed_get(&acr, &path);
        assert_oci_error(&r, 502);
        assert!(
            oci_message(&r.text()).contains("metadata")
                || oci_message(&r.text()).contains("origin"),
            "{path}: {}",
            r.text()
        );
        assert!(took < BOUND, "{path}: {took:?}");
    }
    acr.assert_serves(None);
}

#[test]
fn a_chain_of_redirects_is_cut_after_five_hops() {
    let up = upstream_past_v2(|req: &FakeRequest| {
        let n: u32 = req
            .path
            .rsplit("hop=")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let location = format!("/v2/app/blobs/{}?hop={}", digest_of(b"x"), n + 1);
        FakeReply::new(302, &[("Location", &location)], "")
    });
    let acr = acr_with(&pull_through(&up.url()), short_waits(), vec![]);
    let r = get(&acr, &format!("/v2/app/blobs/{}", digest_of(b"x")));
    assert_oci_error(&r, 502);
    assert!(
        oci_message(&r.text()).contains("redirected more than"),
        "{}",
        r.text()
    );
    let hops = up
        .requests()
        .iter()
        .filter(|r| r.contains("/blobs/"))
        .count();
    assert!(hops <= 6, "{hops} requests: {:?}", up.requests());
    acr.assert_serves(None);
}

#[test]
fn documents_redirected_to_another_host_are_never_served() {
    let attacker = FakeUpstream::start_on("127.0.0.2", |req: &FakeRequest| {
        let body = if req.path.contains("tags") {
            r#"{"name":"app","tags":["attacker-tag"]}"#.to_string()
        } else {
            let (m, _) = tiny_manifest();
            String::from_utf8_lossy(&m).replace("0000", "6666")
        };
        FakeReply::new(200, &[("Content-Type", "application/json")], body)
    });
    let attacker_url = attacker.url();
    let up = FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if req.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        let location = format!("{attacker_url}/doc?for={}", req.path.replace('/', "_"));
        FakeReply::new(302, &[("Location", &location)], "")
    });
    let acr = acr_with(&pull_through(&up.url()), short_waits(), vec![]);
    let digest = digest_of(b"anything");
    for path in [
        "/v2/app/tags/list".to_string(),
        "/v2/app/manifests/1".to_string(),
        format!("/v2/app/referrers/{digest}"),
    ] {
        let r = get(&acr, &path);
        assert_oci_error(&r, 502);
        assert!(!r.text().contains("attacker-tag"), "{path}: {}", r.text());
    }
    assert_eq!(attacker.connections(), 0, "{:?}", attacker.requests());
    acr.assert_serves(None);
}

#[test]
fn a_blob_follows_its_redirect_to_storage_without_the_upstreams_authorization() {
    let blob = b"the blob bytes".to_vec();
    let digest = digest_of(&blob);
    let stored = blob.clone();
    let storage = FakeUpstream::start_on("127.0.0.2", move |_: &FakeRequest| {
        FakeReply::new(200, &[], stored.clone())
    });
    let location = format!("{}/bucket/blob?X-Amz-Signature=abc", storage.url());
    let expected = basic_auth("alice", "s3cret-pass");
    let up = FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if req.header("authorization") != Some(expected.as_str()) {
            return FakeReply::new(401, &[("WWW-Authenticate", r#"Basic realm="reg""#)], "");
        }
        if req.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        FakeReply::new(307, &[("Location", &location)], "")
    });
    let acr = acr_logging_in_to(&up, "alice:s3cret-pass");
    let r = get(&acr, &format!("/v2/app/blobs/{digest}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, blob);
    let got = storage.received();
    assert_eq!(got.len(), 1, "{:?}", storage.requests());
    assert_eq!(got[0].header("authorization"), None);
    assert!(!storage.everything_received().contains("s3cret-pass"));
}

// ------------------------------------------------------------------------------------------
// 3. realms

#[test]
fn a_plain_http_realm_on_another_host_never_gets_the_password() {
    let realm = FakeUpstream::start_on("127.0.0.2", |_: &FakeRequest| {
        FakeReply::new(200, &[], r#"{"token":"t"}"#)
    });
    let challenge = format!(r#"Bearer realm="{}/token",service="svc""#, realm.url());
    let up = FakeUpstream::start_on("127.0.0.1", move |_: &FakeRequest| {
        FakeReply::new(401, &[("WWW-Authenticate", &challenge)], "")
    });
    let acr = acr_logging_in_to(&up, "alice:realm-pass-123");
    let r = get(&acr, "/v2/app/manifests/1");
    assert_oci_error(&r, 502);
    assert!(oci_message(&r.text()).contains("realm"), "{}", r.text());
    assert_eq!(realm.connections(), 0, "{}", realm.everything_received());
    assert!(!up.everything_received().contains("realm-pass-123"));
    acr.assert_serves(None);
}

#[test]
fn a_metadata_realm_is_refused_and_a_huge_token_answer_too() {
    let huge = Arc::new(AtomicBool::new(false));
    let flag = huge.clone();
    let realm = FakeUpstream::start_on("127.0.0.1", move |_: &FakeRequest| {
        if flag.load(Ordering::SeqCst) {
            let pad = "x".repeat(4 << 20);
            return FakeReply::new(200, &[], format!(r#"{{"token":"t","pad":"{pad}"}}"#));
        }
        FakeReply::new(200, &[], r#"{"token":"t"}"#)
    });
    let realm_url = realm.url();
    let up = FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        let realm = if req.path.contains("/meta/") {
            "https://169.254.169.254/token".to_string()
        } else {
            format!("{realm_url}/token")
        };
        if req.header("authorization") == Some("Bearer t") && !req.path.contains("/meta/") {
            return manifest_reply();
        }
        let challenge = format!(r#"Bearer realm="{realm}",service="svc""#);
        FakeReply::new(401, &[("WWW-Authenticate", &challenge)], "")
    });
    let acr = acr_with(&pull_through(&up.url()), short_waits(), vec![]);
    // The challenge of /v2/ names a good realm; this repository's 401 a metadata one.
    assert_eq!(get(&acr, "/v2/app/manifests/1").status, 200);
    let (r, took) = timed_get(&acr, "/v2/meta/app/manifests/1");
    assert_oci_error(&r, 502);
    assert!(took < BOUND, "{took:?}");
    huge.store(true, Ordering::SeqCst);
    let r = get(&acr, "/v2/other/manifests/1");
    assert_oci_error(&r, 502);
    assert!(oci_message(&r.text()).contains("more than"), "{}", r.text());
    huge.store(false, Ordering::SeqCst);
    assert_eq!(get(&acr, "/v2/third/manifests/1").status, 200);
    acr.assert_serves(None);
}

// ------------------------------------------------------------------------------------------
// 4. credentials are bound to the upstreams the pipeline names

/// An https upstream a client may name through `.allow 127.0.0.1:*`: it asks for Basic auth
/// and records what it gets.
fn credential_thief(tls: &TestTls) -> FakeUpstream {
    FakeUpstream::start_tls(tls, |_: &FakeRequest| {
        FakeReply::new(401, &[("WWW-Authenticate", r#"Basic realm="evil""#)], "")
    })
}

/// A named upstream that takes `alice:PASS` (Basic) and serves a manifest.
fn named_upstream(pass: &str) -> FakeUpstream {
    let expected = basic_auth("alice", pass);
    FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if req.header("authorization") != Some(expected.as_str()) {
            return FakeReply::new(401, &[("WWW-Authenticate", r#"Basic realm="reg""#)], "");
        }
        if req.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        manifest_reply()
    })
}

#[test]
fn credentials_never_go_to_an_upstream_a_client_chose_through_a_glob() {
    let tls = TestTls::new();
    for (source, login) in ["file", "environment"].into_iter().zip(["creds", ""]) {
        let pass = format!("pass-from-{source}");
        let good = named_upstream(&pass);
        let evil = credential_thief(&tls);
        let runmd = pipeline(&good.url(), &[], &[".allow 127.0.0.1:*"], &routes(login));
        let mut env = short_waits();
        env.push(("SSL_CERT_FILE".into(), tls.ca_file().display().to_string()));
        let mut files = Vec::new();
        if source == "file" {
            files.push(("creds".to_string(), format!("alice:{pass}\n")));
        } else {
            env.push(("ACR_UPSTREAM_USERNAME".into(), "alice".into()));
            env.push(("ACR_UPSTREAM_PASSWORD".into(), pass.clone()));
        }
        let acr = acr_with(&runmd, env, files);
        // The pipeline's own upstream gets them.
        let r = get(&acr, "/v2/app/manifests/1");
        assert_eq!(r.status, 200, "{source}: {}", r.text());
        // One a client names with ?ns= through the glob does not.
        let r = get(&acr, &format!("/v2/app/manifests/1?ns={}", evil.host()));
        assert_oci_error(&r, 401);
        assert!(
            evil.requests().iter().any(|r| r.contains("/manifests/")),
            "{source}: the attack never reached the upstream: {:?}",
            evil.requests()
        );
        for req in evil.received() {
            assert_eq!(req.header("authorization"), None, "{source}: {req:?}");
        }
        assert!(!evil.everything_received().contains(&pass), "{source}");
        // Neither the client's answer nor the log names the user, the source or the secret.
        assert!(
            !r.text().contains("alice") && !r.text().contains(&pass),
            "{}",
            r.text()
        );
        assert!(
            !acr.log().contains(&pass),
            "{source}: the log has the secret"
        );
        acr.assert_serves(None);
    }
}

// ------------------------------------------------------------------------------------------
// 5. `.login-acr` sends the Azure AD token to the login server only

#[test]
fn login_acr_posts_the_azure_ad_token_to_the_login_server_only() {
    use crate::harness::acr_standin::*;
    let standin = AcrStandin::start(&AcrStandinOptions::default());
    let thief = FakeUpstream::start_on("127.0.0.2", |_: &FakeRequest| {
        FakeReply::new(200, &[], r#"{"refresh_token":"stolen"}"#)
    });
    let challenge = format!(
        r#"Bearer realm="{}/oauth2/token",service="{}""#,
        thief.url(),
        thief.host()
    );
    // The login server: its challenge names the thief's realm; it answers the exchange.
    let login_server = FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if req.path.starts_with("/oauth2/exchange") {
            return FakeReply::new(200, &[], r#"{"refresh_token":"from-the-login-server"}"#);
        }
        FakeReply::new(401, &[("WWW-Authenticate", &challenge)], "")
    });
    let runmd = format!(
        "``` mirror\n+ .engine\n: .event start\n```\n\n``` start mirror\n+ .runtime\n\
         : .login-acr example\n: .login-server {server}\n: .mirror {server}\n\
         : .host {ACR}, resolve, pull\n+ .proxy {ACR}\n: .cache off\n{routes}```\n",
        server = login_server.url(),
        routes = routes("access_token"),
    );
    let env = vec![
        ("PATH".into(), path_without_az()),
        ("AZURE_TENANT_ID".into(), TENANT.into()),
        ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
        ("AZURE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
        ("AZURE_AUTHORITY_HOST".into(), standin.url()),
    ];
    let acr = acr_with(&runmd, env, vec![]);
    assert!(
        wait_until(Duration::from_secs(30), || login_server
            .requests()
            .iter()
            .any(|r| r.starts_with("POST /oauth2/exchange"))),
        "no exchange at the login server: {:?}\n{}",
        login_server.requests(),
        acr.log()
    );
    let exchange = login_server
        .received()
        .into_iter()
        .find(|r| r.path.starts_with("/oauth2/exchange"))
        .expect("exchange");
    let form = String::from_utf8_lossy(&exchange.body).into_owned();
    assert!(form.contains("access_token="), "{form}");
    assert_eq!(thief.connections(), 0, "{}", thief.everything_received());
    let kept = wait_until(Duration::from_secs(10), || {
        walk_files(acr.dir()).iter().any(|p| {
            p.ends_with("access_token")
                && std::fs::read_to_string(p).is_ok_and(|t| t.trim() == "from-the-login-server")
        })
    });
    assert!(kept, "the refresh token was not kept:\n{}", acr.log());
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// 7. a token belongs to the credential that got it

#[test]
fn two_identities_with_one_user_name_never_share_an_upstream_token() {
    // The token service answers `t-<refresh token>`: which identity got a token shows.
    let realm = FakeUpstream::start_on("127.0.0.1", |req: &FakeRequest| {
        let form = String::from_utf8_lossy(&req.body).into_owned();
        let refresh = form
            .split('&')
            .find_map(|kv| kv.strip_prefix("refresh_token="))
            .unwrap_or("anonymous")
            .to_string();
        FakeReply::new(
            200,
            &[],
            format!(r#"{{"token":"t-{refresh}","expires_in":300}}"#),
        )
    });
    let challenge = format!(r#"Bearer realm="{}/token",service="svc""#, realm.url());
    let blob = b"a blob".to_vec();
    let served = blob.clone();
    let up = FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if !req
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer t-"))
        {
            return FakeReply::new(401, &[("WWW-Authenticate", &challenge)], "");
        }
        if req.path.contains("/blobs/") {
            return FakeReply::new(200, &[], served.clone());
        }
        manifest_reply()
    });
    // Two routes, two credential files: both ACR-style identity tokens, so both are user
    // 00000000-0000-0000-0000-000000000000.
    let routes = ": .manifests head, get\n:   .login identity-a\n:   .authn\n:   .resolve\n\
                  : .blobs head, get\n:   .login identity-b\n:   .authn\n:   .pull\n";
    let acr = acr_with(
        &pipeline(&up.url(), &[], &[], routes),
        short_waits(),
        vec![
            ("identity-a".into(), "refresh-token-aaa\n".into()),
            ("identity-b".into(), "refresh-token-bbb\n".into()),
        ],
    );
    assert_eq!(get(&acr, "/v2/app/manifests/1").status, 200);
    let r = get(&acr, &format!("/v2/app/blobs/{}", digest_of(&blob)));
    assert_eq!(r.status, 200, "{}", r.text());
    let auth_of = |what: &str| -> Vec<String> {
        up.received()
            .iter()
            .filter(|r| r.path.contains(what))
            .filter_map(|r| r.header("authorization").map(String::from))
            .collect()
    };
    assert_eq!(auth_of("/manifests/"), ["Bearer t-refresh-token-aaa"]);
    assert_eq!(auth_of("/blobs/"), ["Bearer t-refresh-token-bbb"]);
}

// ------------------------------------------------------------------------------------------
// 8. secrets in errors

#[test]
fn signed_urls_and_credential_details_reach_neither_the_client_nor_the_log() {
    let dead = closed_port();
    let up = FakeUpstream::start_on("127.0.0.1", move |req: &FakeRequest| {
        if req.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        if req.path.contains("/blobs/") {
            // Storage that does not answer, behind a pre-signed URL.
            let to = format!(
                "http://127.0.0.1:{dead}/bucket/blob?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=SIGSECRET1"
            );
            return FakeReply::new(307, &[("Location", &to)], "");
        }
        if req.path.contains("/denied/") {
            let message = "access denied; retry at https://blob.example/c/b?sv=2024&se=2030&sig=SIGSECRET2 or X-Amz-Signature=SIGSECRET3";
            return FakeReply::new(
                403,
                &[("Location", "https://blob.example/c/b?sig=SIGSECRET4")],
                oci_error("DENIED", message),
            );
        }
        FakeReply::new(
            500,
            &[("Location", "https://blob.example/c/b?sig=SIGSECRET5")],
            oci_error("UNKNOWN", "see https://blob.example/c/b?sig=SIGSECRET6"),
        )
    });
    let mut env = short_waits();
    env.push(("RUST_LOG".into(), "debug".into()));
    let acr = acr_with(&pull_through(&up.url()), env, vec![]);
    let mut bodies = String::new();
    let r = get(&acr, &format!("/v2/app/blobs/{}", digest_of(b"x")));
    assert_oci_error(&r, 502);
    bodies += &r.text();
    let r = get(&acr, "/v2/denied/manifests/1");
    assert_oci_error(&r, 403);
    assert!(
        oci_message(&r.text()).contains("access denied"),
        "{}",
        r.text()
    );
    bodies += &r.text();
    let r = get(&acr, "/v2/broken/manifests/1");
    assert_oci_error(&r, 502);
    bodies += &r.text();
    let log = acr.log();
    for n in 1..=6 {
        let secret = format!("SIGSECRET{n}");
        assert!(
            !bodies.contains(&secret),
            "{secret} reached a client: {bodies}"
        );
        assert!(!log.contains(&secret), "{secret} reached the log");
    }
    assert!(!bodies.contains("AKIAEXAMPLE") && !log.contains("AKIAEXAMPLE"));

    // Refused credentials: the client hears which upstream, not whose or from where.
    let refusing = FakeUpstream::start_on("127.0.0.1", |_: &FakeRequest| {
        FakeReply::new(401, &[("WWW-Authenticate", r#"Basic realm="reg""#)], "")
    });
    let runmd = pipeline(&refusing.url(), &[], &[], &routes("my-creds-file"));
    let mut env = short_waits();
    env.push(("RUST_LOG".into(), "debug".into()));
    let acr = acr_with(
        &runmd,
        env,
        vec![("my-creds-file".into(), "svc-user-7:pw-SECRET-7\n".into())],
    );
    let r = get(&acr, "/v2/app/manifests/1");
    assert_oci_error(&r, 401);
    for hidden in ["svc-user-7", "my-creds-file", "pw-SECRET-7"] {
        assert!(!r.text().contains(hidden), "{hidden}: {}", r.text());
    }
    assert!(!acr.log().contains("pw-SECRET-7"));
    acr.assert_serves(None);
}
