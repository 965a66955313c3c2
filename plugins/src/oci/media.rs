//! Media types of manifests and indexes, the one rule that tells what kind of document a
//! manifest is ([`ManifestKind::detect`]), and a manifest as fetched ([`Manifest`]).

use bytes::Bytes;
use serde_json::Value;

use super::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// What acr asks for when a client sends no Accept: every manifest kind it can pass on.
pub const ALL_MANIFESTS: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// The largest manifest acr accepts from an upstream (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// A manifest as fetched: its bytes, the media type it was served with, and its digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// What a manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    OciManifest,
    DockerManifest,
    OciIndex,
    DockerList,
    /// Docker schema 1 (`fsLayers`, layers without sizes).
    Schema1,
    /// Neither an image manifest nor an index (an unknown type, or a shape that could be both).
    Other,
}

impl ManifestKind {
    /// The kind a media type names (parameters such as `; charset=` ignored).
    pub fn of_media_type(media_type: &str) -> Option<ManifestKind> {
        match media_type.split(';').next().unwrap_or("").trim() {
            OCI_MANIFEST => Some(ManifestKind::OciManifest),
            DOCKER_MANIFEST => Some(ManifestKind::DockerManifest),
            OCI_INDEX => Some(ManifestKind::OciIndex),
            DOCKER_LIST => Some(ManifestKind::DockerList),
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Some(ManifestKind::Schema1),
            _ => None,
        }
    }

    /// The kind of `doc`, served as `content_type`:
    ///
    /// 1. the document's own `mediaType` field (the digest covers it; a header it does not);
    /// 2. else the `Content-Type` it was served with;
    /// 3. else its shape: `schemaVersion: 1` or `fsLayers` is schema 1; a `manifests` list is
    ///    an index and a `config` object an image manifest, but a document with both is
    ///    neither (the ambiguity of CVE-2021-41190, which image-spec 1.0.2 closed).
    pub fn detect(doc: &Value, content_type: &str) -> ManifestKind {
        let declared = doc
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(content_type);
        if let Some(kind) = Self::of_media_type(declared) {
            return kind;
        }
        let index = doc.get("manifests").is_some_and(Value::is_array);
        let image = doc.get("config").is_some_and(Value::is_object)
            || doc.get("layers").is_some_and(Value::is_array);
        if doc.get("schemaVersion").and_then(Value::as_u64) == Some(1)
            || doc.get("fsLayers").is_some_and(Value::is_array)
        {
            ManifestKind::Schema1
        } else if index && !image {
            ManifestKind::OciIndex
        } else if image && !index && doc.get("config").is_some_and(Value::is_object) {
            ManifestKind::OciManifest
        } else {
            ManifestKind::Other
        }
    }

    pub fn is_index(self) -> bool {
        matches!(self, ManifestKind::OciIndex | ManifestKind::DockerList)
    }

    /// An image manifest of schema 2 (OCI or Docker): a config and sized layers.
    pub fn is_image(self) -> bool {
        matches!(
            self,
            ManifestKind::OciManifest | ManifestKind::DockerManifest
        )
    }

    /// The media type of a layer appended to a manifest of this kind.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            ManifestKind::DockerManifest | ManifestKind::DockerList => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            _ => "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }
}

/// The Accept list for a manifest: the client's types, then the `extra` ones (comma or space
/// separated). When that names no manifest type at all (no Accept, `*/*`, `application/json`),
/// every manifest kind acr passes on is added: registries read a missing type as "not
/// accepted" (distribution answers 404 for an OCI manifest, or rewrites a schema 2 one to
/// schema 1), which no client that sends `*/*` wants.
pub fn accept_header(client: &[String], extra: &str) -> String {
    let mut types: Vec<String> = Vec::new();
    let listed = extra
        .split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty());
    for t in client
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .chain(listed)
    {
        if !t.is_empty() && !types.iter().any(|x| x == t) {
            types.push(t.to_string());
        }
    }
    let names_a_manifest = types.iter().any(|t| {
        let bare = t.split(';').next().unwrap_or("").trim();
        ALL_MANIFESTS.contains(&bare)
            || bare.starts_with("application/vnd.docker.distribution.manifest.")
            || (bare.starts_with("application/vnd.") && !bare.contains('*'))
    });
    if !names_a_manifest {
        for t in ALL_MANIFESTS {
            if !types.iter().any(|x| x == t) {
                types.push(t.to_string());
            }
        }
    }
    types.join(", ")
}

/// Whether a client that sent `accept` (plus the route's `extra` types) takes `media_type`.
pub fn accepts(accept: &[String], extra: &str, media_type: &str) -> bool {
    let listed: Vec<&str> = accept
        .iter()
        .flat_map(|a| a.split(','))
        .chain(extra.split([',', ' ']))
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .filter(|t| !t.is_empty())
        .collect();
    listed.is_empty() || listed.iter().any(|t| *t == "*/*" || *t == media_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_document_says_first_then_the_header_then_the_shape() {
        let index = json!({"mediaType": OCI_INDEX, "manifests": []});
        assert_eq!(
            ManifestKind::detect(&index, OCI_MANIFEST),
            ManifestKind::OciIndex
        );
        let bare = json!({"schemaVersion": 2, "manifests": []});
        assert_eq!(
            ManifestKind::detect(&bare, DOCKER_LIST),
            ManifestKind::DockerList
        );
        assert_eq!(ManifestKind::detect(&bare, ""), ManifestKind::OciIndex);
        let image = json!({"config": {"digest": "x"}, "layers": []});
        assert_eq!(ManifestKind::detect(&image, ""), ManifestKind::OciManifest);
        assert_eq!(
            ManifestKind::detect(&image, &format!("{DOCKER_MANIFEST}; charset=utf-8")),
            ManifestKind::DockerManifest
        );
        assert_eq!(
            ManifestKind::detect(&json!({"schemaVersion": 1}), ""),
            ManifestKind::Schema1
        );
        assert_eq!(
            ManifestKind::detect(&json!({"fsLayers": []}), "application/json"),
            ManifestKind::Schema1
        );
        // Both shapes and no declared type: neither.
        let both = json!({"manifests": [], "config": {}, "layers": []});
        assert_eq!(ManifestKind::detect(&both, ""), ManifestKind::Other);
        assert_eq!(ManifestKind::detect(&json!({}), ""), ManifestKind::Other);
        assert!(ManifestKind::DockerList.is_index() && !ManifestKind::Schema1.is_image());
    }

    #[test]
    fn accept_adds_never_replaces() {
        let client = vec![DOCKER_MANIFEST.to_string()];
        assert_eq!(
            accept_header(&client, OCI_MANIFEST),
            format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}")
        );
        assert!(accept_header(&[], "").contains(OCI_INDEX));
        let any = accept_header(&["*/*".to_string()], "");
        assert!(any.starts_with("*/*, "), "{any}");
        assert!(any.contains(OCI_MANIFEST), "{any}");
        let docker_only = accept_header(&[format!("{DOCKER_MANIFEST};q=0.9, */*")], "");
        assert!(!docker_only.contains("oci"), "{docker_only}");
        assert!(accepts(&[], "", OCI_INDEX));
        assert!(!accepts(&[DOCKER_MANIFEST.to_string()], "", OCI_INDEX));
    }
}
