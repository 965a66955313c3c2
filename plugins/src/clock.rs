//! Wall-clock time as the records on disk and the tokens keep it: milliseconds (or seconds)
//! since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
