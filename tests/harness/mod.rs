//! Real-component test harness for acr's integration tests and benchmarks.
//!
//! Everything here drives real programs installed from Debian by `scripts/deps.sh`:
//! CNCF distribution (`docker-registry`), `skopeo`, `umoci`, `containerd`/`ctr`, `podman`,
//! `htpasswd`, `openssl` and `python3` (for `tests/support/tokenserver.py`).
//!
//! Isolation rules, so that tests can run in parallel (cargo nextest runs every test in its
//! own process, `cargo test` runs them on threads):
//! * every server listens on 127.0.0.1 on a free port and keeps all its files in its own
//!   temporary directory;
//! * every child process is started in its own process group; the owning value kills the
//!   whole group on `Drop` (also while a test unwinds from a panic), and the children get
//!   `PR_SET_PDEATHSIG` = SIGKILL so they die with the test process even if it is killed;
//! * the deterministic test images are built once per target dir (under
//!   `CARGO_TARGET_TMPDIR/acr-fixtures`), guarded by a lock file.
//!
//! Every area binary (`tests/<area>/main.rs`) includes it with
//! `#[path = "../harness/mod.rs"] mod harness;`.

pub mod acr_standin;
pub mod bounds;
pub mod faults;
pub mod inject;
pub mod mirror;
pub mod production;
pub mod store;
pub mod upstream;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ------------------------------------------------------------------------------------------
// constants

/// The timestamp every file and image in the fixtures carries.
pub const EPOCH: &str = "2000-01-01T00:00:00Z";
/// Bump when the recipe of the fixture images changes, so caches are rebuilt.
pub const FIXTURES_VERSION: &str = "v1";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// An `Accept` header value that takes every manifest type the fixtures use.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Service name the token-auth registries are configured with (the JWT audience).
pub const TOKEN_SERVICE: &str = "acr-test-registry";
/// Issuer the token server signs with and the registries trust.
pub const TOKEN_ISSUER: &str = "acr-test-issuer";

/// Contents of `/hello.txt` in `test:1`.
pub const TEST_HELLO: &str = "hello from the acr test image test:1\n";

const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(20);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

// ------------------------------------------------------------------------------------------
// paths and tools

/// The workspace root of acr (where `Cargo.toml` and `scripts/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where fixtures, keys and other caches shared by all test processes live.
pub fn cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("acr-fixtures");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Path of our token server script.
pub fn tokenserver_script() -> PathBuf {
    repo_root().join("tests/support/tokenserver.py")
}

/// A fresh temporary directory (removed on drop).
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("create temp dir {prefix}*: {e}"))
}

/// A temporary directory with a short path, for unix sockets (108-byte limit).
fn short_temp_dir(prefix: &str) -> TempDir {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > 40 {
        PathBuf::from("/tmp")
    } else {
        base
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap_or_else(|e| panic!("create temp dir {prefix}*: {e}"))
}

/// Finds an executable on `PATH` (plus the sbin directories, where e.g. `runc` lives).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(tool))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn package_of(tool: &str) -> &str {
    match tool {
        "ctr" => "containerd",
        "htpasswd" => "apache2-utils",
        "runc" => "runc (comes with containerd)",
        other => other,
    }
}

/// Panics (so the test fails, it does not skip) when one of the binaries is missing.
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| format!("`{t}` (Debian package {})", package_of(t)))
        .collect();
    if !missing.is_empty() {
        panic!(
            "acr test harness: required tool(s) not found on PATH: {}.\n\
             Install them with `scripts/deps.sh` (as root; it uses apt-get) from {}.",
            missing.join(", "),
            repo_root().display()
        );
    }
}

/// Binds 127.0.0.1:0 and returns the port the kernel chose (closed again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns the last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------------------
// digests and small encoders

pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// `sha256:<hex>` of `data`, as registries name manifests and blobs.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(T[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Basic <base64(user:pass)>`.
pub fn basic_auth(user: &str, pass: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()))
}

/// Deterministic, incompressible bytes: SplitMix64 seeded from sha256(label).
/// (Cheap enough for hundreds of MiB even in debug builds.)
pub fn pseudo_random_bytes(label: &str, len: usize) -> Vec<u8> {
    let seed = Sha256::digest(label.as_bytes());
    let mut state = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `s` as a JSON string literal. That is also a valid YAML double-quoted scalar and, for
/// the paths and URLs written here, a valid TOML basic string.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("string to json")
}

// ------------------------------------------------------------------------------------------
// processes

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// All children are forked from one long-lived thread: `PR_SET_PDEATHSIG` fires when the
/// *thread* that forked dies, and this one lives as long as the test process.
fn spawn_via_keeper(cmd: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("acr-harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .expect("spawner thread is gone");
    reply_rx.recv().expect("spawner thread is gone")
}

fn prepare(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // the test process died between fork and prctl
                libc::_exit(111);
            }
            Ok(())
        });
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// True once `pid` (our child) has exited. Does not reap it, so neither the pid nor the
/// process group id can be reused before we kill the group and wait.
fn has_exited(pid: u32) -> bool {
    // SAFETY: plain syscall on a zeroed siginfo_t owned by us.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r != 0 || info.si_pid() != 0
    }
}

fn kill_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on our own process group.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// A long-running child in its own process group, stdout+stderr appended to a log file.
/// Dropping it SIGKILLs the whole group and reaps the child.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` (stdin from /dev/null, stdout and stderr to `log`).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        prepare(&mut cmd);
        let what = describe(&cmd);
        let child = spawn_via_keeper(cmd).unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| !has_exited(c.id()))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Kills the process group and reaps the child; returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        kill_group(child.id(), libc::SIGKILL);
        child.wait().ok()
    }

    fn panic_with_log(&self, what: &str) -> ! {
        panic!(
            "{} ({}): {what}\n--- last lines of {} ---\n{}",
            self.name,
            self.pid(),
            self.log.display(),
            tail(&self.log(), 40)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a finished command printed.
#[derive(Clone)]
pub struct CmdOutput {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the command line and its output unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> CmdOutput {
        if !self.success() {
            panic!("command failed: {self:?}");
        }
        self
    }
}

impl fmt::Debug for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` -> {} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.status,
            self.elapsed,
            tail(&self.stdout, 60),
            tail(&self.stderr, 60)
        )
    }
}

/// Runs `cmd` to completion in its own process group (stdout and stderr captured through
/// temporary files). Panics when it runs longer than `timeout`; the group is killed then,
/// and also when the command finished but left children behind.
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> CmdOutput {
    let cmdline = describe(&cmd);
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"));
    prepare(&mut cmd);
    let start = Instant::now();
    let child = spawn_via_keeper(cmd).unwrap_or_else(|e| panic!("spawn `{cmdline}`: {e}"));
    // the guard kills the group if we unwind (timeout panic or a panic elsewhere)
    let mut guard = Proc {
        name: cmdline.clone(),
        child: Some(child),
        log: PathBuf::new(),
    };
    let pid = guard.pid();
    let mut timed_out = false;
    while !has_exited(pid) {
        if start.elapsed() > timeout {
            timed_out = true;
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let status = guard.stop().expect("child status");
    let read = |f: &mut File| {
        let mut b = Vec::new();
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.read_to_end(&mut b).expect("read output");
        String::from_utf8_lossy(&b).into_owned()
    };
    let output = CmdOutput {
        cmdline,
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
        elapsed: start.elapsed(),
    };
    if timed_out {
        panic!("command timed out after {timeout:?}: {output:?}");
    }
    output
}

/// `run_cmd` with the default timeout (5 minutes).
pub fn run(program: &str, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_cmd(cmd, COMMAND_TIMEOUT)
}

/// Unmounts (lazily) everything mounted under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p) {
            // SAFETY: umount2 with a valid C string.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// cache lock

/// Runs `f` while holding an exclusive `flock` on `cache_dir()/<name>.lock`: serialises
/// fixture builds between test processes (and threads: every call opens its own fd).
pub fn with_cache_lock<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let path = cache_dir().join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    loop {
        // SAFETY: flock on an fd we own; released when `file` is closed.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            panic!("flock {}: {e}", path.display());
        }
    }
    let result = f();
    drop(file);
    result
}

/// Builds `final_dir` with `build(tmp)` unless it already exists: under the cache lock,
/// into a sibling temporary directory that is renamed into place when complete.
fn build_cached(final_dir: &Path, build: impl FnOnce(&Path)) {
    let name = final_dir
        .file_name()
        .expect("cache entry name")
        .to_string_lossy()
        .into_owned();
    with_cache_lock(&name, || {
        if final_dir.exists() {
            return;
        }
        let parent = final_dir.parent().expect("cache parent");
        // leftovers of an interrupted build
        if let Ok(entries) = fs::read_dir(parent) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}.tmp-"))
                {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
        fs::create_dir_all(&tmp).expect("create build dir");
        build(&tmp);
        fs::rename(&tmp, final_dir)
            .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), final_dir.display()));
    });
}

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
        let name = name.to_ascii_lowercase();
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
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

/// Blocking GET: `(status, headers, body)`.
#[track_caller]
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, Headers, Vec<u8>) {
    let r = http_request("GET", url, headers, None);
    (r.status, r.headers, r.body)
}

// ------------------------------------------------------------------------------------------
// token server

/// How to start a [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenServerOptions {
    pub users: Vec<(String, String)>,
    pub anonymous_pull: bool,
    pub expires_in: u64,
    /// `auto` (python3-cryptography when importable), `cryptography` or `openssl`.
    pub signer: String,
}

impl Default for TokenServerOptions {
    fn default() -> Self {
        TokenServerOptions {
            users: vec![("testuser".into(), "testpass".into())],
            anonymous_pull: true,
            expires_in: 300,
            signer: "auto".into(),
        }
    }
}

/// `tests/support/tokenserver.py` on a free port; killed on drop.
pub struct TokenServer {
    proc: Proc,
    addr: SocketAddr,
    key: PathBuf,
    cert: PathBuf,
    _dir: TempDir,
}

/// Debian's `/usr/bin/python3` (where `scripts/deps.sh` puts python3-cryptography) when it
/// exists, else `python3` from `PATH` (then signing may fall back to the openssl CLI).
fn python3() -> PathBuf {
    let debian = Path::new("/usr/bin/python3");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

/// RSA key + self-signed certificate for the token issuer, generated once per target dir.
fn token_key_pair() -> (PathBuf, PathBuf) {
    let dir = cache_dir().join(format!("token-key-{FIXTURES_VERSION}"));
    build_cached(&dir, |tmp| {
        require_tools(&["openssl"]);
        let key = tmp.join("token.key");
        let cert = tmp.join("token.crt");
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=acr-test-token-issuer",
                "-keyout",
                &key.to_string_lossy(),
                "-out",
                &cert.to_string_lossy(),
            ],
        )
        .ok();
    });
    (dir.join("token.key"), dir.join("token.crt"))
}

impl TokenServer {
    pub fn start(opts: TokenServerOptions) -> TokenServer {
        require_tools(&["python3", "openssl"]);
        let (key, cert) = token_key_pair();
        let dir = temp_dir("acr-token-");
        let log = dir.path().join("tokenserver.log");
        let mut cmd = Command::new(python3());
        cmd.arg(tokenserver_script())
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .args(["--issuer", TOKEN_ISSUER, "--listen", "127.0.0.1:0"])
            .args(["--expires-in", &opts.expires_in.to_string()])
            .args(["--signer", &opts.signer])
            .env("PYTHONUNBUFFERED", "1");
        for (u, p) in &opts.users {
            cmd.arg("--user").arg(format!("{u}:{p}"));
        }
        if opts.anonymous_pull {
            cmd.arg("--anonymous-pull");
        }
        let proc = Proc::spawn("tokenserver.py", cmd, &log);
        let mut port = None;
        let found = wait_until(Duration::from_secs(20), || {
            port = proc.log().lines().find_map(|l| {
                l.strip_prefix("tokenserver: listening on 127.0.0.1:")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok())
            });
            port.is_some() || !proc.is_running()
        });
        let Some(port) = port.filter(|_| found) else {
            proc.panic_with_log("did not report its listening port");
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("http://{addr}/healthz");
        if !wait_until(Duration::from_secs(10), || {
            try_http_request("GET", &url, &[], None).is_ok_and(|r| r.status == 200)
        }) {
            proc.panic_with_log("does not answer /healthz");
        }
        TokenServer {
            proc,
            addr,
            key,
            cert,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The `realm` registries send clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
    pub fn service(&self) -> &str {
        TOKEN_SERVICE
    }
    pub fn issuer(&self) -> &str {
        TOKEN_ISSUER
    }
    /// The certificate registries must trust (`auth.token.rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
    pub fn key_path(&self) -> &Path {
        &self.key
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    /// Its stderr: one line per request (`tokenserver: GET /token status=200 user=...`).
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// The log lines of requests to `/token` (one per token round trip).
    pub fn token_requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("tokenserver: ") && l.contains(" /token "))
            .map(str::to_string)
            .collect()
    }
    /// `GET /stats`: counters such as `issued`, `issued_anonymous`, `issued_password`,
    /// `issued_refresh`, `denied`, `token_requests`.
    pub fn stats(&self) -> serde_json::Value {
        http_request("GET", &format!("{}/stats", self.url()), &[], None).json()
    }
    /// Number of access tokens issued so far (`stats().issued`).
    pub fn issued(&self) -> u64 {
        self.stats()["issued"].as_u64().unwrap_or(0)
    }
    /// Fetches a token with `GET /token` (Basic auth when `creds` is given).
    #[track_caller]
    pub fn token(&self, scope: &str, creds: Option<(&str, &str)>) -> String {
        let url = format!("{}?service={}&scope={}", self.realm(), TOKEN_SERVICE, scope);
        let auth = creds.map(|(u, p)| basic_auth(u, p));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let r = http_request("GET", &url, &headers, None);
        assert_eq!(r.status, 200, "token request failed: {}", r.text());
        r.json()["token"]
            .as_str()
            .expect("token in the answer")
            .to_string()
    }
}

// ------------------------------------------------------------------------------------------
// registry (CNCF distribution)

/// Authentication of a [`Registry`].
#[derive(Clone)]
pub enum RegistryAuth {
    None,
    /// htpasswd (bcrypt) with one user.
    Htpasswd {
        user: String,
        pass: String,
    },
    /// Bearer token auth through a token server started for this registry.
    Token {
        users: Vec<(String, String)>,
        anonymous_pull: bool,
    },
    /// Bearer token auth through an existing token server (e.g. shared by two registries).
    /// `creds` are what [`seed`] pushes with.
    SharedToken {
        server: Arc<TokenServer>,
        creds: Option<(String, String)>,
    },
}

impl RegistryAuth {
    pub fn htpasswd(user: &str, pass: &str) -> RegistryAuth {
        RegistryAuth::Htpasswd {
            user: user.into(),
            pass: pass.into(),
        }
    }
    /// Token auth with one user; anonymous pulls allowed when `anonymous_pull`.
    pub fn token(user: &str, pass: &str, anonymous_pull: bool) -> RegistryAuth {
        RegistryAuth::Token {
            users: vec![(user.into(), pass.into())],
            anonymous_pull,
        }
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::None => write!(f, "None"),
            RegistryAuth::Htpasswd { user, .. } => write!(f, "Htpasswd({user})"),
            RegistryAuth::Token {
                users,
                anonymous_pull,
            } => write!(
                f,
                "Token({} users, anonymous_pull={anonymous_pull})",
                users.len()
            ),
            RegistryAuth::SharedToken { server, .. } => write!(f, "SharedToken({})", server.addr()),
        }
    }
}

/// One line of distribution's access log (Apache combined format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    /// Path with query, e.g. `/v2/library/test/manifests/1?ns=docker.io`.
    pub path: String,
    pub status: u16,
    pub user_agent: String,
}

fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    if line.starts_with("time=") {
        return None;
    }
    // `IP - USER [DATE] "METHOD PATH PROTO" STATUS SIZE "REFERER" "UA"`; distribution 2.8
    // always logs USER as `-`, even for authenticated requests
    let (_, rest) = line.split_once(" [")?;
    let (_, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut req = request.split(' ');
    let method = req.next()?.to_string();
    let path = req.next()?.to_string();
    let status = rest.split_whitespace().next()?.parse().ok()?;
    let quoted: Vec<&str> = rest.split('"').collect();
    // rest = ` 200 2 "REFERER" "UA"` -> ["200 2 ", REFERER, " ", UA, ""]
    let user_agent = quoted.get(3).copied().unwrap_or_default().to_string();
    Some(AccessLogEntry {
        method,
        path,
        status,
        user_agent,
    })
}

/// `docker-registry serve` on 127.0.0.1:<free port> with storage in a temp dir; killed on drop.
pub struct Registry {
    proc: Proc,
    addr: SocketAddr,
    creds: Option<(String, String)>,
    token: Option<Arc<TokenServer>>,
    remote: Option<String>,
    dir: TempDir,
}

enum Startup {
    Ready,
    AddrInUse,
}

fn registry_config(storage: &Path, port: u16, extra: &str) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
         cache:\n    blobdescriptor: inmemory\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: acr-test-http-secret\n\
         health:\n  storagedriver:\n    enabled: false\n\
         {extra}",
        root = quoted(&storage.to_string_lossy()),
    )
}

impl Registry {
    /// A registry with the given auth.
    pub fn start(auth: RegistryAuth) -> Registry {
        let dir = temp_dir("acr-registry-");
        let (extra, creds, token) = match auth {
            RegistryAuth::None => (String::new(), None, None),
            RegistryAuth::Htpasswd { user, pass } => {
                require_tools(&["htpasswd"]);
                let file = dir.path().join("htpasswd");
                let out = run("htpasswd", &["-Bbn", &user, &pass]).ok();
                fs::write(&file, out.stdout.trim_end().to_string() + "\n").expect("write htpasswd");
                let extra = format!(
                    "auth:\n  htpasswd:\n    realm: acr-basic-realm\n    path: {}\n",
                    quoted(&file.to_string_lossy())
                );
                (extra, Some((user, pass)), None)
            }
            RegistryAuth::Token {
                users,
                anonymous_pull,
            } => {
                let creds = users.first().cloned();
                let server = Arc::new(TokenServer::start(TokenServerOptions {
                    users,
                    anonymous_pull,
                    ..TokenServerOptions::default()
                }));
                (Self::token_yaml(&server), creds, Some(server))
            }
            RegistryAuth::SharedToken { server, creds } => {
                (Self::token_yaml(&server), creds, Some(server))
            }
        };
        Self::launch(dir, &extra, creds, token, None)
    }

    /// distribution as a pull-through cache (`proxy.remoteurl`) in front of `remote_url`,
    /// authenticating upstream with `creds` if given. No auth of its own.
    pub fn start_proxy(remote_url: &str, creds: Option<(&str, &str)>) -> Registry {
        let dir = temp_dir("acr-proxy-");
        let mut extra = format!("proxy:\n  remoteurl: {}\n", quoted(remote_url));
        if let Some((u, p)) = creds {
            extra += &format!("  username: {}\n  password: {}\n", quoted(u), quoted(p));
        }
        Self::launch(dir, &extra, None, None, Some(remote_url.to_string()))
    }

    fn token_yaml(server: &TokenServer) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            quoted(&server.realm()),
            quoted(server.service()),
            quoted(server.issuer()),
            quoted(&server.cert_path().to_string_lossy())
        )
    }

    fn launch(
        dir: TempDir,
        extra: &str,
        creds: Option<(String, String)>,
        token: Option<Arc<TokenServer>>,
        remote: Option<String>,
    ) -> Registry {
        require_tools(&["docker-registry"]);
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("create storage dir");
        for attempt in 0..10 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(&config, registry_config(&storage, port, extra)).expect("write config");
            let log = dir.path().join(format!("registry-{attempt}.log"));
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&config);
            // REGISTRY_* variables would override the config file
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let proc = Proc::spawn("docker-registry", cmd, &log);
            match Self::wait_ready(&proc, port) {
                Startup::Ready => {
                    return Registry {
                        proc,
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        creds,
                        token,
                        remote,
                        dir,
                    }
                }
                Startup::AddrInUse => continue, // another test took the port; try another
            }
        }
        panic!("docker-registry: no free port after 10 attempts");
    }

    fn wait_ready(proc: &Proc, port: u16) -> Startup {
        let listening = format!("listening on 127.0.0.1:{port}\"");
        let url = format!("http://127.0.0.1:{port}/v2/");
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        while Instant::now() < deadline {
            if !proc.is_running() {
                if proc.log().contains("address already in use") {
                    return Startup::AddrInUse;
                }
                proc.panic_with_log("exited during startup");
            }
            // the log line proves that *our* process holds the port
            if proc.log().contains(&listening)
                && try_http_request("GET", &url, &[], None)
                    .is_ok_and(|r| r.status == 200 || r.status == 401)
            {
                return Startup::Ready;
            }
            thread::sleep(Duration::from_millis(20));
        }
        proc.panic_with_log("did not answer /v2/ in time");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `127.0.0.1:PORT` (what image references start with).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// `127.0.0.1:PORT/<repo_ref>`, e.g. `image("library/test:1")`.
    pub fn image(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.addr)
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }
    /// Credentials clients must use to push (htpasswd user, first token user), if any.
    pub fn creds(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_deref()
    }
    /// The upstream of a pull-through proxy.
    pub fn remote(&self) -> Option<&str> {
        self.remote.as_deref()
    }
    /// Registry storage root (filesystem driver).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }
    /// Everything the registry wrote (app log and access log).
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// The access-log lines parsed.
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        self.log().lines().filter_map(parse_access_line).collect()
    }
    /// Requests with `method` (any when empty) whose path contains `path_contains`.
    pub fn count_requests(&self, method: &str, path_contains: &str) -> usize {
        self.access_log()
            .iter()
            .filter(|e| (method.is_empty() || e.method == method) && e.path.contains(path_contains))
            .count()
    }
    /// Waits (up to `timeout`) until [`count_requests`](Self::count_requests) reaches `n`,
    /// since the access log is written just after the response. Returns the last count.
    pub fn wait_requests(
        &self,
        method: &str,
        path_contains: &str,
        n: usize,
        timeout: Duration,
    ) -> usize {
        let mut c = 0;
        wait_until(timeout, || {
            c = self.count_requests(method, path_contains);
            c >= n
        });
        c
    }
    /// An `Authorization` value that works for raw HTTP requests with `scope` (e.g.
    /// `repository:library/test:pull`): Basic for htpasswd, a fresh Bearer token for token
    /// auth, `None` when the registry has no auth.
    pub fn auth_header(&self, scope: &str) -> Option<String> {
        match (&self.token, self.creds()) {
            (Some(ts), creds) => Some(format!("Bearer {}", ts.token(scope, creds))),
            (None, Some((u, p))) => Some(basic_auth(u, p)),
            (None, None) => None,
        }
    }
    /// GET (or HEAD) a manifest with [`ACCEPT_MANIFESTS`] and this registry's credentials.
    pub fn fetch_manifest(&self, method: &str, repo: &str, reference: &str) -> HttpResponse {
        let auth = self.auth_header(&format!("repository:{repo}:pull"));
        let mut headers = vec![("Accept", ACCEPT_MANIFESTS)];
        if let Some(a) = auth.as_deref() {
            headers.push(("Authorization", a));
        }
        http_request(
            method,
            &format!("{}/v2/{repo}/manifests/{reference}", self.url()),
            &headers,
            None,
        )
    }
}

// ------------------------------------------------------------------------------------------
// fixtures: deterministic OCI layouts built with umoci

/// One image (manifest or index) in an OCI layout on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciImage {
    pub layout: PathBuf,
    /// `org.opencontainers.image.ref.name` in the layout's index.json.
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl OciImage {
    /// `oci:<layout>:<tag>`, for skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }
    /// A blob of the layout.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let p = self.layout.join("blobs/sha256").join(hex);
        fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }
    /// The manifest (or index) JSON.
    pub fn manifest(&self) -> serde_json::Value {
        serde_json::from_slice(&self.blob(&self.digest)).expect("manifest json")
    }
    /// `(digest, size)` of the layers of a single-platform image.
    pub fn layers(&self) -> Vec<(String, u64)> {
        self.manifest()["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().expect("digest").to_string(),
                    l["size"].as_u64().expect("size"),
                )
            })
            .collect()
    }
}

/// The images every test can push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fixtures {
    pub root: PathBuf,
    /// `test:1`: linux/amd64 OCI image, one layer with `/hello.txt`, `/etc/acr-release`
    /// and a 64 KiB `/etc/payload.bin`.
    pub test: OciImage,
    /// `multi`: OCI image index over `multi_amd64` and `multi_arm64`.
    pub multi: OciImage,
    pub multi_amd64: OciImage,
    pub multi_arm64: OciImage,
}

fn read_layout_ref(layout: &Path, tag: &str) -> OciImage {
    let p = layout.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
    )
    .expect("index.json");
    let d = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no ref {tag} in {}", p.display()));
    OciImage {
        layout: layout.to_path_buf(),
        tag: tag.to_string(),
        digest: d["digest"].as_str().expect("digest").to_string(),
        media_type: d["mediaType"].as_str().expect("mediaType").to_string(),
        size: d["size"].as_u64().expect("size"),
    }
}

fn umoci(args: &[&str]) {
    run("umoci", args).ok();
}

/// Adds one single-layer image `tag` to `layout` (created if needed), byte-reproducibly:
/// fixed modes, owners from the running user, every timestamp at [`EPOCH`].
pub fn build_image(layout: &Path, tag: &str, arch: &str, files: &[(&str, Vec<u8>)]) {
    require_tools(&["umoci", "find", "touch"]);
    let l = layout.to_string_lossy().into_owned();
    if !layout.join("oci-layout").exists() {
        umoci(&["init", "--layout", &l]);
    }
    let src = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir_in(layout.parent().expect("layout parent"))
        .expect("rootfs dir");
    for (name, data) in files {
        let p = src.path().join(name);
        let parent = p.parent().expect("parent");
        fs::create_dir_all(parent).expect("mkdir");
        fs::write(&p, data).expect("write file");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mut dirs = vec![src.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        for e in fs::read_dir(&d).expect("readdir").flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs.push(e.path());
            }
        }
    }
    let s = src.path().to_string_lossy().into_owned();
    run(
        "find",
        &[&s, "-exec", "touch", "-h", "-d", EPOCH, "{}", "+"],
    )
    .ok();
    let image = format!("{l}:{tag}");
    umoci(&["new", "--image", &image]);
    umoci(&[
        "insert",
        "--image",
        &image,
        "--history.created",
        EPOCH,
        "--history.created_by",
        "acr test harness",
        &s,
        "/",
    ]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--created",
        EPOCH,
        "--history.created",
        EPOCH,
        "--history.created_by",
        "acr test harness",
        "--architecture",
        arch,
        "--os",
        "linux",
        "--config.cmd",
        "/hello.txt",
    ]);
}

/// Writes an OCI image index over `tags` (platform from each config) into `layout` as `name`.
/// The JSON is written by hand so its bytes never depend on serde_json features.
pub fn add_index(layout: &Path, name: &str, tags: &[&str]) {
    let mut entries = Vec::new();
    for tag in tags {
        let img = read_layout_ref(layout, tag);
        let config_digest = img.manifest()["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_string();
        let config: serde_json::Value =
            serde_json::from_slice(&img.blob(&config_digest)).expect("config json");
        entries.push(format!(
            "{{\"mediaType\":{},\"digest\":{},\"size\":{},\"platform\":{{\"architecture\":{},\"os\":{}}}}}",
            quoted(&img.media_type),
            quoted(&img.digest),
            img.size,
            config["architecture"],
            config["os"]
        ));
    }
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
        entries.join(",")
    );
    let digest = digest_of(index.as_bytes());
    fs::write(
        layout.join("blobs/sha256").join(&digest["sha256:".len()..]),
        index.as_bytes(),
    )
    .expect("write index blob");
    let p = layout.join("index.json");
    let mut top: serde_json::Value =
        serde_json::from_slice(&fs::read(&p).expect("read index.json")).expect("index.json");
    top["manifests"]
        .as_array_mut()
        .expect("manifests")
        .push(serde_json::json!({
            "mediaType": OCI_INDEX,
            "digest": digest,
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
    fs::write(&p, serde_json::to_vec(&top).expect("json")).expect("write index.json");
}

fn gc(layout: &Path) {
    umoci(&["gc", "--layout", &layout.to_string_lossy()]);
}

/// Builds the standard fixtures into `dir` (uncached; [`fixtures`] is the cached version).
pub fn build_fixtures_in(dir: &Path) -> Fixtures {
    let test = dir.join("test");
    build_image(
        &test,
        "1",
        "amd64",
        &[
            ("hello.txt", TEST_HELLO.as_bytes().to_vec()),
            ("etc/acr-release", b"ID=acr-test\nVERSION_ID=1\n".to_vec()),
            (
                "etc/payload.bin",
                pseudo_random_bytes("acr-test:1", 64 << 10),
            ),
        ],
    );
    gc(&test);
    let multi = dir.join("multi");
    for arch in ["amd64", "arm64"] {
        build_image(
            &multi,
            arch,
            arch,
            &[
                (
                    "hello.txt",
                    format!("hello from the acr multi-arch image ({arch})\n").into_bytes(),
                ),
                (
                    "etc/payload.bin",
                    pseudo_random_bytes(&format!("acr-multi:{arch}"), 32 << 10),
                ),
            ],
        );
    }
    add_index(&multi, "multi", &["amd64", "arm64"]);
    gc(&multi);
    load_fixtures(dir)
}

fn load_fixtures(dir: &Path) -> Fixtures {
    Fixtures {
        root: dir.to_path_buf(),
        test: read_layout_ref(&dir.join("test"), "1"),
        multi: read_layout_ref(&dir.join("multi"), "multi"),
        multi_amd64: read_layout_ref(&dir.join("multi"), "amd64"),
        multi_arm64: read_layout_ref(&dir.join("multi"), "arm64"),
    }
}

/// The standard fixtures, built once per target dir (shared by all test processes).
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = cache_dir().join(format!("images-{FIXTURES_VERSION}"));
        build_cached(&dir, |tmp| {
            build_fixtures_in(tmp);
        });
        load_fixtures(&dir)
    })
}

/// `big`: linux/amd64 image whose single layer holds `mib` MiB of incompressible,
/// deterministic bytes (`/big.bin`), built once per size and target dir.
pub fn big_fixture(mib: u32) -> OciImage {
    static BIG: OnceLock<Mutex<HashMap<u32, OciImage>>> = OnceLock::new();
    let map = BIG.get_or_init(Default::default);
    if let Some(img) = map.lock().unwrap_or_else(|e| e.into_inner()).get(&mib) {
        return img.clone();
    }
    let dir = cache_dir().join(format!("big-{FIXTURES_VERSION}-{mib}MiB"));
    build_cached(&dir, |tmp| {
        let layout = tmp.join("big");
        build_image(
            &layout,
            "1",
            "amd64",
            &[
                (
                    "hello.txt",
                    format!("acr big image, {mib} MiB\n").into_bytes(),
                ),
                (
                    "big.bin",
                    pseudo_random_bytes(&format!("acr-big:{mib}"), (mib as usize) << 20),
                ),
            ],
        );
        gc(&layout);
    });
    let img = read_layout_ref(&dir.join("big"), "1");
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(mib, img.clone());
    img
}

// ------------------------------------------------------------------------------------------
// skopeo and seeding

/// An empty auth file, so no user/system credentials leak into the tests.
fn empty_auth_file() -> PathBuf {
    let p = cache_dir().join("empty-auth.json");
    if !p.exists() {
        let tmp = cache_dir().join(format!("empty-auth.json.{}", std::process::id()));
        fs::write(&tmp, b"{\"auths\":{}}\n").expect("write auth file");
        fs::rename(&tmp, &p).expect("rename auth file");
    }
    p
}

/// Runs `skopeo --insecure-policy <args>` with TLS verification off for the subcommand
/// (`copy`/`sync`: `--src-tls-verify=false --dest-tls-verify=false`; `inspect`,
/// `list-tags`, `delete`, `login`, `logout`: `--tls-verify=false`) and an empty auth file.
pub fn skopeo(args: &[&str]) -> CmdOutput {
    require_tools(&["skopeo"]);
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy");
    if let Some((sub, rest)) = args.split_first() {
        cmd.arg(sub);
        match *sub {
            "copy" | "sync" => {
                cmd.args(["--src-tls-verify=false", "--dest-tls-verify=false"]);
            }
            "inspect" | "list-tags" | "delete" | "login" | "logout" => {
                cmd.arg("--tls-verify=false");
            }
            _ => {}
        }
        cmd.args(rest);
    }
    cmd.env("REGISTRY_AUTH_FILE", empty_auth_file());
    run_cmd(cmd, COMMAND_TIMEOUT)
}

/// Pushes `image` to `registry` as `repo_ref` (`library/test:1`), with the registry's
/// credentials; `extra` is e.g. `["--all"]` or `["--format", "v2s2"]`.
pub fn push(registry: &Registry, image: &OciImage, repo_ref: &str, extra: &[&str]) {
    let dest = format!("docker://{}", registry.image(repo_ref));
    let src = image.oci_ref();
    let creds = registry.creds().map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec!["copy", "-q"];
    if let Some(c) = creds.as_deref() {
        args.extend(["--dest-creds", c]);
    }
    args.extend_from_slice(extra);
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(&args).ok();
}

/// The raw manifest of `repo_ref` in `registry` (`skopeo inspect --raw`, with the
/// registry's credentials) and its digest.
pub fn raw_manifest(registry: &Registry, repo_ref: &str) -> (String, Vec<u8>) {
    let r = format!("docker://{}", registry.image(repo_ref));
    let creds = registry.creds().map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec!["inspect", "--raw"];
    if let Some(c) = creds.as_deref() {
        args.extend(["--creds", c]);
    }
    args.push(&r);
    let raw = skopeo(&args).ok().stdout.into_bytes();
    (digest_of(&raw), raw)
}

/// What [`seed`] pushed: manifest digests as the registry serves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeded {
    /// `library/test:1`, OCI manifest.
    pub test_oci: String,
    /// `library/test:v2s2`, Docker schema 2 manifest.
    pub test_v2s2: String,
    /// `library/multi:1`, OCI image index.
    pub multi_oci: String,
    /// `library/multi:v2s2`, Docker manifest list.
    pub multi_v2s2: String,
    /// `(architecture, digest)` of the children of `multi:1`.
    pub multi_oci_children: Vec<(String, String)>,
    /// `(architecture, digest)` of the children of `multi:v2s2`.
    pub multi_v2s2_children: Vec<(String, String)>,
}

fn children(raw: &[u8]) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(raw).expect("index json");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                m["digest"].as_str().expect("digest").to_string(),
            )
        })
        .collect()
}

/// Pushes the standard fixtures: `library/test:1` (OCI), `library/test:v2s2`,
/// `library/multi:1` (OCI index, `--all`), `library/multi:v2s2` (manifest list).
pub fn seed(registry: &Registry) -> Seeded {
    let f = fixtures();
    push(registry, &f.test, "library/test:1", &[]);
    push(
        registry,
        &f.test,
        "library/test:v2s2",
        &["--format", "v2s2"],
    );
    push(registry, &f.multi, "library/multi:1", &["--all"]);
    push(
        registry,
        &f.multi,
        "library/multi:v2s2",
        &["--all", "--format", "v2s2"],
    );
    let (test_oci, _) = raw_manifest(registry, "library/test:1");
    let (test_v2s2, _) = raw_manifest(registry, "library/test:v2s2");
    let (multi_oci, multi_raw) = raw_manifest(registry, "library/multi:1");
    let (multi_v2s2, list_raw) = raw_manifest(registry, "library/multi:v2s2");
    assert_eq!(
        test_oci, f.test.digest,
        "skopeo changed the OCI manifest of test:1"
    );
    assert_eq!(
        multi_oci, f.multi.digest,
        "skopeo changed the OCI index of multi"
    );
    Seeded {
        test_oci,
        test_v2s2,
        multi_oci,
        multi_v2s2,
        multi_oci_children: children(&multi_raw),
        multi_v2s2_children: children(&list_raw),
    }
}

/// What [`seed_big`] pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BigSeeded {
    /// `library/big:<mib>`
    pub repo_ref: String,
    pub manifest_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
}

/// Pushes [`big_fixture`]`(mib)` as `library/big:<mib>`.
pub fn seed_big(registry: &Registry, mib: u32) -> BigSeeded {
    let img = big_fixture(mib);
    let repo_ref = format!("library/big:{mib}");
    push(registry, &img, &repo_ref, &[]);
    let (digest, _) = raw_manifest(registry, &repo_ref);
    assert_eq!(digest, img.digest, "skopeo changed the manifest of big");
    let (layer_digest, layer_size) = img.layers().into_iter().next().expect("one layer");
    BigSeeded {
        repo_ref,
        manifest_digest: digest,
        layer_digest,
        layer_size,
    }
}

// ------------------------------------------------------------------------------------------
// containerd

/// A containerd hosts directory (`certs.d` style) for `ctr --hosts-dir`.
pub struct HostsDir {
    dir: TempDir,
}

impl Default for HostsDir {
    fn default() -> Self {
        Self::new()
    }
}

impl HostsDir {
    pub fn new() -> HostsDir {
        HostsDir {
            dir: temp_dir("acr-hosts-"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Writes `<namespace>/hosts.toml` (namespace: `docker.io`, `127.0.0.1:5000`, ...) with
    /// `server` (a URL such as `http://127.0.0.1:5000`) and `mirrors` (URLs, tried first,
    /// with pull+resolve). For a `docker.io` namespace give a dead loopback `server` (see
    /// [`dead_url`]) so that nothing can leave the machine.
    pub fn add(&self, namespace: &str, server: &str, mirrors: &[&str]) -> &HostsDir {
        let mut toml = format!("server = {}\n", quoted(server));
        for m in mirrors {
            toml += &format!(
                "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
                quoted(m)
            );
        }
        self.add_raw(namespace, &toml)
    }
    /// Writes `<namespace>/hosts.toml` verbatim.
    pub fn add_raw(&self, namespace: &str, hosts_toml: &str) -> &HostsDir {
        let d = self.dir.path().join(namespace);
        fs::create_dir_all(&d).expect("mkdir hosts dir");
        fs::write(d.join("hosts.toml"), hosts_toml).expect("write hosts.toml");
        self
    }
}

/// `http://127.0.0.1:<port>` where nothing listens (port briefly bound, then closed).
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// containerd with config, root, state and sockets in a temp dir (CRI disabled).
pub struct Containerd {
    proc: Proc,
    dir: TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        require_tools(&["containerd", "ctr"]);
        let dir = short_temp_dir("acr-ctrd-");
        let d = dir.path();
        let p = |s: &str| quoted(&d.join(s).to_string_lossy());
        let config = format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             \n[grpc]\n  address = {sock}\n\
             \n[ttrpc]\n  address = {ttrpc}\n\
             \n[debug]\n  address = {debug}\n  level = \"info\"\n\
             \n[plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = {opt}\n",
            root = p("root"),
            state = p("state"),
            sock = p("c.sock"),
            ttrpc = p("c.sock.ttrpc"),
            debug = p("debug.sock"),
            opt = p("opt"),
        );
        fs::write(d.join("config.toml"), config).expect("write containerd config");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(d.join("config.toml"));
        let proc = Proc::spawn("containerd", cmd, &d.join("containerd.log"));
        let ctrd = Containerd { proc, dir };
        let ready = wait_until(Duration::from_secs(30), || {
            !ctrd.proc.is_running()
                || (ctrd.socket().exists()
                    && ctrd
                        .ctr_timeout(&["version"], Duration::from_secs(5))
                        .success())
        });
        if !ready || !ctrd.proc.is_running() {
            ctrd.proc.panic_with_log("did not come up");
        }
        ctrd
    }

    /// The gRPC socket (`ctr -a`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }

    fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.socket()).args(args);
        run_cmd(cmd, timeout)
    }

    /// `ctr -a <socket> <args>`.
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        self.ctr_timeout(args, COMMAND_TIMEOUT)
    }

    /// `ctr images pull --plain-http --hosts-dir <hosts_dir> <image>`.
    pub fn ctr_pull(&self, image: &str, hosts_dir: &Path) -> CmdOutput {
        self.ctr_pull_with(image, Some(hosts_dir), &[])
    }

    /// `ctr images pull --plain-http [--hosts-dir DIR] <extra...> <image>`; `extra` is e.g.
    /// `["--platform", "linux/arm64"]`, `["--all-platforms"]` or `["-u", "user:pass"]`.
    pub fn ctr_pull_with(
        &self,
        image: &str,
        hosts_dir: Option<&Path>,
        extra: &[&str],
    ) -> CmdOutput {
        let hd = hosts_dir.map(|h| h.to_string_lossy().into_owned());
        let mut args = vec!["images", "pull", "--plain-http"];
        if let Some(h) = hd.as_deref() {
            args.extend(["--hosts-dir", h]);
        }
        args.extend_from_slice(extra);
        args.push(image);
        self.ctr(&args)
    }

    /// Image names containerd knows (`ctr images ls -q`).
    pub fn images(&self) -> Vec<String> {
        self.ctr(&["images", "ls", "-q"])
            .ok()
            .stdout
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `(name, target digest)` pairs from `ctr images ls`.
    pub fn image_digests(&self) -> Vec<(String, String)> {
        self.ctr(&["images", "ls"])
            .ok()
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((cols.first()?.to_string(), cols.get(2)?.to_string()))
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.proc.stop();
        unmount_under(self.dir.path());
    }
}

// ------------------------------------------------------------------------------------------
// podman

/// A `registries.conf` with `location` and its `mirrors` (host[:port][/path]), all
/// `insecure = true` (plain HTTP), no unqualified search.
pub fn registries_conf(location: &str, mirrors: &[&str]) -> String {
    let mut s = format!(
        "unqualified-search-registries = []\n\n[[registry]]\nlocation = {}\ninsecure = true\n",
        quoted(location)
    );
    for m in mirrors {
        s += &format!(
            "\n[[registry.mirror]]\nlocation = {}\ninsecure = true\n",
            quoted(m)
        );
    }
    s
}

/// podman (root, vfs storage, cgroupfs, file events) with all its state in a temp dir and
/// the given `registries.conf`.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    pub fn new(registries_conf: &str) -> Podman {
        require_tools(&["podman"]);
        let dir = temp_dir("acr-podman-");
        let d = dir.path();
        for sub in ["root", "runroot", "tmp", "libpod-tmp"] {
            fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let p = |s: &str| quoted(&d.join(s).to_string_lossy());
        fs::write(d.join("registries.conf"), registries_conf).expect("write registries.conf");
        fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = {}\ngraphroot = {}\n",
                p("runroot"),
                p("root")
            ),
        )
        .expect("write storage.conf");
        fs::write(
            d.join("containers.conf"),
            format!(
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = {}\ntmp_dir = {}\n",
                p("events.log"),
                p("libpod-tmp")
            ),
        )
        .expect("write containers.conf");
        fs::write(
            d.join("policy.json"),
            "{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}\n",
        )
        .expect("write policy.json");
        Podman { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman <global flags> <args>` with this instance's config and storage.
    pub fn podman(&self, args: &[&str]) -> CmdOutput {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("libpod-tmp"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", empty_auth_file())
            .env("TMPDIR", d.join("tmp"));
        run_cmd(cmd, COMMAND_TIMEOUT)
    }

    /// `podman pull <extra...> <image>` (signature policy: accept anything).
    pub fn pull_with(&self, image: &str, extra: &[&str]) -> CmdOutput {
        let policy = self.dir.path().join("policy.json");
        let policy = policy.to_string_lossy();
        let mut args = vec!["pull", "--signature-policy", &policy];
        args.extend_from_slice(extra);
        args.push(image);
        self.podman(&args)
    }

    /// `podman pull <image>`.
    pub fn pull(&self, image: &str) -> CmdOutput {
        self.pull_with(image, &[])
    }

    /// The manifest digest podman recorded for `image`.
    pub fn image_digest(&self, image: &str) -> String {
        self.podman(&["image", "inspect", "--format", "{{.Digest}}", image])
            .ok()
            .stdout
            .trim()
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}

// ------------------------------------------------------------------------------------------
// checks of the pure helpers (called from tests/selftest)

/// Checks the small pure helpers; call from a test.
pub fn check_pure_helpers() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"testuser:testpass"), "dGVzdHVzZXI6dGVzdHBhc3M=");
    assert_eq!(
        digest_of(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(pseudo_random_bytes("x", 100), pseudo_random_bytes("x", 100));
    assert_ne!(pseudo_random_bytes("x", 100), pseudo_random_bytes("y", 100));
    let e = parse_access_line(
        "127.0.0.1 - testuser [29/Nov/2026:18:31:56 +0000] \"HEAD /v2/library/test/manifests/1?ns=docker.io HTTP/1.1\" 200 0 \"\" \"containerd/1.6.20~ds1\"",
    )
    .expect("parses");
    assert_eq!(e.method, "HEAD");
    assert_eq!(e.path, "/v2/library/test/manifests/1?ns=docker.io");
    assert_eq!(e.status, 200);
    assert_eq!(e.user_agent, "containerd/1.6.20~ds1");
    assert!(parse_access_line("time=\"x\" level=info msg=\"listening on 127.0.0.1:1\"").is_none());
}

// ------------------------------------------------------------------------------------------
// additions for tests/mirror/acr.rs (the Azure Container Registry stand-in, harness/acr_standin.rs)

/// The token issuer's RSA key and self-signed certificate, `(key, cert)`: the pair
/// [`TokenServer`] signs with, for other token services (e.g. `tests/support/acr_standin.py`).
pub fn token_key_files() -> (PathBuf, PathBuf) {
    token_key_pair()
}

/// The python3 the harness runs its helper scripts with.
pub fn python3_bin() -> PathBuf {
    python3()
}

impl Registry {
    /// A registry whose config ends with `auth_yaml` verbatim (e.g. an `auth: token:` section
    /// naming a token service started by the test); `creds` are what [`push`] and
    /// [`raw_manifest`] use.
    pub fn start_with_auth_yaml(auth_yaml: &str, creds: Option<(String, String)>) -> Registry {
        Self::launch(temp_dir("acr-registry-"), auth_yaml, creds, None, None)
    }
}
