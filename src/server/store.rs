//! A proxy's content store, as its `+ .proxy` settings describe it:
//! `: .cache DIR | s3://bucket/prefix | az://container/prefix | off` (default: `cache/`
//! beside the pipeline), `: .cache-dir DIR` (the local part of a shared cache), `: .cache-endpoint URL`, `: .ttl [NS] DURATION` (default 5 minutes), `: .max-size SIZE`;
//! the largest blob it takes from `ACR_MAX_BLOB_SIZE` (see `server::limits`).

use std::path::Path;
use std::sync::Arc;

use acr_plugins::metrics::Metrics;
use acr_plugins::store::lease::FleetConfig;
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
    let fleet = match remote {
        Some(_) => fleet(proxy, base_dir)?,
        None => None,
    };
    Ok(Some(StoreConfig {
        root,
        remote,
        max_size: settings.max_size,
        ttl: settings.ttl,
        ttl_by_ns: settings.ttl_by_ns.clone(),
        idle_timeout: acr_plugins::store::DEFAULT_IDLE_TIMEOUT,
        max_blob_size: super::limits::max_blob_size()?,
        fleet,
    }))
}

/// How a replica on a shared cache coordinates with the others: it needs the shared
/// `: .token-secret` (requests between replicas are signed with it) and an address they reach
/// it at: `: .advertise URL`, else `POD_IP` (Kubernetes' downward API) with the listen port,
/// else the listen address (an unspecified one, `0.0.0.0`, becomes the address of the
/// interface the default route leaves by).
fn fleet(proxy: &ProxyPlan, base_dir: &Path) -> Result<Option<FleetConfig>, String> {
    let settings = &proxy.settings;
    let Some(secret) = &settings.token_secret else {
        tracing::warn!(
            proxy = %proxy.address,
            "a shared cache without `: .token-secret`: this replica fetches on its own, without coordinating with the others"
        );
        return Ok(None);
    };
    let secret = super::clients::read_token_secret(&resolve(base_dir, secret))?;
    let scheme = if settings.tls.cert.is_some() {
        "https"
    } else {
        "http"
    };
    let advertise = match &settings.advertise {
        Some(url) => url.clone(),
        None => format!("{scheme}://{}", advertised_address(&proxy.address)),
    };
    tracing::info!(advertise = %advertise, "replicas on the shared cache coordinate their fetches");
    Ok(Some(FleetConfig {
        advertise,
        peer_key: acr_plugins::store::peer::derive_key(&secret),
        lease_ttl: acr_plugins::store::lease::DEFAULT_LEASE_TTL,
    }))
}

/// `host:port` the other replicas can reach, from the listen address `listen`.
fn advertised_address(listen: &str) -> String {
    let port = listen.rsplit_once(':').map(|(_, p)| p).unwrap_or("5000");
    if let Ok(ip) = std::env::var("POD_IP") {
        if let Ok(ip) = ip.trim().parse::<std::net::IpAddr>() {
            return std::net::SocketAddr::new(ip, port.parse().unwrap_or(5000)).to_string();
        }
    }
    let host = listen.rsplit_once(':').map(|(h, _)| h).unwrap_or(listen);
    let unspecified = host.is_empty()
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
    if !unspecified {
        return listen.to_string();
    }
    // The address of the interface the default route leaves by (no packet is sent).
    let outward = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    format!("{outward}:{port}")
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
