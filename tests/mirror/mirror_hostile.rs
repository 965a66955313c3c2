//! Hostile clients and hostile upstreams. Each test sends one kind of bad request (raw over
//! a TcpStream where an HTTP client would clean it up) and checks the answer is an OCI error
//! with the right status, or a closed connection, and that acr still serves afterwards.
//! A broken upstream (wrong bytes, a cut body, garbage) never turns into a complete-looking
//! 200.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(60);

/// An upstream with `library/test:1` and acr in front of it.
fn serving() -> (Registry, Acr) {
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let acr = Acr::start(&pull_through(&reg.url()));
    acr.assert_serves(Some(("library/test", "1")));
    (reg, acr)
}

fn get(acr: &Acr, path: &str) -> HttpResponse {
    acr.fetch("GET", path, &[])
}

/// Raw `METHOD PATH` over TCP, status and OCI code of the answer.
fn raw(acr: &Acr, method: &str, path: &str) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        acr.host()
    );
    let (status, text) = raw_request(&acr.host(), req.as_bytes(), TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", acr.log()));
    let code = if method == "HEAD" {
        String::new()
    } else {
        oci_code(&text)
    };
    (status, code)
}

#[test]
fn a_bad_digest_is_400_digest_invalid() {
    let (_reg, acr) = serving();
    let short = format!("sha256:{}", "a".repeat(63));
    let upper = format!("sha256:{}", "A".repeat(64));
    let md5 = format!("md5:{}", "a".repeat(32));
    for path in [
        "/v2/library/test/blobs/sha256:zz".to_string(),
        format!("/v2/library/test/blobs/{short}"),
        format!("/v2/library/test/blobs/{upper}"),
        format!("/v2/library/test/blobs/{md5}"),
        "/v2/library/test/blobs/nodigest".to_string(),
        format!("/v2/library/test/manifests/{short}"),
        format!("/v2/library/test/referrers/{short}"),
    ] {
        let r = get(&acr, &path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(oci_code(&r.text()), "DIGEST_INVALID", "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // None of them reached the upstream.
    assert!(acr.wait_requests(&["status=400", "upstream=-"], 7).len() >= 7);
    acr.assert_serves(Some(("library/test", "1")));
}

#[test]
fn dot_dot_in_a_name_is_400_name_invalid() {
    let (reg, acr) = serving();
    for path in [
        "/v2/library/../test/manifests/1",
        "/v2/../v2/library/test/manifests/1",
        "/v2/library/test/../../etc/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "/v2/library/%2e%2e/test/manifests/1",
        "/v2/library/./test/manifests/1",
        "/v2/library//test/manifests/1",
        "/v2/Library/test/manifests/1",
    ] {
        let (status, code) = raw(&acr, "GET", path);
        assert_eq!((status, code.as_str()), (400, "NAME_INVALID"), "{path}");
    }
    let long = format!("/v2/{}/manifests/1", "a".repeat(300));
    assert_eq!(raw(&acr, "GET", &long), (400, "NAME_INVALID".into()));
    // Nothing of that reached the upstream.
    assert_eq!(reg.count_requests("", ".."), 0);
    assert_eq!(reg.count_requests("", "%2e"), 0);
    acr.assert_serves(Some(("library/test", "1")));
}

#[test]
fn an_ns_not_allowed_is_403_denied_and_never_contacted() {
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let other = FakeUpstream::start(|_: &FakeRequest| FakeReply::new(200, &[], "{}"));
    let runmd = pipeline(
        &reg.url(),
        &[],
        &[".allow *.allowed.example", ".path-routing"],
        &routes(""),
    );
    let acr = Acr::start(&runmd);
    for path in [
        format!(
            "/v2/library/test/manifests/1?ns={}",
            other.host().replace(':', "%3A")
        ),
        format!("/v2/library/test/manifests/1?ns={}", other.host()),
        "/v2/library/test/manifests/1?ns=evil.example.com".to_string(),
        "/v2/library/test/manifests/1?ns=allowed.example.evil.com".to_string(),
        format!(
            "/v2/library/test/blobs/sha256:{}?ns=ghcr.io",
            "0".repeat(64)
        ),
        // path routing on: the first segment names a registry this file does not.
        format!("/v2/{}/library/test/manifests/1", "evil.example.com"),
    ] {
        let r = get(&acr, &path);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(oci_code(&r.text()), "DENIED", "{path}");
        let message = oci_message(&r.text());
        assert!(
            message.contains("not one this mirror serves")
                || message.contains("not a registry host"),
            "{}",
            r.text()
        );
    }
    // An ns glued into a URL must not smuggle another host past `.allow *.allowed.example`.
    for smuggled in [
        format!("{}/x.allowed.example", other.host()),
        format!("{}%23.allowed.example", other.host()),
        format!("{}%3F.allowed.example", other.host()),
        format!("{}%2Fx.allowed.example", other.host()),
        format!("u%40{}/.allowed.example", other.host()),
    ] {
        let path = format!("/v2/library/test/manifests/1?ns={smuggled}");
        let r = get(&acr, &path);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(oci_code(&r.text()), "DENIED", "{path}");
    }
    assert_eq!(
        other.connections(),
        0,
        "acr was an open proxy: {:?}",
        other.requests()
    );
    // The `.mirror` host by its ns is fine.
    let r = get(
        &acr,
        &format!(
            "/v2/library/test/manifests/1?ns={}",
            reg.host().replace(':', "%3A")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    acr.assert_serves(Some(("library/test", "1")));
}

#[test]
fn a_one_mib_header_is_refused_without_harm() {
    let (_reg, acr) = serving();
    let big = "a".repeat(1 << 20);
    let req = format!(
        "GET /v2/library/test/manifests/1 HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
        acr.host()
    );
    match raw_request(&acr.host(), req.as_bytes(), TIMEOUT) {
        Ok((status, text)) => assert_eq!(status, 431, "{}", &text[..text.len().min(500)]),
        // Closed (or reset) while we were still sending: also a refusal.
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            "{e:?}"
        ),
    }
    // Many headers that are each small but add up to 1 MiB.
    let mut req = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n", acr.host());
    for i in 0..16384 {
        req += &format!("X-H{i}: {}\r\n", "b".repeat(56));
    }
    req += "\r\n";
    if let Ok((status, _)) = raw_request(&acr.host(), req.as_bytes(), TIMEOUT) {
        assert!(status == 431 || status == 400, "{status}");
    }
    acr.assert_serves(Some(("library/test", "1")));
}

/// Connections that send half a request, or nothing at all, are closed after the header
/// timeout; others are served meanwhile.
#[test]
fn a_half_sent_request_is_closed_and_others_are_served_meanwhile() {
    let (_reg, acr) = serving();
    // Several slow clients that never finish their headers, and some that send nothing.
    let mut slow: Vec<TcpStream> = (0..6)
        .map(|i| {
            let mut s = TcpStream::connect(acr.host()).expect("connect");
            if i % 2 == 0 {
                s.write_all(b"GET /v2/library/test/manifests/1 HTTP/1.1\r\nHost: x\r\nX-Partial: ")
                    .expect("write half a request");
            }
            s
        })
        .collect();
    let started = Instant::now();
    // Meanwhile everyone else is served.
    for _ in 0..3 {
        acr.assert_serves(Some(("library/test", "1")));
    }
    // The header timeout closes them (acr's is 20 s; allow for a loaded machine).
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(90)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        let closed = match s.read(&mut buf) {
            Ok(0) => true,
            // hyper may answer 408 before closing
            Ok(n) => String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
        };
        assert!(closed, "a half-sent (or unsent) request was never closed");
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(85),
        "closed only after {waited:?}"
    );
    acr.assert_serves(Some(("library/test", "1")));
}

#[test]
fn pushes_and_other_methods_are_405_unsupported() {
    let (reg, acr) = serving();
    let layer = &fixtures().test.layers()[0].0;
    for (method, path) in [
        ("PUT", "/v2/library/test/manifests/1".to_string()),
        ("DELETE", "/v2/library/test/manifests/1".to_string()),
        ("POST", "/v2/library/test/blobs/uploads/".to_string()),
        ("PATCH", "/v2/library/test/blobs/uploads/abc".to_string()),
        (
            "PUT",
            "/v2/library/test/blobs/uploads/abc?digest=x".to_string(),
        ),
        ("DELETE", format!("/v2/library/test/blobs/{layer}")),
        ("GET", "/v2/library/test/blobs/uploads/".to_string()),
        ("HEAD", "/v2/library/test/tags/list".to_string()),
        ("BREW", "/v2/".to_string()),
    ] {
        let body: &[u8] = b"{}";
        let r = try_http_request(
            method,
            &format!("{}{path}", acr.url()),
            &[("Content-Type", "application/json")],
            (method != "GET" && method != "HEAD").then_some(body),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        if method != "HEAD" {
            assert_eq!(oci_code(&r.text()), "UNSUPPORTED", "{method} {path}");
        }
    }
    // Nothing was written upstream.
    let writes: Vec<AccessLogEntry> = reg
        .access_log()
        .into_iter()
        .filter(|e| !matches!(e.method.as_str(), "GET" | "HEAD"))
        .filter(|e| e.user_agent.starts_with("acr/"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    acr.assert_serves(Some(("library/test", "1")));
}

#[test]
fn an_undeclared_route_is_an_oci_error() {
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    // Manifests by GET only, blobs; no tags, no referrers, no HEAD manifests.
    let routes = ": .manifests get\n:   .resolve\n: .blobs head, get\n:   .pull\n";
    let acr = Acr::start(&pipeline(&reg.url(), &[], &[], routes));
    let r = get(&acr, "/v2/library/test/tags/list");
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNSUPPORTED");
    assert!(oci_message(&r.text()).contains(".tags get"), "{}", r.text());
    let r = acr.fetch("HEAD", "/v2/library/test/manifests/1", &[]);
    assert_eq!(r.status, 405);
    // The distribution spec: a registry without the referrers API answers 404, so clients
    // fall back to the referrers tag schema.
    let r = get(
        &acr,
        &format!("/v2/library/test/referrers/{}", fixtures().test.digest),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNSUPPORTED");
    // Outside the API.
    let r = get(&acr, "/metrics/../v2/");
    assert!(r.status == 404 || r.status == 200, "{}", r.status);
    let (status, code) = raw(&acr, "GET", "/etc/passwd");
    assert_eq!((status, code.as_str()), (404, "NAME_UNKNOWN"));
    acr.assert_serves(Some(("library/test", "1")));
}

/// What a client makes of a blob GET: the status, the bytes, and whether the transfer ended
/// cleanly.
fn fetch_blob(url: &str) -> (u16, Vec<u8>, Result<(), String>) {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(s, r)) => {
            let mut body = Vec::new();
            let end = r
                .into_reader()
                .read_to_end(&mut body)
                .map(|_| ())
                .map_err(|e| e.to_string());
            return (s, body, end);
        }
        Err(e) => return (0, Vec::new(), Err(e.to_string())),
    };
    let status = resp.status();
    let declared: Option<usize> = resp.header("content-length").and_then(|v| v.parse().ok());
    let mut body = Vec::new();
    let mut end = resp
        .into_reader()
        .read_to_end(&mut body)
        .map(|_| ())
        .map_err(|e| e.to_string());
    if end.is_ok() {
        if let Some(n) = declared {
            if n != body.len() {
                end = Err(format!("{} of {n} bytes", body.len()));
            }
        }
    }
    (status, body, end)
}

/// A fake upstream that serves `bytes` (or `served`, when set) for every blob.
fn blob_upstream(served: Vec<u8>, truncate_to: Option<usize>) -> FakeUpstream {
    FakeUpstream::start(move |r: &FakeRequest| {
        let path = r.path.as_str();
        if path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        if path.contains("/blobs/") {
            let mut r = FakeReply::new(
                200,
                &[("Content-Type", "application/octet-stream")],
                served.clone(),
            );
            r.truncate_to = truncate_to;
            return r;
        }
        FakeReply::new(
            404,
            &[],
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#,
        )
    })
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_digest_is_never_a_clean_200() {
    for size in [100usize, 70_000, 3 << 20] {
        let good = pseudo_random_bytes(&format!("good-{size}"), size);
        let digest = digest_of(&good);
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // only the very last byte differs
        let fake = blob_upstream(bad.clone(), None);
        let acr = Acr::start(&pull_through(&fake.url()));
        let url = format!("{}/v2/library/x/blobs/{digest}", acr.url());
        for _ in 0..2 {
            let (status, body, end) = fetch_blob(&url);
            let clean_wrong = status == 200 && end.is_ok() && body == bad;
            assert!(
                !clean_wrong,
                "{size} bytes: a complete-looking 200 with the wrong bytes"
            );
            assert!(
                status != 200 || end.is_err(),
                "{size} bytes: status {status}, {} bytes, transfer {end:?}",
                body.len()
            );
            assert_ne!(digest_of(&body), digest);
        }
        assert!(
            acr.log().contains("digest mismatch"),
            "acr did not report the mismatch:\n{}",
            acr.log()
        );
        // The request log says the transfer broke, not that a 200 went out whole.
        let broken = acr.wait_requests(&[&format!("/blobs/{digest}"), "failed="], 2);
        assert_eq!(broken.len(), 2, "{}", acr.log());
        let all = acr.requests_with(&[&format!("/blobs/{digest}")]);
        assert!(
            all.len() == 2 && all.iter().all(|l| l.contains(" failed=")),
            "{all:#?}"
        );
        acr.assert_serves(None);
    }
}

#[test]
fn a_blob_cut_short_by_the_upstream_is_a_failed_transfer() {
    let good = pseudo_random_bytes("cut", 1 << 20);
    let digest = digest_of(&good);
    let fake = blob_upstream(good, Some(300_000));
    let acr = Acr::start(&pull_through(&fake.url()));
    let (status, body, end) = fetch_blob(&format!("{}/v2/library/x/blobs/{digest}", acr.url()));
    assert!(
        status != 200 || end.is_err(),
        "status {status}, {} bytes, {end:?}",
        body.len()
    );
    assert!(body.len() < 1 << 20);
    acr.assert_serves(None);
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_502_never_served() {
    let real = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#.to_vec();
    let digest = digest_of(&real);
    let mut tampered = real.clone();
    tampered[20] = b'3';
    let claimed = digest.clone();
    let fake = FakeUpstream::start(move |r: &FakeRequest| {
        let path = r.path.as_str();
        if path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        FakeReply::new(
            200,
            &[
                ("Content-Type", OCI_MANIFEST),
                // a tag's digest claimed by the upstream, not what it sends
                ("Docker-Content-Digest", claimed.as_str()),
            ],
            tampered.clone(),
        )
    });
    let acr = Acr::start(&pull_through(&fake.url()));
    for path in [
        format!("/v2/library/x/manifests/{digest}"),
        "/v2/library/x/manifests/latest".to_string(),
    ] {
        let r = acr.fetch("GET", &path, &[("Accept", OCI_MANIFEST)]);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert_eq!(oci_code(&r.text()), "UNAVAILABLE");
        assert!(oci_message(&r.text()).contains("does not match"));
    }
    acr.assert_serves(None);
}

#[test]
fn a_dead_or_garbage_upstream_is_a_502_oci_error() {
    // Nothing listens.
    let acr = Acr::start(&pull_through(&dead_url()));
    let r = get(&acr, "/v2/library/x/manifests/1");
    assert_upstream_unavailable(&r, "unreachable");
    acr.assert_serves(None);
    // Something that does not speak HTTP.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02garbage\r\n\r\n");
        }
    });
    let acr = Acr::start(&pull_through(&format!("http://{addr}")));
    for path in [
        "/v2/library/x/manifests/1".to_string(),
        format!("/v2/library/x/blobs/sha256:{}", "1".repeat(64)),
    ] {
        let r = get(&acr, &path);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert_eq!(oci_code(&r.text()), "UNAVAILABLE");
    }
    acr.assert_serves(None);
}

#[test]
fn an_oversized_manifest_is_refused() {
    let huge = vec![b' '; 5 << 20];
    let fake = FakeUpstream::start(move |r: &FakeRequest| {
        let path = r.path.as_str();
        if path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        FakeReply::new(200, &[("Content-Type", OCI_MANIFEST)], huge.clone())
    });
    let acr = Acr::start(&pull_through(&fake.url()));
    let r = get(&acr, "/v2/library/x/manifests/1");
    assert_upstream_unavailable(&r, "");
    acr.assert_serves(None);
}

/// A client-chosen `ns` (decoded from the query) cannot forge a line in acr's log.
#[test]
fn an_ns_with_a_newline_cannot_forge_a_log_line() {
    let (_reg, acr) = serving();
    let forged = "FORGED 2000-01-01T00:00:00Z INFO request method=GET status=200";
    let r = get(
        &acr,
        &format!(
            "/v2/library/test/manifests/1?ns=x%0A{}",
            forged.replace(' ', "%20")
        ),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let lines = acr.wait_requests(&["status=403"], 1);
    assert_eq!(lines.len(), 1, "{}", acr.log());
    assert!(lines[0].contains("ns=x\\nFORGED"), "{}", lines[0]);
    assert!(
        !acr.log().lines().any(|l| l.starts_with("FORGED")),
        "{}",
        acr.log()
    );
    acr.assert_serves(Some(("library/test", "1")));
}
