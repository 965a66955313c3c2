//! What an operator sees of a running mirror: request counters and latency histograms for
//! `/metrics`, the most recent requests, and samples of the store over time for the `/status`
//! page. Fed by each request's log line when the request is over.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use acr_plugins::clock::now_ms;
use acr_plugins::metrics::Metrics;

/// Latency buckets, in seconds: from a cached manifest to a cold multi-gigabyte blob.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];
/// How many recent requests `/status` lists.
const RECENT: usize = 40;
/// The most series `acr_requests_total` keeps. Its labels are all chosen by acr (route,
/// method name from a fixed list, status), so it stays far below this; the cap is a second
/// line, should a label ever let client text in.
const MAX_REQUEST_SERIES: usize = 2048;
/// The longest path kept for `/status`'s list of recent requests.
const RECENT_PATH_CHARS: usize = 256;
/// How many samples of the store are kept (one every `SAMPLE_EVERY`: an hour).
const SAMPLES: usize = 360;
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// One finished request, as `/status` lists it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    pub upstream: String,
    pub status: u16,
    pub bytes: u64,
    pub ms: u64,
}

/// One sample of the store.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at_ms: u64,
    pub hits: u64,
    pub misses: u64,
    pub store_bytes: u64,
}

#[derive(Debug)]
pub struct Observer {
    started: Instant,
    counts: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    recent: Mutex<VecDeque<Finished>>,
    samples: Mutex<VecDeque<Sample>>,
}

impl Default for Observer {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            counts: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(VecDeque::new()),
            samples: Mutex::new(VecDeque::new()),
        }
    }
}

/// The route a path belongs to, for labels (never the client's text: bounded cardinality).
pub fn route_of(path: &str) -> &'static str {
    if path == "/v2/" || path == "/v2" {
        return "base";
    }
    if path.starts_with("/v2/") {
        for (part, name) in [
            ("/manifests/", "manifests"),
            ("/blobs/", "blobs"),
            ("/tags/list", "tags"),
            ("/referrers/", "referrers"),
        ] {
            if path.contains(part) {
                return name;
            }
        }
        return "other";
    }
    match path {
        "/metrics" => "metrics",
        "/status" | "/status.json" => "status",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/auth" => "auth",
        "/token" => "token",
        "/container-token" | "/v1alpha2/container" => "container-token",
        "/validate-creds" | "/v1alpha2/validate-creds" => "validate-creds",
        _ => "other",
    }
}

/// The method as a label: the standard ones by name, anything a client made up `other`
/// (a label per made-up method would be a new series per request).
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

impl Observer {
    /// Records a request that is over.
    pub fn record(&self, mut f: Finished) {
        let route = route_of(&f.path);
        let method = method_label(&f.method);
        if let Ok(mut c) = self.counts.lock() {
            let key = (route, method, f.status);
            if let Some(n) = c.get_mut(&key) {
                *n += 1;
            } else if c.len() < MAX_REQUEST_SERIES {
                c.insert(key, 1);
            } else {
                *c.entry(("other", "other", 0)).or_default() += 1;
            }
        }
        // What `/status` lists is bounded in number (`RECENT`) and in size.
        f.method = method.to_string();
        if f.path.len() > RECENT_PATH_CHARS {
            let mut cut = RECENT_PATH_CHARS;
            while !f.path.is_char_boundary(cut) {
                cut -= 1;
            }
            f.path.truncate(cut);
            f.path.push('…');
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route).or_default();
            let secs = f.ms as f64 / 1000.0;
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
        // The status page's own refreshes and probes would crowd out the pulls.
        if matches!(route, "status" | "metrics" | "healthz" | "readyz") {
            return;
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(f);
        }
    }

    /// Takes a sample of the store's counters (every `SAMPLE_EVERY`).
    pub fn sample(&self, m: &Metrics) {
        let s = Sample {
            at_ms: now_ms(),
            hits: m.hits.load(Ordering::Relaxed),
            misses: m.misses.load(Ordering::Relaxed),
            store_bytes: m.store_bytes.load(Ordering::Relaxed),
        };
        if let Ok(mut q) = self.samples.lock() {
            if q.len() == SAMPLES {
                q.pop_front();
            }
            q.push_back(s);
        }
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn recent(&self) -> Vec<Finished> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The Prometheus text of the request counters and latency histograms.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP acr_requests_total requests answered, by route, method and status\n# TYPE acr_requests_total counter\n");
        if let Ok(c) = self.counts.lock() {
            for ((route, method, status), n) in c.iter() {
                let _ = writeln!(
                    out,
                    "acr_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP acr_request_duration_seconds time from the request to the last byte of the reply, by route\n# TYPE acr_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "acr_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "acr_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nacr_request_duration_seconds_sum{{route=\"{route}\"}} {}\nacr_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP acr_uptime_seconds seconds since acr started serving\n# TYPE acr_uptime_seconds gauge\nacr_uptime_seconds {}",
            self.uptime_s()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, status: u16, ms: u64) -> Finished {
        Finished {
            at_ms: 0,
            method: "GET".into(),
            path: path.into(),
            upstream: "-".into(),
            status,
            bytes: 1,
            ms,
        }
    }

    #[test]
    fn routes_counts_and_histograms() {
        assert_eq!(route_of("/v2/library/x/manifests/1"), "manifests");
        assert_eq!(route_of("/v2/a/b/blobs/sha256:0"), "blobs");
        assert_eq!(route_of("/v2/"), "base");
        assert_eq!(route_of("/v2/x/tags/list"), "tags");
        assert_eq!(route_of("/evil\"label"), "other");
        let o = Observer::default();
        o.record(f("/v2/x/manifests/1", 200, 3));
        o.record(f("/v2/x/manifests/1", 200, 700));
        o.record(f("/v2/x/blobs/sha256:0", 404, 0));
        o.record(f("/status", 200, 0));
        let text = o.render();
        assert!(
            text.contains(
                "acr_requests_total{route=\"manifests\",method=\"GET\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "acr_request_duration_seconds_bucket{route=\"manifests\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("acr_request_duration_seconds_bucket{route=\"manifests\",le=\"1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("acr_request_duration_seconds_count{route=\"manifests\"} 2"),
            "{text}"
        );
        // The status page's own requests are not "recent pulls".
        assert_eq!(o.recent().len(), 3);
        assert_eq!(o.recent()[0].status, 404);
        // Made-up methods share one label.
        for i in 0..50 {
            let mut odd = f("/v2/", 405, 0);
            odd.method = format!("FOO{i}");
            o.record(odd);
        }
        let text = o.render();
        assert!(
            text.contains("acr_requests_total{route=\"base\",method=\"other\",status=\"405\"} 50"),
            "{text}"
        );
        assert!(!text.contains("FOO"), "{text}");
        assert_eq!(o.recent().len(), RECENT);
        assert_eq!(o.recent()[0].method, "other");
    }
}
