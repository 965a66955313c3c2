//! Faults around acr's content store that the other fault tests do not cover: a real upstream
//! killed in the middle of a 64 MiB blob (and back again), an upstream that trickles a blob one
//! byte a second, an upstream answering 500, 429 and 503 (with short and long `Retry-After`),
//! and a store on a full disk.
//!
//! Every test starts its own upstream and its own acr (own port, own temp dirs), so they run
//! in parallel.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::faults::*;
use crate::harness::store::*;
use crate::harness::*;

const MIB: usize = 1 << 20;

/// What a blob GET got: status and headers, how many body bytes arrived, how the body ended,
/// whether the bytes are the expected ones, and the body itself when it is an error (status
/// ≥ 400).
struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    len: u64,
    end: Result<(), String>,
    matches: bool,
    error_body: String,
    /// From the request to the first body byte (or the end, without one).
    first_byte: Option<Duration>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn describe(&self) -> String {
        format!(
            "status {}, {} body bytes, end {:?}, bytes right: {}, Content-Length {:?}{}",
            self.status,
            self.len,
            self.end,
            self.matches,
            self.header("content-length"),
            if self.error_body.is_empty() {
                String::new()
            } else {
                format!(", body {:?}", self.error_body)
            }
        )
    }
}

/// GETs `url`, comparing the body with `expected` as it streams (never holding it whole).
fn fetch(url: &str, headers: &[(&str, &str)], expected: &[u8]) -> Fetched {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(120))
        .build();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let started = Instant::now();
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => {
            return Fetched {
                status: 0,
                headers: vec![],
                len: 0,
                end: Err(e.to_string()),
                matches: false,
                error_body: String::new(),
                first_byte: None,
            }
        }
    };
    let status = resp.status();
    let headers: Vec<(String, String)> = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut reader = resp.into_reader();
    if status >= 400 {
        let mut body = Vec::new();
        let end = reader
            .read_to_end(&mut body)
            .map(|_| ())
            .map_err(|e| e.to_string());
        return Fetched {
            status,
            headers,
            len: body.len() as u64,
            end,
            matches: false,
            error_body: String::from_utf8_lossy(&body).into_owned(),
            first_byte: Some(started.elapsed()),
        };
    }
    let mut buf = vec![0u8; 256 << 10];
    let mut len = 0u64;
    let mut matches = true;
    let mut first_byte = None;
    let end = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(k) => {
                first_byte.get_or_insert_with(|| started.elapsed());
                let at = len as usize;
                matches &= expected.get(at..at + k) == Some(&buf[..k]);
                len += k as u64;
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    matches &= len == expected.len() as u64;
    Fetched {
        status,
        headers,
        len,
        end,
        matches,
        error_body: String::new(),
        first_byte,
    }
}

/// The lines of acr's log that contain `needle`.
fn log_lines(acr: &Acr, needle: &str) -> Vec<String> {
    acr.log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A GET that must answer 200 within `limit`; returns the body.
#[track_caller]
fn prompt_get(acr: &Acr, path: &str, headers: &[(&str, &str)], limit: Duration) -> Vec<u8> {
    let started = Instant::now();
    let r = try_http_request("GET", &format!("{}{path}", acr.url()), headers, None)
        .unwrap_or_else(|e| panic!("{e}\n{}", acr.log()));
    let took = started.elapsed();
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert!(
        took < limit,
        "GET {path} took {took:?} (limit {limit:?})\n{}",
        acr.log()
    );
    r.body
}

// ------------------------------------------------------------------------------------------
// 1. the upstream killed in the middle of a blob

/// A real distribution serves the 64 MiB layer through a relay paced to 4 MiB/s; once acr
/// has 8 MiB of it, the registry is `kill -9`ed. The client's transfer breaks (never a
/// complete 200), the store keeps nothing of it (no object, tmp/ emptied), acr goes on
/// serving (the manifest from the store, `/v2/`), and once distribution is back on the same
/// storage and port the same blob pulls whole and is stored.
#[test]
fn an_upstream_killed_mid_blob_breaks_the_transfer_keeps_nothing_and_heals() {
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, 64);
    let layer = Arc::new(big_fixture(64).blob(&big.layer_digest));
    assert_eq!(layer.len() as u64, big.layer_size);
    let relay = Relay::start(reg.addr(), 4 * MIB as u64);
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &relay.url(),
        &[&cache_setting(cache.path())],
    ));
    let accept = [("Accept", ACCEPT_MANIFESTS)];
    // The manifest first: from now on it is in the store.
    let manifest = prompt_get(
        &acr,
        "/v2/library/big/manifests/64",
        &accept,
        Duration::from_secs(30),
    );
    assert_eq!(digest_of(&manifest), big.manifest_digest);

    let blob_path = format!("/v2/library/big/blobs/{}", big.layer_digest);
    let client = {
        let (url, layer) = (format!("{}{blob_path}", acr.url()), layer.clone());
        thread::spawn(move || fetch(&url, &[], &layer))
    };
    let midway = wait_until(Duration::from_secs(60), || {
        temp_files(cache.path())
            .iter()
            .any(|(_, n)| *n >= 8 * MIB as u64)
    });
    assert!(midway, "the fetch never got 8 MiB in:\n{}", acr.log());
    let relayed = relay.bytes_down();
    kill9(reg.pid());
    let killed_at = Instant::now();
    let got = client.join().expect("client thread");
    let broke_after = killed_at.elapsed();
    println!(
        "killed the upstream after {:.1} MiB had passed the relay; the client: {}; it knew {:.1?} after the kill",
        relayed as f64 / MIB as f64,
        got.describe(),
        broke_after
    );
    assert!(
        !(got.status == 200 && got.end.is_ok()),
        "a complete-looking 200 although the upstream died: {}",
        got.describe()
    );
    assert!(got.len < layer.len() as u64, "{}", got.describe());
    assert!(
        broke_after < Duration::from_secs(30),
        "the client waited {broke_after:?} for a transfer that could not finish"
    );
    // Nothing of it is kept.
    assert!(
        wait_until(Duration::from_secs(10), || temp_files(cache.path())
            .is_empty()),
        "tmp/ after the failed fetch: {:?}",
        temp_files(cache.path())
    );
    assert!(!has_blob(cache.path(), &big.layer_digest));
    let failed = acr.wait_requests(&[&blob_path, "failed="], 1);
    assert_eq!(failed.len(), 1, "no failed request line:\n{}", acr.log());
    let why = log_lines(&acr, "fetch failed");
    assert!(!why.is_empty(), "the log does not say the fetch failed");
    println!("acr: {}\nacr: {}", why[0], failed[0]);
    // acr goes on serving what it has.
    acr.assert_serves(Some(("library/big", "64")));
    let by_digest = prompt_get(
        &acr,
        &format!("/v2/library/big/manifests/{}", big.manifest_digest),
        &accept,
        Duration::from_secs(5),
    );
    assert_eq!(by_digest, manifest);
    // While the upstream is down, the blob is a clear error.
    let r = http_request("GET", &format!("{}{blob_path}", acr.url()), &[], None);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAVAILABLE");

    // The upstream comes back on the same storage and port: the same blob pulls whole.
    relay.set_paced(false);
    let _back = restart_registry(&reg);
    let got = fetch(&format!("{}{blob_path}", acr.url()), &[], &layer);
    assert!(
        got.status == 200 && got.end.is_ok() && got.matches,
        "after the upstream came back: {}\n{}",
        got.describe(),
        acr.log()
    );
    assert!(
        wait_until(Duration::from_secs(20), || has_blob(
            cache.path(),
            &big.layer_digest
        )),
        "the blob was not stored after a good fetch"
    );
    assert!(temp_files(cache.path()).is_empty());
    let hex = big.layer_digest.trim_start_matches("sha256:");
    let stored = std::fs::read(cache.path().join("blobs/sha256").join(&hex[..2]).join(hex))
        .expect("read the stored blob");
    assert!(stored == *layer, "the stored blob is not the layer");
}

// ------------------------------------------------------------------------------------------
// 2. an upstream that trickles

/// An upstream that sends a blob's headers and then one byte a second. Meanwhile acr answers
/// everything else promptly (a cold manifest and config from the same upstream, the manifest
/// again, `/v2/`: each in under a second); the trickling client gets each byte as it comes;
/// when it gives up, acr closes its connection; nothing is stored while the blob is
/// incomplete; the fetch goes on for the next client, who gets the whole blob, and then it is
/// stored.
#[test]
fn a_trickling_upstream_holds_up_nothing_else_and_stores_nothing_partial() {
    const LEN: usize = 16;
    let layer = pseudo_random_bytes("acr-faults-trickle", LEN);
    let layer_digest = digest_of(&layer);
    let config = image_config("trickle", std::slice::from_ref(&layer_digest));
    let config_digest = digest_of(&config);
    let manifest = image_manifest(&config, &[(layer_digest.clone(), layer.clone())]);
    let manifest_digest = digest_of(&manifest);
    let fake = {
        let (ld, cd, md) = (
            layer_digest.clone(),
            config_digest.clone(),
            manifest_digest.clone(),
        );
        let (layer, config, manifest) = (layer.clone(), config.clone(), manifest.clone());
        SlowUpstream::start(move |r: &FakeRequest| {
            let p = r.path.as_str();
            if p == "/v2/" {
                return SlowReply::new(200, &[("Content-Type", "application/json")], "{}");
            }
            if p == "/v2/library/trickle/manifests/1"
                || p == format!("/v2/library/trickle/manifests/{md}")
            {
                return SlowReply::new(
                    200,
                    &[
                        ("Content-Type", OCI_MANIFEST),
                        ("Docker-Content-Digest", md.as_str()),
                    ],
                    manifest.clone(),
                );
            }
            if p == format!("/v2/library/trickle/blobs/{cd}") {
                return SlowReply::new(200, &[], config.clone());
            }
            if p == format!("/v2/library/trickle/blobs/{ld}") {
                let mut reply = SlowReply::new(
                    200,
                    &[("Content-Type", "application/octet-stream")],
                    layer.clone(),
                );
                reply.per_byte = Some(Duration::from_secs(1));
                return reply;
            }
            SlowReply::new(
                404,
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#,
            )
        })
    };
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &fake.url(),
        &[&cache_setting(cache.path())],
    ));
    let blob_path = format!("/v2/library/trickle/blobs/{layer_digest}");
    let blob_url = format!("{}{blob_path}", acr.url());

    // The trickling client, reading byte by byte and noting when each arrived.
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build();
    let started = Instant::now();
    let resp = agent.get(&blob_url).call().unwrap_or_else(|e| {
        panic!(
            "the trickled blob: {e} after {:?}\n{}",
            started.elapsed(),
            acr.log()
        )
    });
    let headers_after = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.header("content-length"),
        Some(LEN.to_string().as_str())
    );
    let mut reader = resp.into_reader();
    let mut got = Vec::new();
    let mut arrivals = Vec::new();
    let mut one = [0u8; 1];
    let mut checks = 0;
    while got.len() < 3 {
        let n = reader.read(&mut one).expect("a trickled byte");
        assert_eq!(n, 1, "the trickled body ended after {} bytes", got.len());
        got.push(one[0]);
        arrivals.push(started.elapsed());
        // Meanwhile everything else is prompt: a cold manifest and config from the same
        // upstream, then the manifest again (from the store), HEAD, `/v2/`.
        let limit = Duration::from_secs(1);
        let m = prompt_get(
            &acr,
            "/v2/library/trickle/manifests/1",
            &[("Accept", OCI_MANIFEST)],
            limit,
        );
        assert_eq!(m, manifest);
        let c = prompt_get(
            &acr,
            &format!("/v2/library/trickle/blobs/{config_digest}"),
            &[],
            limit,
        );
        assert_eq!(c, config);
        prompt_get(&acr, "/v2/", &[], limit);
        let head_started = Instant::now();
        let h = http_request(
            "HEAD",
            &format!("{}/v2/library/trickle/manifests/1", acr.url()),
            &[("Accept", OCI_MANIFEST)],
            None,
        );
        assert_eq!(h.status, 200);
        assert!(head_started.elapsed() < limit);
        checks += 1;
        // Incomplete: not in the store.
        assert!(!has_blob(cache.path(), &layer_digest));
    }
    assert_eq!(got[..], layer[..3]);
    println!(
        "trickle: headers after {headers_after:.1?}, the first three bytes after {arrivals:.1?}; \
         {checks} rounds of other requests each under 1 s meanwhile"
    );
    assert!(
        arrivals[0] < Duration::from_secs(5),
        "the first byte took {:?}",
        arrivals[0]
    );
    assert!(
        arrivals[2] - arrivals[0] >= Duration::from_millis(1500),
        "the bytes did not come as they were sent: {arrivals:?}"
    );

    // The client gives up: acr closes its side.
    let before = established_on_port(acr.pid(), acr.port());
    assert!(
        before >= 1,
        "acr holds no client connection while it streams"
    );
    drop(reader);
    let gave_up = Instant::now();
    let freed = wait_until(Duration::from_secs(10), || {
        established_on_port(acr.pid(), acr.port()) == 0
    });
    println!(
        "trickle: {before} client connection(s) held while streaming; after the client left: {} ({:.1?})",
        established_on_port(acr.pid(), acr.port()),
        gave_up.elapsed()
    );
    assert!(
        freed,
        "acr still holds {} client connection(s) 10 s after the client left",
        established_on_port(acr.pid(), acr.port())
    );
    let left = acr.wait_requests(&[&blob_path, "failed="], 1);
    assert_eq!(left.len(), 1, "{}", acr.log());
    assert!(left[0].contains("went away"), "{}", left[0]);
    assert!(!has_blob(cache.path(), &layer_digest));

    // The fetch goes on: the next client follows it and gets the whole blob.
    let got = fetch(&blob_url, &[], &layer);
    assert!(
        got.status == 200 && got.end.is_ok() && got.matches,
        "the next client: {}\n{}",
        got.describe(),
        acr.log()
    );
    println!(
        "trickle: the next client's first byte after {:.1?}, whole blob {:.1?} after the first request",
        got.first_byte.unwrap_or_default(),
        started.elapsed()
    );
    assert!(
        got.first_byte.unwrap_or_default() < Duration::from_secs(2),
        "what had arrived was not passed on at once"
    );
    assert!(wait_until(Duration::from_secs(10), || has_blob(
        cache.path(),
        &layer_digest
    )));
    assert!(temp_files(cache.path()).is_empty());
    let layer_gets = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {blob_path}")))
        .count();
    assert_eq!(layer_gets, 1, "{:?}", fake.requests());
    assert_eq!(
        fake.broken_off(),
        0,
        "acr broke off the upstream's transfer"
    );
}

// ------------------------------------------------------------------------------------------
// 3. 500, 429 and 503

/// A fake upstream whose answers per path follow a script: `script(path, n)` for the `n`th
/// request (from 0) of that path. Every request is noted with its time.
struct Scripted {
    fake: FakeUpstream,
    times: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Scripted {
    fn start(script: impl Fn(&str, usize) -> FakeReply + Send + Sync + 'static) -> Scripted {
        let times = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
        let counts = Mutex::new(HashMap::<String, usize>::new());
        let t = times.clone();
        let fake = FakeUpstream::start(move |r: &FakeRequest| {
            t.lock()
                .expect("times")
                .push((Instant::now(), format!("{} {}", r.method, r.path)));
            if r.path == "/v2/" {
                return FakeReply::new(200, &[("Content-Type", "application/json")], "{}");
            }
            let n = {
                let mut c = counts.lock().expect("counts");
                let e = c.entry(format!("{} {}", r.method, r.path)).or_insert(0);
                *e += 1;
                *e - 1
            };
            script(&r.path, n)
        });
        Scripted { fake, times }
    }

    /// When each `GET path` arrived.
    fn gets(&self, path: &str) -> Vec<Instant> {
        let want = format!("GET {path}");
        self.times
            .lock()
            .expect("times")
            .iter()
            .filter(|(_, r)| *r == want)
            .map(|(t, _)| *t)
            .collect()
    }
}

/// A one-layer image for the scripted upstream: (manifest, its digest).
fn small_manifest(label: &str) -> (Vec<u8>, String) {
    let config = image_config(label, &[]);
    let manifest = image_manifest(&config, &[]);
    let digest = digest_of(&manifest);
    (manifest, digest)
}

fn manifest_reply(manifest: &[u8], digest: &str) -> FakeReply {
    FakeReply::new(
        200,
        &[
            ("Content-Type", OCI_MANIFEST),
            ("Docker-Content-Digest", digest),
        ],
        manifest.to_vec(),
    )
}

/// An upstream answering 500 is a 502 OCI error naming it, and nothing is cached (the next
/// request asks again); a 429 or 503 with `Retry-After: 1` is waited out (one second, then
/// the upstream is asked again) and the client gets the 200, for manifests and blobs; a 429
/// with `Retry-After: 120` reaches the client at once, as 429 `TOOMANYREQUESTS` with the
/// same `Retry-After`.
#[test]
fn upstream_500_429_and_503_answers() {
    let (m_slow, d_slow) = small_manifest("slow");
    let (m_busy, d_busy) = small_manifest("busy");
    let blob = pseudo_random_bytes("acr-faults-busy-blob", 300_000);
    let blob_digest = digest_of(&blob);
    let blob_path = format!("/v2/library/blobby/blobs/{blob_digest}");
    let up = {
        let (m_slow, d_slow, m_busy, d_busy) = (
            m_slow.clone(),
            d_slow.clone(),
            m_busy.clone(),
            d_busy.clone(),
        );
        let (blob, blob_path) = (blob.clone(), blob_path.clone());
        Scripted::start(move |path, n| match path {
            "/v2/library/five/manifests/1" => {
                FakeReply::new(500, &[("Content-Type", "text/plain")], "internal trouble")
            }
            "/v2/library/slow/manifests/1" if n == 0 => {
                FakeReply::new(429, &[("Retry-After", "1")], "slow down")
            }
            "/v2/library/slow/manifests/1" => manifest_reply(&m_slow, &d_slow),
            "/v2/library/long/manifests/1" => FakeReply::new(
                429,
                &[("Retry-After", "120"), ("Content-Type", "application/json")],
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"come back in two minutes"}]}"#,
            ),
            "/v2/library/busy/manifests/1" if n == 0 => {
                FakeReply::new(503, &[("Retry-After", "1")], "restarting")
            }
            "/v2/library/busy/manifests/1" => manifest_reply(&m_busy, &d_busy),
            p if p == blob_path && n == 0 => {
                FakeReply::new(503, &[("Retry-After", "1")], "restarting")
            }
            p if p == blob_path => FakeReply::new(200, &[], blob.clone()),
            _ => FakeReply::new(
                404,
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#,
            ),
        })
    };
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &up.fake.url(),
        &[&cache_setting(cache.path())],
    ));
    let accept = [("Accept", OCI_MANIFEST)];
    let get = |path: &str| {
        let started = Instant::now();
        let r = http_request("GET", &format!("{}{path}", acr.url()), &accept, None);
        (r, started.elapsed())
    };

    // 500: a 502 naming the upstream, every time (nothing cached).
    for attempt in 1..=2 {
        let (r, took) = get("/v2/library/five/manifests/1");
        assert_eq!(
            r.status,
            502,
            "500 upstream, attempt {attempt}: {}",
            r.text()
        );
        assert_eq!(oci_code(&r.text()), "UNAVAILABLE", "{}", r.text());
        let message = oci_message(&r.text());
        assert!(
            message.contains(&up.fake.host()) && message.contains("500"),
            "the message does not name the upstream and its answer: {message}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
        if attempt == 1 {
            println!("500 upstream: {} {}", r.status, r.text().trim());
        }
    }
    assert_eq!(
        up.gets("/v2/library/five/manifests/1").len(),
        2,
        "the second request did not reach the upstream: {:?}",
        up.fake.requests()
    );

    // 429, Retry-After: 1, then 200: acr waits and asks again.
    let (r, took) = get("/v2/library/slow/manifests/1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, m_slow);
    let t = up.gets("/v2/library/slow/manifests/1");
    assert_eq!(t.len(), 2, "{:?}", up.fake.requests());
    let gap = t[1] - t[0];
    println!("429 Retry-After 1: asked again after {gap:.2?}; the client waited {took:.2?}");
    assert!(
        gap >= Duration::from_millis(900),
        "asked again after {gap:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // 429, Retry-After: 120: the client's to see, at once.
    let (r, took) = get("/v2/library/long/manifests/1");
    println!(
        "429 Retry-After 120: {} Retry-After {:?} after {took:.2?}: {}",
        r.status,
        r.header("retry-after"),
        r.text().trim()
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("120"));
    assert_eq!(oci_code(&r.text()), "TOOMANYREQUESTS");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(up.gets("/v2/library/long/manifests/1").len(), 1);

    // 503, Retry-After: 1, then 200.
    let (r, took) = get("/v2/library/busy/manifests/1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, m_busy);
    let t = up.gets("/v2/library/busy/manifests/1");
    assert_eq!(t.len(), 2, "{:?}", up.fake.requests());
    assert!(
        t[1] - t[0] >= Duration::from_millis(900),
        "{:?}",
        t[1] - t[0]
    );
    println!(
        "503 Retry-After 1: asked again after {:.2?}; the client waited {took:.2?}",
        t[1] - t[0]
    );

    // The same for a blob fetched into the store.
    let got = fetch(&format!("{}{blob_path}", acr.url()), &[], &blob);
    assert!(
        got.status == 200 && got.end.is_ok() && got.matches,
        "blob after a 503 Retry-After 1: {}",
        got.describe()
    );
    let t = up.gets(&blob_path);
    assert_eq!(t.len(), 2, "{:?}", up.fake.requests());
    assert!(t[1] - t[0] >= Duration::from_millis(900));
    assert!(wait_until(Duration::from_secs(10), || has_blob(
        cache.path(),
        &blob_digest
    )));
    let waits = log_lines(&acr, "upstream asked to retry later");
    assert_eq!(waits.len(), 3, "{waits:#?}");
    println!("acr: {}", waits[0]);
    acr.assert_serves(None);
}

/// A 503 with a `Retry-After` too long to wait out reaches the client like a long 429 does:
/// at once, with the upstream's `Retry-After`, so a client (or containerd moving to its next
/// host) knows when to come back.
#[test]
fn a_long_503_reaches_the_client_with_its_retry_after() {
    let up = Scripted::start(|path, _| match path {
        p if p.starts_with("/v2/library/down/") => {
            FakeReply::new(503, &[("Retry-After", "120")], "maintenance")
        }
        _ => FakeReply::new(404, &[], ""),
    });
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &up.fake.url(),
        &[&cache_setting(cache.path())],
    ));
    let mut wrong = Vec::new();
    for path in [
        "/v2/library/down/manifests/1".to_string(),
        format!("/v2/library/down/blobs/sha256:{}", "1".repeat(64)),
    ] {
        let started = Instant::now();
        let r = http_request(
            "GET",
            &format!("{}{path}", acr.url()),
            &[("Accept", OCI_MANIFEST)],
            None,
        );
        let took = started.elapsed();
        println!(
            "503 Retry-After 120 on {path}: {} Retry-After {:?} after {took:.2?}: {}",
            r.status,
            r.header("retry-after"),
            r.text().trim()
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(up.gets(&path).len(), 1, "acr retried a 2-minute wait");
        oci_code(&r.text());
        if (r.status, r.header("retry-after")) != (503, Some("120")) {
            wrong.push(format!(
                "{path}: {} with Retry-After {:?}: {}",
                r.status,
                r.header("retry-after"),
                r.text().trim()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "an upstream 503 with Retry-After: 120 does not reach the client as 503 with Retry-After: 120:\n- {}",
        wrong.join("\n- ")
    );
}

// ------------------------------------------------------------------------------------------
// 4. a full disk

/// The store on an 8 MiB tmpfs and a 64 MiB blob to pull through it: the client gets either a
/// clear error or the whole, right blob (never a 200 cut short or wrong bytes); nothing
/// partial is kept (no object, tmp/ emptied); the log says the store cannot write; small
/// images that fit still pull (and are stored).
#[test]
fn a_full_disk_fails_cleanly_and_small_pulls_still_work() {
    let disk = match Tmpfs::mount("8m") {
        Ok(d) => d,
        Err(why) => {
            println!("SKIPPED: cannot mount a tmpfs for the store here: {why}");
            return;
        }
    };
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, 64);
    let layer = Arc::new(big_fixture(64).blob(&big.layer_digest));
    let small = push_image(
        &reg,
        "library/small",
        "1",
        vec![pseudo_random_bytes("acr-faults-small", 200_000)],
    );
    let after = push_image(
        &reg,
        "library/after",
        "1",
        vec![
            pseudo_random_bytes("acr-faults-after-a", 300_000),
            pseudo_random_bytes("acr-faults-after-b", 2_000),
        ],
    );
    let acr = Acr::start(&store_pipeline(&reg.url(), &[&cache_setting(disk.path())]));
    let accept = [("Accept", OCI_MANIFEST)];
    let pull = |p: &Pushed| {
        let (repo, tag) = p.repo_ref.split_once(':').expect("repo:tag");
        let m = prompt_get(
            &acr,
            &format!("/v2/{repo}/manifests/{tag}"),
            &accept,
            Duration::from_secs(30),
        );
        assert_eq!(m, p.manifest);
        let config = image_config(&p.repo_ref, &p.layer_digests());
        assert_eq!(digest_of(&config), p.config_digest);
        let blobs = std::iter::once((p.config_digest.clone(), config)).chain(p.layers.clone());
        for (d, bytes) in &blobs.collect::<Vec<_>>() {
            let got = fetch(&format!("{}/v2/{repo}/blobs/{d}", acr.url()), &[], bytes);
            assert!(
                got.status == 200 && got.end.is_ok() && got.matches,
                "{d}: {}",
                got.describe()
            );
        }
    };
    pull(&small);
    println!(
        "full disk: {} KiB free on the store's tmpfs before the big blob",
        disk.free_bytes() >> 10
    );
    // The manifest fits; the 64 MiB layer cannot.
    prompt_get(
        &acr,
        "/v2/library/big/manifests/64",
        &accept,
        Duration::from_secs(30),
    );
    let blob_path = format!("/v2/library/big/blobs/{}", big.layer_digest);
    let got = fetch(&format!("{}{blob_path}", acr.url()), &[], &layer);
    println!(
        "full disk: the client of the 64 MiB blob got {}",
        got.describe()
    );

    let mut problems = Vec::new();
    let clear_error = got.status >= 400
        && got.end.is_ok()
        && serde_json::from_str::<serde_json::Value>(&got.error_body)
            .ok()
            .and_then(|j| j["errors"][0]["code"].as_str().map(String::from))
            .is_some();
    let whole = got.status == 200 && got.end.is_ok() && got.matches;
    if !(clear_error || whole) {
        problems.push(format!(
            "the client got neither a clear error nor the whole blob: {}",
            got.describe()
        ));
    }
    // Nothing partial is kept.
    if !wait_until(Duration::from_secs(10), || {
        temp_files(disk.path()).is_empty()
    }) {
        problems.push(format!(
            "tmp/ is not emptied: {:?}",
            temp_files(disk.path())
        ));
    }
    if has_blob(disk.path(), &big.layer_digest) {
        problems.push("a 64 MiB object on an 8 MiB disk".to_string());
    }
    // The log says why.
    let why: Vec<String> = acr
        .log()
        .lines()
        .filter(|l| {
            l.contains("No space left on device")
                || l.contains("cannot write")
                || l.contains("not enough space")
        })
        .map(str::to_string)
        .collect();
    for l in &why {
        println!("full disk: acr: {l}");
    }
    if why.is_empty() {
        problems.push("acr's log does not say the store cannot write".to_string());
    }
    // acr goes on serving: what it has, and small images that fit.
    acr.assert_serves(Some(("library/small", "1")));
    pull(&after);
    for d in after.all_digests().iter().skip(1) {
        assert!(
            wait_until(Duration::from_secs(10), || has_blob(disk.path(), d)),
            "{d} was not stored after the disk had room again"
        );
    }
    println!("full disk: {} KiB free at the end", disk.free_bytes() >> 10);
    assert!(
        problems.is_empty(),
        "full disk:\n- {}",
        problems.join("\n- ")
    );
    // acr goes first; the tmpfs is unmounted when `disk` is dropped, last.
    drop(acr);
}
