//! `acr-plugins`: what each step of a runmd pipeline does.
//!
//! One file per plugin, named as in runmd (`println.rs` is `.println`), each built on the
//! plugin API in [`plugin`]. The runtime (the `acr` crate) knows them only through
//! [`catalogue`]: a name, the modifiers a call of it accepts, a compile-time check of its
//! input, its capability flags ([`Caps`]), and the function that runs it over a [`Context`].

// The harness's `tests/harness/azurite.rs`, shared with the unit tests, names this crate.
#[cfg(test)]
extern crate self as acr_plugins;

pub mod access;
pub mod call;
pub mod catalogue;
pub mod clock;
pub mod context;
pub mod injection;
pub mod manifests;
pub mod metrics;
pub mod oci;
pub mod plugin;
pub mod private_file;
pub mod registry;
pub mod store;
pub mod upstream_metrics;
pub mod value;

mod authn;
mod discover;
mod forward_auth;
pub mod inject_layer;
mod install;
mod login;
mod login_acr;
mod mirror;
mod println;
mod process;
pub mod pull;
mod resolve;
mod teleport;
mod timer;
pub mod verify;

pub use call::PluginError;
pub use catalogue::{catalogue, lookup};
pub use context::{Context, Host};
pub use oci::RegistryError;
pub use plugin::{Caps, InputError, Invocation, ModifierSpec, PluginSpec};

pub use timer::parse_duration;
pub use value::{Props, Value};
