//! Azurite, the Azure Storage emulator (its blob service, `azurite-blob` from the npm
//! registry, installed by `scripts/deps.sh`), on 127.0.0.1 on a free port, storing in a
//! temporary directory, with the container [`AZURITE_CONTAINER`] created; killed on drop.
//!
//! Self-contained (std, `acr_plugins`, `sha2`, `base64`, `libc`, `tempfile`, `tokio`), so
//! the plugins crate's tests include it too (`#[path]`). The binary is `$ACR_AZURITE_BIN`, else
//! `~/.cache/acr/azurite/node_modules/.bin/azurite-blob` where `scripts/deps.sh` puts it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acr_plugins::store::object::ObjectTier;
use acr_plugins::store::remote::RemoteConfig;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Azurite's well-known development account (public, in Microsoft's documentation).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The Azure environment that reaches it.
pub const AZURITE_ENV: [(&str, &str); 2] = [
    ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT),
    ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY),
];
pub const AZURITE_CONTAINER: &str = "cache";
pub const AZURITE_PREFIX: &str = "acr";

/// A running `azurite-blob`; killed (its process group) on drop.
pub struct Azurite {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Azurite {
    /// Azurite with the container [`AZURITE_CONTAINER`]. Panics, with the install hint, when
    /// `azurite-blob` is not installed.
    pub fn start() -> Azurite {
        let bin = azurite_bin();
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("acr-azurite-")
                .tempdir()
                .expect("temporary directory");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("access.log")).expect("log file");
            let mut cmd = Command::new(&bin);
            cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(dir.path().join("data"))
                .args([
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                    "--disableProductStyleUrl",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .process_group(0);
            // SAFETY: prctl only, between fork and exec: Azurite dies with the test process.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    );
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            let mut azurite = Azurite { port, child, dir };
            if azurite.wait_until_it_answers() {
                azurite.create_container(AZURITE_CONTAINER);
                return azurite;
            }
            last = azurite.log();
        }
        panic!("azurite-blob did not start:\n{last}");
    }

    /// The blob service endpoint, path style: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// acr's object-store tier over the container, its keys under `prefix` (not under
    /// [`AZURITE_PREFIX`]: `key`s given to it are whole).
    pub fn tier(&self, prefix: &str) -> ObjectTier {
        let lookup = |k: &str| {
            AZURITE_ENV
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let url = format!("az://{AZURITE_CONTAINER}/{prefix}");
        let config = RemoteConfig::parse_with(&url, Some(&self.endpoint()), &lookup)
            .expect("the Azurite store's config");
        ObjectTier::new(config).expect("the Azurite tier")
    }

    /// What Azurite printed (its access log among it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Whether this process (not another that took the port meanwhile) listens and answers.
    fn wait_until_it_answers(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let listening = format!("successfully listens on http://127.0.0.1:{}", self.port);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.log().contains(&listening) {
                let answer = self.request("GET", &format!("/{AZURITE_ACCOUNT}"), &[]);
                if answer.is_ok_and(|(status, _)| status > 0) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Creates a container with a SharedKey-signed `PUT ?restype=container` (the one call
    /// `object_store` does not make).
    pub fn create_container(&self, name: &str) {
        let date = http_date(SystemTime::now());
        let version = "2021-08-06";
        let path = format!("/{AZURITE_ACCOUNT}/{name}");
        // Path style: the account is in the path, and in the canonical resource before it.
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}{path}\nrestype:container"
        );
        let auth = format!("SharedKey {AZURITE_ACCOUNT}:{}", sign(&string_to_sign));
        let headers = [
            ("x-ms-date", date.as_str()),
            ("x-ms-version", version),
            ("Authorization", auth.as_str()),
        ];
        let (status, body) = self
            .request("PUT", &format!("{path}?restype=container"), &headers)
            .expect("create the container");
        assert!(
            status == 201 || status == 409,
            "create container {name}: {status} {body}"
        );
    }

    /// One HTTP/1.1 request without a body: the status and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, String)> {
        let mut socket = TcpStream::connect(("127.0.0.1", self.port))?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n",
            self.port
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes())?;
        let mut response = String::new();
        socket.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this value started.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Where `azurite-blob` is; panics with the install hint when it is not there.
fn azurite_bin() -> PathBuf {
    let bin = std::env::var_os("ACR_AZURITE_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/acr/azurite/node_modules/.bin/azurite-blob"))
        })
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "azurite-blob is not installed at '{}': run scripts/deps.sh (it installs the npm \
         package azurite under ~/.cache/acr/azurite), or set ACR_AZURITE_BIN",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The base64 HMAC-SHA256 of `string_to_sign` with the dev account's key: a SharedKey
/// signature, or a SAS's `sig`.
fn sign(string_to_sign: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .expect("the Azurite key");
    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, string_to_sign.as_bytes()))
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `Sun, 06 Dec 2026 06:14:59 GMT` (from the RFC 3339 form acr's clock writes).
fn http_date(at: SystemTime) -> String {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let stamp = acr_plugins::clock::rfc3339(ms);
    let (date, time) = stamp
        .trim_end_matches('Z')
        .split_once('T')
        .unwrap_or_default();
    let [year, month, day]: [&str; 3] = date
        .splitn(3, '-')
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_default();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = month.parse::<usize>().map_or("", |m| months[(m + 11) % 12]);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(ms / 86_400_000 % 7) as usize];
    format!("{weekday}, {day} {month} {year} {time} GMT")
}

/// An account SAS token for the dev account (blob service; read, write, delete, list, add,
/// create on containers and objects; valid until 2100), as an administrator would hand out.
pub fn azurite_account_sas() -> String {
    let (permissions, services, types, expiry, version) =
        ("rwdlac", "b", "sco", "2100-01-01T00:00:00Z", "2019-12-12");
    let string_to_sign = format!(
        "{AZURITE_ACCOUNT}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n\n{version}\n"
    );
    let signature: String = sign(&string_to_sign)
        .bytes()
        .map(|b| match b {
            b'+' => "%2B".to_string(),
            b'/' => "%2F".to_string(),
            b'=' => "%3D".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    format!("sv={version}&ss={services}&srt={types}&sp={permissions}&se={expiry}&sig={signature}")
}
