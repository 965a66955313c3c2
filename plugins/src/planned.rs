//! The registry plugins that later work builds. Each is listed with the input and modifiers it
//! will take, so pipelines that name them compile and `dump` shows them today; running one is an
//! error that names it (see `catalogue::run`).

use crate::catalogue::{symbol_modifier, Input, InputError, ModifierSpec, PluginSpec};
use crate::value::Value;

const fn planned(
    name: &'static str,
    summary: &'static str,
    input: Input,
    modifiers: &'static [ModifierSpec],
    issue: &'static str,
) -> PluginSpec {
    PluginSpec {
        name,
        summary,
        input,
        modifiers,
        check: None,
        run: None,
        planned: Some(issue),
    }
}

pub const LOGIN_ACR: PluginSpec = planned(
    "login-acr",
    "log in to an Azure Container Registry with `az` and keep its refresh token",
    Input::Required("the registry name"),
    &[],
    "Azure Container Registry support",
);

pub const LOGIN: PluginSpec = planned(
    "login",
    "find credentials for the upstream",
    Input::Optional,
    &[],
    "the pull-through mirror",
);

pub const AUTHN: PluginSpec = planned(
    "authn",
    "answer the upstream's auth challenge and cache the token",
    Input::Optional,
    &[],
    "the pull-through mirror",
);

pub const MIRROR: PluginSpec = planned(
    "mirror",
    "serve the proxy routes and write containerd's hosts.toml for HOST",
    Input::Required("the registry host this mirror stands in for"),
    &[
        ModifierSpec {
            name: "host",
            usage: ".host ADDR, resolve, pull",
            parse: parse_host,
        },
        ModifierSpec {
            name: "server",
            usage: ".server https://registry.example",
            parse: symbol_modifier,
        },
        ModifierSpec {
            name: "https",
            usage: ".https /path/to/ca.pem",
            parse: symbol_modifier,
        },
    ],
    "the pull-through mirror",
);

pub const RESOLVE: PluginSpec = planned(
    "resolve",
    "fetch a manifest from the upstream",
    Input::Optional,
    &[],
    "the pull-through mirror",
);

pub const DISCOVER: PluginSpec = planned(
    "discover",
    "find referrers of the resolved manifest by artifact type",
    Input::Optional,
    &[],
    "Azure Container Registry support",
);

pub const TELEPORT: PluginSpec = planned(
    "teleport",
    "swap a manifest for its streamable twin",
    Input::Optional,
    &[
        ModifierSpec {
            name: "from",
            usage: ".from sha256:...",
            parse: symbol_modifier,
        },
        ModifierSpec {
            name: "to",
            usage: ".to sha256:...",
            parse: symbol_modifier,
        },
    ],
    "Azure Container Registry support",
);

pub const PULL: PluginSpec = planned(
    "pull",
    "fetch a blob from the upstream through the store",
    Input::Optional,
    &[],
    "the pull-through mirror",
);

pub const INJECT_LAYER: PluginSpec = planned(
    "inject-layer",
    "append a layer and rewrite the config of the image being pulled",
    Input::Required("a directory, .tar.gz file, data: or https: location"),
    &[
        ModifierSpec {
            name: "entrypoint",
            usage: ".entrypoint /bin/sh -c ...",
            parse: symbol_modifier,
        },
        ModifierSpec {
            name: "cmd",
            usage: ".cmd ...",
            parse: symbol_modifier,
        },
        ModifierSpec {
            name: "env",
            usage: ".env KEY=VALUE",
            parse: symbol_modifier,
        },
        ModifierSpec {
            name: "working-dir",
            usage: ".working-dir /dir",
            parse: symbol_modifier,
        },
    ],
    "layer injection",
);

const CAPABILITIES: &[&str] = &["resolve", "pull", "push"];

/// `.host ADDR, caps...`: the address containerd reaches the mirror at, and what it may do
/// there (containerd's capabilities: resolve, pull, push).
fn parse_host(_: &str, _: Option<&str>, value: &str) -> Result<Vec<(String, Value)>, InputError> {
    let mut parts = value.split(',').map(str::trim);
    let addr = parts.next().filter(|a| !a.is_empty()).ok_or_else(|| {
        InputError::new("`.host` needs an address")
            .hint("write `.host localhost:8578, resolve, pull`")
    })?;
    let mut out = vec![("host".to_string(), Value::Symbol(addr.to_string()))];
    for cap in parts {
        if !CAPABILITIES.contains(&cap) {
            return Err(InputError::new(format!("unknown capability `{cap}`"))
                .hint("containerd's capabilities are resolve, pull and push"));
        }
        out.push(("capability".to_string(), Value::Symbol(cap.to_string())));
    }
    Ok(out)
}
