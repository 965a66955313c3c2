//! skopeo, and seeding a registry with the test images (tags, indexes, their digests).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use super::*;

// ------------------------------------------------------------------------------------------
// skopeo and seeding

/// An empty auth file, so no user/system credentials leak into the tests.
pub(super) fn empty_auth_file() -> PathBuf {
    let p = cache_dir().join("empty-auth.json");
    if !p.exists() {
        let tmp = cache_dir().join(format!("empty-auth.json.{}", std::process::id()));
        fs::write(&tmp, b"{\"auths\":{}}\n").expect("write auth file");
        fs::rename(&tmp, &p).expect("rename auth file");
    }
    p
}

/// Runs `skopeo --insecure-policy <args>` with TLS verification off for the subcommand
/// (`copy`/`sync`: `--src-tls-verify=false --dest-tls-verify=false`; `inspect`,
/// `list-tags`, `delete`, `login`, `logout`: `--tls-verify=false`) and an empty auth file.
pub fn skopeo(args: &[&str]) -> CmdOutput {
    require_tools(&["skopeo"]);
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy");
    if let Some((sub, rest)) = args.split_first() {
        cmd.arg(sub);
        match *sub {
            "copy" | "sync" => {
                cmd.args(["--src-tls-verify=false", "--dest-tls-verify=false"]);
            }
            "inspect" | "list-tags" | "delete" | "login" | "logout" => {
                cmd.arg("--tls-verify=false");
            }
            _ => {}
        }
        cmd.args(rest);
    }
    cmd.env("REGISTRY_AUTH_FILE", empty_auth_file());
    run_cmd(cmd, COMMAND_TIMEOUT)
}

/// Pushes `image` to `registry` as `repo_ref` (`library/test:1`), with the registry's
/// credentials; `extra` is e.g. `["--all"]` or `["--format", "v2s2"]`.
pub fn push(registry: &Registry, image: &OciImage, repo_ref: &str, extra: &[&str]) {
    let dest = format!("docker://{}", registry.image(repo_ref));
    let src = image.oci_ref();
    let creds = registry.creds().map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec!["copy", "-q"];
    if let Some(c) = creds.as_deref() {
        args.extend(["--dest-creds", c]);
    }
    args.extend_from_slice(extra);
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(&args).ok();
}

/// The raw manifest of `repo_ref` in `registry` (`skopeo inspect --raw`, with the
/// registry's credentials) and its digest.
pub fn raw_manifest(registry: &Registry, repo_ref: &str) -> (String, Vec<u8>) {
    let r = format!("docker://{}", registry.image(repo_ref));
    let creds = registry.creds().map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec!["inspect", "--raw"];
    if let Some(c) = creds.as_deref() {
        args.extend(["--creds", c]);
    }
    args.push(&r);
    let raw = skopeo(&args).ok().stdout.into_bytes();
    (digest_of(&raw), raw)
}

/// What [`seed`] pushed: manifest digests as the registry serves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeded {
    /// `library/test:1`, OCI manifest.
    pub test_oci: String,
    /// `library/test:v2s2`, Docker schema 2 manifest.
    pub test_v2s2: String,
    /// `library/multi:1`, OCI image index.
    pub multi_oci: String,
    /// `library/multi:v2s2`, Docker manifest list.
    pub multi_v2s2: String,
    /// `(architecture, digest)` of the children of `multi:1`.
    pub multi_oci_children: Vec<(String, String)>,
    /// `(architecture, digest)` of the children of `multi:v2s2`.
    pub multi_v2s2_children: Vec<(String, String)>,
}

pub(super) fn children(raw: &[u8]) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(raw).expect("index json");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                m["digest"].as_str().expect("digest").to_string(),
            )
        })
        .collect()
}

/// Pushes the standard fixtures: `library/test:1` (OCI), `library/test:v2s2`,
/// `library/multi:1` (OCI index, `--all`), `library/multi:v2s2` (manifest list).
pub fn seed(registry: &Registry) -> Seeded {
    let f = fixtures();
    push(registry, &f.test, "library/test:1", &[]);
    push(
        registry,
        &f.test,
        "library/test:v2s2",
        &["--format", "v2s2"],
    );
    push(registry, &f.multi, "library/multi:1", &["--all"]);
    push(
        registry,
        &f.multi,
        "library/multi:v2s2",
        &["--all", "--format", "v2s2"],
    );
    let (test_oci, _) = raw_manifest(registry, "library/test:1");
    let (test_v2s2, _) = raw_manifest(registry, "library/test:v2s2");
    let (multi_oci, multi_raw) = raw_manifest(registry, "library/multi:1");
    let (multi_v2s2, list_raw) = raw_manifest(registry, "library/multi:v2s2");
    assert_eq!(
        test_oci, f.test.digest,
        "skopeo changed the OCI manifest of test:1"
    );
    assert_eq!(
        multi_oci, f.multi.digest,
        "skopeo changed the OCI index of multi"
    );
    Seeded {
        test_oci,
        test_v2s2,
        multi_oci,
        multi_v2s2,
        multi_oci_children: children(&multi_raw),
        multi_v2s2_children: children(&list_raw),
    }
}

/// What [`seed_big`] pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BigSeeded {
    /// `library/big:<mib>`
    pub repo_ref: String,
    pub manifest_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
}

/// Pushes [`big_fixture`]`(mib)` as `library/big:<mib>`.
pub fn seed_big(registry: &Registry, mib: u32) -> BigSeeded {
    let img = big_fixture(mib);
    let repo_ref = format!("library/big:{mib}");
    push(registry, &img, &repo_ref, &[]);
    let (digest, _) = raw_manifest(registry, &repo_ref);
    assert_eq!(digest, img.digest, "skopeo changed the manifest of big");
    let (layer_digest, layer_size) = img.layers().into_iter().next().expect("one layer");
    BigSeeded {
        repo_ref,
        manifest_digest: digest,
        layer_digest,
        layer_size,
    }
}
