//! The content store when things go wrong: the upstream stops (everything pulled before still
//! pulls, stale tags included; what was never pulled fails clearly), the upstream sends wrong
//! bytes (the pull fails, nothing is kept, a fixed upstream heals it), acr is `kill -9`ed in
//! the middle of a fetch (nothing partial is ever served, the restart cleans up), and a client
//! leaves before the upstream answered (the digest is not wedged for the next one).
//!
//! Every test starts its own upstream, its own acr (own port, own temp dirs), so they run in
//! parallel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::store::*;
use crate::harness::*;

const MIB: usize = 1 << 20;

/// With the upstream stopped, skopeo pulls every image it pulled before (OCI manifest, Docker
/// schema 2, OCI index, Docker manifest list), their tags past the TTL included, from the
/// store (stale-if-error); an image never pulled fails with an error that says the upstream
/// is unreachable.
#[test]
fn with_the_upstream_stopped_everything_pulled_before_still_pulls() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &reg.url(),
        &[&cache_setting(cache.path()), ".ttl 1s"],
    ));
    let images = [
        ("library/test:1", seeded.test_oci.clone()),
        ("library/test:v2s2", seeded.test_v2s2.clone()),
        ("library/multi:1", seeded.multi_oci.clone()),
        ("library/multi:v2s2", seeded.multi_v2s2.clone()),
    ];
    let out = temp_dir("acr-pulls-");
    for (i, (repo_ref, digest)) in images.iter().enumerate() {
        let dest = out.path().join(format!("online-{i}"));
        skopeo_to_dir(&acr.host(), repo_ref, &dest).ok();
        assert_dir_copy(&dest, digest);
    }
    assert!(wait_until(Duration::from_secs(10), || temp_files(
        cache.path()
    )
    .is_empty()));

    // The upstream goes away.
    let upstream = reg.url();
    drop(reg);
    assert!(try_http_request("GET", &format!("{upstream}/v2/"), &[], None).is_err());
    // Every tag is now past its TTL.
    std::thread::sleep(Duration::from_millis(1500));
    let m0 = scrape(&acr);
    for (i, (repo_ref, digest)) in images.iter().enumerate() {
        let dest = out.path().join(format!("offline-{i}"));
        let pulled = skopeo_to_dir(&acr.host(), repo_ref, &dest);
        assert!(
            pulled.success(),
            "{repo_ref} with the upstream down: {pulled:?}\n{}",
            acr.log()
        );
        assert_dir_copy(&dest, digest);
    }
    let m1 = scrape(&acr);
    let stale = m1.delta(&m0, "acr_stale_serves_total");
    assert!(stale >= images.len() as i64, "{stale} stale serves");
    assert!(m1.delta(&m0, "acr_cache_hits_total") > stale);
    assert_eq!(m1.delta(&m0, "acr_cache_misses_total"), 0);
    assert_eq!(m1.delta(&m0, "acr_bytes_from_upstream_total"), 0);
    assert!(m1.delta(&m0, "acr_bytes_from_store_total") > 64 * 1024);
    assert!(
        acr.log()
            .contains("serving the cached manifest past its TTL"),
        "the log says why a stale manifest was served"
    );

    // Never pulled: a clear error, no hang.
    let started = Instant::now();
    let never = skopeo_to_dir(&acr.host(), "library/never:1", &out.path().join("never"));
    assert!(!never.success(), "{never:?}");
    assert!(
        never.stderr.contains("unreachable"),
        "skopeo's error does not say why: {never:?}"
    );
    let r = acr.fetch_manifest("GET", "/v2/library/test/manifests/never");
    assert_upstream_unavailable(&r, "unreachable");
    let r = fetch(
        "GET",
        &format!(
            "{}/v2/library/test/blobs/sha256:{}",
            acr.url(),
            "1".repeat(64)
        ),
        &[],
    );
    assert_upstream_unavailable(&r, "");
    assert!(started.elapsed() < Duration::from_secs(30));
    println!("never pulled, skopeo says: {}", never.stderr.trim());
    println!(
        "upstream down: {} images pulled from the store, {stale} stale serves, {} hits",
        images.len(),
        m1.delta(&m0, "acr_cache_hits_total")
    );
}

/// A one-layer image served by a [`FakeUpstream`] whose layer bytes can be made wrong.
struct Stand {
    name: &'static str,
    fake: FakeUpstream,
    manifest_digest: String,
    config_digest: String,
    layer_digest: String,
    layer: Arc<Vec<u8>>,
}

/// The fake registry: `/v2/`, the manifest of `library/NAME:1` by tag and digest, its
/// config, and its layer; `wrong` corrupts one byte in the middle of the layer, `slow`
/// pauses the layer for a minute after its first `pause_at` bytes.
fn stand(
    name: &'static str,
    layer_len: usize,
    wrong: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    pause_at: usize,
) -> Stand {
    let layer = Arc::new(pseudo_random_bytes(&format!("acr-stand-{name}"), layer_len));
    let layer_digest = digest_of(&layer);
    let config = image_config(name, std::slice::from_ref(&layer_digest));
    let config_digest = digest_of(&config);
    let manifest = image_manifest(&config, &[(layer_digest.clone(), layer.to_vec())]);
    let manifest_digest = digest_of(&manifest);
    let repo = format!("/v2/library/{name}");
    let (ld, cd, md, l) = (
        layer_digest.clone(),
        config_digest.clone(),
        manifest_digest.clone(),
        layer.clone(),
    );
    let fake = FakeUpstream::start(move |r: &FakeRequest| {
        let path = r.path.as_str();
        if path == "/v2/" {
            return FakeReply::new(200, &[("Content-Type", "application/json")], "{}");
        }
        if path == format!("{repo}/manifests/1") || path == format!("{repo}/manifests/{md}") {
            return FakeReply::new(
                200,
                &[
                    ("Content-Type", OCI_MANIFEST),
                    ("Docker-Content-Digest", &md),
                ],
                manifest.clone(),
            );
        }
        if path == format!("{repo}/blobs/{cd}") {
            return FakeReply::new(200, &[], config.clone());
        }
        if path == format!("{repo}/blobs/{ld}") {
            let mut body = l.to_vec();
            if wrong.load(Ordering::SeqCst) {
                let mid = body.len() / 2;
                body[mid] ^= 0x5a;
            }
            let mut reply = FakeReply::new(200, &[("Docker-Content-Digest", &ld)], body);
            if slow.load(Ordering::SeqCst) {
                reply.pause = Some((pause_at, Duration::from_secs(60)));
            }
            return reply;
        }
        FakeReply::new(
            404,
            &[("Content-Type", "application/json")],
            r#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#,
        )
    });
    Stand {
        name,
        fake,
        manifest_digest,
        config_digest,
        layer_digest,
        layer,
    }
}

impl Stand {
    /// GETs of the layer the upstream received.
    fn layer_gets(&self) -> usize {
        let want = format!("GET /v2/library/{}/blobs/{}", self.name, self.layer_digest);
        self.fake.requests().iter().filter(|r| **r == want).count()
    }
}

/// An upstream that sends wrong bytes for a layer: every client's transfer breaks (never a
/// complete 200), skopeo's pull fails, nothing lands in the store, every bad fetch is counted
/// in `acr_digest_mismatches_total`; once the upstream sends the right bytes, the next pull
/// succeeds and the layer is stored.
#[test]
fn wrong_bytes_from_the_upstream_fail_the_pull_and_are_never_stored() {
    let wrong = Arc::new(AtomicBool::new(true));
    let s = stand(
        "bad",
        2 * MIB + 17,
        wrong.clone(),
        Arc::new(AtomicBool::new(false)),
        0,
    );
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &s.fake.url(),
        &[&cache_setting(cache.path())],
    ));
    let m0 = scrape(&acr);
    let url = format!("{}/v2/library/bad/blobs/{}", acr.url(), s.layer_digest);

    // A client reading the blob: the transfer breaks before its last byte.
    let got = stream_get(&url, &[], None);
    assert!(
        got.end.is_err() || got.status >= 400,
        "a clean transfer of wrong bytes: status {}, {} bytes",
        got.status,
        got.len
    );
    assert!(got.len < s.layer.len() as u64, "{} bytes arrived", got.len);
    // skopeo's pull fails.
    let out = temp_dir("acr-pulls-");
    let pulled = skopeo_to_dir(&acr.host(), "library/bad:1", &out.path().join("bad"));
    assert!(!pulled.success(), "skopeo pulled wrong bytes: {pulled:?}");
    // Nothing was kept, and nothing is left behind.
    assert!(wait_until(Duration::from_secs(10), || temp_files(
        cache.path()
    )
    .is_empty()));
    assert!(!has_blob(cache.path(), &s.layer_digest));
    assert_store_verifies(cache.path());
    let m1 = scrape(&acr);
    let bad_fetches = s.layer_gets();
    assert!(bad_fetches >= 2, "{:?}", s.fake.requests());
    assert_eq!(
        m1.delta(&m0, "acr_digest_mismatches_total"),
        bad_fetches as i64,
        "every wrong fetch is counted once"
    );
    assert!(acr.log().contains("do not match"), "the log says so");
    // Asked again, acr asks the upstream again (a mismatch is never served from the store).
    let again = stream_get(&url, &[], None);
    assert!(again.end.is_err() || again.status >= 400);
    assert_eq!(s.layer_gets(), bad_fetches + 1);

    // The upstream is fixed: the next pull succeeds, and the layer is stored.
    wrong.store(false, Ordering::SeqCst);
    let dest = out.path().join("good");
    skopeo_to_dir(&acr.host(), "library/bad:1", &dest).ok();
    assert_dir_copy(&dest, &s.manifest_digest);
    assert!(wait_until(Duration::from_secs(10), || has_blob(
        cache.path(),
        &s.layer_digest
    )));
    assert!(has_blob(cache.path(), &s.config_digest));
    assert_store_verifies(cache.path());
    let m2 = scrape(&acr);
    assert_eq!(
        m2.delta(&m1, "acr_digest_mismatches_total"),
        1,
        "the retry above"
    );
    let got = stream_get(&url, &[], Some(&s.layer));
    assert!(got.status == 200 && got.end.is_ok() && got.matches);
    println!(
        "wrong bytes: {} bad upstream fetches, acr_digest_mismatches_total {}",
        bad_fetches + 1,
        m2.n("acr_digest_mismatches_total")
    );
}

/// `kill -9` of acr while it fetches a 24 MiB layer (the upstream pauses after 6 MiB, so the
/// kill lands mid-blob): the partial download never gets a servable name, the restarted acr
/// removes it before it listens, and the pull then succeeds with every digest right.
#[test]
fn kill_9_during_a_cold_pull_then_restart_serves_no_corrupt_object() {
    let slow = Arc::new(AtomicBool::new(true));
    let s = stand(
        "crash",
        24 * MIB,
        Arc::new(AtomicBool::new(false)),
        slow.clone(),
        6 * MIB,
    );
    let cache = temp_dir("acr-store-");
    let runmd = store_pipeline(&s.fake.url(), &[&cache_setting(cache.path())]);
    let acr = Acr::start(&runmd);
    let out = temp_dir("acr-pulls-");
    let puller = {
        let (host, dest) = (acr.host(), out.path().join("killed"));
        std::thread::spawn(move || skopeo_to_dir(&host, "library/crash:1", &dest))
    };
    let partial = wait_until(Duration::from_secs(30), || {
        temp_files(cache.path())
            .iter()
            .any(|(_, n)| *n >= 6 * MIB as u64)
    });
    assert!(partial, "the fetch never got going: {}", acr.log());
    kill9(acr.pid());
    assert!(wait_until(Duration::from_secs(10), || !acr.is_running()));
    let killed = puller.join().expect("skopeo thread");
    assert!(!killed.success(), "the pull survived the kill: {killed:?}");
    // The leftover is a temporary file; the layer has no name in the store.
    let leftovers = temp_files(cache.path());
    assert!(
        leftovers.iter().any(|(_, n)| *n >= 6 * MIB as u64),
        "{leftovers:?}"
    );
    assert!(!has_blob(cache.path(), &s.layer_digest));
    drop(acr);

    // Restart on the same store: the leftovers are gone before acr listens.
    slow.store(false, Ordering::SeqCst);
    let acr = Acr::start(&runmd);
    assert_eq!(temp_files(cache.path()), vec![], "tmp/ is cleaned at start");
    assert!(
        acr.log().contains("removed unfinished downloads"),
        "{}",
        acr.log()
    );
    let dest = out.path().join("after");
    skopeo_to_dir(&acr.host(), "library/crash:1", &dest).ok();
    assert_dir_copy(&dest, &s.manifest_digest);
    let url = format!("{}/v2/library/crash/blobs/{}", acr.url(), s.layer_digest);
    let got = stream_get(&url, &[], Some(&s.layer));
    assert!(got.status == 200 && got.end.is_ok() && got.matches);
    assert!(wait_until(Duration::from_secs(10), || has_blob(
        cache.path(),
        &s.layer_digest
    )));
    assert!(assert_store_verifies(cache.path()) >= 3);
    assert_eq!(s.layer_gets(), 2, "{:?}", s.fake.requests());
}

/// A client that gives up while acr still waits for the upstream's answer leaves nothing
/// wedged: the next client for the same digest gets the blob.
#[test]
fn a_client_that_leaves_before_the_upstream_answers_wedges_nothing() {
    let data = Arc::new(pseudo_random_bytes("acr-store-leaver", MIB));
    let digest = digest_of(&data);
    let (fake, blob_path) = one_blob_upstream("library/leaver", data.clone(), |data| {
        // Slow to answer at all.
        std::thread::sleep(Duration::from_millis(1500));
        FakeReply::new(200, &[], data.to_vec())
    });
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &fake.url(),
        &[&cache_setting(cache.path())],
    ));
    let url = format!("{}{blob_path}", acr.url());
    let impatient = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(300))
        .build();
    assert!(
        impatient.get(&url).call().is_err(),
        "the first client gives up"
    );
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let patient = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let resp = patient.get(&url).call().unwrap_or_else(|e| {
        panic!(
            "the next client got no blob after {:?}: {e}\n{}",
            started.elapsed(),
            acr.log()
        )
    });
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("read the blob");
    assert_eq!(digest_of(&body), digest);
    assert!(wait_until(Duration::from_secs(10), || temp_files(
        cache.path()
    )
    .is_empty()));
    assert!(has_blob(cache.path(), &digest));
}

/// Stale-if-error is for an upstream that fails, not one that answers: past the TTL, a tag
/// whose revalidation gets a 503 is served from the store (and counted as a stale serve),
/// while a tag the upstream now says is gone (404) is not served from the store.
#[test]
fn a_5xx_serves_the_stale_tag_but_a_404_does_not() {
    use std::sync::atomic::AtomicU8;
    const UP: u8 = 0;
    const FAILING: u8 = 1;
    const GONE: u8 = 2;
    let mode = Arc::new(AtomicU8::new(UP));
    let config = image_config("stale", &[]);
    let manifest = image_manifest(&config, &[]);
    let digest = digest_of(&manifest);
    let fake = {
        let (mode, digest, manifest) = (mode.clone(), digest.clone(), manifest.clone());
        FakeUpstream::start(move |r: &FakeRequest| {
            if r.path == "/v2/" {
                return FakeReply::new(200, &[("Content-Type", "application/json")], "{}");
            }
            match mode.load(Ordering::SeqCst) {
                FAILING => FakeReply::new(503, &[("Retry-After", "1")], "overloaded"),
                GONE => FakeReply::new(
                    404,
                    &[("Content-Type", "application/json")],
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                ),
                _ if r.path.starts_with("/v2/library/stale/manifests/") => FakeReply::new(
                    200,
                    &[
                        ("Content-Type", OCI_MANIFEST),
                        ("Docker-Content-Digest", &digest),
                    ],
                    manifest.clone(),
                ),
                _ => FakeReply::new(404, &[], ""),
            }
        })
    };
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &fake.url(),
        &[&cache_setting(cache.path()), ".ttl 300ms"],
    ));
    let url = format!("{}/v2/library/stale/manifests/1", acr.url());
    let accept = [("Accept", ACCEPT_MANIFESTS)];
    let r = fetch("GET", &url, &accept);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, manifest);

    mode.store(FAILING, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    let m0 = scrape(&acr);
    let heads = |fake: &FakeUpstream| {
        fake.requests()
            .iter()
            .filter(|r| r.starts_with("HEAD /v2/library/stale/manifests/1"))
            .count()
    };
    for method in ["GET", "HEAD"] {
        let r = fetch(method, &url, &accept);
        assert_eq!(r.status, 200, "{method} with the upstream answering 503");
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    }
    let r = fetch("GET", &url, &accept);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, manifest);
    let m1 = scrape(&acr);
    assert_eq!(m1.delta(&m0, "acr_stale_serves_total"), 3);
    assert_eq!(m1.delta(&m0, "acr_cache_hits_total"), 3);
    assert_eq!(heads(&fake), 3, "each stale request tried the upstream");

    mode.store(GONE, Ordering::SeqCst);
    let r = fetch("GET", &url, &accept);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "MANIFEST_UNKNOWN");
    let m2 = scrape(&acr);
    assert_eq!(m2.delta(&m1, "acr_stale_serves_total"), 0);
}
