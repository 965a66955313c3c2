//! A minute of mixed load on acr with a store, in front of a real CNCF distribution: 64
//! keep-alive clients asking for manifests (by tag, GET and HEAD, and by digest), blobs (small
//! ones whole and in ranges, the 64 MiB one in ranges and now and then whole), tag lists,
//! `/v2/`, an unknown tag and `/metrics`. Every answer is checked (status, digest headers,
//! bytes against the upstream's); acr's memory is sampled at two quiet moments, after a 10 s
//! warm-up and at the end.
//!
//! `ACR_LOAD_SECONDS` shortens (or lengthens) the minute for a local run.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::faults::established_on_port;
use crate::harness::store::*;
use crate::harness::*;

const CLIENTS: usize = 64;
const DEFAULT_SECONDS: u64 = 60;
const WARM_UP: Duration = Duration::from_secs(10);
/// How long the clients stay paused before a memory sample.
const QUIET: Duration = Duration::from_secs(1);
const OCI_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    TagGet,
    TagHead,
    DigestGet,
    BlobGet,
    BlobRange,
    BigRange,
    BigGet,
    TagsList,
    Ping,
    UnknownTag,
    Metrics,
}

/// Each kind with its weight (per mille) and name.
const MIX: [(Kind, u64, &str); 11] = [
    (Kind::TagGet, 200, "manifest by tag GET"),
    (Kind::TagHead, 100, "manifest by tag HEAD"),
    (Kind::DigestGet, 150, "manifest by digest"),
    (Kind::BlobGet, 200, "small blob"),
    (Kind::BlobRange, 90, "small blob range"),
    (Kind::BigRange, 40, "64 MiB blob, 1 MiB range"),
    (Kind::BigGet, 5, "64 MiB blob whole"),
    (Kind::TagsList, 60, "tags/list"),
    (Kind::Ping, 70, "/v2/"),
    (Kind::UnknownTag, 50, "unknown tag (404)"),
    (Kind::Metrics, 35, "/metrics"),
];

fn index_of(kind: Kind) -> usize {
    MIX.iter().position(|(k, _, _)| *k == kind).expect("kind")
}

/// A manifest as the upstream serves it.
struct ManifestCase {
    repo: String,
    /// A tag, or the digest.
    reference: String,
    digest: String,
    body: Vec<u8>,
    accept: &'static str,
}

struct BlobCase {
    repo: String,
    digest: String,
    body: Arc<Vec<u8>>,
}

/// Everything the clients ask for, with the right answers (from the upstream itself).
struct World {
    base: String,
    tags: Vec<ManifestCase>,
    by_digest: Vec<ManifestCase>,
    blobs: Vec<BlobCase>,
    big: BlobCase,
    tag_lists: Vec<(String, Vec<String>)>,
}

fn accept_for(media_type: &str) -> &'static str {
    if media_type.starts_with("application/vnd.oci.") {
        OCI_ACCEPT
    } else {
        ACCEPT_MANIFESTS
    }
}

/// Walks the seeded images in the upstream: every manifest by tag and digest, every blob.
fn discover(reg: &Registry, acr: &Acr, big: &BigSeeded) -> World {
    let mut w = World {
        base: acr.url(),
        tags: vec![],
        by_digest: vec![],
        blobs: vec![],
        big: BlobCase {
            repo: "library/big".into(),
            digest: big.layer_digest.clone(),
            body: Arc::new(big_fixture(64).blob(&big.layer_digest)),
        },
        tag_lists: vec![],
    };
    assert_eq!(w.big.body.len() as u64, big.layer_size);
    // The clients compare bytes with these. Small bodies are hashed below; the 64 MiB layer
    // is the layout's file named by its digest, which distribution verified when it was
    // pushed (hashing it here costs seconds in a debug build).
    let tagged = [
        ("library/test", "1"),
        ("library/test", "v2s2"),
        ("library/multi", "1"),
        ("library/multi", "v2s2"),
        ("library/big", "64"),
    ];
    let mut todo: Vec<(String, String, bool)> = tagged
        .iter()
        .map(|(r, t)| (r.to_string(), t.to_string(), true))
        .collect();
    let mut blob_digests: Vec<(String, String)> = Vec::new();
    while let Some((repo, reference, is_tag)) = todo.pop() {
        let r = reg.fetch_manifest("GET", &repo, &reference);
        assert_eq!(r.status, 200, "{repo}:{reference}: {}", r.text());
        let digest = digest_of(&r.body);
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        let media_type = r.header("content-type").unwrap_or_default().to_string();
        let json = r.json();
        if let Some(children) = json["manifests"].as_array() {
            for c in children {
                let d = c["digest"].as_str().expect("child digest").to_string();
                todo.push((repo.clone(), d, false));
            }
        } else {
            let mut ds = vec![json["config"]["digest"]
                .as_str()
                .expect("config")
                .to_string()];
            for l in json["layers"].as_array().expect("layers") {
                ds.push(l["digest"].as_str().expect("layer digest").to_string());
            }
            for d in ds {
                if d != big.layer_digest && !blob_digests.contains(&(repo.clone(), d.clone())) {
                    blob_digests.push((repo.clone(), d));
                }
            }
        }
        let case = |reference: String| ManifestCase {
            repo: repo.clone(),
            reference,
            digest: digest.clone(),
            body: r.body.clone(),
            accept: accept_for(&media_type),
        };
        if is_tag {
            w.tags.push(case(reference.clone()));
        }
        if !w.by_digest.iter().any(|m| m.digest == digest) {
            w.by_digest.push(case(digest.clone()));
        }
    }
    for (repo, digest) in blob_digests {
        let (status, _, body) = http_get(&format!("{}/v2/{repo}/blobs/{digest}", reg.url()), &[]);
        assert_eq!(status, 200, "{repo}@{digest}");
        assert_eq!(digest_of(&body), digest);
        w.blobs.push(BlobCase {
            repo,
            digest,
            body: Arc::new(body),
        });
    }
    for repo in ["library/test", "library/multi", "library/big"] {
        let r = reg.fetch("GET", &format!("/v2/{repo}/tags/list"), &[]);
        assert_eq!(r.status, 200);
        let mut tags: Vec<String> = r.json()["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| t.as_str().expect("tag").to_string())
            .collect();
        tags.sort();
        w.tag_lists.push((repo.to_string(), tags));
    }
    w
}

// ------------------------------------------------------------------------------------------
// one request

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn pick_kind(rng: &mut Rng) -> Kind {
    let total: u64 = MIX.iter().map(|(_, w, _)| w).sum();
    let mut x = rng.below(total);
    for (k, w, _) in MIX {
        if x < w {
            return k;
        }
        x -= w;
    }
    Kind::Ping
}

/// A response whatever its status; `Err` for transport errors.
fn call(req: ureq::Request) -> Result<ureq::Response, String> {
    match req.call() {
        Ok(r) => Ok(r),
        Err(ureq::Error::Status(_, r)) => Ok(r),
        Err(e) => Err(e.to_string()),
    }
}

fn read_all(resp: ureq::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok(body)
}

/// Reads the body, comparing it with `expected` as it streams.
fn expect_body(resp: ureq::Response, expected: &[u8], buf: &mut [u8]) -> Result<(), String> {
    let mut reader = resp.into_reader();
    let mut at = 0usize;
    loop {
        let n = reader
            .read(buf)
            .map_err(|e| format!("reading the body after {at} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        if expected.get(at..at + n) != Some(&buf[..n]) {
            return Err(format!(
                "the body differs from the upstream's at or after byte {at}"
            ));
        }
        at += n;
    }
    if at != expected.len() {
        return Err(format!("{at} of {} bytes", expected.len()));
    }
    Ok(())
}

fn want_status(resp: &ureq::Response, want: u16) -> Result<(), String> {
    if resp.status() == want {
        Ok(())
    } else {
        Err(format!("status {} (wanted {want})", resp.status()))
    }
}

fn want_header(resp: &ureq::Response, name: &str, want: &str) -> Result<(), String> {
    match resp.header(name) {
        Some(v) if v == want => Ok(()),
        other => Err(format!("{name}: {other:?} (wanted {want:?})")),
    }
}

/// Asks for one `kind` of thing and checks the answer.
fn one(
    agent: &ureq::Agent,
    w: &World,
    kind: Kind,
    rng: &mut Rng,
    buf: &mut [u8],
) -> Result<(), String> {
    let base = &w.base;
    match kind {
        Kind::TagGet | Kind::TagHead | Kind::DigestGet => {
            let m = if kind == Kind::DigestGet {
                rng.pick(&w.by_digest)
            } else {
                rng.pick(&w.tags)
            };
            let url = format!("{base}/v2/{}/manifests/{}", m.repo, m.reference);
            let method = if kind == Kind::TagHead { "HEAD" } else { "GET" };
            let resp = call(agent.request(method, &url).set("Accept", m.accept))?;
            want_status(&resp, 200)?;
            want_header(&resp, "docker-content-digest", &m.digest)?;
            want_header(&resp, "content-length", &m.body.len().to_string())?;
            if kind == Kind::TagHead {
                let rest = read_all(resp)?;
                if !rest.is_empty() {
                    return Err(format!("a HEAD with {} body bytes", rest.len()));
                }
                Ok(())
            } else {
                expect_body(resp, &m.body, buf)
            }
        }
        Kind::BlobGet | Kind::BigGet => {
            let b = if kind == Kind::BigGet {
                &w.big
            } else {
                rng.pick(&w.blobs)
            };
            let url = format!("{base}/v2/{}/blobs/{}", b.repo, b.digest);
            let resp = call(agent.get(&url))?;
            want_status(&resp, 200)?;
            want_header(&resp, "content-length", &b.body.len().to_string())?;
            expect_body(resp, &b.body, buf)
        }
        Kind::BlobRange | Kind::BigRange => {
            let (b, most) = if kind == Kind::BigRange {
                (&w.big, 1u64 << 20)
            } else {
                (rng.pick(&w.blobs), 64u64 << 10)
            };
            let size = b.body.len() as u64;
            let start = rng.below(size);
            let len = 1 + rng.below(most.min(size - start));
            let end = start + len - 1;
            let url = format!("{base}/v2/{}/blobs/{}", b.repo, b.digest);
            let resp = call(
                agent
                    .get(&url)
                    .set("Range", &format!("bytes={start}-{end}")),
            )?;
            want_status(&resp, 206)?;
            want_header(
                &resp,
                "content-range",
                &format!("bytes {start}-{end}/{size}"),
            )?;
            expect_body(resp, &b.body[start as usize..=end as usize], buf)
        }
        Kind::TagsList => {
            let (repo, tags) = rng.pick(&w.tag_lists);
            let resp = call(agent.get(&format!("{base}/v2/{repo}/tags/list")))?;
            want_status(&resp, 200)?;
            let body = read_all(resp)?;
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("tags/list: {e}"))?;
            let mut got: Vec<String> = json["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            got.sort();
            if json["name"] != repo.as_str() || got != *tags {
                return Err(format!("tags/list of {repo}: {json}"));
            }
            Ok(())
        }
        Kind::Ping => {
            let resp = call(agent.get(&format!("{base}/v2/")))?;
            want_status(&resp, 200)?;
            read_all(resp).map(|_| ())
        }
        Kind::UnknownTag => {
            let url = format!(
                "{base}/v2/library/test/manifests/no-such-tag-{}",
                rng.below(1000)
            );
            let resp = call(agent.get(&url).set("Accept", OCI_ACCEPT))?;
            want_status(&resp, 404)?;
            let body = read_all(resp)?;
            let json: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| format!("the 404 is not an OCI error ({e})"))?;
            match json["errors"][0]["code"].as_str() {
                Some("MANIFEST_UNKNOWN") | Some("NAME_UNKNOWN") => Ok(()),
                _ => Err(format!("the 404 says {json}")),
            }
        }
        Kind::Metrics => {
            let resp = call(agent.get(&format!("{base}/metrics")))?;
            want_status(&resp, 200)?;
            let body = read_all(resp)?;
            if !String::from_utf8_lossy(&body).contains("acr_cache_hits_total") {
                return Err("/metrics without acr_cache_hits_total".into());
            }
            Ok(())
        }
    }
}

// ------------------------------------------------------------------------------------------
// the clients

/// What one client did, per kind.
#[derive(Default)]
struct Tally {
    count: Vec<u64>,
    errors: Vec<u64>,
    /// Microseconds.
    latencies: Vec<Vec<u32>>,
    samples: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            count: vec![0; MIX.len()],
            errors: vec![0; MIX.len()],
            latencies: vec![Vec::new(); MIX.len()],
            samples: Vec::new(),
        }
    }
    fn add(&mut self, other: Tally) {
        for i in 0..MIX.len() {
            self.count[i] += other.count[i];
            self.errors[i] += other.errors[i];
            self.latencies[i].extend_from_slice(&other.latencies[i]);
        }
        self.samples.extend(other.samples);
    }
}

/// Lets the controller stop every client between two requests.
struct Gate {
    paused: AtomicBool,
    stop: AtomicBool,
    active: AtomicUsize,
}

impl Gate {
    /// Enters a request; false once the run is over.
    fn enter(&self) -> bool {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            self.active.fetch_add(1, Ordering::SeqCst);
            if !self.paused.load(Ordering::SeqCst) {
                return true;
            }
            self.active.fetch_sub(1, Ordering::SeqCst);
            while self.paused.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    fn leave(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
    /// Pauses every client and waits until no request is under way.
    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        let drained = wait_until(Duration::from_secs(120), || {
            self.active.load(Ordering::SeqCst) == 0
        });
        assert!(drained, "the clients did not pause");
    }
    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

fn client(id: usize, w: Arc<World>, gate: Arc<Gate>, big_busy: Arc<AtomicBool>) -> Tally {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .redirects(0)
        .build();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
    let mut buf = vec![0u8; 256 << 10];
    let mut t = Tally::new();
    while gate.enter() {
        let mut kind = pick_kind(&mut rng);
        // One whole 64 MiB GET at a time; the others take a range of it instead.
        let mut holds_big = false;
        if kind == Kind::BigGet {
            holds_big = big_busy
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if !holds_big {
                kind = Kind::BigRange;
            }
        }
        let started = Instant::now();
        let result = one(&agent, &w, kind, &mut rng, &mut buf);
        let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if holds_big {
            big_busy.store(false, Ordering::SeqCst);
        }
        gate.leave();
        let i = index_of(kind);
        t.count[i] += 1;
        t.latencies[i].push(micros);
        if let Err(e) = result {
            t.errors[i] += 1;
            if t.samples.len() < 5 {
                t.samples.push(format!("client {id}, {}: {e}", MIX[i].2));
            }
        }
    }
    t
}

// ------------------------------------------------------------------------------------------
// memory

#[derive(Clone, Copy, Debug)]
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
}

fn memory(pid: u32) -> Memory {
    Memory {
        rss: proc_status_kib(pid, "VmRSS"),
        anon: proc_status_kib(pid, "RssAnon"),
        file: proc_status_kib(pid, "RssFile"),
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

// ------------------------------------------------------------------------------------------

#[test]
fn sixty_seconds_of_mixed_load_at_64_connections() {
    let seconds: u64 = std::env::var("ACR_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SECONDS)
        .max(2);
    let total = Duration::from_secs(seconds);
    let warm_up = WARM_UP.min(total / 2);
    let setup = Instant::now();
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let big = seed_big(&reg, 64);
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(&reg.url(), &[&cache_setting(cache.path())]));
    let world = Arc::new(discover(&reg, &acr, &big));

    // Warm: one pull of everything through acr, so the run is served from the store.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mut buf = vec![0u8; 256 << 10];
    let mut rng = Rng(1);
    for m in world.tags.iter().chain(&world.by_digest) {
        warm_manifest(&agent, &world.base, m, &mut buf)
            .unwrap_or_else(|e| panic!("warming {}:{}: {e}\n{}", m.repo, m.reference, acr.log()));
    }
    for b in &world.blobs {
        warm_blob(&agent, &world.base, b, &mut buf)
            .unwrap_or_else(|e| panic!("warming {}@{}: {e}\n{}", b.repo, b.digest, acr.log()));
    }
    one(&agent, &world, Kind::BigGet, &mut rng, &mut buf)
        .unwrap_or_else(|e| panic!("warming the 64 MiB blob: {e}\n{}", acr.log()));
    drop(agent);
    let blobs_stored = world
        .blobs
        .iter()
        .map(|b| &b.digest)
        .chain(std::iter::once(&world.big.digest))
        .all(|d| wait_until(Duration::from_secs(20), || has_blob(cache.path(), d)));
    assert!(blobs_stored, "the warm pull did not store every blob");
    let m0 = scrape(&acr);
    println!(
        "load: set up and warmed in {:.1?}: {} tags, {} manifests, {} small blobs + 1 of {} MiB; {} clients for {seconds} s",
        setup.elapsed(),
        world.tags.len(),
        world.by_digest.len(),
        world.blobs.len(),
        world.big.body.len() >> 20,
        CLIENTS
    );

    let gate = Arc::new(Gate {
        paused: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(0),
    });
    let big_busy = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (w, g, b) = (world.clone(), gate.clone(), big_busy.clone());
            thread::Builder::new()
                .name(format!("load-client-{id}"))
                .spawn(move || client(id, w, g, b))
                .expect("spawn a client")
        })
        .collect();

    // RssAnon every 5 s as the run goes (not quiet: requests in flight count too).
    let sampler = {
        let (gate, pid) = (gate.clone(), acr.pid());
        thread::spawn(move || {
            let mut series = Vec::new();
            let mut next = Instant::now();
            while !gate.stop.load(Ordering::SeqCst) {
                if Instant::now() >= next {
                    series.push(memory(pid).anon);
                    next += Duration::from_secs(5);
                }
                thread::sleep(Duration::from_millis(50));
            }
            series
        })
    };
    // The warm-up, then a quiet moment for the first sample.
    thread::sleep(warm_up);
    let pause_started = Instant::now();
    gate.pause();
    thread::sleep(QUIET);
    let after_warm_up = memory(acr.pid());
    let peak_at_warm_up = acr.peak_rss_kib();
    // Keep-alive: each client's one connection stays open while it is paused.
    let connections = established_on_port(acr.pid(), acr.port());
    gate.resume();
    let paused_for = pause_started.elapsed();

    // The rest of the run, then a quiet moment again (the clients are done).
    let until = started + total + paused_for;
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(100));
    }
    gate.stop.store(true, Ordering::SeqCst);
    let mut tally = Tally::new();
    for c in clients {
        tally.add(c.join().expect("client thread"));
    }
    let ran_for = started.elapsed() - paused_for;
    let series = sampler.join().expect("sampler thread");
    thread::sleep(QUIET);
    let at_end = memory(acr.pid());
    let peak = acr.peak_rss_kib();
    let m1 = scrape(&acr);

    // The numbers.
    let secs = ran_for.as_secs_f64();
    println!(
        "load: {secs:.1} s of load; {connections} client connections open at the warm-up pause"
    );
    println!(
        "{:<28} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "kind", "requests", "req/s", "errors", "p50 ms", "p99 ms", "max ms"
    );
    let mut errors = 0;
    for (i, (_, _, name)) in MIX.iter().enumerate() {
        let mut l = std::mem::take(&mut tally.latencies[i]);
        l.sort_unstable();
        errors += tally.errors[i];
        println!(
            "{:<28} {:>9} {:>9.1} {:>7} {:>9.2} {:>9.2} {:>9.2}",
            name,
            tally.count[i],
            tally.count[i] as f64 / secs,
            tally.errors[i],
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            percentile(&l, 1.0)
        );
    }
    let requests: u64 = tally.count.iter().sum();
    println!(
        "{:<28} {:>9} {:>9.1} {:>7}",
        "all",
        requests,
        requests as f64 / secs,
        errors
    );
    let growth = |a: u64, b: u64| (b as f64 - a as f64) / a as f64 * 100.0;
    println!(
        "acr memory (quiet, clients paused): after the {:.0?} warm-up VmRSS {} KiB (RssAnon {}, RssFile {}); \
         at the end VmRSS {} KiB (RssAnon {}, RssFile {}); growth VmRSS {:+.1}%, RssAnon {:+.1}%; \
         peak VmHWM {} KiB at the warm-up sample, {} KiB at the end",
        warm_up,
        after_warm_up.rss,
        after_warm_up.anon,
        after_warm_up.file,
        at_end.rss,
        at_end.anon,
        at_end.file,
        growth(after_warm_up.rss, at_end.rss),
        growth(after_warm_up.anon, at_end.anon),
        peak_at_warm_up,
        peak
    );
    println!("acr RssAnon every 5 s during the run (KiB, not quiet): {series:?}");
    println!(
        "store during the run: {} hits, {} misses, {} MiB from the store, {} KiB from the upstream, {} upstream requests, {} digest mismatches",
        m1.delta(&m0, "acr_cache_hits_total"),
        m1.delta(&m0, "acr_cache_misses_total"),
        m1.delta(&m0, "acr_bytes_from_store_total") >> 20,
        m1.delta(&m0, "acr_bytes_from_upstream_total") >> 10,
        m1.delta(&m0, "acr_upstream_requests_total"),
        m1.delta(&m0, "acr_digest_mismatches_total"),
    );

    assert!(acr.is_running(), "acr died under load:\n{}", acr.log());
    assert_eq!(
        errors,
        0,
        "{errors} errors under load; the first ones:\n{}",
        tally.samples.join("\n")
    );
    for (i, (_, _, name)) in MIX.iter().enumerate() {
        assert!(tally.count[i] > 0, "no request of kind {name} ran");
    }
    // (A connection of the set-up that acr has not seen closed yet may still count.)
    assert!(
        (CLIENTS..=CLIENTS + 2).contains(&connections),
        "{connections} client connections for {CLIENTS} keep-alive clients"
    );
    assert_eq!(m1.delta(&m0, "acr_digest_mismatches_total"), 0);
    assert!(
        (at_end.rss as f64) < after_warm_up.rss as f64 * 1.10,
        "acr's resident memory grew by {:.1}% under steady load ({} KiB -> {} KiB)",
        growth(after_warm_up.rss, at_end.rss),
        after_warm_up.rss,
        at_end.rss
    );
    assert!(
        !acr.log().contains("panicked"),
        "acr panicked under load:\n{}",
        acr.log()
    );
}

fn warm_manifest(
    agent: &ureq::Agent,
    base: &str,
    m: &ManifestCase,
    buf: &mut [u8],
) -> Result<(), String> {
    let url = format!("{base}/v2/{}/manifests/{}", m.repo, m.reference);
    let resp = call(agent.get(&url).set("Accept", m.accept))?;
    want_status(&resp, 200)?;
    want_header(&resp, "docker-content-digest", &m.digest)?;
    expect_body(resp, &m.body, buf)
}

fn warm_blob(agent: &ureq::Agent, base: &str, b: &BlobCase, buf: &mut [u8]) -> Result<(), String> {
    let url = format!("{base}/v2/{}/blobs/{}", b.repo, b.digest);
    let resp = call(agent.get(&url))?;
    want_status(&resp, 200)?;
    expect_body(resp, &b.body, buf)
}
