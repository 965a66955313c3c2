//! What the content-store tests (`tests/store/`) share: `/metrics` fetched and parsed as
//! Prometheus text, images pushed to a registry through its HTTP API (fast, any layer sizes),
//! a look at a store's directory, and runmd pipelines with a store.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::harness::*;

// ------------------------------------------------------------------------------------------
// Prometheus text format

/// One scrape: every sample by its series (`name` or `name{labels}` as written), with the
/// `# TYPE` of every metric family.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of `name` (a series without labels); panics when it is absent.
    #[track_caller]
    pub fn get(&self, name: &str) -> f64 {
        *self
            .samples
            .get(name)
            .unwrap_or_else(|| panic!("no series {name} in the scrape: {:?}", self.samples))
    }

    /// `get(name)` as a whole number (every acr series is a counter or a gauge of whole units).
    #[track_caller]
    pub fn n(&self, name: &str) -> u64 {
        let v = self.get(name);
        assert!(
            v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53),
            "{name} = {v} is not a count"
        );
        v as u64
    }

    /// How much `name` grew since `before`.
    #[track_caller]
    pub fn delta(&self, before: &Scrape, name: &str) -> i64 {
        self.n(name) as i64 - before.n(name) as i64
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses the Prometheus text exposition format (0.0.4): `# HELP` and `# TYPE` lines, other
/// comments, blank lines, and samples `name[{label="value",...}] value [timestamp]`. Strict
/// where acr could go wrong: a sample must follow its family's `# TYPE`, a TYPE must be a
/// known one and come once, a series must appear once, names and values must be well formed.
pub fn parse_prometheus(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    for (i, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
        let line_t = line.trim();
        if line_t.is_empty() {
            continue;
        }
        if let Some(comment) = line_t.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().ok_or_else(|| at("TYPE without a name"))?;
                    let kind = words.next().ok_or_else(|| at("TYPE without a type"))?;
                    if !is_metric_name(name) {
                        return Err(at("bad metric name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    if words.next().is_some() {
                        return Err(at("junk after the type"));
                    }
                    if scrape.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("a second TYPE for the family"));
                    }
                }
                Some("HELP") => {
                    let name = words.next().ok_or_else(|| at("HELP without a name"))?;
                    if !is_metric_name(name) {
                        return Err(at("bad metric name"));
                    }
                }
                _ => {} // any other comment
            }
            continue;
        }
        // The series: a name, then labels in braces (whose values may hold spaces).
        let name_end = line_t
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| at("a sample without a value"))?;
        let name = &line_t[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name"));
        }
        let (series, rest) = if line_t[name_end..].starts_with('{') {
            let mut in_string = false;
            let mut escaped = false;
            let mut close = None;
            for (j, c) in line_t[name_end..].char_indices() {
                match (in_string, escaped, c) {
                    (true, true, _) => escaped = false,
                    (true, false, '\\') => escaped = true,
                    (true, false, '"') => in_string = false,
                    (false, _, '"') => in_string = true,
                    (false, _, '}') => {
                        close = Some(name_end + j);
                        break;
                    }
                    _ => {}
                }
            }
            let close = close.ok_or_else(|| at("unclosed label set"))?;
            (&line_t[..=close], &line_t[close + 1..])
        } else {
            (name, &line_t[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| at("a sample without a number"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(at("junk after the sample"));
        }
        // The family: the name itself, or a histogram's/summary's base name.
        let family = [name, name.trim_end_matches("_bucket")]
            .into_iter()
            .chain(
                ["_sum", "_count"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s)),
            )
            .find(|f| scrape.types.contains_key(*f))
            .ok_or_else(|| at("a sample before its family's TYPE"))?;
        if scrape.types[family] == "counter" && value < 0.0 {
            return Err(at("a negative counter"));
        }
        if scrape.samples.insert(series.to_string(), value).is_some() {
            return Err(at("the series appears twice"));
        }
    }
    Ok(scrape)
}

/// The counters and gauges acr must expose, with their types.
pub const ACR_SERIES: [(&str, &str); 10] = [
    ("acr_cache_hits_total", "counter"),
    ("acr_cache_misses_total", "counter"),
    ("acr_bytes_from_store_total", "counter"),
    ("acr_bytes_from_upstream_total", "counter"),
    ("acr_upstream_requests_total", "counter"),
    ("acr_digest_mismatches_total", "counter"),
    ("acr_stale_serves_total", "counter"),
    ("acr_evictions_total", "counter"),
    ("acr_store_bytes", "gauge"),
    ("acr_store_objects", "gauge"),
];

/// `GET /metrics` of `acr`, parsed; checks the content type and that every acr series is
/// there with its type.
#[track_caller]
pub fn scrape(acr: &Acr) -> Scrape {
    let r = acr.fetch("GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default().to_string();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "/metrics Content-Type {ct:?}"
    );
    let s = parse_prometheus(&r.text())
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text ({e}):\n{}", r.text()));
    for (name, kind) in ACR_SERIES {
        assert_eq!(
            s.types.get(name).map(String::as_str),
            Some(kind),
            "TYPE of {name}"
        );
        s.n(name);
    }
    s
}

// ------------------------------------------------------------------------------------------
// pushing images through the registry API

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Uploads `data` as a blob of `repo` (monolithic: POST, then PUT with the digest); returns
/// its digest.
#[track_caller]
pub fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = digest_of(data);
    let r = http_request(
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/", reg.url()),
        &[("Content-Length", "0")],
        Some(b""),
    );
    assert_eq!(r.status, 202, "start an upload: {}", r.text());
    let location = r.header("location").expect("upload Location").to_string();
    let location = if location.starts_with('/') {
        format!("{}{location}", reg.url())
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = http_request(
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    );
    assert_eq!(r.status, 201, "finish the upload of {digest}: {}", r.text());
    digest
}

/// An image pushed with [`push_image`].
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `library/x:tag`
    pub repo_ref: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config_digest: String,
    /// `(digest, bytes)` of each layer.
    pub layers: Vec<(String, Vec<u8>)>,
}

impl Pushed {
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|(d, _)| d.clone()).collect()
    }
    /// Every blob and manifest digest of the image.
    pub fn all_digests(&self) -> Vec<String> {
        let mut v = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        v.extend(self.layer_digests());
        v
    }
}

/// An OCI image config naming `layers` (uncompressed tars, so diff ids are their digests).
pub fn image_config(label: &str, layer_digests: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"acr.test": label}},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }))
    .expect("config json")
}

/// The OCI manifest of `config` and `layers`.
pub fn image_manifest(config: &[u8], layers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, b)| serde_json::json!({"mediaType": OCI_LAYER_TAR, "digest": d, "size": b.len()}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": config.len()},
        "layers": layers,
    }))
    .expect("manifest json")
}

/// Pushes an OCI image `repo:tag` with `layers` (raw bytes, uploaded as they are) and a
/// config of its own, through the registry's HTTP API.
#[track_caller]
pub fn push_image(reg: &Registry, repo: &str, tag: &str, layers: Vec<Vec<u8>>) -> Pushed {
    let layers: Vec<(String, Vec<u8>)> = layers
        .into_iter()
        .map(|b| (push_blob(reg, repo, &b), b))
        .collect();
    let digests: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let config = image_config(&format!("{repo}:{tag}"), &digests);
    let config_digest = push_blob(reg, repo, &config);
    let manifest = image_manifest(&config, &layers);
    let r = http_request(
        "PUT",
        &format!("{}/v2/{repo}/manifests/{tag}", reg.url()),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&manifest),
    );
    assert_eq!(
        r.status,
        201,
        "push the manifest of {repo}:{tag}: {}",
        r.text()
    );
    Pushed {
        repo_ref: format!("{repo}:{tag}"),
        manifest_digest: digest_of(&manifest),
        manifest,
        config_digest,
        layers,
    }
}

// ------------------------------------------------------------------------------------------
// pipelines with a store

/// A pull-through pipeline in front of `upstream` with a store: `settings` are `.cache ...`,
/// `.ttl ...`, `.max-size ...` lines (without the leading `: `).
pub fn store_pipeline(upstream: &str, settings: &[&str]) -> String {
    pipeline(upstream, &[], settings, &routes(""))
}

/// `: .cache DIR` for a directory.
pub fn cache_setting(dir: &Path) -> String {
    format!(".cache {}", dir.display())
}

// ------------------------------------------------------------------------------------------
// a store's directory

/// The committed blobs of the store at `root`: `(sha256 hex, size)`.
pub fn stored_blobs(root: &Path) -> Vec<(String, u64)> {
    files_under(&root.join("blobs/sha256"))
        .into_iter()
        .map(|(p, size)| {
            (
                p.file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned(),
                size,
            )
        })
        .collect()
}

/// Whether the store at `root` holds a committed blob `digest` (`sha256:...`).
pub fn has_blob(root: &Path, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    stored_blobs(root).iter().any(|(h, _)| h == hex)
}

/// Files in the store's temporary directory.
pub fn temp_files(root: &Path) -> Vec<(PathBuf, u64)> {
    files_under(&root.join("tmp"))
}

/// Every regular file under `dir` with its size (none when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out
}

/// The bytes of every file under `dir`.
pub fn bytes_under(dir: &Path) -> u64 {
    files_under(dir).iter().map(|(_, n)| n).sum()
}

/// sha256 of a file, streamed.
pub fn file_sha256(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash file");
    hex(&h.finalize())
}

/// Every committed blob and manifest of the store at `root` hashes to its name; returns how
/// many objects were checked.
#[track_caller]
pub fn assert_store_verifies(root: &Path) -> usize {
    let mut n = 0;
    for dir in ["blobs/sha256", "manifests/sha256"] {
        for (p, _) in files_under(&root.join(dir)) {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            if name.ends_with(".type") {
                continue;
            }
            assert_eq!(
                file_sha256(&p),
                name,
                "{} does not hash to its name",
                p.display()
            );
            n += 1;
        }
    }
    n
}

/// Every blob in a `skopeo copy ... dir:DIR` hashes to its name, and the manifest is
/// `manifest_digest`.
#[track_caller]
pub fn assert_dir_copy(dir: &Path, manifest_digest: &str) {
    let manifest = std::fs::read(dir.join("manifest.json")).expect("manifest.json");
    assert_eq!(digest_of(&manifest), manifest_digest, "{}", dir.display());
    let mut blobs = 0;
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            assert_eq!(file_sha256(&e.path()), name, "{}", e.path().display());
            blobs += 1;
        }
    }
    assert!(blobs >= 2, "only {blobs} blobs in {}", dir.display());
}

// ------------------------------------------------------------------------------------------
// clients

/// `skopeo copy --all docker://HOST/REPO_REF dir:DEST` (plain HTTP, no retries): `dir:`
/// keeps every manifest byte for byte.
pub fn skopeo_to_dir(host: &str, repo_ref: &str, dest: &Path) -> CmdOutput {
    let src = format!("docker://{host}/{repo_ref}");
    let dest = format!("dir:{}", dest.display());
    skopeo(&["copy", "--all", "--retry-times", "0", &src, &dest])
}

/// What a streamed GET got: the status, the bytes read, and how the body ended.
pub struct Streamed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub len: u64,
    /// `sha256:...` of what arrived; only when no `expected` bytes were given (hashing is slow
    /// in a debug build; comparing with bytes of a known digest proves the same).
    pub sha256: Option<String>,
    /// `Err` when the transfer broke before the end.
    pub end: Result<(), String>,
    /// Whether every byte read equals `expected` at its offset (when one was given).
    pub matches: bool,
}

/// GETs `url` and reads the body as it streams, comparing it with `expected` (or hashing it
/// when there is none), never holding it whole.
pub fn stream_get(url: &str, headers: &[(&str, &str)], expected: Option<&[u8]>) -> Streamed {
    let resp = match get_streaming(url, headers) {
        Ok(r) => r,
        Err(e) => {
            return Streamed {
                status: 0,
                headers: vec![],
                len: 0,
                sha256: None,
                end: Err(e.to_string()),
                matches: false,
            }
        }
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut reader = resp.into_reader();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut len = 0u64;
    let mut matches = true;
    let end = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(k) => {
                match expected {
                    Some(exp) => {
                        let at = len as usize;
                        matches &= exp.get(at..at + k) == Some(&buf[..k]);
                    }
                    None => h.update(&buf[..k]),
                }
                len += k as u64;
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    if let Some(exp) = expected {
        matches &= len == exp.len() as u64;
    }
    Streamed {
        status,
        headers,
        len,
        sha256: expected
            .is_none()
            .then(|| format!("sha256:{}", hex(&h.finalize()))),
        end,
        matches,
    }
}

/// SIGKILL to one of our own children, by pid.
pub fn kill9(pid: u32) {
    // SAFETY: kill(2) of a child this test started.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

/// GETs `url` (10 s to connect, 120 s per read) for a body read as it streams; an error status
/// is a response too; the error says why there was none.
pub fn get_streaming(url: &str, headers: &[(&str, &str)]) -> Result<ureq::Response, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(120))
        .build();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Ok(r),
        Err(e) => Err(e.to_string()),
    }
}
