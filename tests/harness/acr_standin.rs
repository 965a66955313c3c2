//! Azure Container Registry without Azure, for `tests/mirror/acr.rs`:
//!
//! * [`AcrStandin`] runs `tests/support/acr_standin.py`: Azure AD (client secret, workload
//!   identity, managed identity) and ACR's token service (`/oauth2/exchange`,
//!   `/oauth2/token`) on one port, which also forwards `/v2/` to a CNCF distribution, so that
//!   one address is the whole "login server" as with a real registry;
//! * [`AcrRegistry`] is that stand-in plus the distribution behind it (token auth whose
//!   realm is the stand-in), with helpers to seed images, streaming links and referrers;
//! * [`AcrMirror`] is acr as a user runs it: `acr --registry example --registry-host URL
//!   init`, then `mirror start` in the same directory, with the stand-in `az`
//!   (`tests/support/az`) on PATH, or none.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::harness::*;

/// The tenant the stand-in AAD knows.
pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
/// An app registration with a client secret (also what the stand-in `az` logs in as).
pub const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
pub const CLIENT_SECRET: &str = "standin-client-secret";
/// An app that takes a federated (workload identity) assertion.
pub const WI_CLIENT_ID: &str = "bbbbbbbb-cccc-dddd-eeee-ffffffffffff";
/// The ACR admin user the tests push with (Basic at `/oauth2/token`).
pub const ADMIN_USER: &str = "acradmin";
pub const ADMIN_PASS: &str = "Adm1n-pa55word";
/// distribution's `auth.token.service` (the JWT audience) and issuer.
pub const STANDIN_SERVICE: &str = "acr-standin";
pub const STANDIN_ISSUER: &str = "acr-standin-issuer";
/// The user name that goes with an ACR refresh token.
pub const TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";
/// The registry name given to `acr --registry`.
pub const REGISTRY_NAME: &str = "example";
/// ACR artifact streaming's link artifact type.
pub const LINK_TYPE: &str = "application/vnd.azure.artifact.streaming.link.v1";
/// A referrer that is not a streaming link.
pub const SIGNATURE_TYPE: &str = "application/vnd.example.signature.v1";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The header containerd sends to acr (from hosts.toml) to ask for a streamable twin.
pub const STREAMABLE_HEADER: &str = "x-ms-upgrade-if-streamable";

/// Generous, for a shared 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

pub fn standin_script() -> PathBuf {
    repo_root().join("tests/support/acr_standin.py")
}

pub fn az_script() -> PathBuf {
    repo_root().join("tests/support/az")
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    base64(data)
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string()
}

/// Decodes base64 or base64url, with or without padding.
pub fn b64decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The claims of a JWT (`header.claims.signature`), or `None` when it is not one.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.trim().split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    serde_json::from_slice(&b64decode(claims)?).ok()
}

/// The federated (Kubernetes service account) token the stand-in AAD accepts for
/// [`WI_CLIENT_ID`]: JWT-shaped, as the projected token file holds.
pub fn federated_assertion() -> String {
    let header = br#"{"alg":"RS256","kid":"standin-sa-key"}"#;
    let claims = br#"{"aud":["api://AzureADTokenExchange"],"iss":"https://oidc.standin.example/","sub":"system:serviceaccount:default:acr"}"#;
    format!(
        "{}.{}.{}",
        b64url(header),
        b64url(claims),
        b64url(b"standin-signature")
    )
}

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
        let mut cmd = Command::new(python3_bin());
        cmd.arg(standin_script())
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .args(["--listen", "127.0.0.1:0"])
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
        if opts.send_expires_in {
            cmd.arg("--send-expires-in");
        }
        if opts.referrers_api {
            cmd.arg("--referrers-api");
        }
        let proc = Proc::spawn("acr_standin.py", cmd, &log);
        let mut port = None;
        let found = wait_until(Duration::from_secs(30), || {
            port = proc.log().lines().find_map(|l| {
                l.strip_prefix("acr-standin: listening on 127.0.0.1:")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok())
            });
            port.is_some() || !proc.is_running()
        });
        let Some(port) = port.filter(|_| found) else {
            panic!("acr_standin.py did not report its port:\n{}", proc.log());
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("http://{addr}/healthz");
        assert!(
            wait_until(Duration::from_secs(10), || {
                try_http_request("GET", &url, &[], None).is_ok_and(|r| r.status == 200)
            }),
            "acr_standin.py does not answer /healthz:\n{}",
            proc.log()
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
        http_request("GET", &format!("{}/stats", self.url()), &[], None).json()
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
        let r = http_request(
            "GET",
            &format!(
                "{}?service={STANDIN_SERVICE}&scope={}",
                self.realm(),
                form_encode(scope)
            ),
            &[("Authorization", &basic_auth(ADMIN_USER, ADMIN_PASS))],
            None,
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

// ------------------------------------------------------------------------------------------
// stand-in + distribution

/// What [`AcrRegistry::seed_streaming`] pushed into `library/test`.
#[derive(Clone, Debug)]
pub struct Streaming {
    /// `library/test:1` (OCI manifest): the subject of the referrers.
    pub subject: String,
    pub subject_size: u64,
    /// `library/test:obd` (the same image as Docker schema 2): the "streamable" twin.
    pub twin: String,
    pub twin_size: u64,
    /// The streaming link artifact (overlaybd, linux/amd64, pointing at the twin).
    pub link: String,
    /// A streaming link of another format (`nydus`, linux/amd64) whose `streaming.digest`
    /// is the subject itself: choosing it instead of `link` swaps nothing.
    pub decoy: String,
    /// A referrer that is no streaming link at all.
    pub signature: String,
}

/// The stand-in ACR: [`AcrStandin`] in front of a CNCF distribution whose token realm it is.
pub struct AcrRegistry {
    pub standin: AcrStandin,
    /// The distribution behind the stand-in (seeding goes straight to it, as the admin user).
    pub backend: Registry,
}

impl AcrRegistry {
    pub fn start(opts: &AcrStandinOptions) -> AcrRegistry {
        let standin = AcrStandin::start(opts);
        let backend = Registry::start_with_auth_yaml(
            &standin.auth_yaml(),
            Some((ADMIN_USER.into(), ADMIN_PASS.into())),
        );
        standin.configure(serde_json::json!({"backend": backend.url()}));
        let r = http_request("GET", &format!("{}/v2/", standin.url()), &[], None);
        assert_eq!(r.status, 401, "the stand-in does not front the registry");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains(&standin.realm()),
            "the registry's challenge does not name the stand-in: {challenge}"
        );
        AcrRegistry { standin, backend }
    }

    /// `127.0.0.1:PORT` of the login server (the stand-in).
    pub fn host(&self) -> String {
        self.standin.host()
    }
    /// `http://127.0.0.1:PORT` of the login server: what `--registry-host` gets.
    pub fn url(&self) -> String {
        self.standin.url()
    }

    /// Pushes `library/test:1` and returns its digest (= the fixture's).
    pub fn seed_test(&self) -> String {
        push(&self.backend, &fixtures().test, "library/test:1", &[]);
        let (digest, _) = raw_manifest(&self.backend, "library/test:1");
        assert_eq!(digest, fixtures().test.digest);
        digest
    }

    /// Uploads `data` as a blob of `repo` (POST, then PUT with the digest).
    pub fn push_blob(&self, repo: &str, data: &[u8], token: &str) -> String {
        let digest = digest_of(data);
        let auth = format!("Bearer {token}");
        let r = http_request(
            "POST",
            &format!("{}/v2/{repo}/blobs/uploads/", self.backend.url()),
            &[("Authorization", &auth)],
            Some(b""),
        );
        assert_eq!(r.status, 202, "start upload: {}", r.text());
        let location = r.header("location").expect("upload Location").to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.backend.url())
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = http_request(
            "PUT",
            &format!("{location}{sep}digest={}", form_encode(&digest)),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/octet-stream"),
            ],
            Some(data),
        );
        assert_eq!(r.status, 201, "finish upload: {}", r.text());
        digest
    }

    /// PUTs a manifest (or index) `body` as `repo:reference`; returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
        token: &str,
    ) -> String {
        let r = http_request(
            "PUT",
            &format!("{}/v2/{repo}/manifests/{reference}", self.backend.url()),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", media_type),
            ],
            Some(body),
        );
        assert_eq!(r.status, 201, "PUT {repo}:{reference}: {}", r.text());
        digest_of(body)
    }

    /// Seeds `library/test:1`, its "streamable" twin `library/test:obd` (the same image as
    /// Docker schema 2), and three referrers of `test:1` — a signature, a `nydus` streaming
    /// link (decoy) and the overlaybd linux/amd64 streaming link to the twin — pushed as an
    /// ORAS client does against a registry without the referrers API: the artifact
    /// manifests by digest, and the referrers tag `sha256-<hex of test:1>` holding an OCI
    /// index of their descriptors (in that order: the link comes last).
    pub fn seed_streaming(&self) -> Streaming {
        let subject = self.seed_test();
        let (_, subject_raw) = raw_manifest(&self.backend, "library/test:1");
        push(
            &self.backend,
            &fixtures().test,
            "library/test:obd",
            &["--format", "v2s2"],
        );
        let (twin, twin_raw) = raw_manifest(&self.backend, "library/test:obd");
        assert_ne!(twin, subject, "the twin must be another manifest");
        let token = self
            .standin
            .admin_token("repository:library/test:pull,push");
        let empty = self.push_blob("library/test", b"{}", &token);
        let empty_desc = serde_json::json!({"mediaType": OCI_EMPTY, "digest": empty, "size": 2});
        let subject_desc = serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_raw.len(),
        });
        let artifact = |artifact_type: &str, annotations: serde_json::Value| {
            let body = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": empty_desc,
                "layers": [empty_desc],
                "subject": subject_desc,
                "annotations": annotations,
            }))
            .expect("json");
            let digest = self.put_manifest(
                "library/test",
                &digest_of(&body),
                OCI_MANIFEST,
                &body,
                &token,
            );
            let desc = serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": body.len(),
                "artifactType": artifact_type,
                "annotations": annotations,
            });
            (digest, desc)
        };
        let (signature, sig_desc) = artifact(
            SIGNATURE_TYPE,
            serde_json::json!({"org.example.note": "a signature, not a streaming link"}),
        );
        let (decoy, decoy_desc) = artifact(
            LINK_TYPE,
            serde_json::json!({
                "streaming.format": "nydus",
                "streaming.digest": subject,
                "streaming.mediaType": OCI_MANIFEST,
                "streaming.size": subject_raw.len().to_string(),
                "streaming.platform.os": "linux",
                "streaming.platform.arch": "amd64",
            }),
        );
        let (link, link_desc) = artifact(
            LINK_TYPE,
            serde_json::json!({
                "streaming.format": "overlaybd",
                "streaming.digest": twin,
                "streaming.mediaType": DOCKER_MANIFEST,
                "streaming.size": twin_raw.len().to_string(),
                "streaming.platform.os": "linux",
                "streaming.platform.arch": "amd64",
            }),
        );
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [sig_desc, decoy_desc, link_desc],
        }))
        .expect("json");
        let tag = subject.replace(':', "-");
        self.put_manifest("library/test", &tag, OCI_INDEX, &index, &token);
        Streaming {
            subject,
            subject_size: subject_raw.len() as u64,
            twin,
            twin_size: twin_raw.len() as u64,
            link,
            decoy,
            signature,
        }
    }
}

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
    proc: Proc,
    port: u16,
    /// What `init` printed.
    pub init: CmdOutput,
    pub ws: AcrWorkspace,
}

impl AcrMirror {
    /// `init` with a free mirror address, then `mirror start`; waits for `Listening on`.
    pub fn start(registry: &AcrRegistry, opts: AcrMirrorOptions) -> AcrMirror {
        let ws = AcrWorkspace::new(registry, opts);
        let mut init = None;
        let (proc, port) = spawn_listening(
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
        let m = AcrMirror {
            proc,
            port,
            init,
            ws,
        };
        let r = http_request("GET", &format!("{}/v2/", m.url()), &[], None);
        assert_eq!(r.status, 200, "acr does not answer /v2/:\n{}", m.log());
        m
    }

    /// Stops acr (kills its process group); the workspace stays.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// `mirror start` again in the same workspace (after [`stop`](Self::stop)), without a
    /// new `init`: the same mirror address, the files of the last run still there.
    pub fn restart(self) -> AcrMirror {
        self.restart_with(&[])
    }

    /// [`restart`](Self::restart) with more arguments for `mirror start` (`--id N`).
    pub fn restart_with(mut self, args: &[&str]) -> AcrMirror {
        self.proc.stop();
        let addr = self.host();
        let hosts = self.ws.hosts_dir().display().to_string();
        let mut all = vec!["mirror", "start", "--hosts-dir", &hosts];
        all.extend_from_slice(args);
        let cmd = self.ws.command(&all);
        let log = self.ws.dir().join("acr-restart.log");
        let proc = Proc::spawn("acr mirror start", cmd, &log);
        let readiness = wait_listening(&proc, &addr, START_TIMEOUT);
        assert!(
            readiness == Readiness::Listening,
            "acr did not come up again ({readiness:?}):\n{}",
            proc.log()
        );
        AcrMirror {
            proc,
            port: self.port,
            init: self.init.clone(),
            ws: self.ws,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// acr's one-line-per-request log lines containing every one of `parts`.
    pub fn requests_with(&self, parts: &[&str]) -> Vec<String> {
        requests_with(&self.log(), parts)
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
        http_request(
            method,
            &format!("{}/v2/{repo}/manifests/{reference}{query}", self.url()),
            &h,
            None,
        )
    }
}
