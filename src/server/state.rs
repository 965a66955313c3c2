//! The state of one served proxy: its content store, its container tokens and its client
//! authentication, made from the proxy's typed settings when it starts serving (or at its
//! first request, for `acr warm` and the fuzz target) and looked up once per request.
//!
//! A reload that changes the settings makes a new state on the next request: container tokens
//! with another lifetime and client authentication with other files or rules take effect
//! then; the store stays the one opened first (a new cache setting takes effect at the next
//! start). A part that failed (a store that would not open, a users file that cannot be read)
//! is tried again at every request until it works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use acr_plugins::inject_layer::token::{self as container_token, ContainerTokens};
use acr_plugins::store::Store;

use super::clients::ClientAuth;
use super::{store, ProxyHost};
use crate::world::settings::ClientAuthSettings;
use crate::world::{ProxyPlan, ProxySettings};

/// A proxy's block, by name and symbol: what identifies it across reloads.
pub type ProxyKey = (String, String);

/// What a proxy serves with, besides its pipeline.
pub struct ProxyState {
    /// The settings this state was made from.
    settings: Arc<ProxySettings>,
    /// The content store (`None`: `: .cache off`).
    pub store: Result<Option<Arc<Store>>, String>,
    /// The container tokens, when `: .container-tokens TTL` turns them on.
    pub tokens: Option<Arc<ContainerTokens>>,
    /// The client authentication's files and rules, paths resolved.
    auth_settings: Option<ClientAuthSettings>,
    /// The client authentication, when `: .users FILE` turns it on.
    pub auth: Result<Option<Arc<ClientAuth>>, String>,
}

/// Every proxy's state, by its block.
#[derive(Default)]
pub struct ProxyStates(Mutex<HashMap<ProxyKey, Arc<ProxyState>>>);

impl ProxyStates {
    /// Every store opened so far.
    pub fn stores(&self) -> Vec<Arc<Store>> {
        self.0
            .lock()
            .map(|t| {
                t.values()
                    .filter_map(|s| s.store.as_ref().ok().cloned().flatten())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl ProxyState {
    /// Whether this state was made from `settings` and has no part to try again.
    fn current_for(&self, settings: &Arc<ProxySettings>) -> bool {
        Arc::ptr_eq(&self.settings, settings) && self.store.is_ok() && self.auth.is_ok()
    }
}

impl ProxyHost {
    /// The state of `proxy`, made when first asked for and again when its settings change.
    pub(super) fn state_of(&self, proxy: &ProxyPlan) -> Arc<ProxyState> {
        let Ok(mut table) = self.states.0.lock() else {
            return Arc::new(self.make_state(proxy, None));
        };
        let previous = table.get(&proxy.key);
        if let Some(state) = previous.filter(|s| s.current_for(&proxy.settings)) {
            return state.clone();
        }
        let state = Arc::new(self.make_state(proxy, previous.map(|s| &**s)));
        table.insert(proxy.key.clone(), state.clone());
        state
    }

    /// A state for `proxy`, keeping what of `previous` its settings leave unchanged.
    fn make_state(&self, proxy: &ProxyPlan, previous: Option<&ProxyState>) -> ProxyState {
        let settings = &proxy.settings;
        let store = match previous.map(|p| &p.store) {
            Some(Ok(kept)) => Ok(kept.clone()),
            _ => store::open(
                proxy,
                &self.base_dir,
                &self.world_dir,
                self.shared.metrics.clone(),
            ),
        };
        let tokens = settings.container_tokens.map(|ttl| {
            match previous
                .and_then(|p| p.tokens.clone())
                .filter(|t| t.ttl() == ttl)
            {
                Some(kept) => kept,
                None => {
                    let dir = container_token::tokens_dir(
                        &self.world_dir,
                        &format!("{}-{}", proxy.key.0, proxy.key.1),
                    );
                    Arc::new(ContainerTokens::new(dir, ttl))
                }
            }
        });
        let auth_settings = settings
            .client_auth
            .as_ref()
            .map(|a| a.resolved(&self.base_dir));
        let auth = match (&auth_settings, previous) {
            (None, _) => Ok(None),
            (Some(wanted), Some(p))
                if p.auth_settings.as_ref() == Some(wanted) && p.auth.is_ok() =>
            {
                p.auth.clone()
            }
            (Some(wanted), _) => ClientAuth::new(wanted).map(|a| Some(Arc::new(a))),
        };
        ProxyState {
            settings: settings.clone(),
            store,
            tokens,
            auth_settings,
            auth,
        }
    }
}
