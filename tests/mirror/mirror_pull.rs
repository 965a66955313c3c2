//! Pulls through `acr mirror start` with real clients (skopeo, containerd's `ctr`, podman) from
//! a real CNCF distribution upstream, and the API details clients depend on (tag pages and
//! their `Link`, HEAD headers, ranges). Also the streaming proof: acr's peak memory while 8
//! clients pull a 64 MiB blob at once.
//!
//! Every test starts its own upstream, its own acr (own port, own temp dir) and its own
//! clients, so they run in parallel.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;
use sha2::{Digest as _, Sha256};

mod api;
mod clients;
mod routing;

const BIG_MIB: u32 = 64;

/// Every blob in an OCI layout hashes to its name.
fn assert_layout_blobs_verify(layout: &Path) {
    let dir = layout.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("blobs dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut f = std::fs::File::open(e.path()).expect("open blob");
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).expect("hash blob");
        assert_eq!(hex(&h.finalize()), name, "blob {name} in {}", dir.display());
        n += 1;
    }
    assert!(n >= 3, "only {n} blobs in {}", dir.display());
}

/// Status lines of the upstream's access log for blob GETs, with their user agents.
fn upstream_blob_agents(reg: &Registry) -> Vec<String> {
    reg.access_log()
        .into_iter()
        .filter(|e| e.method == "GET" && e.path.contains("/blobs/"))
        .map(|e| e.user_agent)
        .collect()
}

/// Asserts that `HEAD path` (a manifest) is a 200 with `Docker-Content-Digest: digest`.
#[track_caller]
fn assert_head_digest(acr: &Acr, path: &str, digest: &str) {
    let r = acr.fetch_manifest("HEAD", path);
    assert_eq!(r.status, 200, "HEAD {path}: {}", acr.log());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest),
        "HEAD {path}"
    );
}
