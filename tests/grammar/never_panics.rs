//! Whatever the text, `acr::runmd::parse` and `acr::world::compile` return (a pipeline or
//! diagnostics) and never panic, and every diagnostic points inside the source: its line exists
//! and its caret starts within that line (or just past its end, for "expected ... here").
//!
//! Inputs are arbitrary strings, arbitrary bytes made UTF-8, and files assembled from
//! runmd-looking fragments (fences, `+`, `:`, `.types`, plugin names, unicode, tabs, CR, very
//! long lines), which reach far deeper into the compiler than random text does.
//!
//! `PROPTEST_CASES` sets the cases per property (default 2000, a few seconds in all).

use std::path::Path;

use acr::runmd::{parse, Diagnostic};
use acr::world::compile;
use acr::world::dump::dump;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    Config {
        cases,
        // Shrinking a runmd file is quick; keep it bounded anyway.
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

/// The diagnostic's place is inside `source`.
fn check_span(source: &str, d: &Diagnostic) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = source.lines().collect();
    let line = d.span.line as usize;
    prop_assert!(
        line >= 1 && line <= lines.len(),
        "line {} outside 1..={} for {:?}",
        line,
        lines.len(),
        d
    );
    let chars = lines[line - 1].chars().count() as u32;
    prop_assert!(d.span.col >= 1, "col 0 for {:?}", d);
    prop_assert!(
        d.span.col <= chars + 1,
        "col {} past the end of line {} ({} chars) for {:?}",
        d.span.col,
        line,
        chars,
        d
    );
    let last = d.span.col + d.span.len.max(1) - 1;
    prop_assert!(
        last <= chars + 1,
        "caret {}..={} past the end of line {} ({} chars) for {:?}",
        d.span.col,
        last,
        line,
        chars,
        d
    );
    prop_assert!(!d.message.is_empty(), "empty message: {:?}", d);
    Ok(())
}

fn check(source: &str) -> Result<(), TestCaseError> {
    let parsed = parse(source);
    for d in &parsed.diagnostics {
        check_span(source, d)?;
    }
    match compile(Path::new("fuzz.runmd"), source) {
        Ok(pipeline) => {
            // A clean compile has no parse diagnostics, and every view of it works.
            prop_assert!(parsed.diagnostics.is_empty());
            let _ = dump(&pipeline);
            let names: Vec<String> = pipeline.engine_names().map(String::from).collect();
            for name in names {
                let plan = pipeline.engine(&name);
                prop_assert!(plan.is_some());
                if let Some(plan) = plan {
                    for event in &plan.events {
                        for call in &event.calls {
                            prop_assert!(pipeline.locate(call.id).is_some());
                        }
                    }
                }
            }
            let _ = pipeline.proxies();
        }
        Err(report) => {
            prop_assert!(!report.diagnostics.is_empty());
            for d in &report.diagnostics {
                check_span(source, d)?;
            }
            let text = report.to_string();
            prop_assert!(text.contains("fuzz.runmd:"));
        }
    }
    Ok(())
}

/// Pieces that mean something to the lexer, parser or compiler.
#[rustfmt::skip]
const FRAGMENTS: &[&str] = &[
    "```", "``` ", "````", "<```", "<```>", "~~~", "```sh", "``` sh", "```json", "\n```\n",
    "+", "+ ", ":", ": ", "::", "add", "add ", "define", "define ", "#", "# ", "//", "*", "-",
    "<", ">", "<>", "<why>", ",", ", ", " ", "  ", "\t", "\n", "\n", "\n", "\r\n", "\r",
    ".engine", ".runtime", ".proxy", ".event", ".once", ".loop", ".exit", ".next", ".repeat",
    ".println", ".process", ".arg", ".flag", ".env", ".install", ".timer", ".mirror", ".host",
    ".server", ".https", ".login", ".login-acr", ".authn", ".resolve", ".resolv", ".discover",
    ".teleport", ".from", ".to", ".pull", ".inject-layer", ".entrypoint",
    ".manifests", ".blobs", ".tags", ".referrers",
    ".int", ".int_pair", ".int_range", ".float", ".float_pair", ".float_range", ".bool",
    ".true", ".false", ".enable", ".disable", ".empty", ".symbol", ".text", ".complex", ".bin",
    ".base64", ".", ".x", ".é",
    "mirror", "start", "install", "a", "b", "x", "name", "src_dir", "work_dir", "current_dir",
    "K=V", "K", "=", "0", "1", "-1", "3", "1.5", "1e400", "nan", "99999999999999999999",
    "1, 2", "1,2,3", "aGk=", "!!", "5 parsecs", "100 ms", "localhost:8578", "[::1]:1", ":80",
    "head", "get", "put", "HEAD, GET", "resolve, pull", "sh -c", "../x", "/abs",
    "é", "ß", "日本語", "🦀", "\u{200b}", "\u{feff}", "\u{0}", "\u{7f}", "\u{301}", "İ",
];

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => proptest::sample::select(FRAGMENTS).prop_map(String::from),
        1 => "[a-z]{1,12}",
        1 => any::<char>().prop_map(String::from),
        // A very long line, sometimes with something after it.
        1 => (1usize..20_000, proptest::sample::select(FRAGMENTS))
            .prop_map(|(n, tail)| format!("{}{tail}", "x".repeat(n))),
    ]
}

/// A file of runmd-looking fragments, joined as they come.
fn fragments() -> impl Strategy<Value = String> {
    proptest::collection::vec(fragment(), 0..80).prop_map(|v| v.concat())
}

/// A file of plausible lines: fences with one or two words, and `op [name [sym]] .type value`.
fn lines() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        proptest::sample::select(&["mirror", "start", "a", "b", "other", "sh", "go"][..])
            .prop_map(String::from),
        "[a-zA-Z][a-zA-Z0-9_.:/#=-]{0,8}",
    ];
    let fence = (
        proptest::sample::select(&["```", "<```", "<```>", "~~~", "````"][..]),
        proptest::collection::vec(word.clone(), 0..4),
    )
        .prop_map(|(f, words)| format!("{f} {}", words.join(" ")));
    let attr = (
        proptest::sample::select(&["+", ":", "add", "define", "", "#"][..]),
        proptest::collection::vec(word, 0..4),
        proptest::sample::select(FRAGMENTS),
        proptest::collection::vec(fragment(), 0..4),
    )
        .prop_map(|(op, names, ty, value)| {
            format!("{op} {} {ty} {}", names.join(" "), value.concat())
        });
    let line = prop_oneof![1 => fence, 4 => attr, 1 => fragment()];
    proptest::collection::vec(line, 0..40).prop_map(|v| v.join("\n"))
}

/// Lines of a valid pipeline, shuffled, cut and spliced: close to real files, often valid.
fn mangled_template() -> impl Strategy<Value = String> {
    const GOOD: &str = "# t\n``` mirror\n+ .engine\n: .once install\n: .event start\n: .repeat 2\n```\n``` install mirror\n: current_dir .symbol .\n+ .runtime\n: .process sh\n: .arg -c\n: K .env V\n: .env A=B\n: .flag --x y\n``` start\n: src_dir .symbol .\n+ x .int 1\n: y .symbol z\n+ .runtime\n: .timer 1 ms\n: .mirror h.io\n: .host localhost:1, resolve, pull\n+ .proxy localhost:8578\n: .manifests head, get\n:   .login t\n:   .resolve\n: .blobs get\n:   .pull\n```\n``` other\n+ .engine\n: .event a\n: .next mirror\n```\n``` a other\n+ .runtime\n: .println hi <c> # t\n```\n";
    let source: Vec<String> = GOOD.lines().map(String::from).collect();
    let n = source.len();
    (
        proptest::collection::vec(0..n, 0..(2 * n)),
        proptest::collection::vec((0..n, fragment()), 0..4),
    )
        .prop_map(move |(picks, inserts)| {
            let mut lines: Vec<String> = picks.iter().map(|i| source[*i].clone()).collect();
            for (at, text) in inserts {
                let at = at.min(lines.len());
                lines.insert(at, text);
            }
            lines.join("\n")
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_strings(source in any::<String>()) {
        check(&source)?;
    }

    #[test]
    fn arbitrary_bytes_as_utf8(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn runmd_fragments(source in fragments()) {
        check(&source)?;
        // The same text inside a fence, where every line is runmd.
        check(&format!("``` a b\n{source}\n```\n"))?;
    }

    #[test]
    fn runmd_lines(source in lines()) {
        check(&source)?;
    }

    #[test]
    fn mangled_pipelines(source in mangled_template()) {
        check(&source)?;
    }
}

/// Inputs that once looked risky, kept as plain regression cases.
#[test]
fn known_edge_cases() {
    let long = "x".repeat(100_000);
    let cases = [
        String::new(),
        "\n".into(),
        "```".into(),
        "``` a".into(),
        "``` a b\n".into(),
        "``` a b\n+".into(),
        "``` a b\n:".into(),
        "``` a b\n+ .".into(),
        "``` a b\n+ x .int".into(),
        "``` a b\n+ x .int 99999999999999999999\n```".into(),
        "``` a b\n: .manifests get\n```".into(),
        "``` a b\n+ .proxy :1\n: .manifests é, get\n```".into(),
        "``` a b\n+ .proxy :1\n: .manifests ǅ\n```".into(),
        "``` a b\n+ .proxy :1\n: .manifests İ get\n```".into(),
        "``` a b\n+ x .int <\n```".into(),
        "``` a b\n+ x .int <é> é\n```".into(),
        "``` a b\n+ é .int 1\n```".into(),
        "``` a b\r\n+ x .int 1\r\n```\r\n".into(),
        "``` a b\r+ x .int 1\r```\r".into(),
        "\u{feff}``` a b\n+ x .int 1\n```".into(),
        format!("``` a b\n+ x .text {long}\n```"),
        format!("``` a b\n+ {long} .int 1\n```"),
        format!("``` {long} b\n```"),
        format!("``` a b\n{long}\n```"),
        "``` m\n+ .engine\n: .event a\n: .next m\n```\n``` a m\n```".into(),
        "``` m\n+ .engine\n: .repeat 4294967296\n```".into(),
        "``` a b\n+ .runtime\n: .timer 1e300 s\n```".into(),
        "``` a b\n+ .runtime\n: .timer 18446744073709551616\n```".into(),
        "``` a b\n+ .runtime\n: .timer .5\n```".into(),
        "``` a b\n+ .runtime\n: .timer 1.2.3\n```".into(),
    ];
    for source in &cases {
        if let Err(e) = check(source) {
            panic!("{e}\n--- source ---\n{source:?}");
        }
    }
}
