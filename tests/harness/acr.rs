//! The one launcher of acr: the `acr` binary with a clean environment ([`acr_command`]), a
//! start that picks a free port and waits until acr listens on it ([`spawn_listening`]), and
//! [`Acr`], a running `acr --runmd-path DIR/mirror.runmd mirror start` over a runmd text
//! written for the test, with [`AcrOptions`] for the environment, files beside the runmd,
//! `--hosts-dir` and more `mirror start` arguments. `harness::acr_standin` starts acr the
//! way `acr init` sets it up, through the same two functions.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use super::*;

/// Where the runmd text names acr's own address; replaced by `127.0.0.1:PORT` at start.
pub const ACR: &str = "{ACR}";

/// Generous, for a shared 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables of the machine or of the test runner that never reach acr unless a test gives
/// them on purpose (credentials, registry and Azure settings).
const SCRUBBED: &[&str] = &[
    "ACR_",
    "DOCKER_",
    "REGISTRY_",
    "AZURE_",
    "AZ_",
    "MSI_",
    "IDENTITY_",
    "IMDS_",
];

/// The `acr` binary run in `dir` (also its `HOME`), with no credential of the machine, plain
/// logs (`RUST_LOG` from `ACR_TEST_LOG`, default `info`) and no colours.
pub fn acr_command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if SCRUBBED.iter().any(|p| k.starts_with(p)) || k == "XDG_RUNTIME_DIR" {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", dir)
        .env(
            "RUST_LOG",
            std::env::var("ACR_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1");
    cmd
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

/// How a wait for `Listening on ADDR` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Listening,
    Exited,
    TimedOut,
}

/// Waits up to `timeout` until `proc` logs `Listening on {addr}` or exits.
pub fn wait_listening(proc: &Proc, addr: &str, timeout: Duration) -> Readiness {
    let mut up = false;
    let ended = wait_until(timeout, || {
        up = proc.log().contains(&format!("Listening on {addr}"));
        up || !proc.is_running()
    });
    match (ended, up) {
        (true, true) => Readiness::Listening,
        (true, false) => Readiness::Exited,
        _ => Readiness::TimedOut,
    }
}

/// Starts acr on a free port until it listens: `command(addr)` builds the command for the
/// address `127.0.0.1:PORT` (writing what it needs first), its output goes to
/// `log_dir/acr-N.log`. A port another test took meanwhile is retried with a new one;
/// otherwise a start that exits or times out panics with the log and `context()`.
pub fn spawn_listening(
    log_dir: &Path,
    timeout: Duration,
    mut command: impl FnMut(&str) -> Command,
    context: impl Fn() -> String,
) -> AcrProcess {
    let mut last = String::new();
    for attempt in 0..10 {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cmd = command(&addr);
        let log = log_dir.join(format!("acr-{attempt}.log"));
        let proc = Proc::spawn("acr", cmd, &log);
        let readiness = wait_listening(&proc, &addr, timeout);
        if readiness == Readiness::Listening {
            return AcrProcess { proc, port };
        }
        last = proc.log();
        if last.contains("ddress already in use") {
            continue;
        }
        panic!(
            "acr did not start (attempt {attempt}, {readiness:?}):\n{last}{}",
            context()
        );
    }
    panic!("acr: no free port after 10 attempts:\n{last}");
}

/// How to start acr.
#[derive(Default, Clone)]
pub struct AcrOptions {
    /// Extra environment for acr's process (credential sources, PATH).
    pub env: Vec<(String, String)>,
    /// `mirror start --hosts-dir DIR`.
    pub hosts_dir: Option<PathBuf>,
    /// Files written beside the runmd before start: (relative path, content).
    pub files: Vec<(String, String)>,
    /// Extra arguments after `mirror start` (e.g. `--shutdown-grace 1`).
    pub args: Vec<String>,
}

/// `acr --runmd-path DIR/mirror.runmd mirror start` on a free 127.0.0.1 port, cwd DIR;
/// killed on drop.
pub struct Acr {
    running: AcrProcess,
    dir: TempDir,
    runmd: PathBuf,
}

/// A running acr listening on `127.0.0.1:PORT`; killed (with its process group) on drop.
/// [`Acr`] and `AcrMirror` dereference to it.
pub struct AcrProcess {
    proc: Proc,
    port: u16,
}

/// `Deref` and `DerefMut` to the [`AcrProcess`] a launcher holds in its `running` field, so
/// the launcher answers `port()`, `log()`, `fetch()` ... itself.
macro_rules! deref_to_acr_process {
    ($launcher:ty) => {
        impl std::ops::Deref for $launcher {
            type Target = AcrProcess;
            fn deref(&self) -> &AcrProcess {
                &self.running
            }
        }

        impl std::ops::DerefMut for $launcher {
            fn deref_mut(&mut self) -> &mut AcrProcess {
                &mut self.running
            }
        }
    };
}
pub(crate) use deref_to_acr_process;

deref_to_acr_process!(Acr);

impl Acr {
    pub fn start(runmd: &str) -> Acr {
        Acr::start_with(runmd, AcrOptions::default())
    }

    /// [`launch`](Self::launch), then `GET /v2/` must answer 200.
    pub fn start_with(runmd: &str, opts: AcrOptions) -> Acr {
        let acr = Acr::launch(runmd, opts);
        let r = acr.fetch("GET", "/v2/", &[]);
        assert_eq!(r.status, 200, "acr does not answer /v2/: {}", acr.log());
        acr
    }

    /// Writes the options' files and `runmd` (with [`ACR`] replaced by the chosen address)
    /// and starts acr over it; ready when its log says `Listening on 127.0.0.1:PORT` (with
    /// client auth or https, `/v2/` over plain http need not answer 200).
    pub fn launch(runmd: &str, opts: AcrOptions) -> Acr {
        let dir = temp_dir("acr-mirror-");
        for (name, content) in &opts.files {
            let p = dir.path().join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&p, content).expect("write file beside the runmd");
        }
        let path = dir.path().join("mirror.runmd");
        let running = spawn_listening(
            dir.path(),
            START_TIMEOUT,
            |addr| {
                std::fs::write(&path, runmd.replace(ACR, addr)).expect("write runmd");
                let mut cmd = acr_command(dir.path());
                cmd.arg("--runmd-path")
                    .arg(&path)
                    .args(["mirror", "start"])
                    .args(&opts.args);
                if let Some(h) = &opts.hosts_dir {
                    cmd.arg("--hosts-dir").arg(h);
                }
                for (k, v) in &opts.env {
                    cmd.env(k, v);
                }
                cmd
            },
            String::new,
        );
        Acr {
            running,
            dir,
            runmd: path,
        }
    }

    /// The directory of the runmd file (acr's world directory and cwd).
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
}

impl AcrProcess {
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
    /// `https://127.0.0.1:PORT`
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// Sends `signal` to acr (the process, not its group).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, which has not been reaped (so its pid is ours).
        let r = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(r, 0, "kill({}, {signal})", self.pid());
    }
    /// Waits up to `timeout` for acr to exit by itself; its exit status, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if !wait_until(timeout, || !self.proc.is_running()) {
            return None;
        }
        self.proc.stop()
    }
    /// Stops acr (kills its process group).
    pub fn stop(&mut self) {
        self.proc.stop();
    }
    /// Stops acr and starts `cmd` in its place (on the same address, which `cmd`'s pipeline
    /// names), logging to `log`; waits up to `timeout` until it listens again.
    pub fn relaunch(&mut self, cmd: Command, log: &Path, timeout: Duration) {
        self.proc.stop();
        let proc = Proc::spawn("acr", cmd, log);
        let readiness = wait_listening(&proc, &self.host(), timeout);
        assert!(
            readiness == Readiness::Listening,
            "acr did not come up again ({readiness:?}):\n{}",
            proc.log()
        );
        self.proc = proc;
    }
    /// acr's one-line-per-request log lines.
    pub fn request_lines(&self) -> Vec<String> {
        request_lines(&self.log())
    }
    /// Request lines that contain every one of `parts`.
    pub fn requests_with(&self, parts: &[&str]) -> Vec<String> {
        requests_with(&self.log(), parts)
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
            let r = self.fetch(
                "GET",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Accept", ACCEPT_MANIFESTS)],
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

/// acr's one-line-per-request lines of `log`.
pub fn request_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" method=") && l.contains(" status="))
        .map(str::to_string)
        .collect()
}

/// The request lines of `log` that contain every one of `parts`.
pub fn requests_with(log: &str, parts: &[&str]) -> Vec<String> {
    request_lines(log)
        .into_iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .collect()
}

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`, `RssAnon`...), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

impl Served for AcrProcess {
    fn base_url(&self) -> String {
        self.url()
    }
}
