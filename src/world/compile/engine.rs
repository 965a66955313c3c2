//! The `:` lines after `+ .engine`: events (`.event E`, `.once E`) and one lifecycle
//! (`.loop`, `.exit`, `.next S`, `.repeat N`).

use super::{value_span, Compiler, ENGINE_OPTIONS};
use crate::runmd::diagnostics::did_you_mean;
use crate::runmd::AttrLine;
use crate::world::Lifecycle;

impl Compiler {
    pub(super) fn engine_option(&mut self, block: usize, a: AttrLine) {
        let ty = a.ty.value.as_str();
        let value = a.value.value.clone();
        let lifecycle = match ty {
            "event" | "once" => {
                if !is_single_word(&value) {
                    return self.error(
                        value_span(&a),
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
                        value_span(&a),
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
                        value_span(&a),
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
}

fn is_single_word(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace)
}
