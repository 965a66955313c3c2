//! Child processes: each in its own process group, killed with its group on `Drop` and with
//! the test process (`PR_SET_PDEATHSIG`); commands run with a timeout and their output kept.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

// ------------------------------------------------------------------------------------------
// processes

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// All children are forked from one long-lived thread: `PR_SET_PDEATHSIG` fires when the
/// *thread* that forked dies, and this one lives as long as the test process.
pub(super) fn spawn_via_keeper(cmd: Command) -> io::Result<Child> {
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

pub(super) fn prepare(cmd: &mut Command) {
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

pub(super) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// True once `pid` (our child) has exited. Does not reap it, so neither the pid nor the
/// process group id can be reused before we kill the group and wait.
pub(super) fn has_exited(pid: u32) -> bool {
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

pub(super) fn kill_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on our own process group.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

pub(super) fn tail(text: &str, lines: usize) -> String {
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

    /// For a server that logs `PREFIX<port> ...` once it listens on 127.0.0.1 (our Python
    /// stand-ins): its address, once it said so (within `timeout`) and answers `/healthz`.
    pub(super) fn reported_address(&self, prefix: &str, timeout: Duration) -> SocketAddr {
        let mut port = None;
        let found = wait_until(timeout, || {
            port = self.log().lines().find_map(|l| {
                l.strip_prefix(prefix)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok())
            });
            port.is_some() || !self.is_running()
        });
        let Some(port) = port.filter(|_| found) else {
            self.panic_with_log("did not report its listening port");
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("http://{addr}/healthz");
        if !wait_until(Duration::from_secs(10), || {
            try_http_request("GET", &url, &[], None).is_ok_and(|r| r.status == 200)
        }) {
            self.panic_with_log("does not answer /healthz");
        }
        addr
    }

    pub(super) fn panic_with_log(&self, what: &str) -> ! {
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
