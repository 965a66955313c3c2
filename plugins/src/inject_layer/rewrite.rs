//! The rewriting itself, over bytes and JSON only (no I/O): a config gains the layers'
//! `diff_id`s, history and the entrypoint/env changes; a manifest gains the layer descriptors
//! and points at the new config; an index points at the new children.
//!
//! Keys keep their order (serde_json's `preserve_order`), output is compact, and nothing
//! depends on the time: the same input and the same layers give the same bytes, so the same
//! digests on every replica and after every restart.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::injection::{describe, ConfigEdits, Layer};
use crate::oci::ManifestKind;

/// The one timestamp acr writes: the history entries of injected layers must not depend on
/// when they were made.
pub const HISTORY_CREATED: &str = "1970-01-01T00:00:00Z";

/// The new config: `diff_ids` and history for `layers` (each with its size known), and
/// `edits`. The original entrypoint, when it had one, goes into `ACR_ENTRY_CHAIN`.
pub fn config(original: &[u8], layers: &[&Layer], edits: &ConfigEdits) -> Result<Vec<u8>, String> {
    let mut doc: Value = serde_json::from_slice(original)
        .map_err(|e| format!("the image config is not JSON: {e}"))?;
    let root = doc
        .as_object_mut()
        .ok_or("the image config is not a JSON object")?;

    let rootfs = root
        .entry("rootfs")
        .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
    let rootfs = rootfs
        .as_object_mut()
        .ok_or("the image config's rootfs is not an object")?;
    let diff_ids = rootfs
        .entry("diff_ids")
        .or_insert_with(|| Value::Array(Vec::new()));
    let diff_ids = diff_ids
        .as_array_mut()
        .ok_or("the image config's rootfs.diff_ids is not a list")?;
    for layer in layers {
        diff_ids.push(Value::String(layer.tar_digest.to_string()));
    }

    // A config without history stays without: a history that named only the new layers would
    // say the image's own layers never existed.
    if let Some(history) = root.get_mut("history").and_then(Value::as_array_mut) {
        for layer in layers {
            history.push(serde_json::json!({
                "created": HISTORY_CREATED,
                "created_by": format!("acr inject-layer {}", describe(&layer.source, &layer.gzip_digest)),
                "comment": "appended by acr",
            }));
        }
    }

    let conf = root
        .entry("config")
        .or_insert_with(|| Value::Object(Map::new()));
    if conf.is_null() {
        *conf = Value::Object(Map::new());
    }
    let conf = conf
        .as_object_mut()
        .ok_or("the image config's config is not an object")?;
    let original_entrypoint: Vec<String> = conf
        .get("Entrypoint")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if let Some(ep) = &edits.entrypoint {
        conf.insert("Entrypoint".into(), strings(ep));
    }
    if let Some(cmd) = &edits.cmd {
        conf.insert("Cmd".into(), strings(cmd));
    }
    if let Some(wd) = &edits.working_dir {
        conf.insert("WorkingDir".into(), Value::String(wd.clone()));
    }
    let mut env_changes: Vec<String> = edits.env.clone();
    if !original_entrypoint.is_empty() {
        let chain = if original_entrypoint.len() == 1 {
            original_entrypoint[0].clone()
        } else {
            serde_json::to_string(&original_entrypoint).unwrap_or_default()
        };
        env_changes.push(format!("ACR_ENTRY_CHAIN={chain}"));
    }
    if !env_changes.is_empty() {
        let env = conf
            .entry("Env")
            .or_insert_with(|| Value::Array(Vec::new()));
        if env.is_null() {
            *env = Value::Array(Vec::new());
        }
        let env = env
            .as_array_mut()
            .ok_or("the image config's Env is not a list")?;
        for change in env_changes {
            let key = change.split('=').next().unwrap_or("").to_string();
            let same_key = |v: &Value| {
                v.as_str()
                    .is_some_and(|s| s.split('=').next() == Some(key.as_str()))
            };
            match env.iter_mut().find(|v| same_key(v)) {
                Some(slot) => *slot = Value::String(change),
                None => env.push(Value::String(change)),
            }
        }
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// The new manifest: the layers appended (with `sizes`, in order) and the config descriptor
/// pointing at the new config.
pub fn manifest(
    original: &[u8],
    kind: ManifestKind,
    config_digest: &str,
    config_size: u64,
    layers: &[(&Layer, u64)],
) -> Result<Vec<u8>, String> {
    let mut doc: Value =
        serde_json::from_slice(original).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let root = doc.as_object_mut().ok_or("the manifest is not an object")?;
    let config = root
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .ok_or("the manifest has no config descriptor")?;
    config.insert("digest".into(), Value::String(config_digest.to_string()));
    config.insert("size".into(), Value::from(config_size));
    let list = root
        .get_mut("layers")
        .and_then(Value::as_array_mut)
        .ok_or("the manifest has no layers list")?;
    for (layer, size) in layers {
        list.push(serde_json::json!({
            "mediaType": kind.layer_media_type(),
            "size": size,
            "digest": layer.gzip_digest.to_string(),
        }));
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

/// The new index: each entry whose digest is a key of `replaced` points at its new child
/// (digest and size); every other entry stays as it was.
pub fn index(
    original: &[u8],
    replaced: &HashMap<String, (String, u64)>,
) -> Result<Vec<u8>, String> {
    let mut doc: Value =
        serde_json::from_slice(original).map_err(|e| format!("the index is not JSON: {e}"))?;
    let entries = doc
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or("the index has no manifests list")?;
    for entry in entries.iter_mut() {
        let Some(obj) = entry.as_object_mut() else {
            continue;
        };
        let Some(old) = obj.get("digest").and_then(Value::as_str) else {
            continue;
        };
        if let Some((digest, size)) = replaced.get(old) {
            obj.insert("digest".into(), Value::String(digest.clone()));
            obj.insert("size".into(), Value::from(*size));
        }
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::Content;
    use crate::oci::Digest;

    fn layer() -> Layer {
        Layer {
            source: "layers/tools".into(),
            gzip_digest: Digest::of(b"gz"),
            gzip_size: Some(2),
            tar_digest: Digest::of(b"tar"),
            platform: None,
            content: Content::Bytes(bytes::Bytes::from_static(b"gz")),
        }
    }

    #[test]
    fn config_gains_diff_ids_history_env_and_the_chain() {
        let original = br#"{"architecture":"amd64","config":{"Env":["PATH=/bin","A=1"],"Entrypoint":["/usr/bin/tini","--"],"Cmd":["run"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created":"2000-01-01T00:00:00Z"}]}"#;
        let l = layer();
        let edits = ConfigEdits {
            entrypoint: Some(vec!["/opt/acr/entry.sh".into()]),
            env: vec!["A=2".into(), "B=3".into()],
            ..Default::default()
        };
        let out = config(original, &[&l], &edits).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"][1], l.tar_digest.to_string());
        assert_eq!(v["history"][1]["created"], HISTORY_CREATED);
        assert_eq!(
            v["config"]["Entrypoint"],
            serde_json::json!(["/opt/acr/entry.sh"])
        );
        assert_eq!(v["config"]["Cmd"], serde_json::json!(["run"]));
        assert_eq!(
            v["config"]["Env"],
            serde_json::json!([
                "PATH=/bin",
                "A=2",
                "B=3",
                r#"ACR_ENTRY_CHAIN=["/usr/bin/tini","--"]"#
            ])
        );
        // Key order kept, compact, and the same bytes twice.
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .starts_with(r#"{"architecture":"amd64","config":{"Env""#));
        assert_eq!(out, config(original, &[&l], &edits).unwrap());
    }

    #[test]
    fn a_single_entrypoint_chains_as_a_string_and_none_adds_nothing() {
        let one = br#"{"config":{"Entrypoint":["/docker-entrypoint.sh"]}}"#;
        let v: Value =
            serde_json::from_slice(&config(one, &[], &ConfigEdits::default()).unwrap()).unwrap();
        assert_eq!(
            v["config"]["Env"],
            serde_json::json!(["ACR_ENTRY_CHAIN=/docker-entrypoint.sh"])
        );
        assert!(v.get("history").is_none());
        let none = br#"{"config":null}"#;
        let v: Value =
            serde_json::from_slice(&config(none, &[], &ConfigEdits::default()).unwrap()).unwrap();
        assert!(v["config"].get("Env").is_none());
        assert!(config(b"[1]", &[], &ConfigEdits::default()).is_err());
    }

    #[test]
    fn manifests_and_indexes() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:old","size":1},"layers":[],"annotations":{"a":"b"}}"#;
        let l = layer();
        let out = manifest(m, ManifestKind::OciManifest, "sha256:new", 9, &[(&l, 2)]).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["config"]["digest"], "sha256:new");
        assert_eq!(v["config"]["size"], 9);
        assert_eq!(
            v["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(v["annotations"]["a"], "b");
        let idx = br#"{"manifests":[{"digest":"sha256:x","size":1,"platform":{"os":"linux","architecture":"amd64"}},{"digest":"sha256:y","size":2}]}"#;
        let mut r = HashMap::new();
        r.insert("sha256:x".to_string(), ("sha256:z".to_string(), 7));
        let v: Value = serde_json::from_slice(&index(idx, &r).unwrap()).unwrap();
        assert_eq!(v["manifests"][0]["digest"], "sha256:z");
        assert_eq!(v["manifests"][0]["size"], 7);
        assert_eq!(v["manifests"][1]["digest"], "sha256:y");
    }
}
