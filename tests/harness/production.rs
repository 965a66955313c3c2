//! What `tests/deploy/production.rs` needs beyond the rest of the harness: htpasswd files, a
//! small PKI made with `openssl`, `curl`, the Prometheus text of `/metrics` and a PNG check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::*;

/// How long one client command may take (generous: a shared 2-core machine).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(240);

// ------------------------------------------------------------------------------------------
// htpasswd

/// An htpasswd file of bcrypt entries (`htpasswd -Bbn`), one line per user.
pub fn htpasswd_file(users: &[(&str, &str)]) -> String {
    require_tools(&["htpasswd"]);
    users
        .iter()
        .map(|(u, p)| {
            let out = run("htpasswd", &["-Bbn", u, p]).ok();
            let line = out.stdout.trim().to_string();
            assert!(line.starts_with(&format!("{u}:$2y$")), "not bcrypt: {line}");
            line + "\n"
        })
        .collect()
}

/// `ACR_AUTH_127_0_0_1_PORT` for an upstream at `127.0.0.1:PORT`.
pub fn acr_auth_var(reg: &Registry) -> String {
    format!("ACR_AUTH_127_0_0_1_{}", reg.addr().port())
}

// ------------------------------------------------------------------------------------------
// a PKI made with openssl

/// A certificate authority (EC P-256) in a temp dir, issuing leaf certificates for
/// 127.0.0.1 (server) or for a client.
pub struct Pki {
    dir: TempDir,
    name: String,
}

fn openssl(args: &[&str], dir: &Path) -> CmdOutput {
    require_tools(&["openssl"]);
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    run_cmd(cmd, CMD_TIMEOUT).ok()
}

impl Pki {
    /// A new CA whose subject CN is `name`.
    pub fn new(name: &str) -> Pki {
        let dir = temp_dir("acr-pki-");
        let subject = format!("/CN={name}");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir.path(),
        );
        Pki {
            dir,
            name: name.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A directory holding only `ca.crt`: what `skopeo --cert-dir` / `--src-cert-dir` reads.
    pub fn cert_dir(&self) -> PathBuf {
        let d = self.dir.path().join("trust");
        std::fs::create_dir_all(&d).expect("mkdir trust");
        std::fs::copy(self.ca_cert(), d.join("ca.crt")).expect("copy ca.crt");
        d
    }

    fn issue(&self, file: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let subject = format!("/CN={cn}");
        let (key, csr, crt, extf) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.crt"),
            format!("{file}.ext"),
        );
        std::fs::write(d.join(&extf), ext).expect("write ext file");
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subject,
            ],
            d,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
            d,
        );
        (d.join(crt), d.join(key))
    }

    /// A server certificate for IP 127.0.0.1 (and localhost) with subject CN `cn`:
    /// `(cert, key)` files named `<file>.crt` / `<file>.key` in the CA's directory.
    pub fn server(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(
            file,
            cn,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
    }

    /// A client certificate with subject CN `cn`.
    pub fn client(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(
            file,
            cn,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        )
    }
}

/// The subject of the certificate served at `127.0.0.1:port`, as
/// `openssl s_client | openssl x509 -noout -subject` prints it (`subject=CN = name`), or the
/// empty string when no certificate came back.
pub fn served_subject(port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    run_cmd(cmd, Duration::from_secs(60))
        .stdout
        .trim()
        .to_string()
}

// ------------------------------------------------------------------------------------------
// curl

/// `curl -sS <args>` (its output captured).
pub fn curl(args: &[&str]) -> CmdOutput {
    require_tools(&["curl"]);
    let mut cmd = Command::new("curl");
    cmd.arg("-sS").args(args);
    run_cmd(cmd, CMD_TIMEOUT)
}

// ------------------------------------------------------------------------------------------
// skopeo with a login of its own

/// `skopeo --insecure-policy SUB [tls flags] ARGS` with `REGISTRY_AUTH_FILE=auth_file` (the
/// file a `skopeo login` writes). With `plain_http` the TLS checks are off (acr over plain
/// http: `--tls-verify=false`, or `--src-tls-verify=false` for copy); otherwise skopeo
/// verifies the server's certificate with whatever `ARGS` say (`--cert-dir`).
pub fn skopeo_as(auth_file: &Path, plain_http: bool, args: &[&str]) -> CmdOutput {
    require_tools(&["skopeo"]);
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy");
    if let Some((sub, rest)) = args.split_first() {
        cmd.arg(sub);
        if plain_http {
            match *sub {
                "copy" | "sync" => {
                    cmd.args(["--src-tls-verify=false", "--dest-tls-verify=false"]);
                }
                "inspect" | "list-tags" | "login" | "logout" => {
                    cmd.arg("--tls-verify=false");
                }
                _ => {}
            }
        }
        cmd.args(rest);
    }
    if !auth_file.exists() {
        std::fs::write(auth_file, "{\"auths\":{}}\n").expect("write auth file");
    }
    cmd.env("REGISTRY_AUTH_FILE", auth_file);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("DOCKER_") || k == "XDG_RUNTIME_DIR" {
            cmd.env_remove(k);
        }
    }
    run_cmd(cmd, CMD_TIMEOUT)
}

// ------------------------------------------------------------------------------------------
// Prometheus text

/// A sample line: metric name, labels in order, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// The samples of a Prometheus text exposition: `name{labels}` (as written) -> value.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
    /// The sample lines in order: (name, labels, value).
    pub lines: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not `name value`: {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
            };
            let (name, labels) = match key.split_once('{') {
                None => (key.to_string(), Vec::new()),
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                    let labels = body
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p
                                .split_once('=')
                                .unwrap_or_else(|| panic!("bad label in {line:?}"));
                            let v = v
                                .strip_prefix('"')
                                .and_then(|v| v.strip_suffix('"'))
                                .unwrap_or_else(|| panic!("unquoted label in {line:?}"));
                            (k.to_string(), v.to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line:?}"
            );
            m.samples.insert(key.to_string(), value);
            m.lines.push((name, labels, value));
        }
        m
    }

    /// The value of `key` (`name{labels}` as acr writes it), 0 when absent.
    pub fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// `(le, value)` of every bucket of histogram `name` for label `route`, in file order.
    pub fn buckets(&self, name: &str, route: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        self.lines
            .iter()
            .filter(|(n, labels, _)| {
                *n == bucket && labels.iter().any(|(k, v)| k == "route" && v == route)
            })
            .map(|(_, labels, v)| {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, le)| {
                        if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().expect("le is a number")
                        }
                    })
                    .expect("a bucket has le");
                (le, *v)
            })
            .collect()
    }

    /// The values of label `label` that `name` has.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .lines
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, labels, _)| {
                labels
                    .iter()
                    .find(|(k, _)| k == label)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// `GET /metrics` of acr, parsed.
pub fn scrape(acr_url: &str) -> Metrics {
    let r = fetch("GET", &format!("{acr_url}/metrics"), &[]);
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default().to_string();
    assert!(ct.starts_with("text/plain"), "/metrics content type {ct}");
    Metrics::parse(&r.text())
}

// ------------------------------------------------------------------------------------------
// headless chromium and PNG

/// The headless Chromium binary (Debian's `chromium-headless-shell`, else `chromium`).
pub fn chromium() -> Option<PathBuf> {
    ["chromium-headless-shell", "chromium"]
        .iter()
        .find_map(|t| which(t))
        .or_else(|| {
            [
                "/usr/lib/chromium/chromium-headless-shell",
                "/usr/lib/chromium/chromium",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
        })
}

/// Runs headless Chromium on `url` with `args` (`--screenshot=FILE`, `--dump-dom`).
pub fn run_chromium(bin: &Path, args: &[&str], url: &str) -> CmdOutput {
    let profile = temp_dir("acr-chromium-");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--no-sandbox",
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .env("HOME", profile.path());
    run_cmd(cmd, CMD_TIMEOUT)
}

/// What [`png_facts`] found in a PNG.
#[derive(Debug)]
pub struct PngFacts {
    pub width: u32,
    pub height: u32,
    pub bit_depth: u8,
    pub color_type: u8,
    /// Distinct pixel values, decoded (python3's zlib inflates the IDAT stream; the
    /// scanline filters are undone).
    pub distinct_colours: usize,
}

/// Checks the PNG signature and reads the IHDR in Rust, then decodes the pixels with a small
/// python3 script (standard library only) to count distinct colours.
pub fn png_facts(path: &Path) -> PngFacts {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG (first bytes {:?})",
        path.display(),
        &bytes[..bytes.len().min(8)]
    );
    assert_eq!(&bytes[12..16], b"IHDR", "the first chunk is not IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let (width, height, bit_depth, color_type) = (be(16), be(20), bytes[24], bytes[25]);
    const DECODE: &str = r#"
import sys, zlib, struct
data = open(sys.argv[1], 'rb').read()
pos, idat = 8, b''
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, depth, ctype, _, _, interlace = struct.unpack('>IIBBBBB', body)
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
assert depth == 8 and interlace == 0 and ctype in (0, 2, 4, 6), (depth, ctype, interlace)
bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
colours = set()
i = 0
for _ in range(h):
    f = raw[i]; line = bytearray(raw[i + 1:i + 1 + stride]); i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        colours.add(bytes(line[x:x + bpp]))
    prev = line
print(len(colours))
"#;
    require_tools(&["python3"]);
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(DECODE).arg(path);
    let out = run_cmd(cmd, CMD_TIMEOUT).ok();
    let distinct_colours = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("decoder printed {:?}: {e}", out.stdout));
    PngFacts {
        width,
        height,
        bit_depth,
        color_type,
        distinct_colours,
    }
}

/// Distinct byte values in a file.
pub fn distinct_bytes(path: &Path) -> usize {
    let bytes = std::fs::read(path).expect("read file");
    let mut seen = [false; 256];
    for b in bytes {
        seen[b as usize] = true;
    }
    seen.iter().filter(|s| **s).count()
}

// ------------------------------------------------------------------------------------------
// misc

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The size of a file, 0 when it does not exist (yet).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The response head of `curl -D - <args> <url>` (the body discarded): the status and the
/// headers in order, names lower-cased. Unlike `ureq` (whose header listing repeats a
/// repeated header), this is exactly what was on the wire.
pub fn curl_head(args: &[&str], url: &str) -> (u16, Vec<(String, String)>) {
    let mut all = vec!["-o", "/dev/null", "-D", "-"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all).ok();
    let mut lines = out.stdout.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// The values of header `name` in a [`curl_head`] answer.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}
