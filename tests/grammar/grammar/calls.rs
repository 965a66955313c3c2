//! Plugin calls with their modifiers, and proxies with their routes.

use super::*;

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
