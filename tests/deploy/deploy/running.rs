//! The real acr on the deployment's pipelines.

use super::pod::PodRun;
use super::*;

// ------------------------------------------------------------------------------------------
// the real acr on the deployment's pipelines

/// `text` with each `from` (which must occur) replaced by `to`.
fn adjusted(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (from, to) in replacements {
        assert!(
            out.contains(from),
            "the pipeline no longer contains {from:?}: update this test"
        );
        out = out.replace(from, to);
    }
    out
}

/// The line of `text` that starts with `prefix` (exactly one).
fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "one line starting with {prefix:?}");
    lines[0]
}

fn hosts_toml(dir: &Path, host: &str) -> String {
    let p = dir.join(host).join("hosts.toml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn get(url: &str) -> HttpResponse {
    try_http_request("GET", url, &[], None).unwrap_or_else(|e| panic!("{e}"))
}

/// The node agent's pipeline, its `127.0.0.1:8578` moved to a free port, writes hosts.toml
/// for every mirrored registry into `--hosts-dir`, answers the probes and stops on SIGTERM.
#[test]
fn the_node_agent_pipeline_writes_hosts_toml_for_each_mirrored_registry() {
    let path = standalone("node-agent.runmd");
    let agent = Dumped::of(&path);
    assert!(agent.loopback());
    let text = adjusted(&read(&path), &[(agent.proxy.as_str(), ACR)]);
    let hosts = temp_dir("acr-certs.d-");
    let acr = Acr::start_with(
        &text,
        AcrOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            ..AcrOptions::default()
        },
    );
    assert!(acr.log().contains(&format!("Listening on {}", acr.host())));
    assert!(!agent.mirrors.is_empty());
    for host in &agent.mirrors {
        let toml = hosts_toml(hosts.path(), host);
        let server = if host == "docker.io" {
            "https://registry-1.docker.io".to_string()
        } else {
            format!("https://{host}")
        };
        assert!(
            toml.contains(&format!("server = \"{server}\"")),
            "{host}: containerd falls back to the registry itself:\n{toml}"
        );
        assert!(
            toml.contains(&format!("[host.\"http://{}\"]", acr.host()))
                && toml.contains("capabilities = [\"resolve\", \"pull\"]"),
            "{host}: containerd pulls through the agent:\n{toml}"
        );
    }
    let written: BTreeSet<String> = std::fs::read_dir(hosts.path())
        .expect("hosts dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        written,
        agent.mirrors.iter().cloned().collect(),
        "hosts.toml only for the mirrored registries"
    );
    // Nothing under the pipeline's own directory: --hosts-dir wins.
    assert!(!acr.default_hosts_dir().exists());

    let health = get(&format!("{}/healthz", acr.url()));
    assert_eq!(
        health.status,
        200,
        "/healthz: {}\n{}",
        health.text(),
        acr.log()
    );
    // Whether an upstream answers depends on this machine's network: from here, only that
    // /readyz is acr's answer (200 or 503, never a 404 or a registry error).
    let ready = get(&format!("{}/readyz", acr.url()));
    assert!(
        ready.status == 200 || ready.status == 503,
        "/readyz: {} {}\n{}",
        ready.status,
        ready.text(),
        acr.log()
    );

    // SIGTERM: a clean, prompt stop (the DaemonSet's grace is 45 s).
    // SAFETY: kill(2) on the acr child this test started, by its pid.
    unsafe {
        libc::kill(acr.pid() as libc::pid_t, libc::SIGTERM);
    }
    assert!(
        wait_until(Duration::from_secs(10), || !acr.is_running()),
        "acr did not stop on SIGTERM:\n{}",
        acr.log()
    );
    assert!(acr.log().contains("stopping on signal"), "{}", acr.log());
}

/// A pull as a node makes it: containerd asks the node agent (`?ns=docker.io`), the agent
/// chains docker.io to the shared mirror, a replica fetches from "Docker Hub" (a fake on
/// 127.0.0.1) and shares what it fetched through the S3 bucket, from which the other replica
/// serves it once Docker Hub is down; the other registries the agent chains (ghcr.io) reach
/// their own upstream through the same replica, by the `?ns=` the agent passes on. Both
/// pipelines are the deployment's, with their addresses moved to this machine, the S3
/// credentials given under the Secret's variable names, each acr run as its pod runs it
/// (read-only pipeline, the pod's user), and nothing is written beside a pipeline.
#[test]
fn a_pull_through_the_node_agent_reaches_the_shared_mirror_and_its_s3_store() {
    let m = Manifests::load();
    let mirror_path = standalone("mirror.runmd");
    let agent_path = standalone("node-agent.runmd");
    let mirror = Dumped::of(&mirror_path);
    let agent = Dumped::of(&agent_path);
    let (default_ns, chained) = agent.setting("endpoint")[0]
        .split_once(' ')
        .expect("NS URL");
    assert_eq!(default_ns, "docker.io");

    // "Docker Hub": one image, library/app:1.
    let layer = pseudo_random_bytes("acr-deploy-layer", 300 << 10);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = digest_of(&manifest);
    let down = Arc::new(AtomicBool::new(false));
    let hub = {
        let (layer, config, manifest, digest, down) = (
            layer.clone(),
            config.clone(),
            manifest.clone(),
            manifest_digest.clone(),
            down.clone(),
        );
        FakeUpstream::start(move |r: &FakeRequest| {
            if down.load(Ordering::SeqCst) {
                return FakeReply::new(503, &[], "down");
            }
            let path = r.path.split('?').next().unwrap_or("");
            if path == "/v2/" {
                return FakeReply::new(200, &[], "{}");
            }
            if path == "/v2/library/app/manifests/1"
                || path == format!("/v2/library/app/manifests/{digest}")
            {
                return FakeReply::new(
                    200,
                    &[
                        ("Content-Type", OCI_MANIFEST),
                        ("Docker-Content-Digest", digest.as_str()),
                    ],
                    manifest.clone(),
                );
            }
            for blob in [&layer, &config] {
                if path == format!("/v2/library/app/blobs/{}", digest_of(blob)) {
                    return FakeReply::new(
                        200,
                        &[("Content-Type", "application/octet-stream")],
                        blob.clone(),
                    );
                }
            }
            FakeReply::new(
                404,
                &[],
                r#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#,
            )
        })
    };

    // S3, with the bucket the pipeline names and credentials under the Secret's names.
    let location = mirror.setting("cache")[0];
    let bucket = location
        .strip_prefix("s3://")
        .and_then(|b| b.split('/').next())
        .expect("s3://BUCKET/PREFIX");
    let (access_key, secret_key) = ("acr-deploy-test", "acr-deploy-test-secret");
    let s3 = S3::start_with(bucket, access_key, secret_key);
    let secret = m.get("Secret", "acr-s3");
    let env: Vec<(String, String)> = secret["stringData"]
        .as_object()
        .expect("stringData")
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "AWS_ACCESS_KEY_ID" => access_key,
                "AWS_SECRET_ACCESS_KEY" => secret_key,
                _ => s(v),
            };
            (k.clone(), value.to_string())
        })
        .collect();

    // Two replicas of the shared mirror, each run as its pod runs it: on the ConfigMap,
    // read-only, as the pod's user, with its own emptyDir.
    let deployment = m.get("Deployment", "acr");
    let mirror_text = read(&mirror_path);
    let endpoint_line = line_starting(&mirror_text, ": .cache-endpoint ");
    let proxy_line = format!("+ .proxy {}\n", mirror.proxy);
    // Each other registry the agent chains, a real registry standing in for it here.
    let others: Vec<(String, Registry)> = agent
        .setting("endpoint")
        .iter()
        .filter_map(|e| e.split_once(' ').map(|(ns, _)| ns.to_string()))
        .filter(|ns| ns != default_ns)
        .map(|ns| {
            let reg = Registry::start(RegistryAuth::None);
            push(&reg, &fixtures().test, "org/app:1", &[]);
            (ns, reg)
        })
        .collect();
    assert!(!others.is_empty(), "the agent chains more than docker.io");
    let mut replica_proxy = format!(
        "+ .proxy {ACR}\n: .endpoint {} {}\n",
        mirror.mirrors[0],
        hub.url()
    );
    for (ns, reg) in &others {
        replica_proxy += &format!(": .endpoint {ns} {}\n", reg.url());
    }
    let replica_endpoint = format!(": .cache-endpoint {}", s3.url());
    let replica_changes = [
        (proxy_line.as_str(), replica_proxy.as_str()),
        (endpoint_line, replica_endpoint.as_str()),
    ];
    let a_pod = PodRun::start(&m, deployment, &replica_changes, &env);
    let b_pod = PodRun::start(&m, deployment, &replica_changes, &env);
    let (a, b) = (&a_pod.acr, &b_pod.acr);
    let ready = get(&format!("{}/readyz", a.url()));
    assert_eq!(
        ready.status,
        200,
        "replica A /readyz: {}\n{}",
        ready.text(),
        a.log()
    );

    // The node agent, chained to replica A instead of the Service.
    let daemonset = m.get("DaemonSet", "acr-node-agent");
    let a_url = a.url();
    let node_pod = PodRun::start(
        &m,
        daemonset,
        &[(agent.proxy.as_str(), ACR), (chained, a_url.as_str())],
        &[],
    );
    let node = &node_pod.acr;
    let hosts_dir = flag_value(&args_of(acr_container(daemonset)), "--hosts-dir")
        .expect("--hosts-dir")
        .to_string();
    let hosts = node_pod.here(&hosts_dir);
    assert!(hosts_toml(&hosts, "docker.io").contains(&format!("[host.\"http://{}\"]", node.host())));
    let ready = get(&format!("{}/readyz", node.url()));
    assert_eq!(
        ready.status,
        200,
        "node agent /readyz: {}\n{}",
        ready.text(),
        node.log()
    );

    // containerd's requests: the manifest by tag, then the blobs, each with ?ns=docker.io.
    let r = try_http_request(
        "GET",
        &format!("{}/v2/library/app/manifests/1?ns=docker.io", node.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.status,
        200,
        "manifest through the node agent: {}\nagent:\n{}\nA:\n{}",
        r.text(),
        node.log(),
        a.log()
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    assert!(r.body == manifest);
    for blob in [&config, &layer] {
        let r = get(&format!(
            "{}/v2/library/app/blobs/{}?ns=docker.io",
            node.url(),
            digest_of(blob)
        ));
        assert_eq!(
            r.status,
            200,
            "blob through the node agent: {}\n{}",
            r.text(),
            a.log()
        );
        assert!(r.body == *blob, "the blob's bytes");
    }
    // The pulls went agent -> replica A -> "Docker Hub".
    assert!(
        !a.requests_with(&["/v2/library/app/manifests/1"]).is_empty(),
        "A saw the manifest:\n{}",
        a.log()
    );
    let hub_saw = hub.requests();
    assert!(
        hub_saw.iter().any(|r| r.ends_with(&format!(
            "/v2/library/app/blobs/{}?ns=docker.io",
            digest_of(&layer)
        ))),
        "{hub_saw:?}"
    );
    assert!(
        b.requests_with(&["/v2/library/app"]).is_empty(),
        "B was not asked yet"
    );

    // The other chained registries: the agent passes containerd's ns on, so the shared
    // mirror serves each from its own upstream, not from its default (docker.io).
    for (ns, reg) in &others {
        let r = node.fetch_manifest("GET", &format!("/v2/org/app/manifests/1?ns={ns}"));
        assert_eq!(
            r.status,
            200,
            "{ns} through the node agent: {}\nA:\n{}",
            r.text(),
            a.log()
        );
        assert_eq!(
            r.header("docker-content-digest"),
            Some(fixtures().test.digest.as_str())
        );
        assert!(
            !a.requests_with(&[&format!("ns={ns}"), "/v2/org/app/manifests/1", "status=200"])
                .is_empty(),
            "A served {ns}:\n{}",
            a.log()
        );
        assert!(reg.count_requests("GET", "/v2/org/app/manifests/1") >= 1);
    }

    // A shared the layer through the bucket; with Docker Hub down, B serves it from there.
    let layer_hex = digest_of(&layer).trim_start_matches("sha256:").to_string();
    assert!(
        wait_until(Duration::from_secs(30), || s3
            .holds(&format!("blobs/sha256/{layer_hex}"))),
        "the layer never reached the bucket:\n{}",
        a.log()
    );
    down.store(true, Ordering::SeqCst);
    let before = hub.requests().len();
    let r = get(&format!(
        "{}/v2/library/app/blobs/{}",
        b.url(),
        digest_of(&layer)
    ));
    assert_eq!(
        r.status,
        200,
        "replica B, Docker Hub down: {}\nB:\n{}\nA:\n{}",
        r.text(),
        b.log(),
        a.log()
    );
    assert!(r.body == layer, "B served the layer A fetched");
    // (A `GET /v2/` ping, which `.authn` may send, is no content.)
    let asked: Vec<String> = hub.requests()[before..]
        .iter()
        .filter(|r| !r.contains(" /v2/?") && !r.ends_with(" /v2/"))
        .cloned()
        .collect();
    assert!(
        asked.is_empty(),
        "B asked Docker Hub for content: {asked:?}\n{}",
        b.log()
    );

    // Nothing was written beside the read-only pipelines: the store's local tier and the
    // hosts.toml files went to the replica's emptyDir, where `.cache-dir` and `--hosts-dir`
    // put them.
    for pod in [&a_pod, &b_pod, &node_pod] {
        pod.assert_pipeline_untouched();
    }
    let cache_dir = a_pod.here(mirror.setting("cache-dir")[0]);
    assert!(
        std::fs::read_dir(&cache_dir).is_ok_and(|mut d| d.next().is_some()),
        "the local tier is in {}: {:?}\n{}",
        cache_dir.display(),
        run("find", &[&a_pod.here("/var/lib/acr").display().to_string()]).stdout,
        a.log()
    );
    let replica_args = args_of(acr_container(deployment));
    let replica_hosts = flag_value(&replica_args, "--hosts-dir").expect("--hosts-dir");
    assert!(hosts_toml(&a_pod.here(replica_hosts), "docker.io").contains("server = "));

    // What Prometheus scrapes (the pod annotation's path).
    let metrics = get(&format!("{}/metrics", b.url()));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("acr_cache_hits_total"),
        "{}",
        metrics.text()
    );
}
