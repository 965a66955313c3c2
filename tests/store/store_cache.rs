//! The content store in front of a real CNCF distribution: one upstream fetch however many
//! clients ask at once, ranges and HEAD on cached blobs and during a miss, tags trusted for
//! their TTL and then revalidated with one HEAD, the `.max-size` bound, and `/metrics`
//! (parsed as Prometheus text) moving as each of those says it should.
//!
//! Every test starts its own upstream, its own acr (own port, own temp dirs), so they run in
//! parallel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::store::*;
use crate::harness::*;

const MIB: u64 = 1 << 20;

/// What the upstream was asked, as its own access log has it.
fn upstream_requests(reg: &Registry) -> usize {
    reg.access_log().len()
}

/// Waits until the upstream's access log holds `n` lines (it is written just after each
/// response).
fn wait_upstream_log(reg: &Registry, n: usize) -> usize {
    let mut c = 0;
    wait_until(Duration::from_secs(10), || {
        c = upstream_requests(reg);
        c >= n
    });
    c
}

#[test]
fn the_metrics_parser_is_strict() {
    let text = "# HELP a_total things\n# TYPE a_total counter\na_total 3\n\n\
                # TYPE g gauge\ng{x=\"a b}\",y=\"\\\"\"} -1.5 1700000000\n# a comment\n";
    let s = parse_prometheus(text).unwrap();
    assert_eq!(s.get("a_total"), 3.0);
    assert_eq!(s.samples["g{x=\"a b}\",y=\"\\\"\"}"], -1.5);
    for bad in [
        "a_total 1\n",                               // no TYPE
        "# TYPE a counter\na -1\n",                  // a negative counter
        "# TYPE a counter\na 1\na 2\n",              // a series twice
        "# TYPE a counter\na one\n",                 // not a number
        "# TYPE a thing\na 1\n",                     // unknown type
        "# TYPE 1a counter\n",                       // bad name
        "# TYPE a counter\na{x=\"1\" 1\n",           // unclosed labels
        "# TYPE a counter\n# TYPE a counter\na 1\n", // TYPE twice
        "# TYPE a counter\na 1 2 3\n",               // junk
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {bad:?}");
    }
}

/// 32 clients ask for the same cold 64 MiB blob at the same moment: the upstream's access log
/// shows exactly one GET of it, every client gets every byte (compared with the blob, whose
/// sha256 is its digest), and the counters say one miss, 31 hits, 64 MiB from the upstream.
#[test]
fn thirty_two_cold_gets_of_one_64_mib_blob_make_one_upstream_get() {
    const CLIENTS: usize = 32;
    let reg = Registry::start(RegistryAuth::None);
    let data = Arc::new(pseudo_random_bytes("acr-store-32-clients", 64 << 20));
    let size = data.len() as u64;
    let digest = push_blob(&reg, "library/big", &data);
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(&reg.url(), &[&cache_setting(cache.path())]));
    let log_before = upstream_requests(&reg);
    let m0 = scrape(&acr);
    assert_eq!(m0.n("acr_store_objects"), 0);

    let url = format!("{}/v2/library/big/blobs/{digest}", acr.url());
    let started = Instant::now();
    for (i, got) in simultaneous_gets(&url, &data, CLIENTS)
        .into_iter()
        .enumerate()
    {
        assert_eq!(got.status, 200, "client {i}");
        assert_eq!(got.end, Ok(()), "client {i}: the transfer broke");
        assert_eq!(got.len, size, "client {i}");
        // Byte for byte the blob, whose sha256 is `digest` (checked by `push_blob`).
        assert!(got.matches, "client {i} got other bytes");
    }
    let elapsed = started.elapsed();

    // Every client is done, so are acr's counters; the access log follows each response.
    let m1 = scrape(&acr);
    let sent = m1.delta(&m0, "acr_upstream_requests_total");
    let mut log_after = 0;
    let agree = wait_until(Duration::from_secs(10), || {
        log_after = upstream_requests(&reg);
        (log_after - log_before) as i64 == sent
    });
    assert!(
        agree,
        "acr counted {sent} upstream requests, the upstream logged {}",
        log_after - log_before
    );
    // Exactly one upstream GET of the blob. Anything else acr asked is `GET /v2/`: `.authn`
    // learning the upstream's auth challenge.
    let blob_path = format!("/v2/library/big/blobs/{digest}");
    assert_eq!(
        reg.count_requests("GET", &blob_path),
        1,
        "{:#?}",
        reg.access_log()
    );
    assert_eq!(reg.count_requests("HEAD", &blob_path), 0);
    let others: Vec<AccessLogEntry> = reg.access_log()[log_before..]
        .iter()
        .filter(|e| e.path != blob_path)
        .cloned()
        .collect();
    assert!(
        others.iter().all(|e| e.method == "GET" && e.path == "/v2/"),
        "{others:#?}"
    );
    let pings = others.len();
    // `.authn` probes an upstream's challenge once, however many cold requests arrive together.
    assert!(pings <= 1, "{pings} challenge probes: {others:#?}");

    assert_eq!(m1.delta(&m0, "acr_cache_misses_total"), 1);
    assert_eq!(m1.delta(&m0, "acr_cache_hits_total"), CLIENTS as i64 - 1);
    assert_eq!(m1.delta(&m0, "acr_bytes_from_upstream_total"), size as i64);
    assert_eq!(
        m1.delta(&m0, "acr_bytes_from_store_total"),
        (CLIENTS as i64 - 1) * size as i64
    );
    assert_eq!(m1.n("acr_digest_mismatches_total"), 0);
    // Committed (the gauges move when the fetch's task has renamed the file).
    assert!(wait_until(Duration::from_secs(10), || has_blob(
        cache.path(),
        &digest
    )));
    let m1 = scrape(&acr);
    assert_eq!(m1.n("acr_store_bytes"), size);
    assert_eq!(m1.n("acr_store_objects"), 1);
    assert!(temp_files(cache.path()).is_empty());
    assert_eq!(assert_store_verifies(cache.path()), 1);

    // And the next client is a plain hit, read from disk.
    let got = stream_get(&url, &[], Some(&data));
    assert!(got.matches && got.end.is_ok() && got.status == 200);
    let m2 = scrape(&acr);
    assert_eq!(m2.delta(&m1, "acr_cache_hits_total"), 1);
    assert_eq!(m2.delta(&m1, "acr_bytes_from_store_total"), size as i64);
    assert_eq!(m2.delta(&m1, "acr_upstream_requests_total"), 0);
    assert_eq!(reg.count_requests("GET", &blob_path), 1);
    println!(
        "{CLIENTS} concurrent cold GETs of {} MiB: {} upstream GET of the blob \
         (and {pings} GET /v2/), {:.1?} for all clients",
        size / MIB,
        reg.count_requests("GET", &blob_path),
        elapsed
    );
}

/// Ranges and HEAD: a Range on a cold blob (the miss asks the upstream for that part, answers
/// 206 with the right bytes, then fetches the whole blob once), ranges and HEAD on the cached blob (no upstream request), a
/// range that cannot be served (416), and the counters after each step.
#[test]
fn ranges_and_head_on_cached_blobs_and_during_a_miss_move_the_counters() {
    let reg = Registry::start(RegistryAuth::None);
    let layer = pseudo_random_bytes("acr-store-ranges", 3 * MIB as usize + 123);
    let size = layer.len() as u64;
    let image = push_image(&reg, "library/ranged", "1", vec![layer.clone()]);
    let (digest, _) = image.layers[0].clone();
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(&reg.url(), &[&cache_setting(cache.path())]));
    let url = format!("{}/v2/library/ranged/blobs/{digest}", acr.url());
    let log0 = upstream_requests(&reg);
    let m0 = scrape(&acr);

    // A range of a cold blob: a miss answered with the upstream's part (206), after which the
    // whole blob is fetched once.
    let r = fetch("GET", &url, &[("Range", "bytes=1000-1999")]);
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-1999/{size}").as_str())
    );
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.body, layer[1000..2000]);
    assert!(wait_until(Duration::from_secs(10), || has_blob(
        cache.path(),
        &digest
    )));
    // (acr learnt the upstream's challenge with GET /v2/ as it started.)
    let log1 = wait_upstream_log(&reg, log0 + 2); // the part and the whole blob
    let m1 = scrape(&acr);
    assert_eq!(m1.delta(&m0, "acr_cache_misses_total"), 1);
    assert_eq!(m1.delta(&m0, "acr_cache_hits_total"), 0);
    assert_eq!(
        m1.delta(&m0, "acr_bytes_from_upstream_total"),
        size as i64 + 1000
    );
    assert_eq!(m1.delta(&m0, "acr_bytes_from_store_total"), 0);
    assert_eq!(
        m1.delta(&m0, "acr_upstream_requests_total"),
        (log1 - log0) as i64
    );
    assert_eq!(reg.count_requests("GET", &format!("/blobs/{digest}")), 2);
    assert_eq!(m1.n("acr_store_bytes"), size);

    // Ranges of the cached blob: 206, the right bytes, no upstream request.
    let cases = [
        ("bytes=0-0", 0, 1),
        ("bytes=-100", size - 100, size),
        ("bytes=2097152-", 2 * MIB, size),
        (&format!("bytes=10-{}", size + 50) as &str, 10, size),
    ];
    let mut served = 0;
    for (range, from, to) in cases {
        let r = fetch("GET", &url, &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {from}-{}/{size}", to - 1).as_str()),
            "{range}"
        );
        assert_eq!(r.body, layer[from as usize..to as usize], "{range}");
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        served += to - from;
    }
    // HEAD: the size and digest, no body.
    let r = fetch("HEAD", &url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.body.is_empty());
    // The whole blob.
    let r = fetch("GET", &url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, layer);
    served += size;
    let m2 = scrape(&acr);
    assert_eq!(m2.delta(&m1, "acr_cache_hits_total"), 6);
    assert_eq!(m2.delta(&m1, "acr_cache_misses_total"), 0);
    assert_eq!(m2.delta(&m1, "acr_bytes_from_store_total"), served as i64);
    assert_eq!(m2.delta(&m1, "acr_bytes_from_upstream_total"), 0);
    assert_eq!(m2.delta(&m1, "acr_upstream_requests_total"), 0);
    assert_eq!(upstream_requests(&reg), log1);

    // A range past the end: 416 with the size, as an OCI error.
    let r = fetch("GET", &url, &[("Range", &format!("bytes={size}-"))]);
    assert_eq!(r.status, 416, "{}", r.text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    oci_code(&r.text());

    // Manifests: by digest a miss, then a hit.
    let murl = format!(
        "{}/v2/library/ranged/manifests/{}",
        acr.url(),
        image.manifest_digest
    );
    let m3 = scrape(&acr);
    for _ in 0..2 {
        let r = fetch("GET", &murl, &[("Accept", ACCEPT_MANIFESTS)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, image.manifest);
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    }
    let log4 = wait_upstream_log(&reg, log1 + 1);
    let m4 = scrape(&acr);
    let len = image.manifest.len() as i64;
    assert_eq!(m4.delta(&m3, "acr_cache_misses_total"), 1);
    assert_eq!(m4.delta(&m3, "acr_cache_hits_total"), 1);
    assert_eq!(m4.delta(&m3, "acr_bytes_from_upstream_total"), len);
    assert_eq!(m4.delta(&m3, "acr_bytes_from_store_total"), len);
    assert_eq!(log4 - log1, 1, "{:#?}", reg.access_log());
    // Over the whole test, acr counted exactly the requests the upstream logged.
    assert_eq!(
        m4.delta(&m0, "acr_upstream_requests_total"),
        (log4 - log0) as i64
    );
    assert_eq!(m4.n("acr_store_objects"), 2);
    assert_eq!(m4.n("acr_store_bytes"), size + image.manifest.len() as u64);
}

/// Ranges while the blob is still on its way: the upstream (a stand-in that pauses after
/// its first MiB) is asked once; a client that asked first and two that ask ranges while the
/// fetch is in flight all get the right bytes.
#[test]
fn ranges_of_a_blob_in_flight_follow_the_one_fetch() {
    let data = Arc::new(pseudo_random_bytes("acr-store-in-flight", 4 * MIB as usize));
    let (fake, blob_path) = one_blob_upstream("library/slow", data.clone(), |data| {
        let mut reply = FakeReply::new(
            200,
            &[("Content-Type", "application/octet-stream")],
            data.to_vec(),
        );
        reply.pause = Some((MIB as usize, Duration::from_millis(2500)));
        reply
    });
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &fake.url(),
        &[&cache_setting(cache.path())],
    ));
    let url = format!("{}{blob_path}", acr.url());
    let m0 = scrape(&acr);
    let lead = {
        let (url, data) = (url.clone(), data.clone());
        std::thread::spawn(move || stream_get(&url, &[], Some(&data)))
    };
    // The fetch is in flight once its temporary file holds the first MiB.
    assert!(
        wait_until(Duration::from_secs(20), || temp_files(cache.path())
            .iter()
            .any(|(_, n)| *n >= MIB)),
        "the fetch never started: {}",
        acr.log()
    );
    let ranges = [
        ("bytes=100-199", 100usize, 200usize),
        ("bytes=-1000", 4 * MIB as usize - 1000, 4 * MIB as usize),
    ];
    let followers: Vec<_> = ranges
        .iter()
        .map(|(range, _, _)| {
            let (url, range) = (url.clone(), range.to_string());
            std::thread::spawn(move || fetch("GET", &url, &[("Range", range.as_str())]))
        })
        .collect();
    for ((range, from, to), f) in ranges.into_iter().zip(followers) {
        let r = f.join().expect("follower");
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(r.body, data[from..to], "{range}");
    }
    let got = lead.join().expect("lead");
    assert!(got.status == 200 && got.end.is_ok() && got.matches);
    let gets = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .count();
    assert_eq!(gets, 1, "{:?}", fake.requests());
    let m1 = scrape(&acr);
    assert_eq!(m1.delta(&m0, "acr_cache_misses_total"), 1);
    assert_eq!(m1.delta(&m0, "acr_cache_hits_total"), 2);
    assert_eq!(
        m1.delta(&m0, "acr_bytes_from_upstream_total"),
        4 * MIB as i64
    );
    assert_eq!(m1.delta(&m0, "acr_bytes_from_store_total"), 1100);
}

/// A tag is trusted for its TTL: within it, manifests by tag (GET and HEAD) never reach the
/// upstream (its access log does not move); past it, one HEAD revalidates and the TTL starts
/// again; a tag that moved upstream is fetched anew. Also: the store's default place is
/// `cache/` beside the pipeline file.
#[test]
fn a_tag_is_trusted_for_its_ttl_then_one_head_revalidates_it() {
    const TTL: u64 = 4;
    let reg = Registry::start(RegistryAuth::None);
    let first = push_image(
        &reg,
        "library/ttl",
        "1",
        vec![pseudo_random_bytes("acr-ttl-1", 4096)],
    );
    // No `.cache` line at all: the store is `cache/` beside the pipeline.
    let runmd =
        store_pipeline(&reg.url(), &[&format!(".ttl {TTL}s")]).replace(": .cache off\n", "");
    assert!(!runmd.contains(".cache"), "{runmd}");
    let acr = Acr::start(&runmd);
    let cache = acr.dir().join("cache");
    let url = format!("{}/v2/library/ttl/manifests/1", acr.url());
    let accept = [("Accept", ACCEPT_MANIFESTS)];
    let manifests = |method: &str| reg.count_requests(method, "/v2/library/ttl/manifests/");

    let r = fetch("GET", &url, &accept);
    assert_eq!(r.status, 200, "{}", r.text());
    let fetched_at = Instant::now();
    assert_eq!(r.body, first.manifest);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(first.manifest_digest.as_str())
    );
    let log1 = wait_upstream_log(&reg, 2);
    assert_eq!((manifests("GET"), manifests("HEAD")), (1, 0));
    assert!(
        files_under(&cache.join("tags")).len() == 1,
        "the tag is recorded under {}",
        cache.display()
    );
    let m1 = scrape(&acr);

    // Within the TTL: answered from the store, the upstream is not asked.
    for method in ["GET", "HEAD", "GET", "HEAD", "GET"] {
        let r = fetch(method, &url, &accept);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("docker-content-digest"),
            Some(first.manifest_digest.as_str())
        );
        if method == "GET" {
            assert_eq!(r.body, first.manifest);
        }
    }
    assert!(
        fetched_at.elapsed() < Duration::from_secs(TTL - 1),
        "too slow to test the TTL"
    );
    std::thread::sleep(Duration::from_millis(300)); // a late access-log line would show
    assert_eq!(upstream_requests(&reg), log1, "{:#?}", reg.access_log());
    let m2 = scrape(&acr);
    assert_eq!(m2.delta(&m1, "acr_cache_hits_total"), 5);
    assert_eq!(m2.delta(&m1, "acr_upstream_requests_total"), 0);

    // Past the TTL: one HEAD, the same digest, the cached bytes; then trusted again.
    std::thread::sleep(Duration::from_secs(TTL) + Duration::from_millis(500));
    for _ in 0..3 {
        let r = fetch("GET", &url, &accept);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, first.manifest);
    }
    let log3 = wait_upstream_log(&reg, log1 + 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (manifests("GET"), manifests("HEAD")),
        (1, 1),
        "{:#?}",
        reg.access_log()
    );
    assert_eq!(upstream_requests(&reg), log3);
    assert_eq!(log3 - log1, 1);
    let m3 = scrape(&acr);
    assert_eq!(m3.delta(&m2, "acr_cache_hits_total"), 3);
    assert_eq!(m3.delta(&m2, "acr_cache_misses_total"), 0);
    assert_eq!(m3.delta(&m2, "acr_upstream_requests_total"), 1);
    assert_eq!(m3.n("acr_stale_serves_total"), 0);

    // The tag moves upstream: acr keeps the old one for the TTL, then one HEAD sees the
    // change and one GET fetches the new manifest.
    let second = push_image(
        &reg,
        "library/ttl",
        "1",
        vec![pseudo_random_bytes("acr-ttl-2", 4096)],
    );
    let log4 = upstream_requests(&reg);
    let r = fetch("GET", &url, &accept);
    assert_eq!(r.body, first.manifest, "still within the TTL");
    std::thread::sleep(Duration::from_secs(TTL) + Duration::from_millis(500));
    let r = fetch("GET", &url, &accept);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, second.manifest);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(second.manifest_digest.as_str())
    );
    let log5 = wait_upstream_log(&reg, log4 + 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(upstream_requests(&reg), log5);
    assert_eq!((manifests("GET"), manifests("HEAD")), (2, 2));
}

/// `.max-size 8MiB` and a pull sequence of about 14 MiB: after every pull the store holds at
/// most 8 MiB (by acr's gauge and on disk), evictions happened, and every image still pulls,
/// also the evicted ones. After a restart the bookkeeping matches the disk.
#[test]
fn a_pull_sequence_larger_than_max_size_keeps_the_store_under_its_bound() {
    const IMAGES: usize = 7;
    const MAX: u64 = 8 * MIB;
    let reg = Registry::start(RegistryAuth::None);
    let images: Vec<Pushed> = (0..IMAGES)
        .map(|i| {
            push_image(
                &reg,
                &format!("library/bound{i}"),
                "1",
                vec![pseudo_random_bytes(
                    &format!("acr-bound-{i}"),
                    2 * MIB as usize,
                )],
            )
        })
        .collect();
    let cache = temp_dir("acr-store-");
    let runmd = store_pipeline(
        &reg.url(),
        &[&cache_setting(cache.path()), ".max-size 8MiB"],
    );
    let acr = Acr::start(&runmd);
    let out = temp_dir("acr-pulls-");
    let object_bytes = |root: &std::path::Path| -> u64 {
        files_under(&root.join("blobs"))
            .iter()
            .chain(files_under(&root.join("manifests")).iter())
            .filter(|(p, _)| p.extension().is_none())
            .map(|(_, n)| n)
            .sum()
    };
    let mut peak_gauge = 0;
    let mut peak_disk = 0;
    let mut pulls = 0;
    for round in 0..2 {
        for (i, img) in images.iter().enumerate() {
            let dest = out.path().join(format!("{round}-{i}"));
            skopeo_to_dir(&acr.host(), &img.repo_ref, &dest).ok();
            assert_dir_copy(&dest, &img.manifest_digest);
            pulls += 1;
            // The bound holds once the pull's objects are committed.
            assert!(wait_until(Duration::from_secs(10), || temp_files(
                cache.path()
            )
            .is_empty()));
            // The gauge is updated just after the files move: wait for the two to agree.
            let (mut gauge, mut disk) = (0, 0);
            let agree = wait_until(Duration::from_secs(10), || {
                gauge = scrape(&acr).n("acr_store_bytes");
                disk = object_bytes(cache.path());
                gauge == disk
            });
            assert!(
                agree,
                "pull {pulls}: acr_store_bytes {gauge}, on disk {disk}"
            );
            let whole_dir = bytes_under(cache.path());
            peak_gauge = peak_gauge.max(gauge);
            peak_disk = peak_disk.max(whole_dir);
            assert!(
                gauge <= MAX,
                "pull {pulls}: acr_store_bytes {gauge} > {MAX}"
            );
            // Tag records and media types are a few hundred bytes beside the objects.
            assert!(
                whole_dir <= MAX + 64 * 1024,
                "pull {pulls}: the cache directory holds {whole_dir} bytes"
            );
        }
    }
    let m = scrape(&acr);
    let evictions = m.n("acr_evictions_total");
    assert!(evictions > 0, "nothing was evicted");
    // The first image's layer went long ago in round two's order... and came back; what is
    // stored now is the most recent pulls.
    assert!(has_blob(cache.path(), &images[IMAGES - 1].layers[0].0));
    assert!(!has_blob(cache.path(), &images[0].layers[0].0));
    assert_store_verifies(cache.path());
    // What was pulled last is still there: pulling it again asks the upstream nothing.
    let log = upstream_requests(&reg);
    let last = &images[IMAGES - 1];
    let dest = out.path().join("again");
    skopeo_to_dir(&acr.host(), &last.repo_ref, &dest).ok();
    assert_dir_copy(&dest, &last.manifest_digest);
    let again = scrape(&acr);
    assert_eq!(again.delta(&m, "acr_cache_misses_total"), 0);
    assert_eq!(again.delta(&m, "acr_cache_hits_total"), 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(upstream_requests(&reg), log);
    println!(
        "max-size {MAX}: {pulls} pulls of images with a 2 MiB layer; peak acr_store_bytes \
         {peak_gauge}, peak cache dir {peak_disk} bytes, {evictions} evictions, {} misses",
        m.n("acr_cache_misses_total")
    );
    let m = again;

    // The bookkeeping survives a restart: the gauges are what is on disk.
    let objects = m.n("acr_store_objects");
    let bytes = m.n("acr_store_bytes");
    drop(acr);
    let acr = Acr::start(&runmd);
    let m = scrape(&acr);
    assert_eq!(m.n("acr_store_bytes"), bytes);
    assert_eq!(m.n("acr_store_objects"), objects);
    assert_eq!(m.n("acr_store_bytes"), object_bytes(cache.path()));
}
