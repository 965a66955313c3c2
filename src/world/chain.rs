//! Chain checks: whether each sequence of plugin calls can work, judged from the capability
//! flags the plugins declare ([`acr_plugins::Caps`]), when the file is compiled (and so on
//! every hot reload) rather than as a 500 on every request.
//!
//! | what is wrong | where the caret goes |
//! |---|---|
//! | a plugin that serves a client's request in the `+ .runtime` of a block an engine runs | the call |
//! | a plugin in a route it does not work in (`.pull` under `.manifests`) | the call |
//! | a call that must come before the answering call after it (`.inject-layer` after `.resolve`) | the late call |
//! | a call sending acr's credentials beside one that forwards the client's (`.login` and `.forward-auth`) | the second of the two |
//! | a call that keeps what it makes in the store, in a proxy with `: .cache off` | the call |

use std::collections::BTreeSet;

use specs::{Entity, Join, WorldExt};

use super::settings::CacheSetting;
use super::{Call, EngineSpec, Pipeline, ProxySpec, Route, Sequence};
use crate::runmd::Diagnostic;

/// Every problem of the chains of `pipeline`, in file order.
pub fn check(pipeline: &Pipeline) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let calls = pipeline.world.read_storage::<Call>();
    let sequences = pipeline.world.read_storage::<Sequence>();
    let routes = pipeline.world.read_storage::<Route>();
    let calls_of = |e: Entity| -> Vec<&Call> {
        sequences
            .get(e)
            .map(|s| s.0.iter().filter_map(|c| calls.get(*c)).collect())
            .unwrap_or_default()
    };
    for block in engine_events(pipeline) {
        for call in calls_of(block) {
            outside_a_route(call, &mut problems);
        }
    }
    let proxies = pipeline.world.read_storage::<ProxySpec>();
    for proxy in (&proxies).join() {
        let store_off = has_no_store(proxy);
        for r in &proxy.routes {
            let Some(route) = routes.get(*r) else {
                continue;
            };
            route_chain(route, &calls_of(*r), store_off, &mut problems);
        }
    }
    problems.sort_by_key(|d| (d.span.line, d.span.col));
    problems
}

/// The blocks some engine runs as an event: their `+ .runtime` calls run outside any route.
fn engine_events(pipeline: &Pipeline) -> BTreeSet<Entity> {
    let engines = pipeline.world.read_storage::<EngineSpec>();
    (&engines)
        .join()
        .flat_map(|e| e.events.iter().map(|ev| ev.block))
        .collect()
}

fn outside_a_route(call: &Call, problems: &mut Vec<Diagnostic>) {
    let spec = call.spec;
    if spec.caps.proxy_route {
        problems.push(
            Diagnostic::new(
                call.span,
                format!(
                    "'.{}' serves a client's request: it works only in a proxy route",
                    spec.name
                ),
            )
            .with_hint(format!(
                "move it under `+ .proxy ADDR`, after a route such as `: .{} head, get`",
                first_route(call).unwrap_or("manifests")
            )),
        );
    }
}

/// The first route `call`'s plugin works in, if it names its routes.
fn first_route(call: &Call) -> Option<&'static str> {
    call.spec.caps.resources?.first().map(|r| r.name())
}

/// The checks of one route's calls, in order.
fn route_chain(route: &Route, calls: &[&Call], store_off: bool, problems: &mut Vec<Diagnostic>) {
    let mut answered: Option<&Call> = None;
    let mut forwards: Option<&Call> = None;
    let mut logs_in: Option<&Call> = None;
    for call in calls {
        let (name, caps) = (call.spec.name, call.spec.caps);
        if !caps.works_in(route.resource) {
            let routes: Vec<String> = caps
                .resources
                .unwrap_or_default()
                .iter()
                .map(|r| format!("`.{}`", r.name()))
                .collect();
            problems.push(
                Diagnostic::new(
                    call.span,
                    format!(
                        "'.{name}' does not work in the `.{}` route",
                        route.resource.name()
                    ),
                )
                .with_hint(format!(
                    "'.{name}' works in the {} route: move it there",
                    routes.join(" or ")
                )),
            );
        }
        if caps.before_answer {
            if let Some(first) = answered {
                problems.push(
                    Diagnostic::new(
                        call.span,
                        format!(
                            "'.{name}' comes after '.{}' (line {}), which has already answered the request",
                            first.spec.name, first.span.line
                        ),
                    )
                    .with_hint(format!(
                        "move '.{name}' before '.{}': it declares what '.{}' applies",
                        first.spec.name, first.spec.name
                    )),
                );
            }
        }
        if caps.answers && answered.is_none() {
            answered = Some(call);
        }
        if caps.forwards_client_auth {
            forwards = forwards.or(Some(call));
            if let Some(login) = logs_in {
                problems.push(credentials_conflict(call, login));
            }
        }
        if caps.upstream_login {
            logs_in = logs_in.or(Some(call));
            if let Some(forward) = forwards {
                problems.push(credentials_conflict(call, forward));
            }
        }
        if caps.needs_store && store_off {
            problems.push(
                Diagnostic::new(
                    call.span,
                    format!("'.{name}' keeps what it makes in the store, and this proxy has `: .cache off`"),
                )
                .with_hint(
                    "give the proxy a store: drop `: .cache off` (the default is `cache/` beside this file) or write `: .cache DIR`",
                ),
            );
        }
    }
}

/// `late` sends one kind of credentials upstream and `early` (before it in the route) the
/// other: acr's own credentials would answer for a client that sent its own.
fn credentials_conflict(late: &Call, early: &Call) -> Diagnostic {
    let (forward, login) = if late.spec.caps.forwards_client_auth {
        (late, early)
    } else {
        (early, late)
    };
    Diagnostic::new(
        late.span,
        format!(
            "'.{}' beside '.{}' (line {}): the upstream would see acr's own credentials for a client that sent its own",
            late.spec.name, early.spec.name, early.span.line
        ),
    )
    .with_hint(format!(
        "keep '.{}' (each client logs in to the upstream) or '.{}' and '.authn' (acr logs in for every client), not both",
        forward.spec.name, login.spec.name
    ))
}

/// `: .cache off` (or `none`): the proxy has no store.
fn has_no_store(proxy: &ProxySpec) -> bool {
    proxy.settings.cache == CacheSetting::Off
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The lines of a chain, where its problems are, and words each one says.
    type Case = (String, &'static [(u32, u32)], &'static str);

    const HEAD: &str = "``` mirror\n+ .engine\n: .event start\n```\n``` start mirror\n+ .runtime\n: .mirror http://127.0.0.1:5000\n+ .proxy 127.0.0.1:8578\n";
    const LAYER: &str = "data:H4sIAAAAAAAA/wMAAAAAAAAAAAA=";

    /// The problems of `source`: (line, col, message and hint).
    fn problems(source: &str) -> Vec<(u32, u32, String)> {
        match crate::world::compile(Path::new("t.runmd"), source) {
            Ok(_) => Vec::new(),
            Err(report) => report
                .diagnostics
                .iter()
                .map(|d| {
                    let text = format!("{} / {}", d.message, d.hint.as_deref().unwrap_or(""));
                    (d.span.line, d.span.col, text)
                })
                .collect(),
        }
    }

    /// Each case: the lines after `+ .proxy` (line 9 is the first), or a whole file when it
    /// starts with a fence; where each problem is; words each one says.
    #[test]
    fn each_chain_problem_at_its_call() {
        let cases: &[Case] = &[
            (
                format!(": .manifests head, get\n:   .login\n:   .authn\n:   .inject-layer {LAYER}\n:   .resolve\n:   .discover t\n:   .teleport overlaybd\n: .blobs head, get\n:   .forward-auth\n:   .pull\n"),
                &[],
                "",
            ),
            (
                format!(": .manifests head, get\n:   .resolve\n:   .inject-layer {LAYER}\n"),
                &[(11, 5)],
                "after '.resolve' (line 10)",
            ),
            (
                ": .manifests head, get\n:   .pull\n: .blobs head, get\n:   .resolve\n:   .discover t\n".into(),
                &[(10, 5), (12, 5), (13, 5)],
                "does not work in the",
            ),
            (
                ": .manifests head, get\n:   .forward-auth\n:   .login\n:   .resolve\n: .tags get\n:   .login\n:   .forward-auth\n:   .resolve\n".into(),
                &[(11, 5), (15, 5)],
                "keep '.forward-auth'",
            ),
            (
                format!(": .cache off\n: .manifests head, get\n:   .inject-layer {LAYER}\n:   .resolve\n"),
                &[(11, 5)],
                "`: .cache off`",
            ),
            // A block no engine runs never runs: only `a e` is checked.
            (
                "``` e\n+ .engine\n: .event a\n```\n``` a e\n+ .runtime\n: .resolve\n```\n``` b e\n+ .runtime\n: .pull\n".into(),
                &[(7, 3)],
                "after a route such as `: .manifests head, get`",
            ),
        ];
        for (rest, want, says) in cases {
            let source = if rest.starts_with("```") {
                format!("{rest}```\n")
            } else {
                format!("{HEAD}{rest}```\n")
            };
            let found = problems(&source);
            let at: Vec<(u32, u32)> = found.iter().map(|p| (p.0, p.1)).collect();
            assert_eq!(&at, want, "{found:?}");
            for p in &found {
                assert!(p.2.contains(says), "{found:?}");
            }
        }
    }

    #[test]
    fn the_routes_a_plugin_works_in_are_named_in_the_hint() {
        let found = problems(&format!(
            "{HEAD}: .manifests head, get\n:   .pull\n: .blobs head, get\n:   .resolve\n```\n"
        ));
        assert!(
            found[0].2.contains("works in the `.blobs` route"),
            "{found:?}"
        );
        assert!(
            found[1]
                .2
                .contains("the `.manifests` or `.tags` or `.referrers` route"),
            "{found:?}"
        );
    }
}
