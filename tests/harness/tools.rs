//! Paths, the tools a test needs, free ports, waiting for a condition, and the lock that
//! guards what is built once per target directory (the fixtures).

use std::fs::{self, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

// ------------------------------------------------------------------------------------------
// paths and tools

/// The workspace root of acr (where `Cargo.toml` and `scripts/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where fixtures, keys and other caches shared by all test processes live.
pub fn cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("acr-fixtures");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Path of our token server script.
pub fn tokenserver_script() -> PathBuf {
    repo_root().join("tests/support/tokenserver.py")
}

/// A fresh temporary directory (removed on drop).
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("create temp dir {prefix}*: {e}"))
}

/// A temporary directory with a short path, for unix sockets (108-byte limit).
pub(super) fn short_temp_dir(prefix: &str) -> TempDir {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > 40 {
        PathBuf::from("/tmp")
    } else {
        base
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap_or_else(|e| panic!("create temp dir {prefix}*: {e}"))
}

/// Finds an executable on `PATH` (plus the sbin directories, where e.g. `runc` lives).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(tool))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

pub(super) fn package_of(tool: &str) -> &str {
    match tool {
        "ctr" => "containerd",
        "htpasswd" => "apache2-utils",
        "runc" => "runc (comes with containerd)",
        other => other,
    }
}

/// Panics (so the test fails, it does not skip) when one of the binaries is missing.
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| format!("`{t}` (Debian package {})", package_of(t)))
        .collect();
    if !missing.is_empty() {
        panic!(
            "acr test harness: required tool(s) not found on PATH: {}.\n\
             Install them with `scripts/deps.sh` (as root; it uses apt-get) from {}.",
            missing.join(", "),
            repo_root().display()
        );
    }
}

/// Binds 127.0.0.1:0 and returns the port the kernel chose (closed again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns the last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------------------
// cache lock

/// Runs `f` while holding an exclusive `flock` on `cache_dir()/<name>.lock`: serialises
/// fixture builds between test processes (and threads: every call opens its own fd).
pub fn with_cache_lock<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let path = cache_dir().join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    loop {
        // SAFETY: flock on an fd we own; released when `file` is closed.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            panic!("flock {}: {e}", path.display());
        }
    }
    let result = f();
    drop(file);
    result
}

/// Builds `final_dir` with `build(tmp)` unless it already exists: under the cache lock,
/// into a sibling temporary directory that is renamed into place when complete.
pub(super) fn build_cached(final_dir: &Path, build: impl FnOnce(&Path)) {
    let name = final_dir
        .file_name()
        .expect("cache entry name")
        .to_string_lossy()
        .into_owned();
    with_cache_lock(&name, || {
        if final_dir.exists() {
            return;
        }
        let parent = final_dir.parent().expect("cache parent");
        // leftovers of an interrupted build
        if let Ok(entries) = fs::read_dir(parent) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}.tmp-"))
                {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
        fs::create_dir_all(&tmp).expect("create build dir");
        build(&tmp);
        fs::rename(&tmp, final_dir)
            .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), final_dir.display()));
    });
}
