//! The end of a compile: the checks that need the whole file (engine events, `.next`
//! targets, duplicate routes, control blocks read as code examples), then the World built from
//! what the lines declared.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use acr_plugins::Invocation;
use specs::WorldExt;

use super::Compiler;
use crate::runmd::diagnostics::did_you_mean;
use crate::runmd::{Diagnostic, Span};
use crate::world::{
    Block, Call, EngineSpec, EventRef, Lifecycle, Method, Pipeline, ProxySpec, Resource, Route,
    Sequence,
};

impl Compiler {
    /// A one-word fence read as a code example (its word is a language name) while event
    /// blocks of that symbol exist: the user meant a control block.
    pub(super) fn prose_control_blocks(&mut self, prose: &[(String, Span)]) {
        for (word, span) in prose {
            let has_events = self
                .blocks
                .iter()
                .any(|b| b.symbol == *word && !b.name.is_empty());
            let has_control = self
                .blocks
                .iter()
                .any(|b| b.symbol == *word && b.name.is_empty());
            if has_events && !has_control {
                self.diagnostics.push(
                    Diagnostic::new(
                        *span,
                        format!("``` {word} was read as a code example, not a control block"),
                    )
                    .with_hint(format!(
                        "`{word}` is also a language name; give the control block another name"
                    )),
                );
            }
        }
    }

    /// Checks that need the whole file: engine events and `.next` targets, duplicate routes.
    pub(super) fn resolve(&mut self) {
        let mut problems = Vec::new();
        for b in &self.blocks {
            let Some(engine) = &b.engine else { continue };
            for (event, _, span) in &engine.events {
                if !self
                    .by_name
                    .contains_key(&(event.clone(), b.symbol.clone()))
                {
                    let names = self
                        .blocks
                        .iter()
                        .filter(|o| o.symbol == b.symbol && !o.name.is_empty())
                        .map(|o| o.name.as_str());
                    let hint = did_you_mean(event, names)
                        .map(|s| format!("did you mean '{s}'?"))
                        .unwrap_or_else(|| format!("add a block ``` {event} {}", b.symbol));
                    problems.push(
                        Diagnostic::new(
                            *span,
                            format!("there is no block ``` {event} {}", b.symbol),
                        )
                        .with_hint(hint),
                    );
                }
            }
            if let Some((Lifecycle::Next(next), span)) = &engine.lifecycle {
                let exists = self
                    .blocks
                    .iter()
                    .any(|o| o.name.is_empty() && o.symbol == *next && o.engine.is_some());
                if !exists {
                    let names = self
                        .blocks
                        .iter()
                        .filter(|o| o.engine.is_some())
                        .map(|o| o.symbol.as_str());
                    let hint = did_you_mean(next, names)
                        .map(|s| format!("did you mean '{s}'?"))
                        .unwrap_or_else(|| {
                            format!("add a control block ``` {next} with `+ .engine`")
                        });
                    problems.push(
                        Diagnostic::new(
                            *span,
                            format!("there is no engine '{next}' to hand over to"),
                        )
                        .with_hint(hint),
                    );
                }
            }
        }
        for b in &self.blocks {
            let Some(proxy) = &b.proxy else { continue };
            let mut seen: BTreeMap<(Resource, Method), u32> = BTreeMap::new();
            for r in &proxy.routes {
                let route = &self.routes[*r];
                for m in &route.methods {
                    if let Some(line) = seen.insert((route.resource, *m), route.span.line) {
                        problems.push(
                            Diagnostic::new(
                                route.span,
                                format!(
                                    "{} {} is already routed",
                                    m.name().to_uppercase(),
                                    route.resource.name()
                                ),
                            )
                            .with_hint(format!(
                                "line {line} declares it first; each method has one route"
                            )),
                        );
                    }
                }
            }
        }
        self.diagnostics.extend(problems);
    }

    pub(super) fn finish(self, path: &Path) -> Pipeline {
        let Compiler {
            mut world,
            blocks,
            calls,
            routes,
            by_name,
            ..
        } = self;
        let mut engines = BTreeMap::new();
        {
            let mut block_store = world.write_storage::<Block>();
            let mut call_store = world.write_storage::<Call>();
            let mut route_store = world.write_storage::<Route>();
            let mut seq_store = world.write_storage::<Sequence>();
            let mut engine_store = world.write_storage::<EngineSpec>();
            let mut proxy_store = world.write_storage::<ProxySpec>();
            for c in &calls {
                let invocation = Invocation {
                    id: c.entity.id(),
                    block: blocks[c.block].entity.id(),
                    plugin: c.spec.name,
                    input: c.input.clone(),
                    props: c.props.clone(),
                };
                let _ = call_store.insert(
                    c.entity,
                    Call {
                        spec: c.spec,
                        invocation: Arc::new(invocation),
                        span: c.span,
                        block: blocks[c.block].entity,
                    },
                );
            }
            for r in &routes {
                let _ = route_store.insert(
                    r.entity,
                    Route {
                        resource: r.resource,
                        methods: r.methods.clone(),
                        span: r.span,
                        block: blocks[r.block].entity,
                    },
                );
                let _ = seq_store.insert(r.entity, Sequence(r.calls.clone()));
            }
            for b in &blocks {
                let _ = block_store.insert(
                    b.entity,
                    Block {
                        name: b.name.clone(),
                        symbol: b.symbol.clone(),
                        span: b.span,
                        control: Arc::new(b.control.clone()),
                        props: b.props.clone(),
                    },
                );
                if !b.calls.is_empty() {
                    let _ = seq_store.insert(b.entity, Sequence(b.calls.clone()));
                }
                if let Some(e) = &b.engine {
                    let events = e
                        .events
                        .iter()
                        .filter_map(|(name, once, _)| {
                            let i = by_name.get(&(name.clone(), b.symbol.clone()))?;
                            Some(EventRef {
                                block: blocks[*i].entity,
                                once: *once,
                            })
                        })
                        .collect();
                    let _ = engine_store.insert(
                        b.entity,
                        EngineSpec {
                            events,
                            lifecycle: e.lifecycle.clone().map(|l| l.0).unwrap_or_default(),
                            span: e.span,
                        },
                    );
                    engines.insert(b.symbol.clone(), b.entity);
                }
                if let Some(p) = &b.proxy {
                    let _ = proxy_store.insert(
                        b.entity,
                        ProxySpec {
                            address: p.address.clone(),
                            span: p.span,
                            routes: p.routes.iter().map(|r| routes[*r].entity).collect(),
                            settings: Arc::new(p.settings.clone().finish()),
                        },
                    );
                }
            }
        }
        world.maintain();
        let mut pipeline = Pipeline {
            path: path.to_path_buf(),
            world,
            engines,
            blocks: blocks.iter().map(|b| b.entity).collect(),
            proxies: Vec::new(),
        };
        pipeline.proxies = pipeline.compute_proxies();
        pipeline
    }
}
