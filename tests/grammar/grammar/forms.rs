//! Prose and fences, block headers and the line forms of the runmd grammar.

use super::*;

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
    assert_block_names(&p, &[("", "mirror"), ("a", "mirror")]);
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
    assert_block_names(
        &p,
        &[
            ("", "mirror"),
            ("install", "mirror"),
            // One word inside a block keeps the block's name: `install start`.
            ("install", "start"),
            ("install", "guest"),
            // One word at the top level is a control block.
            ("", "other"),
        ],
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
    assert_block_names(&p, &[("a", "b"), ("e", "f")]);
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
    assert_block_names(&p, &[("start.v2", "mirror-1"), ("", "a/b#c")]);
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
