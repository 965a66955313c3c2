//! `.process PROGRAM [ARGS]`: runs a program and waits for it.
//!
//! Modifiers, in the order written: `.arg VALUE` adds one argument (spaces kept), `.flag A B`
//! adds each word as an argument, `.env KEY=VALUE` (or `: KEY .env VALUE`) sets a variable.
//! The control value `current_dir` sets the working directory. Output goes straight to acr's
//! own stdout and stderr; a non-zero exit fails the call.

use std::process::Stdio;

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{
    run_fn, symbol_modifier, InputError, Invocation, ModifierProps, ModifierSpec, PluginSpec,
};
use crate::value::Value;

pub const SPEC: PluginSpec = PluginSpec::new(
    "process",
    "run a program with arguments, flags and environment",
)
.input("the program to run")
.modifiers(&[
    ModifierSpec {
        name: "arg",
        usage: ".arg VALUE",
        parse: symbol_modifier,
    },
    ModifierSpec {
        name: "flag",
        usage: ".flag --name value",
        parse: symbol_modifier,
    },
    ModifierSpec {
        name: "env",
        usage: ".env KEY=VALUE  or  NAME .env VALUE",
        parse: parse_env,
    },
])
.run(run_fn!(run));

fn parse_env(_: &str, name: Option<&str>, value: &str) -> ModifierProps {
    let (key, val) = match name {
        Some(name) => (name.to_string(), value.to_string()),
        None => match value.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => (k.trim().to_string(), v.to_string()),
            _ => {
                return Err(InputError::new(format!("`{value}` is not KEY=VALUE"))
                    .hint("write `: .env KEY=VALUE` or `: KEY .env VALUE`"))
            }
        },
    };
    if key.contains('=') || key.contains('\0') {
        return Err(InputError::new(format!(
            "`{key}` is not a valid variable name"
        )));
    }
    Ok(vec![(
        "env".to_string(),
        Value::Symbol(format!("{key}={val}")),
    )])
}

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let mut words = call.input.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| PluginError::failed(call, "no program to run"))?;
    let mut command = tokio::process::Command::new(program);
    command.args(words);
    for (name, value) in call.props.iter() {
        let Some(text) = value.as_str() else { continue };
        match name {
            "arg" => {
                command.arg(text);
            }
            "flag" => {
                command.args(text.split_whitespace());
            }
            "env" => {
                if let Some((k, v)) = text.split_once('=') {
                    command.env(k, v);
                }
            }
            _ => {}
        }
    }
    let dir = cx.dir("current_dir").unwrap_or_else(|| cx.base_dir.clone());
    if !dir.is_dir() {
        return Err(PluginError::failed(
            call,
            format!("current_dir `{}` does not exist", dir.display()),
        ));
    }
    command.current_dir(dir);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let status = command
        .status()
        .await
        .map_err(|e| PluginError::failed(call, format!("cannot start `{program}`: {e}")))?;
    cx.values
        .set("exit_code", Value::Int(status.code().unwrap_or(-1) as i64));
    if !status.success() {
        return Err(PluginError::failed(
            call,
            format!("`{program}` exited with {status}"),
        ));
    }
    Ok(())
}
