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

// ------------------------------------------------------------------------------------------
// tar

/// One entry of a tar archive (after PAX/GNU long-name records were applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    pub name: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// `b'0'` (or 0) regular file, `b'2'` symlink, `b'5'` directory, ...
    pub typeflag: u8,
    pub size: u64,
    pub linkname: String,
    pub data: Vec<u8>,
}

impl TarEntry {
    pub fn is_file(&self) -> bool {
        self.typeflag == b'0' || self.typeflag == 0
    }
    pub fn is_symlink(&self) -> bool {
        self.typeflag == b'2'
    }
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn octal(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // base-256
        return field[1..]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    }
    let s = cstr(field);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        0
    } else {
        u64::from_str_radix(s, 8).unwrap_or_else(|e| panic!("bad octal {s:?} in tar: {e}"))
    }
}

fn pax_records(data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ').expect("pax length");
        let len: usize = String::from_utf8_lossy(&rest[..sp])
            .parse()
            .expect("pax len");
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|b| *b == b'=') {
            out.push((
                String::from_utf8_lossy(&rec[..eq]).into_owned(),
                String::from_utf8_lossy(&rec[eq + 1..]).into_owned(),
            ));
        }
        rest = &rest[len..];
    }
    out
}

/// Parses a (ustar, PAX or GNU) tar archive.
pub fn read_tar(tar: &[u8]) -> Vec<TarEntry> {
    let mut entries = Vec::new();
    let mut pos = 0;
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    let mut pax: Vec<(String, String)> = Vec::new();
    while pos + 512 <= tar.len() {
        let h = &tar[pos..pos + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let size = octal(&h[124..136]);
        let typeflag = h[156];
        let data_start = pos + 512;
        let data_end = data_start + size as usize;
        assert!(data_end <= tar.len(), "tar entry runs past the end");
        let data = tar[data_start..data_end].to_vec();
        pos = data_start + (size as usize).div_ceil(512) * 512;
        match typeflag {
            b'x' => {
                pax = pax_records(&data);
                continue;
            }
            b'g' => continue,
            b'L' => {
                long_name = Some(cstr(&data));
                continue;
            }
            b'K' => {
                long_link = Some(cstr(&data));
                continue;
            }
            _ => {}
        }
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let mut linkname = cstr(&h[157..257]);
        let mut uid = octal(&h[108..116]);
        let mut gid = octal(&h[116..124]);
        let mut mtime = octal(&h[136..148]);
        if let Some(n) = long_name.take() {
            name = n;
        }
        if let Some(l) = long_link.take() {
            linkname = l;
        }
        for (k, v) in pax.drain(..) {
            match k.as_str() {
                "path" => name = v,
                "linkpath" => linkname = v,
                "uid" => uid = v.parse().unwrap_or(uid),
                "gid" => gid = v.parse().unwrap_or(gid),
                "mtime" => {
                    mtime = v
                        .split('.')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(mtime)
                }
                _ => {}
            }
        }
        entries.push(TarEntry {
            name,
            mode: octal(&h[100..108]) as u32,
            uid,
            gid,
            mtime,
            typeflag,
            size,
            linkname,
            data,
        });
    }
    entries
}

/// A tar entry name without a leading `./`.
pub fn clean_name(name: &str) -> &str {
    name.strip_prefix("./").unwrap_or(name)
}

// ------------------------------------------------------------------------------------------
// pipelines

/// The routes of an injecting mirror: `inject` lines (`.inject-layer SRC` and its modifiers,
/// modifiers indented by two more spaces, e.g. `"  .env K=V"`) go before `.resolve` in the
/// manifests route.
pub fn inject_routes(inject: &[&str]) -> String {
    let mut s = String::from(": .manifests head, get\n:   .login\n:   .authn\n");
    for line in inject {
        s += &format!(":   {line}\n");
    }
    s += ":   .resolve\n\
          : .blobs head, get\n:   .login\n:   .authn\n:   .pull\n\
          : .tags get\n:   .login\n:   .authn\n:   .resolve\n";
    s
}

/// A mirror of `upstream` that injects `inject` (see [`inject_routes`]), with `settings`;
/// the store is `store` beside the pipeline unless `settings` names a `.cache`.
pub fn inject_pipeline(upstream: &str, inject: &[&str], settings: &[&str]) -> String {
    let mut settings: Vec<&str> = settings.to_vec();
    if !settings
        .iter()
        .any(|l| l.trim_start().starts_with(".cache"))
    {
        settings.insert(0, ".cache store");
    }
    pipeline(upstream, &[], &settings, &inject_routes(inject))
}

/// `.inject-layer DIR` with `.entrypoint /opt/acr/entry.sh` and `.env ACR_MOUNTS=s3://bucket`.
pub fn standard_inject(layer: &Path) -> Vec<String> {
    vec![
        format!(".inject-layer {}", layer.display()),
        "  .entrypoint /opt/acr/entry.sh".to_string(),
        "  .env ACR_MOUNTS=s3://bucket".to_string(),
    ]
}

/// `Vec<String>` as `Vec<&str>`.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ------------------------------------------------------------------------------------------
// fetching through acr

/// HEAD or GET `/v2/<repo>/manifests/<reference>` at acr, accepting every manifest type.
pub fn manifest(acr: &Acr, method: &str, repo: &str, reference: &str) -> HttpResponse {
    fetch(
        method,
        &format!("{}/v2/{repo}/manifests/{reference}", acr.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
    )
}

/// GET a manifest at acr, asserting 200 and the headers every manifest answer must carry:
/// `Docker-Content-Digest` = sha256 of the body, `Content-Length` = its length,
/// `Content-Type` = its `mediaType`. Returns (digest, body, parsed JSON).
#[track_caller]
pub fn get_manifest_checked(
    acr: &Acr,
    repo: &str,
    reference: &str,
) -> (String, Vec<u8>, serde_json::Value) {
    let r = manifest(acr, "GET", repo, reference);
    assert_eq!(
        r.status,
        200,
        "GET /v2/{repo}/manifests/{reference}: {}\n{}",
        r.text(),
        acr.log()
    );
    let digest = digest_of(&r.body);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest.as_str()),
        "GET {repo}:{reference}: Docker-Content-Digest is not the sha256 of the body"
    );
    let len = r.body.len().to_string();
    assert_eq!(
        r.header("content-length"),
        Some(len.as_str()),
        "GET {repo}:{reference}: Content-Length"
    );
    let json: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("manifest of {repo}:{reference} is not JSON ({e})"));
    if let Some(mt) = json["mediaType"].as_str() {
        assert_eq!(
            r.header("content-type"),
            Some(mt),
            "GET {repo}:{reference}: Content-Type is not the manifest's mediaType"
        );
    }
    (digest, r.body, json)
}

/// HEAD a manifest at acr: asserts 200 and returns (Docker-Content-Digest, Content-Length,
/// Content-Type).
#[track_caller]
pub fn head_manifest(acr: &Acr, repo: &str, reference: &str) -> (String, String, String) {
    let r = manifest(acr, "HEAD", repo, reference);
    assert_eq!(
        r.status,
        200,
        "HEAD /v2/{repo}/manifests/{reference}: {}",
        acr.log()
    );
    let h = |k: &str| {
        r.header(k)
            .unwrap_or_else(|| panic!("HEAD {repo}:{reference}: no {k}: {:?}", r.headers))
            .to_string()
    };
    (
        h("docker-content-digest"),
        h("content-length"),
        h("content-type"),
    )
}

/// GET (or HEAD) `/v2/<repo>/blobs/<digest>` at acr.
pub fn blob(acr: &Acr, method: &str, repo: &str, digest: &str) -> HttpResponse {
    fetch(
        method,
        &format!("{}/v2/{repo}/blobs/{digest}", acr.url()),
        &[],
    )
}

/// GET a blob at acr, asserting 200, `Docker-Content-Digest` and that the bytes hash to
/// `digest`; also HEAD, asserting 200, the same digest and `Content-Length`.
#[track_caller]
pub fn get_blob_checked(acr: &Acr, repo: &str, digest: &str) -> Vec<u8> {
    let r = blob(acr, "GET", repo, digest);
    assert_eq!(
        r.status,
        200,
        "GET /v2/{repo}/blobs/{digest}: {}\n{}",
        r.text(),
        acr.log()
    );
    assert_eq!(digest_of(&r.body), digest, "GET blob {digest}: wrong bytes");
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest),
        "GET blob {digest}: Docker-Content-Digest"
    );
    let h = blob(acr, "HEAD", repo, digest);
    assert_eq!(h.status, 200, "HEAD /v2/{repo}/blobs/{digest}");
    assert_eq!(
        h.header("docker-content-digest"),
        Some(digest),
        "HEAD blob {digest}: Docker-Content-Digest"
    );
    let len = r.body.len().to_string();
    assert_eq!(
        h.header("content-length"),
        Some(len.as_str()),
        "HEAD blob {digest}: Content-Length"
    );
    r.body
}

/// The manifest's layers as (mediaType, digest, size).
pub fn layers_of(manifest: &serde_json::Value) -> Vec<(String, String, u64)> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap_or_default().to_string(),
                l["digest"].as_str().expect("layer digest").to_string(),
                l["size"].as_u64().expect("layer size"),
            )
        })
        .collect()
}

/// The config of a manifest fetched through acr (checked as a blob: HEAD and GET, digest,
/// and `config.size` = its byte length). Returns (bytes, JSON).
#[track_caller]
pub fn config_of(
    acr: &Acr,
    repo: &str,
    manifest: &serde_json::Value,
) -> (Vec<u8>, serde_json::Value) {
    let digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let bytes = get_blob_checked(acr, repo, digest);
    assert_eq!(
        manifest["config"]["size"].as_u64(),
        Some(bytes.len() as u64),
        "config.size is not the config's byte length"
    );
    let json = serde_json::from_slice(&bytes).expect("config json");
    (bytes, json)
}

/// The upstream's raw manifest (GET with every Accept type).
pub fn upstream_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
) -> (String, serde_json::Value) {
    let r = reg.fetch_manifest("GET", repo, reference);
    assert_eq!(r.status, 200, "upstream {repo}:{reference}: {}", r.text());
    (
        digest_of(&r.body),
        serde_json::from_slice(&r.body).expect("json"),
    )
}

/// The upstream's config for a single-platform manifest.
pub fn upstream_config(
    reg: &Registry,
    repo: &str,
    manifest: &serde_json::Value,
) -> serde_json::Value {
    let d = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let r = reg.fetch("GET", &format!("/v2/{repo}/blobs/{d}"), &[]);
    assert_eq!(r.status, 200);
    r.json()
}

/// `config.Env` as strings.
pub fn env_of(config: &serde_json::Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `key` in `config.Env` when present exactly once (panics when repeated).
pub fn env_value(config: &serde_json::Value, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    let vals: Vec<String> = env_of(config)
        .into_iter()
        .filter_map(|e| e.strip_prefix(&prefix).map(str::to_string))
        .collect();
    assert!(
        vals.len() <= 1,
        "{key} appears {} times in Env: {:?}",
        vals.len(),
        env_of(config)
    );
    vals.into_iter().next()
}

/// Asserts what injecting `injected` (in order) into an image whose upstream manifest and
/// config are `up_manifest`/`up_config` must give: the original layers then the injected
/// ones with `layer_media_type`, diff_ids extended by their tarDigests (count == layers),
/// and one history entry per injected layer dated [`INJECTED_CREATED`].
#[track_caller]
pub fn assert_injected(
    what: &str,
    up_manifest: &serde_json::Value,
    up_config: &serde_json::Value,
    manifest: &serde_json::Value,
    config: &serde_json::Value,
    injected: &[&Packed],
    layer_media_type: &str,
) {
    let up_layers = layers_of(up_manifest);
    let layers = layers_of(manifest);
    let mut want = up_layers.clone();
    for p in injected {
        want.push((
            layer_media_type.to_string(),
            p.gzip_digest.clone(),
            p.gzip_size,
        ));
    }
    assert_eq!(layers, want, "{what}: layers = upstream layers + injected");
    assert_eq!(
        manifest["mediaType"], up_manifest["mediaType"],
        "{what}: mediaType changed"
    );
    assert_eq!(
        manifest["config"]["mediaType"], up_manifest["config"]["mediaType"],
        "{what}: config mediaType changed"
    );
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_string())
        .collect();
    let mut want_ids: Vec<String> = up_config["rootfs"]["diff_ids"]
        .as_array()
        .expect("upstream diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_string())
        .collect();
    want_ids.extend(injected.iter().map(|p| p.tar_digest.clone()));
    assert_eq!(diff_ids, want_ids, "{what}: diff_ids");
    assert_eq!(diff_ids.len(), layers.len(), "{what}: diff_ids vs layers");
    let up_history = up_config["history"].as_array().cloned().unwrap_or_default();
    let history = config["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        history.len(),
        up_history.len() + injected.len(),
        "{what}: one history entry per injected layer: {history:?}"
    );
    assert_eq!(
        &history[..up_history.len()],
        &up_history[..],
        "{what}: old history"
    );
    for h in &history[up_history.len()..] {
        assert_eq!(h["created"], INJECTED_CREATED, "{what}: history {h}");
        assert_ne!(h["empty_layer"], true, "{what}: history {h}");
    }
    for k in ["architecture", "os"] {
        assert_eq!(config[k], up_config[k], "{what}: config {k} changed");
    }
}

// ------------------------------------------------------------------------------------------
// extra upstream images

/// Builds a one-layer linux/amd64 image (files as in [`build_image`]) with `entrypoint` and
/// `env` into a fresh layout under `root` and pushes it to `reg` as `repo_ref`.
pub fn push_image_with_entrypoint(
    reg: &Registry,
    root: &Path,
    repo_ref: &str,
    entrypoint: &[&str],
    env: &[&str],
) {
    let layout = root.join(format!("layout-{}", repo_ref.replace(['/', ':'], "_")));
    build_image(
        &layout,
        "t",
        "amd64",
        &[("hello.txt", b"an image with an entrypoint\n".to_vec())],
    );
    let image = format!("{}:t", layout.display());
    let mut args: Vec<String> = vec![
        "config".into(),
        "--image".into(),
        image,
        "--no-history".into(),
        "--created".into(),
        EPOCH.into(),
    ];
    for e in entrypoint {
        args.push("--config.entrypoint".into());
        args.push(e.to_string());
    }
    for e in env {
        args.push("--config.env".into());
        args.push(e.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("umoci", &args).ok();
    let img = OciImage {
        layout: layout.clone(),
        tag: "t".into(),
        digest: String::new(),
        media_type: OCI_MANIFEST.into(),
        size: 0,
    };
    push(reg, &img, repo_ref, &[]);
}

// ------------------------------------------------------------------------------------------
// OCI layouts and bundles

/// The digest and manifest (JSON) a tag of an OCI layout names.
pub fn layout_manifest(layout: &Path, tag: &str) -> (String, serde_json::Value) {
    let digest = layout_digest(layout, tag);
    (digest.clone(), layout_blob_json(layout, &digest))
}

/// A blob of an OCI layout.
pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    let p = layout.join("blobs/sha256").join(hex);
    fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn layout_blob_json(layout: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&layout_blob(layout, digest)).expect("blob json")
}

/// `umoci unpack --rootless --image LAYOUT:TAG BUNDLE`; returns the bundle's rootfs.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:{tag}", layout.display()),
            &bundle.to_string_lossy(),
        ],
    )
    .ok();
    bundle.join("rootfs")
}

/// Asserts `root/rel` is a regular file with `content` and permission bits `mode`.
#[track_caller]
pub fn assert_file(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let p = root.join(rel);
    let meta = fs::symlink_metadata(&p)
        .unwrap_or_else(|e| panic!("{} is missing from the unpacked image: {e}", p.display()));
    assert!(meta.is_file(), "{} is not a regular file", p.display());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        mode,
        "mode of {} is {:o}",
        p.display(),
        meta.permissions().mode() & 0o7777
    );
    assert_eq!(
        fs::read(&p).expect("read"),
        content,
        "content of {}",
        p.display()
    );
}
