//! What the layer-injection tests (`tests/inject/inject_layer.rs`) share: layer directories with
//! exact modes, `acr layer pack`, the injection pipeline, a tiny tar reader (to check what
//! `acr layer pack` wrote without depending on `tar`'s locale and time zone), gunzip via the
//! `gzip` program, manifest/config/blob fetches through acr, and extra upstream images with
//! an entrypoint.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::*;

mod fetch;
mod images;
mod tar;

// Each area binary uses a part of these.
#[allow(unused_imports)]
pub use {fetch::*, images::*, tar::*};

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The `created` of every history entry acr adds.
pub const INJECTED_CREATED: &str = "1970-01-01T00:00:00Z";

/// Contents of `/opt/acr/entry.sh` in [`standard_layer`] (mode 0755).
pub const ENTRY_SH: &str = "#!/bin/sh\n# acr test entrypoint\nexec \"$@\"\n";
/// Contents of `/etc/acr/note.txt` in [`standard_layer`] (mode 0644).
pub const NOTE_TXT: &str = "injected by acr\n";

/// The `acr` binary under test.
pub fn acr_bin() -> &'static str {
    env!("CARGO_BIN_EXE_acr")
}

/// Creates `root/name` holding `files` (relative path, content, mode) and returns its
/// absolute path. Parent directories are created 0755.
pub fn make_layer_dir(root: &Path, name: &str, files: &[(&str, &[u8], u32)]) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    for (rel, data, mode) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir parent");
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    dir.canonicalize().expect("canonical layer dir")
}

/// The layer most tests inject: `opt/acr/entry.sh` (0755) and `etc/acr/note.txt` (0644),
/// as `root/layer`.
pub fn standard_layer(root: &Path) -> PathBuf {
    make_layer_dir(
        root,
        "layer",
        &[
            ("opt/acr/entry.sh", ENTRY_SH.as_bytes(), 0o755),
            ("etc/acr/note.txt", NOTE_TXT.as_bytes(), 0o644),
        ],
    )
}

/// What `acr layer pack` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    pub gzip_digest: String,
    pub gzip_size: u64,
    pub tar_digest: String,
    pub location: Option<String>,
}

impl Packed {
    /// The `containerConfig.layers[]` entry of a `/container-token` request (needs
    /// `location`, i.e. a pack with `--location`).
    pub fn token_layer(&self) -> serde_json::Value {
        serde_json::json!({
            "location": self.location.as_deref().expect("packed with --location"),
            "gzipDigest": self.gzip_digest,
            "gzipSize": self.gzip_size,
            "tarDigest": self.tar_digest,
        })
    }
}

/// `acr layer pack DIR <extra...>` (extra: `-o FILE`, `--location`), parsed.
#[track_caller]
pub fn pack(dir: &Path, extra: &[&str]) -> Packed {
    let mut cmd = Command::new(acr_bin());
    cmd.args(["layer", "pack"]).arg(dir).args(extra);
    let out = run_cmd(cmd, std::time::Duration::from_secs(120)).ok();
    let text = out.stdout.trim();
    let v: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("`acr layer pack` printed no JSON object ({e}): {out:?}"));
    let field = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("no string {k} in {text}"))
            .to_string()
    };
    let packed = Packed {
        gzip_digest: field("gzipDigest"),
        gzip_size: v["gzipSize"]
            .as_u64()
            .unwrap_or_else(|| panic!("no number gzipSize in {text}")),
        tar_digest: field("tarDigest"),
        location: v["location"].as_str().map(str::to_string),
    };
    for d in [&packed.gzip_digest, &packed.tar_digest] {
        assert!(
            d.starts_with("sha256:") && d.len() == 71,
            "not a sha256 digest: {d} in {text}"
        );
    }
    packed
}

/// `acr layer pack DIR -o FILE`: the packed description and the file's bytes.
#[track_caller]
pub fn pack_to_file(dir: &Path, file: &Path) -> (Packed, Vec<u8>) {
    let packed = pack(dir, &["-o", &file.to_string_lossy()]);
    let bytes = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    (packed, bytes)
}

/// The bytes `gzip -dc` makes of `gz` (panics when gzip refuses them).
pub fn gunzip(gz: &[u8]) -> Vec<u8> {
    require_tools(&["gzip"]);
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    fs::write(tmp.path(), gz).expect("write gz");
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("run gzip -dc");
    assert!(
        out.status.success(),
        "gzip -dc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `sha256:` of the gunzipped bytes (a layer's diff_id).
pub fn diff_id_of(gz: &[u8]) -> String {
    digest_of(&gunzip(gz))
}

/// The decoded payload of a `data:[<mediatype>][;base64],<data>` URI (base64 only).
pub fn data_uri_bytes(uri: &str) -> Vec<u8> {
    let rest = uri.strip_prefix("data:").expect("data: URI");
    let payload = match rest.split_once(',') {
        Some((meta, p)) => {
            assert!(meta.ends_with("base64"), "not a base64 data URI: {meta}");
            p
        }
        None => rest,
    };
    base64_decode(payload)
}

/// Standard base64 (with or without padding) to bytes.
pub fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = T
            .iter()
            .position(|t| *t == c)
            .unwrap_or_else(|| panic!("not base64: {c:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
