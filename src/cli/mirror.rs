//! `acr mirror start [--id N] [--engine-name NAME]`

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tokio::sync::watch;

use super::{reload, Cli, CliError};
use crate::engine;
use crate::server::ProxyHost;
use crate::world::compile_file;
use acr_plugins::registry::Shared;
use acr_plugins::Value;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Start at this call (or event block) id, as `acr dump` numbers them.
    #[arg(long)]
    pub id: Option<u32>,
    /// The control block whose engine runs.
    #[arg(long, default_value = "mirror")]
    pub engine_name: String,
    /// Write containerd's hosts.toml files into this directory (e.g. /etc/containerd/certs.d)
    /// instead of under the pipeline's directory.
    #[arg(long)]
    pub hosts_dir: Option<std::path::PathBuf>,
    /// On SIGTERM or SIGINT, how long transfers in progress may take to finish (seconds)
    /// before acr exits anyway.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// How long to wait for a connection to an upstream or token service (`10s`, `500ms`).
    #[arg(long, env = "ACR_UPSTREAM_CONNECT_TIMEOUT", default_value = "10s", value_parser = upstream_wait)]
    pub upstream_connect_timeout: std::time::Duration,
    /// How long to wait for the status line and headers of an upstream's answer.
    #[arg(long, env = "ACR_UPSTREAM_HEADER_TIMEOUT", default_value = "30s", value_parser = upstream_wait)]
    pub upstream_header_timeout: std::time::Duration,
    /// How long an upstream's body may pause before the transfer is given up.
    #[arg(long, env = "ACR_UPSTREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = upstream_wait)]
    pub upstream_idle_timeout: std::time::Duration,
}

/// A wait of at least 100 ms (`10s`, `500ms`, `1min`).
fn upstream_wait(text: &str) -> Result<std::time::Duration, String> {
    let d = acr_plugins::parse_duration(text).map_err(|e| e.message)?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("`{text}` is too short: at least 100ms"));
    }
    Ok(d)
}

impl StartArgs {
    /// The upstream waits these arguments give.
    pub fn upstream_limits(&self) -> acr_plugins::registry::limits::UpstreamLimits {
        acr_plugins::registry::limits::UpstreamLimits {
            connect: self.upstream_connect_timeout,
            header: self.upstream_header_timeout,
            body_idle: self.upstream_idle_timeout,
        }
    }
}

/// The error for a pipeline file that does not exist.
pub fn missing(cli: &Cli, path: &Path) -> CliError {
    let name = cli.registry.as_deref().unwrap_or("NAME");
    anyhow::anyhow!(
        "no pipeline at {}: run `acr --registry {name} init` first (or give --runmd-path FILE)",
        path.display()
    )
    .into()
}

pub async fn start(cli: &Cli, args: &StartArgs) -> Result<(), CliError> {
    let path = cli.runmd_path()?;
    if !path.exists() {
        return Err(missing(cli, &path));
    }
    let pipeline = compile_file(&path)?;
    if pipeline.engine(&args.engine_name).is_none() {
        let known: Vec<&str> = pipeline.engine_names().collect();
        return Err(anyhow::anyhow!(
            "there is no engine '{}' in {} (engines: {})",
            args.engine_name,
            path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
        .into());
    }
    let start_at = match args.id {
        Some(id) => {
            Some(engine::start_at(&pipeline, &args.engine_name, id).map_err(anyhow::Error::from)?)
        }
        None => None,
    };
    let (tx, rx) = watch::channel(Arc::new(pipeline));
    let _reloader = reload::watch(&path, tx).context("cannot watch the pipeline file")?;
    let base = std::env::current_dir().context("cannot read the current directory")?;
    let world_dir = std::path::absolute(&path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| base.clone());
    let shared = Shared::with_limits(args.upstream_limits()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let host = ProxyHost::new(rx.clone(), shared, base.clone(), world_dir.clone());
    let mut seed = engine::Seed::new(base);
    seed.world_dir = world_dir;
    seed.host = Some(host.clone());
    if let Some(dir) = &args.hosts_dir {
        seed.values
            .set("hosts_dir", Value::Symbol(dir.display().to_string()));
    }
    let run = engine::run(rx, &args.engine_name, start_at, seed);
    tokio::select! {
        result = run => {
            let summary = result.map_err(anyhow::Error::from)?;
            tracing::info!(passes = summary.passes, calls = summary.calls, "engine finished");
        }
        _ = shutdown_signal() => {
            let grace = std::time::Duration::from_secs(args.shutdown_grace);
            tracing::info!(grace_s = grace.as_secs(), "stopping on signal: no new connections, finishing transfers in progress");
            let left = tokio::select! {
                left = host.drain(grace) => left,
                // A second signal: stop now.
                _ = shutdown_signal() => usize::MAX,
            };
            match left {
                0 => tracing::info!("every transfer finished; stopped"),
                usize::MAX => tracing::warn!("second signal: stopping at once"),
                n => tracing::warn!(open = n, "stopping with transfers still open: they end in an error, never a complete-looking reply"),
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
