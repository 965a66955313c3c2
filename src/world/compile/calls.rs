//! Plugin calls and their modifiers (after `+ .runtime`, or after a route), and the `:` lines
//! of `+ .proxy`: routes with their methods, settings (parsed by `world::settings`), calls.

use acr_plugins::plugin::Input;
use acr_plugins::Props;
use specs::{Builder, WorldExt};

use super::{value_span, CallData, Compiler, RouteData, Top};
use crate::runmd::diagnostics::did_you_mean;
use crate::runmd::{AttrLine, Span};
use crate::world::settings::{check_setting, PROXY_SETTINGS};
use crate::world::{Method, Resource};

impl Compiler {
    /// A plugin call, or a modifier of the last call. Returns the call that is now last.
    pub(super) fn call_or_modifier(
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
                        let span = value_span(&a);
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

    pub(super) fn proxy_line(
        &mut self,
        block: usize,
        a: AttrLine,
        route: Option<usize>,
        last: Option<usize>,
    ) {
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
                let span = value_span(&a);
                return self.error(span, format!("bad value for `.{ty}`"), Some(hint));
            }
            let name = a.name.as_ref().map(|n| n.value.clone());
            let value = match name {
                Some(n) => format!("{n} {}", a.value.value),
                None => a.value.value.clone(),
            };
            let applied = match self.blocks[block].proxy.as_mut() {
                Some(p) => p.settings.apply(&ty, &value),
                None => Ok(()),
            };
            if let Err(hint) = applied {
                self.error(a.value.span, format!("bad value for `.{ty}`"), Some(hint));
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
