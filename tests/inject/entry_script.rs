//! The entrypoint acr ships for injected images (`lib/layers/acr-entry/opt/acr/entry.sh`):
//! it mounts every bucket of `ACR_MOUNTS` with the FUSE client it finds, then execs the
//! image's own entrypoint from `ACR_ENTRY_CHAIN` with the container's arguments. Run with the
//! real `sh`; the FUSE client is a stand-in script on PATH that records how it was called
//! (no FUSE device or S3 server is needed to check the script's side of the contract).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lib/layers/acr-entry/opt/acr/entry.sh")
}

/// Runs the script with `env` and `args`; returns (exit code, stdout, stderr).
fn run(env: &[(&str, &str)], path_prefix: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("sh");
    cmd.arg(script()).args(args).env_clear();
    let path = match path_prefix {
        Some(p) => format!("{}:/usr/bin:/bin", p.display()),
        None => "/usr/bin:/bin".to_string(),
    };
    cmd.env("PATH", path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_script_is_executable_in_the_layer() {
    let mode = std::fs::metadata(script()).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "mode {mode:o}");
}

#[test]
fn the_chain_runs_with_the_containers_arguments() {
    // One path: exec'd as it is.
    let (code, out, _) = run(&[("ACR_ENTRY_CHAIN", "/bin/echo")], None, &["a", "b c"]);
    assert_eq!((code, out.as_str()), (0, "a b c\n"));
    // A JSON list (acr writes one for a multi-word entrypoint), with a quote inside.
    let (code, out, _) = run(
        &[("ACR_ENTRY_CHAIN", r#"["/bin/echo", "-n", "it's"]"#)],
        None,
        &["x"],
    );
    assert_eq!((code, out.as_str()), (0, "it's x"));
    // No chain: the arguments are the command.
    let (code, out, _) = run(&[], None, &["/bin/echo", "plain"]);
    assert_eq!((code, out.as_str()), (0, "plain\n"));
    // Nothing at all: a clear error, not a silent success.
    let (code, _, err) = run(&[], None, &[]);
    assert_eq!(code, 127);
    assert!(err.contains("nothing to run"), "{err}");
}

#[test]
fn buckets_are_mounted_before_the_chain_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.path().join("calls");
    let fake = bin.join("geesefs");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"geesefs $*\" >> {}\nfor last; do :; done\n[ -d \"$last\" ] || exit 3\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("mnt");
    let (code, out, err) = run(
        &[
            ("ACR_MOUNTS", "s3://data/in,s3://refs"),
            ("ACR_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("ACR_MOUNT_ROOT", root.to_str().unwrap()),
            ("ACR_ENTRY_CHAIN", "/bin/echo"),
        ],
        Some(&bin),
        &["ran"],
    );
    assert_eq!((code, out.as_str()), (0, "ran\n"), "{err}");
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        calls,
        format!(
            "geesefs --endpoint http://127.0.0.1:9000 data:in {r}/data\ngeesefs --endpoint http://127.0.0.1:9000 refs {r}/refs\n",
            r = root.display()
        )
    );
    assert!(root.join("data").is_dir() && root.join("refs").is_dir());
}

#[test]
fn a_mount_that_cannot_happen_stops_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mnt");
    // No FUSE client on PATH.
    let (code, out, err) = run(
        &[
            ("ACR_MOUNTS", "s3://data"),
            ("ACR_MOUNT_ROOT", root.to_str().unwrap()),
            ("ACR_ENTRY_CHAIN", "/bin/echo"),
        ],
        Some(dir.path()),
        &["must not run"],
    );
    assert_ne!(code, 0);
    assert_eq!(out, "");
    assert!(err.contains("no FUSE client"), "{err}");
    assert!(
        !root.exists(),
        "nothing is created before the client is found"
    );
    // Not an s3:// location.
    let (code, _, err) = run(&[("ACR_MOUNTS", "gs://x")], None, &["/bin/true"]);
    assert_ne!(code, 0);
    assert!(err.contains("not s3://"), "{err}");
}
