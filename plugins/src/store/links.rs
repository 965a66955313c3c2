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
    if is_linked(store.root(), scope, digest) {
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
            let _ = link(store.root(), scope, digest);
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
    let fresh = !is_linked(store.root(), scope, digest);
    link(store.root(), scope, digest)?;
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

/// Whether `digest` is linked in `scope`.
pub fn is_linked(root: &Path, scope: &LinkScope, digest: &Digest) -> bool {
    scope.path(root, digest).exists()
}

/// Links `digest` in `scope` (idempotent).
pub fn link(root: &Path, scope: &LinkScope, digest: &Digest) -> io::Result<()> {
    let path = scope.path(root, digest);
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_per_repository_and_per_token() {
        let d = tempfile::tempdir().unwrap();
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
        assert!(!is_linked(d.path(), &a, &digest));
        link(d.path(), &a, &digest).unwrap();
        link(d.path(), &a, &digest).unwrap();
        assert!(is_linked(d.path(), &a, &digest));
        assert!(!is_linked(d.path(), &b, &digest));
        assert!(!is_linked(d.path(), &t, &digest));
        link(d.path(), &t, &digest).unwrap();
        assert!(is_linked(d.path(), &t, &digest));
        assert_eq!(t.repository(), a);
    }
}
