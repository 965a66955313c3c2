//! `.println TEXT`: writes TEXT and a newline to standard output.

use std::io::Write;

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{run_fn, Invocation, PluginSpec};

pub const SPEC: PluginSpec =
    PluginSpec::new("println", "print the input on standard output").run(run_fn!(run));

async fn run(call: &Invocation, _cx: &mut Context) -> Result<(), PluginError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", call.input)
        .and_then(|_| out.flush())
        .map_err(|e| PluginError::failed(call, format!("cannot write to stdout: {e}")))?;
    Ok(())
}
