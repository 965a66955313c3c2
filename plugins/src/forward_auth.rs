//! `.forward-auth`: sends the client's own `Authorization` to the upstream, for registries
//! where each client has its own credentials (acr then neither logs in nor caches tokens for
//! them). Put it instead of `.login` and `.authn`. When the upstream refuses, the client gets
//! the upstream's challenge, so it can fetch its own token.
//!
//! Never the other way: acr's upstream credentials are never sent to a client, and without
//! this call a client's credentials never leave acr. A proxy that authenticates clients
//! itself (`: .users`) never forwards them: those credentials are acr's.

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{run_fn, Caps, Invocation, PluginSpec};

pub const SPEC: PluginSpec = PluginSpec::new(
    "forward-auth",
    "send the client's own Authorization to the upstream",
)
.caps(Caps {
    forwards_client_auth: true,
    ..Caps::ROUTE
})
.run(run_fn!(run));

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let (req, _, _) = cx.route(call)?;
    cx.forward_auth = true;
    cx.authorization = req.authorization.map(|s| s.0);
    Ok(())
}
