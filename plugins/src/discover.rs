//! `.discover ARTIFACT_TYPE`: finds the referrers of the manifest `.resolve` found, of that
//! artifact type, for later calls (`.teleport`).
//!
//! The referrers API first; when the upstream answers 404 (CNCF distribution 2.x has no API),
//! the tag schema `sha256-<hex>`. A request by digest is skipped (its referrers are what the
//! referrers route answers), and so is a failed lookup: discovery never fails a pull.

use crate::call::PluginError;
use crate::context::Context;
use crate::oci::Reference;
use crate::plugin::{run_fn, Caps, Invocation, PluginSpec};
use crate::registry::{referrers, Resource};

pub const SPEC: PluginSpec = PluginSpec::new(
    "discover",
    "find referrers of the resolved manifest by artifact type (API, else the sha256- tag)",
)
.caps(Caps::route_of(&[Resource::Manifests]))
.run(run_fn!(run));

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let (req, _, _) = cx.route(call)?;
    let artifact_type = call.input.trim();
    if artifact_type.is_empty()
        || !matches!(Reference::parse(&req.reference), Ok(Reference::Tag(_)))
    {
        return Ok(());
    }
    let digest = crate::manifests::resolved_digest(cx, call)?;
    let found = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        referrers::lookup(cx, &req.name, &digest, Some(artifact_type)),
    )
    .await;
    match found {
        Ok(Ok(r)) => {
            tracing::debug!(name = %req.name, digest = %digest, artifact_type, source = r.source, n = r.descriptors.len(), "discovered");
            cx.slots.insert(r);
        }
        Ok(Err(e)) => {
            tracing::warn!(name = %req.name, digest = %digest, "referrers lookup failed: {}", e.message)
        }
        Err(_) => {
            tracing::warn!(name = %req.name, digest = %digest, "referrers lookup did not finish in 10 s")
        }
    }
    Ok(())
}
