//! Fuzzes inject-layer's handling of what upstreams and clients send: the rewriting of image
//! configs, manifests and indexes (`inject_layer::rewrite`), and the parsing of image
//! references, platforms and `data:` locations.
//!
//! Input: one control byte, then the document. Control bit 7 set: the rest is text for
//! `ImageRef::parse`, `Platform::parse`, `layer::platform_from_name` and `layer::decode_data`.
//! Clear: the rest is an upstream JSON document given to `ManifestKind::detect`, `config`,
//! `manifest` and `index`; bits 0-1 are the number of layers injected (0-3), bits 2-5 which
//! config edits are made (entrypoint, cmd, env, working dir), bit 6 the Content-Type the
//! upstream sent.
//!
//! Properties: never a panic; the same input gives the same bytes; `config` output is JSON
//! whose `rootfs.diff_ids` (and `history`, when there was one) grew by the layers, in order,
//! with the env edits and the entrypoint chain in `config.Env`; `manifest` output has the
//! layers appended and the new config descriptor; `index` output keeps its entries and points
//! the replaced ones at their new children; a parsed image reference or platform is valid and
//! prints as text that parses back to itself.

#![no_main]

use std::collections::HashMap;

use acr_plugins::inject_layer::layer;
use acr_plugins::inject_layer::rewrite;
use acr_plugins::injection::{ConfigEdits, Content, Layer};
use acr_plugins::inject_layer::token_request::ImageRef;
use acr_plugins::oci::reference::is_repository;
use acr_plugins::oci::{media, Digest, ManifestKind, Platform, Reference};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control & 0x80 != 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            strings(text);
        }
    } else {
        documents(control, rest);
    }
});

fn strings(text: &str) {
    if let Ok(image) = ImageRef::parse(text) {
        assert!(!text.contains('@'), "a digest reference was accepted: {text:?}");
        assert!(!image.ns.is_empty(), "{image:?}");
        assert!(is_repository(&image.name), "invalid name in {image:?}");
        assert!(
            matches!(Reference::parse(&image.tag), Ok(Reference::Tag(_))),
            "invalid tag in {image:?}"
        );
        let printed = image.to_string();
        assert_eq!(
            ImageRef::parse(&printed).as_ref(),
            Ok(&image),
            "{text:?} -> {printed:?} does not parse back"
        );
    }
    if let Ok(platform) = Platform::parse(text) {
        assert!(!platform.os.is_empty());
        assert!(platform
            .os
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert!(
            Platform::for_arch(&platform.architecture).is_some_and(|p| p.architecture
                == platform.architecture),
            "unknown or unnormalised architecture in {platform:?}"
        );
        assert_ne!(platform.variant.as_deref(), Some(""));
        let printed = platform.to_string();
        assert_eq!(
            Platform::parse(&printed).as_ref(),
            Ok(&platform),
            "{text:?} -> {printed:?} does not parse back"
        );
        assert!(platform.admits(&platform));
    }
    if let Some(platform) = layer::platform_from_name(text) {
        assert_eq!(platform.os, "linux");
    }
    if let Ok(bytes) = layer::decode_data(text) {
        assert!(bytes.len() <= layer::MAX_DATA_LAYER);
    }
}

fn layers() -> [Layer; 3] {
    let make = |source: &str, seed: &[u8], platform: Option<&str>| Layer {
        source: source.into(),
        gzip_digest: Digest::of(&[b"gz-", seed].concat()),
        gzip_size: Some(seed.len() as u64),
        tar_digest: Digest::of(&[b"tar-", seed].concat()),
        platform: platform.map(|p| Platform::parse(p).unwrap()),
        content: Content::Bytes(bytes::Bytes::copy_from_slice(seed)),
    };
    [
        make("layers/tools", b"tools", None),
        make("data:application/gzip;base64,H4sI", b"data", Some("linux/amd64")),
        make("https://example.com/l-arm64.tar.gz", b"remote", Some("linux/arm64")),
    ]
}

fn edits(control: u8) -> ConfigEdits {
    ConfigEdits {
        entrypoint: (control & 0x04 != 0).then(|| vec!["/opt/acr/entry.sh".into()]),
        cmd: (control & 0x08 != 0).then(|| vec!["run".into(), "--flag".into()]),
        env: if control & 0x10 != 0 {
            vec!["PATH=/opt/acr/bin:/usr/bin".into(), "ACR=1".into()]
        } else {
            Vec::new()
        },
        working_dir: (control & 0x20 != 0).then(|| "/work".into()),
    }
}

fn array_len(v: Option<&Value>) -> usize {
    v.and_then(Value::as_array).map_or(0, Vec::len)
}

fn documents(control: u8, original: &[u8]) {
    let all = layers();
    let chosen: Vec<&Layer> = all.iter().take((control & 3) as usize).collect();
    let n = chosen.len();
    let edits = edits(control);
    let content_type = if control & 0x40 != 0 {
        media::DOCKER_MANIFEST
    } else {
        ""
    };
    let parsed: Option<Value> = serde_json::from_slice(original).ok();

    let kind = match &parsed {
        Some(doc) => {
            let kind = ManifestKind::detect(doc, content_type);
            assert_eq!(kind, ManifestKind::detect(doc, content_type));
            assert_eq!(
                kind.is_index(),
                matches!(kind, ManifestKind::OciIndex | ManifestKind::DockerList)
            );
            kind
        }
        None => ManifestKind::OciManifest,
    };

    // The config.
    let out = rewrite::config(original, &chosen, &edits);
    assert_eq!(out, rewrite::config(original, &chosen, &edits), "config not deterministic");
    if let Ok(out) = out {
        let doc = parsed.as_ref().expect("config accepted what is not JSON");
        let new: Value = serde_json::from_slice(&out).expect("config output is not JSON");
        assert!(new.is_object());
        let before = array_len(doc.pointer("/rootfs/diff_ids"));
        let diff_ids = new
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .expect("no rootfs.diff_ids in the new config");
        assert_eq!(diff_ids.len(), before + n, "diff_ids did not grow by {n}");
        for (id, layer) in diff_ids[before..].iter().zip(&chosen) {
            assert_eq!(id.as_str(), Some(layer.tar_digest.to_string().as_str()));
        }
        match doc.get("history").and_then(Value::as_array) {
            Some(h) => assert_eq!(array_len(new.get("history")), h.len() + n),
            None => assert_eq!(
                new.get("history").map(Value::is_array),
                doc.get("history").map(Value::is_array)
            ),
        }
        let env: Vec<&str> = new
            .pointer("/config/Env")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for change in &edits.env {
            assert!(env.contains(&change.as_str()), "{change} not in {env:?}");
        }
        let had_entrypoint = doc
            .pointer("/config/Entrypoint")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(Value::is_string));
        if had_entrypoint {
            assert!(
                env.iter().any(|e| e.starts_with("ACR_ENTRY_CHAIN=")),
                "no ACR_ENTRY_CHAIN in {env:?}"
            );
        }
        if let Some(ep) = &edits.entrypoint {
            let want: Vec<Value> = ep.iter().cloned().map(Value::String).collect();
            assert_eq!(new.pointer("/config/Entrypoint"), Some(&Value::Array(want)));
        }
    }

    // The manifest.
    let sized: Vec<(&Layer, u64)> = chosen
        .iter()
        .map(|l| (*l, l.gzip_size.unwrap_or(0)))
        .collect();
    let config_digest = Digest::of(original).to_string();
    let out = rewrite::manifest(original, kind, &config_digest, 1234, &sized);
    assert_eq!(
        out,
        rewrite::manifest(original, kind, &config_digest, 1234, &sized),
        "manifest not deterministic"
    );
    if let Ok(out) = out {
        let doc = parsed.as_ref().expect("manifest accepted what is not JSON");
        let new: Value = serde_json::from_slice(&out).expect("manifest output is not JSON");
        let before = array_len(doc.get("layers"));
        let list = new.get("layers").and_then(Value::as_array).expect("no layers");
        assert_eq!(list.len(), before + n, "layers did not grow by {n}");
        for (desc, (layer, size)) in list[before..].iter().zip(&sized) {
            assert_eq!(desc["digest"].as_str(), Some(layer.gzip_digest.to_string().as_str()));
            assert_eq!(desc["size"].as_u64(), Some(*size));
            assert_eq!(desc["mediaType"].as_str(), Some(kind.layer_media_type()));
        }
        assert_eq!(new["config"]["digest"].as_str(), Some(config_digest.as_str()));
        assert_eq!(new["config"]["size"].as_u64(), Some(1234));
    }

    // The index: every other child with a string digest is replaced.
    let mut replaced: HashMap<String, (String, u64)> = HashMap::new();
    if let Some(entries) = parsed
        .as_ref()
        .and_then(|d| d.get("manifests"))
        .and_then(Value::as_array)
    {
        for (i, e) in entries.iter().enumerate().step_by(2) {
            if let Some(d) = e.get("digest").and_then(Value::as_str) {
                replaced
                    .entry(d.to_string())
                    .or_insert_with(|| (Digest::of(&i.to_le_bytes()).to_string(), i as u64));
            }
        }
    }
    let out = rewrite::index(original, &replaced);
    assert_eq!(out, rewrite::index(original, &replaced), "index not deterministic");
    if let Ok(out) = out {
        let doc = parsed.as_ref().expect("index accepted what is not JSON");
        let new: Value = serde_json::from_slice(&out).expect("index output is not JSON");
        let old = doc["manifests"].as_array().expect("index accepted no manifests list");
        let now = new["manifests"].as_array().expect("index lost its manifests list");
        assert_eq!(old.len(), now.len());
        for (o, m) in old.iter().zip(now) {
            let digest = o.as_object().and_then(|o| o.get("digest")).and_then(Value::as_str);
            match digest.and_then(|d| replaced.get(d)) {
                Some((d, size)) => {
                    assert_eq!(m["digest"].as_str(), Some(d.as_str()));
                    assert_eq!(m["size"].as_u64(), Some(*size));
                }
                None => assert_eq!(
                    m.as_object().and_then(|o| o.get("digest")).and_then(Value::as_str),
                    digest
                ),
            }
        }
    }
}
