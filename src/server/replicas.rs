//! `GET /_acr/peer/blobs/sha256:<hex>`: what the other replicas of a shared cache ask this one
//! for, the bytes of a blob it holds the lease for (see `acr_plugins::store::fleet`).
//!
//! Who may call it: only a replica that knows the shared `: .token-secret`, with a token for
//! that one digest (`x-acr-peer`, see `acr_plugins::store::peer`); clients' credentials do not
//! open it, and without a fleet (no shared cache, no token secret) it does not exist (404).
//! It never starts a fetch: it serves what is on disk or on its way.

use acr_plugins::oci::{Digest, RegistryError};
use acr_plugins::registry::Reply;
use acr_plugins::store::peer;

use super::response::proxy_gone;
use super::ProxyHost;

/// The path prefix of the endpoint.
pub const PREFIX: &str = "/_acr/peer/blobs/";

impl ProxyHost {
    pub(super) async fn answer_peer(
        &self,
        key: &(String, String),
        headers: &hyper::HeaderMap,
        path: &str,
    ) -> Result<Reply, RegistryError> {
        let pipeline = self.current();
        let proxy = pipeline.proxy(key).ok_or_else(proxy_gone)?;
        let state = self.state_of(proxy);
        let store = state.store.as_ref().ok().and_then(|s| s.clone());
        let Some((store, fleet)) = store.and_then(|s| s.fleet().cloned().map(|f| (s, f))) else {
            return Err(RegistryError::not_found(
                "NOT_FOUND",
                "this mirror is not one replica of a shared cache",
            ));
        };
        let digest = path
            .strip_prefix(PREFIX)
            .and_then(|d| Digest::parse(d).ok())
            .ok_or_else(|| RegistryError::new(400, "DIGEST_INVALID", "not a blob digest"))?;
        let token = headers
            .get(peer::HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !peer::verify(&fleet.peer_key, digest.hex(), token) {
            return Err(RegistryError::new(
                401,
                "UNAUTHORIZED",
                "only another replica of this cache may ask (a valid x-acr-peer token for this digest)",
            ));
        }
        acr_plugins::pull::for_peer(&store, &digest).await
    }
}
