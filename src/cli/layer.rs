//! `acr layer pack DIR [-o FILE] [--location]`: the deterministic layer `.inject-layer DIR`
//! would append, as a file and as the digest triple a `/container-token` request declares.

use std::path::PathBuf;

use super::{write_stdout, CliError};

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// The directory to pack (its regular files and symlinks, sorted, owned by root, mtime 0).
    pub dir: PathBuf,
    /// Write the .tar.gz here.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Add `location`: the layer as a `data:` URL, for a `/container-token` request.
    #[arg(long)]
    pub location: bool,
}

pub fn pack(args: &PackArgs) -> Result<(), CliError> {
    let packed = acr_plugins::inject_layer::layer::pack_dir(&args.dir)
        .map_err(|e| anyhow::anyhow!("cannot pack {}: {e}", args.dir.display()))?;
    if let Some(out) = &args.output {
        std::fs::write(out, &packed.gzip)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    write_stdout(&format!("{}\n", packed.json(args.location)))
}
