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

// ---------------------------------------------------------------------------------------------
// init

#[test]
fn init_writes_the_template_and_prints_its_absolute_path() {
    let dir = tmp();
    let done = run(dir.path(), &["--registry", "example", "init"]);
    done.success();
    let path = dir.path().join(WORLD);
    assert!(path.is_file(), "{done}");
    let printed = PathBuf::from(done.stdout.trim_end_matches('\n'));
    assert!(printed.is_absolute(), "{done}");
    assert_eq!(
        std::fs::canonicalize(&printed).unwrap(),
        std::fs::canonicalize(&path).unwrap()
    );
    assert_eq!(done.stdout.lines().count(), 1, "{done}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("{{"), "{text}");
    for want in [
        "# acr mirror for example.azurecr.io",
        ": .login-acr example",
        ": .mirror example.azurecr.io",
        ": .host localhost:8578, resolve, pull",
        "+ .proxy localhost:8578",
        ": ACR_OPERATING_SYSTEM .env ubuntu",
        ": ACR_TELEPORT_FORMAT .env overlaybd",
        ":   .discover application/vnd.azure.artifact.streaming.link.v1",
        ": .login-server https://example.azurecr.io",
        ": .header x-ms-upgrade-if-streamable overlaybd",
        ":   .teleport overlaybd",
        ": work_dir .symbol .world/azurecr.io/example",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

#[test]
fn init_reruns_but_keeps_hand_edits_without_force() {
    let dir = tmp();
    run(dir.path(), &["--registry", "example", "init"]).success();
    let path = dir.path().join(WORLD);
    let first = std::fs::read_to_string(&path).unwrap();

    // A re-run without edits succeeds and writes the same file.
    let again = run(dir.path(), &["--registry", "example", "init"]);
    again.success();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);

    // After a hand edit, a re-run refuses and leaves the file alone.
    let edited = format!("{first}\nA note of mine.\n");
    std::fs::write(&path, &edited).unwrap();
    let refused = run(dir.path(), &["--registry", "example", "init"]);
    refused.code(1);
    assert!(refused.stderr.contains("edited"), "{refused}");
    assert!(refused.stderr.contains("--force"), "{refused}");
    assert!(refused.stdout.is_empty(), "{refused}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);

    // --force overwrites.
    let forced = run(dir.path(), &["--registry", "example", "init", "--force"]);
    forced.success();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    // ... and a later plain re-run is fine again.
    run(dir.path(), &["--registry", "example", "init"]).success();
}

#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let before = tmp();
    let after = tmp();
    run(before.path(), &["--registry", "example", "init"]).success();
    run(after.path(), &["init", "--registry", "example"]).success();
    let a = std::fs::read_to_string(before.path().join(WORLD)).unwrap();
    let b = std::fs::read_to_string(after.path().join(WORLD)).unwrap();
    assert_eq!(a, b);
    let d1 = run(after.path(), &["dump", "--registry", "example"]);
    d1.success();
    let d2 = run(after.path(), &["--registry", "example", "dump"]);
    assert_eq!(d1.stdout, d2.stdout);
    // REGISTRY_NAME works like --registry.
    let mut c = acr(after.path());
    c.arg("dump").env("REGISTRY_NAME", "example");
    let d3 = Running::spawn(c).finish(FINISH);
    d3.success();
    assert_eq!(d3.stdout, d1.stdout);
}

#[test]
fn init_options_end_up_in_the_file() {
    let dir = tmp();
    let done = run(
        dir.path(),
        &[
            "--registry",
            "reg",
            "--registry-host",
            "example.com",
            "init",
            "--mirror-address",
            "0.0.0.0:9000",
            "--teleport-format",
            "none",
            "--operating-system",
            "fedora",
        ],
    );
    done.success();
    let path = dir.path().join(".world/example.com/reg/mirror.runmd");
    assert!(
        done.stdout
            .trim_end()
            .ends_with(".world/example.com/reg/mirror.runmd"),
        "{done}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for want in [
        "# acr mirror for reg.example.com",
        ": .mirror reg.example.com",
        ": .host 0.0.0.0:9000, resolve, pull",
        "+ .proxy 0.0.0.0:9000",
        ": ACR_OPERATING_SYSTEM .env fedora",
        ": ACR_TELEPORT_FORMAT .env none",
        ":   .teleport none",
        ": work_dir .symbol .world/example.com/reg",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    // No overlaybd, no referrers type to discover.
    assert!(text.contains(":   .discover\n"), "{text}");
    assert!(!text.contains("streaming.link"), "{text}");
    assert!(!text.contains("localhost:8578"), "{text}");
    // And it compiles.
    let dump = run(
        dir.path(),
        &[
            "--registry",
            "reg",
            "--registry-host",
            "example.com",
            "dump",
        ],
    );
    dump.success();
    assert!(
        dump.stdout.contains("7: mirror \"reg.example.com\""),
        "{dump}"
    );
    assert!(dump.stdout.contains("      host 0.0.0.0:9000\n"), "{dump}");
}

#[test]
fn init_rejects_bad_names_and_needs_a_registry() {
    let dir = tmp();
    let done = run(dir.path(), &["init"]);
    done.code(1);
    assert!(done.stderr.contains("acr --registry NAME init"), "{done}");
    let done = run(dir.path(), &["--registry", "a b/../c", "init"]);
    done.code(1);
    assert!(done.stderr.contains("--registry"), "{done}");
    assert!(!dir
        .path()
        .join(".world")
        .join("azurecr.io")
        .join("a b")
        .exists());
    let done = run(
        dir.path(),
        &["--registry", "ok", "init", "--mirror-address", "x y"],
    );
    done.code(1);
    assert!(done.stderr.contains("--mirror-address"), "{done}");
}

// ---------------------------------------------------------------------------------------------
// dump

#[test]
fn dump_of_the_default_pipeline() {
    let dir = tmp();
    run(dir.path(), &["--registry", "example", "init"]).success();
    let done = run(dir.path(), &["--registry", "example", "dump"]);
    done.success();
    // The whole tree, line by line: the ids are the ones the old tool's README documents
    // (5 login-acr, 6 install, 7 mirror) and users pass to `mirror start --id`.
    let expected = [
        "1: mirror",
        "",
        "  2: install mirror",
        "\t# current_dir: .world/azurecr.io/example",
        "    3: process \"sh\"",
        "      arg setup-env.sh",
        "      env [ACR_OPERATING_SYSTEM=ubuntu, ACR_TELEPORT_FORMAT=overlaybd]",
        "",
        "  4: start mirror",
        "\t# file_src: .world/azurecr.io/example/access_token",
        "\t# src_dir: .",
        "\t# work_dir: .world/azurecr.io/example",
        "    5: login-acr \"example\"",
        "      login-server https://example.azurecr.io",
        "    6: install \"access_token\"",
        "    7: mirror \"example.azurecr.io\"",
        "      host localhost:8578",
        "      capability [resolve, pull]",
        "      header x-ms-upgrade-if-streamable=overlaybd",
        "",
        "Engine control block: ``` mirror @ 1",
        "  events: install, start",
        "  Loop(1)",
        "",
        "Proxy routes:",
        "  localhost:8578 (block 4)",
        "    8: HEAD, GET /v2/<name>/manifests",
        "      9: login \"access_token\"",
        "      10: authn \"oauth2\"",
        "      11: resolve \"application/vnd.oci.image.manifest.v1+json\"",
        "      12: discover \"application/vnd.azure.artifact.streaming.link.v1\"",
        "      13: teleport \"overlaybd\"",
        "    14: HEAD, GET /v2/<name>/blobs",
        "      15: login \"access_token\"",
        "      16: authn \"oauth2\"",
        "      17: pull",
        "    18: GET /v2/<name>/tags",
        "      19: login \"access_token\"",
        "      20: authn \"oauth2\"",
        "      21: resolve",
        "    22: GET /v2/<name>/referrers",
        "      23: login \"access_token\"",
        "      24: authn \"oauth2\"",
        "      25: resolve",
    ];
    let out = lines(&done.stdout);
    for (n, (got, want)) in out.iter().zip(expected.iter()).enumerate() {
        assert_eq!(got, want, "line {} of the dump:\n{}", n + 1, done.stdout);
    }
    assert_eq!(
        out.len(),
        expected.len(),
        "the dump has {} lines, not {}:\n{}",
        out.len(),
        expected.len(),
        done.stdout
    );
}

#[test]
fn dump_reports_a_typo_with_file_line_col_and_a_suggestion() {
    let dir = tmp();
    let src = "# a pipeline\n\n``` start mirror\n+ .runtime\n: .resolv x\n```\n";
    let path = write(dir.path(), "typo.runmd", src);
    let file = path.display().to_string();
    let done = run(dir.path(), &["--runmd-path", &file, "dump"]);
    done.code(2);
    assert!(done.stderr.contains(&format!("{file}:5:3")), "{done}");
    assert!(done.stderr.contains("unknown plugin '.resolv'"), "{done}");
    assert!(done.stderr.contains("did you mean '.resolve'?"), "{done}");
    // The offending line and a caret under the fault.
    assert!(
        done.stderr.contains("5 | : .resolv x\n  |   ^^^^^^^\n"),
        "{done}"
    );
    assert!(done.stdout.is_empty(), "{done}");
}

#[test]
fn dump_without_a_file_says_to_run_init() {
    let dir = tmp();
    let done = run(dir.path(), &["--registry", "example", "dump"]);
    done.code(1);
    assert!(
        done.stderr.contains("acr --registry example init"),
        "{done}"
    );
}

// ---------------------------------------------------------------------------------------------
// mirror start: the missing file

#[test]
fn mirror_start_without_a_file_says_to_run_init() {
    let dir = tmp();
    let done = run(dir.path(), &["--registry", "example", "mirror", "start"]);
    done.failure();
    assert!(
        done.stderr.contains("acr --registry example init"),
        "{done}"
    );
    assert!(done.stderr.contains(WORLD), "{done}");
    // Without --registry it says which option names the registry.
    let done = run(dir.path(), &["mirror", "start"]);
    done.failure();
    assert!(done.stderr.contains("acr --registry NAME init"), "{done}");
    // A --runmd-path that does not exist.
    let done = run(
        dir.path(),
        &["--runmd-path", "nope.runmd", "mirror", "start"],
    );
    done.failure();
    assert!(done.stderr.contains("nope.runmd"), "{done}");
    assert!(!dir.path().join(".world").exists());
}

// ---------------------------------------------------------------------------------------------
// diagnostics

/// Compiles `source` with `dump` and with `mirror start`: both exit 2 with `FILE:LINE:COL`, the
/// message and the hint, print nothing on stdout, and never panic.
#[track_caller]
fn assert_diagnostic(source: &str, line: u32, col: u32, message: &str, hint: &str) {
    let dir = tmp();
    write(dir.path(), "bad.runmd", source);
    for command in [&["dump"][..], &["mirror", "start"][..]] {
        let mut args = vec!["--runmd-path", "bad.runmd"];
        args.extend_from_slice(command);
        let done = run(dir.path(), &args);
        done.code(2);
        let place = format!("bad.runmd:{line}:{col}\n");
        assert!(done.stderr.contains(&place), "{place:?} in\n{done}");
        assert!(done.stderr.contains(message), "{message:?} in\n{done}");
        assert!(
            done.stderr.contains(&format!("= hint: {hint}")),
            "hint {hint:?} in\n{done}"
        );
        assert!(
            done.stdout.is_empty(),
            "a bad file must not half-start:\n{done}"
        );
    }
}

const ENGINE: &str = "``` mirror\n+ .engine\n: .event a\n```\n";

#[test]
fn diagnostic_unknown_plugin() {
    assert_diagnostic(
        &format!("{ENGINE}``` a mirror\n+ .runtime\n: .println before\n:   .resolv x\n```\n"),
        8,
        5,
        "unknown plugin '.resolv'",
        "did you mean '.resolve'?",
    );
    assert_diagnostic(
        &format!("{ENGINE}``` a mirror\n+ .runtime\n: .zzzzzzzz\n```\n"),
        7,
        3,
        "unknown plugin '.zzzzzzzz'",
        "the plugins are .println .process",
    );
}

#[test]
fn diagnostic_unknown_attribute() {
    assert_diagnostic(
        "``` mirror\n+ .engin\n```\n",
        2,
        3,
        "unknown attribute '.engin'",
        "did you mean '.engine'?",
    );
    assert_diagnostic(
        "``` a mirror\n+ .println hi\n```\n",
        2,
        3,
        "unknown attribute '.println'",
        "plugins are called on `:` lines after `+ .runtime`: `: .println`",
    );
}

#[test]
fn diagnostic_bad_values() {
    assert_diagnostic(
        "``` a b\n+ retries .int abc\n```\n",
        2,
        16,
        "`abc` is not an integer",
        "write a whole number such as `.int 5`",
    );
    assert_diagnostic(
        &format!("{ENGINE}``` a mirror\n+ .runtime\n: .timer 5 parsecs\n```\n"),
        7,
        10,
        "unknown time unit `parsecs`",
        "use ms, s, min or h",
    );
}

#[test]
fn diagnostic_unclosed_fence() {
    assert_diagnostic(
        "# title\n\ntext\n``` a b\n+ x .true\n",
        4,
        1,
        "this block is never closed",
        "end the block with a line of three backticks (```)",
    );
}

#[test]
fn diagnostic_colon_with_nothing_to_attach_to() {
    assert_diagnostic(
        "``` a b\n: .println hi\n```\n",
        2,
        3,
        "`: .println` has nothing to attach to",
        "start with a `+` line first, e.g. `+ .runtime` before plugin calls",
    );
    assert_diagnostic(
        "``` m\n: .event a\n```\n",
        2,
        3,
        "`: .event` has nothing to attach to",
        "engine options follow `+ .engine`",
    );
    assert_diagnostic(
        "``` a b\n: .manifests get\n```\n",
        2,
        3,
        "`: .manifests` has nothing to attach to",
        "routes follow `+ .proxy ADDR`",
    );
}

#[test]
fn diagnostic_unknown_route_method() {
    assert_diagnostic(
        "``` start mirror\n+ .proxy localhost:8578\n: .manifests head, get, put\n```\n",
        3,
        25,
        "unknown method 'put' for `.manifests`",
        "acr is a pull-only mirror",
    );
}

#[test]
fn diagnostic_unknown_engine_option() {
    assert_diagnostic(
        "``` mirror\n+ .engine\n: .event a\n: .loopp\n```\n``` a mirror\n+ .runtime\n```\n",
        4,
        3,
        "unknown engine option '.loopp'",
        "did you mean '.loop'?",
    );
}

#[test]
fn diagnostic_event_without_block() {
    assert_diagnostic(
        "``` mirror\n+ .engine\n: .event install\n: .event strat\n```\n``` install mirror\n+ .runtime\n```\n``` start mirror\n+ .runtime\n```\n",
        4,
        10,
        "there is no block ``` strat mirror",
        "did you mean 'start'?",
    );
    assert_diagnostic(
        "``` mirror\n+ .engine\n: .event nothing\n```\n",
        3,
        10,
        "there is no block ``` nothing mirror",
        "add a block ``` nothing mirror",
    );
}

#[test]
fn diagnostic_next_to_a_missing_engine() {
    assert_diagnostic(
        "``` mirror\n+ .engine\n: .event a\n: .next elsewhere\n```\n``` a mirror\n+ .runtime\n```\n",
        4,
        9,
        "there is no engine 'elsewhere' to hand over to",
        "add a control block ``` elsewhere with `+ .engine`",
    );
}

#[test]
fn diagnostic_duplicate_route() {
    assert_diagnostic(
        "``` start mirror\n+ .proxy localhost:8578\n: .manifests head, get\n:   .resolve\n: .blobs get\n: .manifests get\n```\n",
        6,
        3,
        "GET manifests is already routed",
        "line 3 declares it first; each method has one route",
    );
}

#[test]
fn diagnostic_too_many_names() {
    assert_diagnostic(
        "``` a b\n+ x y z .int 1\n```\n",
        2,
        7,
        "too many names before the type",
        "a line takes at most a name and a symbol before its `.type`",
    );
}

#[test]
fn diagnostic_prose_inside_a_fence() {
    assert_diagnostic(
        "``` a b\n+ x .int 1\nThis sentence belongs outside.\n```\n",
        3,
        1,
        "a runmd line starts with `+`, `:`, `add` or `define`",
        "prose belongs outside the fences; inside, a comment starts with `#` or `//`",
    );
}

#[test]
fn diagnostic_line_without_a_type() {
    assert_diagnostic(
        "``` a b\n+ debug\n```\n",
        2,
        8,
        "expected a `.type` or `.attribute` on this line",
        "write `+ debug .TYPE VALUE`",
    );
}

#[test]
fn diagnostics_all_at_once_and_columns_count_characters() {
    let dir = tmp();
    // Non-ASCII before the fault: columns are characters, not bytes.
    let src = "``` a b\n+ a b <größe> c .int 1\n+ x .int 1\n:\t.println é\n```\n";
    write(dir.path(), "bad.runmd", src);
    let done = run(dir.path(), &["--runmd-path", "bad.runmd", "dump"]);
    done.code(2);
    assert!(done.stderr.contains("bad.runmd:2:15\n"), "{done}");
    assert!(done.stderr.contains("too many names"), "{done}");
    assert!(done.stderr.contains("bad.runmd:4:3\n"), "{done}");
    assert!(done.stderr.contains("2 errors in bad.runmd"), "{done}");
}

// ---------------------------------------------------------------------------------------------
// engine lifecycle

/// An engine `mirror` with `options`, events `a` (prints A1, A2) and `b` (prints B).
fn two_events(options: &str) -> String {
    format!(
        "# test\n\n``` mirror\n+ .engine\n{options}```\n\n``` a mirror\n+ .runtime\n: .println A1\n: .println A2\n```\n\n``` b mirror\n+ .runtime\n: .println B\n```\n"
    )
}
// ids: 1 mirror, 2 a mirror, 3 A1, 4 A2, 5 b mirror, 6 B

#[test]
fn repeat_runs_n_passes_in_all() {
    let (_d, done) = start(&two_events(": .event a\n: .event b\n: .repeat 3\n"), &[]);
    done.success();
    assert_eq!(lines(&done.stdout), ["A1", "A2", "B"].repeat(3), "{done}");
}

#[test]
fn exit_and_the_default_run_one_pass() {
    for options in [
        ": .event a\n: .event b\n: .exit\n",
        ": .event a\n: .event b\n",
    ] {
        let (_d, done) = start(&two_events(options), &[]);
        done.success();
        assert_eq!(
            lines(&done.stdout),
            ["A1", "A2", "B"],
            "{options:?}\n{done}"
        );
    }
}

#[test]
fn once_runs_on_the_first_pass_only() {
    let (_d, done) = start(&two_events(": .once a\n: .event b\n: .repeat 3\n"), &[]);
    done.success();
    assert_eq!(lines(&done.stdout), ["A1", "A2", "B", "B", "B"], "{done}");
}

#[test]
fn next_hands_over_to_another_engine() {
    let src = format!(
        "{}``` other\n+ .engine\n: .event third\n: .repeat 2\n```\n``` third other\n+ .runtime\n: .println C\n```\n",
        two_events(": .event a\n: .next other\n")
    );
    let (_d, done) = start(&src, &[]);
    done.success();
    assert_eq!(lines(&done.stdout), ["A1", "A2", "C", "C"], "{done}");
}

#[test]
fn engine_name_picks_the_engine() {
    let src = format!(
        "{}``` other\n+ .engine\n: .event third\n```\n``` third other\n+ .runtime\n: .println C\n```\n",
        two_events(": .event a\n")
    );
    let (dir, done) = start(&src, &["--engine-name", "other"]);
    done.success();
    assert_eq!(lines(&done.stdout), ["C"], "{done}");
    let done = run(
        dir.path(),
        &[
            "--runmd-path",
            "p.runmd",
            "mirror",
            "start",
            "--engine-name",
            "nope",
        ],
    );
    done.code(1);
    assert!(done.stderr.contains("there is no engine 'nope'"), "{done}");
    assert!(done.stderr.contains("mirror, other"), "{done}");
    assert!(done.stdout.is_empty(), "{done}");
}

#[test]
fn id_starts_at_a_call() {
    // Start at A2 (id 4): A1 of the first pass does not print, everything after does.
    let (_d, done) = start(&two_events(": .event a\n: .event b\n"), &["--id", "4"]);
    done.success();
    assert_eq!(lines(&done.stdout), ["A2", "B"], "{done}");
    // Start at B (id 6).
    let (_d, done) = start(&two_events(": .event a\n: .event b\n"), &["--id", "6"]);
    done.success();
    assert_eq!(lines(&done.stdout), ["B"], "{done}");
    // An event block's id starts at its first call.
    let (_d, done) = start(&two_events(": .event a\n: .event b\n"), &["--id", "5"]);
    done.success();
    assert_eq!(lines(&done.stdout), ["B"], "{done}");
}

#[test]
fn id_applies_to_the_first_pass_only() {
    let (_d, done) = start(
        &two_events(": .event a\n: .event b\n: .repeat 2\n"),
        &["--id", "6"],
    );
    done.success();
    assert_eq!(lines(&done.stdout), ["B", "A1", "A2", "B"], "{done}");
}

#[test]
fn id_that_is_not_a_call_fails_with_a_message() {
    for id in ["99", "1"] {
        let (_d, done) = start(&two_events(": .event a\n: .event b\n"), &["--id", id]);
        done.code(1);
        assert!(
            done.stderr.contains(&format!(
                "there is no call or event {id} in engine 'mirror'"
            )),
            "{done}"
        );
        assert!(done.stderr.contains("acr dump"), "{done}");
        assert!(done.stdout.is_empty(), "{done}");
    }
    let (_d, done) = start(&two_events(": .event a\n"), &["--id", "many"]);
    done.code(2); // clap's usage error
    assert!(done.stderr.contains("--id"), "{done}");
}

#[test]
fn loop_does_not_exit() {
    let dir = tmp();
    write(
        dir.path(),
        "p.runmd",
        "``` mirror\n+ .engine\n: .event tick\n: .loop\n```\n``` tick mirror\n+ .runtime\n: .println tick\n: .timer 50 ms\n```\n",
    );
    let mut c = acr(dir.path());
    c.args(["--runmd-path", "p.runmd", "mirror", "start"]);
    let mut child = Running::spawn(c);
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "tick") >= 4),
        "expected more than two ticks\n{}",
        child.describe()
    );
    assert!(
        child.exited().is_none(),
        "a .loop engine exited\n{}",
        child.describe()
    );
    // SIGTERM stops it cleanly.
    child.terminate();
    let done = child.finish(FINISH);
    done.success();
    assert!(done.stderr.contains("stopping on signal"), "{done}");
}

// ---------------------------------------------------------------------------------------------
// plugins

#[test]
fn process_with_args_flags_env_and_current_dir() {
    let dir = tmp();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let src = r#"``` mirror
+ .engine
: .event run
```
``` run mirror
: current_dir .symbol sub
+ .runtime
: .process sh -c
: .arg echo "K=$K J=$J first=$1 second=$2"; pwd
: .flag zero one
: .arg two words
: .env K=kv
: J .env j value
```
"#;
    write(dir.path(), "p.runmd", src);
    let done = run(dir.path(), &["--runmd-path", "p.runmd", "mirror", "start"]);
    done.success();
    let sub = std::fs::canonicalize(dir.path().join("sub")).unwrap();
    assert_eq!(
        lines(&done.stdout),
        [
            "K=kv J=j value first=one second=two words",
            sub.to_str().unwrap()
        ],
        "{done}"
    );
}

#[test]
fn process_runs_in_the_current_directory_by_default() {
    let (dir, done) = start(
        "``` mirror\n+ .engine\n: .event run\n```\n``` run mirror\n+ .runtime\n: .process pwd\n```\n",
        &[],
    );
    done.success();
    let here = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(lines(&done.stdout), [here.to_str().unwrap()], "{done}");
}

#[test]
fn a_failing_process_fails_the_engine() {
    let (_d, done) = start(
        "``` mirror\n+ .engine\n: .event run\n: .loop\n```\n``` run mirror\n+ .runtime\n: .println before\n: .process sh -c\n: .arg exit 3\n: .println after\n```\n",
        &[],
    );
    done.failure();
    assert!(done.stderr.contains("'.process' (call 4)"), "{done}");
    assert!(done.stderr.contains("exit status: 3"), "{done}");
    assert_eq!(lines(&done.stdout), ["before"], "{done}");
    // A program that does not exist.
    let (_d, done) = start(
        "``` mirror\n+ .engine\n: .event run\n```\n``` run mirror\n+ .runtime\n: .process /no/such/program\n```\n",
        &[],
    );
    done.failure();
    assert!(done.stderr.contains("'.process' (call 3)"), "{done}");
    assert!(
        done.stderr.contains("cannot start `/no/such/program`"),
        "{done}"
    );
}

#[test]
fn install_copies_from_src_dir_to_work_dir() {
    let dir = tmp();
    std::fs::create_dir_all(dir.path().join("src/nested")).unwrap();
    std::fs::write(dir.path().join("src/token"), "secret-ish\n").unwrap();
    std::fs::write(dir.path().join("src/nested/f"), "nested\n").unwrap();
    let src = "``` mirror\n+ .engine\n: .event setup\n```\n``` setup mirror\n: src_dir .symbol src\n: work_dir .symbol out/deep\n+ .runtime\n: .install token\n: .install nested/f\n```\n";
    write(dir.path(), "p.runmd", src);
    let done = run(dir.path(), &["--runmd-path", "p.runmd", "mirror", "start"]);
    done.success();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/deep/token")).unwrap(),
        "secret-ish\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/deep/nested/f")).unwrap(),
        "nested\n"
    );
    // A missing source names the call.
    let src = src.replace(": .install nested/f\n", ": .install missing\n");
    write(dir.path(), "p.runmd", &src);
    let done = run(dir.path(), &["--runmd-path", "p.runmd", "mirror", "start"]);
    done.failure();
    assert!(done.stderr.contains("'.install' (call 4)"), "{done}");
    assert!(done.stderr.contains("missing"), "{done}");
}

#[test]
fn install_without_work_dir_says_how_to_set_it() {
    let (_d, done) = start(
        "``` mirror\n+ .engine\n: .event setup\n```\n``` setup mirror\n+ .runtime\n: .install f\n```\n",
        &[],
    );
    done.failure();
    assert!(done.stderr.contains("work_dir"), "{done}");
}

/// Every plugin the catalogue lists (and so every one a pipeline may name) is built: none is
/// left "planned" (`run: None`), which would fail at run time with "not built yet".
#[test]
fn every_catalogued_plugin_is_built() {
    let names: Vec<&str> = acr_plugins::catalogue().iter().map(|p| p.name).collect();
    assert!(names.len() >= 13, "{names:?}");
    for spec in acr_plugins::catalogue() {
        assert!(spec.run.is_some(), "'.{}' is still planned", spec.name);
        assert!(spec.planned.is_none(), "'.{}' is still planned", spec.name);
    }
}

#[test]
fn the_default_pipeline_runs_install_then_stops_at_login() {
    let dir = tmp();
    run(dir.path(), &["--registry", "example", "init"]).success();
    // `install` runs the set-up script (which only checks the node); `start` then fails at
    // `.login-acr` (no `az` and no Azure AD identity on this machine), naming the call and
    // saying what to do.
    let done = run(dir.path(), &["--registry", "example", "mirror", "start"]);
    done.failure();
    assert!(
        done.stdout.contains("acr: node set-up check for ubuntu"),
        "{done}"
    );
    assert!(done.stderr.contains("'.login-acr' (call 5)"), "{done}");
    assert!(done.stderr.contains("az login"), "{done}");
    assert!(done.stderr.contains("AZURE_CLIENT_ID"), "{done}");
}

#[test]
fn println_on_a_closed_stdout_fails_the_engine_cleanly() {
    let dir = tmp();
    write(dir.path(), "p.runmd", &two_events(": .event a\n"));
    let mut c = acr(dir.path());
    c.args(["--runmd-path", "p.runmd", "mirror", "start"])
        .stdout(broken_pipe());
    let mut child = c.spawn().expect("spawn");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("'.println' (call 3): cannot write to stdout"),
        "{stderr}"
    );
}

/// Log lines on a pipe carry no ANSI colour codes (journald, CI logs, `2> file`).
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tmp();
    write(dir.path(), "p.runmd", &two_events(": .event a\n"));
    let mut c = acr(dir.path());
    c.env_remove("NO_COLOR")
        .args(["--runmd-path", "p.runmd", "mirror", "start"]);
    let done = Running::spawn(c).finish(FINISH);
    done.success();
    assert!(done.stderr.contains("engine finished"), "{done}");
    assert!(!done.stderr.contains('\u{1b}'), "{:?}", done.stderr);
}

// ---------------------------------------------------------------------------------------------
// hot reload

fn ticker(message: &str) -> String {
    format!(
        "``` mirror\n+ .engine\n: .event tick\n: .loop\n```\n\n``` tick mirror\n+ .runtime\n: .println {message}\n: .timer 100 ms\n```\n"
    )
}

#[test]
fn hot_reload_swaps_good_files_and_keeps_running_on_bad_ones() {
    let dir = tmp();
    let path = write(dir.path(), "p.runmd", &ticker("first"));
    let mut c = acr(dir.path());
    c.args(["--runmd-path", "p.runmd", "mirror", "start"]);
    let mut child = Running::spawn(c);
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "first") >= 2),
        "{}",
        child.describe()
    );

    // A good edit (written in place) takes effect on a later pass.
    std::fs::write(&path, ticker("second")).unwrap();
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "second") >= 2),
        "the new message never appeared\n{}",
        child.describe()
    );

    // A bad edit is reported with its diagnostic; the last good pipeline keeps running.
    replace(
        &path,
        "``` mirror\n+ .engine\n: .event tick\n: .loop\n```\n\n``` tick mirror\n+ .runtime\n: .printn third\n: .timer 100 ms\n```\n",
    );
    assert!(
        child.wait_for(PATIENCE, |_, err| err.contains("unknown plugin '.printn'")),
        "the bad edit was not reported\n{}",
        child.describe()
    );
    let err = child.stderr();
    assert!(err.contains("p.runmd:9:3"), "{err}");
    assert!(err.contains("did you mean '.println'?"), "{err}");
    assert!(err.contains("keeps running"), "{err}");
    let seen = count(&child.stdout(), "second");
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "second") >= seen + 3),
        "the last good pipeline stopped\n{}",
        child.describe()
    );
    assert!(!child.stdout().contains("third"), "{}", child.describe());
    assert!(child.exited().is_none(), "{}", child.describe());

    // Fixing the file (atomically, by rename) takes effect again.
    replace(&path, &ticker("fourth"));
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "fourth") >= 2),
        "{}",
        child.describe()
    );
    assert!(!child.stderr().contains("panicked"), "{}", child.describe());
    drop(child);
}

// ---------------------------------------------------------------------------------------------
// regressions: runtime bugs found while writing these tests, now fixed

/// Regression (was a bug): a hot reload that compiles cleanly but no longer has the running engine (an empty file,
/// e.g. an editor that truncates before it writes; or an engine renamed while editing) replaces
/// the pipeline (src/cli/reload.rs sends every good compile), and the engine's next pass fails
/// with "there is no engine 'mirror'" (src/engine/mod.rs `run`, `engine_plan(..)?`), so the
/// running mirror exits. The design says a bad reload is reported and the old pipeline keeps
/// running; for the engine that is running, a file without it is a bad reload.
#[test]

fn regression_a_reload_without_the_running_engine_keeps_the_old_pipeline() {
    let dir = tmp();
    let path = write(dir.path(), "p.runmd", &ticker("first"));
    let mut c = acr(dir.path());
    c.args(["--runmd-path", "p.runmd", "mirror", "start"]);
    let mut child = Running::spawn(c);
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "first") >= 2),
        "{}",
        child.describe()
    );
    replace(&path, "# nothing here yet\n");
    // Give the reload time to land and a few passes to run.
    let seen = count(&child.stdout(), "first");
    let kept = child.wait_for(PATIENCE, |out, _| count(out, "first") >= seen + 5);
    assert!(
        kept && child.exited().is_none(),
        "the mirror stopped when its file lost the engine\n{}",
        child.describe()
    );
}

/// Regression (was a bug): a `.loop` whose passes run no call (every event `.once`, or events with no calls)
/// busy-spins a CPU core: src/engine/mod.rs `run` only does `tokio::task::yield_now()` between
/// passes. It should wait (for a reload, or with a back-off) when a pass did nothing.
#[test]

fn regression_an_idle_loop_does_not_spin_a_core() {
    let dir = tmp();
    write(
        dir.path(),
        "p.runmd",
        "``` mirror\n+ .engine\n: .once setup\n: .loop\n```\n``` setup mirror\n+ .runtime\n: .println ready\n```\n",
    );
    let mut c = acr(dir.path());
    c.args(["--runmd-path", "p.runmd", "mirror", "start"]);
    let mut child = Running::spawn(c);
    assert!(
        child.wait_for(PATIENCE, |out, _| out.contains("ready")),
        "{}",
        child.describe()
    );
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name `(acr)`: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    };
    let pid = child.child.id();
    let (c0, t0) = (cpu(pid), Instant::now());
    thread::sleep(Duration::from_secs(2));
    let used = (cpu(pid) - c0) / t0.elapsed().as_secs_f64();
    assert!(
        used < 0.25,
        "an idle .loop used {:.0}% of a core",
        used * 100.0
    );
}

/// Regression (was a bug): `acr dump` and `acr init` panic (exit 101, "failed printing to stdout: Broken pipe")
/// when stdout is a closed pipe, e.g. `acr dump | head -0` or a reader that has gone away:
/// src/cli/dump.rs `print!` and src/cli/init.rs `println!`. A CLI should stop quietly (or
/// report an error) on EPIPE, never panic. (`.println` handles it: the engine fails cleanly.)
#[test]

fn regression_a_closed_stdout_is_not_a_panic() {
    let dir = tmp();
    run(dir.path(), &["--registry", "example", "init"]).success();
    for args in [
        &["--registry", "example", "dump"][..],
        &["--registry", "example", "init"][..],
    ] {
        let mut c = acr(dir.path());
        c.args(args).stdout(broken_pipe());
        let mut child = c.spawn().expect("spawn");
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let status = child.wait().expect("wait");
        assert!(
            !stderr.contains("panicked") && status.code() != Some(101),
            "`acr {}` panicked on a closed stdout ({status}):\n{stderr}",
            args.join(" ")
        );
    }
}

/// Regression (was a bug): a `.process` whose control value `current_dir` names a directory that does not exist
/// fails with "cannot start `sh`: No such file or directory", which blames the program
/// (plugins/src/process.rs `run`, the error of `command.status()`). It should name the missing
/// directory, e.g. "current_dir `nowhere` does not exist".
#[test]

fn regression_a_missing_current_dir_is_named_as_such() {
    let (_d, done) = start(
        "``` mirror\n+ .engine\n: .event a\n```\n``` a mirror\n: current_dir .symbol nowhere\n+ .runtime\n: .process sh -c true\n```\n",
        &[],
    );
    done.failure();
    assert!(done.stderr.contains("'.process' (call 3)"), "{done}");
    assert!(
        done.stderr.contains("nowhere"),
        "the error should name the missing current_dir:\n{done}"
    );
}

/// `--registry-host` as a URL names the login server itself (a stand-in, a private
/// endpoint): the world directory is named after its host and port, and the pipeline logs in
/// to and mirrors that URL.
#[test]
fn init_with_a_login_server_url() {
    let dir = tmp();
    let done = run(
        dir.path(),
        &[
            "--registry",
            "example",
            "--registry-host",
            "http://127.0.0.1:5000",
            "init",
        ],
    );
    done.success();
    let path = dir
        .path()
        .join(".world/127.0.0.1:5000/example/mirror.runmd");
    let text = std::fs::read_to_string(&path).unwrap();
    for want in [
        ": .login-acr example",
        ": .login-server http://127.0.0.1:5000",
        ": .mirror http://127.0.0.1:5000",
        ": work_dir .symbol .world/127.0.0.1:5000/example",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    let dump = run(
        dir.path(),
        &[
            "--registry",
            "example",
            "--registry-host",
            "http://127.0.0.1:5000",
            "dump",
        ],
    );
    dump.success();
    let bad = run(
        dir.path(),
        &[
            "--registry",
            "example",
            "--registry-host",
            "http://a b",
            "init",
        ],
    );
    bad.failure();
}
