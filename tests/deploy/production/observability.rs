//! Observability (/status, /metrics, the request log).

use super::*;

// ------------------------------------------------------------------------------------------
// observability

const MANIFESTS_GET_200: &str =
    "acr_requests_total{route=\"manifests\",method=\"GET\",status=\"200\"}";
const BLOBS_GET_200: &str = "acr_requests_total{route=\"blobs\",method=\"GET\",status=\"200\"}";
const BLOBS_COUNT: &str = "acr_request_duration_seconds_count{route=\"blobs\"}";
const MANIFESTS_COUNT: &str = "acr_request_duration_seconds_count{route=\"manifests\"}";
const HITS: &str = "acr_cache_hits_total";
const MISSES: &str = "acr_cache_misses_total";

/// The digests of the config and layers of `test:1`.
fn test_blobs() -> Vec<String> {
    let m = fixtures().test.manifest();
    let mut blobs = vec![m["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string()];
    blobs.extend(fixtures().test.layers().into_iter().map(|(d, _)| d));
    blobs
}

/// One pull of `library/test:1` by raw requests: `manifests` GETs of the tag, then each blob.
fn raw_pull(acr: &Acr, manifests: usize) -> usize {
    for _ in 0..manifests {
        let r = acr.fetch_manifest("GET", "/v2/library/test/manifests/1");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(digest_of(&r.body), fixtures().test.digest);
    }
    let blobs = test_blobs();
    for digest in &blobs {
        let r = acr.fetch("GET", &format!("/v2/library/test/blobs/{digest}"), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(&digest_of(&r.body), digest);
    }
    blobs.len()
}

/// Scrapes until `key` has grown by `by` over `before` (a request is counted when its last
/// byte has left, which may be just after the client has it), then returns that scrape.
fn scrape_until(acr: &Acr, before: &Metrics, waits: &[(&str, f64)]) -> Metrics {
    let mut last = scrape(&acr.url());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && !waits
            .iter()
            .all(|(k, by)| last.get(k) - before.get(k) >= *by)
    {
        std::thread::sleep(Duration::from_millis(200));
        last = scrape(&acr.url());
    }
    last
}

/// Every histogram of `/metrics` has cumulative buckets (non-decreasing with `le`), ends with
/// `+Inf`, and its `+Inf` bucket is its `_count`.
fn assert_histograms_cumulative(m: &Metrics) {
    let routes = m.label_values("acr_request_duration_seconds_bucket", "route");
    assert!(
        routes.iter().any(|r| r == "manifests") && routes.iter().any(|r| r == "blobs"),
        "{routes:?}"
    );
    for route in &routes {
        let buckets = m.buckets("acr_request_duration_seconds", route);
        assert!(buckets.len() >= 2, "{route}: {buckets:?}");
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{route}: le not increasing: {buckets:?}");
            assert!(w[0].1 <= w[1].1, "{route}: not cumulative: {buckets:?}");
        }
        let (le, inf) = *buckets.last().expect("buckets");
        assert!(le.is_infinite(), "{route}: the last bucket is not +Inf");
        let count = m.get(&format!(
            "acr_request_duration_seconds_count{{route=\"{route}\"}}"
        ));
        assert_eq!(inf, count, "{route}: +Inf bucket != _count");
        let sum = m.get(&format!(
            "acr_request_duration_seconds_sum{{route=\"{route}\"}}"
        ));
        assert!(sum >= 0.0, "{route}: _sum {sum}");
    }
}

/// `/metrics` after pulls: the request counter of manifests and the latency count of blobs
/// grow by exactly the requests made, a second pull is served from the store (hits grow,
/// misses do not), histograms are cumulative. `/healthz` is 200; `/readyz` is 200 while the
/// upstream answers and 503 once it is gone (after the 5 s readiness cache).
#[test]
fn metrics_health_and_readiness() {
    let reg = plain_upstream();
    let acr = Acr::launch(
        &pipeline(&reg.url(), &[], &[".cache store"], &routes("")),
        AcrOptions::default(),
    );

    let m0 = scrape(&acr.url());
    assert!(m0.samples.contains_key("acr_uptime_seconds"), "{m0:?}");
    // First pull: 3 manifest GETs and every blob.
    let blobs = raw_pull(&acr, 3);
    let m1 = scrape_until(
        &acr,
        &m0,
        &[(MANIFESTS_GET_200, 3.0), (BLOBS_COUNT, blobs as f64)],
    );
    assert_eq!(m1.get(MANIFESTS_GET_200) - m0.get(MANIFESTS_GET_200), 3.0);
    assert_eq!(m1.get(MANIFESTS_COUNT) - m0.get(MANIFESTS_COUNT), 3.0);
    assert_eq!(m1.get(BLOBS_COUNT) - m0.get(BLOBS_COUNT), blobs as f64);
    assert_eq!(m1.get(BLOBS_GET_200) - m0.get(BLOBS_GET_200), blobs as f64);
    assert!(m1.get(MISSES) > m0.get(MISSES), "the first pull missed");
    assert_histograms_cumulative(&m1);

    // Second pull: from the store.
    let blobs = raw_pull(&acr, 1);
    let m2 = scrape_until(
        &acr,
        &m1,
        &[(MANIFESTS_GET_200, 1.0), (BLOBS_COUNT, blobs as f64)],
    );
    assert_eq!(m2.get(MANIFESTS_GET_200) - m1.get(MANIFESTS_GET_200), 1.0);
    assert_eq!(m2.get(BLOBS_COUNT) - m1.get(BLOBS_COUNT), blobs as f64);
    assert!(
        m2.get(HITS) - m1.get(HITS) >= blobs as f64,
        "hits {} -> {} on the second pull of {blobs} blobs",
        m1.get(HITS),
        m2.get(HITS)
    );
    assert_eq!(
        m2.get(MISSES),
        m1.get(MISSES),
        "the second pull asked the upstream"
    );
    assert_histograms_cumulative(&m2);
    // A pull by skopeo is served from the store too.
    let out = temp_dir("acr-metrics-");
    let dest = format!("dir:{}", out.path().join("d").display());
    skopeo(&[
        "copy",
        &format!("docker://{}/library/test:1", acr.host()),
        &dest,
    ])
    .ok();
    let m3 = scrape(&acr.url());
    assert!(m3.get(HITS) > m2.get(HITS), "skopeo's pull hit nothing");
    assert_histograms_cumulative(&m3);

    // Health and readiness.
    let h = acr.fetch("GET", "/healthz", &[]);
    assert_eq!(h.status, 200);
    let ready = acr.fetch("GET", "/readyz", &[]);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(ready.text().contains(&reg.url()), "{}", ready.text());
    drop(reg);
    std::thread::sleep(Duration::from_secs(7));
    let r = acr.fetch("GET", "/readyz", &[]);
    assert_eq!(
        r.status,
        503,
        "/readyz with the upstream stopped: {}",
        r.text()
    );
    assert!(r.text().contains("not ready"), "{}", r.text());
    let h = acr.fetch("GET", "/healthz", &[]);
    assert_eq!(h.status, 200, "/healthz does not depend on the upstream");
    let m4 = scrape(&acr.url());
    assert!(
        m4.get("acr_requests_total{route=\"readyz\",method=\"GET\",status=\"503\"}") >= 1.0,
        "{:?}",
        m4.samples
    );
}

/// The text between `start` and the first `end` after it, in `html`.
fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let i = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in the page:\n{html}"));
    let rest = &html[i..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// `/status` in headless Chromium: the DOM names acr's address, the upstream, the hit ratio
/// and the requests of the pull just made; the screenshot is a real 1200x900 picture.
#[test]
fn status_page_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        panic!(
            "no headless Chromium: install Debian's chromium-headless-shell (scripts/deps.sh does)"
        );
    };
    let reg = plain_upstream();
    let acr = Acr::launch(
        &pipeline(&reg.url(), &[], &[".cache store"], &routes("")),
        AcrOptions::default(),
    );
    let out = temp_dir("acr-status-");
    let dest = format!("dir:{}", out.path().join("d").display());
    let src = format!("docker://{}/library/test:1", acr.host());
    skopeo(&["copy", &src, &dest]).ok();
    skopeo(&[
        "copy",
        &src,
        &format!("dir:{}", out.path().join("e").display()),
    ])
    .ok();
    let url = format!("{}/status", acr.url());

    let dom = run_chromium(&browser, &["--dump-dom"], &url).ok().stdout;
    assert!(
        dom.contains(&format!("acr on {}", acr.host())),
        "no `acr on {}` in:\n{dom}",
        acr.host()
    );
    let upstreams = section(&dom, "id=\"upstreams\"", "</ul>");
    assert!(upstreams.contains(&reg.url()), "{upstreams}");
    let ratio = section(&dom, "id=\"hit-ratio\"", "</dd>");
    assert!(ratio.contains("hits") && ratio.contains('%'), "{ratio}");
    // What the upstream sent and what the two pulls were served of it.
    let saving = section(&dom, "id=\"saving\"", "</table>");
    assert!(
        saving.contains(&format!("<td>{}</td>", reg.host())),
        "{saving}"
    );
    let recent = section(&dom, "id=\"recent\"", "</table>");
    assert!(
        recent.contains("/v2/library/test/manifests/1"),
        "the manifest pull is not listed:\n{recent}"
    );
    for digest in test_blobs() {
        assert!(
            recent.contains(&format!("/v2/library/test/blobs/{digest}")),
            "the blob {digest} is not listed:\n{recent}"
        );
    }
    assert!(
        recent.matches("<tr>").count() > test_blobs().len() + 1, // the head, the manifest, each blob
        "{recent}"
    );

    let png = out.path().join("status.png");
    let shot = run_chromium(
        &browser,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,900",
        ],
        &url,
    );
    assert!(shot.success() && png.exists(), "{shot:?}");
    // For a person to look at: ACR_TEST_ARTIFACTS=DIR keeps the picture.
    if let Some(dir) = std::env::var_os("ACR_TEST_ARTIFACTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&png, Path::new(&dir).join("status.png"));
    }
    let size = file_len(&png);
    assert!(size > 10 * 1024, "the screenshot is only {size} bytes");
    let facts = png_facts(&png);
    assert_eq!((facts.width, facts.height), (1200, 900), "{facts:?}");
    assert!(
        facts.distinct_colours > 16,
        "the screenshot is (nearly) one colour: {facts:?}"
    );
    assert!(distinct_bytes(&png) > 200, "{facts:?}");
}
