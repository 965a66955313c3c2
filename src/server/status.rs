//! `GET /status`: one HTML page for an operator: the upstreams (and what each sent and was
//! spared), the store and its hit ratio over time, and the most recent pulls; `/status.json`
//! the same numbers for programs. No script and no external asset: it renders anywhere
//! (and in a test's headless browser), and refreshes itself every 10 s.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use acr_plugins::metrics::Metrics;
use acr_plugins::upstream_metrics::UpstreamSnapshot;

use super::observe::{Observer, Sample};
use crate::world::ProxyPlan;

fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The hit ratio between consecutive samples (requests in that interval), as points.
fn ratio_points(samples: &[Sample]) -> Vec<(u64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let hits = w[1].hits.saturating_sub(w[0].hits);
            let misses = w[1].misses.saturating_sub(w[0].misses);
            let total = hits + misses;
            (total > 0).then(|| (w[1].at_ms, hits as f64 / total as f64))
        })
        .collect()
}

/// A small SVG line chart of `points` (x: time, y: 0..=max).
fn chart(title: &str, points: &[(u64, f64)], max: f64, label: impl Fn(f64) -> String) -> String {
    let (w, h) = (560.0, 140.0);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#f7f7f9\" stroke=\"#ccc\"/>",
        esc(title),
        esc(title)
    );
    if points.len() < 2 || max <= 0.0 {
        let _ = write!(
            svg,
            "<text x=\"12\" y=\"{}\" fill=\"#666\">collecting samples (one every 10 s)</text>",
            h / 2.0
        );
    } else {
        let t0 = points[0].0 as f64;
        let span = (points[points.len() - 1].0 as f64 - t0).max(1.0);
        let coords: Vec<String> = points
            .iter()
            .map(|(t, v)| {
                let x = 8.0 + (*t as f64 - t0) / span * (w - 16.0);
                let y = h - 8.0 - (v / max).clamp(0.0, 1.0) * (h - 24.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"8\" y=\"14\" fill=\"#333\" font-size=\"11\">max {}</text>\
             <text x=\"{}\" y=\"14\" fill=\"#333\" font-size=\"11\" text-anchor=\"end\">now {}</text>",
            coords.join(" "),
            esc(&label(max)),
            w - 8.0,
            esc(&label(points[points.len() - 1].1))
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Per upstream: what it was asked and sent, what clients were served of it, the requests
/// that joined a fetch under way, and the rate limit it announced.
fn saving_table(upstreams: &[UpstreamSnapshot]) -> String {
    let mut html = String::from(
        "<h2>What the upstreams sent, what clients got</h2><table id=\"saving\"><tr><th>upstream</th>\
         <th class=\"num\">requests</th><th class=\"num\">fetched</th><th class=\"num\">served</th>\
         <th class=\"num\">coalesced here</th><th class=\"num\">onto replicas</th><th class=\"num\">rate limit left</th></tr>",
    );
    if upstreams.is_empty() {
        html.push_str("<tr><td colspan=\"7\">no upstream asked yet</td></tr>");
    }
    for u in upstreams {
        let rate = match (u.ratelimit.remaining, u.ratelimit.limit) {
            (Some(r), Some(l)) => format!("{r} of {l}"),
            (Some(r), None) => r.to_string(),
            (None, Some(l)) => format!("? of {l}"),
            (None, None) => "-".to_string(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&u.upstream),
            u.requests,
            human(u.bytes_fetched),
            human(u.bytes_served),
            u.coalesced.request,
            u.coalesced.replica,
            esc(&rate)
        );
    }
    html.push_str("</table>");
    html
}

/// `/status.json`: the page's numbers for programs (the store and every upstream's).
pub fn json(metrics: &Metrics, observer: &Observer, store: Option<&str>) -> serde_json::Value {
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": observer.uptime_s(),
        "store": {
            "location": store,
            "bytes": n(&metrics.store_bytes),
            "objects": n(&metrics.store_objects),
            "hits": n(&metrics.hits),
            "misses": n(&metrics.misses),
            "bytes_from_store": n(&metrics.bytes_from_store),
            "bytes_from_upstream": n(&metrics.bytes_from_upstream),
            "upstream_requests": n(&metrics.upstream_requests),
            "digest_mismatches": n(&metrics.digest_mismatches),
        },
        "upstreams": metrics.upstreams.snapshot(),
    })
}

/// The page.
pub fn page(
    proxy: &ProxyPlan,
    metrics: &Metrics,
    observer: &Observer,
    store: Option<&str>,
) -> String {
    let hits = metrics.hits.load(Ordering::Relaxed);
    let misses = metrics.misses.load(Ordering::Relaxed);
    let ratio = if hits + misses > 0 {
        format!("{:.1} %", 100.0 * hits as f64 / (hits + misses) as f64)
    } else {
        "no requests yet".to_string()
    };
    let mut upstreams: Vec<String> = proxy
        .mirror_hosts
        .iter()
        .map(|h| format!("{h} (mirror)"))
        .collect();
    for (name, what) in [("endpoint", "endpoint"), ("allow", "allowed")] {
        for v in proxy.settings.written.all(name).filter_map(|v| v.as_str()) {
            upstreams.push(format!("{v} ({what})"));
        }
    }
    let samples = observer.samples();
    let ratios = ratio_points(&samples);
    let sizes: Vec<(u64, f64)> = samples
        .iter()
        .map(|s| (s.at_ms, s.store_bytes as f64))
        .collect();
    let max_size = sizes.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>acr status</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}\
         h1{{font-size:20px}}table{{border-collapse:collapse}}td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}}\
         table{{table-layout:fixed;width:100%}}td{{overflow-wrap:anywhere}}\
         th:nth-child(1),th:nth-child(2),th:nth-child(5){{width:4.5em}}th:nth-child(6),th:nth-child(7){{width:6em}}th:nth-child(4){{width:12em}}\
         #saving th{{width:auto}}.num{{text-align:right}}.bad{{color:#b00}}figure{{margin:8px 0}}figcaption{{font-weight:600}}\
         dl{{display:grid;grid-template-columns:max-content auto;gap:2px 16px}}dt{{color:#555}}</style></head><body>\
         <h1>acr on {addr}</h1>\
         <dl><dt>version</dt><dd>{ver}</dd><dt>uptime</dt><dd id=\"uptime\">{up} s</dd>\
         <dt>store</dt><dd id=\"store\">{store}</dd>\
         <dt>cache size</dt><dd id=\"cache-size\">{size} in {objects} objects</dd>\
         <dt>hit ratio</dt><dd id=\"hit-ratio\">{ratio} ({hits} hits, {misses} misses)</dd>\
         <dt>upstream requests</dt><dd>{up_req}</dd><dt>digest mismatches</dt><dd>{mism}</dd></dl>",
        addr = esc(&proxy.address),
        ver = env!("CARGO_PKG_VERSION"),
        up = observer.uptime_s(),
        store = esc(store.unwrap_or("off")),
        size = human(metrics.store_bytes.load(Ordering::Relaxed)),
        objects = metrics.store_objects.load(Ordering::Relaxed),
        up_req = metrics.upstream_requests.load(Ordering::Relaxed),
        mism = metrics.digest_mismatches.load(Ordering::Relaxed),
    );
    html.push_str("<h2>Upstreams</h2><ul id=\"upstreams\">");
    for u in &upstreams {
        let _ = write!(html, "<li>{}</li>", esc(u));
    }
    if upstreams.is_empty() {
        html.push_str("<li>none (clients name them with ?ns=)</li>");
    }
    html.push_str("</ul>");
    html.push_str(&saving_table(&metrics.upstreams.snapshot()));
    html.push_str("<h2>Over time</h2>");
    html.push_str(&chart("hit ratio", &ratios, 1.0, |v| {
        format!("{:.0} %", v * 100.0)
    }));
    html.push_str(&chart("cache size", &sizes, max_size, |v| human(v as u64)));
    html.push_str(
        "<h2>Recent requests</h2><table id=\"recent\"><tr><th>age</th><th>method</th><th>path</th><th>upstream</th><th>status</th><th class=\"num\">bytes</th><th class=\"num\">ms</th></tr>",
    );
    let now = acr_plugins::clock::now_ms();
    for f in observer.recent() {
        let _ = write!(
            html,
            "<tr><td>{}s</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            now.saturating_sub(f.at_ms) / 1000,
            esc(&f.method),
            esc(&f.path),
            esc(&f.upstream),
            if f.status >= 400 { "bad" } else { "" },
            f.status,
            f.bytes,
            f.ms
        );
    }
    html.push_str("</table></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_ratios_are_per_interval() {
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
        assert_eq!(human(5), "5 B");
        assert_eq!(human(3 * 1024 * 1024), "3.0 MiB");
        let s = |at, hits, misses| Sample {
            at_ms: at,
            hits,
            misses,
            store_bytes: 0,
        };
        let pts = ratio_points(&[s(0, 0, 0), s(10, 3, 1), s(20, 3, 1), s(30, 5, 1)]);
        assert_eq!(pts, vec![(10, 0.75), (30, 1.0)]);
    }
}
