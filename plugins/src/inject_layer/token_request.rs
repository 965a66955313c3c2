//! What clients send to the container-token endpoints, parsed and checked: the body of
//! `POST /container-token` (an image by tag, a `containerConfig` in the Wave model, a
//! platform) and of `POST /validate-creds`; and the check of those credentials against a
//! registry. The tokens themselves are kept by [`super::token`].
//!
//! The layers of a token request are `data:` locations, checked against their declared
//! digests and size when the token is made; they inflate to at most [`MAX_INFLATED`] bytes in
//! all (a gzip bomb is a 400, not gigabytes of work).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::layer;
use crate::injection::{ConfigEdits, Content, Injection, Layer};
use crate::oci::{Digest, ImageReference, Platform, RegistryError};
use crate::registry::challenge;

/// `containerConfig` of a token request (the Wave model).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LayerSpec {
    pub location: String,
    pub gzip_digest: String,
    pub gzip_size: u64,
    pub tar_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_hashing: Option<bool>,
}

impl TokenRequest {
    pub fn parse(body: &[u8]) -> Result<Self, RegistryError> {
        serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the request is not a container-token request: {e} (send {{\"containerImage\": \"REGISTRY/REPO:TAG\", \"containerConfig\": {{...}}, \"containerPlatform\": \"linux/amd64\"}})"
            ))
        })
    }
}

/// The body of `POST /container-token`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub container_image: String,
    #[serde(default)]
    pub container_config: Option<ContainerConfig>,
    #[serde(default)]
    pub container_platform: Option<String>,
}

/// An image reference split the way registries address it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The registry host (`docker.io` when the reference names none).
    pub ns: String,
    /// The repository (`library/` added to a one-word Docker Hub name).
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    /// Parses `[REGISTRY/]REPO[:TAG]` (with [`ImageReference::parse`]); a reference by digest
    /// is refused (a digest names fixed content, which an injection would change). No
    /// registry is `docker.io`, no tag `latest`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.contains('@') {
            return Err(format!(
                "`{text}` names a digest; a container token rewrites the image, so name it by tag"
            ));
        }
        let image = ImageReference::parse(text)?;
        let name = image.registry_repository();
        Ok(Self {
            ns: image.registry.unwrap_or_else(|| "docker.io".to_string()),
            name,
            tag: image.tag.unwrap_or_else(|| "latest".to_string()),
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.ns, self.name, self.tag)
    }
}

/// The most bytes a token request's layers inflate to, in all.
pub const MAX_INFLATED: u64 = 256 * 1024 * 1024;

/// A request acr cannot take: a 400.
pub fn bad(message: impl Into<String>) -> RegistryError {
    RegistryError::new(400, "UNSUPPORTED", message)
}

impl ContainerConfig {
    /// The injection this config asks for (its layers for `platform` only, when given), every
    /// layer checked against its declared digests and size.
    pub fn injection(&self, platform: Option<&str>) -> Result<Injection, RegistryError> {
        let c = self;
        let platform = platform.map(Platform::parse).transpose().map_err(bad)?;
        let mut layers = Vec::new();
        let mut inflated = 0u64;
        for (i, spec) in c.layers.iter().enumerate() {
            let n = i + 1;
            let declared = |field: &str, text: &str| {
                Digest::parse(text).map_err(|e| {
                    RegistryError::new(
                        400,
                        "DIGEST_INVALID",
                        format!("layer {n}: {field} `{text}`: {e}"),
                    )
                })
            };
            let gzip_digest = declared("gzipDigest", &spec.gzip_digest)?;
            let tar_digest = declared("tarDigest", &spec.tar_digest)?;
            if !spec.location.starts_with("data:") {
                return Err(bad(format!(
                "layer {n}: acr takes `data:` locations in a token request, not `{}`; a layer on the web belongs in the pipeline (`.inject-layer URL` with `.digest` and `.diff-id`)",
                spec.location.split(',').next().unwrap_or("").chars().take(60).collect::<String>()
            )));
            }
            let gz = layer::decode_data(&spec.location).map_err(|e| {
                if e.contains("larger") {
                    RegistryError::new(400, "SIZE_INVALID", format!("layer {n}: {e}"))
                } else {
                    bad(format!("layer {n}: {e}"))
                }
            })?;
            let got = Digest::of(&gz);
            if got != gzip_digest {
                return Err(RegistryError::new(
                    400,
                    "DIGEST_INVALID",
                    format!(
                    "layer {n}: its bytes hash to {got}, not the declared gzipDigest {gzip_digest}"
                ),
                ));
            }
            if gz.len() as u64 != spec.gzip_size {
                return Err(RegistryError::new(
                    400,
                    "SIZE_INVALID",
                    format!(
                        "layer {n}: it is {} bytes, not the declared gzipSize {}",
                        gz.len(),
                        spec.gzip_size
                    ),
                ));
            }
            let left = MAX_INFLATED.saturating_sub(inflated);
            let (tar, size) = layer::gunzip_digest_limited(&gz[..], left).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData && e.to_string().contains("inflates") {
                RegistryError::new(
                    400,
                    "SIZE_INVALID",
                    format!("layer {n}: {e}: the layers of a token request inflate to at most {} MiB in all", MAX_INFLATED / (1024 * 1024)),
                )
            } else {
                bad(format!("layer {n}: not a gzipped tar: {e}"))
            }
        })?;
            inflated += size;
            if tar != tar_digest {
                return Err(RegistryError::new(
                    400,
                    "DIGEST_INVALID",
                    format!(
                        "layer {n}: it unpacks to {tar}, not the declared tarDigest {tar_digest}"
                    ),
                ));
            }
            layers.push(Arc::new(Layer {
                source: spec.location.clone(),
                gzip_size: Some(gz.len() as u64),
                gzip_digest,
                tar_digest,
                platform: platform.clone(),
                content: Content::Bytes(gz),
            }));
        }
        for e in c.env.iter().flatten() {
            if !e.contains('=') || e.starts_with('=') {
                return Err(bad(format!("env entry `{e}` is not KEY=VALUE")));
            }
        }
        Ok(Injection {
            layers,
            edits: ConfigEdits {
                entrypoint: c.entrypoint.clone().filter(|e| !e.is_empty()),
                cmd: c.cmd.clone().filter(|e| !e.is_empty()),
                env: c.env.clone().unwrap_or_default(),
                working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            },
        })
    }
}

/// `POST /validate-creds`: whether `user`/`password` log in to the registry at `base` (its
/// `/v2/` challenge, then the token realm with Basic and no scope, or `/v2/` with Basic). A
/// registry without auth, or any failure, is `false`.
pub async fn validate_credentials(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> bool {
    let probe = match http.get(format!("{base}/v2/")).send().await {
        Ok(r) => r,
        Err(_) => return false,
    };
    if probe.status() != reqwest::StatusCode::UNAUTHORIZED {
        return false;
    }
    let challenges: Vec<challenge::Challenge> = probe
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenge::parse)
        .collect();
    if let Some(bearer) = challenges.iter().find(|c| c.is_bearer()) {
        let Some(realm) = bearer.param("realm") else {
            return false;
        };
        let mut req = http.get(realm).basic_auth(user, Some(password));
        if let Some(service) = bearer.param("service") {
            req = req.query(&[("service", service)]);
        }
        return matches!(req.send().await, Ok(r) if r.status().is_success());
    }
    if challenges.iter().any(|c| c.is_basic()) {
        let req = http
            .get(format!("{base}/v2/"))
            .basic_auth(user, Some(password));
        return matches!(req.send().await, Ok(r) if r.status().is_success());
    }
    false
}

/// `{userName, password, registry}` of a `/validate-creds` request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsCheck {
    pub user_name: String,
    pub password: String,
    pub registry: String,
}

impl CredentialsCheck {
    pub fn parse(body: &[u8]) -> Result<Self, RegistryError> {
        serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the request is not a credentials check: {e} (send {{\"userName\": ..., \"password\": ..., \"registry\": ...}})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(
            (r.ns.as_str(), r.name.as_str(), r.tag.as_str()),
            ("docker.io", "library/alpine", "latest")
        );
        let r = ImageRef::parse("127.0.0.1:5000/library/test:1").unwrap();
        assert_eq!(
            (r.ns.as_str(), r.name.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "library/test", "1")
        );
        let r = ImageRef::parse("quay.io/biocontainers/fastp:0.23.4").unwrap();
        assert_eq!(r.to_string(), "quay.io/biocontainers/fastp:0.23.4");
        assert!(ImageRef::parse("x/y@sha256:aa").is_err());
        assert!(ImageRef::parse("Upper/Case").is_err());
    }
}
