//! A proxy's content store, as its `+ .proxy` settings describe it:
//! `: .cache DIR | s3://bucket/prefix | off` (default: `cache/` beside the pipeline),
//! `: .cache-endpoint URL`, `: .ttl [NS] DURATION` (default 5 minutes), `: .max-size SIZE`;
//! the largest blob it takes from `ACR_MAX_BLOB_SIZE` (see `server::limits`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use acr_plugins::metrics::Metrics;
use acr_plugins::parse_duration;
use acr_plugins::store::remote::RemoteConfig;
use acr_plugins::store::{parse_size, Store, StoreConfig};

use crate::world::ProxyPlan;

/// The default TTL of a cached tag.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

fn settings<'a>(proxy: &'a ProxyPlan, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    proxy.settings.all(name).filter_map(|v| v.as_str())
}

/// The store config of `proxy`, or `None` for `: .cache off`.
pub fn config(
    proxy: &ProxyPlan,
    base_dir: &Path,
    world_dir: &Path,
) -> Result<Option<StoreConfig>, String> {
    let location = settings(proxy, "cache").last().unwrap_or("").trim();
    let local_default = world_dir.join("cache");
    let (root, remote) = match location {
        "off" | "none" => return Ok(None),
        "" => (local_default, None),
        url if url.starts_with("s3://") => {
            let endpoint = settings(proxy, "cache-endpoint").last();
            (local_default, Some(RemoteConfig::parse(url, endpoint)?))
        }
        dir => {
            let p = PathBuf::from(dir);
            (if p.is_absolute() { p } else { base_dir.join(p) }, None)
        }
    };
    let mut ttl = DEFAULT_TTL;
    let mut ttl_by_ns = Vec::new();
    for value in settings(proxy, "ttl") {
        let words: Vec<&str> = value.split_whitespace().collect();
        match words.as_slice() {
            [d] => ttl = parse_duration(d).map_err(|e| e.message)?,
            [ns, d] => ttl_by_ns.push((ns.to_string(), parse_duration(d).map_err(|e| e.message)?)),
            _ => return Err(format!("`.ttl {value}` is not [NS] DURATION")),
        }
    }
    let max_size = match settings(proxy, "max-size").last() {
        Some(s) => Some(parse_size(s).ok_or_else(|| format!("`{s}` is not a size"))?),
        None => None,
    };
    Ok(Some(StoreConfig {
        root,
        remote,
        max_size,
        ttl,
        ttl_by_ns,
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
    let remote = config
        .remote
        .as_ref()
        .map(|r| format!("s3://{}/{}", r.bucket, r.prefix));
    let store = Store::open(config, metrics)
        .map_err(|e| format!("cannot open the store at {}: {e}", root.display()))?;
    tracing::info!(
        root = %root.display(),
        s3 = %remote.as_deref().unwrap_or("-"),
        "content store ready"
    );
    Ok(Some(store))
}
