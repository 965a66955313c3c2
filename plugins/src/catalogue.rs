//! The catalogue: every plugin acr knows, by the name it has in runmd.
//!
//! The runtime knows plugins only through this table: a name, what input it takes, the
//! modifiers that may follow a call of it, a compile-time check of its input, and the function
//! that runs it. A plugin that a later release will build is already listed (so a pipeline that
//! names it compiles and `dump` shows it) with `run: None`; running it fails with an error
//! that names it, never a silent no-op.

use std::future::Future;
use std::pin::Pin;

use crate::context::Context;
use crate::value::{Props, Value};
use crate::PluginError;

/// What a plugin does with the text after its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `: .println` alone is fine, and so is `: .println hello`.
    Optional,
    /// The call needs text after the name; the string says what, for the error message.
    Required(&'static str),
}

/// A problem with a call's input or a modifier's value, found when the file is compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub message: String,
    pub hint: Option<String>,
}

impl InputError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The properties a modifier adds to the call before it, parsed from `: [NAME] .modifier VALUE`.
pub type ModifierParse =
    fn(modifier: &str, name: Option<&str>, value: &str) -> Result<Vec<(String, Value)>, InputError>;

/// A modifier: a line that attaches to the plugin call before it (`.host` after `.mirror`).
#[derive(Debug, Clone, Copy)]
pub struct ModifierSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub parse: ModifierParse,
}

/// What a plugin sees of its call: its id, its input text and its properties (the modifiers).
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub id: u32,
    /// The block the call is written in.
    pub block: u32,
    pub plugin: &'static str,
    pub input: String,
    pub props: Props,
}

/// A compile-time check of a call's input.
pub type InputCheck = fn(&str) -> Result<(), InputError>;

pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PluginError>> + Send + 'a>>;
pub type RunFn = for<'a> fn(&'a Invocation, &'a mut Context) -> RunFuture<'a>;

/// One plugin of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct PluginSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub input: Input,
    pub modifiers: &'static [ModifierSpec],
    /// Checks the input when the file is compiled, so a bad value is a diagnostic, not a
    /// failure at run time.
    pub check: Option<InputCheck>,
    /// `None` while the plugin is planned: the issue that builds it is in `planned`.
    pub run: Option<RunFn>,
    pub planned: Option<&'static str>,
}

impl PluginSpec {
    pub fn modifier(&self, name: &str) -> Option<&'static ModifierSpec> {
        self.modifiers.iter().find(|m| m.name == name)
    }
}

/// Every plugin, in the order the README documents them.
pub fn catalogue() -> &'static [PluginSpec] {
    CATALOGUE
}

/// The plugin named `name` (without the leading dot).
pub fn lookup(name: &str) -> Option<&'static PluginSpec> {
    CATALOGUE.iter().find(|p| p.name == name)
}

static CATALOGUE: &[PluginSpec] = &[
    crate::println::SPEC,
    crate::process::SPEC,
    crate::install::SPEC,
    crate::timer::SPEC,
    crate::login_acr::SPEC,
    crate::login::SPEC,
    crate::authn::SPEC,
    crate::forward_auth::SPEC,
    crate::mirror::SPEC,
    crate::resolve::SPEC,
    crate::discover::SPEC,
    crate::teleport::SPEC,
    crate::pull::SPEC,
    crate::inject_layer::SPEC,
];

/// Runs one call of `spec`. A planned plugin is an error naming it.
pub async fn run(
    spec: &PluginSpec,
    call: &Invocation,
    cx: &mut Context,
) -> Result<(), PluginError> {
    match spec.run {
        Some(run) => run(call, cx).await,
        None => Err(PluginError::NotBuilt {
            plugin: spec.name,
            id: call.id,
            planned: spec.planned.unwrap_or("a later release"),
        }),
    }
}

/// A modifier whose value is kept as one symbol under the modifier's own name.
pub fn symbol_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    if value.is_empty() {
        return Err(InputError::new(format!("`.{modifier}` needs a value")));
    }
    Ok(vec![(
        modifier.to_string(),
        Value::Symbol(value.to_string()),
    )])
}
