//! The proxy host: what serves a block's `+ .proxy` for the engine (the `Host` the `.mirror`
//! plugin calls). Starting a proxy makes its state (store, container tokens, client auth) and
//! its TLS acceptor, so a bad setting or a missing file is a failed start, then listens (see
//! `connection`). `in_process` answers a request without a network, for `acr warm`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acr_plugins::call::RunFuture;
use acr_plugins::oci::RegistryError;
use acr_plugins::registry::{Reply, Shared};
use acr_plugins::{Host, PluginError};
use tokio::sync::watch;

use super::state::ProxyStates;
use super::{observe, route, throttle, tls};
use crate::world::settings::resolve;
use crate::world::{Pipeline, ProxyPlan};

/// How long a starting proxy waits for its upstreams' challenges before it listens.
const LEARN_FIRST: Duration = Duration::from_millis(250);

/// Serves proxies for the engine: the `Host` the `.mirror` plugin calls.
pub struct ProxyHost {
    pub(super) pipelines: watch::Receiver<Arc<Pipeline>>,
    pub(super) shared: Arc<Shared>,
    pub(super) base_dir: PathBuf,
    pub(super) world_dir: PathBuf,
    serving: Mutex<HashSet<(String, String)>>,
    /// Each proxy's store, container tokens and client authentication.
    pub(super) states: ProxyStates,
    /// Request counters, latencies, recent requests and store samples.
    pub observer: Arc<observe::Observer>,
    /// Set when acr is stopping: listeners close, connections finish what they serve.
    pub(super) stopping: watch::Sender<bool>,
    /// Connections open now.
    pub(super) active: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) sampling: std::sync::atomic::AtomicBool,
    /// The last readiness check: when, and its answer.
    pub(super) readiness: Mutex<Option<(Instant, Result<String, String>)>>,
    /// Per-client limits of logins, credential checks and container tokens.
    pub(super) throttles: throttle::Throttles,
}

impl ProxyHost {
    pub fn new(
        pipelines: watch::Receiver<Arc<Pipeline>>,
        shared: Arc<Shared>,
        base_dir: PathBuf,
        world_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            pipelines,
            shared,
            base_dir,
            world_dir,
            serving: Mutex::new(HashSet::new()),
            states: ProxyStates::default(),
            observer: Arc::new(observe::Observer::default()),
            stopping: watch::channel(false).0,
            active: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            sampling: std::sync::atomic::AtomicBool::new(false),
            readiness: Mutex::new(None),
            throttles: throttle::Throttles::default(),
        })
    }

    pub(super) fn current(&self) -> Arc<Pipeline> {
        self.pipelines.borrow().clone()
    }

    /// The TLS files of `proxy` (`: .tls-cert`, `: .tls-key`, `: .tls-client-ca`), relative
    /// paths against the directory acr runs in.
    fn tls_files(&self, proxy: &ProxyPlan) -> Result<Option<tls::TlsFiles>, String> {
        let tls = &proxy.settings.tls;
        let path = |p: &Option<PathBuf>| p.as_deref().map(|p| resolve(&self.base_dir, p));
        match (path(&tls.cert), path(&tls.key)) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(tls::TlsFiles {
                cert,
                key,
                client_ca: path(&tls.client_ca),
            })),
            _ => Err("https needs both `: .tls-cert FILE` and `: .tls-key FILE`".into()),
        }
    }

    /// Answers a request without a network: what `acr warm` pulls through, so the store
    /// fills exactly as a client's pull would fill it. `path` may carry a query.
    pub async fn in_process(
        &self,
        key: &(String, String),
        method: &str,
        path: &str,
        headers: &hyper::HeaderMap,
    ) -> Result<Reply, RegistryError> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let ns = route::query_value(query, "ns");
        let peer = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        self.answer(key, headers, method, path, query, ns.as_deref(), peer)
            .await
            .0
    }

    /// Waits (at most `limit`) until every store has finished copying blobs to its S3 tier.
    pub async fn settle_stores(&self, limit: Duration) -> usize {
        let stores = self.states.stores();
        let mut left = 0;
        for s in stores {
            left += s.settle(limit).await;
        }
        left
    }
}

impl Host for ProxyHost {
    fn serve(self: Arc<Self>, block: u32) -> RunFuture<'static> {
        Box::pin(async move {
            let pipeline = self.current();
            let Some(proxy) = pipeline.proxy_of_block(block) else {
                return Err(PluginError::Failed {
                    plugin: "mirror",
                    id: block,
                    message: format!("block {block} has no `+ .proxy ADDR` to serve"),
                });
            };
            let key = proxy.key.clone();
            let address = proxy.address.clone();
            let failed = |message: String| PluginError::Failed {
                plugin: "mirror",
                id: block,
                message,
            };
            // Make the proxy's state before listening: a bad cache setting stops the start.
            let state = self.state_of(proxy);
            state.store.clone().map_err(failed)?;
            // And the TLS and client-auth files: a missing certificate is a failed start, not
            // a mirror that refuses every handshake.
            let tls = match self.tls_files(proxy).map_err(failed)? {
                Some(files) => Some(tls::acceptor(&files).map_err(failed)?),
                None => None,
            };
            state.auth.clone().map_err(failed)?;
            // The upstreams' challenges are learnt now, not on a client's first pull; a slow
            // upstream delays listening by LEARN_FIRST at most (its probe goes on).
            let learning: Vec<_> = super::upstream::named(proxy)
                .into_iter()
                .map(|upstream| {
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        acr_plugins::registry::client::learn_challenge(&shared, &upstream).await
                    })
                })
                .collect();
            drop(pipeline);
            let _ =
                tokio::time::timeout(LEARN_FIRST, futures_util::future::join_all(learning)).await;
            let fresh = self
                .serving
                .lock()
                .map(|mut s| s.insert(key.clone()))
                .unwrap_or(false);
            if !fresh {
                // Already served (a second `.mirror` in the block, or a loop pass): keep waiting.
                std::future::pending::<()>().await;
            }
            let result = self.clone().run_server(key.clone(), address, tls).await;
            if let Ok(mut s) = self.serving.lock() {
                s.remove(&key);
            }
            result
        })
    }

    fn proxy_address(&self, block: u32) -> Option<String> {
        self.current()
            .proxy_of_block(block)
            .map(|p| p.address.clone())
    }
}
