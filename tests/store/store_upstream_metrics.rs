//! The per-upstream numbers that show what acr saves (issue 17, part 5), end to end: a skopeo
//! pull through acr in front of a real CNCF distribution counts exactly what the upstream's
//! access log saw and exactly the bytes of the image, a second pull grows only what was
//! served; concurrent cold GETs of one blob count as coalesced onto the one fetch; an
//! upstream's `RateLimit-*` headers become gauges; and clients naming upstreams with `?ns=`
//! cannot grow the label set past its bound. `/metrics` and `/status.json` agree.

use std::sync::Arc;
use std::time::Duration;

use crate::harness::store::*;
use crate::harness::*;

/// The series `name{upstream="HOST"}` (`extra`: more labels after it, `,onto="request"`).
fn series(name: &str, upstream: &str, extra: &str) -> String {
    format!("{name}{{upstream=\"{upstream}\"{extra}}}")
}

const SENT: &str = "acr_upstream_requests_sent_total";
const FETCHED: &str = "acr_upstream_bytes_fetched_total";
const SERVED: &str = "acr_upstream_bytes_served_total";
const COALESCED: &str = "acr_upstream_coalesced_total";

/// One upstream's numbers as `/metrics` has them: `(sent, fetched, served)`.
fn numbers(m: &Scrape, upstream: &str) -> (u64, u64, u64) {
    (
        m.n(&series(SENT, upstream, "")),
        m.n(&series(FETCHED, upstream, "")),
        m.n(&series(SERVED, upstream, "")),
    )
}

/// `/status.json`'s entry for `upstream`.
#[track_caller]
fn status_of(acr: &Acr, upstream: &str) -> serde_json::Value {
    let r = acr.fetch("GET", "/status.json", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let all = r.json();
    all["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["upstream"] == upstream).cloned())
        .unwrap_or_else(|| panic!("no {upstream} in /status.json: {all}"))
}

#[test]
fn a_pull_counts_what_the_upstream_sent_and_a_second_pull_only_what_was_served() {
    let reg = Registry::start(RegistryAuth::None);
    let layers = vec![
        pseudo_random_bytes("acr-saving-1", 3 << 20),
        pseudo_random_bytes("acr-saving-2", 700_000),
    ];
    let img = push_image(&reg, "library/saved", "v1", layers);
    let config = image_config("library/saved:v1", &img.layer_digests());
    assert_eq!(digest_of(&config), img.config_digest);
    let layer_bytes: u64 = img.layers.iter().map(|(_, b)| b.len() as u64).sum();
    let image_bytes = img.manifest.len() as u64 + config.len() as u64 + layer_bytes;

    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(&reg.url(), &[&cache_setting(cache.path())]));
    let up = reg.host();
    let log_before = reg.access_log().len();
    // acr learnt the upstream's challenge (GET /v2/) as it started: counted, and logged.
    let (sent_before, _, _) = numbers(&scrape(&acr), &up);
    assert_eq!(sent_before, 1);
    assert!(reg.access_log().iter().any(|e| e.path == "/v2/"));

    let first = temp_dir("acr-saving-pull-");
    skopeo_to_dir(&acr.host(), &img.repo_ref, first.path()).ok();
    let m1 = scrape(&acr);
    let (sent, fetched, served) = numbers(&m1, &up);
    // Every request acr counted is one the upstream logged, and nothing else.
    let mut logged = 0;
    let agree = wait_until(Duration::from_secs(10), || {
        logged = reg.access_log().len() - log_before;
        logged as u64 == sent - sent_before
    });
    assert!(
        agree,
        "acr counted {sent} requests to {up}, the upstream logged {logged}: {:#?}",
        reg.access_log()
    );
    // The bytes fetched are the image's, each once: its manifest, config and layers.
    assert_eq!(fetched, image_bytes, "fetched from {up}");
    assert!(served >= image_bytes, "served {served} of {image_bytes}");
    // The same numbers as the process-wide counters (there is one upstream).
    assert_eq!(m1.n("acr_upstream_requests_total"), sent);
    assert_eq!(m1.n("acr_bytes_from_upstream_total"), fetched);
    assert_eq!(m1.n(&series(COALESCED, &up, ",onto=\"request\"")), 0);
    assert_eq!(m1.n(&series(COALESCED, &up, ",onto=\"replica\"")), 0);
    // A registry that sends no rate-limit headers has no gauges.
    assert!(!m1
        .samples
        .keys()
        .any(|k| k.starts_with("acr_upstream_ratelimit_")));

    // The second pull is served from the store: served grows by the image again (at least),
    // the upstream is neither asked nor sends a byte.
    let second = temp_dir("acr-saving-pull-");
    skopeo_to_dir(&acr.host(), &img.repo_ref, second.path()).ok();
    let m2 = scrape(&acr);
    let (sent2, fetched2, served2) = numbers(&m2, &up);
    assert_eq!((sent2, fetched2), (sent, fetched));
    assert!(served2 - served >= image_bytes, "{served} then {served2}");
    assert_eq!(reg.access_log().len() - log_before, logged);

    // `/status.json` says the same, and the page shows it.
    let s = status_of(&acr, &up);
    assert_eq!(s["requests"], sent2);
    assert_eq!(s["bytes_fetched"], fetched2);
    assert_eq!(s["bytes_served"], served2);
    assert_eq!(s["coalesced"]["request"], 0);
    assert_eq!(s["ratelimit"]["remaining"], serde_json::Value::Null);
    let page = acr.fetch("GET", "/status", &[]).text();
    assert!(page.contains("<table id=\"saving\">"), "{page}");
    assert!(page.contains(&format!("<td>{up}</td>")), "{page}");
    println!(
        "{up}: {sent2} requests, {fetched2} bytes fetched ({image_bytes} in the image), \
         {served2} bytes served over two pulls"
    );
}

/// Clients asking for one cold blob while its fetch is under way (the upstream takes 2 s to
/// answer) join that fetch: `onto="request"` counts all but the one that asked.
#[test]
fn concurrent_cold_gets_of_one_blob_count_as_coalesced() {
    const CLIENTS: usize = 8;
    let data = Arc::new(pseudo_random_bytes("acr-coalesced", 2 << 20));
    let size = data.len() as u64;
    let (fake, blob_path) = one_blob_upstream("library/c", data.clone(), |d: &[u8]| {
        std::thread::sleep(Duration::from_secs(2));
        FakeReply::new(200, &[("Content-Type", "application/octet-stream")], d)
    });
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &fake.url(),
        &[&cache_setting(cache.path())],
    ));
    let url = format!("{}{blob_path}", acr.url());
    for (i, got) in simultaneous_gets(&url, &data, CLIENTS)
        .into_iter()
        .enumerate()
    {
        assert!(
            got.status == 200 && got.end.is_ok() && got.matches,
            "client {i}"
        );
    }
    let blob_gets = fake
        .requests()
        .iter()
        .filter(|r| r.contains(&blob_path))
        .count();
    assert_eq!(blob_gets, 1, "{:?}", fake.requests());
    let up = fake.host();
    let m = scrape(&acr);
    assert_eq!(
        m.n(&series(COALESCED, &up, ",onto=\"request\"")),
        CLIENTS as u64 - 1
    );
    assert_eq!(m.n(&series(COALESCED, &up, ",onto=\"replica\"")), 0);
    let (sent, fetched, served) = numbers(&m, &up);
    assert_eq!(sent, fake.requests().len() as u64);
    assert_eq!(fetched, size);
    assert_eq!(served, CLIENTS as u64 * size);
    assert_eq!(
        status_of(&acr, &up)["coalesced"]["request"],
        CLIENTS as u64 - 1
    );
}

/// An upstream that announces its rate limit (as Docker Hub does, `7;w=60`) has it shown as
/// gauges; a later answer with a value that is not a number leaves the last good one.
#[test]
fn an_upstreams_rate_limit_headers_become_gauges() {
    let data = Arc::new(pseudo_random_bytes("acr-ratelimit", 4096));
    let blob_path = format!("/v2/library/r/blobs/{}", digest_of(&data));
    let digest = digest_of(&data);
    let fake = FakeUpstream::start(move |r: &FakeRequest| {
        let (remaining, limit) = if r.path.contains("/blobs/") {
            ("7;w=60", "100")
        } else {
            // The challenge probe (before the blob) and anything later: not numbers.
            ("plenty", "1e9")
        };
        let headers = [
            ("RateLimit-Remaining", remaining),
            ("RateLimit-Limit", limit),
            ("Content-Type", "application/octet-stream"),
        ];
        if r.path.ends_with(&digest) {
            return FakeReply::new(200, &headers, data.as_slice());
        }
        FakeReply::new(if r.path == "/v2/" { 200 } else { 404 }, &headers, "{}")
    });
    let acr = Acr::start(&pull_through(&fake.url()));
    let up = fake.host();
    let r = acr.fetch("GET", &blob_path, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let m = scrape(&acr);
    assert_eq!(m.types["acr_upstream_ratelimit_remaining"], "gauge");
    assert_eq!(m.n(&series("acr_upstream_ratelimit_remaining", &up, "")), 7);
    assert_eq!(m.n(&series("acr_upstream_ratelimit_limit", &up, "")), 100);
    // Another answer with unparseable values (a 404 here) changes nothing.
    let missing = format!("/v2/library/r/blobs/sha256:{}", "0".repeat(64));
    assert_eq!(acr.fetch("GET", &missing, &[]).status, 404);
    let m = scrape(&acr);
    assert_eq!(m.n(&series("acr_upstream_ratelimit_remaining", &up, "")), 7);
    assert_eq!(m.n(&series("acr_upstream_ratelimit_limit", &up, "")), 100);
    let s = status_of(&acr, &up);
    assert_eq!(s["ratelimit"]["remaining"], 7);
    assert_eq!(s["ratelimit"]["limit"], 100);
}

/// Clients may name any upstream `.allow` lets through: a hundred distinct `?ns=` values make
/// at most 64 series of their own and `upstream="other"`, and the pipeline's own upstream,
/// asked before them, keeps its series and goes on counting.
#[test]
fn many_ns_values_do_not_grow_the_series_past_the_bound() {
    const BOUND: usize = 64;
    let (fake, _) = one_blob_upstream("library/a", Arc::new(b"a".to_vec()), |d: &[u8]| {
        FakeReply::new(200, &[], d)
    });
    let acr = Acr::start(&pipeline(
        &fake.url(),
        &[],
        &[".allow 127.0.0.1:*"],
        &routes(""),
    ));
    let own = fake.host();
    assert_eq!(
        acr.fetch("GET", "/v2/library/a/manifests/1", &[]).status,
        404
    );
    let mut ports: Vec<u16> = (0..100).map(|_| closed_port()).collect();
    ports.sort_unstable();
    ports.dedup();
    ports.retain(|p| *p != fake.port());
    assert!(
        ports.len() > BOUND + 10,
        "only {} closed ports",
        ports.len()
    );
    for port in &ports {
        let r = acr.fetch(
            "GET",
            &format!("/v2/x/manifests/1?ns=127.0.0.1:{port}"),
            &[],
        );
        assert!(r.status >= 500, "{}: {}", r.status, r.text());
    }
    assert_eq!(
        acr.fetch("GET", "/v2/library/a/manifests/2", &[]).status,
        404
    );
    let m = scrape(&acr);
    let labelled: Vec<&String> = m
        .samples
        .keys()
        .filter(|k| k.starts_with(&format!("{SENT}{{")))
        .collect();
    assert_eq!(labelled.len(), BOUND + 1, "{labelled:#?}");
    let other = m.n(&series(SENT, "other", ""));
    let own_series = BOUND - 1;
    assert!(
        other >= (ports.len() - own_series) as u64,
        "{other} requests under other for {} upstreams",
        ports.len()
    );
    // The pipeline's upstream was asked for /v2/ once and for both manifests.
    assert_eq!(m.n(&series(SENT, &own, "")), fake.requests().len() as u64);
    assert!(fake.requests().len() >= 3, "{:?}", fake.requests());
    let r = acr.fetch("GET", "/status.json", &[]);
    assert_eq!(
        r.json()["upstreams"].as_array().map(Vec::len),
        Some(BOUND + 1)
    );
}
