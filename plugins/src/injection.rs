//! What an injection is, as data: the layers acr appends to an image and the config changes
//! it makes, and the registry of every layer acr has been told of.
//!
//! This is ground floor: the context carries a container token's [`Injection`], `access`
//! asks whether a digest is a layer acr made ([`known_layer`]), and the `.inject-layer`
//! plugin builds, stores and applies them. It knows only the OCI types, so neither the
//! context nor `access` depends on the plugin.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::oci::{Digest, Platform};

/// Where a layer's gzip bytes are.
#[derive(Debug, Clone)]
pub enum Content {
    /// Packed from a directory or decoded from a `data:` location.
    Bytes(Bytes),
    /// A `.tar.gz` file on disk (checked again against its digest when it is stored).
    File(PathBuf),
    /// Fetched at first use from this URL, then checked against the declared digests.
    Remote(String),
}

/// One layer to append.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The source as written (a path, a URL, `data:...` shortened), for history and logs.
    pub source: String,
    pub gzip_digest: Digest,
    /// `None` for a remote layer until it is fetched.
    pub gzip_size: Option<u64>,
    pub tar_digest: Digest,
    /// Only for images of this platform; `None`: for every platform.
    pub platform: Option<Platform>,
    pub content: Content,
}

/// The config changes of an injection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEdits {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

/// What a request's image gets: layers in order, then config changes.
#[derive(Debug, Clone, Default)]
pub struct Injection {
    pub layers: Vec<Arc<Layer>>,
    pub edits: ConfigEdits,
}

impl Injection {
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty() && self.edits == ConfigEdits::default()
    }

    /// Adds `other` after this one: its layers come last, its entrypoint, cmd and working
    /// directory win, its env is applied after this one's.
    pub fn merge(&mut self, other: &Injection) {
        self.layers.extend(other.layers.iter().cloned());
        if other.edits.entrypoint.is_some() {
            self.edits.entrypoint = other.edits.entrypoint.clone();
        }
        if other.edits.cmd.is_some() {
            self.edits.cmd = other.edits.cmd.clone();
        }
        if other.edits.working_dir.is_some() {
            self.edits.working_dir = other.edits.working_dir.clone();
        }
        self.edits.env.extend(other.edits.env.iter().cloned());
    }

    /// What identifies the injection's effect: the layers' digests and platforms and the
    /// edits, hashed.
    pub fn fingerprint(&self) -> String {
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|l| {
                serde_json::json!([
                    l.gzip_digest.to_string(),
                    l.tar_digest.to_string(),
                    l.platform.as_ref().map(|p| p.to_string()),
                    describe(&l.source, &l.gzip_digest),
                ])
            })
            .collect();
        let doc = serde_json::json!({
            "layers": layers,
            "entrypoint": self.edits.entrypoint,
            "cmd": self.edits.cmd,
            "env": self.edits.env,
            "workingDir": self.edits.working_dir,
        });
        hex::encode(Sha256::digest(doc.to_string().as_bytes()))
    }

    /// The layers an image of `platform` gets, in order: those for every platform and those
    /// for its own. `None` when the injection has layers but none for this platform (only
    /// `-amd64` and `-arm64` builds, and an s390x image): an entrypoint that names the tool
    /// would break the image, so it is left as it is.
    pub fn layers_for(&self, platform: Option<&Platform>) -> Option<Vec<&Layer>> {
        let out: Vec<&Layer> = self
            .layers
            .iter()
            .filter(|l| match (&l.platform, platform) {
                (None, _) => true,
                (Some(want), Some(have)) => want.admits(have),
                (Some(_), None) => false,
            })
            .map(|l| l.as_ref())
            .collect();
        (self.layers.is_empty() || !out.is_empty()).then_some(out)
    }
}

/// A source for logs and history: a `data:` location is shortened to its digest.
pub fn describe(source: &str, gzip_digest: &Digest) -> String {
    if source.starts_with("data:") {
        format!("data:{gzip_digest}")
    } else {
        source.to_string()
    }
}

/// Every layer acr has been told of, by gzip digest: what `.pull` serves a layer from if the
/// store lost it.
fn known() -> &'static Mutex<HashMap<Digest, Arc<Layer>>> {
    static KNOWN: OnceLock<Mutex<HashMap<Digest, Arc<Layer>>>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(HashMap::new()))
}

pub fn remember(layer: &Arc<Layer>) {
    if let Ok(mut k) = known().lock() {
        k.entry(layer.gzip_digest.clone())
            .or_insert_with(|| layer.clone());
    }
}

pub fn known_layer(digest: &Digest) -> Option<Arc<Layer>> {
    known().lock().ok()?.get(digest).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn layer(name: &str, platform: Option<&str>) -> Arc<Layer> {
        Arc::new(Layer {
            source: name.into(),
            gzip_digest: Digest::of(name.as_bytes()),
            gzip_size: Some(1),
            tar_digest: Digest::of(b"tar"),
            platform: platform.map(|p| Platform::parse(p).unwrap()),
            content: Content::Bytes(Bytes::from_static(b"x")),
        })
    }

    #[test]
    fn each_platform_gets_its_layers_and_none_gets_nothing() {
        let inj = Injection {
            layers: vec![
                layer("common", None),
                layer("tool-amd64", Some("linux/amd64")),
                layer("tool-arm64", Some("linux/arm64")),
            ],
            edits: ConfigEdits::default(),
        };
        let names = |p: &str| {
            inj.layers_for(Some(&Platform::parse(p).unwrap()))
                .map(|ls| ls.iter().map(|l| l.source.clone()).collect::<Vec<_>>())
        };
        assert_eq!(names("linux/amd64").unwrap(), ["common", "tool-amd64"]);
        assert_eq!(names("linux/arm64/v8").unwrap(), ["common", "tool-arm64"]);
        assert_eq!(names("linux/s390x").unwrap(), ["common"]);
        let only_specific = Injection {
            layers: vec![layer("tool-amd64", Some("linux/amd64"))],
            edits: ConfigEdits::default(),
        };
        assert!(only_specific
            .layers_for(Some(&Platform::parse("linux/s390x").unwrap()))
            .is_none());
        assert!(only_specific.layers_for(None).is_none());
        let env_only = Injection {
            layers: vec![],
            edits: ConfigEdits {
                env: vec!["A=1".into()],
                ..Default::default()
            },
        };
        assert_eq!(env_only.layers_for(None).map(|l| l.len()), Some(0));
    }

    #[test]
    fn merging_keeps_order_and_lets_the_later_win() {
        let mut a = Injection {
            layers: vec![layer("a", None)],
            edits: ConfigEdits {
                entrypoint: Some(vec!["/a".into()]),
                env: vec!["A=1".into()],
                ..Default::default()
            },
        };
        let before = a.fingerprint();
        let b = Injection {
            layers: vec![layer("b", None)],
            edits: ConfigEdits {
                entrypoint: Some(vec!["/b".into()]),
                env: vec!["B=2".into()],
                ..Default::default()
            },
        };
        a.merge(&b);
        assert_eq!(a.layers.len(), 2);
        assert_eq!(a.edits.entrypoint, Some(vec!["/b".to_string()]));
        assert_eq!(a.edits.env, ["A=1", "B=2"]);
        assert_ne!(a.fingerprint(), before);
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
