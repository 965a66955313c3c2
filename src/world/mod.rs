//! The World: what a compiled runmd file declares, as entities and components (specs ECS).
//!
//! An entity per block, per plugin call and per route, created in file order so their ids are
//! stable: the ids `acr dump` prints and `mirror start --id` takes. Entity 0 is the root. A file
//! is compiled once per version (`compile`), never per request; the engine and the server read
//! the finished World through [`Pipeline`]'s accessors, which hand out plain data.
//!
//! `compile` (with `compile/`) gives each line its meaning; `settings` types a proxy's
//! settings once, so the server never reads a setting's text; `dump` prints the tree.

pub mod chain;
pub mod compile;
pub mod dump;
pub mod settings;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use acr_plugins::registry::{Method, Resource};
use acr_plugins::{Invocation, PluginSpec, Props};
use specs::{Component, Entity, Join, VecStorage, World, WorldExt};

use crate::runmd::Span;

pub use compile::{compile, compile_file};
pub use settings::ProxySettings;

macro_rules! component {
    ($($t:ty),* $(,)?) => {
        $(impl Component for $t {
            type Storage = VecStorage<Self>;
        })*
    };
}

/// A block: `` ``` name symbol `` (an event block) or `` ``` symbol `` (a control block, name "").
#[derive(Debug, Clone)]
pub struct Block {
    pub name: String,
    pub symbol: String,
    pub span: Span,
    /// Control values (`: key .type value` before any `+`), given to every call of the block.
    pub control: Arc<Props>,
    /// Stable attributes (`+ name .type value`) and their properties (`name::symbol`).
    pub props: Props,
}

/// A plugin call: `: .plugin input` under `+ .runtime` or under a route.
#[derive(Debug, Clone)]
pub struct Call {
    pub spec: &'static PluginSpec,
    pub invocation: Arc<Invocation>,
    pub span: Span,
    pub block: Entity,
}

/// A proxy route: `: .manifests head, get` and the calls that follow it.
#[derive(Debug, Clone)]
pub struct Route {
    pub resource: Resource,
    pub methods: Vec<Method>,
    pub span: Span,
    pub block: Entity,
}

/// The calls of an event block's `+ .runtime`, or of a route, in order.
#[derive(Debug, Clone, Default)]
pub struct Sequence(pub Vec<Entity>);

/// `+ .engine` in a control block.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub events: Vec<EventRef>,
    pub lifecycle: Lifecycle,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef {
    pub block: Entity,
    /// `.once E`: runs on the first pass only.
    pub once: bool,
}

/// What an engine does after its last event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lifecycle {
    /// Stop (the default).
    #[default]
    Exit,
    /// Start over, forever.
    Loop,
    /// Run the events N times in all, then stop.
    Repeat(u32),
    /// Hand over to the engine of another control block.
    Next(String),
}

/// `+ .proxy ADDR` in an event block: where the routes of the block are served.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    pub address: String,
    pub span: Span,
    pub routes: Vec<Entity>,
    /// Settings written under `+ .proxy` that are not routes or calls.
    pub settings: Arc<ProxySettings>,
}

component!(Block, Call, Route, Sequence, EngineSpec, ProxySpec);

/// One call ready to run: the plugin, what it was given, and its block's control values.
#[derive(Debug, Clone)]
pub struct CallPlan {
    pub id: u32,
    pub spec: &'static PluginSpec,
    pub invocation: Arc<Invocation>,
    pub control: Arc<Props>,
}

/// An event of an engine, with its calls.
#[derive(Debug, Clone)]
pub struct EventPlan {
    pub id: u32,
    pub name: String,
    pub once: bool,
    pub calls: Vec<CallPlan>,
}

/// An engine, ready to run.
#[derive(Debug, Clone)]
pub struct EnginePlan {
    pub id: u32,
    pub symbol: String,
    pub events: Vec<EventPlan>,
    pub lifecycle: Lifecycle,
}

/// A route, ready to serve.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub id: u32,
    pub resource: Resource,
    pub methods: Vec<Method>,
    pub calls: Vec<CallPlan>,
}

/// A proxy and its routes.
#[derive(Debug, Clone)]
pub struct ProxyPlan {
    pub block: u32,
    /// The block's name and symbol: what identifies the proxy across reloads.
    pub key: (String, String),
    pub address: String,
    /// The hosts of the block's `.mirror` calls, in order: the first is the default upstream.
    pub mirror_hosts: Vec<String>,
    pub control: Arc<Props>,
    pub settings: Arc<ProxySettings>,
    pub routes: Vec<RoutePlan>,
}

/// A compiled runmd file.
pub struct Pipeline {
    pub path: PathBuf,
    pub world: World,
    /// Control blocks with an engine, by symbol.
    pub engines: BTreeMap<String, Entity>,
    /// Every block, in file order.
    pub blocks: Vec<Entity>,
    /// Every `+ .proxy`, ready to serve (computed once per compile).
    pub proxies: Vec<ProxyPlan>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("path", &self.path)
            .field("engines", &self.engines.keys().collect::<Vec<_>>())
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Pipeline {
    pub fn engine_names(&self) -> impl Iterator<Item = &str> {
        self.engines.keys().map(String::as_str)
    }

    /// The engine of control block `symbol`, with every event's calls.
    pub fn engine(&self, symbol: &str) -> Option<EnginePlan> {
        let entity = *self.engines.get(symbol)?;
        let engines = self.world.read_storage::<EngineSpec>();
        let blocks = self.world.read_storage::<Block>();
        let engine = engines.get(entity)?;
        let events = engine
            .events
            .iter()
            .filter_map(|e| {
                let block = blocks.get(e.block)?;
                Some(EventPlan {
                    id: e.block.id(),
                    name: block.name.clone(),
                    once: e.once,
                    calls: self.calls_of(e.block),
                })
            })
            .collect();
        Some(EnginePlan {
            id: entity.id(),
            symbol: symbol.to_string(),
            events,
            lifecycle: engine.lifecycle.clone(),
        })
    }

    /// The calls in the sequence of `entity` (an event block or a route).
    pub fn calls_of(&self, entity: Entity) -> Vec<CallPlan> {
        let sequences = self.world.read_storage::<Sequence>();
        let calls = self.world.read_storage::<Call>();
        let blocks = self.world.read_storage::<Block>();
        let Some(seq) = sequences.get(entity) else {
            return Vec::new();
        };
        seq.0
            .iter()
            .filter_map(|c| {
                let call = calls.get(*c)?;
                let control = blocks
                    .get(call.block)
                    .map(|b| b.control.clone())
                    .unwrap_or_default();
                Some(CallPlan {
                    id: c.id(),
                    spec: call.spec,
                    invocation: call.invocation.clone(),
                    control,
                })
            })
            .collect()
    }

    /// Every `+ .proxy` of the file, in file order.
    pub fn proxies(&self) -> Vec<ProxyPlan> {
        self.proxies.clone()
    }

    /// The proxy of the block named `key`.
    pub fn proxy(&self, key: &(String, String)) -> Option<&ProxyPlan> {
        self.proxies.iter().find(|p| p.key == *key)
    }

    /// The proxy of block `id`.
    pub fn proxy_of_block(&self, id: u32) -> Option<&ProxyPlan> {
        self.proxies.iter().find(|p| p.block == id)
    }

    /// Every `+ .proxy` of the file, with its routes, in file order.
    pub(crate) fn compute_proxies(&self) -> Vec<ProxyPlan> {
        let proxies = self.world.read_storage::<ProxySpec>();
        let routes = self.world.read_storage::<Route>();
        let blocks = self.world.read_storage::<Block>();
        let entities = self.world.entities();
        let mut out: Vec<ProxyPlan> = (&entities, &proxies, &blocks)
            .join()
            .map(|(block, proxy, b)| ProxyPlan {
                block: block.id(),
                key: (b.name.clone(), b.symbol.clone()),
                mirror_hosts: self
                    .calls_of(block)
                    .iter()
                    .filter(|c| c.spec.caps.writes_hosts_toml)
                    .flat_map(|c| {
                        c.invocation
                            .input
                            .split(',')
                            .map(|h| h.trim().to_string())
                            .filter(|h| !h.is_empty())
                            .collect::<Vec<_>>()
                    })
                    .collect(),
                control: b.control.clone(),
                address: proxy.address.clone(),
                settings: proxy.settings.clone(),
                routes: proxy
                    .routes
                    .iter()
                    .filter_map(|r| {
                        let route = routes.get(*r)?;
                        Some(RoutePlan {
                            id: r.id(),
                            resource: route.resource,
                            methods: route.methods.clone(),
                            calls: self.calls_of(*r),
                        })
                    })
                    .collect(),
            })
            .collect();
        out.sort_by_key(|p| p.block);
        out
    }

    /// The engine symbol and event index holding entity `id` (a call or an event block), for
    /// `mirror start --id`.
    pub fn locate(&self, id: u32) -> Option<(String, usize, usize)> {
        for symbol in self.engines.keys() {
            let plan = self.engine(symbol)?;
            for (e, event) in plan.events.iter().enumerate() {
                if event.id == id {
                    return Some((symbol.clone(), e, 0));
                }
                if let Some(c) = event.calls.iter().position(|c| c.id == id) {
                    return Some((symbol.clone(), e, c));
                }
            }
        }
        None
    }
}
