//! Entity ids, the default template, and the reference parser fixture in this grammar.

use super::*;

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
    assert_block_names(
        &p,
        &[
            ("call", "host"),
            ("call", "guest"),
            ("test", "host"),
            ("", "root"),
            ("", "guest"),
        ],
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
