//! Referrers of a manifest (distribution spec 1.1): the referrers API, and when the upstream
//! lacks it (404), the tag schema clients fall back to: the tag `sha256-<hex>` holds an OCI
//! index of the referrers, kept up to date by whoever pushed them (ORAS, cosign, notation).

use bytes::Bytes;
use serde_json::Value;

use super::client::{send, upstream_error};
use super::{Body, ClientRequest, Reply, RequestState, Resource};
use crate::oci::{media, Digest, RegistryError};

/// What a lookup found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Referrers {
    /// The descriptors, with `artifactType` and `annotations` as the upstream gave them.
    pub descriptors: Vec<Value>,
    /// Whether they were filtered by artifact type.
    pub filtered: bool,
    /// Where they came from: `api` or `tag` (the fallback), or `none`.
    pub source: &'static str,
}

impl Referrers {
    /// The OCI index a client gets.
    pub fn index(&self) -> Value {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": self.descriptors,
        })
    }
}

/// The fallback tag of `digest`: `sha256-<hex>`.
pub fn fallback_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// The artifact type of a descriptor (its `artifactType`).
fn type_of(d: &Value) -> Option<&str> {
    d.get("artifactType").and_then(Value::as_str)
}

/// Referrers of `digest` in repository `name`, of `artifact_type` when given.
pub async fn lookup(
    cx: &mut impl RequestState,
    name: &str,
    digest: &Digest,
    artifact_type: Option<&str>,
) -> Result<Referrers, RegistryError> {
    let mut path = format!("/v2/{name}/referrers/{digest}");
    if let Some(t) = artifact_type {
        path.push_str(&format!("?artifactType={}", super::fetch::encode(t)));
    }
    let accept = [("Accept", format!("{}, application/json", media::OCI_INDEX))];
    let resp = send(cx, reqwest::Method::GET, &path, &accept).await?;
    let status = resp.status().as_u16();
    let (descriptors, upstream_filtered, source) = if resp.status().is_success() {
        let filtered = resp.headers().contains_key("oci-filters-applied");
        let body = super::fetch::read_limited(cx, resp, media::MAX_MANIFEST_BYTES).await?;
        (manifests_of(&body)?, filtered, "api")
    } else if status == 404 || status == 405 || status == 400 {
        // No referrers API here: the tag schema.
        let tag = fallback_tag(digest);
        let path = format!("/v2/{name}/manifests/{tag}");
        let resp = send(cx, reqwest::Method::GET, &path, &accept).await?;
        if resp.status().as_u16() == 404 {
            (Vec::new(), false, "none")
        } else if !resp.status().is_success() {
            return Err(upstream_error(cx, resp, Resource::Manifests).await);
        } else {
            let body = super::fetch::read_limited(cx, resp, media::MAX_MANIFEST_BYTES).await?;
            (manifests_of(&body)?, false, "tag")
        }
    } else {
        return Err(upstream_error(cx, resp, Resource::Referrers).await);
    };
    let mut out = Referrers {
        descriptors,
        filtered: upstream_filtered,
        source,
    };
    if let Some(t) = artifact_type {
        if !upstream_filtered {
            out.descriptors.retain(|d| type_of(d) == Some(t));
        }
        out.filtered = true;
    }
    Ok(out)
}

/// The `manifests` of an index document.
fn manifests_of(body: &[u8]) -> Result<Vec<Value>, RegistryError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        RegistryError::bad_gateway(format!("the upstream's referrers index is not JSON: {e}"))
    })?;
    Ok(doc
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// The referrers of a digest as an OCI index: the upstream's API, else its fallback tag, else
/// an empty index (acr serves the API whatever the upstream has, so clients need no fallback
/// of their own). Filtered by `artifactType` when asked, with `OCI-Filters-Applied`.
pub async fn reply(
    cx: &mut impl RequestState,
    req: &ClientRequest,
) -> Result<Reply, RegistryError> {
    let digest = Digest::parse(&req.reference).map_err(RegistryError::digest_invalid)?;
    let artifact_type = req
        .query
        .iter()
        .find(|(k, _)| k == "artifactType")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    let found = lookup(cx, &req.name, &digest, artifact_type.as_deref()).await?;
    let body = Bytes::from(found.index().to_string());
    let mut headers = vec![
        ("Content-Type".to_string(), media::OCI_INDEX.to_string()),
        ("Content-Length".to_string(), body.len().to_string()),
    ];
    if found.filtered {
        headers.push((
            "OCI-Filters-Applied".to_string(),
            "artifactType".to_string(),
        ));
    }
    tracing::debug!(name = %req.name, digest = %digest, source = found.source, n = found.descriptors.len(), "referrers");
    Ok(Reply {
        status: 200,
        headers,
        body: Body::Full(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_indexes() {
        let d = Digest::of(b"x");
        assert_eq!(fallback_tag(&d), format!("sha256-{}", d.hex()));
        let r = Referrers {
            descriptors: vec![serde_json::json!({"artifactType": "a"})],
            filtered: true,
            source: "tag",
        };
        let idx = r.index();
        assert_eq!(idx["mediaType"], media::OCI_INDEX);
        assert_eq!(idx["manifests"][0]["artifactType"], "a");
        assert!(manifests_of(b"{}").unwrap().is_empty());
        assert!(manifests_of(b"nope").is_err());
    }
}
