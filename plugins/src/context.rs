//! The typed context a sequence of plugin calls runs over.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::call::PluginError;
use crate::call::{Invocation, RunFuture};
use crate::registry::{
    AuthState, ClientRequest, Credentials, Reply, RequestState, Shared, Upstream,
};
use crate::store::Store;
use crate::value::{Props, Value};

/// What the runtime offers plugins that need more than the context: serving a block's proxy.
/// The runtime implements it; plugins never learn what serves the requests.
pub trait Host: Send + Sync {
    /// Serves the `+ .proxy` of block `block` until acr stops.
    fn serve(self: Arc<Self>, block: u32) -> RunFuture<'static>;
    /// The address the proxy of `block` listens on, if it has one.
    fn proxy_address(&self, block: u32) -> Option<String>;
}

/// What one call hands to the next.
///
/// `vars` are the block's control values (`: work_dir .symbol ...` before any `+`), the same for
/// every call of the block. `values` is what earlier calls left for later ones. In a proxy
/// route, `request` is the client's request, `upstream` where it goes, and the calls build
/// `reply`.
#[derive(Default)]
pub struct Context {
    pub vars: Props,
    pub values: Props,
    /// Anchors relative paths (the directory acr runs in).
    pub base_dir: PathBuf,
    /// The directory of the pipeline file: where credential files and hosts.toml go by default.
    pub world_dir: PathBuf,
    /// How many calls have run in this context, for logs and tests.
    pub calls_run: u64,
    pub host: Option<Arc<dyn Host>>,
    pub registry: Option<Arc<Shared>>,
    /// The proxy's content store, when it has one (`: .cache`).
    pub store: Option<Arc<Store>>,
    pub request: Option<ClientRequest>,
    pub upstream: Option<Upstream>,
    pub credentials: Option<Credentials>,
    /// `.authn` ran: answer the upstream's challenges.
    pub authn: bool,
    /// `.forward-auth` ran: the client's own Authorization goes upstream.
    pub forward_auth: bool,
    /// The `Authorization` header for the upstream. Never logged.
    pub authorization: Option<String>,
    /// `.authn` could not reach the upstream (or its token service) in time: what it found,
    /// which the request's upstream calls answer at once instead of waiting again.
    pub upstream_unavailable: Option<crate::oci::RegistryError>,
    pub reply: Option<Reply>,
    /// What one plugin leaves for another (`.inject-layer` for `.resolve`, `.discover` for
    /// `.teleport`), one value per type: a new plugin adds a type, not a field here.
    pub slots: Slots,
    /// The injection a client asked for with a container token (`/v2/wt/TOKEN/...`).
    pub client_injection: Option<std::sync::Arc<crate::injection::Injection>>,
    /// The id of the container token the request came through (never the token itself): the
    /// scope of what acr made for that token (see `access`).
    pub client_scope: Option<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("vars", &self.vars)
            .field("values", &self.values)
            .field("base_dir", &self.base_dir)
            .field("request", &self.request)
            .field("upstream", &self.upstream)
            .field("credentials", &self.credentials)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("reply", &self.reply)
            .finish()
    }
}

impl Context {
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        let base_dir = base_dir.into();
        Self {
            world_dir: base_dir.clone(),
            base_dir,
            ..Self::default()
        }
    }

    /// A value that earlier calls left, else the block's control value of that name.
    pub fn lookup(&self, name: &str) -> Option<&Value> {
        self.values.get(name).or_else(|| self.vars.get(name))
    }

    pub fn lookup_str(&self, name: &str) -> Option<&str> {
        self.lookup(name).and_then(Value::as_str)
    }

    /// The directory named by control value `name` (relative ones against `base_dir`), if set.
    pub fn dir(&self, name: &str) -> Option<PathBuf> {
        self.lookup_str(name).map(|d| self.resolve(Path::new(d)))
    }

    /// The request a proxy route is serving, with the shared state and upstream that come with
    /// it; outside a route, an error naming the plugin that needs one.
    pub fn route(
        &self,
        call: &Invocation,
    ) -> Result<(ClientRequest, Arc<Shared>, Upstream), PluginError> {
        match (&self.request, &self.registry, &self.upstream) {
            (Some(r), Some(s), Some(u)) => Ok((r.clone(), s.clone(), u.clone())),
            _ => Err(PluginError::failed(
                call,
                format!(
                    "`.{}` works in a proxy route (under `+ .proxy`)",
                    call.plugin
                ),
            )),
        }
    }

    /// The block's `work_dir`, else the directory of the pipeline file.
    pub fn work_dir(&self) -> PathBuf {
        self.dir("work_dir")
            .unwrap_or_else(|| self.world_dir.clone())
    }

    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// The upstream client works over the context's request fields.
impl RequestState for Context {
    fn shared(&self) -> Option<&Arc<Shared>> {
        self.registry.as_ref()
    }

    fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }

    fn request(&self) -> Option<&ClientRequest> {
        self.request.as_ref()
    }

    fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    fn forwards_client_auth(&self) -> bool {
        self.forward_auth
    }

    fn auth(&mut self) -> AuthState<'_> {
        AuthState {
            answers_challenges: &mut self.authn,
            authorization: &mut self.authorization,
            unavailable: &mut self.upstream_unavailable,
        }
    }
}

/// Plugin state keyed by its type: each plugin keeps what it hands to later calls in a type of
/// its own (`Injection`, `Referrers`), so plugins add no field to [`Context`].
#[derive(Default)]
pub struct Slots(HashMap<TypeId, Box<dyn Any + Send>>);

impl Slots {
    /// The value of type `T` an earlier call left, if any.
    pub fn get<T: Any + Send>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// Changes the value of type `T` with `change`, starting from `T::default()` when no call
    /// left one yet.
    pub fn update<T: Any + Send + Default>(&mut self, change: impl FnOnce(&mut T)) {
        let mut value = self.take::<T>().unwrap_or_default();
        change(&mut value);
        self.insert(value);
    }

    /// Takes the value of type `T` out, if a call left one.
    pub fn take<T: Any + Send>(&mut self) -> Option<T> {
        let boxed = self.0.remove(&TypeId::of::<T>())?;
        boxed.downcast().ok().map(|value| *value)
    }

    /// Leaves `value` for later calls, in place of any earlier value of its type.
    pub fn insert<T: Any + Send>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Box::new(value));
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn slots_keep_one_value_per_type() {
        let mut slots = Slots::default();
        assert_eq!(slots.get::<u32>(), None);
        slots.update(|n: &mut u32| *n += 2);
        slots.update(|n: &mut u32| *n += 3);
        slots.insert(String::from("x"));
        assert_eq!(slots.get::<u32>(), Some(&5));
        assert_eq!(slots.take::<String>().as_deref(), Some("x"));
        assert_eq!(slots.get::<String>(), None);
    }
}
