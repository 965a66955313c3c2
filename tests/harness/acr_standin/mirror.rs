//! acr as a user runs it against the stand-in (`init`, then `mirror start`, with or without `az`).

use super::*;

// ------------------------------------------------------------------------------------------
// acr init + mirror start

/// Which `az` acr finds on PATH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Az {
    /// `tests/support/az`, logged in.
    Standin,
    /// `tests/support/az` with `AZ_STANDIN_FAIL=1` (nobody ran `az login`).
    Failing,
    /// No `az` on PATH at all.
    Absent,
}

/// How to start an [`AcrMirror`].
#[derive(Clone, Debug)]
pub struct AcrMirrorOptions {
    pub az: Az,
    /// Extra environment for acr (AZURE_*, MSI_ENDPOINT, ACR_PLATFORM, ...).
    pub env: Vec<(String, String)>,
}

impl Default for AcrMirrorOptions {
    fn default() -> Self {
        AcrMirrorOptions {
            az: Az::Standin,
            env: Vec::new(),
        }
    }
}

/// Environment prefixes no acr child inherits from the test runner.
/// The directory acr runs in (where `init` ran), the stand-in `az`, and the hosts dir.
pub struct AcrWorkspace {
    dir: TempDir,
    pub registry_url: String,
    pub registry_host: String,
    opts: AcrMirrorOptions,
}

impl AcrWorkspace {
    pub fn new(registry: &AcrRegistry, opts: AcrMirrorOptions) -> AcrWorkspace {
        let ws = AcrWorkspace {
            dir: temp_dir("acr-ws-"),
            registry_url: registry.url(),
            registry_host: registry.host(),
            opts,
        };
        let bin = ws.bin_dir();
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        std::fs::create_dir_all(ws.hosts_dir()).expect("mkdir hosts dir");
        if ws.opts.az != Az::Absent {
            let wrapper = format!(
                "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
                python3_bin().display(),
                az_script().display()
            );
            let p = bin.join("az");
            std::fs::write(&p, wrapper).expect("write az");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod az");
        }
        ws
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    /// What `mirror start --hosts-dir` gets.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }
    /// Where the stand-in `az` logs its calls.
    pub fn az_log_path(&self) -> PathBuf {
        self.dir.path().join("az-calls.log")
    }
    /// While this file exists the stand-in `az` fails as when nobody is logged in.
    pub fn az_fail_flag(&self) -> PathBuf {
        self.dir.path().join("az-fail")
    }
    /// Makes the stand-in `az` fail (`true`) or work again (`false`) from now on.
    pub fn set_az_failing(&self, failing: bool) {
        if failing {
            std::fs::write(self.az_fail_flag(), "1").expect("write az fail flag");
        } else {
            let _ = std::fs::remove_file(self.az_fail_flag());
        }
    }
    /// One line per `az` call.
    pub fn az_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.az_log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    /// `.world/127.0.0.1:PORT/example`, absolute.
    pub fn world_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join(".world")
            .join(&self.registry_host)
            .join(REGISTRY_NAME)
    }
    pub fn access_token_path(&self) -> PathBuf {
        self.world_dir().join("access_token")
    }
    pub fn access_token(&self) -> Option<String> {
        std::fs::read_to_string(self.access_token_path())
            .ok()
            .map(|t| t.trim().to_string())
    }
    /// Every hosts.toml under [`hosts_dir`](Self::hosts_dir).
    pub fn hosts_tomls(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![self.hosts_dir()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.file_name().is_some_and(|n| n == "hosts.toml") {
                    found.push(p);
                }
            }
        }
        found
    }

    /// `acr --registry example --registry-host URL ARGS...` in this workspace, with a
    /// clean environment plus the options' (az, env).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = acr_command(self.dir.path());
        cmd.args(["--registry", REGISTRY_NAME, "--registry-host"])
            .arg(&self.registry_url)
            .args(args);
        let path = match self.opts.az {
            Az::Absent => path_without_az(),
            _ => format!("{}:{}", self.bin_dir().display(), path_without_az()),
        };
        cmd.env("PATH", path)
            .env("AZ_STANDIN_URL", &self.registry_url)
            .env("AZ_STANDIN_LOG", self.az_log_path())
            .env("AZ_STANDIN_FAIL_FILE", self.az_fail_flag());
        if self.opts.az == Az::Failing {
            cmd.env("AZ_STANDIN_FAIL", "1");
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `acr ... init --mirror-address ADDR` (must succeed).
    pub fn init(&self, mirror_address: &str) -> CmdOutput {
        let cmd = self.command(&["init", "--mirror-address", mirror_address, "--force"]);
        run_cmd(cmd, Duration::from_secs(120))
    }

    /// `acr ... mirror start --hosts-dir DIR`, run to completion (for starts that must fail).
    pub fn start_to_completion(&self, timeout: Duration) -> CmdOutput {
        let hosts = self.hosts_dir().display().to_string();
        run_cmd(
            self.command(&["mirror", "start", "--hosts-dir", &hosts]),
            timeout,
        )
    }
}

/// A running `acr mirror start` over the pipeline `acr init` wrote; killed on drop.
pub struct AcrMirror {
    running: AcrProcess,
    /// What `init` printed.
    pub init: CmdOutput,
    pub ws: AcrWorkspace,
}

impl AcrMirror {
    /// `init` with a free mirror address, then `mirror start`; waits for `Listening on`.
    pub fn start(registry: &AcrRegistry, opts: AcrMirrorOptions) -> AcrMirror {
        let ws = AcrWorkspace::new(registry, opts);
        let mut init = None;
        let running = spawn_listening(
            ws.dir(),
            START_TIMEOUT,
            |addr| {
                let out = ws.init(addr);
                assert!(
                    out.success(),
                    "acr init --registry-host {} failed: {out:?}",
                    ws.registry_url
                );
                init = Some(out);
                let hosts = ws.hosts_dir().display().to_string();
                ws.command(&["mirror", "start", "--hosts-dir", &hosts])
            },
            || format!("\n--- az calls ---\n{}", ws.az_calls().join("\n")),
        );
        let init = init.expect("init ran before the start");
        let m = AcrMirror { running, init, ws };
        let r = m.fetch("GET", "/v2/", &[]);
        assert_eq!(r.status, 200, "acr does not answer /v2/:\n{}", m.log());
        m
    }

    /// `mirror start` again in the same workspace (after `stop`), without a new `init`: the
    /// same mirror address, the files of the last run still there.
    pub fn restart(self) -> AcrMirror {
        self.restart_with(&[])
    }

    /// [`restart`](Self::restart) with more arguments for `mirror start` (`--id N`).
    pub fn restart_with(mut self, args: &[&str]) -> AcrMirror {
        let hosts = self.ws.hosts_dir().display().to_string();
        let mut all = vec!["mirror", "start", "--hosts-dir", &hosts];
        all.extend_from_slice(args);
        let cmd = self.ws.command(&all);
        let log = self.ws.dir().join("acr-restart.log");
        self.running.relaunch(cmd, &log, START_TIMEOUT);
        self
    }

    /// GET/HEAD `/v2/<repo>/manifests/<reference>` through acr with `headers` added to
    /// `Accept: ACCEPT_MANIFESTS`; `query` (e.g. `?ns=...`) is appended as is.
    pub fn manifest(
        &self,
        method: &str,
        repo: &str,
        reference: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let mut h = vec![("Accept", ACCEPT_MANIFESTS)];
        h.extend_from_slice(headers);
        fetch(
            method,
            &format!("{}/v2/{repo}/manifests/{reference}{query}", self.url()),
            &h,
        )
    }
}

deref_to_acr_process!(AcrMirror);
