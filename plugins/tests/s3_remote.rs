//! The S3 tier of the store (`acr_plugins::store::remote`) against a real S3 server: s3s-fs,
//! started in this process on 127.0.0.1 with SigV4 authentication, storing on disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acr_plugins::store::object::ObjectTier;
use acr_plugins::store::remote::RemoteConfig;
use acr_plugins::store::tier::PutOutcome;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};

const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "testsecret";
const BUCKET: &str = "cache";

/// A running s3s-fs; the server task ends with the test's runtime.
struct S3 {
    addr: SocketAddr,
    root: tempfile::TempDir,
    /// Every request the server received: `METHOD /path?query [if-none-match=..] [copy]`.
    log: Arc<Mutex<Vec<String>>>,
}

impl S3 {
    async fn start() -> S3 {
        let root = tempfile::tempdir().unwrap();
        // A top-level directory is a bucket.
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let requests = log.clone();
        tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let (service, requests) = (service.clone(), requests.clone());
                let logged = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let mut line = format!("{} {}", req.method(), req.uri());
                    if let Some(v) = req.headers().get("if-none-match") {
                        line += &format!(" if-none-match={}", v.to_str().unwrap_or("?"));
                    }
                    if req.headers().contains_key("x-amz-copy-source") {
                        line += " copy";
                    }
                    requests.lock().unwrap().push(line);
                    hyper::service::Service::call(&service, req)
                });
                let conn = http
                    .serve_connection(TokioIo::new(socket), logged)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3 { addr, root, log }
    }

    fn remote(&self, secret: &str) -> ObjectTier {
        let endpoint = format!("http://{}", self.addr);
        let config = RemoteConfig::parse_with("s3://cache/acr/", Some(&endpoint), &|_| None)
            .unwrap()
            .with_credentials(ACCESS_KEY, secret);
        ObjectTier::new(config).unwrap()
    }

    /// The requests logged so far, emptying the log.
    fn requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// Where s3s-fs keeps `key` on disk.
    fn file(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }
}

/// `len` bytes that differ from one offset to the next and between seeds.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn read_all(remote: &ObjectTier, key: &str, range: Option<(u64, u64)>) -> (u64, Vec<u8>) {
    let (total, mut stream) = remote.get_stream(key, range).await.unwrap().unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    (total, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_head_get_round_trip() {
    let s3 = S3::start().await;
    let remote = s3.remote(SECRET_KEY);
    let key = remote.key(&["manifests", "sha256", "aa11"]);
    assert_eq!(key, "acr/manifests/sha256/aa11");
    let body = Bytes::from_static(b"{\"schemaVersion\":2}");

    let put = remote.put_bytes(&key, body.clone(), false).await.unwrap();
    assert_eq!(put, PutOutcome::Created);
    assert_eq!(remote.head(&key).await.unwrap(), Some(body.len() as u64));
    assert_eq!(remote.get_bytes(&key).await.unwrap(), Some(body.clone()));
    assert_eq!(
        read_all(&remote, &key, None).await,
        (body.len() as u64, body.to_vec())
    );
    // It is a real object in the server's bucket, under the prefix.
    assert_eq!(std::fs::read(s3.file(&key)).unwrap(), body);

    // Tag records are overwritten.
    let tag = remote.key(&["tags", "docker.io", "library/alpine", "_tags", "3.20"]);
    for (n, record) in [&b"{\"digest\":\"one\"}"[..], b"{\"digest\":\"two\"}"]
        .iter()
        .enumerate()
    {
        let put = remote
            .put_bytes(&tag, Bytes::copy_from_slice(record), true)
            .await
            .unwrap();
        assert_eq!(put, PutOutcome::Created, "write {n}");
        assert_eq!(remote.get_bytes(&tag).await.unwrap().unwrap(), record);
    }

    remote.delete(&key).await.unwrap();
    assert_eq!(remote.head(&key).await.unwrap(), None);
    remote.delete(&key).await.unwrap(); // deleting what is gone is fine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_get() {
    let s3 = S3::start().await;
    let remote = s3.remote(SECRET_KEY);
    let key = remote.key(&["blobs", "sha256", "range"]);
    let data = pattern(1000, 1);
    remote
        .put_bytes(&key, Bytes::from(data.clone()), false)
        .await
        .unwrap();

    assert_eq!(
        read_all(&remote, &key, Some((100, 200))).await,
        (1000, data[100..200].to_vec())
    );
    assert_eq!(
        read_all(&remote, &key, Some((999, 1000))).await,
        (1000, data[999..].to_vec())
    );
    // An end past the object is cut to its size.
    assert_eq!(
        read_all(&remote, &key, Some((990, 5000))).await,
        (1000, data[990..].to_vec())
    );
    let empty = remote.get_stream(&key, Some((5, 5))).await.err().unwrap();
    assert_eq!(empty.kind(), std::io::ErrorKind::InvalidInput);
    // A start past the end is the server's 416, an error (callers check against the size).
    let past = remote
        .get_stream(&key, Some((1000, 1010)))
        .await
        .err()
        .unwrap();
    eprintln!("start past the end: {past}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_create_never_overwrites() {
    let s3 = S3::start().await;
    let remote = s3.remote(SECRET_KEY);
    let dir = tempfile::tempdir().unwrap();
    let key = remote.key(&["blobs", "sha256", "first"]);
    let first = Bytes::from_static(b"the first writer's bytes");

    assert_eq!(
        remote.put_bytes(&key, first.clone(), false).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s3.requests(),
        [format!("PUT /cache/{key} if-none-match=*")],
        "one conditional PutObject"
    );
    // A second create, by bytes or by file (small: one conditional PutObject), is refused by
    // the server and reported as success; the first object stays.
    let second = Bytes::from_static(b"a second writer's other bytes");
    assert_eq!(
        remote.put_bytes(&key, second.clone(), false).await.unwrap(),
        PutOutcome::AlreadyThere
    );
    let file = write_file(dir.path(), "second", &second);
    assert_eq!(
        remote.put_file_create(&key, &file).await.unwrap(),
        PutOutcome::AlreadyThere
    );
    assert_eq!(
        remote.put_file_if_absent(&key, &file).await.unwrap(),
        PutOutcome::AlreadyThere
    );
    assert_eq!(remote.get_bytes(&key).await.unwrap(), Some(first));

    // A fresh key: the file goes up.
    let other = remote.key(&["blobs", "sha256", "second"]);
    assert_eq!(
        remote.put_file_if_absent(&other, &file).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(remote.get_bytes(&other).await.unwrap(), Some(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_goes_up_in_parts_and_comes_back_identical() {
    let s3 = S3::start().await;
    let remote = s3.remote(SECRET_KEY);
    let dir = tempfile::tempdir().unwrap();
    let size = 20 * 1024 * 1024;
    let data = pattern(size, 2);
    let digest = hex::encode(Sha256::digest(&data));
    let file = write_file(dir.path(), "big", &data);
    drop(data);
    let key = remote.key(&["blobs", "sha256", &digest]);

    let started = Instant::now();
    assert_eq!(
        remote.put_file_if_absent(&key, &file).await.unwrap(),
        PutOutcome::Created
    );
    let up = started.elapsed();
    assert_eq!(remote.head(&key).await.unwrap(), Some(size as u64));
    // It went up in parts (20 MiB in 8 MiB parts) to a temporary key, then was copied into
    // place by a conditional multipart copy, and the temporary object was deleted.
    let log = s3.requests();
    let count = |f: &dyn Fn(&String) -> bool| log.iter().filter(|l| f(l)).count();
    let temp_parts = count(&|l| {
        l.starts_with("PUT /cache/acr/tmp/") && l.contains("partNumber=") && !l.contains("copy")
    });
    assert_eq!(temp_parts, 3, "{log:#?}");
    let copy_parts = count(&|l| {
        l.starts_with(&format!("PUT /cache/{key}?"))
            && l.contains("partNumber=")
            && l.contains("copy")
    });
    assert_eq!(copy_parts, 1, "{log:#?}");
    let completes = count(&|l| {
        l.starts_with(&format!("POST /cache/{key}?uploadId=")) && l.ends_with("if-none-match=*")
    });
    assert_eq!(completes, 1, "{log:#?}");
    assert!(
        !log.iter()
            .any(|l| l.starts_with(&format!("PUT /cache/{key} "))
                || l == &format!("PUT /cache/{key}")),
        "no plain PUT to the final key: {log:#?}"
    );
    let temp = s3.file("acr/tmp");
    let leftovers = std::fs::read_dir(&temp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "the temporary object is removed");

    // Streamed back in many chunks, never as one buffer, byte-identical.
    let started = Instant::now();
    let (total, mut stream) = remote.get_stream(&key, None).await.unwrap().unwrap();
    assert_eq!(total, size as u64);
    let (mut hasher, mut chunks, mut largest, mut got) = (Sha256::new(), 0, 0, 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        hasher.update(&chunk);
        chunks += 1;
        largest = largest.max(chunk.len());
        got += chunk.len();
    }
    let down = started.elapsed();
    assert_eq!(got, size);
    assert_eq!(hex::encode(hasher.finalize()), digest);
    assert!(
        chunks > 10 && largest < size / 4,
        "{chunks} chunks, largest {largest}"
    );
    eprintln!("20 MiB: up {up:?}, down {down:?} in {chunks} chunks (largest {largest} B)");

    // The same digest again, skipping the HEAD that would short-cut it: the conditional copy
    // refuses to replace the object, and what is stored is still the first upload.
    let other = write_file(dir.path(), "other", &pattern(size, 3));
    assert_eq!(
        remote.put_file_create(&key, &other).await.unwrap(),
        PutOutcome::AlreadyThere
    );
    let stored = std::fs::read(s3.file(&key)).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&stored)), digest);
    let leftovers = std::fs::read_dir(&temp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        leftovers, 0,
        "the losing upload's temporary object is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_store_one_object() {
    let s3 = S3::start().await;
    let (a, b) = (s3.remote(SECRET_KEY), s3.remote(SECRET_KEY));
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(12 * 1024 * 1024, 4);
    let digest = hex::encode(Sha256::digest(&data));
    let file = write_file(dir.path(), "blob", &data);
    let key = a.key(&["blobs", "sha256", &digest]);

    let (ra, rb) = tokio::join!(
        a.put_file_if_absent(&key, &file),
        b.put_file_if_absent(&key, &file)
    );
    let outcomes = [ra.unwrap(), rb.unwrap()];
    assert!(outcomes.contains(&PutOutcome::Created), "{outcomes:?}");
    let (_, back) = read_all(&b, &key, None).await;
    assert_eq!(hex::encode(Sha256::digest(&back)), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_an_error() {
    let s3 = S3::start().await;
    let good = s3.remote(SECRET_KEY);
    let key = good.key(&["blobs", "sha256", "guarded"]);
    good.put_bytes(&key, Bytes::from_static(b"x"), false)
        .await
        .unwrap();

    let bad = s3.remote("not-the-secret");
    let started = Instant::now();
    let head = bad.head(&key).await.unwrap_err();
    assert_eq!(head.kind(), std::io::ErrorKind::PermissionDenied, "{head}");
    let get = bad.get_stream(&key, None).await.err().unwrap();
    assert_eq!(get.kind(), std::io::ErrorKind::PermissionDenied, "{get}");
    assert!(bad.get_bytes(&key).await.is_err());
    let put = bad
        .put_bytes(&key, Bytes::from_static(b"y"), true)
        .await
        .unwrap_err();
    assert_eq!(put.kind(), std::io::ErrorKind::PermissionDenied, "{put}");
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "f", b"z");
    assert!(bad.put_file_if_absent(&key, &file).await.is_err());
    assert!(bad.delete(&key).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals are not retried"
    );
    eprintln!("wrong secret: {head}");
    assert_eq!(good.get_bytes(&key).await.unwrap().unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_is_none() {
    let s3 = S3::start().await;
    let remote = s3.remote(SECRET_KEY);
    let key = remote.key(&["blobs", "sha256", "nothing-here"]);
    assert_eq!(remote.head(&key).await.unwrap(), None);
    assert!(remote.get_stream(&key, None).await.unwrap().is_none());
    assert!(remote
        .get_stream(&key, Some((0, 10)))
        .await
        .unwrap()
        .is_none());
    assert_eq!(remote.get_bytes(&key).await.unwrap(), None);
    remote.delete(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_temporaries_only() {
    let s3 = S3::start().await;
    let remote = s3.remote(SECRET_KEY);
    let temp = remote.key(&["tmp", "abc.0123.0"]);
    let kept = remote.key(&["blobs", "sha256", "kept"]);
    for key in [&temp, &kept] {
        remote
            .put_bytes(key, Bytes::from_static(b"x"), false)
            .await
            .unwrap();
    }
    assert_eq!(
        remote.sweep_temp(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    assert_eq!(remote.sweep_temp(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(remote.head(&temp).await.unwrap(), None);
    assert_eq!(remote.head(&kept).await.unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_fails_fast() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = RemoteConfig::parse_with(
        "s3://cache",
        Some(&format!("http://127.0.0.1:{port}")),
        &|_| None,
    )
    .unwrap()
    .with_credentials(ACCESS_KEY, SECRET_KEY);
    let remote = ObjectTier::new(config).unwrap();
    let started = Instant::now();
    assert!(remote.head("k").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
