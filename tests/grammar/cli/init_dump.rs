//! `acr init`, `acr dump`, and `mirror start` without its file.

use super::*;

// ---------------------------------------------------------------------------------------------
// init

#[test]
fn init_writes_the_template_and_prints_its_absolute_path() {
    let dir = tmp();
    let done = run(dir.path(), &["--registry", "example", "init"]);
    done.success();
    let path = dir.path().join(WORLD);
    assert!(path.is_file(), "{done}");
    let printed = PathBuf::from(done.stdout.trim_end_matches('\n'));
    assert!(printed.is_absolute(), "{done}");
    assert_eq!(
        std::fs::canonicalize(&printed).unwrap(),
        std::fs::canonicalize(&path).unwrap()
    );
    assert_eq!(done.stdout.lines().count(), 1, "{done}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("{{"), "{text}");
    for want in [
        "# acr mirror for example.azurecr.io",
        ": .login-acr example",
        ": .mirror example.azurecr.io",
        ": .host localhost:8578, resolve, pull",
        "+ .proxy localhost:8578",
        ": ACR_OPERATING_SYSTEM .env ubuntu",
        ": ACR_TELEPORT_FORMAT .env overlaybd",
        ":   .discover application/vnd.azure.artifact.streaming.link.v1",
        ": .login-server https://example.azurecr.io",
        ": .header x-ms-upgrade-if-streamable overlaybd",
        ":   .teleport overlaybd",
        ": work_dir .symbol .world/azurecr.io/example",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

#[test]
fn init_reruns_but_keeps_hand_edits_without_force() {
    let dir = tmp();
    run(dir.path(), &["--registry", "example", "init"]).success();
    let path = dir.path().join(WORLD);
    let first = std::fs::read_to_string(&path).unwrap();

    // A re-run without edits succeeds and writes the same file.
    let again = run(dir.path(), &["--registry", "example", "init"]);
    again.success();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);

    // After a hand edit, a re-run refuses and leaves the file alone.
    let edited = format!("{first}\nA note of mine.\n");
    std::fs::write(&path, &edited).unwrap();
    let refused = run(dir.path(), &["--registry", "example", "init"]);
    refused.code(1);
    assert!(refused.stderr.contains("edited"), "{refused}");
    assert!(refused.stderr.contains("--force"), "{refused}");
    assert!(refused.stdout.is_empty(), "{refused}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);

    // --force overwrites.
    let forced = run(dir.path(), &["--registry", "example", "init", "--force"]);
    forced.success();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    // ... and a later plain re-run is fine again.
    run(dir.path(), &["--registry", "example", "init"]).success();
}

#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let before = tmp();
    let after = tmp();
    run(before.path(), &["--registry", "example", "init"]).success();
    run(after.path(), &["init", "--registry", "example"]).success();
    let a = std::fs::read_to_string(before.path().join(WORLD)).unwrap();
    let b = std::fs::read_to_string(after.path().join(WORLD)).unwrap();
    assert_eq!(a, b);
    let d1 = run(after.path(), &["dump", "--registry", "example"]);
    d1.success();
    let d2 = run(after.path(), &["--registry", "example", "dump"]);
    assert_eq!(d1.stdout, d2.stdout);
    // REGISTRY_NAME works like --registry.
    let mut c = acr(after.path());
    c.arg("dump").env("REGISTRY_NAME", "example");
    let d3 = Running::spawn(c).finish(FINISH);
    d3.success();
    assert_eq!(d3.stdout, d1.stdout);
}

#[test]
fn init_options_end_up_in_the_file() {
    let dir = tmp();
    let done = run_for_registry(
        dir.path(),
        ("reg", "example.com"),
        &[
            "init",
            "--mirror-address",
            "0.0.0.0:9000",
            "--teleport-format",
            "none",
            "--operating-system",
            "fedora",
        ],
    );
    done.success();
    let path = dir.path().join(".world/example.com/reg/mirror.runmd");
    assert!(
        done.stdout
            .trim_end()
            .ends_with(".world/example.com/reg/mirror.runmd"),
        "{done}"
    );
    let text = assert_file_holds(
        &path,
        &[
            "# acr mirror for reg.example.com",
            ": .mirror reg.example.com",
            ": .host 0.0.0.0:9000, resolve, pull",
            "+ .proxy 0.0.0.0:9000",
            ": ACR_OPERATING_SYSTEM .env fedora",
            ": ACR_TELEPORT_FORMAT .env none",
            ":   .teleport none",
            ": work_dir .symbol .world/example.com/reg",
        ],
    );
    // No overlaybd, no referrers type to discover.
    assert!(text.contains(":   .discover\n"), "{text}");
    assert!(!text.contains("streaming.link"), "{text}");
    assert!(!text.contains("localhost:8578"), "{text}");
    // And it compiles.
    let dump = run_for_registry(dir.path(), ("reg", "example.com"), &["dump"]);
    dump.success();
    assert!(
        dump.stdout.contains("7: mirror \"reg.example.com\""),
        "{dump}"
    );
    assert!(dump.stdout.contains("      host 0.0.0.0:9000\n"), "{dump}");
}

#[test]
fn init_rejects_bad_names_and_needs_a_registry() {
    let dir = tmp();
    let done = run(dir.path(), &["init"]);
    done.code(1);
    assert!(done.stderr.contains("acr --registry NAME init"), "{done}");
    let done = run(dir.path(), &["--registry", "a b/../c", "init"]);
    done.code(1);
    assert!(done.stderr.contains("--registry"), "{done}");
    assert!(!dir
        .path()
        .join(".world")
        .join("azurecr.io")
        .join("a b")
        .exists());
    let done = run(
        dir.path(),
        &["--registry", "ok", "init", "--mirror-address", "x y"],
    );
    done.code(1);
    assert!(done.stderr.contains("--mirror-address"), "{done}");
}

// ---------------------------------------------------------------------------------------------
// dump

#[test]
fn dump_of_the_default_pipeline() {
    let dir = tmp();
    run(dir.path(), &["--registry", "example", "init"]).success();
    let done = run(dir.path(), &["--registry", "example", "dump"]);
    done.success();
    // The whole tree, line by line: the ids are the ones the old tool's README documents
    // (5 login-acr, 6 install, 7 mirror) and users pass to `mirror start --id`.
    let expected = [
        "1: mirror",
        "",
        "  2: install mirror",
        "\t# current_dir: .world/azurecr.io/example",
        "    3: process \"sh\"",
        "      arg setup-env.sh",
        "      env [ACR_OPERATING_SYSTEM=ubuntu, ACR_TELEPORT_FORMAT=overlaybd]",
        "",
        "  4: start mirror",
        "\t# file_src: .world/azurecr.io/example/access_token",
        "\t# src_dir: .",
        "\t# work_dir: .world/azurecr.io/example",
        "    5: login-acr \"example\"",
        "      login-server https://example.azurecr.io",
        "    6: install \"access_token\"",
        "    7: mirror \"example.azurecr.io\"",
        "      host localhost:8578",
        "      capability [resolve, pull]",
        "      header x-ms-upgrade-if-streamable=overlaybd",
        "",
        "Engine control block: ``` mirror @ 1",
        "  events: install, start",
        "  Loop(1)",
        "",
        "Proxy routes:",
        "  localhost:8578 (block 4)",
        "    8: HEAD, GET /v2/<name>/manifests",
        "      9: login \"access_token\"",
        "      10: authn \"oauth2\"",
        "      11: resolve \"application/vnd.oci.image.manifest.v1+json\"",
        "      12: discover \"application/vnd.azure.artifact.streaming.link.v1\"",
        "      13: teleport \"overlaybd\"",
        "    14: HEAD, GET /v2/<name>/blobs",
        "      15: login \"access_token\"",
        "      16: authn \"oauth2\"",
        "      17: pull",
        "    18: GET /v2/<name>/tags",
        "      19: login \"access_token\"",
        "      20: authn \"oauth2\"",
        "      21: resolve",
        "    22: GET /v2/<name>/referrers",
        "      23: login \"access_token\"",
        "      24: authn \"oauth2\"",
        "      25: resolve",
    ];
    let out = lines(&done.stdout);
    for (n, (got, want)) in out.iter().zip(expected.iter()).enumerate() {
        assert_eq!(got, want, "line {} of the dump:\n{}", n + 1, done.stdout);
    }
    assert_eq!(
        out.len(),
        expected.len(),
        "the dump has {} lines, not {}:\n{}",
        out.len(),
        expected.len(),
        done.stdout
    );
}

#[test]
fn dump_reports_a_typo_with_file_line_col_and_a_suggestion() {
    let dir = tmp();
    let src = "# a pipeline\n\n``` start mirror\n+ .runtime\n: .resolv x\n```\n";
    let path = write(dir.path(), "typo.runmd", src);
    let file = path.display().to_string();
    let done = run(dir.path(), &["--runmd-path", &file, "dump"]);
    done.code(2);
    assert!(done.stderr.contains(&format!("{file}:5:3")), "{done}");
    assert!(done.stderr.contains("unknown plugin '.resolv'"), "{done}");
    assert!(done.stderr.contains("did you mean '.resolve'?"), "{done}");
    // The offending line and a caret under the fault.
    assert!(
        done.stderr.contains("5 | : .resolv x\n  |   ^^^^^^^\n"),
        "{done}"
    );
    assert!(done.stdout.is_empty(), "{done}");
}

#[test]
fn dump_without_a_file_says_to_run_init() {
    let dir = tmp();
    let done = run(dir.path(), &["--registry", "example", "dump"]);
    done.code(1);
    assert!(
        done.stderr.contains("acr --registry example init"),
        "{done}"
    );
}

// ---------------------------------------------------------------------------------------------
// mirror start: the missing file

#[test]
fn mirror_start_without_a_file_says_to_run_init() {
    let dir = tmp();
    let done = run(dir.path(), &["--registry", "example", "mirror", "start"]);
    done.fails_saying(&["acr --registry example init", WORLD]);
    // Without --registry it says which option names the registry.
    let done = run(dir.path(), &["mirror", "start"]);
    done.fails_saying(&["acr --registry NAME init"]);
    // A --runmd-path that does not exist.
    let done = run(
        dir.path(),
        &["--runmd-path", "nope.runmd", "mirror", "start"],
    );
    done.fails_saying(&["nope.runmd"]);
    assert!(!dir.path().join(".world").exists());
}
