//! The engine lifecycle (`.loop`, `.next`, `.repeat`, `.exit`, `--id`) and the plugins it runs.

use super::*;

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
    let mut child = spawn_start(
        dir.path(),
        "``` mirror\n+ .engine\n: .event tick\n: .loop\n```\n``` tick mirror\n+ .runtime\n: .println tick\n: .timer 50 ms\n```\n",
    );
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
    let (_d, done) = start_failing(
        "``` mirror\n+ .engine\n: .event run\n: .loop\n```\n``` run mirror\n+ .runtime\n: .println before\n: .process sh -c\n: .arg exit 3\n: .println after\n```\n",
        &["'.process' (call 4)", "exit status: 3"],
    );
    assert_eq!(lines(&done.stdout), ["before"], "{done}");
    // A program that does not exist.
    start_failing(
        "``` mirror\n+ .engine\n: .event run\n```\n``` run mirror\n+ .runtime\n: .process /no/such/program\n```\n",
        &["'.process' (call 3)", "cannot start `/no/such/program`"],
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
    done.fails_saying(&["'.install' (call 4)", "missing"]);
}

#[test]
fn install_without_work_dir_says_how_to_set_it() {
    start_failing(
        "``` mirror\n+ .engine\n: .event setup\n```\n``` setup mirror\n+ .runtime\n: .install f\n```\n",
        &["work_dir"],
    );
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
    done.fails_saying(&["'.login-acr' (call 5)", "az login", "AZURE_CLIENT_ID"]);
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
