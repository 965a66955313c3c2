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

mod calls;
mod engine;
mod finish;

use std::collections::BTreeMap;
use std::path::Path;

use acr_plugins::{PluginSpec, Props, Value};
use specs::{Builder, Entity, World, WorldExt};

use super::settings::ProxySettings;
use super::{
    Block, Call, EngineSpec, Lifecycle, Method, Pipeline, ProxySpec, Resource, Route, Sequence,
};
use crate::runmd::diagnostics::did_you_mean;
use crate::runmd::value::{is_builtin, parse_builtin, BUILTIN_TYPES};
use crate::runmd::{parse, AttrLine, Diagnostic, Item, Op, Report, Span};

/// Engine options, for suggestions.
const ENGINE_OPTIONS: &[&str] = &["event", "once", "loop", "exit", "next", "repeat"];
/// Attributes a `+` line may start.
const ATTRIBUTES: &[&str] = &["engine", "runtime", "proxy"];

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
    settings: ProxySettings,
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
                let span = value_span(a);
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
                        value_span(&a),
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
                        settings: ProxySettings::new(),
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

    fn unknown_type(&mut self, a: &AttrLine, message: &str) {
        let hint = did_you_mean(&a.ty.value, BUILTIN_TYPES.iter().copied())
            .map(|s| format!("did you mean '.{s}'?"));
        self.error(a.ty.span, format!("{message}, not '.{}'", a.ty.value), hint);
    }
}

/// Where the caret of a problem with a line's value goes: under the value, or under its type
/// when the value is empty.
fn value_span(a: &AttrLine) -> Span {
    if a.value.value.is_empty() {
        a.ty.span
    } else {
        a.value.span
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
