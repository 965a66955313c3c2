//! The registry API details clients depend on (tag pages, HEAD, ranges, h2c) and memory under parallel pulls.

use super::*;

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
            let r = fetch("GET", &url, &[]);
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
    let r = acr.fetch("GET", "/v2/library/test/tags/list?last=a", &[]);
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
    let r = acr.fetch("GET", "/v2/", &[]);
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
                let r = fetch(
                    method,
                    &format!("{}/v2/{repo}/manifests/{reference}", acr.url()),
                    &[("Accept", ACCEPT_MANIFESTS)],
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
    let r = acr.fetch(
        "GET",
        "/v2/library/test/manifests/v2s2",
        &[("Accept", DOCKER_MANIFEST)],
    );
    assert_eq!(r.header("content-type"), Some(DOCKER_MANIFEST));
    // Blobs.
    let (layer, size) = fixtures().test.layers()[0].clone();
    let bytes = fixtures().test.blob(&layer);
    let url = format!("{}/v2/library/test/blobs/{layer}", acr.url());
    let r = fetch("HEAD", &url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(layer.as_str()));
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    assert!(r.body.is_empty());
    let r = fetch("GET", &url, &[]);
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
        let r = fetch("GET", &url, &[("Range", range)]);
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
    let r = acr.fetch("GET", "/v2/library/test/manifests/nope", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(oci_code(&r.text()), "MANIFEST_UNKNOWN");
    let r = fetch(
        "GET",
        &format!(
            "{}/v2/library/test/blobs/sha256:{}",
            acr.url(),
            "0".repeat(64)
        ),
        &[],
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
/// acr under the client's name and `ns`, and `n`/`last` reach it as the client sent them
/// (with the `ns` acr tells an `.endpoint`).
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
    let r = acr.fetch("GET", "/v2/app/tags/list?n=2&ns=docker.io", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        Some(r#"</v2/app/tags/list?last=b&n=2&ns=docker.io>; rel="next""#)
    );
    assert!(
        fake.requests()
            .iter()
            .any(|p| p == "GET /v2/library/app/tags/list?n=2&ns=docker.io"),
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
