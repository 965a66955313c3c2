//! From runmd items to a World: the meaning of each line, checked against the plugin catalogue.
//!
//! Which `:` lines may follow which `+` attribute:
//!
//! | attribute | where | its `:` lines |
//! |---|---|---|
//! | (none yet) | any block | `: NAME .type value`: a control value of the block |
//! | `+ NAME .type value` | any block | `: SYMBOL .type value`: property `NAME::SYMBOL` |
//! | `+ .engine` | control block | `.event E`, `.once E`, `.loop`, `.exit`, `.next S`, `.repeat N` |
//! | `+ .runtime` | event block | `.PLUGIN input`, then that plugin's modifiers |
//! | `+ .proxy ADDR` | event block | `.manifests/.blobs/.tags/.referrers METHODS`, each followed by plugin calls |
//!
//! `define NAME SYMBOL .type value` sets `NAME::SYMBOL` on the block wherever it appears.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use acr_plugins::catalogue::Input;
use acr_plugins::{Invocation, PluginSpec, Props, Value};
use specs::{Builder, Entity, World, WorldExt};

use super::{
    Block, Call, EngineSpec, EventRef, Lifecycle, Method, Pipeline, ProxySpec, Resource, Route,
    Sequence,
};
use crate::runmd::diagnostics::did_you_mean;
use crate::runmd::value::{is_builtin, parse_builtin, BUILTIN_TYPES};
use crate::runmd::{parse, AttrLine, Diagnostic, Item, Op, Report, Span};

/// Engine options, for suggestions.
const ENGINE_OPTIONS: &[&str] = &["event", "once", "loop", "exit", "next", "repeat"];
/// Attributes a `+` line may start.
const ATTRIBUTES: &[&str] = &["engine", "runtime", "proxy"];
/// Settings a `+ .proxy` accepts besides routes and calls. The server reads them.
pub const PROXY_SETTINGS: &[&str] = &[
    "allow",
    "endpoint",
    "path-routing",
    "cache",
    "cache-endpoint",
    "ttl",
    "max-size",
    "container-tokens",
    "users",
    "allow-pull",
    "token-secret",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
];

/// Reads and compiles the file at `path`.
pub fn compile_file(path: &Path) -> Result<Pipeline, CompileError> {
    let source = std::fs::read_to_string(path).map_err(|e| CompileError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    compile(path, &source).map_err(CompileError::Invalid)
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Report),
}

/// Compiles `source` (named `path` in diagnostics) into a Pipeline, or every problem found.
pub fn compile(path: &Path, source: &str) -> Result<Pipeline, Report> {
    let parsed = parse(source);
    let mut c = Compiler::new();
    c.diagnostics = parsed.diagnostics;
    let prose_fences = parsed.prose_fences;
    for item in parsed.items {
        match item {
            Item::Block(h) => c.open_block(h.name, h.symbol, h.span),
            Item::Attr(a) => c.attr(a),
        }
    }
    c.resolve();
    c.prose_control_blocks(&prose_fences);
    if !c.diagnostics.is_empty() {
        return Err(Report::new(path, source, c.diagnostics));
    }
    let pipeline = c.finish(path);
    let chain_problems = super::chain::check(&pipeline);
    if !chain_problems.is_empty() {
        return Err(Report::new(path, source, chain_problems));
    }
    Ok(pipeline)
}

/// What the last `+` line started: it decides what the `:` lines after it mean.
enum Top {
    None,
    Plain(String),
    Engine,
    Runtime {
        last_call: Option<usize>,
    },
    Proxy {
        last_route: Option<usize>,
        last_call: Option<usize>,
    },
}

struct BlockData {
    entity: Entity,
    name: String,
    symbol: String,
    span: Span,
    control: Props,
    props: Props,
    calls: Vec<Entity>,
    engine: Option<EngineData>,
    proxy: Option<ProxyData>,
}

struct EngineData {
    span: Span,
    events: Vec<(String, bool, Span)>,
    lifecycle: Option<(Lifecycle, Span)>,
}

struct ProxyData {
    address: String,
    span: Span,
    routes: Vec<usize>,
    settings: Props,
}

struct CallData {
    entity: Entity,
    spec: &'static PluginSpec,
    input: String,
    span: Span,
    props: Props,
    block: usize,
}

struct RouteData {
    entity: Entity,
    resource: Resource,
    methods: Vec<Method>,
    span: Span,
    block: usize,
    calls: Vec<Entity>,
}

struct Compiler {
    world: World,
    blocks: Vec<BlockData>,
    by_name: BTreeMap<(String, String), usize>,
    calls: Vec<CallData>,
    routes: Vec<RouteData>,
    current: Option<usize>,
    top: Top,
    diagnostics: Vec<Diagnostic>,
}

impl Compiler {
    fn new() -> Self {
        let mut world = World::new();
        world.register::<Block>();
        world.register::<Call>();
        world.register::<Route>();
        world.register::<Sequence>();
        world.register::<EngineSpec>();
        world.register::<ProxySpec>();
        // Entity 0: the root.
        world.create_entity().build();
        Self {
            world,
            blocks: Vec::new(),
            by_name: BTreeMap::new(),
            calls: Vec::new(),
            routes: Vec::new(),
            current: None,
            top: Top::None,
            diagnostics: Vec::new(),
        }
    }

    fn error(&mut self, span: Span, message: impl Into<String>, hint: Option<String>) {
        self.diagnostics
            .push(Diagnostic::new(span, message).maybe_hint(hint));
    }

    fn open_block(&mut self, name: String, symbol: String, span: Span) {
        let key = (name.clone(), symbol.clone());
        let index = match self.by_name.get(&key) {
            Some(i) => *i,
            None => {
                let entity = self.world.create_entity().build();
                self.blocks.push(BlockData {
                    entity,
                    name,
                    symbol,
                    span,
                    control: Props::new(),
                    props: Props::new(),
                    calls: Vec::new(),
                    engine: None,
                    proxy: None,
                });
                self.by_name.insert(key, self.blocks.len() - 1);
                self.blocks.len() - 1
            }
        };
        self.current = Some(index);
        self.top = Top::None;
    }

    fn attr(&mut self, a: AttrLine) {
        let Some(block) = self.current else { return };
        match a.op {
            Op::Define => self.define(block, a),
            Op::Add => self.add(block, a),
            Op::Colon => self.colon(block, a),
        }
    }

    fn value(&mut self, a: &AttrLine) -> Option<Value> {
        match parse_builtin(&a.ty.value, &a.value.value) {
            Ok(v) => Some(v),
            Err((message, hint)) => {
                let span = if a.value.value.is_empty() {
                    a.ty.span
                } else {
                    a.value.span
                };
                self.error(span, message, (!hint.is_empty()).then_some(hint));
                None
            }
        }
    }

    /// `define NAME SYMBOL .type value`
    fn define(&mut self, block: usize, a: AttrLine) {
        if !is_builtin(&a.ty.value) {
            return self.unknown_type(&a, "`define` takes a built-in type");
        }
        let Some(value) = self.value(&a) else { return };
        let name = a.name.as_ref().map(|n| n.value.clone()).unwrap_or_default();
        let key = match &a.symbol {
            Some(s) => format!("{name}::{}", s.value),
            None => name,
        };
        self.blocks[block].props.push(key, value);
    }

    /// `+ NAME .type value` or `+ .attribute value`
    fn add(&mut self, block: usize, a: AttrLine) {
        let ty = a.ty.value.as_str();
        if is_builtin(ty) {
            let Some(name) = a.name.clone() else {
                return self.error(
                    a.ty.span,
                    "a value needs a name",
                    Some(format!("write `+ NAME .{ty} {}`", a.value.value)),
                );
            };
            if let Some(value) = self.value(&a) {
                let key = match &a.symbol {
                    Some(s) => format!("{}::{}", name.value, s.value),
                    None => name.value.clone(),
                };
                self.blocks[block].props.push(key, value);
            }
            self.top = Top::Plain(name.value);
            return;
        }
        if let Some(n) = &a.name {
            return self.error(
                n.span,
                format!("`.{ty}` takes no name before it"),
                Some(format!("write `+ .{ty} {}`", a.value.value)),
            );
        }
        let is_control = self.blocks[block].name.is_empty();
        match ty {
            "engine" => {
                if !is_control {
                    self.top = Top::None;
                    return self.error(
                        a.ty.span,
                        "`+ .engine` belongs in a control block",
                        Some(format!(
                            "open a control block with one word, e.g. ``` {}",
                            self.blocks[block].symbol
                        )),
                    );
                }
                if let Some(prev) = &self.blocks[block].engine {
                    let line = prev.span.line;
                    self.error(
                        a.ty.span,
                        "this block already has an engine",
                        Some(format!(
                            "the first `+ .engine` is on line {line}; add lines to it"
                        )),
                    );
                } else {
                    self.blocks[block].engine = Some(EngineData {
                        span: a.ty.span,
                        events: Vec::new(),
                        lifecycle: None,
                    });
                }
                self.top = Top::Engine;
            }
            "runtime" | "proxy" if is_control => {
                self.top = Top::None;
                let symbol = self.blocks[block].symbol.clone();
                self.error(
                    a.ty.span,
                    format!("`+ .{ty}` belongs in an event block"),
                    Some(format!(
                        "open an event block with two words, e.g. ``` start {symbol}"
                    )),
                );
            }
            "runtime" => {
                self.top = Top::Runtime { last_call: None };
            }
            "proxy" => {
                let address = a.value.value.clone();
                if let Err(hint) = check_address(&address) {
                    self.error(
                        if address.is_empty() {
                            a.ty.span
                        } else {
                            a.value.span
                        },
                        format!("`{address}` is not an address to listen on"),
                        Some(hint),
                    );
                }
                if let Some(prev) = &self.blocks[block].proxy {
                    let line = prev.span.line;
                    self.error(
                        a.ty.span,
                        "this block already has a proxy",
                        Some(format!("the first `+ .proxy` is on line {line}")),
                    );
                } else {
                    self.blocks[block].proxy = Some(ProxyData {
                        address,
                        span: a.ty.span,
                        routes: Vec::new(),
                        settings: Props::new(),
                    });
                }
                self.top = Top::Proxy {
                    last_route: None,
                    last_call: None,
                };
            }
            other => {
                let hint = did_you_mean(other, ATTRIBUTES.iter().chain(BUILTIN_TYPES).copied())
                    .map(|s| format!("did you mean '.{s}'?"))
                    .or_else(|| {
                        acr_plugins::lookup(other).map(|_| {
                            format!("plugins are called on `:` lines after `+ .runtime`: `: .{other}`")
                        })
                    })
                    .or_else(|| Some("a `+` line starts `.engine`, `.runtime`, `.proxy`, or names a value: `+ NAME .TYPE VALUE`".into()));
                self.error(a.ty.span, format!("unknown attribute '.{other}'"), hint);
                self.top = Top::None;
            }
        }
    }

    fn colon(&mut self, block: usize, a: AttrLine) {
        let ty = a.ty.value.clone();
        if is_builtin(&ty) {
            return self.colon_value(block, a);
        }
        match &self.top {
            Top::Engine => self.engine_option(block, a),
            Top::Runtime { last_call } => {
                let last = *last_call;
                if let Some(call) = self.call_or_modifier(block, a, last) {
                    self.top = Top::Runtime {
                        last_call: Some(call),
                    };
                }
            }
            Top::Proxy {
                last_route,
                last_call,
            } => {
                let (route, last) = (*last_route, *last_call);
                self.proxy_line(block, a, route, last);
            }
            Top::None => self.error(
                a.ty.span,
                format!("`: .{ty}` has nothing to attach to"),
                Some(match ty.as_str() {
                    "event" | "once" | "loop" | "exit" | "next" | "repeat" => {
                        "engine options follow `+ .engine`".to_string()
                    }
                    "manifests" | "blobs" | "tags" | "referrers" => {
                        "routes follow `+ .proxy ADDR`".to_string()
                    }
                    _ => "start with a `+` line first, e.g. `+ .runtime` before plugin calls"
                        .to_string(),
                }),
            ),
            Top::Plain(name) => {
                let name = name.clone();
                self.error(
                    a.ty.span,
                    format!("`.{ty}` cannot follow the value `{name}`"),
                    Some(format!(
                        "properties of `{name}` use built-in types: `: SYMBOL .symbol value`"
                    )),
                );
            }
        }
    }

    /// `: NAME .type value`: a control value (before any `+`), a property of the `+ NAME`
    /// before it, or a property of the last plugin call.
    fn colon_value(&mut self, block: usize, a: AttrLine) {
        let Some(value) = self.value(&a) else { return };
        // `: NAME SYMBOL .type v` keys the value `NAME::SYMBOL`; no word is ever dropped.
        let name = a.name.as_ref().map(|n| match &a.symbol {
            Some(s) => format!("{}::{}", n.value, s.value),
            None => n.value.clone(),
        });
        match (&self.top, name) {
            (Top::None, Some(key)) => {
                self.blocks[block].control.push(key, value);
            }
            (Top::Plain(parent), Some(name)) => {
                let key = format!("{parent}::{name}");
                self.blocks[block].props.push(key, value);
            }
            (Top::Runtime { last_call: Some(c) }, Some(name))
            | (
                Top::Proxy {
                    last_call: Some(c), ..
                },
                Some(name),
            ) => {
                let c = *c;
                self.calls[c].props.push(name, value);
            }
            (_, None) => self.error(
                a.op_span,
                "a value needs a name",
                Some(format!("write `: NAME .{} {}`", a.ty.value, a.value.value)),
            ),
            (_, Some(name)) => self.error(
                a.op_span,
                format!("`{name}` has nothing to attach to here"),
                Some("control values go before the first `+` line of a block".into()),
            ),
        }
    }

    fn engine_option(&mut self, block: usize, a: AttrLine) {
        let ty = a.ty.value.as_str();
        let value = a.value.value.clone();
        let lifecycle = match ty {
            "event" | "once" => {
                if !is_single_word(&value) {
                    return self.error(
                        if value.is_empty() {
                            a.ty.span
                        } else {
                            a.value.span
                        },
                        format!("`.{ty}` needs the name of one event"),
                        Some(format!(
                            "write `: .{ty} start` for the block ``` start {}",
                            self.blocks[block].symbol
                        )),
                    );
                }
                if let Some(e) = self.blocks[block].engine.as_mut() {
                    e.events.push((value, ty == "once", a.value.span));
                }
                return;
            }
            "loop" | "exit" => {
                if !value.is_empty() {
                    return self.error(a.value.span, format!("`.{ty}` takes no value"), None);
                }
                if ty == "loop" {
                    Lifecycle::Loop
                } else {
                    Lifecycle::Exit
                }
            }
            "next" => {
                if !is_single_word(&value) {
                    return self.error(
                        if value.is_empty() {
                            a.ty.span
                        } else {
                            a.value.span
                        },
                        "`.next` needs the symbol of another control block",
                        Some("write `: .next other` for the block ``` other".into()),
                    );
                }
                Lifecycle::Next(value)
            }
            "repeat" => match value.parse::<u32>() {
                Ok(n) if n > 0 => Lifecycle::Repeat(n),
                _ => {
                    return self.error(
                        if value.is_empty() {
                            a.ty.span
                        } else {
                            a.value.span
                        },
                        format!("`.repeat` needs a count of 1 or more, not `{value}`"),
                        Some("write `: .repeat 3` to run the events three times in all".into()),
                    )
                }
            },
            other => {
                let hint = did_you_mean(other, ENGINE_OPTIONS.iter().copied())
                    .map(|s| format!("did you mean '.{s}'?"))
                    .unwrap_or_else(|| {
                        "engine options are .event, .once, .loop, .exit, .next and .repeat".into()
                    });
                return self.error(
                    a.ty.span,
                    format!("unknown engine option '.{other}'"),
                    Some(hint),
                );
            }
        };
        let Some(engine) = self.blocks[block].engine.as_mut() else {
            return;
        };
        if let Some((_, prev)) = &engine.lifecycle {
            let line = prev.line;
            return self.error(
                a.ty.span,
                "the engine already has a lifecycle",
                Some(format!("keep one of this line and line {line}")),
            );
        }
        let span = if matches!(lifecycle, Lifecycle::Next(_)) {
            a.value.span
        } else {
            a.ty.span
        };
        engine.lifecycle = Some((lifecycle, span));
    }

    /// A plugin call, or a modifier of the last call. Returns the call that is now last.
    fn call_or_modifier(
        &mut self,
        block: usize,
        a: AttrLine,
        last: Option<usize>,
    ) -> Option<usize> {
        let ty = a.ty.value.as_str();
        if let Some(c) = last {
            if let Some(m) = self.calls[c].spec.modifier(ty) {
                let name = a.name.as_ref().map(|n| n.value.as_str());
                match (m.parse)(m.name, name, &a.value.value) {
                    Ok(props) => {
                        for (k, v) in props {
                            self.calls[c].props.push(k, v);
                        }
                    }
                    Err(e) => {
                        let span = if a.value.value.is_empty() {
                            a.ty.span
                        } else {
                            a.value.span
                        };
                        let hint = e.hint.or_else(|| Some(format!("usage: `: {}`", m.usage)));
                        self.error(span, e.message, hint);
                    }
                }
                return Some(c);
            }
        }
        let Some(spec) = acr_plugins::lookup(ty) else {
            let modifiers: Vec<&str> = last
                .map(|c| {
                    self.calls[c]
                        .spec
                        .modifiers
                        .iter()
                        .map(|m| m.name)
                        .collect()
                })
                .unwrap_or_default();
            let candidates = acr_plugins::catalogue()
                .iter()
                .map(|p| p.name)
                .chain(modifiers.iter().copied());
            let hint = did_you_mean(ty, candidates)
                .map(|s| format!("did you mean '.{s}'?"))
                .or_else(|| {
                    let names: Vec<String> = acr_plugins::catalogue()
                        .iter()
                        .map(|p| format!(".{}", p.name))
                        .collect();
                    Some(format!("the plugins are {}", names.join(" ")))
                });
            let message = match last.filter(|c| !self.calls[*c].spec.modifiers.is_empty()) {
                Some(c) => format!(
                    "unknown plugin '.{ty}' (and not a modifier of '.{}')",
                    self.calls[c].spec.name
                ),
                None => format!("unknown plugin '.{ty}'"),
            };
            self.error(a.ty.span, message, hint);
            return last;
        };
        if let Some(n) = &a.name {
            self.error(
                n.span,
                format!("a call of '.{}' takes no name before it", spec.name),
                Some(format!("write `: .{} {}`", spec.name, a.value.value)),
            );
        }
        let input = a.value.value.clone();
        match spec.input {
            Input::Required(what) if input.is_empty() => self.error(
                a.ty.span,
                format!("'.{}' needs {what}", spec.name),
                Some(format!("write `: .{} VALUE`", spec.name)),
            ),
            _ => {
                if let Some(check) = spec.check {
                    if let Err(e) = check(&input) {
                        self.error(a.value.span, e.message, e.hint);
                    }
                }
            }
        }
        let entity = self.world.create_entity().build();
        self.calls.push(CallData {
            entity,
            spec,
            input,
            span: a.ty.span,
            props: Props::new(),
            block,
        });
        self.blocks[block].calls.push(entity);
        Some(self.calls.len() - 1)
    }

    fn proxy_line(&mut self, block: usize, a: AttrLine, route: Option<usize>, last: Option<usize>) {
        let ty = a.ty.value.clone();
        if let Some(resource) = Resource::from_name(&ty) {
            let methods = self.methods(resource, &a);
            let entity = self.world.create_entity().build();
            self.routes.push(RouteData {
                entity,
                resource,
                methods,
                span: a.ty.span,
                block,
                calls: Vec::new(),
            });
            let r = self.routes.len() - 1;
            if let Some(p) = self.blocks[block].proxy.as_mut() {
                p.routes.push(r);
            }
            self.top = Top::Proxy {
                last_route: Some(r),
                last_call: None,
            };
            return;
        }
        if PROXY_SETTINGS.contains(&ty.as_str()) && !(last.is_some() && self.is_modifier(last, &ty))
        {
            if let Err(hint) = check_setting(&ty, &a.value.value) {
                let span = if a.value.value.is_empty() {
                    a.ty.span
                } else {
                    a.value.span
                };
                return self.error(span, format!("bad value for `.{ty}`"), Some(hint));
            }
            let name = a.name.as_ref().map(|n| n.value.clone());
            if let Some(p) = self.blocks[block].proxy.as_mut() {
                let value = match name {
                    Some(n) => format!("{n} {}", a.value.value),
                    None => a.value.value.clone(),
                };
                p.settings.push(ty, Value::Symbol(value));
            }
            return;
        }
        let Some(r) = route else {
            if acr_plugins::lookup(&ty).is_some() {
                return self.error(
                    a.ty.span,
                    format!("the call '.{ty}' needs a route before it"),
                    Some("declare the route first, e.g. `: .manifests head, get`".into()),
                );
            }
            let hint = did_you_mean(
                &ty,
                Resource::ALL
                    .iter()
                    .map(|r| r.name())
                    .chain(PROXY_SETTINGS.iter().copied()),
            )
            .map(|s| format!("did you mean '.{s}'?"))
            .unwrap_or_else(|| "routes are .manifests, .blobs, .tags and .referrers".into());
            return self.error(
                a.ty.span,
                format!("unknown proxy attribute '.{ty}'"),
                Some(hint),
            );
        };
        let before = self.calls.len();
        let now = self.call_or_modifier(block, a, last);
        if self.calls.len() > before {
            let entity = self.calls[before].entity;
            // A route's calls belong to the route, not to the block's runtime sequence.
            self.blocks[block].calls.retain(|e| *e != entity);
            self.routes[r].calls.push(entity);
        }
        self.top = Top::Proxy {
            last_route: Some(r),
            last_call: now,
        };
    }

    fn is_modifier(&self, call: Option<usize>, name: &str) -> bool {
        call.is_some_and(|c| self.calls[c].spec.modifier(name).is_some())
    }

    fn methods(&mut self, resource: Resource, a: &AttrLine) -> Vec<Method> {
        let valid = resource.methods();
        let names: Vec<&str> = valid.iter().map(|m| m.name()).collect();
        let mut out = Vec::new();
        let text = a.value.value.to_ascii_lowercase();
        if text.trim().is_empty() {
            self.error(
                a.ty.span,
                format!("`.{}` needs its methods", resource.name()),
                Some(format!(
                    "write `: .{} {}`",
                    resource.name(),
                    names.join(", ")
                )),
            );
            return out;
        }
        for word in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            match valid.iter().find(|m| m.name() == word) {
                Some(m) if !out.contains(m) => out.push(*m),
                Some(_) => {}
                None => {
                    let hint = if ["put", "post", "patch", "delete"].contains(&word) {
                        "acr is a pull-only mirror: pushes are refused with the OCI error UNSUPPORTED".to_string()
                    } else {
                        did_you_mean(word, names.iter().copied())
                            .map(|s| format!("did you mean '{s}'?"))
                            .unwrap_or_else(|| {
                                format!("`.{}` serves {}", resource.name(), names.join(", "))
                            })
                    };
                    let span = word_span(a, word);
                    self.error(
                        span,
                        format!("unknown method '{word}' for `.{}`", resource.name()),
                        Some(hint),
                    );
                }
            }
        }
        out
    }

    fn unknown_type(&mut self, a: &AttrLine, message: &str) {
        let hint = did_you_mean(&a.ty.value, BUILTIN_TYPES.iter().copied())
            .map(|s| format!("did you mean '.{s}'?"));
        self.error(a.ty.span, format!("{message}, not '.{}'", a.ty.value), hint);
    }

    /// A one-word fence read as a code example (its word is a language name) while event
    /// blocks of that symbol exist: the user meant a control block.
    fn prose_control_blocks(&mut self, prose: &[(String, Span)]) {
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
    fn resolve(&mut self) {
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

    fn finish(self, path: &Path) -> Pipeline {
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
                            settings: p.settings.clone(),
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

/// The span of `word` inside a value, for a caret under just that word.
fn word_span(a: &AttrLine, word: &str) -> Span {
    let lower = a.value.value.to_ascii_lowercase();
    let start = lower
        .find(word)
        .map(|byte| lower[..byte].chars().count())
        .and_then(|i| a.value_cols.get(i));
    match start {
        Some(col) => Span::new(a.value.span.line, *col, word.chars().count() as u32),
        None => a.value.span,
    }
}

fn is_single_word(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace)
}

/// Checks a proxy setting's value.
fn check_setting(name: &str, value: &str) -> Result<(), String> {
    match name {
        "allow" if value.trim().is_empty() => {
            Err("write `: .allow HOST` or a glob such as `: .allow *.azurecr.io`".into())
        }
        "endpoint" => {
            let mut words = value.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(_), Some(url), None) if url.starts_with("http://") || url.starts_with("https://") => Ok(()),
                _ => Err("write `: .endpoint NAMESPACE URL`, e.g. `: .endpoint docker.io http://127.0.0.1:5000`".into()),
            }
        }
        "cache" if value.trim().is_empty() => {
            Err("write `: .cache DIR`, `: .cache s3://bucket/prefix` or `: .cache off`".into())
        }
        "cache-endpoint" if !(value.starts_with("http://") || value.starts_with("https://")) => {
            Err("write `: .cache-endpoint http://127.0.0.1:9000` (an S3-compatible server)".into())
        }
        "ttl" => {
            let mut words: Vec<&str> = value.split_whitespace().collect();
            let duration = words.pop().unwrap_or("");
            if words.len() > 1 || acr_plugins::parse_duration(duration).is_err() {
                Err("write `: .ttl 5m` or, for one upstream, `: .ttl docker.io 1h`".into())
            } else {
                Ok(())
            }
        }
        "max-size" if acr_plugins::store::parse_size(value).is_none() => {
            Err("write a size such as `: .max-size 20GiB` or `: .max-size 500MB`".into())
        }
        "users" | "token-secret" | "tls-cert" | "tls-key" | "tls-client-ca"
            if value.trim().is_empty() =>
        {
            Err(format!("write `: .{name} FILE`"))
        }
        "allow-pull" if value.split_whitespace().count() != 2 => {
            Err("write `: .allow-pull USER REPO-GLOB`, e.g. `: .allow-pull alice library/*` (`*` for any user)".into())
        }
        "container-tokens"
            if value.trim() != "off" && acr_plugins::parse_duration(value.trim()).is_err() =>
        {
            Err("write `: .container-tokens 36h` (how long a token lasts) or `: .container-tokens off`".into())
        }
        "path-routing" if !matches!(value, "" | "on" | "off" | "true" | "false") => {
            Err("write `: .path-routing` (on) or `: .path-routing off`".into())
        }
        _ => Ok(()),
    }
}

/// `host:port`, `[v6]:port` or `:port`.
fn check_address(address: &str) -> Result<(), String> {
    let hint =
        "write HOST:PORT, e.g. `+ .proxy localhost:8578` or `+ .proxy 0.0.0.0:8578`".to_string();
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(hint);
    };
    if port.parse::<u16>().is_err() || host.contains(char::is_whitespace) || host.contains('/') {
        return Err(hint);
    }
    Ok(())
}
