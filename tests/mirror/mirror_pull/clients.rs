//! Real clients (skopeo, containerd ctr, podman) pulling through acr.

use super::*;

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

/// containerd (`ctr images pull --hosts-dir`) with the hosts.toml that `.mirror` wrote pulls
/// and unpacks a `127.0.0.1:PORT` image through acr; acr's log shows each request with the
/// `ns` containerd sent, and every blob the upstream served went to acr, none to containerd.
#[test]
fn ctr_pulls_and_unpacks_through_the_hosts_toml_mirror_wrote() {
    // `.header` too, so containerd reads every part of the file `.mirror` writes.
    let (reg, seeded, acr) = mirror_with_header("x-acr-test yes");
    let (hosts, toml) = hosts_toml_written(&acr, &reg);
    assert!(toml.contains("x-acr-test = \"yes\""), "{toml}");
    assert!(
        toml.contains(&format!("server = \"{}\"", reg.url())),
        "{toml}"
    );
    assert!(
        toml.contains(&format!("[host.\"http://{}\"]", acr.host())),
        "{toml}"
    );
    let (ctrd, ns) = ctr_pulls_test_1_through(&reg, &acr, &seeded, &hosts);
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

/// A `.header` value with a double quote and a backslash: hosts.toml holds it TOML-escaped
/// (so it reads back as written), and containerd, which must parse that file to pull at all,
/// still pulls through acr with it.
#[test]
fn ctr_pulls_through_a_hosts_toml_with_a_quoted_header_value() {
    let (reg, seeded, acr) = mirror_with_header(r#"x-acr-test say "hi" \ ok"#);
    let (hosts, toml) = hosts_toml_written(&acr, &reg);
    assert!(
        toml.contains(r#"x-acr-test = 'say "hi" \ ok'"#)
            || toml.contains(r#"x-acr-test = "say \"hi\" \\ ok""#),
        "the header value is not TOML-escaped: {toml}"
    );
    ctr_pulls_test_1_through(&reg, &acr, &seeded, &hosts);
}

/// Asserts that acr's request `lines` hold a request for `manifest` and two or more blobs.
#[track_caller]
fn assert_logged_manifest_and_blobs(acr: &Acr, lines: &[String], manifest: &str) {
    assert!(
        lines.iter().any(|l| l.contains(manifest)),
        "no {manifest}: {}",
        acr.log()
    );
    assert!(
        lines.iter().filter(|l| l.contains("/blobs/")).count() >= 2,
        "{}",
        acr.log()
    );
}

/// A seeded upstream and acr mirroring it with `.mirror`'s `.header HEADER`.
fn mirror_with_header(header: &str) -> (Registry, Seeded, Acr) {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let header = format!(".header {header}");
    let acr = Acr::start(&pipeline(&reg.url(), &[&header], &[], &routes("")));
    (reg, seeded, acr)
}

/// The hosts directory under acr's world directory and the hosts.toml `.mirror` wrote there
/// for `reg`.
fn hosts_toml_written(acr: &Acr, reg: &Registry) -> (std::path::PathBuf, String) {
    let hosts = acr.default_hosts_dir();
    let toml = std::fs::read_to_string(hosts.join(reg.host()).join("hosts.toml"))
        .expect(".mirror wrote hosts.toml under the world directory");
    (hosts, toml)
}

/// `ctr images pull --hosts-dir HOSTS` of `library/test:1` unpacks it with the upstream's
/// digest, and acr's log shows the manifest request with containerd's `ns`. Returns the
/// containerd and that `ns=HOST` for further checks.
fn ctr_pulls_test_1_through(
    reg: &Registry,
    acr: &Acr,
    seeded: &Seeded,
    hosts: &Path,
) -> (Containerd, String) {
    let ctrd = Containerd::start();
    let image = reg.image("library/test:1");
    let out = ctrd.ctr_pull(&image, hosts).ok();
    assert!(out.stdout.contains("unpacking linux/amd64"), "{out:?}");
    assert!(out.stdout.contains("done"), "{out:?}");
    ctrd.assert_has_image(&image, &seeded.test_oci);
    let ns = format!("ns={}", reg.host());
    let manifest = acr.wait_requests(&["/v2/library/test/manifests/1", &ns, "status=200"], 1);
    assert!(!manifest.is_empty(), "{}", acr.log());
    (ctrd, ns)
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
    ctrd.assert_has_image("docker.io/library/test:1", &seeded.test_oci);
    let lines = acr.wait_requests(&["ns=docker.io", "status=200"], 3);
    assert_logged_manifest_and_blobs(&acr, &lines, "/manifests/1");
    assert!(upstream_blob_agents(&reg)
        .iter()
        .all(|a| a.starts_with("acr/")));
    // A short name gets `library/`, as Docker Hub does.
    assert_head_digest(&acr, "/v2/test/manifests/1?ns=docker.io", &seeded.test_oci);
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
    assert_logged_manifest_and_blobs(&acr, &lines, "/v2/library/multi/manifests/v2s2");
    let agents = upstream_blob_agents(&reg);
    assert!(
        !agents.is_empty() && agents.iter().all(|a| a.starts_with("acr/")),
        "podman went around acr: {agents:?}"
    );
}
