//! `.authn`: answers the upstream's auth challenge (Bearer token or Basic) for this request's
//! repository, with the credentials `.login` found (or anonymously). Tokens are cached per
//! upstream, scope and user until they expire; a 401 later in the route renews once.

use crate::catalogue::{Input, Invocation, PluginSpec, RunFuture};
use crate::registry::client;
use crate::Context;

pub const SPEC: PluginSpec = PluginSpec {
    name: "authn",
    summary: "authenticate to the upstream (Bearer token or Basic), tokens cached",
    input: Input::Optional,
    modifiers: &[],
    check: None,
    run: Some(run),
    planned: None,
};

fn run<'a>(call: &'a Invocation, cx: &'a mut Context) -> RunFuture<'a> {
    Box::pin(async move {
        cx.route(call)?;
        client::authenticate(cx).await?;
        cx.calls_run += 1;
        Ok(())
    })
}
