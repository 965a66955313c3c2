//! Replicas that act as one cache: three acr processes on one S3 bucket (a real S3 server,
//! s3s-fs in this process) with a shared `: .token-secret`, in front of a real distribution.
//! A cold blob asked of all three at once is fetched from the upstream once (the replica that
//! takes the blob's lease fetches it; the others read it from that replica while it arrives);
//! when the lease holder is killed halfway, the others finish every client's body from the
//! upstream, fetched once more.

use std::io::Read;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use sha2::Digest as _;

use crate::harness::faults::Relay;
use crate::harness::store::*;
use crate::harness::*;

const SECRET_FILE: &str = "peer.secret";
const SECRET: &str = "one secret the whole fleet shares";

/// Three replicas on `shared`, pulling through `upstream`, sharing one token secret.
fn replicas(shared: &dyn SharedStore, upstream: &str, extra: &[&str]) -> Vec<Acr> {
    let mut settings = shared.settings();
    settings.push(format!(".token-secret {SECRET_FILE}"));
    settings.extend(extra.iter().map(|s| s.to_string()));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let opts = AcrOptions {
        env: shared.env(),
        files: vec![(SECRET_FILE.to_string(), SECRET.to_string())],
        ..AcrOptions::default()
    };
    (0..3)
        .map(|_| Acr::start_with(&store_pipeline(upstream, &settings), opts.clone()))
        .collect()
}

/// Three replicas on S3 in front of a distribution paced to `bytes_per_sec` (a relay), which
/// holds one blob of `size` pseudo-random bytes in `repo`.
struct PacedFleet {
    s3: S3,
    reg: Registry,
    relay: Relay,
    replicas: Vec<Acr>,
    data: Vec<u8>,
    digest: String,
    /// `/v2/REPO/blobs/DIGEST`.
    path: String,
}

impl PacedFleet {
    fn start(repo: &str, size: usize, bytes_per_sec: u64) -> PacedFleet {
        let (s3, reg) = (S3::start(), Registry::start(RegistryAuth::None));
        let data = pseudo_random_bytes(repo, size);
        let digest = digest_of(&data);
        push_image(&reg, repo, "1", vec![data.clone()]);
        let relay = Relay::start(reg.addr(), bytes_per_sec);
        let replicas = replicas(&s3, &relay.url(), &[]);
        let path = format!("/v2/{repo}/blobs/{digest}");
        PacedFleet {
            s3,
            reg,
            relay,
            replicas,
            data,
            digest,
            path,
        }
    }
}

/// GETs `url` and hashes the body as it comes: (status, bytes, sha256 digest).
fn get_hashed(url: &str) -> (u16, u64, String) {
    let resp = match ureq::get(url).timeout(Duration::from_secs(180)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => return (code, 0, String::new()),
        Err(e) => return (0, 0, format!("{e}")),
    };
    let status = resp.status();
    let mut reader = resp.into_reader();
    let (mut hasher, mut buf, mut total) = (sha2::Sha256::new(), vec![0u8; 256 << 10], 0u64);
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) => return (status, total, format!("broken: {e}")),
        }
    }
    (status, total, format!("sha256:{}", hex(&hasher.finalize())))
}

/// `clients` concurrent GETs of one blob, spread evenly over `targets` (base URLs), all let go
/// at once; their answers.
fn concurrent_gets(targets: &[String], path: &str, clients: usize) -> Vec<(u16, u64, String)> {
    let start = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let url = format!("{}{path}", targets[i % targets.len()]);
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                get_hashed(&url)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a client thread"))
        .collect()
}

fn assert_all_whole(answers: &[(u16, u64, String)], size: usize, digest: &str) {
    for (n, (status, bytes, got)) in answers.iter().enumerate() {
        assert_eq!(
            (*status, *bytes, got.as_str()),
            (200, size as u64, digest),
            "client {n} got the whole blob, right"
        );
    }
}

/// 48 concurrent cold GETs of one 256 MiB blob, 16 on each of three replicas: the upstream
/// sends it once, every body hashes to the digest, and the replicas that read it from the
/// lease holder count their requests as coalesced onto a replica.
fn three_replicas_fetch_a_cold_blob_once(shared: &dyn SharedStore) {
    let reg = Registry::start(RegistryAuth::None);
    let data = pseudo_random_bytes("acr-fleet-256", 256 << 20);
    let digest = digest_of(&data);
    push_image(&reg, "library/fleet", "1", vec![data]);
    let fleet = replicas(shared, &reg.url(), &[]);
    let targets: Vec<String> = fleet.iter().map(|r| r.url()).collect();
    let path = format!("/v2/library/fleet/blobs/{digest}");
    let answers = concurrent_gets(&targets, &path, 48);
    assert_all_whole(&answers, 256 << 20, &digest);
    assert_eq!(
        reg.count_requests("GET", &format!("/blobs/{digest}")),
        1,
        "the upstream sent the blob once for the fleet ({}): {:?}",
        shared.name(),
        reg.access_log()
    );
    let coalesced = |onto: &str| -> u64 {
        let series = format!(
            "acr_upstream_coalesced_total{{upstream=\"{}\",onto=\"{onto}\"}}",
            reg.host()
        );
        fleet.iter().map(|r| scrape(r).n(&series)).sum()
    };
    assert_eq!(
        (
            coalesced("replica"),
            coalesced("request") + coalesced("replica")
        ),
        (2, 47),
        "two replicas followed the holder; 47 of 48 requests did not ask the upstream"
    );
    let hex = &digest[7..];
    let key = format!("{}/blobs/sha256/{hex}", shared.prefix());
    assert!(wait_until(Duration::from_secs(60), || shared.has(&key)));
    let lease = format!("{}/leases/blobs/sha256/{hex}", shared.prefix());
    assert!(
        wait_until(Duration::from_secs(20), || !shared.has(&lease)),
        "the holder gives the lease back once the blob is shared"
    );
}

#[test]
fn three_replicas_fetch_a_cold_blob_from_the_upstream_once() {
    three_replicas_fetch_a_cold_blob_once(&S3::start());
}

#[test]
fn three_replicas_on_azurite_fetch_a_cold_blob_from_the_upstream_once() {
    three_replicas_fetch_a_cold_blob_once(&Azurite::start());
}

/// The lease holder is killed (`kill -9`) halfway through a slow upstream transfer: every
/// client of the other two replicas still gets the whole blob, right, and the upstream sends
/// it at most twice.
#[test]
fn the_fleet_finishes_a_blob_when_the_lease_holder_dies_halfway() {
    let size = 48 << 20;
    // 16 MiB/s: three seconds for the blob, time to kill its holder in the middle.
    let PacedFleet {
        s3,
        reg,
        relay,
        replicas: mut fleet,
        data: _,
        digest,
        path,
    } = PacedFleet::start("library/fleet-kill", size, 16 << 20);

    // Replica 0 asks first and takes the lease.
    let first = {
        let url = format!("{}{path}", fleet[0].url());
        thread::spawn(move || get_hashed(&url))
    };
    let lease = format!("{S3_PREFIX}/leases/blobs/sha256/{}", &digest[7..]);
    assert!(
        wait_until(Duration::from_secs(20), || s3.has(&lease)),
        "replica 0 took the blob's lease"
    );
    let holder: serde_json::Value =
        serde_json::from_slice(&s3.read(&lease).expect("the lease")).unwrap();
    assert_eq!(holder["url"], fleet[0].url(), "the lease names replica 0");

    // Twelve clients on the other two, following the holder.
    let targets = vec![fleet[1].url(), fleet[2].url()];
    let followers = thread::spawn(move || concurrent_gets(&targets, &path, 12));
    assert!(
        wait_until(Duration::from_secs(30), || relay.bytes_down()
            > (size as u64) / 3),
        "the transfer is under way"
    );
    fleet[0].signal(libc::SIGKILL);
    let _ = fleet[0].wait_exit(Duration::from_secs(10));
    let _ = first.join();

    let answers = followers.join().expect("the followers");
    assert_all_whole(&answers, size, &digest);
    let gets = reg.count_requests("GET", &format!("/blobs/{digest}"));
    assert!(
        (1..=2).contains(&gets),
        "the upstream sent the blob at most twice, not {gets}"
    );
    assert!(
        fleet[1].log().contains("broke off") || fleet[2].log().contains("broke off"),
        "a follower saw its source break off and resumed"
    );
}

/// Only a replica with the shared secret may read from another: no token, a token for another
/// digest, or a forged one get 401, and a mirror without a fleet has no such endpoint.
#[test]
fn the_peer_endpoint_answers_only_replicas_of_the_fleet() {
    let (s3, reg) = (S3::start(), Registry::start(RegistryAuth::None));
    let data = pseudo_random_bytes("acr-fleet-peer", 64 << 10);
    let digest = digest_of(&data);
    push_image(&reg, "library/fleet-peer", "1", vec![data.clone()]);
    let fleet = replicas(&s3, &reg.url(), &[]);
    let (status, _, got) = get_hashed(&format!(
        "{}/v2/library/fleet-peer/blobs/{digest}",
        fleet[0].url()
    ));
    assert_eq!((status, got.as_str()), (200, digest.as_str()));
    let peer = format!("{}/_acr/peer/blobs/{digest}", fleet[0].url());
    // What another replica sends: a token for this digest under the shared secret.
    let key = acr_plugins::store::peer::derive_key(SECRET.as_bytes());
    let right = acr_plugins::store::peer::token(&key, &digest[7..]);
    let r = fetch("GET", &peer, &[("x-acr-peer", right.as_str())]);
    assert_eq!(r.status, 200, "a replica's token: {}", r.text());
    assert!(r.body == data, "the blob's bytes");
    let other_digest = acr_plugins::store::peer::token(&key, &"0".repeat(64));
    let other_secret = acr_plugins::store::peer::token(
        &acr_plugins::store::peer::derive_key(b"another secret of enough bytes"),
        &digest[7..],
    );
    let forged = format!("{}.{}", u64::MAX / 2, "00".repeat(32));
    for (what, headers) in [
        ("no token", vec![]),
        (
            "a token for another digest",
            vec![("x-acr-peer", other_digest.as_str())],
        ),
        (
            "a token under another secret",
            vec![("x-acr-peer", other_secret.as_str())],
        ),
        ("a forged token", vec![("x-acr-peer", forged.as_str())]),
        ("a malformed token", vec![("x-acr-peer", "x")]),
    ] {
        let r = fetch("GET", &peer, &headers);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(oci_code(&r.text()), "UNAUTHORIZED", "{what}");
        assert!(!r.text().contains(SECRET), "the secret never shows");
    }
    let lone = Acr::start(&store_pipeline(&reg.url(), &[]));
    let r = fetch(
        "GET",
        &format!("{}/_acr/peer/blobs/{digest}", lone.url()),
        &[],
    );
    assert_eq!(r.status, 404, "no fleet, no endpoint: {}", r.text());
}

/// 300 manifest-by-tag requests over three replicas in two TTL periods (150 at once in each):
/// the upstream is asked about the tag once per period, a GET in the first (the tag is cold)
/// and a HEAD in the second (revalidation), however many replicas and clients ask.
#[test]
fn three_replicas_ask_the_upstream_about_a_tag_once_per_ttl() {
    let (s3, reg) = (S3::start(), Registry::start(RegistryAuth::None));
    let layer = pseudo_random_bytes("acr-fleet-tag", 4 << 10);
    let img = push_image(&reg, "library/fleet-tag", "1", vec![layer]);
    let ttl = Duration::from_secs(3);
    let fleet = replicas(&s3, &reg.url(), &[".ttl 3s"]);
    let targets: Vec<String> = fleet.iter().map(|r| r.url()).collect();
    let wave = |n: usize| {
        let start = std::time::Instant::now();
        let threads: Vec<_> = (0..15)
            .map(|t| {
                let targets = targets.clone();
                thread::spawn(move || {
                    (0..n / 15)
                        .map(|i| {
                            let url = format!(
                                "{}/v2/library/fleet-tag/manifests/1",
                                targets[(t + i) % targets.len()]
                            );
                            let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
                            let r = fetch("GET", &url, &[("Accept", accept)]);
                            (r.status, r.header("docker-content-digest").map(str::to_string))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let answers: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (answers, start.elapsed())
    };
    let asked =
        || reg.count_requests("GET", "/manifests/1") + reg.count_requests("HEAD", "/manifests/1");
    let (first, took) = wave(150);
    assert!(took < ttl, "the first wave fits in one TTL ({took:?})");
    for (status, digest) in &first {
        assert_eq!(
            (*status, digest.as_deref()),
            (200, Some(img.manifest_digest.as_str()))
        );
    }
    assert_eq!(asked(), 1, "one upstream request in the first period");
    thread::sleep(ttl + Duration::from_millis(500));
    let (second, took) = wave(150);
    assert!(took < ttl, "the second wave fits in one TTL ({took:?})");
    assert_eq!(second.iter().filter(|(s, _)| *s == 200).count(), 150);
    assert_eq!(
        (reg.count_requests("HEAD", "/manifests/1"), asked()),
        (1, 2),
        "one revalidation in the second period: {:?}",
        reg.access_log()
    );
}

/// A lazy pull on a fleet: a cold suffix range on one replica is answered by the upstream at
/// once while the fleet fetches the whole blob once, under its lease, in the background; the
/// other replicas' full GETs get the blob whole. The upstream sent the blob once plus the part.
#[test]
fn a_cold_range_on_a_fleet_comes_at_once_and_the_fleet_still_fetches_the_blob_once() {
    let size = 16 << 20;
    // Every part is bound: a field left to `..` would be dropped (the relay, S3) at once.
    let PacedFleet {
        s3: _s3,
        reg,
        relay: _relay,
        replicas: fleet,
        data,
        digest,
        path,
    } = PacedFleet::start("library/fleet-range", size, 8 << 20);

    let r = fetch(
        "GET",
        &format!("{}{path}", fleet[0].url()),
        &[("Range", "bytes=-1000")],
    );
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {}-{}/{size}", size - 1000, size - 1).as_str())
    );
    assert!(r.body == data[size - 1000..], "the suffix's bytes");

    let targets = vec![fleet[1].url(), fleet[2].url()];
    let answers = concurrent_gets(&targets, &path, 4);
    assert_all_whole(&answers, size, &digest);
    // The upstream writes its access log line just after each answer.
    let mut gets = vec![];
    wait_until(Duration::from_secs(10), || {
        gets = crate::store_lazy_ranges::blob_gets(&reg, &path);
        gets.len() >= 2
    });
    let whole = gets.iter().filter(|(status, _)| *status == 200).count();
    let parts = gets.iter().filter(|(status, _)| *status == 206).count();
    assert_eq!((whole, parts), (1, 1), "{gets:?}");
}
