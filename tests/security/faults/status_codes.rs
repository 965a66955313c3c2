//! 500, 429 and 503 from the upstream.

use super::*;

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
        let r = acr.fetch("GET", path, &accept);
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
    let got = fetch_blob(&format!("{}{blob_path}", acr.url()), &[], &blob);
    got.assert_whole("blob after a 503 Retry-After 1", "");
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
        let r = acr.fetch("GET", &path, &[("Accept", OCI_MANIFEST)]);
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
