//! Which repositories a stored object may be served to.
//!
//! Content is stored once per digest, but a registry decides access per repository: that an
//! object was fetched for `team-a/app` says nothing about whether `team-b/tool` holds it, and a
//! digest is not a secret. So the store keeps a link per (upstream, repository, digest) that
//! the upstream has confirmed, as distribution does with its per-repository links:
//! `links/<ns>/<repo>/_digests/<hex>` (an empty file). Objects an injection made for a
//! container token are linked in the token's own scope, `links/<ns>/<repo>/_wt/<id>/<hex>`,
//! so another client of the same repository never reads what one client sent.
//!
//! Links are only ever added after the upstream answered for that repository; a link whose
//! object was evicted is harmless (the object is fetched again, from that repository).
//!
//! With a shared (S3) tier, links are shared too, as empty objects under the same key
//! (`PREFIX/links/...`): a replica that lacks a link looks there before it asks the upstream,
//! so what one replica fetched for a repository the others serve to it even while the upstream
//! is down. A shared link is trusted as far as the shared tag records are: as far as the
//! bucket's own access control.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::tier::{ObjectKey, WriteMode};
use super::Store;
use crate::oci::Digest;

/// Where an object is asked for: the upstream, the repository and, for a container token's
/// own objects, the token's id (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkScope {
    pub ns: String,
    pub repo: String,
    pub token: Option<String>,
}

impl LinkScope {
    /// The same repository without the token: what the upstream itself serves there.
    pub fn repository(&self) -> LinkScope {
        LinkScope {
            token: None,
            ..self.clone()
        }
    }

    pub(crate) fn dir(&self, root: &Path) -> PathBuf {
        // Names come from the route parser (no `.`/`..` segments); `ns` is a host[:port].
        let base = root
            .join("links")
            .join(self.ns.replace('/', "_"))
            .join(&self.repo);
        match &self.token {
            None => base.join("_digests"),
            Some(id) => base.join("_wt").join(id.replace(['/', '.'], "_")),
        }
    }

    /// The link file of `digest` in this scope under the store `root`.
    pub fn path(&self, root: &Path, digest: &Digest) -> PathBuf {
        self.dir(root).join(digest.hex())
    }

    /// The parts of the key of the link to the object `hex` in the shared tier.
    pub(crate) fn key_parts(&self, hex: &str) -> Vec<String> {
        let mut parts = vec!["links".to_string(), self.ns.replace('/', "_")];
        parts.extend(self.repo.split('/').map(str::to_string));
        match &self.token {
            None => parts.push("_digests".into()),
            Some(id) => {
                parts.push("_wt".into());
                parts.push(id.replace(['/', '.'], "_"));
            }
        }
        parts.push(hex.to_string());
        parts
    }
}

/// Whether `digest` is linked in `scope`, here or in the shared tier (a shared link is then
/// kept here too).
pub async fn linked(store: &Store, scope: &LinkScope, digest: &Digest) -> bool {
    if is_linked(store, scope, digest) {
        return true;
    }
    let Some(shared) = store.shared() else {
        return false;
    };
    let key = ObjectKey::Link {
        scope,
        hex: digest.hex(),
    };
    match shared.size(key).await {
        Ok(Some(_)) => {
            let _ = link(store, scope, digest);
            true
        }
        Ok(None) => {
            tracing::debug!(?key, "no shared repository link");
            false
        }
        Err(e) => {
            tracing::warn!(?key, "could not read a shared repository link: {e}");
            false
        }
    }
}

/// Links `digest` in `scope` here, and (in the background) in the shared tier.
pub fn record(store: &std::sync::Arc<Store>, scope: &LinkScope, digest: &Digest) -> io::Result<()> {
    let fresh = !is_linked(store, scope, digest);
    link(store, scope, digest)?;
    if fresh && store.shared().is_some() {
        let (store, scope, hex) = (store.clone(), scope.clone(), digest.hex().to_string());
        tokio::spawn(async move {
            let Some(shared) = store.shared() else {
                return;
            };
            let key = ObjectKey::Link {
                scope: &scope,
                hex: &hex,
            };
            match shared
                .write(key, Bytes::from_static(b"1"), WriteMode::Create)
                .await
            {
                Ok(_) => tracing::debug!(?key, "repository link shared"),
                Err(e) => tracing::warn!(?key, "could not share a repository link: {e}"),
            }
        });
    }
    Ok(())
}

/// Whether `digest` is linked in `scope` on this replica's disk (remembered once seen).
pub fn is_linked(store: &Store, scope: &LinkScope, digest: &Digest) -> bool {
    let path = scope.path(store.root(), digest);
    if store.links_in_memory.get(&path).is_some() {
        return true;
    }
    let there = path.exists();
    if there {
        store.links_in_memory.put(path, (), 1);
    }
    there
}

/// Links `digest` in `scope` (idempotent).
pub fn link(store: &Store, scope: &LinkScope, digest: &Digest) -> io::Result<()> {
    let path = scope.path(store.root(), digest);
    if store.links_in_memory.get(&path).is_some() || path.exists() {
        store.links_in_memory.put(path, (), 1);
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    store.links_in_memory.put(path, (), 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_per_repository_and_per_token_and_kept_in_memory_once_seen() {
        let d = tempfile::tempdir().unwrap();
        let config = crate::store::StoreConfig {
            root: d.path().to_path_buf(),
            remote: None,
            max_size: None,
            ttl: std::time::Duration::from_secs(60),
            ttl_by_ns: vec![],
            idle_timeout: std::time::Duration::from_secs(5),
            max_blob_size: None,
            fleet: None,
        };
        let store = Store::open(
            config,
            std::sync::Arc::new(crate::metrics::Metrics::default()),
        )
        .unwrap();
        let digest = Digest::of(b"layer");
        let a = LinkScope {
            ns: "127.0.0.1:5000".into(),
            repo: "team-a/app".into(),
            token: None,
        };
        let b = LinkScope {
            repo: "team-b/tool".into(),
            ..a.clone()
        };
        let t = LinkScope {
            token: Some("0123abcd".into()),
            ..a.clone()
        };
        assert!(!is_linked(&store, &a, &digest));
        // A miss is never remembered: the link made now is seen.
        assert_eq!(store.links_in_memory.usage().0, 0);
        link(&store, &a, &digest).unwrap();
        link(&store, &a, &digest).unwrap();
        assert!(a.path(d.path(), &digest).exists());
        assert!(is_linked(&store, &a, &digest));
        assert!(!is_linked(&store, &b, &digest));
        assert!(!is_linked(&store, &t, &digest));
        link(&store, &t, &digest).unwrap();
        assert!(is_linked(&store, &t, &digest));
        assert_eq!(t.repository(), a);
        assert_eq!(store.links_in_memory.usage().0, 2);
        // A link another process made is found on the disk.
        let other = LinkScope {
            repo: "team-c/other".into(),
            ..a.clone()
        };
        let path = other.path(d.path(), &digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert!(is_linked(&store, &other, &digest));
    }
}
