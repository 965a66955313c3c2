//! `.authn`: answers the upstream's auth challenge (Bearer token or Basic) for this request's
//! repository, with the credentials `.login` found (or anonymously). Tokens are cached per
//! upstream, scope and user until they expire; a 401 later in the route renews once.

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{run_fn, Caps, Invocation, PluginSpec};
use crate::registry::client;

pub const SPEC: PluginSpec = PluginSpec::new(
    "authn",
    "authenticate to the upstream (Bearer token or Basic), tokens cached",
)
.caps(Caps::ROUTE)
.run(run_fn!(run));

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    cx.route(call)?;
    client::authenticate(cx).await?;
    Ok(())
}
