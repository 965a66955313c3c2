//! `.mirror HOST[, HOST...]`: writes containerd's `hosts.toml` for each registry HOST so the
//! runtime pulls through acr, then serves the block's `+ .proxy` until acr stops.
//!
//! The first HOST is the block's default upstream (for clients that send no `ns`). A HOST may
//! be a URL; plain `http://` is used only when written so. Modifiers:
//! `.host ADDR, caps` (where containerd reaches acr and what it may do there),
//! `.server URL` (the fallback containerd tries after acr, for the first HOST),
//! `.https CA` (reach acr over https, trusting CA), `.header NAME VALUE` (sent by containerd
//! to acr), `.hosts-dir DIR` (write into a real containerd hosts directory).
//!
//! By default the files go under the pipeline's directory,
//! `.work/etc/containerd/certs.d/HOST/hosts.toml`, so nothing outside acr's own directory
//! changes until asked (`.hosts-dir`, `mirror start --hosts-dir`). A file that exists with
//! other content is kept as `hosts.toml.bak-<unix seconds>`, never silently clobbered.

use std::path::{Path, PathBuf};

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{
    run_fn, symbol_modifier, Caps, InputError, Invocation, ModifierProps, ModifierSpec, PluginSpec,
};
use crate::value::Value;

pub const SPEC: PluginSpec = PluginSpec::new(
    "mirror",
    "write containerd's hosts.toml for HOST and serve the block's proxy",
)
.input("the registry host(s) this mirror stands in for")
.modifiers(&[
    ModifierSpec {
        name: "host",
        usage: ".host ADDR, resolve, pull",
        parse: parse_host,
    },
    ModifierSpec {
        name: "server",
        usage: ".server https://registry.example",
        parse: symbol_modifier,
    },
    ModifierSpec {
        name: "https",
        usage: ".https /path/to/ca.pem",
        parse: symbol_modifier,
    },
    ModifierSpec {
        name: "header",
        usage: ".header NAME VALUE",
        parse: parse_header,
    },
    ModifierSpec {
        name: "hosts-dir",
        usage: ".hosts-dir /etc/containerd/certs.d",
        parse: symbol_modifier,
    },
])
.check(check)
.caps(Caps {
    writes_hosts_toml: true,
    ..Caps::NONE
})
.run(run_fn!(run));

const CAPABILITIES: &[&str] = &["resolve", "pull", "push"];

fn check(input: &str) -> Result<(), InputError> {
    for host in hosts(input) {
        let bare = host.split_once("://").map_or(host, |(scheme, rest)| {
            if scheme == "http" || scheme == "https" {
                rest
            } else {
                ""
            }
        });
        if bare.is_empty() || bare.contains(char::is_whitespace) || bare.contains(['"', '\\']) {
            return Err(InputError::new(format!("`{host}` is not a registry host or URL"))
                .hint("write a host (`docker.io`, `127.0.0.1:5000`) or a URL (`http://127.0.0.1:5000`)"));
        }
    }
    Ok(())
}

fn hosts(input: &str) -> impl Iterator<Item = &str> {
    input.split(',').map(str::trim).filter(|h| !h.is_empty())
}

/// `.host ADDR, caps...`: the address containerd reaches the mirror at, and what it may do
/// there (containerd's capabilities: resolve, pull, push).
fn parse_host(_: &str, _: Option<&str>, value: &str) -> ModifierProps {
    let mut parts = value.split(',').map(str::trim);
    let addr = parts.next().filter(|a| !a.is_empty()).ok_or_else(|| {
        InputError::new("`.host` needs an address")
            .hint("write `.host localhost:8578, resolve, pull`")
    })?;
    let mut out = vec![("host".to_string(), Value::Symbol(addr.to_string()))];
    for cap in parts {
        if !CAPABILITIES.contains(&cap) {
            return Err(InputError::new(format!("unknown capability `{cap}`"))
                .hint("containerd's capabilities are resolve, pull and push"));
        }
        out.push(("capability".to_string(), Value::Symbol(cap.to_string())));
    }
    Ok(out)
}

fn parse_header(_: &str, name: Option<&str>, value: &str) -> ModifierProps {
    let (k, v) = match name {
        Some(n) => (n.to_string(), value.to_string()),
        None => match value.split_once(char::is_whitespace) {
            Some((k, v)) => (k.to_string(), v.trim().to_string()),
            None => {
                return Err(InputError::new("`.header` needs a name and a value")
                    .hint("write `.header x-ms-upgrade-if-streamable overlaybd`"))
            }
        },
    };
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || v.contains(['\r', '\n'])
    {
        return Err(InputError::new(format!("`{k} {v}` is not a header"))
            .hint("names are letters, digits and '-'"));
    }
    Ok(vec![(
        "header".to_string(),
        Value::Symbol(format!("{k}={v}")),
    )])
}

/// The namespace (directory name) and fallback server of one `.mirror` HOST.
pub fn namespace_and_server(host: &str) -> (String, String) {
    match host.split_once("://") {
        Some((_, rest)) => {
            let ns = rest.split('/').next().unwrap_or(rest).to_string();
            (ns, host.trim_end_matches('/').to_string())
        }
        None => {
            let server = if host == "docker.io" {
                "https://registry-1.docker.io".to_string()
            } else {
                format!("https://{host}")
            };
            (host.to_string(), server)
        }
    }
}

/// containerd's `hosts.toml` for one namespace, as it reads it (`config_path` of its CRI
/// registry settings): the upstream `server`, then the hosts to try first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostsToml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default)]
    pub host: std::collections::BTreeMap<String, HostEntry>,
}

/// One `[host."URL"]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostEntry {
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub header: std::collections::BTreeMap<String, String>,
}

/// The text of a hosts.toml: `server`, then acr as the one host, with its capabilities,
/// serialized by the `toml` crate (any value, a quote or a backslash included, reads back as
/// it was written).
pub fn hosts_toml(
    server: Option<&str>,
    mirror: &str,
    capabilities: &[String],
    ca: Option<&str>,
    headers: &[(String, String)],
) -> String {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let doc = HostsToml {
        server: server.map(str::to_string),
        host: std::iter::once((
            format!("{scheme}://{mirror}"),
            HostEntry {
                capabilities: capabilities.to_vec(),
                ca: ca.map(str::to_string),
                header: headers.iter().cloned().collect(),
            },
        ))
        .collect(),
    };
    let body = toml::to_string(&doc).unwrap_or_default();
    format!(
        "# Written by acr (.mirror). containerd reads it when its config_path points here.\n{body}"
    )
}

/// Writes `text` to `path`, keeping a different existing file as a timestamped backup.
fn write_with_backup(path: &Path, text: &str) -> std::io::Result<Option<PathBuf>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut backup = None;
    if let Ok(existing) = std::fs::read_to_string(path) {
        if existing == text {
            return Ok(None);
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut name = path.with_file_name(format!("hosts.toml.bak-{secs}"));
        let mut n = 1;
        while name.exists() {
            name = path.with_file_name(format!("hosts.toml.bak-{secs}-{n}"));
            n += 1;
        }
        std::fs::rename(path, &name)?;
        backup = Some(name);
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(backup)
}

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let host_handle = cx.host.clone();
    let mirror_addr = call
        .props
        .get_str("host")
        .map(String::from)
        .or_else(|| host_handle.as_ref().and_then(|h| h.proxy_address(call.block)))
        .ok_or_else(|| PluginError::failed(call, "no address for containerd to reach acr: add `: .host ADDR, resolve, pull` or a `+ .proxy ADDR`"))?;
    let mut capabilities: Vec<String> = call
        .props
        .all("capability")
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if capabilities.is_empty() {
        capabilities = vec!["pull".into(), "resolve".into()];
    }
    let headers: Vec<(String, String)> = call
        .props
        .all("header")
        .filter_map(|v| {
            v.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let dir = call
        .props
        .get_str("hosts-dir")
        .map(|d| cx.resolve(Path::new(d)))
        .or_else(|| cx.dir("hosts_dir"))
        .unwrap_or_else(|| cx.world_dir.join(".work/etc/containerd/certs.d"));
    let ca = call.props.get_str("https");
    for (i, host) in hosts(&call.input).enumerate() {
        let (ns, default_server) = namespace_and_server(host);
        let server = if i == 0 {
            call.props.get_str("server").unwrap_or(&default_server)
        } else {
            &default_server
        };
        let text = hosts_toml(Some(server), &mirror_addr, &capabilities, ca, &headers);
        let path = dir.join(&ns).join("hosts.toml");
        let backup = write_with_backup(&path, &text).map_err(|e| {
            PluginError::failed(call, format!("cannot write {}: {e}", path.display()))
        })?;
        if let Some(b) = backup {
            tracing::warn!(path = %path.display(), backup = %b.display(), "hosts.toml changed; the old one is kept");
        }
        tracing::info!(path = %path.display(), namespace = %ns, "wrote hosts.toml");
    }
    match host_handle {
        Some(h) => h.serve(call.block).await,
        None => Err(PluginError::failed(
            call,
            "`.mirror` needs `acr mirror start` to serve",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_format() {
        let text = hosts_toml(
            Some("https://example.azurecr.io"),
            "localhost:8578",
            &["resolve".into(), "pull".into()],
            None,
            &[("x-ms-upgrade-if-streamable".into(), "overlaybd".into())],
        );
        assert!(text.starts_with("# Written by acr"));
        assert!(text.contains("server = \"https://example.azurecr.io\"\n"));
        assert!(text.contains(
            "[host.\"http://localhost:8578\"]\ncapabilities = [\"resolve\", \"pull\"]\n"
        ));
        assert!(text.contains(
            "[host.\"http://localhost:8578\".header]\nx-ms-upgrade-if-streamable = \"overlaybd\"\n"
        ));
    }

    /// A header value with a quote and a CA path with a backslash read back as written.
    #[test]
    fn hosts_toml_values_read_back() {
        let headers = vec![
            ("x-quote".to_string(), "say \"hi\" \\ bye".to_string()),
            ("Authorization".to_string(), "Bearer a=b".to_string()),
        ];
        let text = hosts_toml(
            Some("https://r.example"),
            "127.0.0.1:8578",
            &["pull".into()],
            Some("C:\\certs\\ca \"x\".pem"),
            &headers,
        );
        let back: HostsToml = toml::from_str(&text).unwrap();
        let entry = &back.host["https://127.0.0.1:8578"];
        assert_eq!(entry.ca.as_deref(), Some("C:\\certs\\ca \"x\".pem"));
        assert_eq!(entry.header["x-quote"], "say \"hi\" \\ bye");
        assert_eq!(entry.header["Authorization"], "Bearer a=b");
        assert_eq!(back.server.as_deref(), Some("https://r.example"));
    }

    #[test]
    fn namespaces() {
        assert_eq!(
            namespace_and_server("docker.io").1,
            "https://registry-1.docker.io"
        );
        assert_eq!(
            namespace_and_server("http://127.0.0.1:5000"),
            (
                "127.0.0.1:5000".to_string(),
                "http://127.0.0.1:5000".to_string()
            )
        );
    }

    #[test]
    fn backup_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("acr-hosts-{}", std::process::id()));
        let path = dir.join("ns/hosts.toml");
        assert!(write_with_backup(&path, "a").unwrap().is_none());
        assert!(write_with_backup(&path, "a").unwrap().is_none());
        let b = write_with_backup(&path, "b").unwrap().expect("backup");
        assert_eq!(std::fs::read_to_string(b).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
