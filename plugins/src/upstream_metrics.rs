//! What each upstream cost and what acr saved it: per upstream, the requests sent to it and
//! the body bytes it sent, the body bytes clients were served of its content, the client
//! requests that joined a fetch already under way instead of asking it again (in this
//! process, or on another replica's lease), and the rate limit it last announced
//! (`RateLimit-Remaining`, `RateLimit-Limit`). Shown on `/metrics` with the label
//! `upstream="HOST[:PORT]"` and on `/status`.
//!
//! - **Bounded.** Clients choose upstreams (`?ns=` under an `.allow` glob), so the label set
//!   must not grow with them: the first [`MAX_UPSTREAMS`] upstreams get a series each, every
//!   later one is counted under `upstream="other"`.
//! - **No secret in a label.** The label is the host (and a port that is not the scheme's
//!   default) of the upstream's address: never its scheme, user, password, path or query.
//! - **Strict about what upstreams send.** A rate-limit header that is not a plain number
//!   (before an optional `;` and its parameters) is ignored, never a panic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::Serialize;

use crate::oci::Body;

/// How many upstreams get a series of their own; the rest share [`OTHER`].
pub const MAX_UPSTREAMS: usize = 64;

/// The label of every upstream past the first [`MAX_UPSTREAMS`] (and of an address that
/// names no host).
pub const OTHER: &str = "other";

/// A gauge that has no value yet (the upstream never sent the header).
const UNSET: u64 = u64::MAX;

/// What a coalesced request joined instead of asking the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Onto {
    /// A fetch of the same blob already in flight in this process (local single flight).
    Request,
    /// A fetch another replica holds the lease of (fleet single flight).
    Replica,
}

impl Onto {
    /// The value of the `onto` label.
    pub fn label(self) -> &'static str {
        match self {
            Onto::Request => "request",
            Onto::Replica => "replica",
        }
    }
}

/// The counters of one upstream (or of [`OTHER`]).
#[derive(Debug)]
pub struct UpstreamCounters {
    requests: AtomicU64,
    bytes_fetched: AtomicU64,
    bytes_served: AtomicU64,
    coalesced_onto_request: AtomicU64,
    coalesced_onto_replica: AtomicU64,
    ratelimit_remaining: AtomicU64,
    ratelimit_limit: AtomicU64,
    /// [`OTHER`] mixes upstreams: a rate limit of one of them would mislead there.
    keeps_rate_limits: bool,
}

impl UpstreamCounters {
    fn new(keeps_rate_limits: bool) -> Self {
        Self {
            requests: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            coalesced_onto_request: AtomicU64::new(0),
            coalesced_onto_replica: AtomicU64::new(0),
            ratelimit_remaining: AtomicU64::new(UNSET),
            ratelimit_limit: AtomicU64::new(UNSET),
            keeps_rate_limits,
        }
    }

    /// One HTTP request sent to the upstream (a redirect's next hop included).
    pub fn requested(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` body bytes received from the upstream.
    pub fn fetched(&self, n: u64) {
        self.bytes_fetched.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` body bytes of the upstream's content sent to a client.
    pub fn served(&self, n: u64) {
        self.bytes_served.fetch_add(n, Ordering::Relaxed);
    }

    /// The `body` of an answer of `status` with the bytes that reach the client counted as
    /// served (a success's only, and never for a HEAD, whose body is not sent): a streamed
    /// body as it leaves.
    pub fn counting_served(self: Arc<Self>, status: u16, body: Body, head: bool) -> Body {
        if head || !(200..300).contains(&status) {
            return body;
        }
        match body {
            Body::Empty => Body::Empty,
            Body::Full(bytes) => {
                self.served(bytes.len() as u64);
                Body::Full(bytes)
            }
            Body::Stream(stream) => Body::Stream(Box::pin(stream.inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    self.served(bytes.len() as u64);
                }
            }))),
        }
    }

    /// A client request that joined a fetch under way instead of asking the upstream.
    pub fn coalesced(&self, onto: Onto) {
        match onto {
            Onto::Request => &self.coalesced_onto_request,
            Onto::Replica => &self.coalesced_onto_replica,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the rate limit an upstream answer announces (`RateLimit-Remaining`,
    /// `RateLimit-Limit`); a header that is absent or not a number changes nothing.
    pub fn rate_limits(&self, headers: &reqwest::header::HeaderMap) {
        if !self.keeps_rate_limits {
            return;
        }
        for (name, gauge) in [
            ("ratelimit-remaining", &self.ratelimit_remaining),
            ("ratelimit-limit", &self.ratelimit_limit),
        ] {
            let value = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_rate_limit);
            if let Some(n) = value {
                gauge.store(n, Ordering::Relaxed);
            }
        }
    }

    fn snapshot(&self, upstream: &str) -> UpstreamSnapshot {
        let gauge = |g: &AtomicU64| Some(g.load(Ordering::Relaxed)).filter(|v| *v != UNSET);
        UpstreamSnapshot {
            upstream: upstream.to_string(),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            coalesced: Coalesced {
                request: self.coalesced_onto_request.load(Ordering::Relaxed),
                replica: self.coalesced_onto_replica.load(Ordering::Relaxed),
            },
            ratelimit: RateLimit {
                remaining: gauge(&self.ratelimit_remaining),
                limit: gauge(&self.ratelimit_limit),
            },
        }
    }
}

/// The numbers of one upstream at one moment, as `/status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamSnapshot {
    /// `HOST[:PORT]`, or [`OTHER`].
    pub upstream: String,
    pub requests: u64,
    pub bytes_fetched: u64,
    pub bytes_served: u64,
    pub coalesced: Coalesced,
    pub ratelimit: RateLimit,
}

/// Coalesced requests by what they joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Coalesced {
    pub request: u64,
    pub replica: u64,
}

/// The rate limit the upstream last announced (`None`: it never sent the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
}

/// The value of one series of an upstream (`None`: no sample).
type SampleOf = fn(&UpstreamSnapshot) -> Option<u64>;

/// Every upstream's counters, by label; at most [`MAX_UPSTREAMS`] of them and [`OTHER`].
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    by_label: Mutex<BTreeMap<String, Arc<UpstreamCounters>>>,
}

impl UpstreamMetrics {
    /// The counters of the upstream at `base` (`scheme://host[:port][/path]`, an `Upstream`'s
    /// `base`); those of [`OTHER`] once [`MAX_UPSTREAMS`] others have theirs.
    pub fn of(&self, base: &str) -> Arc<UpstreamCounters> {
        let label = label_of(base);
        let Ok(mut map) = self.by_label.lock() else {
            // A panic elsewhere poisoned the map: count nowhere rather than fail a request.
            return Arc::new(UpstreamCounters::new(false));
        };
        if let Some(c) = map.get(&label) {
            return c.clone();
        }
        let own = map.keys().filter(|k| k.as_str() != OTHER).count();
        let label = if label == OTHER || own >= MAX_UPSTREAMS {
            OTHER.to_string()
        } else {
            label
        };
        let keeps_rate_limits = label != OTHER;
        map.entry(label)
            .or_insert_with(|| Arc::new(UpstreamCounters::new(keeps_rate_limits)))
            .clone()
    }

    /// A client request for `upstream`'s content that joined a fetch under way instead of
    /// asking the upstream (`Onto::Request`: one in flight here; `Onto::Replica`: one that
    /// another replica holds the lease of).
    pub fn coalesced(&self, base: &str, onto: Onto) {
        self.of(base).coalesced(onto);
    }

    /// Every upstream's numbers, ordered by label.
    pub fn snapshot(&self) -> Vec<UpstreamSnapshot> {
        self.by_label
            .lock()
            .map(|m| m.iter().map(|(label, c)| c.snapshot(label)).collect())
            .unwrap_or_default()
    }

    /// The Prometheus text of every upstream's series.
    pub fn render(&self) -> String {
        let all = self.snapshot();
        let mut out = String::new();
        let families: [(&str, &str, &str, SampleOf); 5] = [
            (
                "acr_upstream_requests_sent_total",
                "counter",
                "HTTP requests sent to the upstream (challenge probes and redirect hops included)",
                |s| Some(s.requests),
            ),
            (
                "acr_upstream_bytes_fetched_total",
                "counter",
                "body bytes of blobs, manifests and tag lists received from the upstream",
                |s| Some(s.bytes_fetched),
            ),
            (
                "acr_upstream_bytes_served_total",
                "counter",
                "body bytes of the upstream's content sent to clients (from the store or on the way from the upstream)",
                |s| Some(s.bytes_served),
            ),
            (
                "acr_upstream_ratelimit_remaining",
                "gauge",
                "the RateLimit-Remaining the upstream sent last",
                |s| s.ratelimit.remaining,
            ),
            (
                "acr_upstream_ratelimit_limit",
                "gauge",
                "the RateLimit-Limit the upstream sent last",
                |s| s.ratelimit.limit,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in &all {
                if let Some(v) = value(s) {
                    let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {v}", escape(&s.upstream));
                }
            }
        }
        let name = "acr_upstream_coalesced_total";
        let _ = writeln!(
            out,
            "# HELP {name} client requests that joined a fetch under way instead of asking the upstream (onto=\"request\": in flight in this process; onto=\"replica\": on another replica's lease)\n# TYPE {name} counter"
        );
        for s in &all {
            for (onto, v) in [
                (Onto::Request, s.coalesced.request),
                (Onto::Replica, s.coalesced.replica),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",onto=\"{}\"}} {v}",
                    escape(&s.upstream),
                    onto.label()
                );
            }
        }
        out
    }
}

/// The label of the upstream at `base`: its host, with the port when the address names one
/// that is not its scheme's default; [`OTHER`] when it names no host. A host that is itself
/// called `other` is written `other.` (the same DNS name), so it is never taken for the
/// overflow series.
pub fn label_of(base: &str) -> String {
    let Ok(url) = reqwest::Url::parse(base) else {
        return OTHER.to_string();
    };
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return OTHER.to_string();
    };
    let host = if host.eq_ignore_ascii_case(OTHER) {
        format!("{OTHER}.")
    } else {
        host.to_ascii_lowercase()
    };
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// A label value escaped for the Prometheus text format (`\`, `"` and line feeds).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The number of a rate-limit header (`76`, or `76;w=21600` as Docker Hub sends it): ASCII
/// digits only, before an optional `;` and its parameters, surrounding spaces allowed. `None`
/// for anything else (a sign, a fraction, a list, a number past `u64`).
pub fn parse_rate_limit(value: &str) -> Option<u64> {
    let number = value.split(';').next()?.trim_matches([' ', '\t']);
    if number.is_empty() || number.len() > 19 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn rate_limit_headers_parse_strictly() {
        assert_eq!(parse_rate_limit("76;w=21600"), Some(76));
        assert_eq!(parse_rate_limit("7;w=60"), Some(7));
        assert_eq!(parse_rate_limit("100"), Some(100));
        assert_eq!(parse_rate_limit(" 0 ; w=1"), Some(0));
        assert_eq!(
            parse_rate_limit("9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            "",
            ";w=60",
            "-1",
            "+5",
            "7.5",
            "1e3",
            "76, 80",
            "seventy",
            "0x10",
            "99999999999999999999",
            "18446744073709551615",
            "７",
        ] {
            assert_eq!(parse_rate_limit(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_latest_good_value_is_kept() {
        let m = UpstreamMetrics::default();
        let c = m.of("https://registry-1.docker.io");
        let answer = |pairs: &[(&'static str, &[u8])]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_bytes(v).unwrap());
            }
            h
        };
        c.rate_limits(&answer(&[
            ("ratelimit-remaining", b"76;w=21600"),
            ("ratelimit-limit", b"100;w=21600"),
        ]));
        c.rate_limits(&answer(&[("RateLimit-Remaining", b"75;w=21600")]));
        // Not numbers (or not text): ignored.
        c.rate_limits(&answer(&[
            ("ratelimit-remaining", b"lots"),
            ("ratelimit-limit", b"\xff\xfe"),
        ]));
        let s = &m.snapshot()[0];
        assert_eq!(s.upstream, "registry-1.docker.io");
        assert_eq!(
            s.ratelimit,
            RateLimit {
                remaining: Some(75),
                limit: Some(100)
            }
        );
        let text = m.render();
        assert!(
            text.contains(
                "acr_upstream_ratelimit_remaining{upstream=\"registry-1.docker.io\"} 75\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn labels_are_hosts_without_secrets() {
        assert_eq!(label_of("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            label_of("https://Registry-1.Docker.IO"),
            "registry-1.docker.io"
        );
        assert_eq!(label_of("https://ghcr.io:443/v2"), "ghcr.io");
        assert_eq!(
            label_of("https://user:secret@host.example:8443/path?sig=token#x"),
            "host.example:8443"
        );
        assert_eq!(label_of("http://[::1]:5000"), "[::1]:5000");
        assert_eq!(label_of("https://other"), "other.");
        assert_eq!(label_of("not a url"), OTHER);
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_label_set_is_bounded() {
        let m = UpstreamMetrics::default();
        for i in 0..(MAX_UPSTREAMS + 40) {
            let c = m.of(&format!("http://h{i}.example"));
            c.requested();
            c.rate_limits(&HeaderMap::from_iter([(
                reqwest::header::HeaderName::from_static("ratelimit-remaining"),
                HeaderValue::from_static("1"),
            )]));
        }
        // A known upstream keeps its own series after the bound is reached.
        m.of("http://h0.example").requested();
        let all = m.snapshot();
        assert_eq!(all.len(), MAX_UPSTREAMS + 1);
        let other = all.iter().find(|s| s.upstream == OTHER).unwrap();
        assert_eq!(other.requests, 40);
        assert_eq!(other.ratelimit.remaining, None);
        let h0 = all.iter().find(|s| s.upstream == "h0.example").unwrap();
        assert_eq!(h0.requests, 2);
    }

    #[test]
    fn every_series_is_rendered_with_its_labels() {
        let m = UpstreamMetrics::default();
        let up = "https://registry-1.docker.io";
        let c = m.of(up);
        c.requested();
        c.fetched(10);
        c.served(30);
        m.coalesced(up, Onto::Request);
        m.coalesced(up, Onto::Replica);
        m.coalesced(up, Onto::Replica);
        let text = m.render();
        for line in [
            "acr_upstream_requests_sent_total{upstream=\"registry-1.docker.io\"} 1\n",
            "acr_upstream_bytes_fetched_total{upstream=\"registry-1.docker.io\"} 10\n",
            "acr_upstream_bytes_served_total{upstream=\"registry-1.docker.io\"} 30\n",
            "acr_upstream_coalesced_total{upstream=\"registry-1.docker.io\",onto=\"request\"} 1\n",
            "acr_upstream_coalesced_total{upstream=\"registry-1.docker.io\",onto=\"replica\"} 2\n",
            "# TYPE acr_upstream_ratelimit_limit gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        // No rate limit was announced: no gauge sample.
        assert!(!text.contains("acr_upstream_ratelimit_limit{"), "{text}");
    }
}
