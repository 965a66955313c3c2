//! Putting the injected layers in the store: packed and `data:` layers from memory, file
//! layers from disk, remote layers fetched once and checked against both declared digests;
//! and, for `.pull`, putting back a layer the store lost.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::layer;
use crate::context::Context;
use crate::injection::{known_layer, Content, Layer};
use crate::oci::{Digest, RegistryError};
use crate::store::Store;

/// The HTTP client for layer URLs: the mirror's, else a new one.
pub fn http_of(cx: &Context) -> reqwest::Client {
    match &cx.registry {
        Some(shared) => shared.http.clone(),
        None => reqwest::Client::new(),
    }
}

pub fn store_failed(e: std::io::Error) -> RegistryError {
    RegistryError::new(500, "UNKNOWN", format!("the store failed: {e}"))
}
/// Puts each layer in the store (a no-op when it is there) and returns their sizes.
pub async fn ensure_layers(
    http: &reqwest::Client,
    store: &Arc<Store>,
    layers: &[&Layer],
) -> Result<Vec<u64>, RegistryError> {
    let mut sizes = Vec::with_capacity(layers.len());
    for l in layers {
        sizes.push(ensure_layer(http, store, l).await?);
    }
    Ok(sizes)
}

/// Puts one layer in the store, fetching a remote one (checked against both declared
/// digests). Returns its size.
pub async fn ensure_layer(
    http: &reqwest::Client,
    store: &Arc<Store>,
    l: &Layer,
) -> Result<u64, RegistryError> {
    if let Some(size) = store.blob_size(&l.gzip_digest) {
        return Ok(size);
    }
    match &l.content {
        Content::Bytes(b) => {
            store
                .put_blob(&l.gzip_digest, b)
                .await
                .map_err(store_failed)?;
            Ok(b.len() as u64)
        }
        Content::File(path) => store
            .put_blob_file(&l.gzip_digest, path)
            .await
            .map_err(|e| {
                RegistryError::new(500, "UNKNOWN", format!("the layer {}: {e}", path.display()))
            }),
        Content::Remote(url) => fetch_remote(http, store, l, url).await,
    }
}

/// The largest layer acr fetches from a URL.
const MAX_REMOTE_LAYER: u64 = 4 * 1024 * 1024 * 1024;

async fn fetch_remote(
    http: &reqwest::Client,
    store: &Arc<Store>,
    l: &Layer,
    url: &str,
) -> Result<u64, RegistryError> {
    use std::io::Write;
    let failed = |what: String| RegistryError::bad_gateway(format!("the layer at {url}: {what}"));
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| failed(format!("unreachable: {e}")))?;
    if !resp.status().is_success() {
        return Err(failed(format!("answered {}", resp.status())));
    }
    let tmp = store.temp_file(l.gzip_digest.hex());
    let mut file = std::fs::File::create(&tmp).map_err(store_failed)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let result: Result<(), RegistryError> = async {
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed(format!("the transfer broke: {e}")))?
        {
            size += chunk.len() as u64;
            if size > MAX_REMOTE_LAYER {
                return Err(failed(format!("larger than {MAX_REMOTE_LAYER} bytes")));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(store_failed)?;
        }
        file.sync_all().map_err(store_failed)?;
        let got = Digest::from_sha256(hasher.finalize().into());
        if got != l.gzip_digest {
            return Err(failed(format!(
                "its bytes hash to {got}, not the declared {}",
                l.gzip_digest
            )));
        }
        let path = tmp.clone();
        let tar =
            tokio::task::spawn_blocking(move || layer::gunzip_digest(std::fs::File::open(path)?))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(format!("not a gzipped tar: {e}")))?;
        if tar != l.tar_digest {
            return Err(failed(format!(
                "it unpacks to {tar}, not the declared diff-id {}",
                l.tar_digest
            )));
        }
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    store
        .commit_blob_file(&l.gzip_digest, &tmp, size)
        .await
        .map_err(store_failed)?;
    Ok(size)
}

/// For `.pull`: a layer acr injects that the store lacks (evicted, or never stored on this
/// replica) is put back from its source. Returns whether it now is in the store.
pub async fn restore_layer(http: &reqwest::Client, store: &Arc<Store>, digest: &Digest) -> bool {
    let Some(l) = known_layer(digest) else {
        return false;
    };
    match ensure_layer(http, store, &l).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(digest = %digest, "could not restore an injected layer: {}", e.message);
            false
        }
    }
}
