//! Ranges of a cold blob that lie ahead of its fetch: what lazy-pulling snapshotters (stargz,
//! SOCI, nydus, overlaybd) ask for.
//!
//! A range near the bytes the single-flight fetch has written (or will write within
//! [`NEAR_WINDOW`]) is read from the flight file as the bytes arrive. A range further ahead is
//! asked of the upstream as a ranged GET of its own and streamed to the client, while the
//! whole-blob fetch goes on in the background, so the upstream sends the blob once plus the
//! ranges asked. The first client of a blob nobody has fetched yet gets any part it asks for
//! that way, and the whole-blob fetch starts once that part has gone out (or after
//! [`PART_FIRST`]), so the part the client waits for does not share the upstream's bandwidth
//! with the whole. The upstream's answer is taken only when it is exactly the part asked for
//! (206, the right `Content-Range` and length); anything else and the caller follows the
//! flight instead. A part is never verified (a digest covers the whole blob only): see the
//! README's content store section for what a 206 of a blob not yet verified guarantees.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::context::Context;
use crate::metrics::Metrics;
use crate::oci::{Body, Digest};
use crate::registry::client::send;
use crate::registry::Reply;
use crate::store::fleet::UpstreamFetch;
use crate::store::flight::parse_range;
use crate::store::{Lead, Store};

/// The longest the whole-blob fetch waits for the first client's part to go out.
pub const PART_FIRST: Duration = Duration::from_millis(500);

/// The part of a cold blob the client asks for: one byte range that is not plainly the whole
/// blob (`bytes=0-`).
pub fn cold_part(range: Option<&str>) -> Option<&str> {
    let range = range?;
    let spec = range.trim().strip_prefix("bytes=")?.trim();
    (spec != "0-" && start_without_size(range).is_some()).then_some(range)
}

/// Held while the first client's part goes out: the whole-blob fetch for `lead` starts when it
/// is dropped (the part was sent, the client left, or the upstream had no part to give), or
/// after [`PART_FIRST`] at the latest.
pub struct PartInFlight(#[allow(dead_code)] oneshot::Sender<()>);

/// Starts the whole-blob fetch of `digest` once the returned [`PartInFlight`] is dropped.
pub fn whole_after_part(
    store: &Arc<Store>,
    lead: Lead,
    digest: &Digest,
    upstream: UpstreamFetch,
) -> PartInFlight {
    let (sent, wait) = oneshot::channel::<()>();
    let (store, digest) = (store.clone(), digest.clone());
    tokio::spawn(async move {
        let _ = tokio::time::timeout(PART_FIRST, wait).await;
        drop(store.fetch_through_fleet(lead, digest, upstream));
    });
    PartInFlight(sent)
}

/// `reply` holding `part` until its body has gone out (or was dropped).
pub fn keeping(reply: Reply, part: PartInFlight) -> Reply {
    let body = match reply.body {
        Body::Stream(stream) => Body::Stream(Box::pin(stream.map(move |chunk| {
            let _held = &part;
            chunk
        }))),
        other => other,
    };
    Reply { body, ..reply }
}

/// How far past the bytes written so far a range may start and still wait for the flight.
pub const NEAR_WINDOW: u64 = 4 << 20;

/// The client's `range`, when it asks for a part that starts more than [`NEAR_WINDOW`] past
/// `written`. `size`: the blob's, when the upstream has said it; without it, a suffix range
/// (`bytes=-N`, the end of the blob) is ahead too.
pub fn far_range(range: Option<&str>, size: Option<u64>, written: u64) -> Option<&str> {
    let range = range?;
    let start = match size {
        Some(size) => match parse_range(Some(range), size) {
            Ok(Some((start, end))) if (start, end) != (0, size) => start,
            _ => return None,
        },
        None => start_without_size(range)?,
    };
    (start > written.saturating_add(NEAR_WINDOW)).then_some(range)
}

/// Where a single range starts, before the blob's size is known; a suffix range starts at
/// the end, taken as far away. `None`: several ranges, or not a byte range.
fn start_without_size(range: &str) -> Option<u64> {
    let spec = range.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, _) = spec.split_once('-')?;
    let a = a.trim();
    if a.is_empty() {
        return Some(u64::MAX);
    }
    a.parse().ok()
}

/// `bytes A-B/TOTAL` as `(A, B + 1, TOTAL)`.
fn content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (span, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, total): (u64, u64, u64) = (a.parse().ok()?, b.parse().ok()?, total.parse().ok()?);
    (a <= b && b < total).then_some((a, b + 1, total))
}

/// The part `range` of the blob at `path`, straight from the upstream, as a 206 for the
/// client. `None` when the upstream did not answer with exactly that part (a 200, an error,
/// a `Content-Range` that is not the range asked, a wrong length, a total that is not
/// `size`): the caller then serves the range from the flight.
pub async fn from_upstream(
    cx: &mut Context,
    path: &str,
    range: &str,
    digest: &Digest,
    size: Option<u64>,
    store: &Store,
) -> Option<Reply> {
    let idle = store.config.idle_timeout;
    let headers = [("Range", range.to_string())];
    let sent = tokio::time::timeout(idle, send(cx, reqwest::Method::GET, path, &headers)).await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::debug!(digest = %digest, "the upstream refused a range ({}): following the fetch", e.message);
            return None;
        }
        Err(_) => return None,
    };
    let status = resp.status().as_u16();
    let answered = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(content_range);
    let Some((start, end, total)) = answered.filter(|_| status == 206) else {
        tracing::debug!(digest = %digest, status, "the upstream did not answer a range with its part: following the fetch");
        return None;
    };
    let asked = parse_range(Some(range), total).ok().flatten();
    // The whole blob is never a part: it waits for its digest.
    let exact = asked == Some((start, end))
        && (start, end) != (0, total)
        && size.is_none_or(|s| s == total)
        && resp.content_length() == Some(end - start);
    if !exact {
        tracing::warn!(digest = %digest, range, start, end, total, "the upstream answered a range with another part: following the fetch");
        return None;
    }
    let metrics = store.metrics.clone();
    let mut headers = super::blob_headers(digest);
    headers.push((
        "Content-Range".to_string(),
        format!("bytes {start}-{}/{total}", end - 1),
    ));
    headers.push(("Content-Length".to_string(), (end - start).to_string()));
    Some(Reply {
        status: 206,
        headers,
        body: Body::Stream(Box::pin(
            crate::registry::fetch::body_stream(cx, resp).inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    Metrics::add(&metrics.bytes_from_upstream, bytes.len() as u64);
                }
            }),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_far_only_past_the_window() {
        let size = Some(64 << 20);
        assert_eq!(far_range(None, size, 0), None);
        assert_eq!(far_range(Some("bytes=0-1023"), size, 0), None);
        assert_eq!(far_range(Some("bytes=4194304-"), size, 0), None);
        let ahead = "bytes=4194305-4194400";
        assert_eq!(far_range(Some(ahead), size, 0), Some(ahead));
        assert_eq!(far_range(Some(ahead), size, 1), None);
        assert_eq!(far_range(Some("bytes=-10"), size, 0), Some("bytes=-10"));
        // The whole blob asked as a range is a whole blob: it waits for the digest.
        assert_eq!(far_range(Some("bytes=0-"), size, 0), None);
        // Not satisfiable: answered (416) by the flight once the size is known.
        assert_eq!(far_range(Some("bytes=99999999999-"), size, 0), None);
    }

    #[test]
    fn without_a_size_a_suffix_is_far_and_several_ranges_are_not() {
        assert_eq!(far_range(Some("bytes=-10"), None, 0), Some("bytes=-10"));
        assert_eq!(far_range(Some("bytes=0-10,20-30"), None, 0), None);
        assert_eq!(
            far_range(Some("bytes=99999999-"), None, 0),
            Some("bytes=99999999-")
        );
        assert_eq!(far_range(Some("items=9-"), None, 0), None);
    }

    #[test]
    fn a_cold_part_is_one_range_short_of_plainly_the_whole_blob() {
        assert_eq!(cold_part(Some("bytes=0-1023")), Some("bytes=0-1023"));
        assert_eq!(cold_part(Some("bytes=100-")), Some("bytes=100-"));
        assert_eq!(cold_part(Some("bytes=-10")), Some("bytes=-10"));
        assert_eq!(cold_part(Some("bytes=0-")), None);
        assert_eq!(cold_part(Some("bytes=0-10,20-30")), None);
        assert_eq!(cold_part(Some("items=0-10")), None);
        assert_eq!(cold_part(None), None);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 0-9/10"), Some((0, 10, 10)));
        assert_eq!(content_range("bytes 5-9/10"), Some((5, 10, 10)));
        assert_eq!(content_range("bytes 5-10/10"), None);
        assert_eq!(content_range("bytes */10"), None);
        assert_eq!(content_range("5-9/10"), None);
    }
}
