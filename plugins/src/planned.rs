//! The registry plugins that later work builds. Each is listed with the input and modifiers it
//! will take, so pipelines that name them compile and `dump` shows them today; running one is an
//! error that names it (see `catalogue::run`).

use crate::catalogue::{symbol_modifier, Input, ModifierSpec, PluginSpec};

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
