//! `acr init`: renders `mirror.runmd.template` into the world directory.
//!
//! A file that was edited by hand is never overwritten without `--force`: `init` records a
//! checksum of what it wrote (`.mirror.runmd.init`) and compares before it writes again.

use std::path::Path;

use anyhow::Context as _;
use clap::Args;

use super::{Cli, CliError};

const TEMPLATE: &str = include_str!("../../mirror.runmd.template");
const SETUP_ENV: &str = include_str!("../../lib/sh/setup-env.sh");

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where the mirror listens, and what containerd's hosts.toml points at.
    #[arg(long, default_value = "localhost:8578")]
    pub mirror_address: String,
    /// The streaming format manifests are swapped for (`overlaybd`, or `none`).
    #[arg(long, default_value = "overlaybd")]
    pub teleport_format: String,
    /// The node's operating system, for the set-up step.
    #[arg(long, default_value = "ubuntu")]
    pub operating_system: String,
    /// Overwrite a mirror.runmd that was edited since `init` wrote it.
    #[arg(long)]
    pub force: bool,
}

impl InitArgs {
    /// The options `init` takes when none are given.
    pub fn defaults() -> Self {
        Self {
            mirror_address: "localhost:8578".into(),
            teleport_format: "overlaybd".into(),
            operating_system: "ubuntu".into(),
            force: false,
        }
    }
}

/// The pipeline `acr --registry NAME --registry-host HOST init` writes with default options.
pub fn render_default(name: &str, host: &str) -> String {
    render(
        name,
        host,
        &format!(".world/{}/{name}", super::host_dir(host)),
        &InitArgs::defaults(),
    )
}

/// The artifact type of the links from an image to its streamable (overlaybd) twin in ACR.
pub const STREAMING_LINK: &str = "application/vnd.azure.artifact.streaming.link.v1";

/// The registry's login server: `https://NAME.HOST`, or HOST itself when it is a URL (a
/// stand-in, a private endpoint).
pub fn login_server(name: &str, host: &str) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        host.trim_end_matches('/').to_string()
    } else {
        format!("https://{name}.{host}")
    }
}

/// The template with its placeholders filled in.
pub fn render(name: &str, host: &str, world: &str, args: &InitArgs) -> String {
    let discover = if args.teleport_format == "overlaybd" {
        STREAMING_LINK
    } else {
        ""
    };
    let server = login_server(name, host);
    let ns = server.split_once("://").map_or(server.as_str(), |(_, h)| h);
    // `.mirror` takes a bare host (https) or a URL (a stand-in on plain http).
    let mirror = if server.starts_with("https://") {
        ns.to_string()
    } else {
        server.clone()
    };
    TEMPLATE
        .replace("{{name}}", name)
        .replace("{{server}}", &server)
        .replace("{{ns}}", ns)
        .replace("{{mirror}}", &mirror)
        .replace("{{host}}", host)
        .replace("{{world}}", world)
        .replace("{{address}}", &args.mirror_address)
        .replace("{{os}}", &args.operating_system)
        .replace("{{format}}", &args.teleport_format)
        .replace("{{discover}}", discover)
        .replace(" \n", "\n")
}

/// FNV-1a, 64 bits: stable across releases, enough to tell "as written" from "edited".
fn checksum(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn check_value(what: &str, value: &str) -> Result<(), CliError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c));
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{what} `{value}` is not valid: use letters, digits, '-', '.', '_' and ':'"
        )
        .into())
    }
}

pub fn run(cli: &Cli, args: &InitArgs) -> Result<(), CliError> {
    let Some(name) = cli.registry.as_deref() else {
        return Err(
            anyhow::anyhow!("init needs a registry name: `acr --registry NAME init`").into(),
        );
    };
    check_value("--registry", name)?;
    let bare_host = super::host_dir(&cli.registry_host);
    check_value("--registry-host", bare_host)?;
    check_value("--mirror-address", &args.mirror_address)?;
    check_value("--teleport-format", &args.teleport_format)?;
    check_value("--operating-system", &args.operating_system)?;
    let dir = cli.world_dir().unwrap_or_default();
    let path = match &cli.runmd_path {
        Some(p) => p.clone(),
        None => dir.join("mirror.runmd"),
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = parent.join(".mirror.runmd.init");
    let text = render(name, &cli.registry_host, &dir.display().to_string(), args);
    if path.exists() && !args.force {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        let recorded = std::fs::read_to_string(&stamp).unwrap_or_default();
        if recorded.trim() != checksum(&current) && current != text {
            return Err(anyhow::anyhow!(
                "{} was edited since `init` wrote it; keeping it. Run `acr --registry {name} init --force` to replace it",
                path.display()
            )
            .into());
        }
        if current != text {
            tracing::warn!(path = %path.display(), "rewriting mirror.runmd with the new options");
        }
    }
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::write(&stamp, checksum(&text))
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    let script = dir.join("setup-env.sh");
    std::fs::write(&script, SETUP_ENV)
        .with_context(|| format!("cannot write {}", script.display()))?;
    let absolute = std::fs::canonicalize(&path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    super::write_stdout(&format!("{}\n", absolute.display()))
}
