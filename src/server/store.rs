//! A proxy's content store, as its `+ .proxy` settings describe it:
//! `: .cache DIR | s3://bucket/prefix | az://container/prefix | off` (default: `cache/`
//! beside the pipeline), `: .cache-dir DIR` (the local part of a shared cache), `: .cache-endpoint URL`, `: .ttl [NS] DURATION` (default 5 minutes), `: .max-size SIZE`;
//! the largest blob it takes from `ACR_MAX_BLOB_SIZE` (see `server::limits`).

use std::path::Path;
use std::sync::Arc;

use acr_plugins::metrics::Metrics;
use acr_plugins::store::remote::RemoteConfig;
use acr_plugins::store::{Store, StoreConfig};

use crate::world::settings::{resolve, CacheSetting};
use crate::world::ProxyPlan;

/// The store config of `proxy`, or `None` for `: .cache off`.
pub fn config(
    proxy: &ProxyPlan,
    base_dir: &Path,
    world_dir: &Path,
) -> Result<Option<StoreConfig>, String> {
    let settings = &proxy.settings;
    let root = match &settings.cache_dir {
        Some(dir) => resolve(base_dir, dir),
        None => world_dir.join("cache"),
    };
    let remote = match &settings.cache {
        CacheSetting::Off => return Ok(None),
        CacheSetting::Default | CacheSetting::Dir => None,
        CacheSetting::Shared(url) => Some(RemoteConfig::parse(
            url,
            settings.cache_endpoint.as_deref(),
        )?),
    };
    Ok(Some(StoreConfig {
        root,
        remote,
        max_size: settings.max_size,
        ttl: settings.ttl,
        ttl_by_ns: settings.ttl_by_ns.clone(),
        idle_timeout: acr_plugins::store::DEFAULT_IDLE_TIMEOUT,
        max_blob_size: super::limits::max_blob_size()?,
    }))
}

/// Opens the store of `proxy`.
pub fn open(
    proxy: &ProxyPlan,
    base_dir: &Path,
    world_dir: &Path,
    metrics: Arc<Metrics>,
) -> Result<Option<Arc<Store>>, String> {
    let Some(config) = config(proxy, base_dir, world_dir)? else {
        return Ok(None);
    };
    let root = config.root.clone();
    let remote = config.remote.as_ref().map(ToString::to_string);
    let store = Store::open(config, metrics)
        .map_err(|e| format!("cannot open the store at {}: {e}", root.display()))?;
    tracing::info!(
        root = %root.display(),
        shared = %remote.as_deref().unwrap_or("-"),
        "content store ready"
    );
    Ok(Some(store))
}
