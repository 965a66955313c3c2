//! Security issue 15: every body, map, wait and connection has a bound, and the shared store's
//! contents are untrusted. Each test crosses one bound (or attacks the rule) against a real
//! acr process and checks the clean answer (an OCI error with the right status, or a closed
//! connection where that is the protocol's answer), then that acr keeps serving.
//!
//! Every test starts its own upstream, S3 server and acr (own ports, own directories), so
//! they run in parallel.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::bounds::*;
use crate::harness::faults::Relay;
use crate::harness::store::*;
use crate::harness::*;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn blob_url(acr: &Acr, repo: &str, digest: &str) -> String {
    format!("{}/v2/{repo}/blobs/{digest}", acr.url())
}

/// A counter or gauge of acr's `/metrics`, 0 when absent.
fn metric(acr: &Acr, name: &str) -> u64 {
    let text = acr.fetch("GET", "/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[track_caller]
fn assert_serves_blob(acr: &Acr, digest: &str, data: &[u8]) {
    let got = stream_get(&blob_url(acr, "library/x", digest), &[], Some(data));
    assert_eq!(got.status, 200, "GET {digest}: {}", acr.log());
    assert!(
        got.end.is_ok() && got.matches,
        "{digest}: {:?}\n{}",
        got.end,
        acr.log()
    );
}

// ------------------------------------------------------------------------------------------
// 1. one request cannot flush the store

/// With `.max-size 1MiB` and two blobs cached, a 3 MiB blob (announced by Content-Length) is
/// refused with a 507 OCI error before anything is evicted: both cached blobs stay on disk
/// and are still served, and the refusal is counted.
#[test]
fn a_blob_larger_than_the_store_is_refused_without_evicting_anything() {
    let up = BlobUpstream::start();
    let small: Vec<Vec<u8>> = (0..2)
        .map(|i| pseudo_random_bytes(&format!("bounds-small-{i}"), 300 * KIB))
        .collect();
    let small_digests: Vec<String> = small
        .iter()
        .map(|d| up.add(d.clone(), Framing::Length))
        .collect();
    let big = pseudo_random_bytes("bounds-big", 3 * MIB);
    let big_digest = up.add(big, Framing::Length);
    let cache = temp_dir("acr-bounds-store-");
    let acr = Acr::start(&store_pipeline(
        &up.url(),
        &[&cache_setting(cache.path()), ".max-size 1MiB"],
    ));
    for (d, data) in small_digests.iter().zip(&small) {
        assert_serves_blob(&acr, d, data);
    }
    assert!(wait_until(Duration::from_secs(20), || small_digests
        .iter()
        .all(|d| has_blob(cache.path(), d))));
    let evictions = metric(&acr, "acr_evictions_total");

    let r = fetch("GET", &blob_url(&acr, "library/x", &big_digest), &[]);
    assert_eq!(r.status, 507, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAVAILABLE");
    assert!(oci_message(&r.text()).contains("no room"), "{}", r.text());

    for d in &small_digests {
        assert!(
            has_blob(cache.path(), d),
            "{d} was evicted for a blob that could not fit"
        );
    }
    assert!(!has_blob(cache.path(), &big_digest));
    assert_eq!(metric(&acr, "acr_evictions_total"), evictions);
    assert!(metric(&acr, "acr_store_refused_total") >= 1);
    // Still serving: the cached blobs are hits.
    for (d, data) in small_digests.iter().zip(&small) {
        assert_serves_blob(&acr, d, data);
    }
    assert!(wait_until(Duration::from_secs(10), || temp_files(
        cache.path()
    )
    .is_empty()));
}

/// A body without a length (chunked) is cut off where the store's room ends: once past
/// `ACR_MAX_BLOB_SIZE`, and once past `.max-size`. The client never gets a complete
/// transfer, nothing (not even a temporary file) stays in the store, the cached blobs were
/// not evicted for it, and a chunked blob within the bound is served and stored.
#[test]
fn a_chunked_body_over_the_bound_is_cut_off_and_nothing_stays() {
    let up = BlobUpstream::start();
    let big = pseudo_random_bytes("bounds-chunked-big", 3 * MIB);
    let big_digest = up.add(big.clone(), Framing::Chunked);
    let fits = pseudo_random_bytes("bounds-chunked-small", 200 * KIB);
    let fits_digest = up.add(fits.clone(), Framing::Chunked);
    let cached = pseudo_random_bytes("bounds-chunked-cached", 300 * KIB);
    let cached_digest = up.add(cached.clone(), Framing::Length);

    let by_env = temp_dir("acr-bounds-store-");
    let by_size = temp_dir("acr-bounds-store-");
    let acrs = [
        (
            Acr::start_with(
                &store_pipeline(&up.url(), &[&cache_setting(by_env.path())]),
                AcrOptions {
                    env: vec![("ACR_MAX_BLOB_SIZE".into(), "1MiB".into())],
                    ..AcrOptions::default()
                },
            ),
            by_env.path(),
        ),
        (
            Acr::start(&store_pipeline(
                &up.url(),
                &[&cache_setting(by_size.path()), ".max-size 1MiB"],
            )),
            by_size.path(),
        ),
    ];
    for (acr, store) in &acrs {
        assert_serves_blob(acr, &cached_digest, &cached);
        assert!(wait_until(Duration::from_secs(20), || has_blob(
            store,
            &cached_digest
        )));

        let got = stream_get(&blob_url(acr, "library/x", &big_digest), &[], Some(&big));
        assert!(
            !(got.end.is_ok() && got.matches),
            "a chunked body over the bound arrived whole ({} bytes): {}",
            got.len,
            acr.log()
        );
        assert!(got.len < big.len() as u64);
        assert!(wait_until(Duration::from_secs(20), || temp_files(store).is_empty()));
        assert!(
            !has_blob(store, &big_digest),
            "a cut-off body was committed"
        );
        assert!(has_blob(store, &cached_digest), "a cached blob was evicted");
        assert!(metric(acr, "acr_store_refused_total") >= 1);

        // Within the bound, chunked is fine, and acr keeps serving.
        assert_serves_blob(acr, &fits_digest, &fits);
        assert!(wait_until(Duration::from_secs(20), || has_blob(
            store,
            &fits_digest
        )));
        assert_serves_blob(acr, &cached_digest, &cached);
    }
}

// ------------------------------------------------------------------------------------------
// 2. the S3 tier is untrusted

/// Replica A fetches a blob and shares it through S3; the object is then overwritten with
/// other bytes. Replica B, which has never seen it, serves the right bytes (the bad copy is
/// verified before its first byte leaves, and the upstream's replaces it), the S3 object is
/// repaired or gone, B's local store holds the right bytes, and the corruption is counted.
#[test]
fn a_corrupt_blob_in_s3_is_replaced_from_the_upstream_and_counted() {
    a_corrupt_shared_blob_is_replaced_from_the_upstream_and_counted(&S3::start());
}

/// The same on Azure Blob Storage (Azurite): the container is as untrusted as a bucket.
#[test]
fn a_corrupt_blob_in_azurite_is_replaced_from_the_upstream_and_counted() {
    a_corrupt_shared_blob_is_replaced_from_the_upstream_and_counted(&Azurite::start());
}

fn a_corrupt_shared_blob_is_replaced_from_the_upstream_and_counted(store: &dyn SharedStore) {
    let up = BlobUpstream::start();
    let data = pseudo_random_bytes("bounds-s3-blob", 700 * KIB);
    let digest = up.add(data.clone(), Framing::Length);
    let (runmd, opts) = store.pipeline(&up.url());
    let a = Acr::start_with(&runmd, opts.clone());
    assert_serves_blob(&a, &digest, &data);
    let key = store.blob_key(&digest);
    assert!(
        wait_until(Duration::from_secs(30), || store.has(&key)),
        "A never shared the blob: {}",
        a.log()
    );
    // The attack: the shared object now holds other bytes (same length, and not).
    let mut bad = data.clone();
    bad[1000] ^= 0xff;
    store.write(&key, &bad);

    let b = Acr::start_with(&runmd, opts.clone());
    let upstream_before = up.requests().len();
    assert_serves_blob(&b, &digest, &data);
    assert_eq!(
        metric(&b, "acr_store_remote_corrupt_total"),
        1,
        "{}",
        b.log()
    );
    assert!(
        up.requests()[upstream_before..]
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains(&digest)),
        "B did not fetch the blob from the upstream"
    );
    // Repaired (B shared the upstream's bytes again) or gone; never the bad bytes.
    assert!(
        wait_until(Duration::from_secs(30), || store
            .read(&key)
            .is_none_or(|b| b == data)),
        "the bad object is still in {}",
        store.name()
    );
    let local = b.dir().join("cache");
    assert!(wait_until(Duration::from_secs(20), || has_blob(
        &local, &digest
    )));
    assert!(assert_store_verifies(&local) >= 1);
    // Again, from B's own store now: right bytes, nothing more counted.
    assert_serves_blob(&b, &digest, &data);
    assert_eq!(metric(&b, "acr_store_remote_corrupt_total"), 1);

    // A shorter object than the blob is bad too.
    store.write(&key, &data[..1000]);
    let c = Acr::start_with(&runmd, opts);
    assert_serves_blob(&c, &digest, &data);
}

/// A tag record in S3 whose check time is far in the future (a forged record, or a replica
/// with a broken clock) is not fresh forever: a replica that reads it revalidates the tag
/// with the upstream and serves where the tag points now.
#[test]
fn a_tag_record_checked_in_the_future_is_revalidated() {
    let s3 = S3::start();
    let reg = Registry::start(RegistryAuth::None);
    let first = push_image(
        &reg,
        "library/moving",
        "1",
        vec![pseudo_random_bytes("bounds-tag-first", 20 * KIB)],
    );
    let (runmd, opts) = s3.pipeline(&reg.url());
    let a = Acr::start_with(&runmd, opts.clone());
    let manifest_url = |acr: &Acr| format!("{}/v2/library/moving/manifests/1", acr.url());
    let accept = [(
        "Accept",
        "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json",
    )];
    let r = fetch("GET", &manifest_url(&a), &accept);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(first.manifest_digest.as_str())
    );
    let tag_key = format!("{S3_PREFIX}/tags/{}/library/moving/_tags/1", reg.host());
    assert!(
        wait_until(Duration::from_secs(30), || s3.has(&tag_key)),
        "A never shared the tag: {}",
        a.log()
    );

    // The tag moves upstream; the shared record says it was checked in the year 2100.
    let second = push_image(
        &reg,
        "library/moving",
        "1",
        vec![pseudo_random_bytes("bounds-tag-second", 20 * KIB)],
    );
    assert_ne!(first.manifest_digest, second.manifest_digest);
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s3.file(&tag_key)).expect("tag record"))
            .expect("tag record JSON");
    assert_eq!(record["digest"], first.manifest_digest.as_str());
    record["checkedAt"] = serde_json::json!(4_102_444_800u64);
    record["checkedAtMs"] = serde_json::json!(4_102_444_800_000u64);
    std::fs::write(s3.file(&tag_key), record.to_string()).expect("forge the record");

    let b = Acr::start_with(&runmd, opts);
    let asked = reg.count_requests("", "/v2/library/moving/manifests/1");
    let r = fetch("GET", &manifest_url(&b), &accept);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(second.manifest_digest.as_str()),
        "B trusted a record checked in the future: {}",
        b.log()
    );
    assert!(
        reg.count_requests("", "/v2/library/moving/manifests/1") > asked,
        "B did not ask the upstream"
    );
}

// ------------------------------------------------------------------------------------------
// 3. no map keyed by client input

/// 2 000 requests with made-up methods (`FOO0` .. `FOO1999`) add at most one series to
/// `/metrics` (method="other"), and its size stays small.
#[test]
fn made_up_methods_do_not_grow_the_metrics() {
    let acr = Acr::start(&pull_through(&dead_url()));
    let scrape_text = || acr.fetch("GET", "/metrics", &[]).text();
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("acr_requests_total{"))
            .count()
    };
    scrape_text();
    let before = scrape_text();
    for i in 0..2000 {
        let request = format!("FOO{i} /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, _) = raw_request(&acr.host(), request.as_bytes(), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", acr.log()));
        assert!(status >= 400, "FOO{i}: {status}");
    }
    let after = scrape_text();
    assert!(
        series(&after) <= series(&before) + 1,
        "{} series before, {} after:\n{after}",
        series(&before),
        series(&after)
    );
    assert!(!after.contains("FOO"), "{after}");
    assert!(after.contains("method=\"other\""), "{after}");
    assert!(
        after.len() < before.len() + 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    // `/status` lists recent requests without the made-up names either.
    let status = acr.fetch("GET", "/status", &[]);
    assert_eq!(status.status, 200);
    assert!(!status.text().contains("FOO1999"));
}

// ------------------------------------------------------------------------------------------
// 4. connections

/// acr (in front of an upstream nothing serves) with `name=value` in its environment.
fn acr_with_env(name: &str, value: &str) -> Acr {
    Acr::start_with(
        &pull_through(&dead_url()),
        AcrOptions {
            env: vec![(name.into(), value.into())],
            ..AcrOptions::default()
        },
    )
}

/// With `ACR_MAX_CONNECTIONS=4`, four idle connections fill acr: an ordinary request waits
/// (in the listen queue, not refused) and is answered as soon as they close.
#[test]
fn connections_over_the_bound_wait_until_others_close() {
    let acr = acr_with_env("ACR_MAX_CONNECTIONS", "4");
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(acr.host()).expect("connect"))
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || acr
            .log()
            .contains("at the connection bound")),
        "{}",
        acr.log()
    );
    let url = format!("{}/v2/", acr.url());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(try_http_request("GET", &url, &[], None).map(|r| r.status));
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "a fifth connection was served while four were open"
    );
    drop(idle);
    let status = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the waiting request was never answered");
    assert_eq!(status, Ok(200));
    // And it keeps serving.
    assert_eq!(acr.fetch("GET", "/v2/", &[]).status, 200);
}

/// An h2c (prior knowledge) connection left idle is closed (GOAWAY, then the socket) after
/// `ACR_CONNECTION_IDLE_TIMEOUT`, and so is an idle HTTP/1.1 keep-alive connection.
#[test]
fn idle_connections_are_closed_after_the_bound() {
    let acr = acr_with_env("ACR_CONNECTION_IDLE_TIMEOUT", "1s");
    let mut h2 = TcpStream::connect(acr.host()).expect("connect");
    h2.write_all(H2_PREFACE_AND_SETTINGS).expect("preface");
    let started = Instant::now();
    let got = read_until_closed(&mut h2, Duration::from_secs(60))
        .unwrap_or_else(|b| panic!("an idle h2 connection stayed open ({} bytes)", b.len()));
    assert!(started.elapsed() >= Duration::from_millis(800));
    println!("h2 closed after {:?}", started.elapsed());
    assert!(
        h2_frame_types(&got).contains(&H2_GOAWAY),
        "no GOAWAY before the close: {:?}",
        h2_frame_types(&got)
    );

    let mut h1 = TcpStream::connect(acr.host()).expect("connect");
    h1.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let started = Instant::now();
    let got = read_until_closed(&mut h1, Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("an idle keep-alive connection stayed open"));
    println!("h1 closed after {:?}", started.elapsed());
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));

    assert_eq!(acr.fetch("GET", "/v2/", &[]).status, 200);
}

/// A POST whose body stalls part way is answered 408 (an OCI error) and its connection
/// closed after `ACR_REQUEST_BODY_TIMEOUT`; acr keeps serving.
#[test]
fn a_post_with_a_stalled_body_is_cut_off() {
    let acr = Acr::start_with(
        &pipeline(&dead_url(), &[], &[".container-tokens 1h"], &routes("")),
        AcrOptions {
            env: vec![("ACR_REQUEST_BODY_TIMEOUT".into(), "1s".into())],
            ..AcrOptions::default()
        },
    );
    let stalled = b"POST /container-token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"registry\":";
    let started = Instant::now();
    let (status, text) =
        raw_request(&acr.host(), stalled, Duration::from_secs(60)).expect("an answer");
    assert_eq!(status, 408, "{text}");
    assert_eq!(oci_code(&text), "UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(50));
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert_eq!(acr.fetch("GET", "/v2/", &[]).status, 200);
}

// ------------------------------------------------------------------------------------------
// 5. acr warm beside a running mirror

/// A mirror is fetching a big layer (slowly, through a paced relay) when `acr warm` opens the
/// same store to warm another image. The mirror's fetch is not broken (its temporary file
/// survives warm's start), it commits, and the mirror then serves the warmed image with the
/// upstream stopped.
#[test]
fn acr_warm_beside_a_running_mirror_breaks_none_of_its_fetches() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let big = seed_big(&reg, 6);
    let relay = Relay::start(reg.addr(), 1 << 20);
    relay.set_paced(true);
    let cache = temp_dir("acr-bounds-store-");
    let acr = Acr::start(&store_pipeline(
        &relay.url(),
        &[&cache_setting(cache.path())],
    ));
    let url = blob_url(&acr, "library/big", &big.layer_digest);
    let fetch = std::thread::spawn(move || stream_get(&url, &[], None));
    assert!(
        wait_until(Duration::from_secs(30), || !temp_files(cache.path())
            .is_empty()),
        "the mirror's fetch never started"
    );

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
    cmd.arg("--runmd-path")
        .arg(acr.runmd())
        .args(["warm", "library/test:1"])
        .current_dir(acr.dir())
        .env("HOME", acr.dir())
        .env("NO_COLOR", "1")
        .env_remove("REGISTRY_NAME");
    let warmed = run_cmd(cmd, Duration::from_secs(180));
    assert!(warmed.success(), "{warmed:?}");
    assert!(
        !temp_files(cache.path()).is_empty() || has_blob(cache.path(), &big.layer_digest),
        "warm removed the running mirror's temporary file"
    );

    let got = fetch.join().expect("the fetch thread");
    assert_eq!(got.status, 200);
    assert!(got.end.is_ok(), "the mirror's fetch broke: {:?}", got.end);
    assert_eq!(got.sha256.as_deref(), Some(big.layer_digest.as_str()));
    assert!(
        wait_until(Duration::from_secs(30), || has_blob(
            cache.path(),
            &big.layer_digest
        )),
        "the mirror's fetch was not committed: {}",
        acr.log()
    );

    // The upstream stops; the mirror serves what warm put in the store.
    drop(relay);
    drop(reg);
    let dest = temp_dir("acr-bounds-pulled-");
    let pulled = skopeo_to_dir(&acr.host(), "library/test:1", &dest.path().join("test"));
    assert!(pulled.success(), "{pulled:?}\n{}", acr.log());
    assert_dir_copy(&dest.path().join("test"), &seeded.test_oci);
}

// ------------------------------------------------------------------------------------------
// 6. --registry names stay inside .world/

/// `init`, `dump`, `mirror start` and `warm` refuse a `--registry` (or `--registry-host`)
/// that would put the world directory outside `.world/`: exit 1, a message naming the flag,
/// and nothing written.
#[test]
fn registry_names_that_leave_the_world_directory_are_refused() {
    let bad_names: [(&str, &str); 6] = [
        ("--registry", ".."),
        ("--registry", "../escape"),
        ("--registry", "a/b"),
        ("--registry", "/tmp/absolute"),
        ("--registry-host", ".."),
        ("--registry-host", "evil/.."),
    ];
    let commands: [&[&str]; 4] = [
        &["init"],
        &["dump"],
        &["mirror", "start"],
        &["warm", "library/test:1"],
    ];
    for (flag, value) in bad_names {
        for command in commands {
            let dir = temp_dir("acr-bounds-cli-");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
            if flag == "--registry-host" {
                cmd.args(["--registry", "ok"]);
            }
            cmd.args([flag, value])
                .args(command)
                .current_dir(dir.path())
                .env("HOME", dir.path())
                .env("NO_COLOR", "1")
                .env_remove("REGISTRY_NAME");
            let out = run_cmd(cmd, Duration::from_secs(30));
            assert_eq!(
                out.status.code(),
                Some(1),
                "{flag} {value} {command:?}: {out:?}"
            );
            assert!(
                out.stderr.contains(flag) && out.stderr.contains("not a valid name"),
                "{flag} {value} {command:?}: {out:?}"
            );
            assert_eq!(
                std::fs::read_dir(dir.path()).expect("dir").count(),
                0,
                "{flag} {value} {command:?} wrote something"
            );
        }
    }
    // A good name still works.
    let dir = temp_dir("acr-bounds-cli-");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
    cmd.args(["--registry", "example", "init"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("REGISTRY_NAME");
    let out = run_cmd(cmd, Duration::from_secs(30));
    assert!(out.success(), "{out:?}");
    assert!(dir
        .path()
        .join(".world/azurecr.io/example/mirror.runmd")
        .is_file());
}
