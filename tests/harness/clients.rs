//! The container clients as users run them: containerd (`ctr --hosts-dir`, its own daemon
//! and state) and podman (its own storage and `registries.conf`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

// ------------------------------------------------------------------------------------------
// containerd

/// A containerd hosts directory (`certs.d` style) for `ctr --hosts-dir`.
pub struct HostsDir {
    dir: TempDir,
}

impl Default for HostsDir {
    fn default() -> Self {
        Self::new()
    }
}

impl HostsDir {
    pub fn new() -> HostsDir {
        HostsDir {
            dir: temp_dir("acr-hosts-"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Writes `<namespace>/hosts.toml` (namespace: `docker.io`, `127.0.0.1:5000`, ...) with
    /// `server` (a URL such as `http://127.0.0.1:5000`) and `mirrors` (URLs, tried first,
    /// with pull+resolve). For a `docker.io` namespace give a dead loopback `server` (see
    /// [`dead_url`]) so that nothing can leave the machine.
    pub fn add(&self, namespace: &str, server: &str, mirrors: &[&str]) -> &HostsDir {
        let mut toml = format!("server = {}\n", quoted(server));
        for m in mirrors {
            toml += &format!(
                "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
                quoted(m)
            );
        }
        self.add_raw(namespace, &toml)
    }
    /// Writes `<namespace>/hosts.toml` verbatim.
    pub fn add_raw(&self, namespace: &str, hosts_toml: &str) -> &HostsDir {
        let d = self.dir.path().join(namespace);
        fs::create_dir_all(&d).expect("mkdir hosts dir");
        fs::write(d.join("hosts.toml"), hosts_toml).expect("write hosts.toml");
        self
    }
}

/// `http://127.0.0.1:<port>` where nothing listens (port briefly bound, then closed).
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// containerd with config, root, state and sockets in a temp dir (CRI disabled).
pub struct Containerd {
    proc: Proc,
    dir: TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        require_tools(&["containerd", "ctr"]);
        let dir = short_temp_dir("acr-ctrd-");
        let d = dir.path();
        let p = |s: &str| quoted(&d.join(s).to_string_lossy());
        let config = format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             \n[grpc]\n  address = {sock}\n\
             \n[ttrpc]\n  address = {ttrpc}\n\
             \n[debug]\n  address = {debug}\n  level = \"info\"\n\
             \n[plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = {opt}\n",
            root = p("root"),
            state = p("state"),
            sock = p("c.sock"),
            ttrpc = p("c.sock.ttrpc"),
            debug = p("debug.sock"),
            opt = p("opt"),
        );
        fs::write(d.join("config.toml"), config).expect("write containerd config");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(d.join("config.toml"));
        let proc = Proc::spawn("containerd", cmd, &d.join("containerd.log"));
        let ctrd = Containerd { proc, dir };
        let ready = wait_until(Duration::from_secs(30), || {
            !ctrd.proc.is_running()
                || (ctrd.socket().exists()
                    && ctrd
                        .ctr_timeout(&["version"], Duration::from_secs(5))
                        .success())
        });
        if !ready || !ctrd.proc.is_running() {
            ctrd.proc.panic_with_log("did not come up");
        }
        ctrd
    }

    /// The gRPC socket (`ctr -a`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }

    fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.socket()).args(args);
        run_cmd(cmd, timeout)
    }

    /// `ctr -a <socket> <args>`.
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        self.ctr_timeout(args, COMMAND_TIMEOUT)
    }

    /// `ctr images pull --plain-http --hosts-dir <hosts_dir> <image>`.
    pub fn ctr_pull(&self, image: &str, hosts_dir: &Path) -> CmdOutput {
        self.ctr_pull_with(image, Some(hosts_dir), &[])
    }

    /// `ctr images pull --plain-http [--hosts-dir DIR] <extra...> <image>`; `extra` is e.g.
    /// `["--platform", "linux/arm64"]`, `["--all-platforms"]` or `["-u", "user:pass"]`.
    pub fn ctr_pull_with(
        &self,
        image: &str,
        hosts_dir: Option<&Path>,
        extra: &[&str],
    ) -> CmdOutput {
        let hd = hosts_dir.map(|h| h.to_string_lossy().into_owned());
        let mut args = vec!["images", "pull", "--plain-http"];
        if let Some(h) = hd.as_deref() {
            args.extend(["--hosts-dir", h]);
        }
        args.extend_from_slice(extra);
        args.push(image);
        self.ctr(&args)
    }

    /// Image names containerd knows (`ctr images ls -q`).
    pub fn images(&self) -> Vec<String> {
        self.ctr(&["images", "ls", "-q"])
            .ok()
            .stdout
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `(name, target digest)` pairs from `ctr images ls`.
    pub fn image_digests(&self) -> Vec<(String, String)> {
        self.ctr(&["images", "ls"])
            .ok()
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((cols.first()?.to_string(), cols.get(2)?.to_string()))
            })
            .collect()
    }

    /// Asserts that containerd lists `image` with the manifest `digest`.
    #[track_caller]
    pub fn assert_has_image(&self, image: &str, digest: &str) {
        let got = self.image_digests();
        assert!(
            got.iter().any(|(i, d)| i == image && d == digest),
            "containerd lists {got:?}, not {image} @ {digest}"
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.proc.stop();
        unmount_under(self.dir.path());
    }
}

// ------------------------------------------------------------------------------------------
// podman

/// A `registries.conf` with `location` and its `mirrors` (host[:port][/path]), all
/// `insecure = true` (plain HTTP), no unqualified search.
pub fn registries_conf(location: &str, mirrors: &[&str]) -> String {
    let mut s = format!(
        "unqualified-search-registries = []\n\n[[registry]]\nlocation = {}\ninsecure = true\n",
        quoted(location)
    );
    for m in mirrors {
        s += &format!(
            "\n[[registry.mirror]]\nlocation = {}\ninsecure = true\n",
            quoted(m)
        );
    }
    s
}

/// podman (root, vfs storage, cgroupfs, file events) with all its state in a temp dir and
/// the given `registries.conf`.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    pub fn new(registries_conf: &str) -> Podman {
        require_tools(&["podman"]);
        let dir = temp_dir("acr-podman-");
        let d = dir.path();
        for sub in ["root", "runroot", "tmp", "libpod-tmp"] {
            fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let p = |s: &str| quoted(&d.join(s).to_string_lossy());
        fs::write(d.join("registries.conf"), registries_conf).expect("write registries.conf");
        fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = {}\ngraphroot = {}\n",
                p("runroot"),
                p("root")
            ),
        )
        .expect("write storage.conf");
        fs::write(
            d.join("containers.conf"),
            format!(
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = {}\ntmp_dir = {}\n",
                p("events.log"),
                p("libpod-tmp")
            ),
        )
        .expect("write containers.conf");
        fs::write(
            d.join("policy.json"),
            "{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}\n",
        )
        .expect("write policy.json");
        Podman { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman <global flags> <args>` with this instance's config and storage.
    pub fn podman(&self, args: &[&str]) -> CmdOutput {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("libpod-tmp"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", empty_auth_file())
            .env("TMPDIR", d.join("tmp"));
        run_cmd(cmd, COMMAND_TIMEOUT)
    }

    /// `podman pull <extra...> <image>` (signature policy: accept anything).
    pub fn pull_with(&self, image: &str, extra: &[&str]) -> CmdOutput {
        let policy = self.dir.path().join("policy.json");
        let policy = policy.to_string_lossy();
        let mut args = vec!["pull", "--signature-policy", &policy];
        args.extend_from_slice(extra);
        args.push(image);
        self.podman(&args)
    }

    /// `podman pull <image>`.
    pub fn pull(&self, image: &str) -> CmdOutput {
        self.pull_with(image, &[])
    }

    /// The manifest digest podman recorded for `image`.
    pub fn image_digest(&self, image: &str) -> String {
        self.podman(&["image", "inspect", "--format", "{{.Digest}}", image])
            .ok()
            .stdout
            .trim()
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}
