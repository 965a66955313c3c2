//! Layer injection end to end: `.inject-layer` in a manifests route appends layers (and
//! entrypoint/env/cmd/working-dir changes) to every image pulled through acr, with digests
//! strict clients accept. Real upstream (CNCF distribution), real clients (skopeo, umoci,
//! containerd's `ctr`, podman); `acr layer pack`; `/container-token` and `/validate-creds`.
//!
//! Every test starts its own upstream, its own acr (own port, own temp dir, own store) and its
//! own clients, so they run in parallel.

use std::path::Path;
use std::time::Duration;

use crate::harness::inject::*;
use crate::harness::*;

/// Pushes only `library/test:1` (for tests that need one image).
fn seed_test_only(reg: &Registry) -> String {
    push(reg, &fixtures().test, "library/test:1", &[]);
    raw_manifest(reg, "library/test:1").0
}

/// The standard layer under `root`, packed to `root/layer.tar.gz`.
fn standard_packed(root: &Path) -> (std::path::PathBuf, Packed, Vec<u8>) {
    let dir = standard_layer(root);
    let (packed, gz) = pack_to_file(&dir, &root.join("layer.tar.gz"));
    (dir, packed, gz)
}

/// An acr over `reg` that injects the standard layer with `.entrypoint /opt/acr/entry.sh`
/// and `.env ACR_MOUNTS=s3://bucket`, with `settings`.
fn standard_acr(reg: &Registry, layer: &Path, settings: &[&str]) -> Acr {
    let inject = standard_inject(layer);
    Acr::start(&inject_pipeline(&reg.url(), &strs(&inject), settings))
}

/// Asserts the config edits of [`standard_inject`] on an image without an entrypoint.
#[track_caller]
fn assert_standard_edits(what: &str, up_config: &serde_json::Value, config: &serde_json::Value) {
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/opt/acr/entry.sh"]),
        "{what}: Entrypoint"
    );
    assert_eq!(
        env_value(config, "ACR_MOUNTS").as_deref(),
        Some("s3://bucket"),
        "{what}: Env {:?}",
        env_of(config)
    );
    assert_eq!(
        config["config"]["Cmd"], up_config["config"]["Cmd"],
        "{what}: Cmd must stay"
    );
    let up_entry = &up_config["config"]["Entrypoint"];
    assert!(
        up_entry.is_null() || up_entry.as_array().is_some_and(|a| a.is_empty()),
        "{what}: the fixture was expected to have no entrypoint: {up_entry}"
    );
    assert_eq!(
        env_value(config, "ACR_ENTRY_CHAIN"),
        None,
        "{what}: no original entrypoint, so no ACR_ENTRY_CHAIN"
    );
}

// ------------------------------------------------------------------------------------------
// acr layer pack

/// `acr layer pack` packs a directory deterministically: regular files and symlinks only,
/// sorted, owned by 0:0, mtime 0, the files' permission bits, gzip without name or time;
/// `-o` writes exactly the bytes the digests describe, `--location` is a `data:` URI of them,
/// and the same files elsewhere with other timestamps give the same digests.
#[test]
fn layer_pack_is_deterministic_and_writes_a_plain_sorted_tar() {
    let root = temp_dir("acr-pack-");
    let files: &[(&str, &[u8], u32)] = &[
        ("opt/acr/entry.sh", ENTRY_SH.as_bytes(), 0o755),
        ("etc/acr/note.txt", NOTE_TXT.as_bytes(), 0o644),
        ("opt/acr/bin/tool", b"tool\n", 0o750),
    ];
    let dir = make_layer_dir(root.path(), "layer", files);
    std::os::unix::fs::symlink("entry.sh", dir.join("opt/acr/run")).expect("symlink");
    // The same files, created in another order, with other timestamps.
    let mut reversed = files.to_vec();
    reversed.reverse();
    let dir2 = make_layer_dir(root.path(), "again", &reversed);
    std::os::unix::fs::symlink("entry.sh", dir2.join("opt/acr/run")).expect("symlink");
    run(
        "find",
        &[
            &dir2.to_string_lossy(),
            "-exec",
            "touch",
            "-h",
            "-d",
            "2001-02-03T04:05:06Z",
            "{}",
            "+",
        ],
    )
    .ok();

    let plain = pack(&dir, &[]);
    assert_eq!(plain.location, None, "no --location, no location");
    let (to_file, gz) = pack_to_file(&dir, &root.path().join("out.tar.gz"));
    let with_location = pack(&dir, &["--location"]);
    let elsewhere = pack(&dir2, &[]);
    assert_eq!(to_file, plain, "-o prints the same digests");
    assert_eq!(
        Packed {
            location: None,
            ..with_location.clone()
        },
        plain,
        "--location prints the same digests"
    );
    assert_eq!(
        elsewhere, plain,
        "the same files with other timestamps and creation order"
    );
    assert_eq!(pack(&dir, &[]), plain, "packing twice");

    assert_eq!(
        digest_of(&gz),
        plain.gzip_digest,
        "gzipDigest = sha256(file)"
    );
    assert_eq!(gz.len() as u64, plain.gzip_size, "gzipSize = file length");
    assert_eq!(
        diff_id_of(&gz),
        plain.tar_digest,
        "tarDigest = sha256(gunzip(file))"
    );
    let location = with_location.location.expect("--location gives a location");
    assert!(location.starts_with("data:"), "{location}");
    assert_eq!(
        data_uri_bytes(&location),
        gz,
        "the data: URI holds the .tar.gz"
    );

    // gzip header: magic, no FNAME flag, MTIME 0
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8], "gzip magic and deflate");
    assert_eq!(gz[3] & 0x08, 0, "the gzip header names a file");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "the gzip header has an mtime");

    let entries = read_tar(&gunzip(&gz));
    let names: Vec<&str> = entries.iter().map(|e| clean_name(&e.name)).collect();
    assert_eq!(
        names,
        [
            "etc/acr/note.txt",
            "opt/acr/bin/tool",
            "opt/acr/entry.sh",
            "opt/acr/run"
        ],
        "regular files and symlinks only, sorted by path: {entries:#?}"
    );
    for e in &entries {
        assert!(!e.name.starts_with('/'), "absolute name {}", e.name);
        assert_eq!((e.uid, e.gid), (0, 0), "{}: owner", e.name);
        assert_eq!(e.mtime, 0, "{}: mtime", e.name);
    }
    for (rel, data, mode) in files {
        let e = entries
            .iter()
            .find(|e| clean_name(&e.name) == *rel)
            .expect("entry");
        assert!(e.is_file(), "{rel}: type {}", e.typeflag);
        assert_eq!(e.mode & 0o7777, *mode, "{rel}: mode {:o}", e.mode);
        assert_eq!(e.data, *data, "{rel}: content");
    }
    let link = entries
        .iter()
        .find(|e| clean_name(&e.name) == "opt/acr/run")
        .expect("symlink entry");
    assert!(link.is_symlink(), "opt/acr/run: type {}", link.typeflag);
    assert_eq!(link.linkname, "entry.sh");
}

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
    let common_dir = make_layer_dir(r, "common", &[("opt/acr/common.txt", b"common\n", 0o644)]);
    let arm_dir = make_layer_dir(r, "armonly", &[("opt/acr/arm.txt", b"arm64 only\n", 0o644)]);
    let amd_dir = make_layer_dir(r, "amdsrc", &[("opt/acr/amd.txt", b"amd64 only\n", 0o644)]);
    let common = pack(&common_dir, &[]);
    let arm = pack(&arm_dir, &[]);
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
    let arm_dir = make_layer_dir(
        root.path(),
        "armonly",
        &[("opt/acr/arm.txt", b"arm64 only\n", 0o644)],
    );
    let arm = pack(&arm_dir, &[]);
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
    let common_dir = make_layer_dir(r, "common", &[("opt/acr/common.txt", b"common\n", 0o644)]);
    let arm_dir = make_layer_dir(r, "armonly", &[("opt/acr/arm.txt", b"arm64 only\n", 0o644)]);
    let common = pack(&common_dir, &[]);
    let arm = pack(&arm_dir, &[]);
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
        let r = http_request(
            method,
            &format!("{}/v2/library/old/manifests/1", acr.url()),
            &[("Accept", &accept)],
            None,
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

// ------------------------------------------------------------------------------------------
// real clients

/// `skopeo copy --all` through acr works for the single-platform OCI image, the Docker
/// schema 2 image, the OCI index and the Docker manifest list (skopeo checks every digest and
/// size); the digests it keeps are acr's; `umoci unpack` of each platform shows the injected
/// files with their modes, the config has one diff_id per layer, the last being the sha256 of
/// the gunzipped injected layer, which is what `acr layer pack` printed.
#[test]
fn skopeo_copies_every_kind_and_umoci_unpacks_the_injected_files() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, packed, gz) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[]);
    let out = temp_dir("acr-inject-out-");
    let cases: [(&str, &[&str]); 4] = [
        ("library/test:1", &["amd64"]),
        ("library/test:v2s2", &["amd64"]),
        ("library/multi:1", &["amd64", "arm64"]),
        ("library/multi:v2s2", &["amd64", "arm64"]),
    ];
    for (i, (repo_ref, archs)) in cases.into_iter().enumerate() {
        let (repo, tag) = repo_ref.split_once(':').expect("repo:tag");
        let src = format!("docker://{}/{repo_ref}", acr.host());
        let (acr_digest, _, _) = head_manifest(&acr, repo, tag);
        // --all, keeping digests (a Docker list must be converted for an OCI layout)
        let is_list = repo_ref == "library/multi:v2s2";
        let all = out.path().join(format!("all-{i}"));
        let mut args = vec!["copy", "--all"];
        if !is_list {
            args.push("--preserve-digests");
        }
        let dest = format!("oci:{}:t", all.display());
        args.extend([src.as_str(), dest.as_str()]);
        skopeo(&args).ok();
        if !is_list {
            assert_eq!(
                layout_digest(&all, "t"),
                acr_digest,
                "{repo_ref}: skopeo kept another digest than acr serves"
            );
        }
        assert_eq!(
            layout_blob(&all, &packed.gzip_digest),
            gz,
            "{repo_ref}: the injected layer in the layout"
        );
        // each platform as an OCI image, unpacked
        for arch in archs {
            let what = format!("{repo_ref} {arch}");
            let single = out.path().join(format!("one-{i}-{arch}"));
            skopeo(&[
                "copy",
                "--format",
                "oci",
                "--override-os",
                "linux",
                "--override-arch",
                arch,
                &src,
                &format!("oci:{}:t", single.display()),
            ])
            .ok();
            let (_, m) = layout_manifest(&single, "t");
            let config = layout_blob_json(
                &single,
                m["config"]["digest"].as_str().expect("config digest"),
            );
            assert_eq!(config["architecture"], *arch, "{what}");
            let layers = layers_of(&m);
            let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
            assert_eq!(diff_ids.len(), layers.len(), "{what}: diff_ids vs layers");
            let (_, last_digest, last_size) = layers.last().expect("layers").clone();
            assert_eq!(last_digest, packed.gzip_digest, "{what}: last layer");
            assert_eq!(last_size, packed.gzip_size, "{what}: last layer size");
            let last_bytes = layout_blob(&single, &last_digest);
            assert_eq!(
                diff_ids.last().and_then(|d| d.as_str()),
                Some(diff_id_of(&last_bytes).as_str()),
                "{what}: last diff_id is not sha256(gunzip(layer))"
            );
            assert_eq!(
                diff_ids.last().and_then(|d| d.as_str()),
                Some(packed.tar_digest.as_str()),
                "{what}: last diff_id is not the packed tarDigest"
            );
            assert_eq!(
                config["config"]["Entrypoint"],
                serde_json::json!(["/opt/acr/entry.sh"]),
                "{what}"
            );
            assert_eq!(
                env_value(&config, "ACR_MOUNTS").as_deref(),
                Some("s3://bucket"),
                "{what}"
            );
            assert_eq!(env_value(&config, "ACR_ENTRY_CHAIN"), None, "{what}");
            let rootfs = umoci_unpack(&single, "t", &out.path().join(format!("b-{i}-{arch}")));
            assert_file(&rootfs, "opt/acr/entry.sh", ENTRY_SH.as_bytes(), 0o755);
            assert_file(&rootfs, "etc/acr/note.txt", NOTE_TXT.as_bytes(), 0o644);
            assert!(
                rootfs.join("hello.txt").is_file(),
                "{what}: the image's own file"
            );
        }
    }
}

/// containerd (`ctr images pull` with the hosts.toml `.mirror` wrote, strict digest and size
/// checks) pulls and unpacks the injected single-platform image and the arm64 child of the
/// injected index; the image it records has acr's digest and its mounted rootfs holds the
/// injected files.
#[test]
fn ctr_pulls_unpacks_and_mounts_an_injected_image() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[]);
    let hosts = acr.default_hosts_dir();
    let ctrd = Containerd::start();

    let image = reg.image("library/test:1");
    let out = ctrd.ctr_pull(&image, &hosts).ok();
    assert!(out.stdout.contains("unpacking linux/amd64"), "{out:?}");
    let (digest, _, _) = head_manifest(&acr, "library/test", "1");
    assert!(
        ctrd.image_digests()
            .contains(&(image.clone(), digest.clone())),
        "containerd recorded {:?}, acr serves {digest}",
        ctrd.image_digests()
    );
    let ns = format!("ns={}", reg.host());
    assert!(
        !acr.wait_requests(&["/v2/library/test/manifests/1", &ns, "status=200"], 1)
            .is_empty(),
        "containerd did not go through acr:\n{}",
        acr.log()
    );

    let target = ctrd.dir().join("mnt");
    std::fs::create_dir_all(&target).expect("mkdir mnt");
    let t = target.to_string_lossy().into_owned();
    ctrd.ctr(&["images", "mount", &image, &t]).ok();
    assert_file(&target, "opt/acr/entry.sh", ENTRY_SH.as_bytes(), 0o755);
    assert_file(&target, "etc/acr/note.txt", NOTE_TXT.as_bytes(), 0o644);
    assert_file(&target, "hello.txt", TEST_HELLO.as_bytes(), 0o644);
    ctrd.ctr(&["images", "unmount", &t]).ok();

    // An index: containerd checks the entry's size against the child it gets.
    let multi = reg.image("library/multi:1");
    let out = ctrd
        .ctr_pull_with(&multi, Some(&hosts), &["--platform", "linux/arm64"])
        .ok();
    assert!(out.stdout.contains("done"), "{out:?}");
    let (index_digest, _, _) = head_manifest(&acr, "library/multi", "1");
    assert!(
        ctrd.image_digests()
            .contains(&(multi.clone(), index_digest.clone())),
        "containerd recorded {:?}, acr serves {index_digest}",
        ctrd.image_digests()
    );
}

/// podman GETs the manifest by tag without a HEAD first; it gets the same rewritten digest
/// that a HEAD (curl-like) and `skopeo inspect` (HEAD then GET) see, and the image it stores
/// holds the injected files.
#[test]
fn podman_without_head_gets_the_same_digest_as_head_clients() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[]);
    let podman = Podman::new(&registries_conf(&reg.host(), &[&acr.host()]));
    for (repo, tag, upstream_digest) in [
        ("library/test", "1", &seeded.test_oci),
        ("library/multi", "1", &seeded.multi_oci),
    ] {
        let image = reg.image(&format!("{repo}:{tag}"));
        podman.pull(&image).ok();
        let podman_digest = podman.image_digest(&image);
        let path = format!("/v2/{repo}/manifests/{tag}");
        let lines = acr.wait_requests(&[&format!("path={path} "), "method=GET", "status=200"], 1);
        assert!(
            !lines.is_empty(),
            "podman did not GET {path}:\n{}",
            acr.log()
        );
        let heads = acr.requests_with(&[&format!("path={path} "), "method=HEAD"]);
        assert!(
            heads.is_empty(),
            "podman sent a HEAD, the GET-first case is not tested: {heads:?}"
        );
        // now the HEAD-then-GET clients
        let (head_digest, _, _) = head_manifest(&acr, repo, tag);
        let inspect: serde_json::Value = serde_json::from_str(
            &skopeo(&["inspect", &format!("docker://{}/{repo}:{tag}", acr.host())])
                .ok()
                .stdout,
        )
        .expect("inspect json");
        // For an index podman may record the index or the child it pulled.
        let mut allowed = vec![head_digest.clone()];
        let (_, _, top) = get_manifest_checked(&acr, repo, tag);
        if let Some(entries) = top["manifests"].as_array() {
            allowed.extend(
                entries
                    .iter()
                    .filter(|e| e["platform"]["architecture"] == "amd64")
                    .filter_map(|e| e["digest"].as_str().map(str::to_string)),
            );
        }
        assert!(
            allowed.contains(&podman_digest),
            "{repo}:{tag}: podman (GET only) recorded {podman_digest}, HEAD clients see {allowed:?}"
        );
        assert_eq!(
            inspect["Digest"], head_digest,
            "{repo}:{tag}: skopeo inspect"
        );
        assert_ne!(&head_digest, upstream_digest, "{repo}:{tag}: not rewritten");
    }
    // The stored image has the injected files.
    let image = reg.image("library/test:1");
    let out = podman.podman(&["image", "mount", &image]).ok();
    let mnt = std::path::PathBuf::from(out.stdout.trim());
    assert_file(&mnt, "opt/acr/entry.sh", ENTRY_SH.as_bytes(), 0o755);
    assert_file(&mnt, "etc/acr/note.txt", NOTE_TXT.as_bytes(), 0o644);
    podman.podman(&["image", "unmount", &image]).ok();
}

/// The digests of every kind of image, of its config and of index children are the same
/// after acr restarts: with the same store, and with a fresh one.
#[test]
fn digests_are_the_same_after_a_restart_with_the_same_or_a_fresh_store() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let store = root.path().join("shared-store");
    let same_store = format!(".cache {}", store.display());

    fn snapshot(acr: &Acr) -> Vec<String> {
        let mut out = Vec::new();
        for (repo, tag) in [
            ("library/test", "1"),
            ("library/test", "v2s2"),
            ("library/multi", "1"),
            ("library/multi", "v2s2"),
        ] {
            let (head, _, _) = head_manifest(acr, repo, tag);
            let (get, _, m) = get_manifest_checked(acr, repo, tag);
            assert_eq!(head, get, "{repo}:{tag}: HEAD and GET disagree");
            out.push(format!("{repo}:{tag} {get}"));
            if let Some(entries) = m["manifests"].as_array() {
                for e in entries {
                    let d = e["digest"].as_str().expect("digest");
                    let (_, _, child) = get_manifest_checked(acr, repo, d);
                    out.push(format!(
                        "{repo}:{tag} child {d} size {} config {}",
                        e["size"], child["config"]["digest"]
                    ));
                }
            } else {
                out.push(format!("{repo}:{tag} config {}", m["config"]["digest"]));
            }
        }
        out
    }

    let first = {
        let acr = standard_acr(&reg, &layer, &[&same_store]);
        snapshot(&acr)
    };
    assert!(
        store.exists(),
        "the store was not created at {}",
        store.display()
    );
    let again = {
        let acr = standard_acr(&reg, &layer, &[&same_store]);
        snapshot(&acr)
    };
    assert_eq!(again, first, "after a restart with the same store");
    let fresh = {
        let acr = standard_acr(&reg, &layer, &[]);
        snapshot(&acr)
    };
    assert_eq!(fresh, first, "after a restart with a fresh store");
}

// ------------------------------------------------------------------------------------------
// /container-token and /validate-creds

fn post_json(acr: &Acr, path: &str, body: &[u8]) -> HttpResponse {
    http_request(
        "POST",
        &format!("{}{path}", acr.url()),
        &[("Content-Type", "application/json")],
        Some(body),
    )
}

fn token_request(
    reg: &Registry,
    repo_ref: &str,
    config: serde_json::Value,
    platform: &str,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "containerImage": reg.image(repo_ref),
        "containerConfig": config,
        "containerPlatform": platform,
    }))
    .expect("json")
}

/// The token layer: `opt/token/hello.txt` (0644), packed with `--location`.
fn token_layer(root: &Path) -> Packed {
    let dir = make_layer_dir(
        root,
        "token-layer",
        &[("opt/token/hello.txt", b"hello from a token layer\n", 0o644)],
    );
    pack(&dir, &["--location"])
}

/// Creates a token for `library/test:1`; returns (token, targetImage, whole answer).
#[track_caller]
fn create_token(acr: &Acr, reg: &Registry, layer: &Packed) -> (String, String, serde_json::Value) {
    let body = token_request(
        reg,
        "library/test:1",
        serde_json::json!({
            "entrypoint": ["/opt/token/run"],
            "env": ["K=V"],
            "layers": [layer.token_layer()],
        }),
        "linux/amd64",
    );
    let r = post_json(acr, "/container-token", &body);
    assert_eq!(
        r.status,
        200,
        "POST /container-token: {}\n{}",
        r.text(),
        acr.log()
    );
    let j = r.json();
    let token = j["containerToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no containerToken: {j}"))
        .to_string();
    assert!(!token.is_empty() && !token.contains('/'), "token {token:?}");
    let target = j["targetImage"]
        .as_str()
        .unwrap_or_else(|| panic!("no targetImage: {j}"))
        .to_string();
    (token, target, j)
}

/// `POST /container-token` answers a token and a target image under `/wt/TOKEN/`; skopeo
/// pulls that image and gets the token's layer, entrypoint and env; the same tag without the
/// token does not get them.
#[test]
fn a_container_token_serves_its_augmented_image() {
    let reg = Registry::start(RegistryAuth::None);
    seed_test_only(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[".container-tokens 1h"]);
    let tl = token_layer(root.path());
    let (token, target, j) = create_token(&acr, &reg, &tl);
    assert_eq!(
        target,
        format!("{}/wt/{token}/library/test:1", acr.host()),
        "targetImage: {j}"
    );
    assert_eq!(j["containerImage"], reg.image("library/test:1"), "{j}");
    assert!(
        j["expiration"].as_str().is_some_and(|e| !e.is_empty()),
        "expiration: {j}"
    );

    let out = temp_dir("acr-token-out-");
    let layout = out.path().join("oci");
    skopeo(&[
        "copy",
        &format!("docker://{target}"),
        &format!("oci:{}:t", layout.display()),
    ])
    .ok();
    let (_, m) = layout_manifest(&layout, "t");
    let layers = layers_of(&m);
    assert_eq!(
        layers.last().map(|l| (l.1.clone(), l.2)),
        Some((tl.gzip_digest.clone(), tl.gzip_size)),
        "the token's layer is not the last layer: {layers:?}"
    );
    let config = layout_blob_json(&layout, m["config"]["digest"].as_str().expect("config"));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(diff_ids.len(), layers.len());
    assert_eq!(
        diff_ids.last().and_then(|d| d.as_str()),
        Some(tl.tar_digest.as_str())
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/opt/token/run"])
    );
    assert_eq!(
        env_value(&config, "K").as_deref(),
        Some("V"),
        "{:?}",
        env_of(&config)
    );
    let rootfs = umoci_unpack(&layout, "t", &out.path().join("bundle"));
    assert_file(
        &rootfs,
        "opt/token/hello.txt",
        b"hello from a token layer\n",
        0o644,
    );
    // HEAD and GET under the token agree
    let wt_repo = format!("wt/{token}/library/test");
    let (head, _, _) = head_manifest(&acr, &wt_repo, "1");
    let (get, _, _) = get_manifest_checked(&acr, &wt_repo, "1");
    assert_eq!(head, get);
    assert_eq!(
        layout_digest(&layout, "t"),
        get,
        "skopeo got another manifest"
    );

    // Without the token: no token layer, no token env.
    let (plain, _, pm) = get_manifest_checked(&acr, "library/test", "1");
    assert_ne!(plain, get, "the token's injection leaks into plain pulls");
    assert!(
        !layers_of(&pm).iter().any(|l| l.1 == tl.gzip_digest),
        "the token's layer leaks into plain pulls"
    );
}

/// Tokens that do not open the request: a made-up token (404), another repository under a
/// valid token (403 or 404), each with an OCI error body; bad requests are 400: malformed
/// JSON, a layer whose bytes do not match its gzipDigest (the message says so), an unknown
/// platform.
#[test]
fn container_token_errors() {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[".container-tokens 1h"]);
    let tl = token_layer(root.path());
    let (token, _, _) = create_token(&acr, &reg, &tl);

    for method in ["GET", "HEAD"] {
        let r = manifest(&acr, method, "wt/0123456789ab/library/test", "1");
        assert_eq!(
            r.status,
            404,
            "{method} under a made-up token: {}",
            r.text()
        );
        if method == "GET" {
            assert!(!oci_code(&r.text()).is_empty());
        }
    }
    let r = http_request(
        "GET",
        &format!(
            "{}/v2/wt/0123456789ab/library/test/blobs/{}",
            acr.url(),
            tl.gzip_digest
        ),
        &[],
        None,
    );
    assert_eq!(r.status, 404, "blob under a made-up token: {}", r.text());
    assert!(!oci_code(&r.text()).is_empty());

    // library/multi exists upstream; the token is for library/test.
    let r = manifest(&acr, "GET", &format!("wt/{token}/library/multi"), "1");
    assert!(
        r.status == 403 || r.status == 404,
        "another repository under the token: {} {}",
        r.status,
        r.text()
    );
    assert!(!oci_code(&r.text()).is_empty());

    let r = post_json(&acr, "/container-token", b"{\"containerImage\": ");
    assert_eq!(r.status, 400, "malformed JSON: {}", r.text());

    let mut bad = tl.token_layer();
    let wrong = digest_of(b"something else");
    bad["gzipDigest"] = serde_json::Value::String(wrong.clone());
    let body = token_request(
        &reg,
        "library/test:1",
        serde_json::json!({"layers": [bad]}),
        "linux/amd64",
    );
    let r = post_json(&acr, "/container-token", &body);
    assert_eq!(
        r.status,
        400,
        "a layer that does not match its gzipDigest: {}",
        r.text()
    );
    let text = r.text();
    assert!(
        text.contains(&wrong)
            || text.contains(&tl.gzip_digest)
            || text.to_lowercase().contains("digest"),
        "the message does not mention the digest: {text}"
    );

    let body = token_request(
        &reg,
        "library/test:1",
        serde_json::json!({"layers": [tl.token_layer()]}),
        "linux/mips99",
    );
    let r = post_json(&acr, "/container-token", &body);
    assert_eq!(r.status, 400, "unknown platform: {}", r.text());

    // the valid token still works
    let (_, _, _) = get_manifest_checked(&acr, &format!("wt/{token}/library/test"), "1");
}

/// A token made with `.container-tokens 1s` is 404 (with an OCI body) two seconds later.
#[test]
fn an_expired_container_token_is_404() {
    let reg = Registry::start(RegistryAuth::None);
    seed_test_only(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[".container-tokens 1s"]);
    let tl = token_layer(root.path());
    let (token, _, _) = create_token(&acr, &reg, &tl);
    std::thread::sleep(Duration::from_millis(2500));
    let r = manifest(&acr, "GET", &format!("wt/{token}/library/test"), "1");
    assert_eq!(r.status, 404, "an expired token: {}", r.text());
    assert!(!oci_code(&r.text()).is_empty());
    let r = manifest(&acr, "HEAD", &format!("wt/{token}/library/test"), "1");
    assert_eq!(r.status, 404, "HEAD under an expired token");
    let r = blob(
        &acr,
        "GET",
        &format!("wt/{token}/library/test"),
        &tl.gzip_digest,
    );
    assert_eq!(r.status, 404, "a blob under an expired token: {}", r.text());
    assert!(!oci_code(&r.text()).is_empty());
}

/// Without `.container-tokens` there is no `/container-token`.
#[test]
fn without_container_tokens_the_endpoint_is_404() {
    let reg = Registry::start(RegistryAuth::None);
    seed_test_only(&reg);
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[]);
    let tl = token_layer(root.path());
    let body = token_request(
        &reg,
        "library/test:1",
        serde_json::json!({"layers": [tl.token_layer()]}),
        "linux/amd64",
    );
    let r = post_json(&acr, "/container-token", &body);
    assert_eq!(r.status, 404, "{}", r.text());
    // and the mirror still injects
    let (_, _, m) = get_manifest_checked(&acr, "library/test", "1");
    assert!(layers_of(&m).len() >= 2);
}

/// `POST /validate-creds` says `true` for the upstream's credentials and `false` for wrong
/// ones (htpasswd upstream).
#[test]
fn validate_creds_checks_credentials_against_the_upstream() {
    let reg = Registry::start(RegistryAuth::htpasswd("u", "p"));
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr(&reg, &layer, &[".container-tokens 1h"]);
    for (user, pass, want) in [
        ("u", "p", "true"),
        ("u", "wrong", "false"),
        ("nobody", "p", "false"),
    ] {
        let body = serde_json::to_vec(&serde_json::json!({
            "userName": user,
            "password": pass,
            "registry": reg.host(),
        }))
        .expect("json");
        let r = post_json(&acr, "/validate-creds", &body);
        assert_eq!(r.status, 200, "{user}:{pass}: {}", r.text());
        assert_eq!(r.text().trim(), want, "{user}:{pass}");
    }
}
