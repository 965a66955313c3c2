//! Fuzzes acr's HTTP entry: whatever bytes a client sends reach the real server (hyper, then
//! `ProxyHost`: routes, client auth, `/token`, `/container-token`, `/validate-creds`, `/auth`,
//! the operator endpoints) over an in-memory connection, with a pipeline that has users,
//! container tokens and a store, and an upstream that refuses connections.
//!
//! Input: the first byte chooses the shape, the rest is the payload:
//!   0: the payload is the raw request (request line, headers, body);
//!   1, 2, 3: the payload is the body of `POST /container-token`, `/validate-creds` or
//!      `/token` (a JSON or form body), sent with alice's credentials on odd inputs;
//!   4: the payload is the path and query of a GET with alice's credentials.
//!
//! Properties: never a panic; a response (if any) starts with an HTTP/1.x status line (or is
//! HTTP/2 frames, for a request with the h2 preface); an
//! error answered as JSON is JSON; no answer carries the users file's hash or the token secret.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use acr::server::ProxyHost;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE_HASH: &str = "$2y$04$vse/ocq.bALeCoSCpTAd3.5Q6kfElnPt5EzmCxQ7n/jebtPlS8WzC";
const SECRET: &str = "fuzz-token-secret-0123456789abcdef";
/// `alice:pw` in Basic.
const ALICE_BASIC: &str = "Basic YWxpY2U6cHc=";

struct World {
    rt: tokio::runtime::Runtime,
    host: Arc<ProxyHost>,
    key: (String, String),
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir: PathBuf = std::env::temp_dir().join(format!("acr-fuzz-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz dir");
        std::fs::write(dir.join("users.htpasswd"), format!("alice:{ALICE_HASH}\n")).expect("users");
        std::fs::write(dir.join("secret"), SECRET).expect("secret");
        let runmd = "``` start mirror\n+ .runtime\n: .mirror http://127.0.0.1:1\n\
                     : .host 127.0.0.1:0, resolve, pull\n+ .proxy 127.0.0.1:0\n\
                     : .users users.htpasswd\n: .token-secret secret\n\
                     : .allow-pull alice library/*\n: .container-tokens 1h\n: .cache store\n\
                     : .manifests head, get\n:   .login\n:   .authn\n:   .resolve\n\
                     : .blobs head, get\n:   .login\n:   .authn\n:   .pull\n\
                     : .tags get\n:   .login\n:   .authn\n:   .resolve\n\
                     : .referrers get\n:   .login\n:   .authn\n:   .resolve\n```\n";
        let path = dir.join("mirror.runmd");
        std::fs::write(&path, runmd).expect("runmd");
        let pipeline = acr::world::compile(&path, runmd).expect("the fuzz pipeline compiles");
        let key = pipeline.proxies()[0].key.clone();
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(pipeline));
        std::mem::forget(_tx);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let shared = rt.block_on(async { acr_plugins::registry::Shared::new() }).expect("shared");
        let host = ProxyHost::new(rx, shared, dir.clone(), dir);
        World { rt, host, key }
    })
}

fn request(data: &[u8]) -> Vec<u8> {
    let (shape, payload) = match data.split_first() {
        Some((s, p)) => (*s % 5, p),
        None => (0, data),
    };
    let auth = if data.len() % 2 == 1 {
        format!("Authorization: {ALICE_BASIC}\r\n")
    } else {
        String::new()
    };
    let post = |path: &str, content_type: &str| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: acr\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        r.extend_from_slice(payload);
        r
    };
    match shape {
        1 => post("/container-token", "application/json"),
        2 => post("/validate-creds", "application/json"),
        3 => post("/token", "application/x-www-form-urlencoded"),
        4 => {
            let target: String = String::from_utf8_lossy(payload)
                .chars()
                .filter(|c| !c.is_whitespace() && !c.is_control())
                .collect();
            let target = if target.starts_with('/') { target } else { format!("/{target}") };
            format!("GET {target} HTTP/1.1\r\nHost: acr\r\nAuthorization: {ALICE_BASIC}\r\nConnection: close\r\n\r\n")
                .into_bytes()
        }
        _ => payload.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let bytes = request(data);
    let response = w.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let peer = "127.0.0.1:40000".parse().expect("peer");
        let serving = tokio::spawn(w.host.clone().serve_stream(w.key.clone(), server, peer));
        let _ = client.write_all(&bytes).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out)).await;
        serving.abort();
        out
    });
    // HTTP/2 with prior knowledge answers in frames, not text.
    if response.is_empty() || bytes.starts_with(b"PRI * HTTP/2.0") {
        return;
    }
    assert!(
        (response.starts_with(b"HTTP/1.1 ") || response.starts_with(b"HTTP/1.0 "))
            && response.len() >= 12,
        "not a status line: {:?}",
        String::from_utf8_lossy(&response[..response.len().min(80)])
    );
    let text = String::from_utf8_lossy(&response);
    assert!(!text.contains(ALICE_HASH), "the users file's hash was answered");
    assert!(!text.contains(SECRET), "the token secret was answered");
    // Each response of the stream: an error with a JSON body has a JSON body.
    for part in text.split("HTTP/1.").skip(1) {
        let Some(part) = part.get(2..) else {
            continue;
        };
        let Some((head, body)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let status: u16 = head.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
        let json = head
            .to_ascii_lowercase()
            .contains("content-type: application/json");
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        if status >= 400 && json && !chunked {
            let declared: Option<usize> = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
            });
            if let Some(n) = declared {
                if let Some(b) = body.get(..n) {
                    let v: serde_json::Value = serde_json::from_str(b)
                        .unwrap_or_else(|e| panic!("a {status} with a body that is not JSON ({e}): {b:?}"));
                    assert!(
                        v.get("errors").is_some() || v.get("success").is_some(),
                        "a {status} JSON body in neither the OCI nor the /auth format: {b}"
                    );
                }
            }
        }
    }
});
