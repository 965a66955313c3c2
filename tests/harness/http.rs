//! HTTP for tests: a small blocking client (ureq) for requests whose answer a test inspects
//! whole, and raw HTTP/1.1 (one request reader for the fake upstreams, one raw exchange).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

// ------------------------------------------------------------------------------------------
// HTTP

/// A response; header names are lower-cased.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }
}

/// Response headers in arrival order, names lower-cased.
#[derive(Clone, Debug, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).into_iter().next()
    }
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.0
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Any HTTP method; no redirects followed, 4xx/5xx are returned (not errors). `Err` only for
/// transport problems (connection refused, timeout, bad response).
pub fn try_http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, String> {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(60))
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = resp.status();
    let mut hs = Vec::new();
    for name in resp.headers_names() {
        for v in resp.all(&name) {
            hs.push((name.to_ascii_lowercase(), v.to_string()));
        }
    }
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
    Ok(HttpResponse {
        status,
        headers: Headers(hs),
        body,
    })
}

/// Like [`try_http_request`] but panics on transport errors.
#[track_caller]
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    try_http_request(method, url, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// A request without a body (`GET`, `HEAD`, `DELETE`); panics when it cannot be sent.
#[track_caller]
pub fn fetch(method: &str, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(method, url, headers, None)
}

/// Blocking GET: `(status, headers, body)`.
#[track_caller]
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, Headers, Vec<u8>) {
    let r = http_request("GET", url, headers, None);
    (r.status, r.headers, r.body)
}

// ------------------------------------------------------------------------------------------
// raw HTTP/1.1: one request reader (for the fake upstreams) and one exchange (for requests an
// HTTP client would clean up)

/// A request a fake upstream received.
#[derive(Clone, Debug, Default)]
pub struct FakeRequest {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FakeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head (and body, by Content-Length) from `stream`; `None` when the
/// stream ends (or fails) before the head is whole.
pub fn read_request(stream: &mut impl Read) -> Option<FakeRequest> {
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

/// A raw HTTP/1.1 exchange over a TcpStream: writes `request` as is, reads until the server
/// closes or `timeout` passes. Returns (status, headers+body text) or the I/O error.
pub fn raw_request(
    addr: &str,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                // One response is enough: stop once headers and the declared body are in.
                if let Some(done) = complete_response(&buf) {
                    buf.truncate(done);
                    break;
                }
            }
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {text:?}")))?;
    Ok((status, text))
}

fn complete_response(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some(head_end + len)
}

/// A server the tests talk HTTP to (acr, a registry, a fake upstream), at [`base_url`].
///
/// [`base_url`]: Served::base_url
pub trait Served {
    /// `http://HOST:PORT` (or `https://`).
    fn base_url(&self) -> String;

    /// `METHOD base_url + path` without a body (`path` starts with `/`).
    #[track_caller]
    fn fetch(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        fetch(method, &format!("{}{path}", self.base_url()), headers)
    }

    /// `METHOD base_url + path` accepting every manifest type ([`super::ACCEPT_MANIFESTS`]).
    #[track_caller]
    fn fetch_manifest(&self, method: &str, path: &str) -> HttpResponse {
        self.fetch(method, path, &[("Accept", super::ACCEPT_MANIFESTS)])
    }
}
