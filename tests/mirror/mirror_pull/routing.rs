//! Names, path routing, upstreams chosen by ns, hosts.toml, streaming, and referrers.

use super::*;

/// Repository names with dots, dashes, underscores and several path components pass
/// through unchanged.
#[test]
fn nested_names_with_dots_dashes_and_underscores() {
    let reg = Registry::start(RegistryAuth::None);
    let name = "my.org/sub_dir/app-x.y__z/v1";
    push(&reg, &fixtures().test, &format!("{name}:1.0_rc-1"), &[]);
    let acr = Acr::start(&pull_through(&reg.url()));
    assert_eq!(
        copied_digest(&format!("docker://{}/{name}:1.0_rc-1", acr.host())),
        fixtures().test.digest
    );
    let r = acr.fetch("GET", &format!("/v2/{name}/tags/list"), &[]);
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
    assert_eq!(
        copied_digest(&format!("docker://{}/ghcr.io/library/test:1", acr.host())),
        seeded.test_oci
    );
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
    let r = acr.fetch("GET", "/v2/ghcr.io/library/test/tags/list?n=1", &[]);
    assert_eq!(r.json()["tags"], serde_json::json!(["1"]));
    assert_eq!(
        r.header("link"),
        Some(r#"</v2/ghcr.io/library/test/tags/list?n=1&last=1>; rel="next""#)
    );
    // The same repository without the prefix goes to the `.mirror` host.
    assert_head_digest(&acr, "/v2/library/test/manifests/1", &seeded.test_oci);
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
        let r = acr.fetch_manifest("HEAD", &format!("/v2/library/app/manifests/1{query}"));
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
        ctrd.assert_has_image(&image, digest);
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

/// A node agent chained to a shared mirror serves two namespaces through it: containerd asks
/// the agent with `?ns=`, the agent's `.endpoint`s send both namespaces to the shared acr with
/// the same `?ns=`, and the shared acr (which asks its clients to log in, so the agent's
/// token flow carries the `ns` too) fetches each from its own registry, one of which needs
/// credentials only the shared mirror holds. The agent's `.mirror` hosts are https, which the
/// registries do not speak: nothing reaches them but through the shared mirror.
#[test]
fn a_node_agent_chained_to_a_shared_mirror_pulls_from_two_namespaces() {
    use crate::harness::production::{acr_auth_var, htpasswd_file};
    const AGENT: (&str, &str) = ("node-agent", "agent-secret-1");
    let (up_user, up_pass) = ("private-user", "private-pass");
    let public = Registry::start(RegistryAuth::None);
    let private = Registry::start(RegistryAuth::htpasswd(up_user, up_pass));
    let f = fixtures();
    push(&public, &f.test, "library/app:1", &[]);
    push(&private, &f.multi, "library/app:1", &["--all"]);

    let shared_hosts = temp_dir("acr-shared-hosts-");
    let shared = Acr::launch(
        &pipeline(
            &format!("{}, {}", public.url(), private.url()),
            &[],
            &[".users users.htpasswd"],
            &routes(""),
        ),
        AcrOptions {
            env: vec![(acr_auth_var(&private), format!("{up_user}:{up_pass}"))],
            files: vec![("users.htpasswd".into(), htpasswd_file(&[AGENT]))],
            hosts_dir: Some(shared_hosts.path().to_path_buf()),
            ..AcrOptions::default()
        },
    );
    let shared_auth_var = format!("ACR_AUTH_{}", shared.host().replace(['.', ':'], "_"));
    let endpoints: Vec<String> = [&public, &private]
        .iter()
        .map(|reg| format!(".endpoint {} {}", reg.host(), shared.url()))
        .collect();
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let hosts = temp_dir("acr-agent-hosts-");
    let agent = Acr::start_with(
        &pipeline(
            &format!("{}, {}", public.host(), private.host()),
            &[],
            &endpoints,
            &routes(""),
        ),
        AcrOptions {
            env: vec![(shared_auth_var, format!("{}:{}", AGENT.0, AGENT.1))],
            hosts_dir: Some(hosts.path().to_path_buf()),
            ..AcrOptions::default()
        },
    );

    let ctrd = Containerd::start();
    for (reg, digest) in [(&public, &f.test.digest), (&private, &f.multi.digest)] {
        let image = reg.image("library/app:1");
        let ns = format!("ns={}", reg.host());
        let out = ctrd.ctr_pull(&image, hosts.path());
        assert!(
            out.success(),
            "{image}: {out:?}\nagent:\n{}\nshared:\n{}",
            agent.log(),
            shared.log()
        );
        ctrd.assert_has_image(&image, digest);
        // containerd -> agent -> shared mirror -> the namespace's registry, each with its ns.
        for (who, acr) in [("agent", &agent), ("shared mirror", &shared)] {
            assert!(
                !acr.wait_requests(&[&ns, "/blobs/", "status=200"], 1)
                    .is_empty(),
                "the {who} served no blob of {ns}:\n{}",
                acr.log()
            );
        }
        assert!(
            reg.count_requests("GET", "/v2/library/app/manifests/") >= 1,
            "{}",
            reg.log()
        );
        assert!(
            !upstream_blob_agents(reg).is_empty()
                && upstream_blob_agents(reg)
                    .iter()
                    .all(|a| a.starts_with("acr/")),
            "{:?}",
            upstream_blob_agents(reg)
        );
    }
    // The agent logged in to the shared mirror (a 401, then its token), never anonymously
    // past it: every content request the shared mirror answered with 200 named a namespace.
    let served = shared.requests_with(&["status=200", "/v2/library/app/"]);
    assert!(!served.is_empty());
    assert!(
        served.iter().all(|l| !l.contains(" ns=-")),
        "a chained request lost its ns: {served:?}"
    );
    assert!(
        !shared.requests_with(&["status=401"]).is_empty(),
        "{}",
        shared.log()
    );
}

/// `.mirror HOST` without a scheme means https: acr never falls back to plain http by
/// itself, so a plain-http upstream named that way is a 502, not a silent downgrade.
#[test]
fn a_mirror_host_without_a_scheme_is_never_plain_http() {
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let acr = Acr::start(&pipeline(&reg.host(), &[], &[], &routes("")));
    let r = acr.fetch_manifest("GET", "/v2/library/test/manifests/1");
    assert_upstream_unavailable(&r, "");
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
    let r = acr.fetch(
        "GET",
        "/v2/library/x/manifests/1",
        &[("Accept", DOCKER_MANIFEST)],
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
    let r = acr.fetch(
        "GET",
        &format!("/v2/library/x/referrers/{digest}?artifactType=application%2Fvnd.example.sig"),
        &[],
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
    let r = fetch("GET", &url, &[]);
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
    let r = fetch("GET", &url, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let found = r.json();
    assert_eq!(
        found["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    assert_eq!(found["manifests"][0]["annotations"]["org.example"], "yes");
    assert!(r.header("oci-filters-applied").is_none());
    let r = fetch(
        "GET",
        &format!("{url}?artifactType=application%2Fvnd.example.other"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    acr.assert_serves(Some(("library/test", "1")));
}

/// `skopeo copy --preserve-digests SRC` into a new OCI layout: the digest it copied.
fn copied_digest(src: &str) -> String {
    let out = temp_dir("acr-routing-");
    skopeo(&[
        "copy",
        "--preserve-digests",
        src,
        &format!("oci:{}:t", out.path().display()),
    ])
    .ok();
    layout_digest(out.path(), "t")
}
