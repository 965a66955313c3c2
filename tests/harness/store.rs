//! What the content-store tests (`tests/store/`) share: `/metrics` fetched and parsed as
//! Prometheus text, images pushed to a registry through its HTTP API (fast, any layer sizes),
//! a look at a store's directory, and runmd pipelines with a store.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::harness::*;

mod prometheus;
mod push;

// Each area binary uses a part of these.
#[allow(unused_imports)]
pub use {prometheus::*, push::*};

// ------------------------------------------------------------------------------------------
// pipelines with a store

/// A pull-through pipeline in front of `upstream` with a store: `settings` are `.cache ...`,
/// `.ttl ...`, `.max-size ...` lines (without the leading `: `).
pub fn store_pipeline(upstream: &str, settings: &[&str]) -> String {
    pipeline(upstream, &[], settings, &routes(""))
}

/// A fake upstream that answers `/v2/` and serves one blob, `data`, at
/// `/v2/REPO/blobs/DIGEST` with the reply `reply` makes of it (404 for anything else); the
/// upstream and that blob path.
pub fn one_blob_upstream(
    repo: &str,
    data: std::sync::Arc<Vec<u8>>,
    reply: impl Fn(&[u8]) -> FakeReply + Send + Sync + 'static,
) -> (FakeUpstream, String) {
    let blob_path = format!("/v2/{repo}/blobs/{}", digest_of(&data));
    let path = blob_path.clone();
    let fake = FakeUpstream::start(move |r: &FakeRequest| {
        if r.path == "/v2/" {
            return FakeReply::new(200, &[("Content-Type", "application/json")], "{}");
        }
        if r.path == path {
            return reply(&data);
        }
        FakeReply::new(404, &[], "")
    });
    (fake, blob_path)
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

/// `clients` GETs of `url` started at the same moment (a barrier), each read as it streams
/// and compared with `expected`; what each got, in order.
pub fn simultaneous_gets(
    url: &str,
    expected: &std::sync::Arc<Vec<u8>>,
    clients: usize,
) -> Vec<Streamed> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, data, barrier) = (url.to_string(), expected.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                stream_get(&url, &[], Some(&data))
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
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
