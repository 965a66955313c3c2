//! The plugin API: what a plugin declares about itself ([`PluginSpec`], built with
//! [`PluginSpec::new`] and its `const` setters), the capability flags the runtime and the
//! compiler read ([`Caps`]), what a call sees ([`Invocation`]), and the one place that runs a
//! call ([`run`]).
//!
//! A plugin is one file that imports this module and exports a `SPEC`; `catalogue.rs` lists
//! the specs. A plugin's run function is an ordinary `async fn`, turned into a [`RunFn`] by
//! [`run_fn!`](crate::plugin::run_fn):
//!
//! ```ignore
//! pub const SPEC: PluginSpec = PluginSpec::new("println", "print the input")
//!     .run(run_fn!(run));
//!
//! async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> { ... }
//! ```

use crate::call::PluginError;
use crate::context::Context;
use crate::registry::Resource;
use crate::value::Value;

pub use crate::call::{Invocation, RunFuture};

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
pub type ModifierParse = fn(modifier: &str, name: Option<&str>, value: &str) -> ModifierProps;

/// What a modifier's parse gives: the properties it adds, or why its value is wrong.
pub type ModifierProps = Result<Vec<(String, Value)>, InputError>;

/// A modifier: a line that attaches to the plugin call before it (`.host` after `.mirror`).
#[derive(Debug, Clone, Copy)]
pub struct ModifierSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub parse: ModifierParse,
}

/// A compile-time check of a call's input.
pub type InputCheck = fn(&str) -> Result<(), InputError>;

pub type RunFn = for<'a> fn(&'a Invocation, &'a mut Context) -> RunFuture<'a>;

/// Turns `async fn NAME(call: &Invocation, cx: &mut Context) -> Result<(), PluginError>` into a
/// [`RunFn`], for [`PluginSpec::run`].
macro_rules! run_fn {
    ($f:path) => {{
        fn boxed<'a>(
            call: &'a $crate::plugin::Invocation,
            cx: &'a mut $crate::context::Context,
        ) -> $crate::plugin::RunFuture<'a> {
            Box::pin($f(call, cx))
        }
        boxed as $crate::plugin::RunFn
    }};
}
pub(crate) use run_fn;

/// What a plugin is and needs, as far as the runtime and the compiler care. Everything is off
/// by default ([`Caps::NONE`]); a plugin turns on what is true of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// It serves a client's request (it reads the proxy route's request, upstream or reply),
    /// so it belongs under `+ .proxy`, never in a `+ .runtime` an engine runs.
    pub proxy_route: bool,
    /// The routes it works in (`None`: any route).
    pub resources: Option<&'static [Resource]>,
    /// It may answer the request (sets the route's reply): `.resolve`, `.pull`, `.teleport`.
    pub answers: bool,
    /// It declares what the answering call applies, so it comes before every call that
    /// `answers` in its route: `.inject-layer`.
    pub before_answer: bool,
    /// It sends the client's own credentials to the upstream (`.forward-auth`): the server
    /// forwards the `/v2/` ping, and acr's own credentials must not be in the same route.
    pub forwards_client_auth: bool,
    /// It finds acr's own credentials for the upstream (`.login`): the `/auth` endpoint runs
    /// these calls of the manifests route to test a login.
    pub upstream_login: bool,
    /// It writes containerd's `hosts.toml` for the hosts in its input (`.mirror`): those hosts
    /// are the proxy's mirror hosts.
    pub writes_hosts_toml: bool,
    /// It keeps what it makes in the proxy's store, so the proxy needs one (not `: .cache off`).
    pub needs_store: bool,
}

impl Caps {
    pub const NONE: Caps = Caps {
        proxy_route: false,
        resources: None,
        answers: false,
        before_answer: false,
        forwards_client_auth: false,
        upstream_login: false,
        writes_hosts_toml: false,
        needs_store: false,
    };

    /// A plugin of proxy routes, any route.
    pub const ROUTE: Caps = Caps {
        proxy_route: true,
        ..Caps::NONE
    };

    /// A plugin of the proxy routes of `resources` only.
    pub const fn route_of(resources: &'static [Resource]) -> Caps {
        Caps {
            proxy_route: true,
            resources: Some(resources),
            ..Caps::NONE
        }
    }

    /// Whether it works in the route of `resource`.
    pub fn works_in(&self, resource: Resource) -> bool {
        self.resources.is_none_or(|r| r.contains(&resource))
    }
}

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
    pub caps: Caps,
}

impl PluginSpec {
    /// A plugin with optional input, no modifiers, no check, no capability, and nothing to run
    /// (planned by "a later release") until [`run`](Self::run) is set.
    pub const fn new(name: &'static str, summary: &'static str) -> Self {
        Self {
            name,
            summary,
            input: Input::Optional,
            modifiers: &[],
            check: None,
            run: None,
            planned: None,
            caps: Caps::NONE,
        }
    }

    /// The call needs text after the name: `what` says what, for the error message.
    pub const fn input(mut self, what: &'static str) -> Self {
        self.input = Input::Required(what);
        self
    }

    pub const fn modifiers(mut self, modifiers: &'static [ModifierSpec]) -> Self {
        self.modifiers = modifiers;
        self
    }

    pub const fn check(mut self, check: InputCheck) -> Self {
        self.check = Some(check);
        self
    }

    pub const fn run(mut self, run: RunFn) -> Self {
        self.run = Some(run);
        self
    }

    pub const fn caps(mut self, caps: Caps) -> Self {
        self.caps = caps;
        self
    }

    pub fn modifier(&self, name: &str) -> Option<&'static ModifierSpec> {
        self.modifiers.iter().find(|m| m.name == name)
    }
}

/// Runs one call of `spec`, the one place a plugin is called: a planned plugin is an error
/// naming it, a call in a route its plugin does not work in is refused (the compiler refuses
/// such a file; this guards the rest), and each call that succeeds counts in `cx.calls_run`.
pub async fn run(
    spec: &PluginSpec,
    call: &Invocation,
    cx: &mut Context,
) -> Result<(), PluginError> {
    let Some(run) = spec.run else {
        return Err(PluginError::NotBuilt {
            plugin: spec.name,
            id: call.id,
            planned: spec.planned.unwrap_or("a later release"),
        });
    };
    if let Some(req) = &cx.request {
        if !spec.caps.works_in(req.resource) {
            return Err(PluginError::failed(
                call,
                format!(
                    "`.{}` does not work in the `.{}` route",
                    spec.name,
                    req.resource.name()
                ),
            ));
        }
    }
    run(call, cx).await?;
    cx.calls_run += 1;
    Ok(())
}

/// A modifier whose value is kept as one symbol under the modifier's own name.
pub fn symbol_modifier(modifier: &str, _name: Option<&str>, value: &str) -> ModifierProps {
    if value.is_empty() {
        return Err(InputError::new(format!("`.{modifier}` needs a value")));
    }
    Ok(symbol_prop(modifier, value))
}

/// What a modifier that keeps its value as one symbol returns: the property `modifier`.
pub fn symbol_prop(modifier: &str, value: impl Into<String>) -> Vec<(String, Value)> {
    vec![(modifier.to_string(), Value::Symbol(value.into()))]
}
