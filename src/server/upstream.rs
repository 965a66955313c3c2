//! Choosing the upstream of a request: containerd's `?ns=` first, then the first path segment
//! when path routing is on, then the block's `.mirror` host. Only upstreams the file names are
//! ever contacted: acr is never an open proxy.

use acr_plugins::oci::{is_registry_host, RegistryError};
use acr_plugins::registry::Upstream;

use crate::world::ProxyPlan;

/// Where a request goes and the repository name to use there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub upstream: Upstream,
    pub name: String,
    /// The path prefix the client used (`/v2/<its name>`), for rewriting `Link`.
    pub client_prefix: String,
}

/// The namespace and base URL of a `.mirror` host (a host, or a URL written with its scheme).
fn mirror_upstream(host: &str) -> Upstream {
    match host.split_once("://") {
        Some((_, rest)) => Upstream {
            ns: rest.split('/').next().unwrap_or(rest).to_string(),
            base: host.trim_end_matches('/').to_string(),
            named_by_pipeline: true,
            sends_ns: false,
        },
        None => Upstream::for_ns(host).named(true),
    }
}

/// The namespace a `.mirror` host stands for (`http://127.0.0.1:5000` is `127.0.0.1:5000`).
pub fn mirror_ns(host: &str) -> String {
    mirror_upstream(host).ns
}

fn canonical_ns(ns: &str) -> &str {
    match ns {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// The upstreams `proxy` names itself (its `.mirror` hosts and `.endpoint`s): the ones whose
/// challenge it learns as it starts.
pub fn named(proxy: &ProxyPlan) -> Vec<Upstream> {
    let mirrors = proxy.mirror_hosts.iter().map(|h| mirror_upstream(h));
    let endpoints = proxy
        .settings
        .endpoints
        .iter()
        .map(|e| endpoint_upstream(canonical_ns(&e.ns), &e.url));
    mirrors.chain(endpoints).collect()
}

/// An `.endpoint` standing in for namespace `ns` (a chained mirror, a local stand-in): it is
/// told which namespace, as containerd tells acr.
fn endpoint_upstream(ns: &str, url: &str) -> Upstream {
    Upstream {
        ns: ns.to_string(),
        base: url.to_string(),
        named_by_pipeline: true,
        sends_ns: true,
    }
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == t[ti] || p[pi] == '?') {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Chooses the upstream for a request for `name` with the client's `ns`.
pub fn choose(proxy: &ProxyPlan, ns: Option<&str>, name: &str) -> Result<Choice, RegistryError> {
    let client_prefix = format!("/v2/{name}");
    let settings = &proxy.settings;
    let path_routing = settings.path_routing;
    if let Some(ns) = ns.filter(|n| !n.is_empty() && !is_registry_host(n)) {
        return Err(RegistryError::denied(format!(
            "ns `{}` is not a registry host (HOST or HOST:PORT)",
            ns.chars().take(300).collect::<String>()
        )));
    }
    let (target, mut repo) = match ns.filter(|n| !n.is_empty()) {
        Some(ns) => (canonical_ns(&ns.to_ascii_lowercase()).to_string(), name.to_string()),
        None => match name.split_once('/') {
            Some((first, rest)) if path_routing && first.contains('.') => (canonical_ns(first).to_string(), rest.to_string()),
            _ => match proxy.mirror_hosts.first() {
                Some(h) => (mirror_upstream(h).ns, name.to_string()),
                None => {
                    return Err(RegistryError::not_found(
                        "NAME_UNKNOWN",
                        "this mirror has no default upstream: send ?ns=REGISTRY (containerd does) or add `.mirror HOST`",
                    ))
                }
            },
        },
    };
    let endpoint = settings
        .endpoints
        .iter()
        .find(|e| canonical_ns(&e.ns) == target)
        .map(|e| e.url.clone());
    let upstream = if let Some(base) = endpoint {
        endpoint_upstream(&target, &base)
    } else if let Some(m) = proxy
        .mirror_hosts
        .iter()
        .map(|h| mirror_upstream(h))
        .find(|u| canonical_ns(&u.ns) == target)
    {
        Upstream {
            ns: target.clone(),
            base: m.base,
            named_by_pipeline: true,
            sends_ns: false,
        }
    } else if let Some(pattern) = settings.allow.iter().find(|p| glob(p, &target)) {
        // An exact `.allow HOST` names the host; a glob lets a client choose it, and such an
        // upstream is never sent the credentials that name no host.
        let exact = !pattern.contains(['*', '?']);
        Upstream::for_ns(&target).named(exact)
    } else {
        return Err(RegistryError::denied(format!(
            "upstream {target} is not one this mirror serves: add `: .allow {target}` under `+ .proxy`"
        )));
    };
    if target == "docker.io" && !repo.contains('/') {
        repo = format!("library/{repo}");
    }
    Ok(Choice {
        upstream,
        name: repo,
        client_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::ProxySettings;
    use acr_plugins::Props;
    use std::sync::Arc;

    fn proxy(mirrors: &[&str], settings: &[(&str, &str)]) -> ProxyPlan {
        let mut typed = ProxySettings::new();
        for (k, v) in settings {
            typed.apply(k, v).unwrap();
        }
        ProxyPlan {
            block: 1,
            key: ("start".into(), "mirror".into()),
            address: "127.0.0.1:0".into(),
            mirror_hosts: mirrors.iter().map(|s| s.to_string()).collect(),
            control: Arc::new(Props::new()),
            settings: Arc::new(typed.finish()),
            routes: vec![],
        }
    }

    #[test]
    fn order_of_choice() {
        let p = proxy(
            &["http://127.0.0.1:5000"],
            &[
                ("allow", "*.example.com"),
                ("endpoint", "docker.io http://127.0.0.1:6000"),
            ],
        );
        let c = choose(&p, None, "library/test").unwrap();
        assert_eq!(c.upstream.base, "http://127.0.0.1:5000");
        let c = choose(&p, Some("docker.io"), "alpine").unwrap();
        assert_eq!(
            (c.upstream.base.as_str(), c.name.as_str()),
            ("http://127.0.0.1:6000", "library/alpine")
        );
        assert!(c.upstream.named_by_pipeline);
        // An `.endpoint` is told the namespace it stands in for, as containerd tells acr;
        // a `.mirror` URL is the registry itself and is not.
        assert_eq!(
            c.upstream.url("/v2/library/alpine/tags/list?n=2"),
            "http://127.0.0.1:6000/v2/library/alpine/tags/list?n=2&ns=docker.io"
        );
        let c = choose(&p, None, "library/test").unwrap();
        assert_eq!(c.upstream.url("/v2/"), "http://127.0.0.1:5000/v2/");
        let ported = proxy(&[], &[("endpoint", "127.0.0.1:7000 http://127.0.0.1:6000")]);
        let c = choose(&ported, Some("127.0.0.1:7000"), "app").unwrap();
        assert_eq!(
            c.upstream.url("/v2/app/manifests/1"),
            "http://127.0.0.1:6000/v2/app/manifests/1?ns=127.0.0.1%3A7000"
        );
        let c = choose(&p, Some("a.example.com"), "x").unwrap();
        assert_eq!(c.upstream.base, "https://a.example.com");
        // Chosen by the client through a glob: not named by the pipeline.
        assert!(!c.upstream.named_by_pipeline);
        let c = choose(&p, None, "library/test").unwrap();
        assert!(c.upstream.named_by_pipeline);
        let exact = proxy(&[], &[("allow", "ghcr.io, *.example.com")]);
        assert!(
            choose(&exact, Some("ghcr.io"), "x")
                .unwrap()
                .upstream
                .named_by_pipeline
        );
        assert!(
            !choose(&exact, Some("b.example.com"), "x")
                .unwrap()
                .upstream
                .named_by_pipeline
        );
        assert_eq!(choose(&p, Some("evil.com"), "x").unwrap_err().status, 403);
        // Path routing is off: the first segment is part of the name.
        let c = choose(&p, None, "ghcr.io/org/app").unwrap();
        assert_eq!(c.name, "ghcr.io/org/app");
        let p = proxy(&[], &[("path-routing", ""), ("allow", "ghcr.io")]);
        let c = choose(&p, None, "ghcr.io/org/app").unwrap();
        assert_eq!(
            (c.upstream.base.as_str(), c.name.as_str()),
            ("https://ghcr.io", "org/app")
        );
        assert_eq!(choose(&p, None, "plain/name").unwrap_err().status, 404);
    }

    #[test]
    fn an_ns_is_a_host_and_nothing_more() {
        for ok in [
            "docker.io",
            "127.0.0.1:5000",
            "x.azurecr.io",
            "localhost",
            "[::1]:5000",
            "REG.example",
        ] {
            assert!(is_registry_host(ok), "{ok}");
        }
        for bad in [
            "evil.com/x.azurecr.io",
            "evil.com#.azurecr.io",
            "evil.com?.azurecr.io",
            "user@evil.com",
            "https://x.azurecr.io",
            "evil.com:443/.azurecr.io",
            "a..b",
            "-a.com",
            "a.com:",
            "a.com:99999x",
            "",
            "a b",
        ] {
            assert!(!is_registry_host(bad), "{bad}");
        }
        let p = proxy(&[], &[("allow", "*.azurecr.io")]);
        for bad in [
            "evil.com/x.azurecr.io",
            "evil.com#.azurecr.io",
            "evil.com?.azurecr.io",
        ] {
            assert_eq!(choose(&p, Some(bad), "x").unwrap_err().status, 403, "{bad}");
        }
        let c = choose(&p, Some("X.AzureCR.io"), "x").unwrap();
        assert_eq!(c.upstream.base, "https://x.azurecr.io");
    }

    #[test]
    fn globs() {
        assert!(glob("*.azurecr.io", "x.azurecr.io"));
        assert!(!glob("*.azurecr.io", "azurecr.io.evil"));
        assert!(glob("127.0.0.1:*", "127.0.0.1:5000"));
        assert!(glob("*", "anything"));
    }
}
