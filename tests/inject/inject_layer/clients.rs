//! Injected images pulled and run by real clients.

use super::*;

// ------------------------------------------------------------------------------------------
// real clients

/// `skopeo copy --all` through acr works for the single-platform OCI image, the Docker
/// schema 2 image, the OCI index and the Docker manifest list (skopeo checks every digest and
/// size); the digests it keeps are acr's; `umoci unpack` of each platform shows the injected
/// files with their modes, the config has one diff_id per layer, the last being the sha256 of
/// the gunzipped injected layer, which is what `acr layer pack` printed.
#[test]
fn skopeo_copies_every_kind_and_umoci_unpacks_the_injected_files() {
    let (reg, _root, (layer, packed, gz)) = seeded_upstream_and_standard_layer();
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
    let (_root, _layer, acr) = injecting(&reg, &[]);
    let hosts = acr.default_hosts_dir();
    let ctrd = Containerd::start();

    let image = reg.image("library/test:1");
    let out = ctrd.ctr_pull(&image, &hosts).ok();
    assert!(out.stdout.contains("unpacking linux/amd64"), "{out:?}");
    let (digest, _, _) = head_manifest(&acr, "library/test", "1");
    ctrd.assert_has_image(&image, &digest);
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
    ctrd.assert_has_image(&multi, &index_digest);
}

/// podman GETs the manifest by tag without a HEAD first; it gets the same rewritten digest
/// that a HEAD (curl-like) and `skopeo inspect` (HEAD then GET) see, and the image it stores
/// holds the injected files.
#[test]
fn podman_without_head_gets_the_same_digest_as_head_clients() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let (_root, _layer, acr) = injecting(&reg, &[]);
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
    let (reg, root, (layer, _, _)) = seeded_upstream_and_standard_layer();
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
