//! CNCF distribution (`docker-registry`) as the upstream: open, behind htpasswd (Basic) or
//! Bearer-token auth, as a pull-through proxy; its access log, restarts and storage.

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;

// ------------------------------------------------------------------------------------------
// registry (CNCF distribution)

/// Authentication of a [`Registry`].
#[derive(Clone)]
pub enum RegistryAuth {
    None,
    /// htpasswd (bcrypt) with one user.
    Htpasswd {
        user: String,
        pass: String,
    },
    /// Bearer token auth through a token server started for this registry.
    Token {
        users: Vec<(String, String)>,
        anonymous_pull: bool,
    },
    /// Bearer token auth through an existing token server (e.g. shared by two registries).
    /// `creds` are what [`seed`] pushes with.
    SharedToken {
        server: Arc<TokenServer>,
        creds: Option<(String, String)>,
    },
}

impl RegistryAuth {
    pub fn htpasswd(user: &str, pass: &str) -> RegistryAuth {
        RegistryAuth::Htpasswd {
            user: user.into(),
            pass: pass.into(),
        }
    }
    /// Token auth with one user; anonymous pulls allowed when `anonymous_pull`.
    pub fn token(user: &str, pass: &str, anonymous_pull: bool) -> RegistryAuth {
        RegistryAuth::Token {
            users: vec![(user.into(), pass.into())],
            anonymous_pull,
        }
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::None => write!(f, "None"),
            RegistryAuth::Htpasswd { user, .. } => write!(f, "Htpasswd({user})"),
            RegistryAuth::Token {
                users,
                anonymous_pull,
            } => write!(
                f,
                "Token({} users, anonymous_pull={anonymous_pull})",
                users.len()
            ),
            RegistryAuth::SharedToken { server, .. } => write!(f, "SharedToken({})", server.addr()),
        }
    }
}

/// One line of distribution's access log (Apache combined format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    /// Path with query, e.g. `/v2/library/test/manifests/1?ns=docker.io`.
    pub path: String,
    pub status: u16,
    pub user_agent: String,
}

pub(super) fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    if line.starts_with("time=") {
        return None;
    }
    // `IP - USER [DATE] "METHOD PATH PROTO" STATUS SIZE "REFERER" "UA"`; distribution 2.8
    // always logs USER as `-`, even for authenticated requests
    let (_, rest) = line.split_once(" [")?;
    let (_, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut req = request.split(' ');
    let method = req.next()?.to_string();
    let path = req.next()?.to_string();
    let status = rest.split_whitespace().next()?.parse().ok()?;
    let quoted: Vec<&str> = rest.split('"').collect();
    // rest = ` 200 2 "REFERER" "UA"` -> ["200 2 ", REFERER, " ", UA, ""]
    let user_agent = quoted.get(3).copied().unwrap_or_default().to_string();
    Some(AccessLogEntry {
        method,
        path,
        status,
        user_agent,
    })
}

/// `docker-registry serve` on 127.0.0.1:<free port> with storage in a temp dir; killed on drop.
pub struct Registry {
    proc: Proc,
    addr: SocketAddr,
    creds: Option<(String, String)>,
    token: Option<Arc<TokenServer>>,
    remote: Option<String>,
    dir: TempDir,
}

enum Startup {
    Ready,
    AddrInUse,
}

pub(super) fn registry_config(storage: &Path, port: u16, extra: &str) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
         cache:\n    blobdescriptor: inmemory\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: acr-test-http-secret\n\
         health:\n  storagedriver:\n    enabled: false\n\
         {extra}",
        root = quoted(&storage.to_string_lossy()),
    )
}

impl Registry {
    /// A registry with the given auth.
    pub fn start(auth: RegistryAuth) -> Registry {
        let dir = temp_dir("acr-registry-");
        let (extra, creds, token) = match auth {
            RegistryAuth::None => (String::new(), None, None),
            RegistryAuth::Htpasswd { user, pass } => {
                require_tools(&["htpasswd"]);
                let file = dir.path().join("htpasswd");
                let out = run("htpasswd", &["-Bbn", &user, &pass]).ok();
                fs::write(&file, out.stdout.trim_end().to_string() + "\n").expect("write htpasswd");
                let extra = format!(
                    "auth:\n  htpasswd:\n    realm: acr-basic-realm\n    path: {}\n",
                    quoted(&file.to_string_lossy())
                );
                (extra, Some((user, pass)), None)
            }
            RegistryAuth::Token {
                users,
                anonymous_pull,
            } => {
                let creds = users.first().cloned();
                let server = Arc::new(TokenServer::start(TokenServerOptions {
                    users,
                    anonymous_pull,
                    ..TokenServerOptions::default()
                }));
                (Self::token_yaml(&server), creds, Some(server))
            }
            RegistryAuth::SharedToken { server, creds } => {
                (Self::token_yaml(&server), creds, Some(server))
            }
        };
        Self::launch(dir, &extra, creds, token, None)
    }

    /// distribution as a pull-through cache (`proxy.remoteurl`) in front of `remote_url`,
    /// authenticating upstream with `creds` if given. No auth of its own.
    pub fn start_proxy(remote_url: &str, creds: Option<(&str, &str)>) -> Registry {
        let dir = temp_dir("acr-proxy-");
        let mut extra = format!("proxy:\n  remoteurl: {}\n", quoted(remote_url));
        if let Some((u, p)) = creds {
            extra += &format!("  username: {}\n  password: {}\n", quoted(u), quoted(p));
        }
        Self::launch(dir, &extra, None, None, Some(remote_url.to_string()))
    }

    fn token_yaml(server: &TokenServer) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            quoted(&server.realm()),
            quoted(server.service()),
            quoted(server.issuer()),
            quoted(&server.cert_path().to_string_lossy())
        )
    }

    fn launch(
        dir: TempDir,
        extra: &str,
        creds: Option<(String, String)>,
        token: Option<Arc<TokenServer>>,
        remote: Option<String>,
    ) -> Registry {
        require_tools(&["docker-registry"]);
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("create storage dir");
        for attempt in 0..10 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(&config, registry_config(&storage, port, extra)).expect("write config");
            let log = dir.path().join(format!("registry-{attempt}.log"));
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&config);
            // REGISTRY_* variables would override the config file
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let proc = Proc::spawn("docker-registry", cmd, &log);
            match Self::wait_ready(&proc, port) {
                Startup::Ready => {
                    return Registry {
                        proc,
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        creds,
                        token,
                        remote,
                        dir,
                    }
                }
                Startup::AddrInUse => continue, // another test took the port; try another
            }
        }
        panic!("docker-registry: no free port after 10 attempts");
    }

    fn wait_ready(proc: &Proc, port: u16) -> Startup {
        let listening = format!("listening on 127.0.0.1:{port}\"");
        let url = format!("http://127.0.0.1:{port}/v2/");
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        while Instant::now() < deadline {
            if !proc.is_running() {
                if proc.log().contains("address already in use") {
                    return Startup::AddrInUse;
                }
                proc.panic_with_log("exited during startup");
            }
            // the log line proves that *our* process holds the port
            if proc.log().contains(&listening)
                && try_http_request("GET", &url, &[], None)
                    .is_ok_and(|r| r.status == 200 || r.status == 401)
            {
                return Startup::Ready;
            }
            thread::sleep(Duration::from_millis(20));
        }
        proc.panic_with_log("did not answer /v2/ in time");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `127.0.0.1:PORT` (what image references start with).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// `127.0.0.1:PORT/<repo_ref>`, e.g. `image("library/test:1")`.
    pub fn image(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.addr)
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }
    /// Credentials clients must use to push (htpasswd user, first token user), if any.
    pub fn creds(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_deref()
    }
    /// The upstream of a pull-through proxy.
    pub fn remote(&self) -> Option<&str> {
        self.remote.as_deref()
    }
    /// Registry storage root (filesystem driver).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }
    /// Everything the registry wrote (app log and access log).
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// The access-log lines parsed.
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        self.log().lines().filter_map(parse_access_line).collect()
    }
    /// Requests with `method` (any when empty) whose path contains `path_contains`.
    pub fn count_requests(&self, method: &str, path_contains: &str) -> usize {
        self.access_log()
            .iter()
            .filter(|e| (method.is_empty() || e.method == method) && e.path.contains(path_contains))
            .count()
    }
    /// Waits (up to `timeout`) until [`count_requests`](Self::count_requests) reaches `n`,
    /// since the access log is written just after the response. Returns the last count.
    pub fn wait_requests(
        &self,
        method: &str,
        path_contains: &str,
        n: usize,
        timeout: Duration,
    ) -> usize {
        let mut c = 0;
        wait_until(timeout, || {
            c = self.count_requests(method, path_contains);
            c >= n
        });
        c
    }
    /// An `Authorization` value that works for raw HTTP requests with `scope` (e.g.
    /// `repository:library/test:pull`): Basic for htpasswd, a fresh Bearer token for token
    /// auth, `None` when the registry has no auth.
    pub fn auth_header(&self, scope: &str) -> Option<String> {
        match (&self.token, self.creds()) {
            (Some(ts), creds) => Some(format!("Bearer {}", ts.token(scope, creds))),
            (None, Some((u, p))) => Some(basic_auth(u, p)),
            (None, None) => None,
        }
    }
    /// GET (or HEAD) a manifest with [`ACCEPT_MANIFESTS`] and this registry's credentials.
    pub fn fetch_manifest(&self, method: &str, repo: &str, reference: &str) -> HttpResponse {
        let auth = self.auth_header(&format!("repository:{repo}:pull"));
        let mut headers = vec![("Accept", ACCEPT_MANIFESTS)];
        if let Some(a) = auth.as_deref() {
            headers.push(("Authorization", a));
        }
        fetch(
            method,
            &format!("{}/v2/{repo}/manifests/{reference}", self.url()),
            &headers,
        )
    }
}

impl Registry {
    /// A registry whose config ends with `auth_yaml` verbatim (e.g. an `auth: token:` section
    /// naming a token service started by the test); `creds` are what [`push`] and
    /// [`raw_manifest`] use.
    pub fn start_with_auth_yaml(auth_yaml: &str, creds: Option<(String, String)>) -> Registry {
        Self::launch(temp_dir("acr-registry-"), auth_yaml, creds, None, None)
    }
}

impl Served for Registry {
    fn base_url(&self) -> String {
        self.url()
    }
}
