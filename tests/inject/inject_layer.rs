//! Layer injection end to end: `.inject-layer` in a manifests route appends layers (and
//! entrypoint/env/cmd/working-dir changes) to every image pulled through acr, with digests
//! strict clients accept. Real upstream (CNCF distribution), real clients (skopeo, umoci,
//! containerd's `ctr`, podman); `acr layer pack`; `/container-token` and `/validate-creds`.
//!
//! Every test starts its own upstream, its own acr (own port, own temp dir, own store) and its
//! own clients, so they run in parallel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::harness::inject::*;
use crate::harness::*;

mod clients;
mod container_token;
mod over_http;
mod pack;

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

/// A seeded upstream and the standard layer packed in a new temporary directory: the
/// upstream, the directory, and what [`standard_packed`] gives.
fn seeded_upstream_and_standard_layer() -> (Registry, TempDir, (PathBuf, Packed, Vec<u8>)) {
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let root = temp_dir("acr-inject-");
    let packed = standard_packed(root.path());
    (reg, root, packed)
}

/// An acr over `reg` that injects the standard layer with `.entrypoint /opt/acr/entry.sh`
/// and `.env ACR_MOUNTS=s3://bucket`, with `settings`.
fn standard_acr(reg: &Registry, layer: &Path, settings: &[&str]) -> Acr {
    let inject = standard_inject(layer);
    Acr::start(&inject_pipeline(&reg.url(), &strs(&inject), settings))
}

/// The standard layer packed in a new temporary directory and an acr over `reg` injecting
/// it ([`standard_acr`]): `(the directory, the layer's source directory, acr)`.
fn injecting(reg: &Registry, settings: &[&str]) -> (TempDir, PathBuf, Acr) {
    let root = temp_dir("acr-inject-");
    let (layer, _, _) = standard_packed(root.path());
    let acr = standard_acr(reg, &layer, settings);
    (root, layer, acr)
}

/// The layer meant for every platform: `root/common` with `opt/acr/common.txt`, packed.
fn common_layer(root: &Path) -> (PathBuf, Packed) {
    one_file_layer(root, "common", ("opt/acr/common.txt", b"common\n"))
}

/// The layer meant for arm64 only: `root/armonly` with `opt/acr/arm.txt`, packed.
fn arm64_only_layer(root: &Path) -> (PathBuf, Packed) {
    one_file_layer(root, "armonly", ("opt/acr/arm.txt", b"arm64 only\n"))
}

/// `root/NAME` holding one file (0644) with its text, and that directory packed.
fn one_file_layer(root: &Path, name: &str, (file, text): (&str, &[u8])) -> (PathBuf, Packed) {
    let dir = make_layer_dir(root, name, &[(file, text, 0o644)]);
    let packed = pack(&dir, &[]);
    (dir, packed)
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
