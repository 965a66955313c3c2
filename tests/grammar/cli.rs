//! The `acr` binary end to end: `init`, `dump`, `mirror start` (engine lifecycle, `--id`,
//! `--engine-name`, the `.process`/`.install` plugins, planned plugins, hot reload), and every
//! diagnostic a user can meet, run in temporary directories.
//!
//! Long-running children (`.loop`, hot reload) are polled, never slept on for a fixed time,
//! with generous deadlines: the machine is shared and slow. Each child is killed (by its own
//! pid) when its guard drops, also when a test fails.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod diagnostics;
mod engine;
mod init_dump;
mod reload;

const ACR: &str = env!("CARGO_BIN_EXE_acr");
/// The longest a command that should finish may take before the test calls it hung.
const FINISH: Duration = Duration::from_secs(120);
/// The longest to wait for a running child to print what a test expects.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// helpers

fn tmp() -> TempDir {
    tempfile::Builder::new()
        .prefix("acr-cli-")
        .tempdir()
        .expect("temp dir")
}

fn acr(dir: &Path) -> Command {
    let mut c = Command::new(ACR);
    c.current_dir(dir)
        .env_remove("REGISTRY_NAME")
        .env_remove("RUST_LOG")
        .env_remove("AZURE_STORAGE_ACCOUNT_NAME")
        // `.login-acr` without az tries the instance metadata service last: here a local port
        // nothing serves (tests talk to 127.0.0.1 only).
        .env(
            "ACR_IMDS_ENDPOINT",
            "http://127.0.0.1:9/metadata/identity/oauth2/token",
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Output of a finished command.
#[derive(Debug)]
struct Done {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Done {
    #[track_caller]
    fn no_panic(&self) -> &Self {
        assert!(
            !self.stderr.contains("panicked"),
            "acr panicked:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    fn success(&self) -> &Self {
        self.no_panic();
        assert_eq!(self.code, Some(0), "expected success:\n{self}");
        self
    }

    #[track_caller]
    fn code(&self, code: i32) -> &Self {
        self.no_panic();
        assert_eq!(self.code, Some(code), "expected exit {code}:\n{self}");
        self
    }

    #[track_caller]
    fn failure(&self) -> &Self {
        self.no_panic();
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a non-zero exit:\n{self}"
        );
        self
    }

    /// A non-zero exit whose stderr holds every one of `needles`.
    #[track_caller]
    fn fails_saying(&self, needles: &[&str]) -> &Self {
        self.failure();
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "no {needle:?} in stderr:
{self}"
            );
        }
        self
    }
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A child whose output is collected as it arrives. Killed on drop.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("spawn acr");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), stdout.clone()),
            collect(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls until `ready(stdout, stderr)` holds. False on timeout or if the child exits
    /// without it holding.
    fn wait_for(&mut self, within: Duration, ready: impl Fn(&str, &str) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if ready(&self.stdout(), &self.stderr()) {
                return true;
            }
            if self.exited().is_some() {
                // Let the readers drain, then look once more.
                thread::sleep(Duration::from_millis(100));
                return ready(&self.stdout(), &self.stderr());
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the child to exit on its own; kills it (and fails) after `within`.
    fn finish(mut self, within: Duration) -> Done {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "acr did not finish within {within:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Done {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Sends SIGTERM to the child (only this child, by its pid).
    fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `acr --runmd-path p.runmd mirror start` in `dir`, `source` written to `p.runmd` first;
/// the running acr.
fn spawn_start(dir: &Path, source: &str) -> Running {
    write(dir, "p.runmd", source);
    let mut c = acr(dir);
    c.args(["--runmd-path", "p.runmd", "mirror", "start"]);
    Running::spawn(c)
}

/// Runs `acr --registry NAME --registry-host HOST ARGS` in `dir` to completion.
fn run_for_registry(dir: &Path, (name, host): (&str, &str), args: &[&str]) -> Done {
    let mut all = vec!["--registry", name, "--registry-host", host];
    all.extend_from_slice(args);
    run(dir, &all)
}

/// Asserts that the file at `path` holds every one of `wants`; its text.
#[track_caller]
fn assert_file_holds(path: &Path, wants: &[&str]) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    for want in wants {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    text
}

/// Runs `acr ARGS` in `dir` to completion.
fn run(dir: &Path, args: &[&str]) -> Done {
    let mut c = acr(dir);
    c.args(args);
    Running::spawn(c).finish(FINISH)
}

/// Writes `source` to `dir/name` and returns its path.
fn write(dir: &Path, name: &str, source: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, source).expect("write runmd");
    path
}

/// Replaces `path` atomically (write a sibling, rename over), as careful editors do.
fn replace(path: &Path, source: &str) {
    let tmp = path.with_extension("runmd.tmp");
    std::fs::write(&tmp, source).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// `acr --runmd-path FILE mirror start EXTRA...` on `source`, in a fresh dir, to completion.
fn start(source: &str, extra: &[&str]) -> (TempDir, Done) {
    let dir = tmp();
    write(dir.path(), "p.runmd", source);
    let mut args = vec!["--runmd-path", "p.runmd", "mirror", "start"];
    args.extend_from_slice(extra);
    let done = run(dir.path(), &args);
    (dir, done)
}

/// [`start`] with no extra arguments, which must fail with every one of `needles` in stderr.
#[track_caller]
fn start_failing(source: &str, needles: &[&str]) -> (TempDir, Done) {
    let (dir, done) = start(source, &[]);
    done.fails_saying(needles);
    (dir, done)
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

fn count(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

/// The write end of a pipe whose read end is already closed: writing to it fails with EPIPE.
fn broken_pipe() -> Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) fills the two-element array on success.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe(2) failed");
    // SAFETY: both fds were just returned by pipe(2) and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

const WORLD: &str = ".world/azurecr.io/example/mirror.runmd";
