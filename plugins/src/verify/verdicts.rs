//! What `.verify` decided, kept per (upstream, repository, digest, keys): a digest never changes, so a
//! decision holds until its expiry (the tag TTL for an admitted
//! image, so a signature withdrawn upstream is noticed; a shorter while for a refusal, so an
//! image signed after a refused pull is served soon). The map is bounded. (Its counters are
//! `crate::metrics::VerifyMetrics`.)

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many decisions are kept at once.
const MAX_VERDICTS: usize = 8192;

/// Whose decision it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    /// The upstream namespace: the same repository name on two registries is two images.
    pub upstream: String,
    pub digest: String,
    /// The trusted keys (see `KeySet::id`).
    pub keys: u64,
    /// The repository: signatures are looked up in the repository of the image (as cosign
    /// does), so the same digest may be signed in one repository and not in another.
    pub repository: String,
    /// Whether `.identity` asked for the signed repository to be this one.
    pub identity: bool,
}

/// A decision and until when it holds.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `None`: admitted; else the metric label of the refusal and why (without the image).
    pub refused: Option<(&'static str, String)>,
    /// For an admitted index: its platform manifests were admitted too.
    pub children_admitted: bool,
    pub until: Instant,
}

fn verdicts() -> &'static Mutex<HashMap<VerdictKey, Verdict>> {
    static VERDICTS: OnceLock<Mutex<HashMap<VerdictKey, Verdict>>> = OnceLock::new();
    VERDICTS.get_or_init(Default::default)
}

/// The decision kept for `key`, fresh or not.
pub fn get(key: &VerdictKey) -> Option<Verdict> {
    verdicts().lock().ok()?.get(key).cloned()
}

/// Keeps `verdict` for `key` for `ttl`. A full map drops what has expired, then (still full)
/// everything: decisions are cheap to make again.
pub fn put(
    key: VerdictKey,
    refused: Option<(&'static str, String)>,
    children_admitted: bool,
    ttl: Duration,
) {
    let Ok(mut map) = verdicts().lock() else {
        return;
    };
    if map.len() >= MAX_VERDICTS && !map.contains_key(&key) {
        let now = Instant::now();
        map.retain(|_, v| v.until > now);
        if map.len() >= MAX_VERDICTS {
            map.clear();
        }
    }
    map.insert(
        key,
        Verdict {
            refused,
            children_admitted,
            until: Instant::now() + ttl,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::VerifyMetrics;

    #[test]
    fn verdicts_are_kept_and_metrics_rendered() {
        let key = VerdictKey {
            upstream: "127.0.0.1:5000".into(),
            digest: "sha256:test-verdicts".into(),
            keys: 7,
            repository: "library/test".into(),
            identity: false,
        };
        put(
            key.clone(),
            Some(("no_signature", "why".into())),
            false,
            Duration::from_secs(60),
        );
        let v = get(&key).unwrap();
        assert_eq!(v.refused.unwrap().0, "no_signature");
        assert!(v.until > Instant::now());
        let m = VerifyMetrics::default();
        m.refused("untrusted_key");
        m.refused("not a reason");
        assert_eq!(m.refused_count("untrusted_key"), 1);
        let text = m.render();
        assert!(
            text.contains("acr_verify_refused_total{reason=\"untrusted_key\"} 1"),
            "{text}"
        );
        assert!(text.contains("acr_verify_admitted_total 0"), "{text}");
    }
}
