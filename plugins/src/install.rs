//! `.install FILE`: copies `{src_dir}/FILE` to `{work_dir}/FILE`, creating `work_dir`.

use std::path::{Component, Path};

use crate::catalogue::{Input, InputError, Invocation, PluginSpec, RunFuture};
use crate::{Context, PluginError};

pub const SPEC: PluginSpec = PluginSpec {
    name: "install",
    summary: "copy a file from the block's src_dir to its work_dir",
    input: Input::Required("a file name relative to src_dir"),
    modifiers: &[],
    check: Some(check),
    run: Some(run),
    planned: None,
};

fn check(input: &str) -> Result<(), InputError> {
    let path = Path::new(input.trim());
    if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(
            InputError::new(format!("`{input}` must stay inside src_dir"))
                .hint("name a file relative to src_dir, without `..`"),
        );
    }
    Ok(())
}

fn run<'a>(call: &'a Invocation, cx: &'a mut Context) -> RunFuture<'a> {
    Box::pin(async move {
        let file = call.input.trim();
        let src_dir = cx.dir("src_dir").unwrap_or_else(|| cx.base_dir.clone());
        let work_dir = cx.dir("work_dir").ok_or_else(|| {
            PluginError::failed(
                call,
                "no work_dir: add `: work_dir .symbol DIR` to the block",
            )
        })?;
        let from = src_dir.join(file);
        let to = work_dir.join(file);
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                PluginError::failed(call, format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        tokio::fs::copy(&from, &to).await.map_err(|e| {
            PluginError::failed(
                call,
                format!("cannot copy {} to {}: {e}", from.display(), to.display()),
            )
        })?;
        cx.values
            .set("installed", crate::Value::Symbol(to.display().to_string()));
        cx.calls_run += 1;
        Ok(())
    })
}
