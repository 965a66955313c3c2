//! `.println TEXT`: writes TEXT and a newline to standard output.

use std::io::Write;

use crate::catalogue::{Input, Invocation, PluginSpec, RunFuture};
use crate::{Context, PluginError};

pub const SPEC: PluginSpec = PluginSpec {
    name: "println",
    summary: "print the input on standard output",
    input: Input::Optional,
    modifiers: &[],
    check: None,
    run: Some(run),
    planned: None,
};

fn run<'a>(call: &'a Invocation, cx: &'a mut Context) -> RunFuture<'a> {
    Box::pin(async move {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", call.input)
            .and_then(|_| out.flush())
            .map_err(|e| PluginError::failed(call, format!("cannot write to stdout: {e}")))?;
        cx.calls_run += 1;
        Ok(())
    })
}
