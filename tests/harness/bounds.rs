//! What `tests/security/security_bounds.rs` needs besides the shared harness: an upstream that serves
//! blobs with or without a length (chunked), and raw HTTP/2 frames.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

// ------------------------------------------------------------------------------------------
// an upstream of blobs

/// How a [`BlobUpstream`] sends a blob's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// With `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, no length announced.
    Chunked,
}

/// The blobs a [`BlobUpstream`] serves, by digest.
type BlobTable = HashMap<String, (Vec<u8>, Framing)>;

/// A raw HTTP/1.1 upstream on 127.0.0.1 that answers `GET|HEAD /v2/<repo>/blobs/<digest>`
/// with the blobs it was given (one request per connection), `/v2/` with 200, and anything
/// else with 404. It counts the blob requests.
pub struct BlobUpstream {
    addr: SocketAddr,
    blobs: Arc<Mutex<BlobTable>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl BlobUpstream {
    pub fn start() -> BlobUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the blob upstream");
        let addr = listener.local_addr().expect("addr");
        let blobs: Arc<Mutex<BlobTable>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (b, r) = (blobs.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (b, r) = (b.clone(), r.clone());
                std::thread::spawn(move || serve_blob(stream, &b, &r));
            }
        });
        BlobUpstream {
            addr,
            blobs,
            requests,
        }
    }

    /// Serves `data` as its digest, sent with `framing`; returns the digest.
    pub fn add(&self, data: Vec<u8>, framing: Framing) -> String {
        let digest = digest_of(&data);
        self.blobs
            .lock()
            .expect("blobs")
            .insert(digest.clone(), (data, framing));
        digest
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `METHOD PATH` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve_blob(mut stream: TcpStream, blobs: &Mutex<BlobTable>, requests: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&mut stream) else {
        return;
    };
    if let Ok(mut r) = requests.lock() {
        r.push(format!("{} {}", req.method, req.path));
    }
    let found = req
        .path
        .split_once("/blobs/")
        .and_then(|(_, d)| blobs.lock().ok()?.get(d).cloned());
    let head_only = req.method == "HEAD";
    let _ = match (req.path.as_str(), found) {
        ("/v2/", _) => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        }
        (_, Some((data, framing))) => {
            let digest = digest_of(&data);
            let mut head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nDocker-Content-Digest: {digest}\r\n"
            );
            match framing {
                Framing::Length => head += &format!("Content-Length: {}\r\n\r\n", data.len()),
                Framing::Chunked => head += "Transfer-Encoding: chunked\r\n\r\n",
            }
            let mut sent = stream.write_all(head.as_bytes());
            if !head_only {
                for piece in data.chunks(64 << 10) {
                    if sent.is_err() {
                        break;
                    }
                    sent = match framing {
                        Framing::Length => stream.write_all(piece),
                        Framing::Chunked => stream
                            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                            .and_then(|_| stream.write_all(piece))
                            .and_then(|_| stream.write_all(b"\r\n")),
                    };
                }
                if framing == Framing::Chunked && sent.is_ok() {
                    sent = stream.write_all(b"0\r\n\r\n");
                }
            }
            sent
        }
        _ => {
            let body = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"not here"}]}"#;
            stream.write_all(
                format!(
                    "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        }
    };
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut rest = [0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    while matches!(stream.read(&mut rest), Ok(n) if n > 0) {}
}

// ------------------------------------------------------------------------------------------
// HTTP/2 frames

/// The client connection preface and an empty SETTINGS frame: an h2c (prior knowledge)
/// connection that then sends nothing.
pub const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The frame types (`type` byte) in `bytes`, read as a sequence of HTTP/2 frames.
pub fn h2_frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        out.push(bytes[at + 3]);
        at += 9 + len;
    }
    out
}

/// HTTP/2's GOAWAY frame type.
pub const H2_GOAWAY: u8 = 7;

/// Reads `stream` until the peer closes it (`Ok(bytes)`) or `limit` passes (`Err(bytes)`).
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let deadline = std::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(out);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(out)
            }
            // A reset is a close too.
            Err(_) => return Ok(out),
        }
    }
}
