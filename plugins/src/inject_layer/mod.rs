//! `.inject-layer SOURCE`: appends a layer (and config changes) to every image pulled through
//! the route, with digests a strict client accepts.
//!
//! A call declares; `.resolve` applies. Each `.inject-layer` in a manifests route adds its
//! layer and its `.entrypoint/.cmd/.env/.working-dir` to the request's injection; when
//! `.resolve` has the upstream's manifest for a tag, it hands it to [`apply::apply`], which rewrites
//! the manifest (or every platform of an index), keeps the new manifests and configs and the
//! layers in the store, and answers with the new bytes. `.pull` then serves the new config and
//! the layers from the store like any cached blob.
//!
//! A request by digest is never rewritten: a digest names fixed content, so an upstream digest
//! gets the upstream's bytes and a rewritten digest the rewritten bytes (from the store).
//!
//! The pieces: `modifiers` (what a call may say), `apply` (the rewrite of a request's
//! manifest, and what it keeps), `layer` (sources and deterministic packing), `layer_store`
//! (putting the layers in the store), `rewrite` (pure JSON over bytes), `token` and
//! `token_request` (`/container-token`: injections asked for by clients); the injection
//! itself is [`crate::injection`], platforms are [`crate::oci::Platform`].

pub mod apply;
pub mod layer;
pub mod layer_store;
pub mod modifiers;
pub mod rewrite;
pub mod token;
pub mod token_request;

use std::sync::Arc;

use crate::call::PluginError;
use crate::context::Context;
use crate::injection::{describe, remember, ConfigEdits, Content, Injection, Layer};
use crate::oci::{Digest, Platform};
use crate::plugin::{run_fn, Caps, Invocation, PluginSpec};
use crate::registry::Resource;
use crate::value::Value;

pub const SPEC: PluginSpec = PluginSpec::new(
    "inject-layer",
    "append a layer and rewrite the config of every image pulled (apply with `.resolve`)",
)
.input("a directory, a .tar.gz file, or a data: or https:// location")
.modifiers(modifiers::MODIFIERS)
.check(modifiers::check)
.run(run_fn!(run))
.caps(Caps {
    before_answer: true,
    needs_store: true,
    ..Caps::route_of(&[Resource::Manifests])
});

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    cx.route(call)?;
    let layer = layer_of_call(call, cx)?;
    remember(&layer);
    let mut mine = Injection {
        layers: vec![layer],
        edits: ConfigEdits::default(),
    };
    let props = &call.props;
    if let Some(v) = props.get_str("entrypoint") {
        mine.edits.entrypoint =
            Some(modifiers::words(v).map_err(|e| PluginError::failed(call, e))?);
    }
    if let Some(v) = props.get_str("cmd") {
        mine.edits.cmd = Some(modifiers::words(v).map_err(|e| PluginError::failed(call, e))?);
    }
    if let Some(v) = props.get_str("working-dir") {
        mine.edits.working_dir = Some(v.to_string());
    }
    mine.edits.env = props
        .all("env")
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    cx.slots.update(|all: &mut Injection| all.merge(&mine));
    Ok(())
}

/// The layer of a call: its source as compiled, with the call's platform and declared digests.
fn layer_of_call(call: &Invocation, cx: &Context) -> Result<Arc<Layer>, PluginError> {
    let source = layer::compiled_source(&call.input, &cx.base_dir)
        .map_err(|e| PluginError::failed(call, e))?;
    let declared = |name: &str| -> Result<Option<Digest>, PluginError> {
        call.props
            .get_str(name)
            .map(|d| {
                Digest::parse(d).map_err(|e| PluginError::failed(call, format!("`.{name}`: {e}")))
            })
            .transpose()
    };
    let gzip_declared = declared("digest")?;
    let tar_declared = declared("diff-id")?;
    let (gzip_digest, tar_digest) = match &source.content {
        Content::Remote(url) => match (gzip_declared, tar_declared) {
            (Some(g), Some(t)) => (g, t),
            _ => {
                return Err(PluginError::failed(
                    call,
                    format!("the layer at {url} needs its digests declared: add `.digest sha256:...` (of the .tar.gz) and `.diff-id sha256:...` (of the tar); `acr layer pack` prints both"),
                ))
            }
        },
        _ => {
            let tar = source.tar_digest.clone().unwrap_or_else(|| Digest::of(b""));
            for (what, want, got) in [
                ("digest", &gzip_declared, &source.gzip_digest),
                ("diff-id", &tar_declared, &tar),
            ] {
                if let Some(want) = want {
                    if want != got {
                        return Err(PluginError::failed(
                            call,
                            format!("the layer {} has {what} {got}, not the declared {want}", describe(&call.input, &source.gzip_digest)),
                        ));
                    }
                }
            }
            (source.gzip_digest.clone(), tar)
        }
    };
    let platform = match call.props.get_str("platform") {
        Some(p) => Some(Platform::parse(p).map_err(|e| PluginError::failed(call, e))?),
        None => layer::platform_from_name(&call.input),
    };
    Ok(Arc::new(Layer {
        source: call.input.clone(),
        gzip_digest,
        gzip_size: source.gzip_size,
        tar_digest,
        platform,
        content: source.content.clone(),
    }))
}
