//! The command line: `acr [global options] init | dump | mirror start | layer pack`.

mod dump;
mod init;
pub use init::{render, render_default, InitArgs};
mod layer;
mod mirror;
pub mod reload;
mod warm;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// A registry mirror whose every request runs through a runmd plugin pipeline.
#[derive(Debug, Parser)]
#[command(name = "acr", version, about, propagate_version = true)]
pub struct Cli {
    /// The registry's name: with --registry-host it names the world directory
    /// `.world/{host}/{name}` and the registry `{name}.{host}`.
    #[arg(long, global = true, env = "REGISTRY_NAME")]
    pub registry: Option<String>,

    /// The registry's domain: the login server is `NAME.HOST`. A URL
    /// (`http://127.0.0.1:5000`) names the login server itself.
    #[arg(long, global = true, default_value = "azurecr.io")]
    pub registry_host: String,

    /// A runmd file to use instead of `.world/{host}/{name}/mirror.runmd`.
    #[arg(long, global = true)]
    pub runmd_path: Option<PathBuf>,

    /// Debug logging (otherwise RUST_LOG decides, default info).
    #[arg(short, long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the default pipeline to `.world/{host}/{name}/mirror.runmd` and print its path.
    Init(init::InitArgs),
    /// Print the numbered tree of blocks and plugin calls.
    Dump,
    /// Run the mirror's engine.
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// Work with the layers `.inject-layer` appends.
    Layer {
        #[command(subcommand)]
        command: LayerCommand,
    },
    /// Pre-pull images into the proxy's store through its own routes, as a client's pull
    /// would, so later pulls are hits (even with the upstream down).
    Warm(warm::WarmArgs),
}

#[derive(Debug, Subcommand)]
pub enum LayerCommand {
    /// Pack a directory into a deterministic .tar.gz layer; print its digests as JSON.
    Pack(layer::PackArgs),
}

#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Compile the pipeline and run its engine; the file is reloaded when it changes.
    Start(mirror::StartArgs),
}

/// Why a command failed, and the exit status it gives.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A runmd file with errors: the rendered diagnostics. Exit status 2.
    #[error("{0}")]
    Invalid(String),
    /// Anything else. Exit status 1.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => 2,
            CliError::Other(_) => 1,
        }
    }
}

impl From<crate::world::compile::CompileError> for CliError {
    fn from(e: crate::world::compile::CompileError) -> Self {
        match e {
            crate::world::compile::CompileError::Invalid(report) => {
                CliError::Invalid(report.to_string())
            }
            other => CliError::Other(other.into()),
        }
    }
}

/// The registry host as a directory name: without a scheme or trailing slash.
pub fn host_dir(host: &str) -> &str {
    host.split_once("://")
        .map_or(host, |(_, rest)| rest)
        .trim_end_matches('/')
}

/// Writes to stdout; a reader that went away (`acr dump | head -1`) is not an error.
pub fn write_stdout(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot write to stdout: {e}").into()),
    }
}

/// Checks that `value` (of `--registry` or `--registry-host`) names one directory inside
/// `.world/`: not empty, not `.` or `..`, no `/` or `\` (so no absolute path either), only
/// letters, digits, `-`, `.`, `_`, `:`, `[`, `]`, and at most 253 characters.
pub fn check_world_name(what: &str, value: &str) -> Result<(), CliError> {
    let only_dots = value.chars().all(|c| c == '.');
    let allowed = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c));
    if value.is_empty() || only_dots || !allowed || value.len() > 253 {
        return Err(anyhow::anyhow!(
            "{what} `{value}` is not a valid name: it must name one directory under .world/ \
             (letters, digits, '-', '.', '_', ':', not `.` or `..`, no `/`)"
        )
        .into());
    }
    Ok(())
}

impl Cli {
    /// `.world/{host}/{name}`, relative to the current directory (names checked by
    /// [`Cli::check_names`] before any command runs).
    pub fn world_dir(&self) -> Option<PathBuf> {
        self.registry.as_ref().map(|name| {
            Path::new(".world")
                .join(host_dir(&self.registry_host))
                .join(name)
        })
    }

    /// Refuses a `--registry` or `--registry-host` that would put the world directory
    /// anywhere but one level each under `.world/`.
    pub fn check_names(&self) -> Result<(), CliError> {
        if let Some(name) = &self.registry {
            check_world_name("--registry", name)?;
        }
        check_world_name("--registry-host", host_dir(&self.registry_host))
    }

    /// The runmd file a command works on: `--runmd-path`, else the world's `mirror.runmd`.
    pub fn runmd_path(&self) -> Result<PathBuf, CliError> {
        if let Some(p) = &self.runmd_path {
            return Ok(p.clone());
        }
        match self.world_dir() {
            Some(dir) => Ok(dir.join("mirror.runmd")),
            None => Err(anyhow::anyhow!(
                "which pipeline? give --registry NAME (after `acr --registry NAME init`) or --runmd-path FILE"
            )
            .into()),
        }
    }

    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        if !matches!(self.command, Command::Layer { .. }) {
            self.check_names()?;
        }
        match &self.command {
            Command::Init(args) => init::run(&self, args),
            Command::Dump => dump::run(&self),
            Command::Mirror {
                command: MirrorCommand::Start(args),
            } => mirror::start(&self, args).await,
            Command::Layer {
                command: LayerCommand::Pack(args),
            } => layer::pack(args),
            Command::Warm(args) => warm::run(&self, args).await,
        }
    }
}
