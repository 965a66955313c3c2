//! What `tests/security/security_upstream.rs` needs besides the shared harness: a hostile upstream
//! that listens on any loopback address (127.0.0.2 is "another host" than 127.0.0.1), in
//! plain http or in https with a certificate from a test CA, records every request (headers
//! and body: what a credential thief would keep), and answers what its handler says, or
//! nothing at all for as long as the handler sleeps.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use crate::harness::mirror::{FakeReply, FakeRequest};
use crate::harness::production::Pki;

type Handler = dyn Fn(&FakeRequest) -> FakeReply + Send + Sync;

/// A recording upstream; its threads end with the test process.
pub struct Hostile {
    addr: SocketAddr,
    tls: bool,
    seen: Arc<Mutex<Vec<FakeRequest>>>,
    connections: Arc<AtomicUsize>,
}

/// A CA acr is told to trust (`SSL_CERT_FILE`) and a server certificate for 127.0.0.1.
pub struct TestTls {
    pki: Pki,
    config: Arc<rustls::ServerConfig>,
}

impl TestTls {
    pub fn new() -> TestTls {
        let pki = Pki::new("acr-test-hostile-ca");
        let (cert, key) = pki.server("hostile", "127.0.0.1");
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .expect("read the server certificate")
            .map(|c| c.expect("PEM certificate"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(&key).expect("read the server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        TestTls {
            pki,
            config: Arc::new(config),
        }
    }

    /// The CA certificate: acr's `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        self.pki.ca_cert()
    }
}

impl Hostile {
    /// Plain http on `ip` (a loopback address), a free port.
    pub fn start(
        ip: &str,
        handler: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
    ) -> Hostile {
        Hostile::start_with(ip, None, Arc::new(handler))
    }

    /// https on 127.0.0.1 with `tls`'s certificate.
    pub fn start_tls(
        tls: &TestTls,
        handler: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
    ) -> Hostile {
        Hostile::start_with("127.0.0.1", Some(tls.config.clone()), Arc::new(handler))
    }

    fn start_with(
        ip: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Arc<Handler>,
    ) -> Hostile {
        let listener = TcpListener::bind((ip, 0)).expect("bind the hostile upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, counter, is_tls) = (seen.clone(), connections.clone(), tls.is_some());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, tls) = (handler.clone(), seen2.clone(), tls.clone());
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    match tls {
                        None => serve(stream, &*handler, &seen),
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            serve(rustls::StreamOwned::new(conn, stream), &*handler, &seen)
                        }
                    }
                });
            }
        });
        Hostile {
            addr,
            tls: is_tls,
            seen,
            connections,
        }
    }

    /// `IP:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
    /// Connections accepted so far (also those that never sent a whole request).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    pub fn received(&self) -> Vec<FakeRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
    /// `METHOD PATH` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
    /// Every request's headers and body as text, for "did a secret arrive here".
    pub fn everything_received(&self) -> String {
        self.received()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:?} {}",
                    r.method,
                    r.path,
                    r.headers,
                    String::from_utf8_lossy(&r.body)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn read_request(stream: &mut impl Read) -> Option<FakeRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let mut req = FakeRequest {
        method: first.next().unwrap_or("").to_string(),
        path: first.next().unwrap_or("").to_string(),
        ..FakeRequest::default()
    };
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            req.headers
                .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    req.body = buf[head_end..].to_vec();
    while req.body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(req)
}

/// One request per connection: read it, record it, answer `handler(request)` (which may
/// sleep first: a silent upstream), honouring the reply's `pause` (a body that stalls).
fn serve(mut stream: impl Read + Write, handler: &Handler, seen: &Mutex<Vec<FakeRequest>>) {
    let Some(req) = read_request(&mut stream) else {
        return;
    };
    if let Ok(mut s) = seen.lock() {
        s.push(req.clone());
    }
    let reply = handler(&req);
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    let mut has_length = false;
    for (k, v) in &reply.headers {
        has_length |= k.eq_ignore_ascii_case("content-length");
        out += &format!("{k}: {v}\r\n");
    }
    if !has_length {
        out += &format!("Content-Length: {}\r\n", reply.body.len());
    }
    out += "\r\n";
    if stream.write_all(out.as_bytes()).is_err() {
        return;
    }
    let _ = stream.flush();
    if req.method != "HEAD" {
        let mut sent = 0;
        for part in reply.body.chunks(16 << 10) {
            let part = match reply.pause {
                Some((at, _)) if sent < at && sent + part.len() > at => &part[..at - sent],
                _ => part,
            };
            if stream.write_all(part).is_err() {
                return;
            }
            sent += part.len();
            let _ = stream.flush();
            if let Some((at, pause)) = reply.pause {
                if sent == at {
                    thread::sleep(pause);
                    return;
                }
            }
        }
    }
    let _ = stream.flush();
    // Let the client read to the end before the connection goes.
    thread::sleep(Duration::from_millis(50));
}

/// `PATH` without directories that hold an `az` (so `.login-acr` uses the environment).
pub fn path_without_az() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|d| !d.join("az").exists())
        .collect();
    std::env::join_paths(dirs)
        .expect("join PATH")
        .to_string_lossy()
        .into_owned()
}

/// `{"errors":[...]}` of an OCI error reply, as a test would build one.
pub fn oci_error(code: &str, message: &str) -> String {
    serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]}).to_string()
}

/// Whether `TcpStream::connect(addr)` is refused (a port nobody listens on).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let _ = TcpStream::connect(("127.0.0.1", port));
    port
}

/// A small OCI manifest and its digest, for fake upstreams that serve one.
pub fn tiny_manifest() -> (Vec<u8>, String) {
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", "0".repeat(64)),
            "size": 2
        },
        "layers": []
    })
    .to_string()
    .into_bytes();
    let digest = crate::harness::digest_of(&body);
    (body, digest)
}

/// The reply of a registry serving [`tiny_manifest`].
pub fn manifest_reply() -> FakeReply {
    let (body, digest) = tiny_manifest();
    FakeReply::new(
        200,
        &[
            ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            ("Docker-Content-Digest", &digest),
        ],
        body,
    )
}
