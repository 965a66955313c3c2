//! `.login [FILE]`: finds credentials for the request's upstream.
//!
//! FILE (relative to the block's `work_dir`, else the pipeline's directory; or the control
//! value `file_src`) holds `user:password` or a bare token. Without it, or when it is missing,
//! the other sources are tried in order: docker's `config.json` (`credHelpers`, `auths`,
//! `credsStore`), the containers `auth.json`, `docker-credential-*` helpers, and the
//! environment (`ACR_AUTH_<HOST>=user:password`, `ACR_UPSTREAM_USERNAME`/`_PASSWORD`).
//! No credentials is not an error: the pull goes on anonymously.

use crate::catalogue::{Input, Invocation, PluginSpec, RunFuture};
use crate::registry::credentials::LoginQuery;
use crate::Context;

pub const SPEC: PluginSpec = PluginSpec {
    name: "login",
    summary: "find credentials for the upstream (file, config.json, helper, environment)",
    input: Input::Optional,
    modifiers: &[],
    check: None,
    run: Some(run),
    planned: None,
};

fn run<'a>(call: &'a Invocation, cx: &'a mut Context) -> RunFuture<'a> {
    Box::pin(async move {
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
        };
        cx.credentials = shared.credentials.find(&query).await?;
        if let Some(c) = &cx.credentials {
            tracing::debug!(upstream = %upstream.ns, user = %c.username, source = %c.source, "credentials found");
        }
        cx.calls_run += 1;
        Ok(())
    })
}
