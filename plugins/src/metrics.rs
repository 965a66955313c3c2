//! The process's counters (store, upstream client, server), shown on `GET /metrics` in the
//! Prometheus text format; those per upstream are `upstream_metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the store, the upstream client and the server.
#[derive(Debug, Default)]
pub struct Metrics {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_from_store: AtomicU64,
    pub bytes_from_upstream: AtomicU64,
    pub upstream_requests: AtomicU64,
    pub digest_mismatches: AtomicU64,
    pub stale_serves: AtomicU64,
    pub evictions: AtomicU64,
    pub store_bytes: AtomicU64,
    pub store_objects: AtomicU64,
    /// Blobs refused because the store had no room for them (507).
    pub store_refused: AtomicU64,
    /// Objects in the S3 tier that did not match their digest (deleted there).
    pub remote_corrupt: AtomicU64,
    /// The same story per upstream, with what was saved (see `upstream_metrics`).
    pub upstreams: crate::upstream_metrics::UpstreamMetrics,
    /// What `.verify` served and refused.
    pub verify: VerifyMetrics,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 12] = [
            (
                "acr_cache_hits_total",
                "counter",
                "requests the store answered without asking the upstream for content (from disk, the S3 tier, or joining a fetch in flight)",
                &self.hits,
            ),
            (
                "acr_cache_misses_total",
                "counter",
                "requests that had to fetch from the upstream (a HEAD it answers included)",
                &self.misses,
            ),
            (
                "acr_bytes_from_store_total",
                "counter",
                "body bytes sent to clients for requests the store answered",
                &self.bytes_from_store,
            ),
            (
                "acr_bytes_from_upstream_total",
                "counter",
                "body bytes of blobs and manifests received from upstreams (each fetch once)",
                &self.bytes_from_upstream,
            ),
            (
                "acr_upstream_requests_total",
                "counter",
                "HTTP requests sent to upstreams",
                &self.upstream_requests,
            ),
            (
                "acr_digest_mismatches_total",
                "counter",
                "upstream content that did not match its digest",
                &self.digest_mismatches,
            ),
            (
                "acr_stale_serves_total",
                "counter",
                "tags served past their TTL because the upstream failed",
                &self.stale_serves,
            ),
            (
                "acr_evictions_total",
                "counter",
                "objects evicted to stay under max-size",
                &self.evictions,
            ),
            (
                "acr_store_refused_total",
                "counter",
                "blobs refused (507) because the store had no room for them even after eviction",
                &self.store_refused,
            ),
            (
                "acr_store_remote_corrupt_total",
                "counter",
                "objects in the S3 tier that did not match their digest (deleted there, fetched again)",
                &self.remote_corrupt,
            ),
            (
                "acr_store_bytes",
                "gauge",
                "bytes held in the store",
                &self.store_bytes,
            ),
            (
                "acr_store_objects",
                "gauge",
                "objects held in the store",
                &self.store_objects,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out.push_str(&self.upstreams.render());
        out.push_str(&self.verify.render());
        out
    }
}

/// The reasons a pull is refused, as metric labels (a bounded set).
pub const REASONS: [&str; 5] = [
    "no_signature",
    "untrusted_key",
    "other_digest",
    "other_repository",
    "invalid_signature",
];

/// `acr_verify_*`: manifests served and refused by `.verify`.
#[derive(Debug, Default)]
pub struct VerifyMetrics {
    pub admitted: AtomicU64,
    /// Signatures looked up at the upstream (decisions made, not kept ones reused).
    pub lookups: AtomicU64,
    refused: [AtomicU64; REASONS.len()],
}

impl VerifyMetrics {
    pub fn refused(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refused_count(&self, reason: &str) -> u64 {
        REASONS
            .iter()
            .position(|r| *r == reason)
            .map(|i| self.refused[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// The Prometheus text of the counters.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# HELP acr_verify_admitted_total manifests served because `.verify` found them signed by a trusted key\n\
             # TYPE acr_verify_admitted_total counter\nacr_verify_admitted_total {}\n\
             # HELP acr_verify_lookups_total signature lookups `.verify` made at upstreams (kept decisions cost none)\n\
             # TYPE acr_verify_lookups_total counter\nacr_verify_lookups_total {}\n\
             # HELP acr_verify_refused_total manifests refused (403 DENIED) by `.verify`, by reason\n\
             # TYPE acr_verify_refused_total counter\n",
            self.admitted.load(Ordering::Relaxed),
            self.lookups.load(Ordering::Relaxed),
        );
        for (i, reason) in REASONS.iter().enumerate() {
            out.push_str(&format!(
                "acr_verify_refused_total{{reason=\"{reason}\"}} {}\n",
                self.refused[i].load(Ordering::Relaxed)
            ));
        }
        out
    }
}
