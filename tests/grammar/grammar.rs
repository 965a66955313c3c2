//! The runmd grammar, form by form, through the library: `acr::world::compile` builds the
//! World, and `Pipeline::engine`, `Pipeline::proxies`, the `Block` storage and
//! `acr::world::dump::dump` show what each line became.
//!
//! The binary's view of the same things (exit codes, rendered diagnostics) is in `tests/grammar/cli.rs`.

use std::path::Path;

use acr::runmd::{parse, Item, Op};
use acr::world::dump::dump;
use acr::world::{compile, Block, Lifecycle, Method, Pipeline, Resource};
use acr_plugins::{Props, Value};
use specs::WorldExt;

mod calls;
mod forms;
mod template;
mod values;

/// The template as `acr --registry example init` renders it with the default options.
fn rendered_template() -> String {
    acr::cli::render_default("example", "azurecr.io")
}

#[track_caller]
fn ok(source: &str) -> Pipeline {
    match compile(Path::new("test.runmd"), source) {
        Ok(p) => p,
        Err(report) => panic!("expected a clean compile, got:\n{report}\n--- source ---\n{source}"),
    }
}

/// (line, col, message, hint) of every diagnostic, in order.
#[track_caller]
fn errors(source: &str) -> Vec<(u32, u32, String, String)> {
    match compile(Path::new("test.runmd"), source) {
        Ok(p) => panic!("expected diagnostics, got a pipeline:\n{}", dump(&p)),
        Err(report) => report
            .diagnostics
            .iter()
            .map(|d| {
                (
                    d.span.line,
                    d.span.col,
                    d.message.clone(),
                    d.hint.clone().unwrap_or_default(),
                )
            })
            .collect(),
    }
}

/// A block as data: id, name, symbol, control values, stable properties.
#[derive(Debug, Clone)]
struct BlockView {
    id: u32,
    name: String,
    symbol: String,
    control: Props,
    props: Props,
}

fn blocks(p: &Pipeline) -> Vec<BlockView> {
    let storage = p.world.read_storage::<Block>();
    p.blocks
        .iter()
        .filter_map(|e| {
            let b = storage.get(*e)?;
            Some(BlockView {
                id: e.id(),
                name: b.name.clone(),
                symbol: b.symbol.clone(),
                control: (*b.control).clone(),
                props: b.props.clone(),
            })
        })
        .collect()
}

#[track_caller]
fn block(p: &Pipeline, name: &str, symbol: &str) -> BlockView {
    blocks(p)
        .into_iter()
        .find(|b| b.name == name && b.symbol == symbol)
        .unwrap_or_else(|| panic!("no block `{name} {symbol}` in\n{}", dump(p)))
}

/// Asserts the (name, symbol) of every block, in order.
#[track_caller]
fn assert_block_names(p: &Pipeline, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    assert_eq!(names(p), want);
}

fn names(p: &Pipeline) -> Vec<(String, String)> {
    blocks(p).into_iter().map(|b| (b.name, b.symbol)).collect()
}

fn sym(s: &str) -> Value {
    Value::Symbol(s.to_string())
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn all(props: &Props, name: &str) -> Vec<Value> {
    props.all(name).cloned().collect()
}

/// (id, plugin, input) of each call of event `event` of engine `engine`.
fn calls(p: &Pipeline, engine: &str, event: &str) -> Vec<(u32, &'static str, String)> {
    let plan = p.engine(engine).expect("engine");
    let ev = plan.events.iter().find(|e| e.name == event).expect("event");
    ev.calls
        .iter()
        .map(|c| (c.id, c.spec.name, c.invocation.input.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// diagnostics as a whole

#[test]
fn every_problem_is_reported_at_once_in_order() {
    let src = "\
``` m
+ .engine
: .evnt a
: .next nowhere
```
``` a m
+ .runtime
: .resolv x
hello
+ x .int abc
```
``` b m
";
    let errs = errors(src);
    let places: Vec<(u32, u32)> = errs.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(
        places,
        vec![(3, 3), (4, 9), (8, 3), (9, 1), (10, 10), (12, 1)],
        "{errs:?}"
    );
}

#[test]
fn the_report_renders_file_line_col_caret_and_hint() {
    let src = "# t\n``` s e\n+ .runtime\n: .resolv x\n```\n";
    let report = compile(Path::new("dir/mirror.runmd"), src).unwrap_err();
    let text = report.to_string();
    assert_eq!(
        text,
        "error: unknown plugin '.resolv'\n --> dir/mirror.runmd:4:3\n  |\n4 | : .resolv x\n  |   ^^^^^^^\n  = hint: did you mean '.resolve'?\n"
    );
}

// ---------------------------------------------------------------------------------------------
// regressions: runtime bugs found while writing these tests, now fixed

/// Regression (was a bug): `: NAME SYMBOL .type value` after `+ x` (or after a plugin call) keeps NAME and
/// silently drops SYMBOL (src/world/compile.rs, `colon_value`, the `Top::Plain` and
/// `Top::Runtime`/`Top::Proxy` arms ignore `a.symbol`). Either key it `x::NAME::SYMBOL` or
/// report "too many names"; never lose a word without a diagnostic.
#[test]

fn regression_a_second_name_after_a_stable_value_is_not_silently_dropped() {
    let src = "``` m\n+ .engine\n: .event a\n```\n``` a m\n+ x .true\n: s t .int 1\n+ .runtime\n: .println hi\n: k j .int 2\n```\n";
    match compile(Path::new("t.runmd"), src) {
        Err(report) => {
            let lines: Vec<u32> = report.diagnostics.iter().map(|d| d.span.line).collect();
            assert_eq!(lines, vec![7, 10], "{report}");
        }
        Ok(p) => {
            let b = block(&p, "a", "m");
            let keys: Vec<&str> = b.props.iter().map(|(k, _)| k).collect();
            assert!(
                keys.iter()
                    .any(|k| k.contains('t') && k.contains('s') && *k != "x::s"),
                "the symbol `t` of `: s t .int 1` was dropped: props {keys:?}\n{}",
                dump(&p)
            );
            let call = &p.engine("m").unwrap().events[0].calls[0];
            let keys: Vec<&str> = call.invocation.props.iter().map(|(k, _)| k).collect();
            assert!(
                keys.iter().any(|k| k.contains('j')),
                "the symbol `j` of `: k j .int 2` was dropped: props {keys:?}"
            );
        }
    }
}

/// Regression (was a bug): a diagnostic about a value points at an inline comment before the value, not at the
/// value (src/runmd/parser.rs `value_text` returns the column where the comment starts, and
/// src/world/compile.rs `word_span` offsets into the comment-free text from there).
#[test]

fn regression_value_diagnostics_point_past_inline_comments() {
    let errs = errors("``` a b\n+ x .int <why> abc\n```\n");
    assert_eq!(
        (errs[0].0, errs[0].1),
        (2, 16),
        "caret should be under `abc`: {errs:?}"
    );
    let errs = errors("``` a b\n+ .proxy localhost:1\n: .manifests <no push> get, put\n```\n");
    assert_eq!(
        (errs[0].0, errs[0].1),
        (3, 29),
        "caret should be under `put`: {errs:?}"
    );
}

/// Regression (was a bug): a block whose name is also a "well-known language" (`c`, `go`, `log`, `text`,
/// `output`, `http`, `patch`, ... in src/runmd/parser.rs `PROSE_LANGUAGES`) is silently read as
/// a code example, so ``` log mirror vanishes. The engine's `.event log` is then reported as
/// "there is no block ``` log mirror" with the hint "add a block ``` log mirror": the very line
/// the user wrote. Either accept the block (a two-word header whose second word names a
/// control block is not a code fence) or say why it was not read.
#[test]

fn regression_an_event_named_like_a_language_is_not_silently_prose() {
    let src =
        "``` mirror\n+ .engine\n: .event log\n```\n``` log mirror\n+ .runtime\n: .println x\n```\n";
    match compile(Path::new("t.runmd"), src) {
        Ok(p) => assert_eq!(calls(&p, "mirror", "log").len(), 1),
        Err(report) => {
            let text = report.to_string();
            assert!(
                !text.contains("hint: add a block ``` log mirror"),
                "the hint asks for the block that is already there:\n{text}"
            );
            assert!(
                text.contains("language") || text.contains("code"),
                "the report should say the block was read as a code example:\n{text}"
            );
        }
    }
}

/// Regression (was a bug): `dump` leaves out the values (`+ name .type v`, `name::sym`) of blocks that are in no
/// engine, and everything but the symbol of control blocks without an engine
/// (src/world/dump.rs, the second loop of `dump`), so the numbered tree hides what they hold.
#[test]

fn regression_dump_shows_values_of_blocks_in_no_engine() {
    let p = ok("``` call host\n+ address .text localhost\n: ipv6 .enable\n```\n``` guest\n: name .text cool guest host\n+ port .int 80\n```\n");
    let text = dump(&p);
    for want in ["address", "ipv6", "cool guest host", "port"] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
}

/// Every pipeline the project ships (examples/, lib/runmd/) compiles.
#[test]
fn every_shipped_pipeline_compiles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["examples", "lib/runmd"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("runmd") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("read");
            if let Err(report) = compile(&path, &source) {
                panic!("{} does not compile:\n{report}", path.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// chain checks: a chain that cannot work is a diagnostic when the file is compiled

/// A pipeline whose engine runs `start mirror`, with `proxy` (settings and routes) under
/// `+ .proxy`; its first line after `+ .proxy` is line 9.
fn chain_pipeline(proxy: &str) -> String {
    format!(
        "``` mirror\n+ .engine\n: .event start\n```\n``` start mirror\n+ .runtime\n: .mirror http://127.0.0.1:5000\n+ .proxy 127.0.0.1:8578\n{proxy}```\n"
    )
}

/// `source` is one diagnostic at `line:col` whose message and hint contain `message` and
/// `hint`, through the library and through `acr dump` and `acr mirror start` (exit 2, with
/// `file:line:col`, the offending line and a caret).
#[track_caller]
fn chain_error(source: &str, (line, col): (u32, u32), message: &str, hint: &str) {
    let errs = errors(source);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (line, col), "{errs:?}");
    assert!(errs[0].2.contains(message), "{errs:?}");
    assert!(errs[0].3.contains(hint), "{errs:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.runmd");
    std::fs::write(&file, source).unwrap();
    let offending = source.lines().nth(line as usize - 1).unwrap();
    for command in [&["dump"][..], &["mirror", "start"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_acr"))
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .arg("--runmd-path")
            .arg(&file)
            .args(command)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        for want in [
            format!("{}:{line}:{col}", file.display()),
            format!("{line} | {offending}"),
            "^".to_string(),
            format!("hint: {}", errs[0].3),
        ] {
            assert!(
                stderr.contains(&want),
                "{command:?}: no {want:?} in\n{stderr}"
            );
        }
    }
}

#[test]
fn chain_inject_layer_after_resolve_is_a_diagnostic() {
    chain_error(
        &chain_pipeline(": .manifests head, get\n:   .resolve\n:   .inject-layer data:H4sIAAAAAAAA/wMAAAAAAAAAAAA=\n"),
        (11, 5),
        "'.inject-layer' comes after '.resolve' (line 10)",
        "move '.inject-layer' before '.resolve'",
    );
}

#[test]
fn chain_forward_auth_beside_login_is_a_diagnostic() {
    chain_error(
        &chain_pipeline(": .manifests head, get\n:   .login\n:   .forward-auth\n:   .resolve\n"),
        (11, 5),
        "'.forward-auth' beside '.login' (line 10)",
        "keep '.forward-auth' (each client logs in to the upstream) or '.login' and '.authn'",
    );
}

#[test]
fn chain_route_plugin_in_an_engine_block_is_a_diagnostic() {
    chain_error(
        "``` mirror\n+ .engine\n: .event start\n```\n``` start mirror\n+ .runtime\n: .pull\n```\n",
        (7, 3),
        "'.pull' serves a client's request: it works only in a proxy route",
        "move it under `+ .proxy ADDR`, after a route such as `: .blobs head, get`",
    );
}

#[test]
fn chain_plugin_in_the_wrong_route_is_a_diagnostic() {
    chain_error(
        &chain_pipeline(": .blobs head, get\n:   .resolve\n"),
        (10, 5),
        "'.resolve' does not work in the `.blobs` route",
        "'.resolve' works in the `.manifests` or `.tags` or `.referrers` route",
    );
}

#[test]
fn chain_inject_layer_without_a_store_is_a_diagnostic() {
    chain_error(
        &chain_pipeline(": .cache off\n: .manifests head, get\n:   .inject-layer data:H4sIAAAAAAAA/wMAAAAAAAAAAAA=\n:   .resolve\n"),
        (11, 5),
        "'.inject-layer' keeps what it makes in the store, and this proxy has `: .cache off`",
        "give the proxy a store",
    );
}
