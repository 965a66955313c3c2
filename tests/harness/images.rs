//! The deterministic OCI test images (built with umoci once per target directory) and large
//! images made on demand.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::*;

// ------------------------------------------------------------------------------------------
// fixtures: deterministic OCI layouts built with umoci

/// One image (manifest or index) in an OCI layout on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciImage {
    pub layout: PathBuf,
    /// `org.opencontainers.image.ref.name` in the layout's index.json.
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl OciImage {
    /// `oci:<layout>:<tag>`, for skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }
    /// A blob of the layout.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let p = self.layout.join("blobs/sha256").join(hex);
        fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }
    /// The manifest (or index) JSON.
    pub fn manifest(&self) -> serde_json::Value {
        serde_json::from_slice(&self.blob(&self.digest)).expect("manifest json")
    }
    /// `(digest, size)` of the layers of a single-platform image.
    pub fn layers(&self) -> Vec<(String, u64)> {
        self.manifest()["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().expect("digest").to_string(),
                    l["size"].as_u64().expect("size"),
                )
            })
            .collect()
    }
}

/// The images every test can push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fixtures {
    pub root: PathBuf,
    /// `test:1`: linux/amd64 OCI image, one layer with `/hello.txt`, `/etc/acr-release`
    /// and a 64 KiB `/etc/payload.bin`.
    pub test: OciImage,
    /// `multi`: OCI image index over `multi_amd64` and `multi_arm64`.
    pub multi: OciImage,
    pub multi_amd64: OciImage,
    pub multi_arm64: OciImage,
}

pub(super) fn read_layout_ref(layout: &Path, tag: &str) -> OciImage {
    let p = layout.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
    )
    .expect("index.json");
    let d = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no ref {tag} in {}", p.display()));
    OciImage {
        layout: layout.to_path_buf(),
        tag: tag.to_string(),
        digest: d["digest"].as_str().expect("digest").to_string(),
        media_type: d["mediaType"].as_str().expect("mediaType").to_string(),
        size: d["size"].as_u64().expect("size"),
    }
}

pub(super) fn umoci(args: &[&str]) {
    run("umoci", args).ok();
}

/// Adds one single-layer image `tag` to `layout` (created if needed), byte-reproducibly:
/// fixed modes, owners from the running user, every timestamp at [`EPOCH`].
pub fn build_image(layout: &Path, tag: &str, arch: &str, files: &[(&str, Vec<u8>)]) {
    require_tools(&["umoci", "find", "touch"]);
    let l = layout.to_string_lossy().into_owned();
    if !layout.join("oci-layout").exists() {
        umoci(&["init", "--layout", &l]);
    }
    let src = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir_in(layout.parent().expect("layout parent"))
        .expect("rootfs dir");
    for (name, data) in files {
        let p = src.path().join(name);
        let parent = p.parent().expect("parent");
        fs::create_dir_all(parent).expect("mkdir");
        fs::write(&p, data).expect("write file");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mut dirs = vec![src.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        for e in fs::read_dir(&d).expect("readdir").flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs.push(e.path());
            }
        }
    }
    let s = src.path().to_string_lossy().into_owned();
    run(
        "find",
        &[&s, "-exec", "touch", "-h", "-d", EPOCH, "{}", "+"],
    )
    .ok();
    let image = format!("{l}:{tag}");
    umoci(&["new", "--image", &image]);
    umoci(&[
        "insert",
        "--image",
        &image,
        "--history.created",
        EPOCH,
        "--history.created_by",
        "acr test harness",
        &s,
        "/",
    ]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--created",
        EPOCH,
        "--history.created",
        EPOCH,
        "--history.created_by",
        "acr test harness",
        "--architecture",
        arch,
        "--os",
        "linux",
        "--config.cmd",
        "/hello.txt",
    ]);
}

/// Writes an OCI image index over `tags` (platform from each config) into `layout` as `name`.
/// The JSON is written by hand so its bytes never depend on serde_json features.
pub fn add_index(layout: &Path, name: &str, tags: &[&str]) {
    let mut entries = Vec::new();
    for tag in tags {
        let img = read_layout_ref(layout, tag);
        let config_digest = img.manifest()["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_string();
        let config: serde_json::Value =
            serde_json::from_slice(&img.blob(&config_digest)).expect("config json");
        entries.push(format!(
            "{{\"mediaType\":{},\"digest\":{},\"size\":{},\"platform\":{{\"architecture\":{},\"os\":{}}}}}",
            quoted(&img.media_type),
            quoted(&img.digest),
            img.size,
            config["architecture"],
            config["os"]
        ));
    }
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
        entries.join(",")
    );
    let digest = digest_of(index.as_bytes());
    fs::write(
        layout.join("blobs/sha256").join(&digest["sha256:".len()..]),
        index.as_bytes(),
    )
    .expect("write index blob");
    let p = layout.join("index.json");
    let mut top: serde_json::Value =
        serde_json::from_slice(&fs::read(&p).expect("read index.json")).expect("index.json");
    top["manifests"]
        .as_array_mut()
        .expect("manifests")
        .push(serde_json::json!({
            "mediaType": OCI_INDEX,
            "digest": digest,
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
    fs::write(&p, serde_json::to_vec(&top).expect("json")).expect("write index.json");
}

pub(super) fn gc(layout: &Path) {
    umoci(&["gc", "--layout", &layout.to_string_lossy()]);
}

/// Builds the standard fixtures into `dir` (uncached; [`fixtures`] is the cached version).
pub fn build_fixtures_in(dir: &Path) -> Fixtures {
    let test = dir.join("test");
    build_image(
        &test,
        "1",
        "amd64",
        &[
            ("hello.txt", TEST_HELLO.as_bytes().to_vec()),
            ("etc/acr-release", b"ID=acr-test\nVERSION_ID=1\n".to_vec()),
            (
                "etc/payload.bin",
                pseudo_random_bytes("acr-test:1", 64 << 10),
            ),
        ],
    );
    gc(&test);
    let multi = dir.join("multi");
    for arch in ["amd64", "arm64"] {
        build_image(
            &multi,
            arch,
            arch,
            &[
                (
                    "hello.txt",
                    format!("hello from the acr multi-arch image ({arch})\n").into_bytes(),
                ),
                (
                    "etc/payload.bin",
                    pseudo_random_bytes(&format!("acr-multi:{arch}"), 32 << 10),
                ),
            ],
        );
    }
    add_index(&multi, "multi", &["amd64", "arm64"]);
    gc(&multi);
    load_fixtures(dir)
}

pub(super) fn load_fixtures(dir: &Path) -> Fixtures {
    Fixtures {
        root: dir.to_path_buf(),
        test: read_layout_ref(&dir.join("test"), "1"),
        multi: read_layout_ref(&dir.join("multi"), "multi"),
        multi_amd64: read_layout_ref(&dir.join("multi"), "amd64"),
        multi_arm64: read_layout_ref(&dir.join("multi"), "arm64"),
    }
}

/// The standard fixtures, built once per target dir (shared by all test processes).
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = cache_dir().join(format!("images-{FIXTURES_VERSION}"));
        build_cached(&dir, |tmp| {
            build_fixtures_in(tmp);
        });
        load_fixtures(&dir)
    })
}

/// `big`: linux/amd64 image whose single layer holds `mib` MiB of incompressible,
/// deterministic bytes (`/big.bin`), built once per size and target dir.
pub fn big_fixture(mib: u32) -> OciImage {
    static BIG: OnceLock<Mutex<HashMap<u32, OciImage>>> = OnceLock::new();
    let map = BIG.get_or_init(Default::default);
    if let Some(img) = map.lock().unwrap_or_else(|e| e.into_inner()).get(&mib) {
        return img.clone();
    }
    let dir = cache_dir().join(format!("big-{FIXTURES_VERSION}-{mib}MiB"));
    build_cached(&dir, |tmp| {
        let layout = tmp.join("big");
        build_image(
            &layout,
            "1",
            "amd64",
            &[
                (
                    "hello.txt",
                    format!("acr big image, {mib} MiB\n").into_bytes(),
                ),
                (
                    "big.bin",
                    pseudo_random_bytes(&format!("acr-big:{mib}"), (mib as usize) << 20),
                ),
            ],
        );
        gc(&layout);
    });
    let img = read_layout_ref(&dir.join("big"), "1");
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(mib, img.clone());
    img
}
