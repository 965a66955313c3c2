//! What `tests/security/faults.rs` needs besides the shared harness: a paced TCP relay in front of an
//! upstream (so a transfer can be cut in the middle), a restart of a killed distribution on
//! its own storage and port, a raw HTTP upstream that can trickle a body one byte at a time,
//! a small tmpfs mounted for a store (a full disk), and a count of acr's client connections.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::*;

mod slow_upstream;

// Each area binary uses a part of these.
#[allow(unused_imports)]
pub use slow_upstream::*;

// ------------------------------------------------------------------------------------------
// a paced relay

/// A TCP relay `127.0.0.1:PORT` → `target`: requests pass as they come, answers are paced to
/// `bytes_per_sec` while pacing is on. When the target closes or breaks a connection, the
/// client's side is closed too (a body cut short stays cut short).
pub struct Relay {
    addr: SocketAddr,
    paced: Arc<AtomicBool>,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Bytes per write of a paced answer.
const RELAY_CHUNK: usize = 32 << 10;

impl Relay {
    pub fn start(target: SocketAddr, bytes_per_sec: u64) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay addr");
        let paced = Arc::new(AtomicBool::new(true));
        let down = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, d, s) = (paced.clone(), down.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(target) else {
                    // Nothing behind the relay: the client sees its connection closed.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (p, d) = (p.clone(), d.clone());
                thread::spawn(move || relay_connection(client, upstream, bytes_per_sec, &p, &d));
            }
        });
        Relay {
            addr,
            paced,
            down,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_paced(&self, on: bool) {
        self.paced.store(on, Ordering::SeqCst);
    }

    /// Bytes relayed from the target to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

fn relay_connection(
    client: TcpStream,
    upstream: TcpStream,
    bytes_per_sec: u64,
    paced: &AtomicBool,
    down: &AtomicU64,
) {
    let (Ok(mut client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    // Requests: as they come.
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut upstream_w);
        let _ = upstream_w.shutdown(Shutdown::Write);
    });
    // Answers: paced.
    let (mut upstream_r, mut client_w) = (upstream, client);
    let mut buf = vec![0u8; RELAY_CHUNK];
    loop {
        let n = match upstream_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if client_w.write_all(&buf[..n]).is_err() {
            break;
        }
        down.fetch_add(n as u64, Ordering::SeqCst);
        if paced.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_nanos(
                n as u64 * 1_000_000_000 / bytes_per_sec.max(1),
            ));
        }
    }
    // The target went away (or finished): so does the client's side.
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = upstream_r.shutdown(Shutdown::Both);
    let _ = up.join();
}

// ------------------------------------------------------------------------------------------
// distribution, restarted

/// Starts `docker-registry serve` again on the config (so the storage and the port) of `reg`,
/// whose own process was killed; waits until it answers `/v2/`. Killed on drop.
pub fn restart_registry(reg: &Registry) -> Proc {
    assert!(
        wait_until(Duration::from_secs(10), || !reg.is_running()),
        "the first registry still runs"
    );
    let log = reg.config_path().with_file_name("registry-restarted.log");
    let url = format!("{}/v2/", reg.url());
    for _ in 0..5 {
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(reg.config_path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let proc = Proc::spawn("docker-registry (restarted)", cmd, &log);
        let up = wait_until(Duration::from_secs(30), || {
            !proc.is_running()
                || try_http_request("GET", &url, &[], None).is_ok_and(|r| r.status == 200)
        });
        if up && proc.is_running() {
            return proc;
        }
        // The port may still be held for a moment; try again.
        thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "the registry did not come back on {}:\n{}",
        reg.url(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

// ------------------------------------------------------------------------------------------
// a small tmpfs

/// A tmpfs of `size` mounted on a fresh temporary directory; unmounted (lazily, so files acr
/// still holds do not stop it) when dropped, also while a test unwinds.
pub struct Tmpfs {
    dir: TempDir,
    mounted: bool,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=SIZE tmpfs DIR`; `Err` with the reason when it is not allowed.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = temp_dir("acr-tmpfs-");
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path());
        let out = run_cmd(cmd, Duration::from_secs(30));
        if !out.success() {
            return Err(format!(
                "`{}` failed ({}): {}",
                out.cmdline,
                out.status,
                out.stderr.trim()
            ));
        }
        Ok(Tmpfs { dir, mounted: true })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free on the filesystem.
    pub fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.path().to_string_lossy().as_bytes())
            .expect("path without NUL");
        // SAFETY: statvfs into a zeroed struct we own, with a valid C string.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(c.as_ptr(), &mut s) != 0 {
                return 0;
            }
            s.f_bavail * s.f_frsize
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            unmount_under(self.dir.path());
            self.mounted = false;
        }
    }
}

// ------------------------------------------------------------------------------------------
// acr's sockets

/// The socket inodes among `pid`'s open files.
fn socket_inodes(pid: u32) -> HashSet<String> {
    let mut out = HashSet::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in entries.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                out.insert(inode.to_string());
            }
        }
    }
    out
}

/// How many established TCP connections process `pid` holds on its local port `port` (the
/// connections of its clients, when `port` is its listening port).
pub fn established_on_port(pid: u32, port: u16) -> usize {
    let inodes = socket_inodes(pid);
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f[3] == "01" && inodes.contains(f[9]) {
                n += 1;
            }
        }
    }
    n
}
