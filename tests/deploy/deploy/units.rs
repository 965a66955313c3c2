//! The systemd unit and the Dockerfile.

use super::*;

// ------------------------------------------------------------------------------------------
// systemd

/// The `[Service]` (and other) settings of a unit: key -> values, in order.
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('[')
        {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    out
}

#[test]
fn the_systemd_unit_starts_acr_with_arguments_it_accepts() {
    let path = repo_root().join("lib/systemd/acr.service");
    let text = read(&path);
    let unit = unit_settings(&text);
    let one = |k: &str| -> &str {
        let v = unit
            .get(k)
            .unwrap_or_else(|| panic!("acr.service has no {k}="));
        assert_eq!(v.len(), 1, "{k}= more than once");
        &v[0]
    };
    assert_eq!(one("Type"), "simple");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("EnvironmentFile"), "-/etc/acr/acr.env");
    let timeout: u64 = one("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("seconds");
    assert!(
        timeout >= shutdown_grace_s() + 5,
        "TimeoutStopSec {timeout} cuts acr's grace short"
    );
    let after: Vec<&str> = one("After").split_whitespace().collect();
    assert!(after.contains(&"network-online.target") && after.contains(&"containerd.service"));

    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(exec[0], "/usr/local/bin/acr");
    // acr parses exactly these arguments.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
    cmd.args(&exec[1..]).arg("--help");
    let out = run_cmd(cmd, Duration::from_secs(60));
    assert!(out.success(), "acr refuses the unit's arguments: {out:?}");
    assert!(
        out.stdout.contains("--hosts-dir"),
        "the help of mirror start: {out:?}"
    );

    let working_dir = one("WorkingDirectory");
    assert_eq!(
        working_dir,
        format!("/var/lib/{}", one("StateDirectory")),
        "StateDirectory= creates the working directory"
    );
    let writable: Vec<&str> = unit["ReadWritePaths"]
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|p| p.trim_start_matches('-'))
        .collect();
    let exec_args: Vec<String> = exec.iter().map(|a| a.to_string()).collect();
    let hosts_dir = flag_value(&exec_args, "--hosts-dir").expect("--hosts-dir");
    for p in [working_dir, hosts_dir] {
        assert!(
            writable.contains(&p),
            "{p} is not in ReadWritePaths={writable:?}"
        );
    }
    let runmd = flag_value(&exec_args, "--runmd-path").expect("--runmd-path");
    assert!(Path::new(runmd).is_absolute());

    let Some(analyze) = which("systemd-analyze") else {
        println!("systemd-analyze is not installed: the unit's syntax is not verified");
        return;
    };
    // verify checks that the binary exists: point the copy at the one cargo built.
    let dir = temp_dir("acr-unit-");
    let copy = dir.path().join("acr.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/acr", env!("CARGO_BIN_EXE_acr")),
    )
    .expect("write");
    let mut cmd = Command::new(&analyze);
    cmd.arg("verify").arg(&copy);
    let out = run_cmd(cmd, Duration::from_secs(60));
    let complaints: Vec<&str> = out
        .stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|l| l.contains("acr.service"))
        .collect();
    assert!(
        out.success() && complaints.is_empty(),
        "systemd-analyze verify: {out:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Dockerfile

/// `FROM IMAGE [AS STAGE]`: (image, stage).
type Stage = (String, Option<String>);
/// Any other instruction: (keyword, the rest of the line).
type Instruction = (String, String);

/// The `FROM`s of the Dockerfile, and its other instructions.
fn dockerfile() -> (Vec<Stage>, Vec<Instruction>) {
    let text = read(&repo_root().join("Dockerfile"));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
        } else {
            current.push_str(t);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut froms = Vec::new();
    let mut rest = Vec::new();
    for l in logical {
        let (kw, args) = l.split_once(' ').unwrap_or((&l, ""));
        let kw = kw.to_ascii_uppercase();
        if kw == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let stage = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                other => panic!("FROM {other:?}"),
            };
            froms.push((words[0].to_string(), stage));
        } else {
            rest.push((kw, args.trim().to_string()));
        }
    }
    (froms, rest)
}

fn instruction<'a>(rest: &'a [(String, String)], kw: &str) -> Vec<&'a str> {
    rest.iter()
        .filter(|(k, _)| k == kw)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// `rust:1.95-bookworm` -> (1, 95)
fn builder_version() -> (u32, u32, String) {
    let (froms, _) = dockerfile();
    let (image, stage) = &froms[0];
    assert_eq!(
        stage.as_deref(),
        Some("builder"),
        "the first stage is the builder"
    );
    let tag = image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the builder is not a rust image: {image}"));
    let (version, distro) = tag
        .split_once('-')
        .unwrap_or_else(|| panic!("rust:VERSION-DISTRO, not {image}"));
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<u32>().expect("a version"));
    let (major, minor) = (parts.next().unwrap(), parts.next().expect("major.minor"));
    (major, minor, distro.to_string())
}

/// This machine's target triple, from `rustc -vV`.
fn host_target() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("no host line in rustc -vV:\n{text}"))
        .trim()
        .to_string()
}

fn cargo_rust_version() -> (u32, u32) {
    let text = read(&repo_root().join("Cargo.toml"));
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version") && l.contains('"'))
        .expect("rust-version in Cargo.toml");
    let v = line.split('"').nth(1).unwrap();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().expect("a version"));
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn the_dockerfile_builder_is_the_rust_version_of_cargo_toml() {
    let (major, minor, _) = builder_version();
    let (want_major, want_minor) = cargo_rust_version();
    assert_eq!(
        (major, minor),
        (want_major, want_minor),
        "the Dockerfile builds with rust:{major}.{minor}, Cargo.toml says rust-version = \"{want_major}.{want_minor}\""
    );
}

/// Whatever Cargo.toml says, `cargo build --locked` in the builder needs a toolchain at least
/// as new as every locked dependency's rust-version.
#[test]
fn the_dockerfile_builder_is_new_enough_for_the_locked_dependencies() {
    let (major, minor, _) = builder_version();
    // The builder compiles for Linux on the machine's architecture: the crates of that target
    // are the ones it builds (and the ones `cargo build` here has downloaded, so this runs
    // offline on a machine that never built for Windows or macOS).
    let host = host_target();
    assert!(
        host.contains("-linux-"),
        "the Dockerfile's builder is Linux; this test runs on {host}"
    );
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(repo_root());
    let out = run_cmd(cmd, Duration::from_secs(300));
    assert!(out.success(), "cargo metadata: {out:?}");
    let meta: Value = serde_json::from_str(&out.stdout).expect("metadata JSON");
    let mut needs = Vec::new();
    for p in arr(&meta["packages"]) {
        if let Some(v) = p["rust_version"].as_str() {
            let mut parts = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
            let need = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            if need > (major, minor) {
                needs.push(format!(
                    "{} {} needs rust {v}",
                    s(&p["name"]),
                    s(&p["version"])
                ));
            }
        }
    }
    assert!(
        needs.is_empty(),
        "rust:{major}.{minor} cannot build the locked tree: {needs:#?}"
    );
}

#[test]
fn the_dockerfile_builds_acr_and_runs_the_manifests_pipeline_path() {
    let (froms, rest) = dockerfile();
    assert_eq!(froms.len(), 2, "a builder and a runtime stage");
    let (_, _, builder_distro) = builder_version();
    let runtime = &froms[1].0;
    assert_eq!(
        runtime,
        &format!("debian:{builder_distro}-slim"),
        "the runtime is the builder's Debian (glibc)"
    );
    let runs = instruction(&rest, "RUN").join("\n");
    assert!(
        runs.contains("cargo build --release --locked --bin acr"),
        "the builder runs cargo build --release --locked --bin acr"
    );
    assert!(
        runs.contains("ca-certificates"),
        "the runtime has CA certificates (https upstreams)"
    );
    assert_eq!(
        instruction(&rest, "USER").last().copied(),
        Some("65532:65532")
    );
    assert_eq!(
        instruction(&rest, "WORKDIR").last().copied(),
        Some(STATE_DIR)
    );
    let exposed: Vec<&str> = instruction(&rest, "EXPOSE");
    assert_eq!(exposed, vec!["8578"]);
    let entrypoint: Vec<String> =
        serde_json::from_str(instruction(&rest, "ENTRYPOINT")[0]).expect("ENTRYPOINT [..]");
    assert_eq!(entrypoint, vec!["acr"]);
    let cmd: Vec<String> = serde_json::from_str(instruction(&rest, "CMD")[0]).expect("CMD [..]");

    // The image's command runs the pipeline where the manifests mount it, and acr accepts it.
    let runmd = flag_value(&cmd, "--runmd-path").expect("CMD has --runmd-path");
    let m = Manifests::load();
    let d = m.get("Deployment", "acr");
    let (_, key, _) = pipeline_of(&m, d);
    assert_eq!(
        runmd,
        format!("{PIPELINE_MOUNT}/{key}"),
        "the pods mount the pipeline where the image's CMD reads it"
    );
    assert_eq!(
        args_of(acr_container(d)),
        cmd,
        "the Deployment runs the image's command"
    );
    // What `.mirror` writes goes to acr's own directory, not beside a read-only pipeline.
    let hosts = flag_value(&cmd, "--hosts-dir").expect("CMD has --hosts-dir");
    assert!(hosts.starts_with(&format!("{STATE_DIR}/")), "{hosts}");
    let mut help = Command::new(env!("CARGO_BIN_EXE_acr"));
    help.args(&cmd).arg("--help");
    run_cmd(help, Duration::from_secs(60)).ok();
    let exposed_port: u16 = exposed[0].parse().unwrap();
    let svc = m.get("Service", "acr");
    assert_eq!(
        arr(&svc["spec"]["ports"])[0]["port"].as_u64(),
        Some(u64::from(exposed_port))
    );
}

#[test]
fn the_docker_build_context_has_the_sources_and_not_the_build_output() {
    let text = read(&repo_root().join(".dockerignore"));
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for want in ["target/", ".git", ".world", ".work"] {
        assert!(patterns.contains(&want), ".dockerignore lacks {want}");
    }
    // What the build reads (include_str! of the template and lib/sh, the bench target that
    // Cargo.toml declares) must stay in the context.
    let needed = [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "plugins/Cargo.toml",
        "plugins/src/lib.rs",
        "benches/compile.rs",
        "mirror.runmd.template",
        "lib/sh/setup-env.sh",
    ];
    for path in needed {
        assert!(
            repo_root().join(path).exists(),
            "{path} moved: update this test"
        );
        for p in &patterns {
            let p = p.trim_start_matches("**/").trim_end_matches('/');
            let excluded =
                path == p || path.starts_with(&format!("{p}/")) || path.contains(&format!("/{p}/"));
            assert!(
                !excluded,
                ".dockerignore's {p} excludes {path}, which the build needs"
            );
        }
    }
}
