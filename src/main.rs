//! The `acr` binary: parses the command line, sets up logging, runs the command.

use std::process::ExitCode;

use acr::cli::Cli;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = if cli.debug {
        EnvFilter::new("acr=debug,acr_plugins=debug,info")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                acr::cli::CliError::Invalid(report) => eprintln!("{report}"),
                acr::cli::CliError::Other(err) => eprintln!("error: {err:#}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}
