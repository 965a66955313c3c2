//! `.teleport FORMAT`: answers a manifest resolved by tag with its streamable twin.
//!
//! `overlaybd` (any format name): among the referrers `.discover` found, the one whose
//! annotations say `streaming.format=FORMAT` and this node's `streaming.platform.os` and
//! `streaming.platform.arch` names the twin in `streaming.digest`; the reply becomes that
//! manifest. Only for a client that opted in with the header `x-ms-upgrade-if-streamable:
//! FORMAT` (containerd sends it from hosts.toml, which `.mirror ... .header` writes): a client
//! without the snapshotter could not run the twin. No match keeps the original.
//!
//! `manual` with `.from DIGEST` and `.to DIGEST`: a tag that resolves to FROM is answered
//! with TO (no header needed: the operator named the pair).
//!
//! A request by digest is never swapped: a digest names fixed content. `none` does nothing.
//! The node's platform is `ACR_PLATFORM` (`linux/arm64`) or the one acr runs on.

use crate::call::PluginError;
use crate::context::Context;
use crate::manifests::manifest_by_digest;
use crate::oci::{media, Digest, Platform, Reference};
use crate::plugin::{run_fn, symbol_modifier, Caps, Invocation, ModifierSpec, PluginSpec};
use crate::registry::{Reply, Resource};

pub const SPEC: PluginSpec = PluginSpec::new(
    "teleport",
    "swap a manifest resolved by tag for its streamable twin (or `manual` .from/.to)",
)
.modifiers(&[
    ModifierSpec {
        name: "from",
        usage: ".from sha256:...",
        parse: symbol_modifier,
    },
    ModifierSpec {
        name: "to",
        usage: ".to sha256:...",
        parse: symbol_modifier,
    },
])
.caps(Caps {
    answers: true,
    ..Caps::route_of(&[Resource::Manifests])
})
.run(run_fn!(run));

/// The header a client opts in with.
pub const OPT_IN: &str = "x-ms-upgrade-if-streamable";

/// This node's platform: `ACR_PLATFORM`, else the os and architecture acr was built for.
pub fn node_platform() -> Platform {
    if let Some(p) = std::env::var("ACR_PLATFORM")
        .ok()
        .and_then(|p| Platform::parse(&p).ok())
    {
        return p;
    }
    Platform::for_arch(std::env::consts::ARCH)
        .map(|mut p| {
            p.os = std::env::consts::OS.to_string();
            p
        })
        .unwrap_or(Platform {
            os: std::env::consts::OS.into(),
            architecture: std::env::consts::ARCH.into(),
            variant: None,
        })
}

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let (req, _, _) = cx.route(call)?;
    let format = call.input.trim();
    if format.is_empty()
        || format == "none"
        || !matches!(Reference::parse(&req.reference), Ok(Reference::Tag(_)))
    {
        return Ok(());
    }
    let resolved = crate::manifests::resolved_digest(cx, call)?;
    let target = if format == "manual" {
        let parse = |name: &str| {
            call.props
                .get_str(name)
                .map(|d| {
                    Digest::parse(d)
                        .map_err(|e| PluginError::failed(call, format!("`.{name} {d}`: {e}")))
                })
                .transpose()
        };
        match (parse("from")?, parse("to")?) {
            (Some(from), Some(to)) if from == resolved => Some((to, String::new())),
            (Some(_), Some(_)) => None,
            _ => {
                return Err(PluginError::failed(
                    call,
                    "`.teleport manual` needs `.from sha256:...` and `.to sha256:...`",
                ))
            }
        }
    } else {
        let asked = req
            .opt_in(OPT_IN)
            .is_some_and(|v| v.split(',').any(|f| f.trim().eq_ignore_ascii_case(format)));
        if !asked {
            return Ok(());
        }
        twin(cx, format)
    };
    let Some((digest, media_type)) = target else {
        return Ok(());
    };
    let accept = if media_type.is_empty() {
        media::ALL_MANIFESTS.join(", ")
    } else {
        media_type
    };
    let twin = manifest_by_digest(cx, &req.name, &digest, &accept).await?;
    tracing::info!(name = %req.name, reference = %req.reference, from = %resolved, to = %twin.digest, format, "teleported");
    cx.reply = Some(Reply::manifest(
        req.method,
        &twin.digest,
        twin.bytes,
        &twin.media_type,
    ));
    Ok(())
}

/// The streamable twin for this node among the discovered referrers: its digest and media
/// type.
fn twin(cx: &Context, format: &str) -> Option<(Digest, String)> {
    let node = node_platform();
    let found = cx.slots.get::<crate::registry::referrers::Referrers>()?;
    found.descriptors.iter().find_map(|d| {
        let a = d.get("annotations")?;
        let get = |k: &str| a.get(k).and_then(|v| v.as_str());
        if !get("streaming.format")?.eq_ignore_ascii_case(format) {
            return None;
        }
        let platform = Platform::from_json(&serde_json::json!({
            "os": get("streaming.platform.os")?,
            "architecture": get("streaming.platform.arch")?,
        }))?;
        if platform.os != node.os || platform.architecture != node.architecture {
            return None;
        }
        let digest = Digest::parse(get("streaming.digest")?).ok()?;
        Some((digest, get("streaming.mediaType").unwrap_or("").to_string()))
    })
}
