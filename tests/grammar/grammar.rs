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
// prose and fences

#[test]
fn prose_is_never_lexed() {
    let src = r#"# A pipeline

A sentence with a + in it, and a : too. add define + .engine : .println not me
+ .engine
: .resolv this is prose, not a typo
define x y .int not-a-number

```sh
# a shell example: never runmd, however runmd it looks
+ .resolv x
: .int abc
```

~~~
+ .engine
: .loopp
~~~

~~~ mirror
+ .nonsense
~~~

```json
{"a": "+ .engine"}
```

```` text
``` still inside the text example
+ .bad
````

``` mirror
+ .engine
: .event a
```

More prose: `: .timer 5 parsecs` is fine here.

``` a mirror
+ .runtime
: .println hello
```
"#;
    let p = ok(src);
    assert_eq!(
        names(&p),
        vec![("".into(), "mirror".into()), ("a".into(), "mirror".into())]
    );
    assert_eq!(
        calls(&p, "mirror", "a"),
        vec![(3, "println", "hello".into())]
    );
}

#[test]
fn parse_only_returns_fenced_items() {
    let src = "+ .engine\n: x\n```sh\n+ .x\n```\n``` m\n+ .engine\n```\n";
    let parsed = parse(src);
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    assert_eq!(parsed.items.len(), 2, "{:?}", parsed.items);
    match &parsed.items[0] {
        Item::Block(h) => {
            assert_eq!((h.name.as_str(), h.symbol.as_str()), ("", "m"));
            assert_eq!((h.span.line, h.span.col), (6, 1));
        }
        other => panic!("{other:?}"),
    }
    match &parsed.items[1] {
        Item::Attr(a) => {
            assert_eq!(a.op, Op::Add);
            assert_eq!(a.ty.value, "engine");
            assert_eq!((a.ty.span.line, a.ty.span.col), (7, 3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_well_known_language_fence_is_prose() {
    for lang in acr::runmd::parser::PROSE_LANGUAGES {
        let src = format!("```{lang}\n+ .resolv\n```\n``` {lang}\n: .x y\n```\n");
        let parsed = parse(&src);
        assert!(
            parsed.items.is_empty() && parsed.diagnostics.is_empty(),
            "```{lang}: {:?} {:?}",
            parsed.items,
            parsed.diagnostics
        );
    }
}

// ---------------------------------------------------------------------------------------------
// block headers

#[test]
fn two_word_and_one_word_headers() {
    let src = "\
``` mirror
+ .engine
: .event install
```
``` install mirror
+ .runtime
: .println install
``` start
+ .runtime
: .println start
``` guest
+ x .true
```
``` other
+ y .false
```
";
    let p = ok(src);
    assert_eq!(
        names(&p),
        vec![
            ("".into(), "mirror".into()),
            ("install".into(), "mirror".into()),
            // One word inside a block keeps the block's name: `install start`.
            ("install".into(), "start".into()),
            ("install".into(), "guest".into()),
            // One word at the top level is a control block.
            ("".into(), "other".into()),
        ]
    );
    // So an engine event `start` of `mirror` does not find `install start`.
    let errs = errors(&src.replace(": .event install\n", ": .event install\n: .event start\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].2.contains("no block ``` start mirror"), "{errs:?}");
}

#[test]
fn one_word_header_inside_a_block_names_a_sibling() {
    let p = ok("``` call host\n+ a .int 1\n``` guest\n+ b .int 2\n```\n");
    let guest = block(&p, "call", "guest");
    assert_eq!(guest.props.get("b"), Some(&Value::Int(2)));
    assert_eq!(
        block(&p, "call", "host").props.get("a"),
        Some(&Value::Int(1))
    );
}

#[test]
fn a_block_is_reopened_by_name() {
    let src = "\
``` mirror
+ .engine
: .event a
```
``` a mirror
: dir .symbol one
+ .runtime
: .println first
```
Prose between the two halves.
``` b other
+ x .int 1
```
``` a mirror
+ .runtime
: .println second
```
";
    let p = ok(src);
    // One block `a mirror`, made when first seen: ids 1 (mirror), 2 (a mirror), 3 (call),
    // 4 (b other), 5 (call).
    assert_eq!(
        blocks(&p)
            .iter()
            .map(|b| (b.id, b.name.as_str(), b.symbol.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "", "mirror"), (2, "a", "mirror"), (4, "b", "other")]
    );
    assert_eq!(
        calls(&p, "mirror", "a"),
        vec![
            (3, "println", "first".into()),
            (5, "println", "second".into())
        ]
    );
    assert_eq!(
        block(&p, "a", "mirror").control.get("dir"),
        Some(&sym("one"))
    );
}

#[test]
fn old_fence_forms() {
    let src = "\
<``` mirror
+ .engine
: .event a
<```>
<``` a mirror
+ .runtime
: .println old
<```
";
    let p = ok(src);
    assert_eq!(calls(&p, "mirror", "a"), vec![(3, "println", "old".into())]);
    // The two forms mix with the plain one.
    let p = ok("<``` a b\n+ x .int 1\n```\n``` e f\n+ y .int 2\n<```>\n");
    assert_eq!(
        names(&p),
        vec![("a".into(), "b".into()), ("e".into(), "f".into())]
    );
}

#[test]
fn fences_may_be_indented_and_longer() {
    let p = ok(
        "  ``` m\n  + .engine\n    : .event a\n  ```\n````` a m\n+ .runtime\n: .println x\n`````\n",
    );
    assert_eq!(calls(&p, "m", "a"), vec![(3, "println", "x".into())]);
}

#[test]
fn header_identifiers_may_hold_punctuation() {
    let p = ok("``` start.v2 mirror-1\n+ x .int 1\n```\n``` a/b#c\n+ y .int 2\n```\n");
    assert_eq!(
        names(&p),
        vec![
            ("start.v2".into(), "mirror-1".into()),
            ("".into(), "a/b#c".into())
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// line forms

#[test]
fn add_is_plus_and_define_names_its_own_property() {
    let p = ok("\
``` a b
add x .int 1
+ y .int 2
: z .int 3
define x w .int 4
define q .text loose
```
");
    let b = block(&p, "a", "b");
    assert_eq!(b.props.get("x"), Some(&Value::Int(1)));
    assert_eq!(b.props.get("y"), Some(&Value::Int(2)));
    // `:` attaches to the `+` before it ...
    assert_eq!(b.props.get("y::z"), Some(&Value::Int(3)));
    // ... `define` names its own attribute wherever it is.
    assert_eq!(b.props.get("x::w"), Some(&Value::Int(4)));
    assert_eq!(b.props.get("q"), Some(&text("loose")));
    assert!(b.control.is_empty(), "{:?}", b.control);
}

#[test]
fn names_that_look_like_keywords() {
    // `address` is a name, not `add` + `ress`; `define` and `add` can be names after the op.
    let p = ok("``` a b\n+ address .text localhost\n: definition .int 1\n+ add .int 2\n```\n");
    let b = block(&p, "a", "b");
    assert_eq!(b.props.get("address"), Some(&text("localhost")));
    assert_eq!(b.props.get("address::definition"), Some(&Value::Int(1)));
    assert_eq!(b.props.get("add"), Some(&Value::Int(2)));
}

#[test]
fn every_builtin_value_type() {
    let src = "\
``` v t
+ empty .empty
+ bool .bool true
+ t .true
+ f .false
+ en .enable
+ dis .disable
+ int .int -42
+ ip .int_pair 1, 2
+ ir .int_range 1,2,3
+ fl .float 0.25
+ fp .float_pair 1.5, -2
+ fr .float_range 0, 0.5, 1
+ s .symbol localhost:8578
+ tx .text  a sentence, with commas 
+ c .complex b, a, b
+ bin .bin aGk=
+ b64 .base64 aGVsbG8=
+ emptytext .text
```
";
    let p = ok(src);
    let b = block(&p, "v", "t");
    let expect: Vec<(&str, Value)> = vec![
        ("empty", Value::Empty),
        ("bool", Value::Bool(true)),
        ("t", Value::Bool(true)),
        ("f", Value::Bool(false)),
        ("en", Value::Bool(true)),
        ("dis", Value::Bool(false)),
        ("int", Value::Int(-42)),
        ("ip", Value::IntPair(1, 2)),
        ("ir", Value::IntRange(1, 2, 3)),
        ("fl", Value::Float(0.25)),
        ("fp", Value::FloatPair(1.5, -2.0)),
        ("fr", Value::FloatRange(0.0, 0.5, 1.0)),
        ("s", sym("localhost:8578")),
        ("tx", text("a sentence, with commas")),
        (
            "c",
            Value::Complex(["a".to_string(), "b".to_string()].into()),
        ),
        ("bin", Value::Binary(b"hi".to_vec())),
        ("b64", Value::Binary(b"hello".to_vec())),
        ("emptytext", text("")),
    ];
    for (name, value) in expect {
        assert_eq!(b.props.get(name), Some(&value), "{name}");
    }
}

#[test]
fn bad_values_are_diagnostics_not_zero() {
    for (line, hint) in [
        ("+ x .int abc", "whole number"),
        ("+ x .int 1.5", "whole number"),
        ("+ x .int_pair 1", "1, 1"),
        ("+ x .int_range 1, 2", "1, 1, 1"),
        ("+ x .float nan", "number"),
        ("+ x .float_pair a, b", "number"),
        ("+ x .bool yes", ".bool true"),
        ("+ x .true false", ".bool false"),
        ("+ x .empty something", ".symbol"),
        ("+ x .symbol", ".symbol some-name"),
        ("+ x .base64 !!!", "base64"),
    ] {
        let errs = errors(&format!("``` a b\n{line}\n```\n"));
        assert_eq!(errs.len(), 1, "{line}: {errs:?}");
        assert_eq!(errs[0].0, 2, "{line}");
        assert!(errs[0].3.contains(hint), "{line}: {errs:?}");
    }
}

#[test]
fn comments_and_inline_comments() {
    let src = "\
``` m
# a comment line
// another
+ .engine   # trailing comment after an attribute
: <why: a loop> .loop
: .event a // trailing
```
``` a m
: dir .symbol /tmp/x   # the dir
: url .symbol http://h/p
: hash .symbol a#b
+ .runtime
: .println hello <a note> world # done
: .println see//this
:   # an empty-looking line that is a comment after the op
```
";
    // `:   # ...` has no type: a diagnostic, not a silent skip.
    let errs = errors(src);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, 15);
    let src = src.replace(
        ":   # an empty-looking line that is a comment after the op\n",
        "",
    );
    let p = ok(&src);
    let plan = p.engine("m").unwrap();
    assert_eq!(plan.lifecycle, Lifecycle::Loop);
    let a = block(&p, "a", "m");
    assert_eq!(a.control.get("dir"), Some(&sym("/tmp/x")));
    // `//` and `#` only start a comment after white space.
    assert_eq!(a.control.get("url"), Some(&sym("http://h/p")));
    assert_eq!(a.control.get("hash"), Some(&sym("a#b")));
    let got: Vec<String> = calls(&p, "m", "a").into_iter().map(|c| c.2).collect();
    assert_eq!(got, vec!["hello   world", "see//this"]);
}

#[test]
fn indentation_after_colon_is_cosmetic() {
    let flat = ok("``` a b\n+ .proxy localhost:1\n: .manifests get\n: .login x\n: .resolve\n```\n");
    let deep =
        ok("``` a b\n+ .proxy localhost:1\n: .manifests get\n:     .login x\n:\t\t.resolve\n```\n");
    assert_eq!(dump(&flat), dump(&deep));
}

#[test]
fn tabs_and_crlf_line_endings() {
    let p = ok("``` m\r\n+\t.engine\r\n:\t.event\ta\r\n```\r\n``` a m\r\n+ .runtime\r\n: .println hi\r\n```\r\n");
    assert_eq!(calls(&p, "m", "a"), vec![(3, "println", "hi".into())]);
}

// ---------------------------------------------------------------------------------------------
// values, properties and control values

#[test]
fn control_values_come_before_the_first_plus() {
    let p = ok("\
``` start mirror
: src_dir .symbol .
: work_dir .symbol .world/azurecr.io/example
: retries .int 3
: skip .true
: ns tenant .symbol t1
+ x .int 1
: y .int 2
```
");
    let b = block(&p, "start", "mirror");
    assert_eq!(b.control.get("src_dir"), Some(&sym(".")));
    assert_eq!(
        b.control.get("work_dir"),
        Some(&sym(".world/azurecr.io/example"))
    );
    assert_eq!(b.control.get("retries"), Some(&Value::Int(3)));
    assert_eq!(b.control.get("skip"), Some(&Value::Bool(true)));
    assert_eq!(b.control.get("ns::tenant"), Some(&sym("t1")));
    // After the `+`, a `:` value belongs to the attribute, not the block's control values.
    assert_eq!(b.control.get("y"), None);
    assert_eq!(b.props.get("x::y"), Some(&Value::Int(2)));
}

#[test]
fn control_values_reach_every_call_of_the_block() {
    let p = ok("\
``` m
+ .engine
: .event a
```
``` a m
: current_dir .symbol /tmp
+ .runtime
: .println one
: .println two
```
");
    let plan = p.engine("m").unwrap();
    for call in &plan.events[0].calls {
        assert_eq!(call.control.get("current_dir"), Some(&sym("/tmp")));
    }
}

#[test]
fn stable_values_and_transient_properties() {
    let p = ok("\
``` a b
+ address .text localhost
: ipv6 .enable
: path .text api/test
+ port .int 80
: tls .false
: path .text second
```
");
    let b = block(&p, "a", "b");
    assert_eq!(b.props.get("address"), Some(&text("localhost")));
    assert_eq!(b.props.get("address::ipv6"), Some(&Value::Bool(true)));
    assert_eq!(b.props.get("address::path"), Some(&text("api/test")));
    assert_eq!(b.props.get("port"), Some(&Value::Int(80)));
    assert_eq!(b.props.get("port::tls"), Some(&Value::Bool(false)));
    assert_eq!(b.props.get("port::path"), Some(&text("second")));
}

#[test]
fn a_repeated_name_is_a_list() {
    let p =
        ok("``` m\n+ .engine\n: .event a\n```\n``` a m\n+ x .symbol one\n+ x .symbol two\n```\n");
    let b = block(&p, "a", "m");
    assert_eq!(all(&b.props, "x"), vec![sym("one"), sym("two")]);
    assert_eq!(b.props.get("x"), Some(&sym("one")));
    assert!(dump(&p).contains("x [one, two]"), "{}", dump(&p));
}

// ---------------------------------------------------------------------------------------------
// engines

fn lifecycle_of(options: &str) -> Lifecycle {
    let p = ok(&format!(
        "``` m\n+ .engine\n: .event a\n{options}```\n``` a m\n+ .runtime\n: .println x\n```\n``` o\n+ .engine\n: .event a\n```\n``` a o\n+ .runtime\n```\n"
    ));
    p.engine("m").unwrap().lifecycle
}

#[test]
fn engine_lifecycles() {
    assert_eq!(lifecycle_of(""), Lifecycle::Exit);
    assert_eq!(lifecycle_of(": .exit\n"), Lifecycle::Exit);
    assert_eq!(lifecycle_of(": .loop\n"), Lifecycle::Loop);
    assert_eq!(lifecycle_of(": .repeat 5\n"), Lifecycle::Repeat(5));
    assert_eq!(lifecycle_of(": .next o\n"), Lifecycle::Next("o".into()));
}

#[test]
fn engine_events_and_once() {
    let p = ok("\
``` m
+ .engine
: .once setup
: .event run
: .event run
```
``` setup m
+ .runtime
: .println s
```
``` run m
+ .runtime
: .println r
```
");
    let plan = p.engine("m").unwrap();
    assert_eq!(plan.id, 1);
    let events: Vec<(u32, &str, bool)> = plan
        .events
        .iter()
        .map(|e| (e.id, e.name.as_str(), e.once))
        .collect();
    assert_eq!(
        events,
        vec![(2, "setup", true), (4, "run", false), (4, "run", false)]
    );
    let text = dump(&p);
    assert!(text.contains("  2: setup m (once)\n"), "{text}");
    assert!(
        text.contains("  events: setup (once), run, run\n"),
        "{text}"
    );
}

#[test]
fn engine_diagnostics() {
    let cases: &[(&str, u32, &str, &str)] = &[
        (": .repeat 0\n", 5, "count of 1 or more", ".repeat 3"),
        (": .repeat many\n", 5, "count of 1 or more", ".repeat 3"),
        (": .loop\n: .exit\n", 6, "already has a lifecycle", "line 5"),
        (": .loop forever\n", 5, "takes no value", ""),
        (": .event\n", 5, "one event", ": .event start"),
        (": .event a b\n", 5, "one event", ""),
        (": .next\n", 5, "another control block", ".next other"),
        (
            ": .loopp\n",
            5,
            "unknown engine option",
            "did you mean '.loop'?",
        ),
        (
            ": .evnt a\n",
            5,
            "unknown engine option",
            "did you mean '.event'?",
        ),
    ];
    for (options, line, message, hint) in cases {
        let src = format!(
            "prose\n``` m\n+ .engine\n: .event a\n{options}```\n``` a m\n+ .runtime\n: .println x\n```\n"
        );
        let errs = errors(&src);
        assert_eq!(errs.len(), 1, "{options:?}: {errs:?}");
        assert_eq!(errs[0].0, *line, "{options:?}: {errs:?}");
        assert!(errs[0].2.contains(message), "{options:?}: {errs:?}");
        assert!(errs[0].3.contains(hint), "{options:?}: {errs:?}");
    }
}

#[test]
fn engine_and_runtime_belong_in_their_blocks() {
    let errs = errors("``` a b\n+ .engine\n```\n");
    assert!(errs[0].2.contains("belongs in a control block"), "{errs:?}");
    assert!(errs[0].3.contains("``` b"), "{errs:?}");
    let errs = errors("``` b\n+ .runtime\n```\n");
    assert!(errs[0].2.contains("belongs in an event block"), "{errs:?}");
    let errs = errors("``` b\n+ .proxy localhost:1\n```\n");
    assert!(errs[0].2.contains("belongs in an event block"), "{errs:?}");
    let errs = errors("``` b\n+ .engine\n```\n``` b\n+ .engine\n```\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].2.contains("already has an engine"), "{errs:?}");
    assert!(errs[0].3.contains("line 2"), "{errs:?}");
}

// ---------------------------------------------------------------------------------------------
// plugin calls and modifiers

#[test]
fn modifiers_attach_to_the_call_before_them() {
    let src = "\
``` m
+ .engine
: .event a
```
``` a m
+ .runtime
: .println before
: .process sh -c
: .arg echo $K
: .flag --one two
: .env K=V
: J .env with spaces
: .println between
: .mirror example.azurecr.io
: .host localhost:8578, resolve, pull
: .server https://example.azurecr.io
```
";
    let p = ok(src);
    let plan = p.engine("m").unwrap();
    let calls = &plan.events[0].calls;
    let shape: Vec<(u32, &str, &str)> = calls
        .iter()
        .map(|c| (c.id, c.spec.name, c.invocation.input.as_str()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (3, "println", "before"),
            (4, "process", "sh -c"),
            (5, "println", "between"),
            (6, "mirror", "example.azurecr.io"),
        ]
    );
    assert!(calls[0].invocation.props.is_empty());
    let process = &calls[1].invocation.props;
    assert_eq!(all(process, "arg"), vec![sym("echo $K")]);
    assert_eq!(all(process, "flag"), vec![sym("--one two")]);
    assert_eq!(all(process, "env"), vec![sym("K=V"), sym("J=with spaces")]);
    // In order written, so `.process` can build its argv from them.
    let order: Vec<&str> = process.iter().map(|(n, _)| n).collect();
    assert_eq!(order, vec!["arg", "flag", "env", "env"]);
    assert!(calls[2].invocation.props.is_empty());
    let mirror = &calls[3].invocation.props;
    assert_eq!(mirror.get("host"), Some(&sym("localhost:8578")));
    assert_eq!(all(mirror, "capability"), vec![sym("resolve"), sym("pull")]);
    assert_eq!(
        mirror.get("server"),
        Some(&sym("https://example.azurecr.io"))
    );
    // The invocation carries the entity id too.
    assert_eq!(calls[3].invocation.id, 6);
}

#[test]
fn a_modifier_of_another_plugin_is_an_unknown_plugin() {
    let errs = errors("``` a b\n+ .runtime\n: .println x\n: .host localhost:1, pull\n```\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (4, 3));
    assert!(errs[0].2.contains("unknown plugin '.host'"), "{errs:?}");
    let errs = errors("``` a b\n+ .runtime\n: .process sh\n: .arrg x\n```\n");
    assert!(
        errs[0].2.contains("not a modifier of '.process'"),
        "{errs:?}"
    );
    assert!(errs[0].3.contains("did you mean '.arg'?"), "{errs:?}");
}

#[test]
fn plugin_input_is_checked_at_compile_time() {
    for (line, col, message) in [
        (": .timer 5 parsecs", 10, "unknown time unit"),
        (": .timer soon", 10, "not a duration"),
        (": .timer", 3, "needs"),
        (": .process", 3, "needs the program"),
        (": .install ../etc/passwd", 12, "inside src_dir"),
        (": .install /etc/passwd", 12, "inside src_dir"),
        (": .mirror", 3, "needs"),
    ] {
        let errs = errors(&format!("``` a b\n+ .runtime\n{line}\n```\n"));
        assert_eq!(errs.len(), 1, "{line}: {errs:?}");
        assert_eq!((errs[0].0, errs[0].1), (3, col), "{line}: {errs:?}");
        assert!(errs[0].2.contains(message), "{line}: {errs:?}");
    }
    for (call, line, message) in [
        (
            ": .mirror h",
            ": .host localhost:1, fly",
            "unknown capability",
        ),
        (": .mirror h", ": .host", "needs an address"),
        (": .process sh", ": .env NOEQUALS", "not KEY=VALUE"),
        (": .process sh", ": .arg", "needs a value"),
    ] {
        let errs = errors(&format!("``` a b\n+ .runtime\n{call}\n{line}\n```\n"));
        assert_eq!(errs.len(), 1, "{line}: {errs:?}");
        assert_eq!(errs[0].0, 4, "{line}: {errs:?}");
        assert!(
            errs.iter().any(|e| e.2.contains(message)),
            "{line}: {errs:?}"
        );
    }
}

#[test]
fn a_call_takes_no_name() {
    let errs = errors("``` a b\n+ .runtime\n: x .println hi\n```\n");
    assert_eq!((errs[0].0, errs[0].1), (3, 3), "{errs:?}");
    assert!(errs[0].2.contains("takes no name"), "{errs:?}");
}

/// `.inject-layer` reads its source when the file is compiled: a directory that is not there,
/// bad base64 or a bad modifier value is a diagnostic at its line and column; a real directory
/// compiles and `dump` shows the call with its modifiers.
#[test]
fn inject_layer_sources_are_read_when_compiled() {
    let errs = errors(
        "``` a b\n+ .runtime\n: .inject-layer /no/such/acr-layer-dir\n: .inject-layer data:!!\n: .inject-layer data:H4sIAAAAAAAA/wMAAAAAAAAAAAA=\n: .platform linux/mips99\n: .env NOEQUALS\n: .digest md5:00\n```\n",
    );
    let at: Vec<(u32, u32)> = errs.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(
        at,
        vec![(3, 17), (4, 17), (6, 13), (7, 8), (8, 11)],
        "{errs:?}"
    );
    assert!(errs[0].2.contains("/no/such/acr-layer-dir"), "{errs:?}");
    assert!(errs[1].2.contains("base64"), "{errs:?}");
    assert!(errs[2].2.contains("mips99"), "{errs:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tool"), "x").unwrap();
    let p = ok(&format!(
        "``` a b\n+ .runtime\n: .inject-layer {}\n: .entrypoint [\"/tool\", \"--\"]\n: .env A=1\n: .platform linux/arm64\n```\n",
        dir.path().display()
    ));
    let text = dump(&p);
    assert!(text.contains("inject-layer"), "{text}");
    assert!(text.contains("env A=1"), "{text}");
    assert!(text.contains("platform linux/arm64"), "{text}");
}

#[test]
fn planned_plugins_compile() {
    let p = ok("``` a b\n+ .runtime\n: .login-acr example\n: .login\n: .authn oauth2\n: .resolve\n: .discover t\n: .teleport overlaybd\n: .from sha256:aa\n: .to sha256:bb\n: .pull\n```\n");
    let text = dump(&p);
    for line in [
        "2: login-acr \"example\"",
        "3: login \n",
        "7: teleport \"overlaybd\"",
        "from sha256:aa",
        "to sha256:bb",
    ] {
        let line = line.replace(" \n", "\n");
        assert!(text.contains(&line), "{line:?} in\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// proxies and routes

#[test]
fn routes_with_their_methods_and_calls() {
    let src = "\
``` start mirror
+ .runtime
: .println setup
+ .proxy 0.0.0.0:8578
: .manifests HEAD, get
:   .login token
:   .resolve application/vnd.oci.image.manifest.v1+json
: .blobs get
:   .pull
: .tags get
: .referrers get
:   .println referrers
```
";
    let p = ok(src);
    let proxies = p.proxies();
    assert_eq!(proxies.len(), 1);
    let proxy = &proxies[0];
    assert_eq!(proxy.block, 1);
    assert_eq!(proxy.address, "0.0.0.0:8578");
    type RouteShape<'a> = (u32, Resource, Vec<Method>, Vec<(u32, &'a str, &'a str)>);
    let routes: Vec<RouteShape> = proxy
        .routes
        .iter()
        .map(|r| {
            (
                r.id,
                r.resource,
                r.methods.clone(),
                r.calls
                    .iter()
                    .map(|c| (c.id, c.spec.name, c.invocation.input.as_str()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        vec![
            (
                3,
                Resource::Manifests,
                vec![Method::Head, Method::Get],
                vec![
                    (4, "login", "token"),
                    (5, "resolve", "application/vnd.oci.image.manifest.v1+json")
                ]
            ),
            (6, Resource::Blobs, vec![Method::Get], vec![(7, "pull", "")]),
            (8, Resource::Tags, vec![Method::Get], vec![]),
            (
                9,
                Resource::Referrers,
                vec![Method::Get],
                vec![(10, "println", "referrers")]
            ),
        ]
    );
    // Route calls are not part of the block's runtime sequence.
    let storage = p.world.read_storage::<Block>();
    let block_entity = p.blocks[0];
    assert!(storage.get(block_entity).is_some());
    let runtime: Vec<u32> = p.calls_of(block_entity).iter().map(|c| c.id).collect();
    assert_eq!(runtime, vec![2]);
    let text = dump(&p);
    assert!(text.contains("Proxy routes:\n  0.0.0.0:8578 (block 1)\n    3: HEAD, GET /v2/<name>/manifests\n      4: login \"token\"\n"), "{text}");
}

#[test]
fn route_diagnostics() {
    let cases: &[(&str, u32, u32, &str, &str)] = &[
        (
            ": .manifests put",
            3,
            14,
            "unknown method 'put'",
            "pull-only",
        ),
        (
            ": .manifests gett",
            3,
            14,
            "unknown method 'gett'",
            "did you mean 'get'?",
        ),
        (
            ": .manifests fetch",
            3,
            14,
            "unknown method 'fetch'",
            "serves head, get",
        ),
        (": .tags head", 3, 9, "unknown method 'head'", "serves get"),
        (": .manifests", 3, 3, "needs its methods", "head, get"),
        (
            ": .manifest get",
            3,
            3,
            "unknown proxy attribute",
            "did you mean '.manifests'?",
        ),
        (
            ": .resolve",
            3,
            3,
            "needs a route before it",
            ".manifests head, get",
        ),
        (
            ": .manifests get\n: .blobs get\n: .manifests head, get",
            5,
            3,
            "GET manifests is already routed",
            "line 3",
        ),
    ];
    for (lines, line, col, message, hint) in cases {
        let errs = errors(&format!("``` a b\n+ .proxy localhost:8578\n{lines}\n```\n"));
        assert_eq!(errs.len(), 1, "{lines}: {errs:?}");
        assert_eq!((errs[0].0, errs[0].1), (*line, *col), "{lines}: {errs:?}");
        assert!(errs[0].2.contains(message), "{lines}: {errs:?}");
        assert!(errs[0].3.contains(hint), "{lines}: {errs:?}");
    }
    for address in ["", "localhost", "localhost:http", "a b:1", "http://x:1"] {
        let errs = errors(&format!("``` a b\n+ .proxy {address}\n```\n"));
        assert!(
            errs[0].2.contains("not an address") && errs[0].3.contains("HOST:PORT"),
            "{address:?}: {errs:?}"
        );
    }
    let p = ok("``` a b\n+ .proxy [::1]:8578\n```\n``` e f\n+ .proxy :9000\n```\n");
    let addresses: Vec<String> = p.proxies().into_iter().map(|p| p.address).collect();
    assert_eq!(addresses, vec!["[::1]:8578", ":9000"]);
}

// ---------------------------------------------------------------------------------------------
// ids and the default template

#[test]
fn entity_ids_are_in_file_order() {
    let p = ok(&rendered_template());
    let plan = p.engine("mirror").unwrap();
    assert_eq!(plan.id, 1);
    let ids: Vec<(u32, Vec<(u32, &str)>)> = plan
        .events
        .iter()
        .map(|e| (e.id, e.calls.iter().map(|c| (c.id, c.spec.name)).collect()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (2, vec![(3, "process")]),
            (4, vec![(5, "login-acr"), (6, "install"), (7, "mirror")])
        ]
    );
    let routes: Vec<(u32, Vec<u32>)> = p.proxies()[0]
        .routes
        .iter()
        .map(|r| (r.id, r.calls.iter().map(|c| c.id).collect()))
        .collect();
    assert_eq!(
        routes,
        vec![
            (8, vec![9, 10, 11, 12, 13]),
            (14, vec![15, 16, 17]),
            (18, vec![19, 20, 21]),
            (22, vec![23, 24, 25])
        ]
    );
    // `locate` finds calls and event blocks of engines, not route calls.
    assert_eq!(p.locate(6), Some(("mirror".to_string(), 1, 1)));
    assert_eq!(p.locate(7), Some(("mirror".to_string(), 1, 2)));
    assert_eq!(p.locate(4), Some(("mirror".to_string(), 1, 0)));
    assert_eq!(p.locate(9), None);
    // Compiling twice gives the same ids.
    assert_eq!(dump(&p), dump(&ok(&rendered_template())));
}

#[test]
fn dump_of_the_template() {
    let text = dump(&ok(&rendered_template()));
    let expected = "\
1: mirror

  2: install mirror
\t# current_dir: .world/azurecr.io/example
    3: process \"sh\"
      arg setup-env.sh
      env [ACR_OPERATING_SYSTEM=ubuntu, ACR_TELEPORT_FORMAT=overlaybd]

  4: start mirror
\t# file_src: .world/azurecr.io/example/access_token
\t# src_dir: .
\t# work_dir: .world/azurecr.io/example
    5: login-acr \"example\"
      login-server https://example.azurecr.io
    6: install \"access_token\"
    7: mirror \"example.azurecr.io\"
      host localhost:8578
      capability [resolve, pull]
      header x-ms-upgrade-if-streamable=overlaybd

Engine control block: ``` mirror @ 1
  events: install, start
  Loop(1)

Proxy routes:
  localhost:8578 (block 4)
    8: HEAD, GET /v2/<name>/manifests
      9: login \"access_token\"
      10: authn \"oauth2\"
      11: resolve \"application/vnd.oci.image.manifest.v1+json\"
      12: discover \"application/vnd.azure.artifact.streaming.link.v1\"
      13: teleport \"overlaybd\"
    14: HEAD, GET /v2/<name>/blobs
      15: login \"access_token\"
      16: authn \"oauth2\"
      17: pull
    18: GET /v2/<name>/tags
      19: login \"access_token\"
      20: authn \"oauth2\"
      21: resolve
    22: GET /v2/<name>/referrers
      23: login \"access_token\"
      24: authn \"oauth2\"
      25: resolve
";
    assert_eq!(text, expected);
}

#[test]
fn template_with_other_options_compiles() {
    let options = acr::cli::InitArgs {
        mirror_address: "0.0.0.0:9000".into(),
        teleport_format: "none".into(),
        operating_system: "fedora".into(),
        force: false,
    };
    let text = acr::cli::render("r", "example.com", ".world/example.com/r", &options);
    let p = ok(&text);
    assert_eq!(p.proxies()[0].address, "0.0.0.0:9000");
    let text = dump(&p);
    assert!(text.contains("      12: discover\n"), "{text}");
    assert!(text.contains("7: mirror \"r.example.com\""), "{text}");
    // A login server given as a URL (a stand-in, a private endpoint) is used as it is.
    let text = acr::cli::render(
        "r",
        "http://127.0.0.1:5000",
        ".world/127.0.0.1:5000/r",
        &options,
    );
    let text = dump(&ok(&text));
    assert!(
        text.contains("login-server http://127.0.0.1:5000"),
        "{text}"
    );
    assert!(
        text.contains("7: mirror \"http://127.0.0.1:5000\""),
        "{text}"
    );
}

#[test]
fn blocks_in_no_engine_are_dumped_too() {
    let p = ok("``` lonely block\n+ .runtime\n: .println x\n```\n``` ctl\n+ x .int 1\n```\n");
    let text = dump(&p);
    assert!(
        text.contains("1: lonely block (in no engine)\n    2: println \"x\"\n"),
        "{text}"
    );
    assert!(text.contains("3: ctl (no engine)\n"), "{text}");
    assert_eq!(p.engine_names().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// the reference's parser fixture (lifec_registry.md §6 item 15), in this grammar

/// The old fixture, adapted: its root block (a bare fence) has no meaning here (a bare fence in
/// prose is an ordinary code example), so the root's values move to a control block `root`;
/// its `+ test .empty Everything after this is ignored` is an error now (see below).
const FIXTURE: &str = r#"
# Test
This is to test that the enabled disabled is working. A + or a : in prose is nothing.

``` call host
<>
+ address .text localhost
: ipv6 .enable
: path .text api/test
: name .text test_name
``` guest
+ address .text localhost
: ipv4 .enable
: path .text api/test2
```

``` test host
+ address .text localhost
```

```
+ debug .enable
```

``` root
+ debug .enable
+ test .empty
: name .text Test map
: description .text This tests the .map type, which is an alias for .empty
```

``` guest
: name .text cool guest host
+ address .text testhost
```
"#;

#[test]
fn the_reference_parser_fixture() {
    // `<>` on its own line is an empty inline comment: a line with no op, so it is an error
    // here. Everything else compiles.
    let errs = errors(FIXTURE);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].1), (6, 1), "{errs:?}");
    let source = FIXTURE.replace("<>\n", "");
    let p = ok(&source);
    assert_eq!(
        names(&p),
        vec![
            ("call".into(), "host".into()),
            ("call".into(), "guest".into()),
            ("test".into(), "host".into()),
            ("".into(), "root".into()),
            ("".into(), "guest".into()),
        ]
    );
    let host = block(&p, "call", "host");
    assert_eq!(host.props.get("address"), Some(&text("localhost")));
    assert_eq!(host.props.get("address::ipv6"), Some(&Value::Bool(true)));
    assert_eq!(host.props.get("address::path"), Some(&text("api/test")));
    assert_eq!(host.props.get("address::name"), Some(&text("test_name")));
    let guest = block(&p, "call", "guest");
    assert_eq!(guest.props.get("address::ipv4"), Some(&Value::Bool(true)));
    assert_eq!(guest.props.get("address::path"), Some(&text("api/test2")));
    assert_eq!(guest.props.get("address::ipv6"), None);
    let root = block(&p, "", "root");
    assert_eq!(root.props.get("debug"), Some(&Value::Bool(true)));
    assert_eq!(root.props.get("test"), Some(&Value::Empty));
    assert_eq!(root.props.get("test::name"), Some(&text("Test map")));
    let control = block(&p, "", "guest");
    assert_eq!(control.control.get("name"), Some(&text("cool guest host")));
    assert_eq!(control.props.get("address"), Some(&text("testhost")));
    // The bare-fenced block is an ordinary code example: nothing of it reached the World.
    let with_debug: Vec<(u32, String)> = blocks(&p)
        .into_iter()
        .filter(|b| b.props.get("debug").is_some())
        .map(|b| (b.id, b.symbol))
        .collect();
    assert_eq!(with_debug, vec![(4, "root".to_string())]);

    // The old fixture's `+ test .empty Everything after this is ignored when parsed` silently
    // dropped text; here it is a diagnostic that says what to do.
    let lossy = source.replace(
        "+ test .empty\n",
        "+ test .empty Everything after this is ignored\n",
    );
    let errs = errors(&lossy);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].2.contains("`.empty` takes no value"), "{errs:?}");
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
