//! The catalogue: every plugin acr knows, by the name it has in runmd.
//!
//! The runtime knows plugins only through this table and what each one declares of itself
//! (see [`crate::plugin`]). A plugin that a later release will build is already listed (so a
//! pipeline that names it compiles and `dump` shows it) with no run function; running it fails
//! with an error that names it, never a silent no-op.

use crate::plugin::PluginSpec;

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
    crate::verify::SPEC,
];
