//! The call runner: runs a chain of plugin calls over one context, in order. The engine runs an
//! event's calls with it, the server a route's calls (and `/auth` the manifests route's logins).

use acr_plugins::{plugin, Context, PluginError};

use crate::world::CallPlan;

/// Runs `calls` in order over `cx`, each with its block's control values as `cx.vars`, and
/// stops at the first error. `before` is told of each call as it starts (the engine logs it).
/// Returns how many calls ran to completion.
pub async fn run_calls(
    calls: &[CallPlan],
    cx: &mut Context,
    mut before: impl FnMut(&CallPlan),
) -> Result<u64, PluginError> {
    let mut done = 0;
    for call in calls {
        before(call);
        cx.vars = (*call.control).clone();
        plugin::run(call.spec, &call.invocation, cx).await?;
        done += 1;
    }
    Ok(done)
}
