//! What `tests/deploy/production.rs` needs beyond the rest of the harness: htpasswd files, a
//! small PKI made with `openssl`, `curl`, the Prometheus text of `/metrics` and a PNG check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::harness::*;

mod browser;
mod pki;

// Each area binary uses a part of these.
#[allow(unused_imports)]
pub use {browser::*, pki::*};

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
