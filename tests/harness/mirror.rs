//! What the mirror tests (`tests/mirror_*.rs`) share: a running `acr mirror start` over a
//! runmd file written for the test, the pipelines they use, raw TCP requests (for paths an
//! HTTP client would normalise), acr's request log and its memory use.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::harness::*;

/// Where the runmd text names acr's own address; replaced by `127.0.0.1:PORT` at start.
pub const ACR: &str = "{ACR}";

/// Generous, for a shared 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start acr.
#[derive(Default, Clone)]
pub struct AcrOptions {
    /// Extra environment for acr's process (credential sources, PATH).
    pub env: Vec<(String, String)>,
    /// `mirror start --hosts-dir DIR`.
    pub hosts_dir: Option<PathBuf>,
    /// Files written beside the runmd before start: (relative path, content).
    pub files: Vec<(String, String)>,
}

/// `acr --runmd-path DIR/mirror.runmd mirror start` on a free 127.0.0.1 port; killed on drop.
pub struct Acr {
    proc: Proc,
    port: u16,
    dir: TempDir,
    runmd: PathBuf,
}

impl Acr {
    pub fn start(runmd: &str) -> Acr {
        Acr::start_with(runmd, AcrOptions::default())
    }

    /// Writes `runmd` (with [`ACR`] replaced by the chosen address) and starts acr over it.
    /// A port another test took meanwhile is retried with a new one.
    pub fn start_with(runmd: &str, opts: AcrOptions) -> Acr {
        let dir = temp_dir("acr-mirror-");
        for (name, content) in &opts.files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&p, content).expect("write file beside the runmd");
        }
        let path = dir.path().join("mirror.runmd");
        for attempt in 0..10 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            std::fs::write(&path, runmd.replace(ACR, &addr)).expect("write runmd");
            let log = dir.path().join(format!("acr-{attempt}.log"));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
            cmd.arg("--runmd-path")
                .arg(&path)
                .args(["mirror", "start"])
                .current_dir(dir.path());
            if let Some(h) = &opts.hosts_dir {
                cmd.arg("--hosts-dir").arg(h);
            }
            // No credential of the machine or of the test runner reaches acr unless a test
            // gives it on purpose.
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy().into_owned();
                if k.starts_with("ACR_")
                    || k.starts_with("DOCKER_")
                    || k.starts_with("REGISTRY_")
                    || k == "XDG_RUNTIME_DIR"
                {
                    cmd.env_remove(k);
                }
            }
            cmd.env("HOME", dir.path())
                .env(
                    "RUST_LOG",
                    std::env::var("ACR_TEST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .env("NO_COLOR", "1");
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let proc = Proc::spawn("acr", cmd, &log);
            let mut up = false;
            let ready = wait_until(START_TIMEOUT, || {
                up = proc.log().contains(&format!("Listening on {addr}"));
                up || !proc.is_running()
            });
            if ready && up {
                let acr = Acr {
                    proc,
                    port,
                    dir,
                    runmd: path,
                };
                let r = http_request("GET", &format!("{}/v2/", acr.url()), &[], None);
                assert_eq!(r.status, 200, "acr does not answer /v2/: {}", acr.log());
                return acr;
            }
            let text = proc.log();
            if text.contains("ddress already in use") {
                continue;
            }
            panic!(
                "acr did not start (attempt {attempt}, {}):\n{text}",
                if ready { "exited" } else { "timed out" }
            );
        }
        panic!("acr: no free port after 10 attempts");
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }
    /// The directory of the runmd file (acr's world directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn runmd(&self) -> &Path {
        &self.runmd
    }
    /// Where `.mirror` writes hosts.toml without `--hosts-dir`.
    pub fn default_hosts_dir(&self) -> PathBuf {
        self.dir.path().join(".work/etc/containerd/certs.d")
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// acr's one-line-per-request log lines.
    pub fn request_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" method=") && l.contains(" status="))
            .map(str::to_string)
            .collect()
    }
    /// Request lines that contain every one of `parts`.
    pub fn requests_with(&self, parts: &[&str]) -> Vec<String> {
        self.request_lines()
            .into_iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .collect()
    }
    /// Waits (up to 20 s: a streamed body is logged when its last byte has left, which may
    /// be just after the client has it) until at least `n` request lines contain every one
    /// of `parts`, and returns them. Lines of broken transfers (`failed=`) count only when a
    /// part asks for them.
    pub fn wait_requests(&self, parts: &[&str], n: usize) -> Vec<String> {
        let want_failed = parts.iter().any(|p| p.contains("failed="));
        let mut lines = Vec::new();
        wait_until(Duration::from_secs(20), || {
            lines = self
                .requests_with(parts)
                .into_iter()
                .filter(|l| want_failed || !l.contains(" failed="))
                .collect();
            lines.len() >= n
        });
        lines
    }
    /// Peak resident set size of acr (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM")
    }
    /// Current resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS")
    }

    /// Panics (with acr's log) unless acr still runs and serves: `/v2/` and, when given, a
    /// manifest `repo:reference` of its default upstream.
    #[track_caller]
    pub fn assert_serves(&self, manifest: Option<(&str, &str)>) {
        assert!(self.is_running(), "acr died:\n{}", self.log());
        let r = try_http_request("GET", &format!("{}/v2/", self.url()), &[], None)
            .unwrap_or_else(|e| panic!("acr stopped serving: {e}\n{}", self.log()));
        assert_eq!(r.status, 200, "GET /v2/ after the hostile request");
        if let Some((repo, reference)) = manifest {
            let r = http_request(
                "GET",
                &format!("{}/v2/{repo}/manifests/{reference}", self.url()),
                &[("Accept", ACCEPT_MANIFESTS)],
                None,
            );
            assert_eq!(
                r.status,
                200,
                "manifest after the hostile request: {}\n{}",
                r.text(),
                self.log()
            );
        }
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The routes of a pull-through mirror; `login` is the input of every `.login` (a credential
/// file name, or empty).
pub fn routes(login: &str) -> String {
    let login = if login.is_empty() {
        ":   .login\n".to_string()
    } else {
        format!(":   .login {login}\n")
    };
    let auth = format!("{login}:   .authn\n");
    format!(
        ": .manifests head, get\n{auth}:   .resolve\n\
         : .blobs head, get\n{auth}:   .pull\n\
         : .tags get\n{auth}:   .resolve\n\
         : .referrers get\n{auth}:   .resolve\n"
    )
}

/// A pipeline: `.mirror MIRROR` with its modifier lines, `+ .proxy {ACR}` with `settings`
/// lines (`: .allow ...`) and `routes` (see [`routes`]). Without a `.cache` setting it has
/// `: .cache off`.
pub fn pipeline(
    mirror: &str,
    mirror_modifiers: &[&str],
    settings: &[&str],
    routes: &str,
) -> String {
    let mut s = String::from(
        "# acr test pipeline\n\nProse outside fences is not runmd: + .nothing : .here\n\n\
         ``` mirror\n+ .engine\n: .event start\n```\n\n``` start mirror\n+ .runtime\n",
    );
    s += &format!(": .mirror {mirror}\n");
    let mut has_host = false;
    for m in mirror_modifiers {
        has_host |= m.trim_start().starts_with(".host");
        s += &format!(": {m}\n");
    }
    if !has_host {
        s += &format!(": .host {ACR}, resolve, pull\n");
    }
    s += &format!("+ .proxy {ACR}\n");
    // These tests are about the chain in front of the upstream: no store unless one is asked
    // for (the store has its own tests in tests/store_*.rs).
    if !settings
        .iter()
        .any(|l| l.trim_start().starts_with(".cache"))
    {
        s += ": .cache off\n";
    }
    for line in settings {
        s += &format!(": {line}\n");
    }
    s += routes;
    s += "```\n";
    s
}

/// The plain pull-through pipeline in front of `upstream` (a URL).
pub fn pull_through(upstream: &str) -> String {
    pipeline(upstream, &[], &[], &routes(""))
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

/// The OCI error code in a response body (`errors[0].code`).
pub fn oci_code(body: &str) -> String {
    let json_start = body.find('{').unwrap_or(0);
    serde_json::from_str::<serde_json::Value>(&body[json_start..])
        .ok()
        .and_then(|j| j["errors"][0]["code"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("not an OCI error body: {body}"))
}

/// The OCI error message in a response body (`errors[0].message`).
pub fn oci_message(body: &str) -> String {
    let json_start = body.find('{').unwrap_or(0);
    serde_json::from_str::<serde_json::Value>(&body[json_start..])
        .ok()
        .and_then(|j| j["errors"][0]["message"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("not an OCI error body: {body}"))
}

/// The manifest digest recorded for `tag` in an OCI layout's index.json.
pub fn layout_digest(layout: &Path, tag: &str) -> String {
    let p = layout.join("index.json");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).expect("index.json")).expect("index json");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|d| d["digest"].as_str())
        .unwrap_or_else(|| panic!("no {tag} in {}", p.display()))
        .to_string()
}

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

/// A request a [`FakeUpstream`] received.
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

type Handler = dyn Fn(&FakeRequest) -> FakeReply + Send + Sync;

/// A tiny hostile upstream: a std TcpListener on 127.0.0.1 whose thread answers every
/// request with `handler(request)` and closes the connection. The requests it saw are kept.
/// Its thread blocks in accept until the test process ends.
pub struct FakeUpstream {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<FakeRequest>>>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeUpstream {
    pub fn start(
        handler: impl Fn(&FakeRequest) -> FakeReply + Send + Sync + 'static,
    ) -> FakeUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler: std::sync::Arc<Handler> = std::sync::Arc::new(handler);
        let seen2 = seen.clone();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = handler.clone();
                let seen = seen2.clone();
                std::thread::spawn(move || serve_fake(stream, &*handler, &seen));
            }
        });
        FakeUpstream {
            addr,
            seen,
            connections,
        }
    }
    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Connections accepted so far (also those that never sent a whole request, e.g. TLS).
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
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
}

fn serve_fake(mut stream: TcpStream, handler: &Handler, seen: &std::sync::Mutex<Vec<FakeRequest>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
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
    let _ = stream.write_all(out.as_bytes());
    if req.method != "HEAD" {
        let end = reply
            .truncate_to
            .unwrap_or(reply.body.len())
            .min(reply.body.len());
        let mut sent = 0;
        for part in reply.body[..end].chunks(16 << 10) {
            if stream.write_all(part).is_err() {
                return;
            }
            sent += part.len();
            if let Some((at, pause)) = reply.pause {
                if sent >= at && sent - part.len() < at {
                    let _ = stream.flush();
                    std::thread::sleep(pause);
                }
            }
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain what the client still sends so the close is not a reset.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
}
