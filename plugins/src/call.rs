//! What one plugin call is, for the plugin API ([`crate::plugin`]) and the context it runs
//! over ([`crate::context`]) alike: its [`Invocation`] and the future that runs it.

use std::future::Future;
use std::pin::Pin;

use crate::value::Props;
use crate::PluginError;

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
