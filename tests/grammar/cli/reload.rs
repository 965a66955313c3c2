//! Hot reload of the engine file, and regressions found while writing these tests.

use super::*;

// ---------------------------------------------------------------------------------------------
// hot reload

fn ticker(message: &str) -> String {
    format!(
        "``` mirror\n+ .engine\n: .event tick\n: .loop\n```\n\n``` tick mirror\n+ .runtime\n: .println {message}\n: .timer 100 ms\n```\n"
    )
}

/// `mirror start` over [`ticker`]`("first")` in `dir`, once it has printed `first` twice:
/// the pipeline's path and the running acr.
fn running_ticker(dir: &Path) -> (PathBuf, Running) {
    let mut child = spawn_start(dir, &ticker("first"));
    let path = dir.join("p.runmd");
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "first") >= 2),
        "{}",
        child.describe()
    );
    (path, child)
}

#[test]
fn hot_reload_swaps_good_files_and_keeps_running_on_bad_ones() {
    let dir = tmp();
    let (path, mut child) = running_ticker(dir.path());

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

/// A pipeline on a Kubernetes ConfigMap volume is reloaded when the ConfigMap changes: the
/// kubelet never touches the file's name, it writes a new directory and renames the symlink
/// `..data` (through which `p.runmd` points) over the old one. Laid out here as the kubelet
/// lays it out.
#[test]
fn hot_reload_follows_a_configmap_volume_update() {
    use std::os::unix::fs::symlink;
    let dir = tmp();
    let d = dir.path();
    let version = |n: u32, message: &str| {
        let v = format!("..2026_12_06_00_00_0{n}.000000{n}");
        std::fs::create_dir(d.join(&v)).unwrap();
        std::fs::write(d.join(&v).join("p.runmd"), ticker(message)).unwrap();
        v
    };
    let first = version(1, "first");
    symlink(&first, d.join("..data")).unwrap();
    symlink("..data/p.runmd", d.join("p.runmd")).unwrap();
    let mut c = acr(d);
    c.args(["--runmd-path", "p.runmd", "mirror", "start"]);
    let mut child = Running::spawn(c);
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "first") >= 2),
        "{}",
        child.describe()
    );
    // The kubelet's update: the new version, a temporary link to it, renamed over `..data`.
    let second = version(2, "second");
    symlink(&second, d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join(&first)).unwrap();
    assert!(
        child.wait_for(PATIENCE, |out, _| count(out, "second") >= 2),
        "the ConfigMap's new version was not loaded\n{}",
        child.describe()
    );
    assert!(child.exited().is_none(), "{}", child.describe());
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
    let (path, mut child) = running_ticker(dir.path());
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
    let mut child = spawn_start(
        dir.path(),
        "``` mirror\n+ .engine\n: .once setup\n: .loop\n```\n``` setup mirror\n+ .runtime\n: .println ready\n```\n",
    );
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
    // The error should name the missing current_dir.
    start_failing(
        "``` mirror\n+ .engine\n: .event a\n```\n``` a mirror\n: current_dir .symbol nowhere\n+ .runtime\n: .process sh -c true\n```\n",
        &["'.process' (call 3)", "nowhere"],
    );
}

/// `--registry-host` as a URL names the login server itself (a stand-in, a private
/// endpoint): the world directory is named after its host and port, and the pipeline logs in
/// to and mirrors that URL.
#[test]
fn init_with_a_login_server_url() {
    let dir = tmp();
    let done = run_for_registry(dir.path(), ("example", "http://127.0.0.1:5000"), &["init"]);
    done.success();
    let path = dir
        .path()
        .join(".world/127.0.0.1:5000/example/mirror.runmd");
    assert_file_holds(
        &path,
        &[
            ": .login-acr example",
            ": .login-server http://127.0.0.1:5000",
            ": .mirror http://127.0.0.1:5000",
            ": work_dir .symbol .world/127.0.0.1:5000/example",
        ],
    );
    let dump = run_for_registry(dir.path(), ("example", "http://127.0.0.1:5000"), &["dump"]);
    dump.success();
    let bad = run_for_registry(dir.path(), ("example", "http://a b"), &["init"]);
    bad.failure();
}
