//! What one plugin call is, for the plugin API ([`crate::plugin`]) and the context it runs
//! over ([`crate::context`]) alike: its [`Invocation`], the future that runs it and how it
//! fails ([`PluginError`]).

use std::future::Future;
use std::pin::Pin;

use crate::oci::RegistryError;
use crate::value::Props;

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

/// What running a call (or serving a proxy, see [`crate::Host`]) returns.
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PluginError>> + Send + 'a>>;

/// Why a plugin call failed at run time.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin '.{plugin}' (call {id}) is not built yet: planned with {planned}")]
    NotBuilt {
        plugin: &'static str,
        id: u32,
        planned: &'static str,
    },
    /// A request failed in a way the client is told about with an OCI error.
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("'.{plugin}' (call {id}): {message}")]
    Failed {
        plugin: &'static str,
        id: u32,
        message: String,
    },
}

impl PluginError {
    pub fn failed(call: &Invocation, message: impl Into<String>) -> Self {
        PluginError::Failed {
            plugin: call.plugin,
            id: call.id,
            message: message.into(),
        }
    }
}
