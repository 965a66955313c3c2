//! The Bearer-token server (`tests/support/tokenserver.py`) a registry with token auth
//! sends its clients to, and the RSA key pair it signs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

// ------------------------------------------------------------------------------------------
// token server

/// How to start a [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenServerOptions {
    pub users: Vec<(String, String)>,
    pub anonymous_pull: bool,
    pub expires_in: u64,
    /// `auto` (python3-cryptography when importable), `cryptography` or `openssl`.
    pub signer: String,
}

impl Default for TokenServerOptions {
    fn default() -> Self {
        TokenServerOptions {
            users: vec![("testuser".into(), "testpass".into())],
            anonymous_pull: true,
            expires_in: 300,
            signer: "auto".into(),
        }
    }
}

/// `tests/support/tokenserver.py` on a free port; killed on drop.
pub struct TokenServer {
    proc: Proc,
    addr: SocketAddr,
    key: PathBuf,
    cert: PathBuf,
    _dir: TempDir,
}

/// Debian's `/usr/bin/python3` (where `scripts/deps.sh` puts python3-cryptography) when it
/// exists, else `python3` from `PATH` (then signing may fall back to the openssl CLI).
pub(super) fn python3() -> PathBuf {
    let debian = Path::new("/usr/bin/python3");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

/// RSA key + self-signed certificate for the token issuer, generated once per target dir.
pub(super) fn token_key_pair() -> (PathBuf, PathBuf) {
    let dir = cache_dir().join(format!("token-key-{FIXTURES_VERSION}"));
    build_cached(&dir, |tmp| {
        require_tools(&["openssl"]);
        let key = tmp.join("token.key");
        let cert = tmp.join("token.crt");
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=acr-test-token-issuer",
                "-keyout",
                &key.to_string_lossy(),
                "-out",
                &cert.to_string_lossy(),
            ],
        )
        .ok();
    });
    (dir.join("token.key"), dir.join("token.crt"))
}

impl TokenServer {
    pub fn start(opts: TokenServerOptions) -> TokenServer {
        require_tools(&["python3", "openssl"]);
        let (key, cert) = token_key_pair();
        let dir = temp_dir("acr-token-");
        let log = dir.path().join("tokenserver.log");
        let mut cmd = python_token_issuer(&tokenserver_script(), &key, &cert);
        cmd.args(["--issuer", TOKEN_ISSUER, "--listen", "127.0.0.1:0"])
            .args(["--expires-in", &opts.expires_in.to_string()])
            .args(["--signer", &opts.signer])
            .env("PYTHONUNBUFFERED", "1");
        for (u, p) in &opts.users {
            cmd.arg("--user").arg(format!("{u}:{p}"));
        }
        if opts.anonymous_pull {
            cmd.arg("--anonymous-pull");
        }
        let proc = Proc::spawn("tokenserver.py", cmd, &log);
        let addr = proc.reported_address(
            "tokenserver: listening on 127.0.0.1:",
            Duration::from_secs(20),
        );
        TokenServer {
            proc,
            addr,
            key,
            cert,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The `realm` registries send clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
    pub fn service(&self) -> &str {
        TOKEN_SERVICE
    }
    pub fn issuer(&self) -> &str {
        TOKEN_ISSUER
    }
    /// The certificate registries must trust (`auth.token.rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
    pub fn key_path(&self) -> &Path {
        &self.key
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    /// Its stderr: one line per request (`tokenserver: GET /token status=200 user=...`).
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// The log lines of requests to `/token` (one per token round trip).
    pub fn token_requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("tokenserver: ") && l.contains(" /token "))
            .map(str::to_string)
            .collect()
    }
    /// `GET /stats`: counters such as `issued`, `issued_anonymous`, `issued_password`,
    /// `issued_refresh`, `denied`, `token_requests`.
    pub fn stats(&self) -> serde_json::Value {
        self.fetch("GET", "/stats", &[]).json()
    }
    /// Number of access tokens issued so far (`stats().issued`).
    pub fn issued(&self) -> u64 {
        self.stats()["issued"].as_u64().unwrap_or(0)
    }
    /// Fetches a token with `GET /token` (Basic auth when `creds` is given).
    #[track_caller]
    pub fn token(&self, scope: &str, creds: Option<(&str, &str)>) -> String {
        let url = format!("{}?service={}&scope={}", self.realm(), TOKEN_SERVICE, scope);
        let auth = creds.map(|(u, p)| basic_auth(u, p));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let r = fetch("GET", &url, &headers);
        assert_eq!(r.status, 200, "token request failed: {}", r.text());
        r.json()["token"]
            .as_str()
            .expect("token in the answer")
            .to_string()
    }
}

/// The token issuer's RSA key and self-signed certificate, `(key, cert)`: the pair
/// [`TokenServer`] signs with, for other token services (e.g. `tests/support/acr_standin.py`).
/// `python3 SCRIPT --key KEY --cert CERT`: one of our Python servers that sign tokens with
/// the key pair of [`token_key_files`].
pub(super) fn python_token_issuer(script: &Path, key: &Path, cert: &Path) -> Command {
    let mut cmd = Command::new(python3());
    cmd.arg(script)
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert);
    cmd
}

pub fn token_key_files() -> (PathBuf, PathBuf) {
    token_key_pair()
}

/// The python3 the harness runs its helper scripts with.
pub fn python3_bin() -> PathBuf {
    python3()
}

impl Served for TokenServer {
    fn base_url(&self) -> String {
        self.url()
    }
}
