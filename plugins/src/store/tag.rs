//! A tag as the store keeps it: what it pointed at when the upstream last confirmed it, and
//! when (a tag is served from the store within its TTL, then revalidated).

use std::time::Duration;

use crate::clock::now_ms;

/// A tag as last seen upstream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagEntry {
    pub digest: String,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Seconds since the epoch when the upstream last confirmed it.
    #[serde(rename = "checkedAt")]
    pub checked_at: u64,
    /// The same in milliseconds, so a TTL is kept to the millisecond, not to the second
    /// (absent in records without it: then `checked_at` counts).
    #[serde(rename = "checkedAtMs", default)]
    pub checked_at_ms: u64,
}

impl TagEntry {
    /// `digest` (of media type `media_type`), confirmed by the upstream just now.
    pub fn confirmed_now(digest: String, media_type: String) -> Self {
        let ms = now_ms();
        Self {
            digest,
            media_type,
            checked_at: ms / 1000,
            checked_at_ms: ms,
        }
    }

    /// The same tag, confirmed again just now.
    pub fn reconfirmed(self) -> Self {
        Self::confirmed_now(self.digest, self.media_type)
    }

    /// When the upstream last confirmed it, in milliseconds since the epoch. A time further in
    /// the future than [`MAX_CLOCK_SKEW`] (a record from a replica with a broken clock, or a
    /// forged one in the shared store) counts as never: the tag is stale and revalidated,
    /// instead of trusted forever.
    pub fn checked_ms(&self) -> u64 {
        let ms = if self.checked_at_ms > 0 {
            self.checked_at_ms
        } else {
            self.checked_at.saturating_mul(1000)
        };
        let latest = now_ms().saturating_add(MAX_CLOCK_SKEW.as_millis() as u64);
        if ms > latest {
            0
        } else {
            ms
        }
    }

    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.checked_ms()))
    }
}

/// How far in the future a tag record's check time may be (clocks of replicas differ a
/// little) before the record is treated as never checked.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
