//! The `acr` binary: parses the command line, sets up logging, runs the command.

use std::process::ExitCode;

use acr::cli::Cli;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc for small objects, the system's allocator for large buffers (see `allocator`).
#[global_allocator]
static ALLOCATOR: acr::allocator::SplitAllocator = acr::allocator::SplitAllocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = if cli.debug {
        EnvFilter::new("acr=debug,acr_plugins=debug,info")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let writer = acr::log_writer::stderr();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !ansi {
        acr::log_writer::set_plain(&writer);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi)
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
    let result = runtime.block_on(cli.run());
    // Every log line is out before the process ends (and before its last error).
    acr::log_writer::flush();
    match result {
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
