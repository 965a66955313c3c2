//! The stand-in of Azure AD and ACR's token service (`tests/support/acr_standin.py`).

use super::*;

// ------------------------------------------------------------------------------------------
// the stand-in

/// How to start an [`AcrStandin`].
#[derive(Clone, Debug)]
pub struct AcrStandinOptions {
    /// Lifetime of ACR refresh tokens (`/oauth2/exchange`), seconds.
    pub refresh_ttl: u64,
    /// Lifetime of access tokens (`/oauth2/token`), seconds. distribution accepts a token
    /// up to 60 s after its `exp` (its leeway), so this alone does not make pulls fail.
    pub access_ttl: u64,
    /// Add `expires_in` to `/oauth2/token` answers (real ACR sends none; clients then
    /// assume 60 s), so clients renew access tokens as often as `access_ttl` says.
    pub send_expires_in: bool,
    /// Answer the referrers API from the referrers tag (as ACR does); otherwise `/v2/`
    /// requests for it reach distribution 2.8, which answers 404.
    pub referrers_api: bool,
}

impl Default for AcrStandinOptions {
    fn default() -> Self {
        AcrStandinOptions {
            refresh_ttl: 3 * 3600,
            access_ttl: 75 * 60,
            send_expires_in: false,
            referrers_api: false,
        }
    }
}

/// `tests/support/acr_standin.py` on a free port; killed on drop.
pub struct AcrStandin {
    proc: Proc,
    addr: SocketAddr,
    cert: PathBuf,
    _dir: TempDir,
}

impl AcrStandin {
    pub fn start(opts: &AcrStandinOptions) -> AcrStandin {
        require_tools(&["python3", "openssl"]);
        let (key, cert) = token_key_files();
        let dir = temp_dir("acr-standin-");
        let log = dir.path().join("acr-standin.log");
        let mut cmd = python_token_issuer(&standin_script(), &key, &cert);
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(["--issuer", STANDIN_ISSUER, "--service", STANDIN_SERVICE])
            .args(["--tenant", TENANT])
            .arg("--client")
            .arg(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            .arg("--federated")
            .arg(format!("{WI_CLIENT_ID}:{}", federated_assertion()))
            .arg("--user")
            .arg(format!("{ADMIN_USER}:{ADMIN_PASS}"))
            .args(["--refresh-ttl", &opts.refresh_ttl.to_string()])
            .args(["--access-ttl", &opts.access_ttl.to_string()])
            .env("PYTHONUNBUFFERED", "1");
        for (on, flag) in [
            (opts.send_expires_in, "--send-expires-in"),
            (opts.referrers_api, "--referrers-api"),
        ] {
            if on {
                cmd.arg(flag);
            }
        }
        let proc = Proc::spawn("acr_standin.py", cmd, &log);
        let addr = proc.reported_address(
            "acr-standin: listening on 127.0.0.1:",
            Duration::from_secs(30),
        );
        AcrStandin {
            proc,
            addr,
            cert,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`: the "login server" of the registry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    /// `http://127.0.0.1:PORT`; also `AZURE_AUTHORITY_HOST` and `AZ_STANDIN_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The token realm distribution sends clients to.
    pub fn realm(&self) -> String {
        format!("{}/oauth2/token", self.url())
    }
    /// The managed identity endpoint (`MSI_ENDPOINT`).
    pub fn msi_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.url())
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    /// Its stderr: one line per request.
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// Log lines containing every one of `parts`.
    pub fn lines_with(&self, parts: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("acr-standin: ") && parts.iter().all(|p| l.contains(p)))
            .map(str::to_string)
            .collect()
    }
    /// Successful `/oauth2/exchange` calls so far.
    pub fn exchanges(&self) -> usize {
        self.lines_with(&["POST /oauth2/exchange ", "status=200"])
            .len()
    }
    /// `/oauth2/token` refusals because the refresh token had expired.
    pub fn expired_refusals(&self) -> Vec<String> {
        self.lines_with(&["/oauth2/token ", "status=401", "reason=expired"])
    }
    /// `GET /stats`.
    pub fn stats(&self) -> serde_json::Value {
        self.fetch("GET", "/stats", &[]).json()
    }
    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or(0)
    }
    /// Merges `settings` into the stand-in's runtime settings (`backend`, `refresh_ttl`,
    /// `access_ttl`, `aad_ttl`, `send_expires_in`, `referrers_api`).
    pub fn configure(&self, settings: serde_json::Value) {
        let r = http_request(
            "POST",
            &format!("{}/_standin/config", self.url()),
            &[("Content-Type", "application/json")],
            Some(settings.to_string().as_bytes()),
        );
        assert_eq!(r.status, 200, "configure the stand-in: {}", r.text());
    }
    /// distribution's `auth:` section for this token service.
    pub fn auth_yaml(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("json string");
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            q(&self.realm()),
            q(STANDIN_SERVICE),
            q(STANDIN_ISSUER),
            q(&self.cert.to_string_lossy())
        )
    }

    fn form(&self, path: &str, fields: &[(&str, &str)]) -> HttpResponse {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        http_request(
            "POST",
            &format!("{}{path}", self.url()),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(body.join("&").as_bytes()),
        )
    }

    /// An AAD token for [`CLIENT_ID`] (client credentials).
    pub fn aad_token(&self) -> String {
        let r = self.form(
            &format!("/{TENANT}/oauth2/v2.0/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("scope", "https://containerregistry.azure.net/.default"),
            ],
        );
        assert_eq!(r.status, 200, "AAD token: {}", r.text());
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// An ACR refresh token, the way `az acr login --expose-token` gets one.
    pub fn refresh_token(&self) -> String {
        let aad = self.aad_token();
        let r = self.form(
            "/oauth2/exchange",
            &[
                ("grant_type", "access_token"),
                ("service", &self.host()),
                ("tenant", TENANT),
                ("access_token", &aad),
            ],
        );
        assert_eq!(r.status, 200, "exchange: {}", r.text());
        r.json()["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_string()
    }

    /// `POST /oauth2/token grant_type=refresh_token`: the status and body.
    pub fn try_access_token_with_refresh(&self, refresh: &str, scope: &str) -> HttpResponse {
        self.form(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("service", STANDIN_SERVICE),
                ("scope", scope),
                ("refresh_token", refresh.trim()),
            ],
        )
    }

    /// An access token for `scope` (e.g. `repository:library/test:pull,push`) as the admin user.
    pub fn admin_token(&self, scope: &str) -> String {
        let r = fetch(
            "GET",
            &format!(
                "{}?service={STANDIN_SERVICE}&scope={}",
                self.realm(),
                form_encode(scope)
            ),
            &[("Authorization", &basic_auth(ADMIN_USER, ADMIN_PASS))],
        );
        assert_eq!(r.status, 200, "admin token: {}", r.text());
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }
}

/// `application/x-www-form-urlencoded` / query encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Served for AcrStandin {
    fn base_url(&self) -> String {
        self.url()
    }
}
