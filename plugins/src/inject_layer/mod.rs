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
//! The pieces: `apply` (the rewrite of a request's manifest, and what it keeps), `layer`
//! (sources and deterministic packing), `layer_store` (putting the layers in the store),
//! `rewrite` (pure JSON over bytes), `token` and `token_request` (`/container-token`:
//! injections asked for by clients); the injection itself is [`crate::injection`], platforms
//! are [`crate::oci::Platform`].

pub mod apply;
pub mod layer;
pub mod layer_store;
pub mod rewrite;
pub mod token;
pub mod token_request;

use std::sync::Arc;

use crate::call::PluginError;
use crate::context::Context;
use crate::injection::{describe, remember, ConfigEdits, Content, Injection, Layer};
use crate::oci::{Digest, Platform};
use crate::plugin::{run_fn, symbol_prop, Caps, InputError, Invocation, ModifierSpec, PluginSpec};
use crate::registry::Resource;
use crate::value::Value;

pub const SPEC: PluginSpec = PluginSpec::new(
    "inject-layer",
    "append a layer and rewrite the config of every image pulled (apply with `.resolve`)",
)
.input("a directory, a .tar.gz file, or a data: or https:// location")
.modifiers(&[
    ModifierSpec {
        name: "entrypoint",
        usage: ".entrypoint /opt/tool/entry.sh  (or a JSON list)",
        parse: words_modifier,
    },
    ModifierSpec {
        name: "cmd",
        usage: ".cmd ARG...  (or a JSON list)",
        parse: words_modifier,
    },
    ModifierSpec {
        name: "env",
        usage: ".env KEY=VALUE",
        parse: env_modifier,
    },
    ModifierSpec {
        name: "working-dir",
        usage: ".working-dir /dir",
        parse: crate::plugin::symbol_modifier,
    },
    ModifierSpec {
        name: "platform",
        usage: ".platform linux/arm64",
        parse: platform_modifier,
    },
    ModifierSpec {
        name: "digest",
        usage: ".digest sha256:...  (of the .tar.gz)",
        parse: digest_modifier,
    },
    ModifierSpec {
        name: "diff-id",
        usage: ".diff-id sha256:...  (of the uncompressed tar)",
        parse: digest_modifier,
    },
])
.check(check)
.run(run_fn!(run))
.caps(Caps {
    before_answer: true,
    needs_store: true,
    ..Caps::route_of(&[Resource::Manifests])
});

/// Reads the source when the file is compiled: a directory is packed, a file or `data:` is
/// read, so a bad source is a diagnostic and the digests are fixed from then on.
fn check(input: &str) -> Result<(), InputError> {
    let base = std::env::current_dir().unwrap_or_default();
    layer::load_source(input, &base)
        .map(|_| ())
        .map_err(|e| InputError::new(e).hint("a layer is a directory, a .tar.gz file, data:BASE64 or an https:// URL with `.digest` and `.diff-id`"))
}

fn words_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    words(value).map_err(InputError::new)?;
    Ok(symbol_prop(modifier, value))
}

/// `a b c` or `["a", "b c"]`.
pub fn words(value: &str) -> Result<Vec<String>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("needs a value".into());
    }
    if v.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(v)
            .map_err(|e| format!("`{v}` is not a JSON list of strings: {e}"));
    }
    Ok(v.split_whitespace().map(String::from).collect())
}

fn env_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    let v = value.trim();
    match v.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok(symbol_prop(modifier, v))
        }
        _ => Err(InputError::new(format!("`{v}` is not KEY=VALUE")).hint("write `.env KEY=VALUE`")),
    }
}

fn platform_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    Platform::parse(value).map_err(InputError::new)?;
    Ok(symbol_prop(modifier, value.trim()))
}

fn digest_modifier(
    modifier: &str,
    _name: Option<&str>,
    value: &str,
) -> Result<Vec<(String, Value)>, InputError> {
    Digest::parse(value.trim()).map_err(|e| InputError::new(format!("`{value}`: {e}")))?;
    Ok(symbol_prop(modifier, value.trim()))
}

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
        mine.edits.entrypoint = Some(words(v).map_err(|e| PluginError::failed(call, e))?);
    }
    if let Some(v) = props.get_str("cmd") {
        mine.edits.cmd = Some(words(v).map_err(|e| PluginError::failed(call, e))?);
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

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn words_are_a_json_list_or_split_on_spaces() {
        assert_eq!(words(r#"["/bin/sh", "-c"]"#).unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(words("/bin/sh -c").unwrap(), ["/bin/sh", "-c"]);
        assert!(words("[1]").is_err());
    }
}
