//! The Grafana dashboard acr ships (`lib/grafana/acr-dashboard.json`) asks only for metrics a
//! running acr exposes: every `acr_*` name in its queries is on `/metrics` of a real mirror
//! (as samples, or as a family declared with its `# TYPE`).

use crate::harness::*;

#[test]
fn every_metric_the_dashboard_queries_is_exposed() {
    let text = std::fs::read_to_string(repo_root().join("lib/grafana/acr-dashboard.json"))
        .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("acr_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    let acr = Acr::start(&pipeline(&reg.url(), &[], &[".cache store"], &routes("")));
    // A pull, so the per-route series and histograms exist.
    acr.assert_serves(Some(("library/test", "1")));
    let metrics = acr.fetch("GET", "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    // A sample's name, or a family declared with no sample yet (the rate-limit gauges of an
    // upstream that sends no rate-limit headers).
    let exposed: Vec<String> = metrics
        .text()
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(declared) => declared.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(String::from)
        .collect();
    for name in &queried {
        assert!(
            exposed.contains(name),
            "the dashboard queries {name}, which /metrics does not have:\n{}",
            metrics.text()
        );
    }
}
