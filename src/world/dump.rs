//! `acr dump`: the numbered tree of blocks and plugin calls, then each engine's control block
//! and lifecycle, then the proxy routes. The numbers are entity ids, the ones `--id` takes.

use std::collections::BTreeSet;
use std::fmt::Write;

use acr_plugins::{Props, Value};
use specs::WorldExt;

use super::{Block, EngineSpec, Lifecycle, Pipeline};

/// Renders the tree of `pipeline`.
pub fn dump(pipeline: &Pipeline) -> String {
    let mut out = String::new();
    let blocks = pipeline.world.read_storage::<Block>();
    let engines = pipeline.world.read_storage::<EngineSpec>();
    let mut shown = BTreeSet::new();
    let mut controls = Vec::new();
    for entity in &pipeline.blocks {
        let (Some(block), Some(engine)) = (blocks.get(*entity), engines.get(*entity)) else {
            continue;
        };
        shown.insert(entity.id());
        let _ = writeln!(out, "{}: {}", entity.id(), block.symbol);
        control_values(&mut out, &block.control, "\t");
        out.push('\n');
        for event in &engine.events {
            let Some(eb) = blocks.get(event.block) else {
                continue;
            };
            shown.insert(event.block.id());
            block_tree(&mut out, pipeline, event.block, eb, event.once);
        }
        controls.push((entity.id(), block.symbol.clone(), engine));
    }
    for entity in &pipeline.blocks {
        if shown.contains(&entity.id()) {
            continue;
        }
        let Some(block) = blocks.get(*entity) else {
            continue;
        };
        if block.name.is_empty() {
            let _ = writeln!(out, "{}: {} (no engine)", entity.id(), block.symbol);
        } else {
            let _ = writeln!(
                out,
                "{}: {} {} (in no engine)",
                entity.id(),
                block.name,
                block.symbol
            );
        }
        control_values(&mut out, &block.control, "\t");
        props(&mut out, &block.props, "    ");
        calls(&mut out, pipeline, *entity, "    ");
        out.push('\n');
    }
    for (id, symbol, engine) in controls {
        let _ = writeln!(out, "Engine control block: ``` {symbol} @ {id}");
        let events: Vec<String> = engine
            .events
            .iter()
            .filter_map(|e| {
                let b = blocks.get(e.block)?;
                Some(if e.once {
                    format!("{} (once)", b.name)
                } else {
                    b.name.clone()
                })
            })
            .collect();
        let _ = writeln!(out, "  events: {}", events.join(", "));
        let lifecycle = match &engine.lifecycle {
            Lifecycle::Exit => "Exit".to_string(),
            Lifecycle::Loop => format!("Loop({id})"),
            Lifecycle::Repeat(n) => format!("Repeat({n})"),
            Lifecycle::Next(s) => format!("Next({s})"),
        };
        let _ = writeln!(out, "  {lifecycle}");
    }
    let proxies = pipeline.proxies.clone();
    if !proxies.is_empty() {
        out.push_str("\nProxy routes:\n");
    }
    for proxy in proxies {
        let _ = writeln!(out, "  {} (block {})", proxy.address, proxy.block);
        props(&mut out, &proxy.settings.written, "    ");
        for route in proxy.routes {
            let methods: Vec<String> = route
                .methods
                .iter()
                .map(|m| m.name().to_uppercase())
                .collect();
            let _ = writeln!(
                out,
                "    {}: {} /v2/<name>/{}",
                route.id,
                methods.join(", "),
                route.resource.name()
            );
            for call in route.calls {
                call_line(
                    &mut out,
                    call.id,
                    call.spec.name,
                    &call.invocation.input,
                    "      ",
                );
                props(&mut out, &call.invocation.props, "        ");
            }
        }
    }
    out
}

fn block_tree(
    out: &mut String,
    pipeline: &Pipeline,
    entity: specs::Entity,
    block: &Block,
    once: bool,
) {
    let once = if once { " (once)" } else { "" };
    let _ = writeln!(
        out,
        "  {}: {} {}{once}",
        entity.id(),
        block.name,
        block.symbol
    );
    control_values(out, &block.control, "\t");
    props(out, &block.props, "    ");
    calls(out, pipeline, entity, "    ");
    out.push('\n');
}

fn calls(out: &mut String, pipeline: &Pipeline, entity: specs::Entity, indent: &str) {
    for call in pipeline.calls_of(entity) {
        call_line(out, call.id, call.spec.name, &call.invocation.input, indent);
        props(out, &call.invocation.props, &format!("{indent}  "));
    }
}

fn call_line(out: &mut String, id: u32, plugin: &str, input: &str, indent: &str) {
    if input.is_empty() {
        let _ = writeln!(out, "{indent}{id}: {plugin}");
    } else {
        let _ = writeln!(out, "{indent}{id}: {plugin} {input:?}");
    }
}

fn control_values(out: &mut String, control: &Props, indent: &str) {
    let mut names: Vec<&str> = control.iter().map(|(n, _)| n).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let _ = writeln!(out, "{indent}# {name}: {}", joined(control, name));
    }
}

fn props(out: &mut String, props: &Props, indent: &str) {
    let mut seen = BTreeSet::new();
    for (name, _) in props.iter() {
        if seen.insert(name) {
            let _ = writeln!(out, "{indent}{name} {}", joined(props, name));
        }
    }
}

/// One value as itself, a repeated name as a list.
fn joined(props: &Props, name: &str) -> String {
    let values: Vec<&Value> = props.all(name).collect();
    match values.as_slice() {
        [one] => one.to_string(),
        many => {
            let items: Vec<String> = many.iter().map(|v| v.to_string()).collect();
            format!("[{}]", items.join(", "))
        }
    }
}
