//! Diagnostics as the binary renders them, and its exit codes.

use super::*;

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

/// `.verify`'s input is checked when the file is compiled: an unknown scheme, a missing key
/// file and a file that is not a public key are diagnostics at the value, and `.verify`
/// after `.resolve` (which has already answered) at the call.
#[test]
fn diagnostic_bad_verify() {
    let dir = tmp();
    let not_a_key = write(dir.path(), "not-a-key.pub", "hello\n");
    let route = |line: &str| {
        format!("{ENGINE}``` a mirror\n+ .runtime\n: .mirror http://127.0.0.1:5000\n+ .proxy 127.0.0.1:8578\n: .manifests head, get\n{line}```\n")
    };
    assert_diagnostic(
        &route(":   .verify gpg /etc/acr/k.pub\n:   .resolve\n"),
        10,
        13,
        "unknown signature scheme `gpg`",
        "write `.verify cosign /etc/acr/cosign.pub`",
    );
    assert_diagnostic(
        &route(":   .verify cosign /nonexistent/acr-verify.pub\n:   .resolve\n"),
        10,
        13,
        "cannot read the key file /nonexistent/acr-verify.pub",
        "give the PEM public key files",
    );
    assert_diagnostic(
        &route(&format!(
            ":   .verify cosign {}\n:   .resolve\n",
            not_a_key.display()
        )),
        10,
        13,
        "not a PEM public key",
        "give the PEM public key files",
    );
    let key = write(
        dir.path(),
        "cosign.pub",
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEASxFhKVRywQgWp57+zSpWYBY8wBQZIKy1FZ2b+i7yqP0=\n-----END PUBLIC KEY-----\n",
    );
    assert_diagnostic(
        &route(&format!(
            ":   .resolve\n:   .verify cosign {}\n",
            key.display()
        )),
        11,
        5,
        "'.verify' comes after '.resolve' (line 10)",
        "move '.verify' before '.resolve'",
    );
}

/// A shared store that cannot be opened is a diagnostic at its `: .cache` line, not an error
/// at the first request: a malformed `az://` URL, and one with no storage account in the
/// environment (the test's `acr` runs without `AZURE_STORAGE_ACCOUNT_NAME`).
#[test]
fn diagnostic_bad_shared_store() {
    let proxy = |cache: &str| {
        format!("{ENGINE}``` a mirror\n+ .runtime\n: .mirror http://127.0.0.1:5000\n+ .proxy 127.0.0.1:8578\n: .cache {cache}\n```\n")
    };
    assert_diagnostic(
        &proxy("az://Bad_Name/acr"),
        9,
        10,
        "bad value for `.cache`",
        "'Bad_Name' is not a valid container name",
    );
    assert_diagnostic(
        &proxy("az:///acr"),
        9,
        10,
        "bad value for `.cache`",
        "'az:///acr' names no container",
    );
    assert_diagnostic(
        &proxy("az://cache/acr"),
        9,
        10,
        "bad value for `.cache`",
        "an az:// cache needs the storage account: set AZURE_STORAGE_ACCOUNT_NAME",
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
