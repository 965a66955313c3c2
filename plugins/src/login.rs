//! `.login [FILE]`: finds credentials for the request's upstream.
//!
//! FILE (relative to the block's `work_dir`, else the pipeline's directory; or the control
//! value `file_src`) holds `user:password` or a bare token. Without it, or when it is missing,
//! the other sources are tried in order: docker's `config.json` (`credHelpers`, `auths`,
//! `credsStore`), the containers `auth.json`, `docker-credential-*` helpers, and the
//! environment (`ACR_AUTH_<HOST>=user:password`, `ACR_UPSTREAM_USERNAME`/`_PASSWORD`).
//! No credentials is not an error: the pull goes on anonymously.
//!
//! FILE and `ACR_UPSTREAM_*` name no host, so they count only for an upstream the pipeline
//! names itself (`.mirror`, `.endpoint`, an exact `.allow`); an upstream a client chose with
//! `?ns=` through an `.allow` glob gets only credentials kept for its own host.

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{run_fn, Caps, Invocation, PluginSpec};
use crate::registry::credentials::LoginQuery;

pub const SPEC: PluginSpec = PluginSpec::new(
    "login",
    "find credentials for the upstream (file, config.json, helper, environment)",
)
.caps(Caps {
    upstream_login: true,
    ..Caps::ROUTE
})
.run(run_fn!(run));

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let (_, shared, upstream) = cx.route(call)?;
    let input = call.input.trim();
    let file = if !input.is_empty() {
        Some(cx.work_dir().join(input))
    } else {
        cx.dir("file_src")
    };
    let query = LoginQuery {
        host: upstream.host().to_string(),
        ns: upstream.ns.clone(),
        file,
        named_by_pipeline: upstream.named_by_pipeline,
    };
    cx.credentials = shared.credentials.find(&query).await?;
    match &cx.credentials {
        Some(c) => {
            tracing::debug!(upstream = %upstream.ns, user = %c.username, source = %c.source, "credentials found")
        }
        None if !upstream.named_by_pipeline => {
            tracing::debug!(upstream = %upstream.ns, "an upstream chosen through an `.allow` glob: only credentials kept for its own host apply, and there are none")
        }
        None => {}
    }
    Ok(())
}
