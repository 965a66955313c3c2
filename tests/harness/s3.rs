//! A real S3 server in the test process: s3s-fs on 127.0.0.1 with SigV4 auth, storing in a
//! temporary directory (a top-level directory is a bucket), with a log of the requests it
//! served. It stops with its runtime on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;

#[path = "s3_serve.rs"]
pub mod s3_serve;

pub const S3_ACCESS_KEY: &str = "acr-test";
pub const S3_SECRET_KEY: &str = "acr-test-secret";
pub const S3_BUCKET: &str = "cache";
pub const S3_PREFIX: &str = "acr";

/// s3s-fs on 127.0.0.1:<free port>; stops with its runtime on drop.
pub struct S3 {
    addr: SocketAddr,
    root: tempfile::TempDir,
    bucket: String,
    /// `METHOD /path?query` of every request.
    log: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl S3 {
    /// The bucket [`S3_BUCKET`] with the keys [`S3_ACCESS_KEY`] / [`S3_SECRET_KEY`].
    pub fn start() -> S3 {
        S3::start_with(S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY)
    }

    pub fn start_with(bucket: &str, access_key: &str, secret_key: &str) -> S3 {
        let root = temp_dir("acr-s3-");
        std::fs::create_dir(root.path().join(bucket)).expect("create the bucket");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let log = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind s3");
        let addr = listener.local_addr().expect("s3 addr");
        let server = s3_serve::serve(listener, root.path(), access_key, secret_key, log.clone())
            .expect("s3s-fs");
        runtime.spawn(server);
        S3 {
            addr,
            root,
            bucket: bucket.to_string(),
            log,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where s3s-fs keeps `key` (under the bucket) on disk.
    pub fn file(&self, key: &str) -> PathBuf {
        self.root.path().join(&self.bucket).join(key)
    }

    /// Whether an object whose path contains `part` exists.
    pub fn holds(&self, part: &str) -> bool {
        fn walk(dir: &Path, part: &str) -> bool {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, part)
                    } else {
                        p.to_string_lossy().contains(part)
                    }
                })
        }
        walk(self.root.path(), part)
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `METHOD /path?query` of every request so far (the log [`SharedStore::requests`] reads).
    pub(super) fn logged(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
