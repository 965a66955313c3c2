//! The engine: runs an engine's events, each a sequence of plugin calls, over one typed context,
//! then applies the engine's lifecycle (`.exit`, `.loop`, `.repeat N`, `.next S`).
//!
//! The pipeline is read from a `watch` channel at the start of every pass, so a hot reload takes
//! effect on the next pass and a pass never mixes two versions of the file.

use std::path::PathBuf;
use std::sync::Arc;

mod calls;

use acr_plugins::{Context, Host, PluginError, Props};
use tokio::sync::watch;

use crate::world::{Lifecycle, Pipeline};

pub use calls::run_calls;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("there is no engine '{name}' in {}{}", path.display(), known_engines(known))]
    NoEngine {
        name: String,
        path: PathBuf,
        known: Vec<String>,
    },
    #[error("there is no call or event {id} in engine '{engine}': `acr dump` lists the ids")]
    NoSuchId { id: u32, engine: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

fn known_engines(names: &[String]) -> String {
    if names.is_empty() {
        " (the file has no `+ .engine`)".to_string()
    } else {
        format!(" (engines: {})", names.join(", "))
    }
}

/// Where a run starts: `--id N` resolved to an event and a call within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartAt {
    pub event: usize,
    pub call: usize,
}

/// What a finished run did, for the caller and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Passes over the events, counted across `.next` hand-overs.
    pub passes: u64,
    /// Plugin calls that ran to completion.
    pub calls: u64,
}

/// Resolves `--id N` against engine `name` of `pipeline`.
pub fn start_at(pipeline: &Pipeline, name: &str, id: u32) -> Result<StartAt, EngineError> {
    engine_plan(pipeline, name)?;
    match pipeline.locate(id) {
        Some((engine, event, call)) if engine == name => Ok(StartAt { event, call }),
        _ => Err(EngineError::NoSuchId {
            id,
            engine: name.to_string(),
        }),
    }
}

fn engine_plan(pipeline: &Pipeline, name: &str) -> Result<crate::world::EnginePlan, EngineError> {
    pipeline.engine(name).ok_or_else(|| EngineError::NoEngine {
        name: name.to_string(),
        path: pipeline.path.clone(),
        known: pipeline.engine_names().map(String::from).collect(),
    })
}

/// What every pass's context starts from.
#[derive(Clone, Default)]
pub struct Seed {
    /// Anchors relative paths: the directory acr runs in.
    pub base_dir: PathBuf,
    /// The pipeline file's directory.
    pub world_dir: PathBuf,
    /// What serves proxies for `.mirror`.
    pub host: Option<Arc<dyn Host>>,
    /// Values set from the command line (e.g. `hosts_dir`).
    pub values: Props,
}

impl Seed {
    pub fn new(base_dir: PathBuf) -> Self {
        Self {
            world_dir: base_dir.clone(),
            base_dir,
            ..Self::default()
        }
    }

    fn context(&self) -> Context {
        let mut cx = Context::new(self.base_dir.clone());
        cx.world_dir = self.world_dir.clone();
        cx.host = self.host.clone();
        cx.values = self.values.clone();
        cx
    }
}

/// Runs engine `name` until its lifecycle ends (never, for `.loop`).
pub async fn run(
    mut pipelines: watch::Receiver<Arc<Pipeline>>,
    name: &str,
    mut start: Option<StartAt>,
    seed: Seed,
) -> Result<Summary, EngineError> {
    let mut summary = Summary::default();
    let mut current = name.to_string();
    let mut pass_of_engine: u64 = 0;
    // The plan of the last pass: a reload that lost this engine (an editor truncating the file
    // first, a rename half done) is reported and the running plan kept.
    let mut last: Option<crate::world::EnginePlan> = None;
    loop {
        let pipeline = pipelines.borrow_and_update().clone();
        let plan = match (engine_plan(&pipeline, &current), last.take()) {
            (Ok(plan), _) => plan,
            (Err(e), Some(previous)) if previous.symbol == current => {
                tracing::error!("{e}; the reloaded file lacks the running engine, which keeps its previous plan");
                previous
            }
            (Err(e), _) => return Err(e),
        };
        drop(pipeline);
        last = Some(plan.clone());
        let calls_before = summary.calls;
        let mut cx = seed.context();
        let from = start.take().unwrap_or_default();
        tracing::debug!(engine = %current, pass = pass_of_engine, "engine pass");
        for (e, event) in plan.events.iter().enumerate().skip(from.event) {
            if event.once && pass_of_engine > 0 {
                continue;
            }
            let skip = if e == from.event { from.call } else { 0 };
            let calls = event.calls.get(skip..).unwrap_or_default();
            summary.calls += run_calls(calls, &mut cx, |call| {
                tracing::info!(id = call.id, plugin = call.spec.name, event = %event.name, "call");
            })
            .await?;
        }
        summary.passes += 1;
        pass_of_engine += 1;
        match &plan.lifecycle {
            Lifecycle::Exit => return Ok(summary),
            Lifecycle::Loop => {}
            Lifecycle::Repeat(n) => {
                if pass_of_engine >= u64::from(*n) {
                    return Ok(summary);
                }
            }
            Lifecycle::Next(next) => {
                tracing::debug!(from = %current, to = %next, "engine hands over");
                current = next.clone();
                pass_of_engine = 0;
            }
        }
        if summary.calls == calls_before {
            // A pass that ran nothing (every event `.once`, or empty): wait for a reload, or a
            // second, instead of spinning a core.
            tokio::select! {
                _ = pipelines.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        } else {
            tokio::task::yield_now().await;
        }
    }
}
