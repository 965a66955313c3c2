//! Pulls through `acr mirror start` with real clients (skopeo, containerd's `ctr`, podman) from
//! a real CNCF distribution upstream, and the API details clients depend on (tag pages and
//! their `Link`, HEAD headers, ranges). Also the streaming proof: acr's peak memory while 8
//! clients pull a 64 MiB blob at once.
//!
//! Every test starts its own upstream, its own acr (own port, own temp dir) and its own
//! clients, so they run in parallel.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;
use sha2::{Digest as _, Sha256};

const BIG_MIB: u32 = 64;

/// Every blob in an OCI layout hashes to its name.
fn assert_layout_blobs_verify(layout: &Path) {
    let dir = layout.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("blobs dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut f = std::fs::File::open(e.path()).expect("open blob");
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).expect("hash blob");
        assert_eq!(hex(&h.finalize()), name, "blob {name} in {}", dir.display());
        n += 1;
    }
    assert!(n >= 3, "only {n} blobs in {}", dir.display());
}

/// `skopeo copy --all` through acr into an OCI layout works for every kind of image the
/// upstream holds (OCI manifest, Docker schema 2, OCI index, Docker manifest list, a 64 MiB
/// layer) and keeps the upstream's manifest digests.
#[test]
fn skopeo_copies_every_image_kind_with_the_upstreams_digests() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let big = seed_big(&reg, BIG_MIB);
    let acr = Acr::start(&pull_through(&reg.url()));
    let out = temp_dir("acr-skopeo-out-");
    let cases = [
        ("library/test:1", seeded.test_oci.as_str()),
        ("library/test:v2s2", seeded.test_v2s2.as_str()),
        ("library/multi:1", seeded.multi_oci.as_str()),
        ("library/multi:v2s2", seeded.multi_v2s2.as_str()),
        (big.repo_ref.as_str(), big.manifest_digest.as_str()),
    ];
    for (i, (repo_ref, upstream_digest)) in cases.into_iter().enumerate() {
        let src = format!("docker://{}/{repo_ref}", acr.host());
        // An OCI layout holds everything but a Docker manifest list as is; skopeo must
        // convert that one (so its digest changes by design), checked byte-exact below.
        let layout = out.path().join(format!("oci-{i}"));
        let dest = format!("oci:{}:t", layout.display());
        let is_list = repo_ref.ends_with("multi:v2s2");
        let mut args = vec!["copy", "--all"];
        if !is_list {
            args.push("--preserve-digests");
        }
        args.extend([src.as_str(), dest.as_str()]);
        skopeo(&args).ok();
        assert_layout_blobs_verify(&layout);
        if !is_list {
            assert_eq!(
                layout_digest(&layout, "t"),
                upstream_digest,
                "{repo_ref}: the OCI layout's manifest is not the upstream's"
            );
        }
        // `dir:` keeps every manifest byte for byte: the digests are the upstream's.
        let dir = out.path().join(format!("dir-{i}"));
        let dest = format!("dir:{}", dir.display());
        skopeo(&["copy", "--all", "--preserve-digests", &src, &dest]).ok();
        let manifest = std::fs::read(dir.join("manifest.json")).expect("manifest.json");
        assert_eq!(digest_of(&manifest), upstream_digest, "{repo_ref} via dir:");
        let (_, raw) = raw_manifest(&reg, repo_ref);
        assert_eq!(manifest, raw, "{repo_ref}: manifest bytes differ");
    }
    // The children of both lists were fetched by digest, with the upstream's digests.
    for (_, child) in seeded
        .multi_oci_children
        .iter()
        .chain(&seeded.multi_v2s2_children)
    {
        assert!(
            !acr.wait_requests(&[&format!("/manifests/{child}"), "status=200"], 1)
                .is_empty(),
            "child {child} was not fetched through acr:\n{}",
            acr.log()
        );
    }
    // The big layer went through acr whole.
    let line = acr
        .wait_requests(&[&format!("/blobs/{}", big.layer_digest), "status=200"], 1)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no 200 for the big layer:\n{}", acr.log()));
    assert!(
        line.contains(&format!("bytes={}", big.layer_size)),
        "{line}"
    );
}

/// `skopeo inspect` (config-derived and raw) through acr says what it says at the upstream.
#[test]
fn skopeo_inspect_through_acr_agrees_with_the_upstream() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let acr = Acr::start(&pull_through(&reg.url()));
    for repo_ref in [
        "library/test:1",
        "library/test:v2s2",
        "library/multi:1",
        "library/multi:v2s2",
    ] {
        let via = |host: &str, raw: bool| {
            let r = format!("docker://{host}/{repo_ref}");
            let mut args = vec!["inspect"];
            if raw {
                args.push("--raw");
            }
            args.push(&r);
            skopeo(&args).ok().stdout
        };
        assert_eq!(
            via(&acr.host(), true),
            via(&reg.host(), true),
            "{repo_ref}: raw manifests differ"
        );
        let mut through: serde_json::Value =
            serde_json::from_str(&via(&acr.host(), false)).expect("inspect json");
        let mut direct: serde_json::Value =
            serde_json::from_str(&via(&reg.host(), false)).expect("inspect json");
        // `Name` is the reference as typed (it names the host); everything else must agree:
        // digest, layers, architecture, os, created, env, tags.
        for v in [&mut through, &mut direct] {
            v.as_object_mut().expect("object").remove("Name");
        }
        assert_eq!(through, direct, "{repo_ref}: inspect differs");
        assert!(through["Digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")));
        let mut tags: Vec<&str> = through["RepoTags"]
            .as_array()
            .expect("RepoTags")
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        tags.sort();
        assert_eq!(tags, ["1", "v2s2"]);
    }
}

/// Status lines of the upstream's access log for blob GETs, with their user agents.
fn upstream_blob_agents(reg: &Registry) -> Vec<String> {
    reg.access_log()
        .into_iter()
        .filter(|e| e.method == "GET" && e.path.contains("/blobs/"))
        .map(|e| e.user_agent)
        .collect()
}

/// containerd (`ctr images pull --hosts-dir`) with the hosts.toml that `.mirror` wrote pulls
/// and unpacks a `127.0.0.1:PORT` image through acr; acr's log shows each request with the
/// `ns` containerd sent, and every blob the upstream served went to acr, none to containerd.
#[test]
fn ctr_pulls_and_unpacks_through_the_hosts_toml_mirror_wrote() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    // `.header` too, so containerd reads every part of the file `.mirror` writes.
    let acr = Acr::start(&pipeline(
        &reg.url(),
        &[".header x-acr-test yes"],
        &[],
        &routes(""),
    ));
    let hosts = acr.default_hosts_dir();
    let toml = std::fs::read_to_string(hosts.join(reg.host()).join("hosts.toml"))
        .expect(".mirror wrote hosts.toml under the world directory");
    assert!(toml.contains("x-acr-test = \"yes\""), "{toml}");
    assert!(
        toml.contains(&format!("server = \"{}\"", reg.url())),
        "{toml}"
    );
    assert!(
        toml.contains(&format!("[host.\"http://{}\"]", acr.host())),
        "{toml}"
    );
    let ctrd = Containerd::start();
    let image = reg.image("library/test:1");
    let out = ctrd.ctr_pull(&image, &hosts).ok();
    assert!(out.stdout.contains("unpacking linux/amd64"), "{out:?}");
    assert!(out.stdout.contains("done"), "{out:?}");
    assert!(
        ctrd.image_digests()
            .contains(&(image.clone(), seeded.test_oci.clone())),
        "{:?}",
        ctrd.image_digests()
    );
    let ns = format!("ns={}", reg.host());
    let manifest = acr.wait_requests(&["/v2/library/test/manifests/1", &ns, "status=200"], 1);
    assert!(!manifest.is_empty(), "{}", acr.log());
    let blobs = acr.wait_requests(&["/v2/library/test/blobs/sha256:", &ns, "status=200"], 2);
    assert!(blobs.len() >= 2, "config and layer: {}", acr.log());
    for line in acr.request_lines() {
        assert!(line.contains(" upstream="), "{line}");
        assert!(line.contains(" bytes=") && line.contains(" ms="), "{line}");
    }
    let agents = upstream_blob_agents(&reg);
    assert!(!agents.is_empty());
    assert!(
        agents.iter().all(|a| a.starts_with("acr/")),
        "containerd went around acr: {agents:?}"
    );
    // The unpacked snapshot exists: the layer really was applied.
    let snaps = ctrd.ctr(&["snapshots", "ls"]).ok().stdout;
    assert!(snaps.contains("Committed"), "{snaps}");
}

/// The `docker.io` namespace: `.mirror docker.io` with `.server` at a closed local port, and
/// `.endpoint docker.io` sending it to the local upstream; `ctr pull docker.io/library/test:1`
/// with the hosts directory `mirror start --hosts-dir` wrote pulls through acr with
/// `ns=docker.io`. Nothing leaves the machine.
#[test]
fn ctr_pulls_docker_io_through_the_endpoint_to_a_local_upstream() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let dead = dead_url();
    let hosts = temp_dir("acr-hosts-dir-");
    let runmd = pipeline(
        "docker.io",
        &[&format!(".server {dead}")],
        &[&format!(".endpoint docker.io {}", reg.url())],
        &routes(""),
    );
    let acr = Acr::start_with(
        &runmd,
        AcrOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            ..Default::default()
        },
    );
    let toml = std::fs::read_to_string(hosts.path().join("docker.io/hosts.toml"))
        .expect("hosts.toml in --hosts-dir");
    assert!(toml.contains(&format!("server = \"{dead}\"")), "{toml}");
    assert!(
        !acr.default_hosts_dir().exists(),
        "--hosts-dir given, yet the world directory got hosts.toml too"
    );
    let ctrd = Containerd::start();
    let out = ctrd.ctr_pull("docker.io/library/test:1", hosts.path()).ok();
    assert!(out.stdout.contains("unpacking linux/amd64"), "{out:?}");
    assert!(ctrd.image_digests().contains(&(
        "docker.io/library/test:1".to_string(),
        seeded.test_oci.clone()
    )));
    let lines = acr.wait_requests(&["ns=docker.io", "status=200"], 3);
    assert!(
        lines.iter().any(|l| l.contains("/manifests/1")),
        "{}",
        acr.log()
    );
    assert!(
        lines.iter().filter(|l| l.contains("/blobs/")).count() >= 2,
        "{}",
        acr.log()
    );
    assert!(upstream_blob_agents(&reg)
        .iter()
        .all(|a| a.starts_with("acr/")));
    // A short name gets `library/`, as Docker Hub does.
    let r = http_request(
        "HEAD",
        &format!("{}/v2/test/manifests/1?ns=docker.io", acr.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(seeded.test_oci.as_str())
    );
}

/// podman with a registries.conf mirror pulls through acr; podman sends no `ns`, so the
/// `.mirror` host is the upstream.
#[test]
fn podman_pulls_through_a_registries_conf_mirror() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let acr = Acr::start(&pull_through(&reg.url()));
    let podman = Podman::new(&registries_conf(&reg.host(), &[&acr.host()]));
    let image = reg.image("library/multi:v2s2");
    podman.pull(&image).ok();
    let amd64 = &seeded
        .multi_v2s2_children
        .iter()
        .find(|(a, _)| a == "amd64")
        .expect("amd64 child")
        .1;
    let digest = podman.image_digest(&image);
    assert!(
        digest == seeded.multi_v2s2 || &digest == amd64,
        "podman recorded {digest}"
    );
    let lines = acr.wait_requests(
        &["ns=-", &format!("upstream={}", reg.host()), "status=200"],
        3,
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/v2/library/multi/manifests/v2s2")),
        "{}",
        acr.log()
    );
    assert!(
        lines.iter().filter(|l| l.contains("/blobs/")).count() >= 2,
        "{}",
        acr.log()
    );
    let agents = upstream_blob_agents(&reg);
    assert!(
        !agents.is_empty() && agents.iter().all(|a| a.starts_with("acr/")),
        "podman went around acr: {agents:?}"
    );
}

fn link_target(link: &str) -> String {
    let start = link.find('<').expect("<") + 1;
    let end = link.find('>').expect(">");
    link[start..end].to_string()
}

/// Tag lists: `n` and `last` page the list (distribution 2.8 ignores them, so acr pages
/// what it sent, in lexical order), and the `Link` to the next page points back at acr under
/// the name and `ns` the client used (a docker.io short name stays short).
#[test]
fn tag_pages_and_their_link_point_back_at_acr() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let f = fixtures();
    for tag in ["a", "b"] {
        push(&reg, &f.test, &format!("library/test:{tag}"), &[]);
    }
    let runmd = pipeline(
        &format!("docker.io, {}", reg.url()),
        &[&format!(".server {}", dead_url())],
        &[&format!(".endpoint docker.io {}", reg.url())],
        &routes(""),
    );
    let acr = Acr::start(&runmd);
    let all = ["1", "a", "b", "v2s2"];
    // (path as the client writes it, its ns)
    let cases = [
        ("library/test".to_string(), Some(reg.host())),
        ("test".to_string(), Some("docker.io".to_string())),
        ("library/test".to_string(), None),
    ];
    for (name, ns) in cases {
        let ns_query = ns
            .as_deref()
            .map(|n| format!("&ns={}", n.replace(':', "%3A")))
            .unwrap_or_default();
        let mut url = format!("{}/v2/{name}/tags/list?n=2{ns_query}", acr.url());
        let mut seen = Vec::new();
        for page in 0.. {
            assert!(page < 4, "too many pages: {seen:?}");
            let r = http_request("GET", &url, &[], None);
            assert_eq!(r.status, 200, "{url}: {}", r.text());
            let j = r.json();
            let tags: Vec<String> = j["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .map(|t| t.as_str().expect("tag").to_string())
                .collect();
            assert!(tags.len() <= 2, "n=2 gave {tags:?}");
            seen.extend(tags);
            let Some(link) = r.header("link") else { break };
            assert!(link.contains("rel=\"next\""), "{link}");
            let target = link_target(link);
            assert!(
                target.starts_with(&format!("/v2/{name}/tags/list?")),
                "Link {link} does not name the client's repository {name}"
            );
            if let Some(ns) = &ns {
                let encoded = ns.replace(':', "%3A");
                assert!(
                    target.contains(&format!("ns={encoded}")),
                    "Link {link} lost ns={ns}"
                );
            } else {
                assert!(!target.contains("ns="), "{link}");
            }
            assert!(target.contains("last="), "{link}");
            url = format!("{}{target}", acr.url());
        }
        assert_eq!(seen, all, "{name} ns={ns:?}");
    }
    // `last` alone.
    let r = http_request(
        "GET",
        &format!("{}/v2/library/test/tags/list?last=a", acr.url()),
        &[],
        None,
    );
    assert_eq!(r.json()["tags"], serde_json::json!(["b", "v2s2"]));
}

/// `GET /v2/` says `registry/2.0`; HEAD and GET of every manifest kind give the upstream's
/// `Docker-Content-Digest`, `Content-Type` and `Content-Length`; blob HEAD and `Range`
/// (206, `Content-Range`, the right bytes).
#[test]
fn api_version_head_headers_and_blob_ranges() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let acr = Acr::start(&pull_through(&reg.url()));
    let r = http_request("GET", &format!("{}/v2/", acr.url()), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let cases = [
        ("test", "1", seeded.test_oci.as_str(), OCI_MANIFEST),
        ("test", "v2s2", seeded.test_v2s2.as_str(), DOCKER_MANIFEST),
        ("multi", "1", seeded.multi_oci.as_str(), OCI_INDEX),
        (
            "multi",
            "v2s2",
            seeded.multi_v2s2.as_str(),
            DOCKER_MANIFEST_LIST,
        ),
    ];
    for (repo, tag, digest, media_type) in cases {
        let repo = format!("library/{repo}");
        let (_, raw) = raw_manifest(&reg, &format!("{repo}:{tag}"));
        for reference in [tag, digest] {
            for method in ["HEAD", "GET"] {
                let r = http_request(
                    method,
                    &format!("{}/v2/{repo}/manifests/{reference}", acr.url()),
                    &[("Accept", ACCEPT_MANIFESTS)],
                    None,
                );
                let what = format!("{method} {repo}/manifests/{reference}");
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                assert_eq!(r.header("docker-content-digest"), Some(digest), "{what}");
                assert_eq!(r.header("content-type"), Some(media_type), "{what}");
                assert_eq!(
                    r.header("content-length"),
                    Some(raw.len().to_string().as_str()),
                    "{what}"
                );
                assert_eq!(
                    r.header("docker-distribution-api-version"),
                    Some("registry/2.0")
                );
                if method == "GET" {
                    assert_eq!(r.body, raw, "{what}");
                } else {
                    assert!(r.body.is_empty(), "{what} has a body");
                }
            }
        }
    }
    // A client that takes only Docker schema 2 is not handed an OCI index.
    let r = http_request(
        "GET",
        &format!("{}/v2/library/test/manifests/v2s2", acr.url()),
        &[("Accept", DOCKER_MANIFEST)],
        None,
    );
    assert_eq!(r.header("content-type"), Some(DOCKER_MANIFEST));
    // Blobs.
    let (layer, size) = fixtures().test.layers()[0].clone();
    let bytes = fixtures().test.blob(&layer);
    let url = format!("{}/v2/library/test/blobs/{layer}", acr.url());
    let r = http_request("HEAD", &url, &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(layer.as_str()));
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    assert!(r.body.is_empty());
    let r = http_request("GET", &url, &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(digest_of(&r.body), layer);
    for (range, from, to) in [
        ("bytes=0-99", 0usize, 99usize),
        ("bytes=1000-1999", 1000, 1999),
        (
            &format!("bytes={}-", size - 10) as &str,
            size as usize - 10,
            size as usize - 1,
        ),
    ] {
        let r = http_request("GET", &url, &[("Range", range)], None);
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {from}-{to}/{size}").as_str()),
            "{range}"
        );
        assert_eq!(r.body, bytes[from..=to], "{range}");
    }
    assert_eq!(acr.wait_requests(&["status=206"], 3).len(), 3);
    // Unknown things are the OCI errors containerd falls back on.
    let r = http_request(
        "GET",
        &format!("{}/v2/library/test/manifests/nope", acr.url()),
        &[],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(oci_code(&r.text()), "MANIFEST_UNKNOWN");
    let r = http_request(
        "GET",
        &format!(
            "{}/v2/library/test/blobs/sha256:{}",
            acr.url(),
            "0".repeat(64)
        ),
        &[],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(oci_code(&r.text()), "BLOB_UNKNOWN");
}

/// The streaming proof: 8 clients pull the 64 MiB layer through acr at once; each gets every
/// byte (digest checked), and acr's peak resident memory stays under 64 MiB: bodies stream,
/// they are never held whole.
#[test]
fn eight_clients_pull_64_mib_at_once_and_acr_stays_under_64_mib() {
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, BIG_MIB);
    assert!(
        big.layer_size >= 64 << 20,
        "layer is {} bytes",
        big.layer_size
    );
    let acr = Acr::start(&pull_through(&reg.url()));
    // Warm: one small request, so the baseline includes acr's own start.
    acr.assert_serves(Some(("library/big", &BIG_MIB.to_string())));
    let baseline = acr.peak_rss_kib();
    let url = format!("{}/v2/library/big/blobs/{}", acr.url(), big.layer_digest);
    let done = Arc::new(AtomicBool::new(false));
    let sampled_max = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, max, pid) = (done.clone(), sampled_max.clone(), acr.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    {
                        max.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(600))
                    .build();
                let resp = agent.get(&url).call().expect("GET big blob");
                assert_eq!(resp.status(), 200);
                let mut reader = resp.into_reader();
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 << 10];
                let mut n = 0u64;
                loop {
                    let k = reader.read(&mut buf).expect("read big blob");
                    if k == 0 {
                        break;
                    }
                    h.update(&buf[..k]);
                    n += k as u64;
                }
                (n, format!("sha256:{}", hex(&h.finalize())))
            })
        })
        .collect();
    for c in clients {
        let (n, digest) = c.join().expect("client thread");
        assert_eq!(n, big.layer_size);
        assert_eq!(digest, big.layer_digest);
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let peak = acr.peak_rss_kib();
    println!(
        "acr peak RSS (VmHWM) with 8 concurrent {BIG_MIB} MiB pulls: {} KiB = {:.1} MiB \
         (baseline before the pulls {:.1} MiB, highest sampled VmRSS {:.1} MiB, {:.1?} for {} MiB)",
        peak,
        peak as f64 / 1024.0,
        baseline as f64 / 1024.0,
        sampled_max.load(Ordering::Relaxed) as f64 / 1024.0,
        elapsed,
        8 * BIG_MIB
    );
    let lines = acr.wait_requests(
        &[
            &format!("/blobs/{}", big.layer_digest),
            "status=200",
            &format!("bytes={}", big.layer_size),
        ],
        8,
    );
    assert_eq!(lines.len(), 8, "{}", acr.log());
    assert!(
        peak < 64 * 1024,
        "acr's peak RSS {peak} KiB is not under 64 MiB: it buffers"
    );
}

/// An upstream that pages tags itself: its `Link` is passed on, rewritten to point back at
/// acr under the client's name and `ns`, and `n`/`last` reach it as the client sent them.
#[test]
fn an_upstream_tag_link_is_rewritten_to_point_at_acr() {
    let fake = FakeUpstream::start(|r: &FakeRequest| {
        let path = r.path.as_str();
        if path == "/v2/" {
            return FakeReply::new(200, &[("Content-Type", "application/json")], "{}");
        }
        if path.starts_with("/v2/library/app/tags/list") {
            return FakeReply::new(
                200,
                &[
                    ("Content-Type", "application/json"),
                    (
                        "Link",
                        "</v2/library/app/tags/list?last=b&n=2>; rel=\"next\"",
                    ),
                ],
                r#"{"name":"library/app","tags":["a","b"]}"#,
            );
        }
        FakeReply::new(
            404,
            &[],
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#,
        )
    });
    let runmd = pipeline(
        "docker.io",
        &[&format!(".server {}", dead_url())],
        &[&format!(".endpoint docker.io {}", fake.url())],
        &routes(""),
    );
    let acr = Acr::start(&runmd);
    let r = http_request(
        "GET",
        &format!("{}/v2/app/tags/list?n=2&ns=docker.io", acr.url()),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        Some(r#"</v2/app/tags/list?last=b&n=2&ns=docker.io>; rel="next""#)
    );
    assert!(
        fake.requests()
            .iter()
            .any(|p| p == "GET /v2/library/app/tags/list?n=2"),
        "{:?}",
        fake.requests()
    );
}

/// HTTP/2 without TLS (h2c, prior knowledge) is served too, bodies included.
#[test]
fn h2c_is_served() {
    require_tools(&["curl"]);
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let acr = Acr::start(&pull_through(&reg.url()));
    let (layer, _) = fixtures().test.layers()[0].clone();
    let out = temp_dir("acr-h2c-");
    let file = out.path().join("blob");
    let file_arg = file.display().to_string();
    for (path, output) in [
        ("/v2/".to_string(), "/dev/null"),
        (format!("/v2/library/test/blobs/{layer}"), file_arg.as_str()),
    ] {
        let r = run(
            "curl",
            &[
                "-sS",
                "--http2-prior-knowledge",
                "-o",
                output,
                "-w",
                "%{http_version} %{http_code}",
                &format!("{}{path}", acr.url()),
            ],
        )
        .ok();
        assert_eq!(r.stdout, "2 200", "{path}: {r:?}");
    }
    assert_eq!(digest_of(&std::fs::read(&file).expect("blob")), layer);
}

/// Repository names with dots, dashes, underscores and several path components pass
/// through unchanged.
#[test]
fn nested_names_with_dots_dashes_and_underscores() {
    let reg = Registry::start(RegistryAuth::None);
    let name = "my.org/sub_dir/app-x.y__z/v1";
    push(&reg, &fixtures().test, &format!("{name}:1.0_rc-1"), &[]);
    let acr = Acr::start(&pull_through(&reg.url()));
    let out = temp_dir("acr-names-");
    skopeo(&[
        "copy",
        "--preserve-digests",
        &format!("docker://{}/{name}:1.0_rc-1", acr.host()),
        &format!("oci:{}:t", out.path().display()),
    ])
    .ok();
    assert_eq!(layout_digest(out.path(), "t"), fixtures().test.digest);
    let r = http_request(
        "GET",
        &format!("{}/v2/{name}/tags/list", acr.url()),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], serde_json::json!(["1.0_rc-1"]));
    assert!(!acr
        .wait_requests(&[&format!("path=/v2/{name}/blobs/"), "status=200"], 1)
        .is_empty());
}

/// With `.path-routing`, a client that sends no `ns` names the registry as the first path
/// segment (`ACR/ghcr.io/org/app`); `.endpoint` sends that registry to the local upstream,
/// and tag links keep the client's path.
#[test]
fn path_routing_names_the_registry_in_the_path() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let runmd = pipeline(
        &reg.url(),
        &[],
        &[".path-routing", &format!(".endpoint ghcr.io {}", reg.url())],
        &routes(""),
    );
    let acr = Acr::start(&runmd);
    let out = temp_dir("acr-path-routing-");
    skopeo(&[
        "copy",
        "--preserve-digests",
        &format!("docker://{}/ghcr.io/library/test:1", acr.host()),
        &format!("oci:{}:t", out.path().display()),
    ])
    .ok();
    assert_eq!(layout_digest(out.path(), "t"), seeded.test_oci);
    assert!(
        acr.wait_requests(
            &[
                "path=/v2/ghcr.io/library/test/blobs/",
                "upstream=ghcr.io",
                "status=200"
            ],
            2
        )
        .len()
            >= 2,
        "{}",
        acr.log()
    );
    let r = http_request(
        "GET",
        &format!("{}/v2/ghcr.io/library/test/tags/list?n=1", acr.url()),
        &[],
        None,
    );
    assert_eq!(r.json()["tags"], serde_json::json!(["1"]));
    assert_eq!(
        r.header("link"),
        Some(r#"</v2/ghcr.io/library/test/tags/list?n=1&last=1>; rel="next""#)
    );
    // The same repository without the prefix goes to the `.mirror` host.
    let r = http_request(
        "HEAD",
        &format!("{}/v2/library/test/manifests/1", acr.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(seeded.test_oci.as_str())
    );
}

/// One acr in front of two registries: containerd's `ns` chooses, each gets its hosts.toml,
/// and a client without `ns` gets the first `.mirror` host.
#[test]
fn one_acr_serves_two_upstreams_chosen_by_ns() {
    let one = Registry::start(RegistryAuth::None);
    let two = Registry::start(RegistryAuth::None);
    let f = fixtures();
    push(&one, &f.test, "library/app:1", &[]);
    push(&two, &f.multi, "library/app:1", &["--all"]);
    let runmd = pipeline(
        &format!("{}, {}", one.url(), two.url()),
        &[],
        &[],
        &routes(""),
    );
    let acr = Acr::start(&runmd);
    let hosts = acr.default_hosts_dir();
    for reg in [&one, &two] {
        let toml = std::fs::read_to_string(hosts.join(reg.host()).join("hosts.toml"))
            .expect("hosts.toml for each upstream");
        assert!(
            toml.contains(&format!("server = \"{}\"", reg.url())),
            "{toml}"
        );
    }
    let head = |query: &str| {
        let r = http_request(
            "HEAD",
            &format!("{}/v2/library/app/manifests/1{query}", acr.url()),
            &[("Accept", ACCEPT_MANIFESTS)],
            None,
        );
        assert_eq!(r.status, 200, "{query}");
        r.header("docker-content-digest")
            .expect("digest")
            .to_string()
    };
    assert_eq!(head(&format!("?ns={}", one.host())), f.test.digest);
    assert_eq!(head(&format!("?ns={}", two.host())), f.multi.digest);
    assert_eq!(head(""), f.test.digest);
    let ctrd = Containerd::start();
    for (reg, digest) in [(&one, &f.test.digest), (&two, &f.multi.digest)] {
        let image = reg.image("library/app:1");
        ctrd.ctr_pull(&image, &hosts).ok();
        assert!(ctrd.image_digests().contains(&(image, digest.clone())));
        assert!(
            !acr.wait_requests(&[&format!("ns={}", reg.host()), "/blobs/", "status=200"], 1)
                .is_empty(),
            "{}",
            acr.log()
        );
        assert!(upstream_blob_agents(reg)
            .iter()
            .all(|a| a.starts_with("acr/")));
    }
}

/// `.mirror HOST` without a scheme means https: acr never falls back to plain http by
/// itself, so a plain-http upstream named that way is a 502, not a silent downgrade.
#[test]
fn a_mirror_host_without_a_scheme_is_never_plain_http() {
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let acr = Acr::start(&pipeline(&reg.host(), &[], &[], &routes("")));
    let r = http_request(
        "GET",
        &format!("{}/v2/library/test/manifests/1", acr.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAVAILABLE");
    assert!(
        reg.access_log()
            .iter()
            .all(|e| !e.user_agent.starts_with("acr/")),
        "acr spoke plain http: {:?}",
        reg.access_log()
    );
    let toml = std::fs::read_to_string(acr.default_hosts_dir().join(reg.host()).join("hosts.toml"))
        .expect("hosts.toml");
    assert!(
        toml.contains(&format!("server = \"https://{}\"", reg.host())),
        "{toml}"
    );
}

/// A hosts.toml that is already there (another tool's, or the admin's) is kept as a backup,
/// never silently overwritten.
#[test]
fn an_existing_hosts_toml_is_backed_up_not_clobbered() {
    let reg = Registry::start(RegistryAuth::None);
    let hosts = temp_dir("acr-hosts-existing-");
    let ns_dir = hosts.path().join(reg.host());
    std::fs::create_dir_all(&ns_dir).expect("mkdir");
    let mine = "# the admin's own\nserver = \"https://elsewhere.example\"\n";
    std::fs::write(ns_dir.join("hosts.toml"), mine).expect("write");
    let acr = Acr::start_with(
        &pull_through(&reg.url()),
        AcrOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            ..Default::default()
        },
    );
    let now = std::fs::read_to_string(ns_dir.join("hosts.toml")).expect("hosts.toml");
    assert!(now.contains(&acr.host()), "{now}");
    let backups: Vec<String> = std::fs::read_dir(&ns_dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hosts.toml.bak-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(
        std::fs::read_to_string(ns_dir.join(&backups[0])).expect("backup"),
        mine
    );
}

/// Bodies stream: while the upstream stalls half-way through a blob, the client already
/// has the first bytes (containerd gives up on a mirror that sends nothing for 30 s).
#[test]
fn the_first_bytes_leave_before_the_last_arrive() {
    let blob = pseudo_random_bytes("stall", 4 << 20);
    let digest = digest_of(&blob);
    let stall = Duration::from_secs(6);
    let served = blob.clone();
    let fake = FakeUpstream::start(move |r: &FakeRequest| {
        if r.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        let mut reply = FakeReply::new(200, &[], served.clone());
        reply.pause = Some((1 << 20, stall));
        reply
    });
    let acr = Acr::start(&pull_through(&fake.url()));
    let started = Instant::now();
    let resp = ureq::get(&format!("{}/v2/library/x/blobs/{digest}", acr.url()))
        .call()
        .expect("GET");
    let headers_after = started.elapsed();
    let mut reader = resp.into_reader();
    let mut first = vec![0u8; 512 << 10];
    reader.read_exact(&mut first).expect("first 512 KiB");
    let first_after = started.elapsed();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("the rest");
    let all_after = started.elapsed();
    first.extend_from_slice(&rest);
    assert_eq!(digest_of(&first), digest);
    assert!(
        all_after >= stall,
        "the upstream did not stall? {all_after:?}"
    );
    assert!(
        headers_after < stall && first_after < stall,
        "headers after {headers_after:?}, first 512 KiB after {first_after:?}: acr waited for the whole blob"
    );
}

/// `.resolve TYPES` adds its media types to the client's Accept (never replaces them);
/// referrers pass `artifactType` on and keep the index's headers.
#[test]
fn resolve_adds_media_types_and_referrers_pass_through() {
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let fake = FakeUpstream::start(move |r: &FakeRequest| {
        if r.path == "/v2/" {
            return FakeReply::new(200, &[], "{}");
        }
        if r.path.contains("/referrers/") {
            return FakeReply::new(
                200,
                &[
                    ("Content-Type", OCI_INDEX),
                    ("OCI-Filters-Applied", "artifactType"),
                ],
                index,
            );
        }
        FakeReply::new(
            404,
            &[],
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}"#,
        )
    });
    let routes = ": .manifests head, get\n:   .resolve application/vnd.example.a+json application/vnd.example.b+json\n\
                  : .referrers get\n:   .resolve\n";
    let acr = Acr::start(&pipeline(&fake.url(), &[], &[], routes));
    let r = http_request(
        "GET",
        &format!("{}/v2/library/x/manifests/1", acr.url()),
        &[("Accept", DOCKER_MANIFEST)],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(oci_code(&r.text()), "MANIFEST_UNKNOWN");
    let asked = fake
        .received()
        .into_iter()
        .find(|r| r.path.contains("/manifests/"))
        .expect("the manifest request");
    assert_eq!(
        asked.header("accept"),
        Some(
            "application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.example.a+json, application/vnd.example.b+json"
        )
    );
    let digest = fixtures().test.digest.clone();
    let r = http_request(
        "GET",
        &format!(
            "{}/v2/library/x/referrers/{digest}?artifactType=application%2Fvnd.example.sig",
            acr.url()
        ),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::from_str::<serde_json::Value>(index).unwrap()
    );
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert!(
        fake.requests().contains(&format!(
            "GET /v2/library/x/referrers/{digest}?artifactType=application%2Fvnd.example.sig"
        )),
        "{:?}",
        fake.requests()
    );
}

/// An upstream without the referrers API (distribution 2.8) answers 404; acr serves the API
/// anyway from the referrers tag schema (`sha256-<hex>`, an index kept by whoever pushed the
/// referrers), so clients need no fallback of their own: an empty index while there is no
/// such tag, its descriptors once there is, filtered by `artifactType` on request.
#[test]
fn referrers_from_an_upstream_without_the_api_come_from_the_fallback_tag() {
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let acr = Acr::start(&pull_through(&reg.url()));
    let subject = fixtures().test.digest.clone();
    let url = format!("{}/v2/library/test/referrers/{subject}", acr.url());
    let r = http_request("GET", &url, &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    // A referrer, recorded under the fallback tag as ORAS does against such a registry.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": subject,
            "size": fixtures().test.size,
            "artifactType": "application/vnd.example.sig",
            "annotations": {"org.example": "yes"},
        }],
    })
    .to_string();
    let tag = format!("sha256-{}", subject.trim_start_matches("sha256:"));
    let put = http_request(
        "PUT",
        &format!("{}/v2/library/test/manifests/{tag}", reg.url()),
        &[("Content-Type", OCI_INDEX)],
        Some(index.as_bytes()),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let r = http_request("GET", &url, &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let found = r.json();
    assert_eq!(
        found["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    assert_eq!(found["manifests"][0]["annotations"]["org.example"], "yes");
    assert!(r.header("oci-filters-applied").is_none());
    let r = http_request(
        "GET",
        &format!("{url}?artifactType=application%2Fvnd.example.other"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    acr.assert_serves(Some(("library/test", "1")));
}
