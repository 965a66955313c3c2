//! A fake upstream for what a real registry cannot be made to do: a raw HTTP/1.1 server on
//! any loopback address (127.0.0.2 is "another host" than 127.0.0.1), in plain http or in
//! https with a certificate from a test CA, that records every request (headers and body:
//! what a credential thief would keep) and answers what its handler says: a wrong body, a
//! body cut short or stalled, or nothing at all for as long as the handler sleeps.

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

use super::production::Pki;
use super::*;

/// What a [`FakeUpstream`] answers: status, headers, body. `truncate_to` cuts the body
/// short (the connection is closed after that many bytes, whatever Content-Length said);
/// `pause` stops for a while after that many bytes.
#[derive(Clone, Debug, Default)]
pub struct FakeReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub truncate_to: Option<usize>,
    pub pause: Option<(usize, Duration)>,
}

impl FakeReply {
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> FakeReply {
        FakeReply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            ..FakeReply::default()
        }
    }
}

type Handler = dyn Fn(&FakeRequest) -> FakeReply + Send + Sync;

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

/// A recording upstream: a thread per connection, one request per connection, answered with
/// `handler(request)`; its threads end with the test process.
pub struct FakeUpstream {
    addr: SocketAddr,
    tls: bool,
    seen: Arc<Mutex<Vec<FakeRequest>>>,
    connections: Arc<AtomicUsize>,
}

impl FakeUpstream {
    /// Plain http on 127.0.0.1, a free port.
    pub fn start(
        handler: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
    ) -> FakeUpstream {
        FakeUpstream::start_with("127.0.0.1", None, Arc::new(handler))
    }

    /// Plain http on `ip` (a loopback address), a free port.
    pub fn start_on(
        ip: &str,
        handler: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
    ) -> FakeUpstream {
        FakeUpstream::start_with(ip, None, Arc::new(handler))
    }

    /// https on 127.0.0.1 with `tls`'s certificate.
    pub fn start_tls(
        tls: &TestTls,
        handler: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
    ) -> FakeUpstream {
        FakeUpstream::start_with("127.0.0.1", Some(tls.config.clone()), Arc::new(handler))
    }

    fn start_with(
        ip: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Arc<Handler>,
    ) -> FakeUpstream {
        let listener = TcpListener::bind((ip, 0)).expect("bind the fake upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, counter, is_tls) = (seen.clone(), connections.clone(), tls.is_some());
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, tls) = (handler.clone(), seen2.clone(), tls.clone());
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    match tls {
                        None => {
                            serve(&mut stream, &*handler, &seen);
                            let _ = stream.shutdown(std::net::Shutdown::Write);
                            // Drain what the client still sends so the close is not a reset.
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                            let mut rest = [0u8; 4096];
                            while matches!(stream.read(&mut rest), Ok(n) if n > 0) {}
                        }
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            serve(
                                &mut rustls::StreamOwned::new(conn, stream),
                                &*handler,
                                &seen,
                            );
                            // Let the client read to the end before the connection goes.
                            thread::sleep(Duration::from_millis(50));
                        }
                    }
                });
            }
        });
        FakeUpstream {
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
    /// Connections accepted so far (also those that never sent a whole request, e.g. TLS).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    /// Every request so far.
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

/// One request: read it, record it, answer `handler(request)` (which may sleep first: a
/// silent upstream), honouring the reply's `truncate_to` (a body cut short) and `pause` (a
/// body that stalls after exactly that many bytes).
fn serve(stream: &mut (impl Read + Write), handler: &Handler, seen: &Mutex<Vec<FakeRequest>>) {
    let Some(req) = read_request(stream) else {
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
        let end = reply
            .truncate_to
            .unwrap_or(reply.body.len())
            .min(reply.body.len());
        let mut sent = 0;
        while sent < end {
            let mut next = (sent + (16 << 10)).min(end);
            if let Some((at, _)) = reply.pause {
                if sent < at && next > at {
                    next = at;
                }
            }
            if stream.write_all(&reply.body[sent..next]).is_err() {
                return;
            }
            sent = next;
            let _ = stream.flush();
            if let Some((at, pause)) = reply.pause {
                if sent == at {
                    thread::sleep(pause);
                }
            }
        }
    }
    let _ = stream.flush();
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

impl Served for FakeUpstream {
    fn base_url(&self) -> String {
        self.url()
    }
}
