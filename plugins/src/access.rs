//! Whether an object in the store may be served to the repository a request names.
//!
//! The client was already admitted for that repository (`: .users`, `.allow-pull`, a container
//! token); what is left is the upstream's own rule: the object must be in that repository
//! there. So, before any byte of a stored blob or manifest leaves:
//!
//! - acr's own content (a layer the pipeline or the request's container token injects) is
//!   served: it is not the upstream's;
//! - an object linked to this (upstream, repository) (see [`crate::store::links`]) is served;
//!   with `.forward-auth`, only when the upstream has also confirmed *this client's*
//!   credentials for this repository in the last [`CONFIRM_FOR`];
//! - otherwise the upstream is asked, with the request's own credentials: one `HEAD` of the
//!   object in this repository. A 2xx links it (and confirms the client); anything else is
//!   the client's answer (404 `BLOB_UNKNOWN`, the upstream's 401 challenge, ...).
//!
//! Fetches record their link once the upstream answered 200 for the repository, before the
//! first byte is streamed; a client that follows a fetch checks only once the upstream has
//! answered it, so the clients of that same repository never ask the upstream again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::context::Context;
use crate::oci::media::ALL_MANIFESTS;
use crate::oci::{Digest, RegistryError};
use crate::registry::client::{send, upstream_error};
use crate::registry::Resource;
use crate::store::links::{self, LinkScope};
use crate::store::Store;

/// How long the upstream's yes to a client's credentials for a repository lasts (`.forward-auth`).
pub const CONFIRM_FOR: Duration = Duration::from_secs(60);
/// How many (credential, repository) confirmations are kept at once.
pub const MAX_CONFIRMATIONS: usize = 10_000;

/// The scope a request reads in: its upstream, its repository and, through a container token,
/// that token's id.
pub fn scope_of(cx: &Context) -> Option<LinkScope> {
    let req = cx.request.as_ref()?;
    let ns = cx.upstream.as_ref()?.ns.clone();
    Some(LinkScope {
        ns,
        repo: req.name.clone(),
        token: cx.client_scope.clone(),
    })
}

/// Records that the upstream served `digest` in the request's repository.
pub fn record(cx: &Context, store: &Arc<Store>, digest: &Digest) {
    if let Some(scope) = scope_of(cx) {
        if let Err(e) = links::record(store, &scope.repository(), digest) {
            tracing::warn!(digest = %digest, "could not link the object to its repository: {e}");
        }
    }
}

/// Records an object acr made for this request (a rewritten config, manifest or index): linked
/// in the request's own scope (the token's, through a container token).
pub fn record_own(cx: &Context, store: &Arc<Store>, digest: &Digest) {
    if let Some(scope) = scope_of(cx) {
        if let Err(e) = links::record(store, &scope, digest) {
            tracing::warn!(digest = %digest, "could not link the object to its repository: {e}");
        }
    }
}

/// Whether acr made `digest` for the request's own scope (see [`record_own`]).
pub fn made_here(cx: &Context, store: &Store, digest: &Digest) -> bool {
    scope_of(cx).is_some_and(|s| links::is_linked(store, &s, digest))
}

fn confirmations() -> &'static Mutex<HashMap<[u8; 32], Instant>> {
    static CONFIRMED: OnceLock<Mutex<HashMap<[u8; 32], Instant>>> = OnceLock::new();
    CONFIRMED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The key of a client's confirmation: a hash of its credential and the scope (never the
/// credential itself).
fn confirmation_key(cx: &Context, scope: &LinkScope) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(cx.authorization.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(scope.ns.as_bytes());
    h.update([0]);
    h.update(scope.repo.as_bytes());
    h.finalize().into()
}

fn confirmed(key: &[u8; 32]) -> bool {
    confirmations()
        .lock()
        .map(|c| c.get(key).is_some_and(|at| at.elapsed() < CONFIRM_FOR))
        .unwrap_or(false)
}

fn confirm(key: [u8; 32]) {
    if let Ok(mut c) = confirmations().lock() {
        if c.len() >= MAX_CONFIRMATIONS {
            c.retain(|_, at| at.elapsed() < CONFIRM_FOR);
            if c.len() >= MAX_CONFIRMATIONS {
                c.clear();
            }
        }
        c.insert(key, Instant::now());
    }
}

/// Whether the layer is acr's own (injected by the pipeline or the request's token).
fn own_layer(cx: &Context, digest: &Digest) -> bool {
    crate::injection::known_layer(digest).is_some()
        || cx
            .client_injection
            .as_ref()
            .is_some_and(|i| i.layers.iter().any(|l| l.gzip_digest == *digest))
}

/// May the stored `digest` (a blob or a manifest) be served to this request? See the module
/// documentation. The error is what the client gets.
pub async fn may_serve(
    cx: &mut Context,
    store: &Arc<Store>,
    resource: Resource,
    digest: &Digest,
) -> Result<(), RegistryError> {
    if resource == Resource::Blobs && own_layer(cx, digest) {
        return Ok(());
    }
    let Some(scope) = scope_of(cx) else {
        return Ok(());
    };
    let plain = scope.repository();
    let linked = links::linked(store, &plain, digest).await
        || (scope.token.is_some() && links::linked(store, &scope, digest).await);
    tracing::debug!(upstream = %scope.ns, name = %scope.repo, digest = %digest, linked, "may the stored object be served?");
    let key = cx.forward_auth.then(|| confirmation_key(cx, &scope));
    match &key {
        None if linked => return Ok(()),
        Some(k) if linked && confirmed(k) => return Ok(()),
        _ => {}
    }
    let (what, headers) = match resource {
        Resource::Manifests => ("manifests", vec![("Accept", ALL_MANIFESTS.join(", "))]),
        _ => ("blobs", Vec::new()),
    };
    let path = format!("/v2/{}/{what}/{digest}", scope.repo);
    let resp = send(cx, reqwest::Method::HEAD, &path, &headers).await?;
    if !resp.status().is_success() {
        let e = upstream_error(cx, resp, resource).await;
        tracing::info!(
            upstream = %scope.ns,
            name = %scope.repo,
            digest = %digest,
            status = e.status,
            "a stored object was not served: the upstream does not confirm it for this repository and client"
        );
        return Err(e);
    }
    if let Err(e) = links::record(store, &plain, digest) {
        tracing::warn!(digest = %digest, "could not link the object to its repository: {e}");
    }
    if let Some(k) = key {
        confirm(k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_expire_and_stay_bounded() {
        let k = [7u8; 32];
        assert!(!confirmed(&k));
        confirm(k);
        assert!(confirmed(&k));
        for i in 0..(MAX_CONFIRMATIONS + 10) {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k[31] = 1;
            confirm(k);
        }
        assert!(confirmations().lock().unwrap().len() <= MAX_CONFIRMATIONS);
    }
}
