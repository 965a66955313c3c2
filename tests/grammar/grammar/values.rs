//! Values, properties and control values, and engines.

use super::*;

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
