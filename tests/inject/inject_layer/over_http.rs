//! Manifests, configs and blobs of injected images over HTTP.

use super::*;

// ------------------------------------------------------------------------------------------
// manifests, configs and blobs over HTTP

/// An OCI manifest by tag: HEAD and GET agree and are the rewritten manifest (the upstream's
/// layers, then the injected one, and the new config), GET by the new digest gives the same bytes, the
/// config and the layer are served as blobs, and a request by the upstream's digest gets the
/// upstream's bytes untouched.
#[test]
fn an_oci_manifest_by_tag_is_rewritten_and_its_blobs_are_served() {
    let reg = Registry::start(RegistryAuth::None);
    let up_digest = seed_test_only(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, packed, gz) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[]);
    let repo = "library/test";

    let (head_digest, head_len, head_type) = head_manifest(&acr, repo, "1");
    let (digest, body, m) = get_manifest_checked(&acr, repo, "1");
    assert_eq!(head_digest, digest, "HEAD and GET by tag disagree");
    assert_eq!(head_len, body.len().to_string(), "HEAD Content-Length");
    assert_eq!(head_type, OCI_MANIFEST);
    assert_ne!(
        digest, up_digest,
        "the tag still gives the upstream manifest"
    );
    // A second HEAD (served from what the first request made) agrees too.
    assert_eq!(head_manifest(&acr, repo, "1").0, digest);

    let (up_digest2, up_manifest) = upstream_manifest(&reg, repo, "1");
    assert_eq!(up_digest2, up_digest);
    let up_config = upstream_config(&reg, repo, &up_manifest);
    let (_, config) = config_of(&acr, repo, &m);
    assert_injected(
        "test:1",
        &up_manifest,
        &up_config,
        &m,
        &config,
        &[&packed],
        OCI_LAYER_GZIP,
    );
    assert_standard_edits("test:1", &up_config, &config);

    // The injected layer as a blob: exactly the packed bytes, and its diff_id.
    let layer_bytes = get_blob_checked(&acr, repo, &packed.gzip_digest);
    assert_eq!(
        layer_bytes, gz,
        "the layer blob is not what `acr layer pack -o` wrote"
    );
    let last_diff_id = config["rootfs"]["diff_ids"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|d| d.as_str())
        .expect("diff_ids");
    assert_eq!(last_diff_id, diff_id_of(&layer_bytes));

    // By the new digest: the same bytes.
    let by_digest = manifest(&acr, "GET", repo, &digest);
    assert_eq!(
        by_digest.status,
        200,
        "GET by the new digest: {}",
        by_digest.text()
    );
    assert_eq!(
        by_digest.body, body,
        "GET by the new digest gives other bytes"
    );
    assert_eq!(
        by_digest.header("docker-content-digest"),
        Some(digest.as_str())
    );
    let head_by_digest = manifest(&acr, "HEAD", repo, &digest);
    assert_eq!(head_by_digest.status, 200);
    assert_eq!(
        head_by_digest.header("docker-content-digest"),
        Some(digest.as_str())
    );

    // By the upstream's digest: the upstream's bytes.
    let up_raw = reg.fetch_manifest("GET", repo, "1").body;
    let r = manifest(&acr, "GET", repo, &up_digest);
    assert_eq!(r.status, 200, "GET by the upstream digest: {}", r.text());
    assert_eq!(r.body, up_raw, "GET by the upstream digest was rewritten");
    assert_eq!(r.header("docker-content-digest"), Some(up_digest.as_str()));
    let r = manifest(&acr, "HEAD", repo, &up_digest);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(up_digest.as_str()));
    // and the upstream's own config and layers are still served
    for (_, d, _) in layers_of(&up_manifest) {
        get_blob_checked(&acr, repo, &d);
    }
    get_blob_checked(
        &acr,
        repo,
        up_manifest["config"]["digest"].as_str().expect("config"),
    );
}

/// A Docker schema 2 manifest: Docker media types stay (the new layer is a Docker
/// `rootfs.diff.tar.gzip`), and every config modifier applies: a JSON-array `.entrypoint`,
/// `.cmd` words, `.working-dir`, two `.env`.
#[test]
fn a_docker_schema2_manifest_gets_docker_types_and_every_config_modifier() {
    let reg = Registry::start(RegistryAuth::None);
    push(
        &reg,
        &fixtures().test,
        "library/test:v2s2",
        &["--format", "v2s2"],
    );
    let root = temp_dir("acr-inject-");
    let (layer, packed, _) = standard_packed(root.path());
    let inject = [
        format!(".inject-layer {}", layer.display()),
        r#"  .entrypoint ["/opt/acr/entry.sh", "--x"]"#.to_string(),
        "  .cmd run --fast".to_string(),
        "  .working-dir /data".to_string(),
        "  .env ACR_MOUNTS=s3://bucket".to_string(),
        "  .env ACR_MODE=test".to_string(),
    ];
    let acr = Acr::start(&inject_pipeline(&reg.url(), &strs(&inject), &[]));
    let repo = "library/test";

    let (head_digest, head_len, head_type) = head_manifest(&acr, repo, "v2s2");
    let (digest, body, m) = get_manifest_checked(&acr, repo, "v2s2");
    assert_eq!(head_digest, digest, "HEAD and GET by tag disagree");
    assert_eq!(head_len, body.len().to_string());
    assert_eq!(head_type, DOCKER_MANIFEST);
    let (up_digest, up_manifest) = upstream_manifest(&reg, repo, "v2s2");
    assert_ne!(digest, up_digest);
    assert_eq!(
        up_manifest["config"]["mediaType"], DOCKER_CONFIG,
        "the fixture is not Docker schema 2"
    );
    let up_config = upstream_config(&reg, repo, &up_manifest);
    let (_, config) = config_of(&acr, repo, &m);
    assert_injected(
        "test:v2s2",
        &up_manifest,
        &up_config,
        &m,
        &config,
        &[&packed],
        DOCKER_LAYER_GZIP,
    );
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/opt/acr/entry.sh", "--x"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["run", "--fast"]));
    assert_eq!(c["WorkingDir"], "/data");
    assert_eq!(
        env_value(&config, "ACR_MOUNTS").as_deref(),
        Some("s3://bucket")
    );
    assert_eq!(env_value(&config, "ACR_MODE").as_deref(), Some("test"));
    assert_eq!(env_value(&config, "ACR_ENTRY_CHAIN"), None);

    let by_digest = manifest(&acr, "GET", repo, &digest);
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, body);
    assert_eq!(by_digest.header("content-type"), Some(DOCKER_MANIFEST));
    let up_raw = reg.fetch_manifest("GET", repo, "v2s2").body;
    let r = manifest(&acr, "GET", repo, &up_digest);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, up_raw, "GET by the upstream digest was rewritten");
    get_blob_checked(&acr, repo, &packed.gzip_digest);
}

/// An image whose upstream config has an entrypoint: it is chained in `ACR_ENTRY_CHAIN`
/// (one element: the bare string; two: a compact JSON array), `.env` replaces an existing
/// key instead of adding a second one, other env entries stay.
#[test]
fn an_original_entrypoint_is_chained_and_env_keys_are_replaced() {
    let reg = Registry::start(RegistryAuth::None);
    let images = temp_dir("acr-ep-images-");
    push_image_with_entrypoint(
        &reg,
        images.path(),
        "library/ep1:1",
        &["/docker-entrypoint.sh"],
        &["ACR_MOUNTS=old", "PATH=/usr/bin:/bin"],
    );
    push_image_with_entrypoint(
        &reg,
        images.path(),
        "library/ep2:1",
        &["/usr/bin/tini", "--"],
        &["PATH=/usr/bin:/bin"],
    );
    let root = temp_dir("acr-inject-");
    let (layer, packed, _) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[]);
    for (repo, want_chain) in [
        ("library/ep1", "/docker-entrypoint.sh"),
        ("library/ep2", r#"["/usr/bin/tini","--"]"#),
    ] {
        let (_, up_manifest) = upstream_manifest(&reg, repo, "1");
        let up_config = upstream_config(&reg, repo, &up_manifest);
        assert!(
            up_config["config"]["Entrypoint"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{repo}: the upstream image has no entrypoint: {up_config}"
        );
        let (_, _, m) = get_manifest_checked(&acr, repo, "1");
        let (_, config) = config_of(&acr, repo, &m);
        assert_injected(
            repo,
            &up_manifest,
            &up_config,
            &m,
            &config,
            &[&packed],
            OCI_LAYER_GZIP,
        );
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/opt/acr/entry.sh"]),
            "{repo}"
        );
        assert_eq!(
            env_value(&config, "ACR_ENTRY_CHAIN").as_deref(),
            Some(want_chain),
            "{repo}: Env {:?}",
            env_of(&config)
        );
        assert_eq!(
            env_value(&config, "ACR_MOUNTS").as_deref(),
            Some("s3://bucket"),
            "{repo}: .env must replace ACR_MOUNTS: {:?}",
            env_of(&config)
        );
        assert_eq!(
            env_value(&config, "PATH").as_deref(),
            Some("/usr/bin:/bin"),
            "{repo}: other env entries stay"
        );
    }
}

/// An OCI index and a Docker manifest list by tag: every platform entry points at its
/// rewritten child (new digest and the child's exact size), the index gets a new digest, each
/// child gets the layers for every platform plus its own: a `.platform linux/arm64` layer only
/// in the arm64 child, a `…-amd64.tar.gz` source only in the amd64 child (and in the
/// single-platform amd64 image).
#[test]
fn index_children_get_the_layers_of_their_platform() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let root = temp_dir("acr-inject-");
    let r = root.path();
    let (common_dir, common) = common_layer(r);
    let (arm_dir, arm) = arm64_only_layer(r);
    let amd_dir = make_layer_dir(r, "amdsrc", &[("opt/acr/amd.txt", b"amd64 only\n", 0o644)]);
    let amd_file = r.join("tool-amd64.tar.gz");
    let (amd, _) = pack_to_file(&amd_dir, &amd_file);
    let inject = [
        format!(".inject-layer {}", common_dir.display()),
        format!(".inject-layer {}", arm_dir.display()),
        "  .platform linux/arm64".to_string(),
        format!(".inject-layer {}", amd_file.display()),
    ];
    let acr = Acr::start(&inject_pipeline(&reg.url(), &strs(&inject), &[]));
    let repo = "library/multi";
    for (tag, index_type, layer_type) in [
        ("1", OCI_INDEX, OCI_LAYER_GZIP),
        ("v2s2", DOCKER_MANIFEST_LIST, DOCKER_LAYER_GZIP),
    ] {
        let (up_digest, up_index) = upstream_manifest(&reg, repo, tag);
        let (head_digest, _, head_type) = head_manifest(&acr, repo, tag);
        let (digest, _, index) = get_manifest_checked(&acr, repo, tag);
        assert_eq!(head_digest, digest, "{tag}: HEAD and GET disagree");
        assert_eq!(head_type, index_type, "{tag}: Content-Type");
        assert_eq!(index["mediaType"], index_type, "{tag}");
        assert_ne!(digest, up_digest, "{tag}: the index was not rewritten");
        let entries = index["manifests"].as_array().expect("manifests");
        let up_entries = up_index["manifests"].as_array().expect("manifests");
        assert_eq!(entries.len(), up_entries.len(), "{tag}: entries");
        for (e, up) in entries.iter().zip(up_entries) {
            let arch = up["platform"]["architecture"].as_str().expect("arch");
            let what = format!("{repo}:{tag} {arch}");
            let without = |v: &serde_json::Value| {
                let mut v = v.clone();
                let o = v.as_object_mut().expect("entry object");
                o.remove("digest");
                o.remove("size");
                v
            };
            assert_eq!(
                without(e),
                without(up),
                "{what}: the entry changed beyond digest and size"
            );
            let d = e["digest"].as_str().expect("digest");
            assert_ne!(
                d,
                up["digest"].as_str().unwrap_or(""),
                "{what}: not rewritten"
            );
            let (cd, cbody, child) = get_manifest_checked(&acr, repo, d);
            assert_eq!(cd, d, "{what}: the child's digest");
            assert_eq!(
                e["size"].as_u64(),
                Some(cbody.len() as u64),
                "{what}: the entry's size is not the child's length"
            );
            let (_, up_child) = upstream_manifest(&reg, repo, up["digest"].as_str().unwrap());
            let up_config = upstream_config(&reg, repo, &up_child);
            let (_, config) = config_of(&acr, repo, &child);
            let want: Vec<&Packed> = match arch {
                "amd64" => vec![&common, &amd],
                "arm64" => vec![&common, &arm],
                other => panic!("unexpected fixture arch {other}"),
            };
            assert_injected(
                &what, &up_child, &up_config, &child, &config, &want, layer_type,
            );
        }
    }
    for p in [&common, &arm, &amd] {
        get_blob_checked(&acr, repo, &p.gzip_digest);
    }
    // The single-platform amd64 image gets the common and the amd64 layer.
    let (_, up_manifest) = upstream_manifest(&reg, "library/test", "1");
    let up_config = upstream_config(&reg, "library/test", &up_manifest);
    let (_, _, m) = get_manifest_checked(&acr, "library/test", "1");
    let (_, config) = config_of(&acr, "library/test", &m);
    assert_injected(
        "test:1",
        &up_manifest,
        &up_config,
        &m,
        &config,
        &[&common, &amd],
        OCI_LAYER_GZIP,
    );
}

/// With only an arm64 layer, the arm64 entry of an index is rewritten and the amd64 entry
/// stays exactly as the upstream had it (same digest, size, everything).
#[test]
fn an_index_entry_without_layers_for_its_platform_stays_as_it_was() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let root = temp_dir("acr-inject-");
    let (arm_dir, arm) = arm64_only_layer(root.path());
    let inject = [
        format!(".inject-layer {}", arm_dir.display()),
        "  .platform linux/arm64".to_string(),
    ];
    let acr = Acr::start(&inject_pipeline(&reg.url(), &strs(&inject), &[]));
    let repo = "library/multi";
    for tag in ["1", "v2s2"] {
        let (up_digest, up_index) = upstream_manifest(&reg, repo, tag);
        let (digest, _, index) = get_manifest_checked(&acr, repo, tag);
        assert_ne!(digest, up_digest, "{tag}: the index was not rewritten");
        let entries = index["manifests"].as_array().expect("manifests");
        let up_entries = up_index["manifests"].as_array().expect("manifests");
        assert_eq!(entries.len(), up_entries.len());
        for (e, up) in entries.iter().zip(up_entries) {
            match up["platform"]["architecture"].as_str() {
                Some("amd64") => assert_eq!(e, up, "{tag}: the amd64 entry changed"),
                Some("arm64") => {
                    assert_ne!(e["digest"], up["digest"], "{tag}: arm64 not rewritten");
                    let (_, _, child) =
                        get_manifest_checked(&acr, repo, e["digest"].as_str().unwrap());
                    let last = layers_of(&child).pop().expect("layers");
                    assert_eq!(last.1, arm.gzip_digest, "{tag}: arm64 child's last layer");
                }
                other => panic!("unexpected fixture arch {other:?}"),
            }
        }
    }
}

/// A layer for every platform and one for arm64 only: the amd64 child still gets the one
/// for every platform ("every platform entry gets its arch-matching layers").
#[test]
fn a_common_layer_reaches_a_platform_that_has_no_specific_layer() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let root = temp_dir("acr-inject-");
    let r = root.path();
    let (common_dir, common) = common_layer(r);
    let (arm_dir, arm) = arm64_only_layer(r);
    let inject = [
        format!(".inject-layer {}", common_dir.display()),
        format!(".inject-layer {}", arm_dir.display()),
        "  .platform linux/arm64".to_string(),
    ];
    let acr = Acr::start(&inject_pipeline(&reg.url(), &strs(&inject), &[]));
    let repo = "library/multi";
    let (_, index) = {
        let (d, _, j) = get_manifest_checked(&acr, repo, "1");
        (d, j)
    };
    for e in index["manifests"].as_array().expect("manifests") {
        let arch = e["platform"]["architecture"].as_str().expect("arch");
        let (_, _, child) = get_manifest_checked(&acr, repo, e["digest"].as_str().unwrap());
        let appended: Vec<String> = layers_of(&child)
            .into_iter()
            .skip(1) // the fixture's children have one layer each
            .map(|l| l.1)
            .collect();
        let want = match arch {
            "amd64" => vec![common.gzip_digest.clone()],
            "arm64" => vec![common.gzip_digest.clone(), arm.gzip_digest.clone()],
            other => panic!("unexpected arch {other}"),
        };
        assert_eq!(appended, want, "{arch}: appended layers");
    }
    // The single-platform amd64 image too.
    let (_, _, m) = get_manifest_checked(&acr, "library/test", "1");
    assert_eq!(
        layers_of(&m).last().map(|l| l.1.clone()),
        Some(common.gzip_digest.clone()),
        "test:1 (amd64) did not get the layer for every platform"
    );
}

/// Every kind of source: a directory by absolute path, a directory relative to acr's working
/// directory, a `.tar.gz` file, a `data:` URI as `acr layer pack --location` prints it, a bare
/// `data:BASE64`, and an `http://` URL with `.digest` and `.diff-id`. All appear, in order,
/// and skopeo + umoci see their files.
#[test]
fn every_kind_of_layer_source_is_injected() {
    let reg = Registry::start(RegistryAuth::None);
    seed_test_only(&reg);
    let root = temp_dir("acr-inject-");
    let r = root.path();
    let content = |name: &str| format!("from the {name} source\n");
    let mk = |name: &str| {
        make_layer_dir(
            r,
            &format!("{name}src"),
            &[(
                &format!("opt/src/{name}.txt"),
                content(name).as_bytes(),
                0o644,
            )],
        )
    };
    let dir_src = mk("dir");
    let file_src = mk("file");
    let data_src = mk("data");
    let bare_src = mk("bare");
    let http_src = mk("http");
    let dir_p = pack(&dir_src, &[]);
    let tgz = r.join("file-layer.tar.gz");
    let (file_p, _) = pack_to_file(&file_src, &tgz);
    let data_p = pack(&data_src, &["--location"]);
    let (bare_p, bare_bytes) = pack_to_file(&bare_src, &r.join("bare.tar.gz"));
    let (http_p, http_bytes) = pack_to_file(&http_src, &r.join("http-layer.tar.gz"));
    let server = FakeUpstream::start(move |req| {
        if req.path == "/layers/http-layer.tar.gz" {
            FakeReply::new(
                200,
                &[("Content-Type", "application/gzip")],
                http_bytes.clone(),
            )
        } else {
            FakeReply::new(404, &[], "not here")
        }
    });
    let inject = [
        format!(".inject-layer {}", dir_src.display()),
        // relative to acr's working directory (its temp dir), written by AcrOptions.files
        ".inject-layer relsrc".to_string(),
        format!(".inject-layer {}", tgz.display()),
        format!(
            ".inject-layer {}",
            data_p.location.as_deref().expect("location")
        ),
        format!(".inject-layer data:{}", base64(&bare_bytes)),
        format!(".inject-layer {}/layers/http-layer.tar.gz", server.url()),
        format!("  .digest {}", http_p.gzip_digest),
        format!("  .diff-id {}", http_p.tar_digest),
    ];
    let acr = Acr::start_with(
        &inject_pipeline(&reg.url(), &strs(&inject), &[]),
        AcrOptions {
            files: vec![("relsrc/opt/src/rel.txt".into(), content("rel"))],
            ..Default::default()
        },
    );
    let rel_dir = acr.dir().join("relsrc");
    let rel_mode = std::fs::metadata(rel_dir.join("opt/src/rel.txt"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .expect("rel.txt");
    let rel_p = pack(&rel_dir, &[]);
    let repo = "library/test";
    let (_, up_manifest) = upstream_manifest(&reg, repo, "1");
    let up_config = upstream_config(&reg, repo, &up_manifest);
    let (digest, _, m) = get_manifest_checked(&acr, repo, "1");
    let (_, config) = config_of(&acr, repo, &m);
    let data_desc = Packed {
        location: None,
        ..data_p.clone()
    };
    assert_injected(
        "test:1",
        &up_manifest,
        &up_config,
        &m,
        &config,
        &[&dir_p, &rel_p, &file_p, &data_desc, &bare_p, &http_p],
        OCI_LAYER_GZIP,
    );
    for p in [&dir_p, &rel_p, &file_p, &data_desc, &bare_p, &http_p] {
        get_blob_checked(&acr, repo, &p.gzip_digest);
    }
    // skopeo verifies every digest and size; umoci shows the files.
    let out = temp_dir("acr-inject-out-");
    let layout = out.path().join("oci");
    let src = format!("docker://{}/{repo}:1", acr.host());
    skopeo(&[
        "copy",
        "--preserve-digests",
        &src,
        &format!("oci:{}:t", layout.display()),
    ])
    .ok();
    assert_eq!(layout_digest(&layout, "t"), digest);
    let rootfs = umoci_unpack(&layout, "t", &out.path().join("bundle"));
    for name in ["dir", "file", "data", "bare", "http"] {
        assert_file(
            &rootfs,
            &format!("opt/src/{name}.txt"),
            content(name).as_bytes(),
            0o644,
        );
    }
    assert_file(
        &rootfs,
        "opt/src/rel.txt",
        content("rel").as_bytes(),
        rel_mode,
    );
    assert_file(&rootfs, "hello.txt", TEST_HELLO.as_bytes(), 0o644);
}

/// A declared `.digest` or `.diff-id` that the source does not have is refused: acr does not
/// start, or it starts and never serves a manifest with that layer.
#[test]
fn a_wrong_declared_digest_is_refused() {
    let reg = Registry::start(RegistryAuth::None);
    seed_test_only(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let wrong = digest_of(b"not the layer");
    for modifier in ["digest", "diff-id"] {
        let inject = [
            format!(".inject-layer {}", layer.display()),
            format!("  .{modifier} {wrong}"),
        ];
        let runmd = inject_pipeline(&reg.url(), &strs(&inject), &[]);
        let started = std::panic::catch_unwind(|| Acr::start(&runmd));
        match started {
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                assert!(
                    msg.contains(&wrong) || msg.to_lowercase().contains("digest"),
                    ".{modifier}: acr refused to start without naming the digest:\n{msg}"
                );
            }
            Ok(acr) => {
                for method in ["HEAD", "GET"] {
                    let r = manifest(&acr, method, "library/test", "1");
                    assert!(
                        r.status >= 400,
                        ".{modifier} {wrong}: {method} by tag answered {}: {}",
                        r.status,
                        r.text()
                    );
                }
                let r = manifest(&acr, "GET", "library/test", "1");
                assert!(
                    r.text().contains(&wrong) || r.text().to_lowercase().contains("digest"),
                    ".{modifier}: the error does not say what is wrong: {}",
                    r.text()
                );
            }
        }
    }
}

/// A Docker schema 1 manifest is passed on byte for byte (no injection).
#[test]
fn a_schema1_manifest_is_passed_through_unmodified() {
    const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 1,
        "name": "library/old",
        "tag": "1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],
        "history": [{"v1Compatibility": "{\"id\":\"e1\",\"created\":\"2000-01-01T00:00:00Z\",\"architecture\":\"amd64\",\"config\":{}}"}]
    }))
    .expect("json");
    let digest = digest_of(&body);
    let served = body.clone();
    let served_digest = digest.clone();
    let upstream = FakeUpstream::start(move |req| {
        if req.path.starts_with("/v2/library/old/manifests/") {
            FakeReply::new(
                200,
                &[
                    ("Content-Type", SCHEMA1),
                    ("Docker-Content-Digest", &served_digest),
                ],
                served.clone(),
            )
        } else if req.path == "/v2/" || req.path.starts_with("/v2/?") {
            FakeReply::new(200, &[("Content-Type", "application/json")], "{}")
        } else {
            FakeReply::new(
                404,
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#,
            )
        }
    });
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr_url(&upstream.url(), &layer);
    let accept = format!("{SCHEMA1}, {ACCEPT_MANIFESTS}");
    for method in ["GET", "HEAD"] {
        let r = fetch(
            method,
            &format!("{}/v2/library/old/manifests/1", acr.url()),
            &[("Accept", &accept)],
        );
        assert_eq!(r.status, 200, "{method}: {}\n{}", r.text(), acr.log());
        assert_eq!(r.header("content-type"), Some(SCHEMA1), "{method}");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest.as_str()),
            "{method}"
        );
        if method == "GET" {
            assert_eq!(r.body, body, "the schema 1 manifest was changed");
        }
    }
}

fn standard_acr_url(upstream: &str, layer: &Path) -> Acr {
    let inject = standard_inject(layer);
    Acr::start(&inject_pipeline(upstream, &strs(&inject), &[]))
}
