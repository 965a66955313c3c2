//! `acr dump`

use super::{Cli, CliError};
use crate::world::{compile_file, dump::dump};

pub fn run(cli: &Cli) -> Result<(), CliError> {
    let path = cli.runmd_path()?;
    if !path.exists() {
        return Err(super::mirror::missing(cli, &path));
    }
    let pipeline = compile_file(&path)?;
    super::write_stdout(&dump(&pipeline))
}
