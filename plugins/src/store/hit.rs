//! Serving a committed blob: a hit, read straight from the page cache, and the byte ranges a
//! client may ask for. A hit counts as a reader of its object until it is dropped, so eviction
//! leaves the object alone while it is served.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Metrics, Store};
use crate::oci::BodyStream;

/// Marks an object as being read until dropped, so eviction leaves it alone.
pub struct ReadGuard {
    pub(crate) store: Arc<Store>,
    pub(crate) hex: String,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.store.release(&self.hex);
    }
}

/// A committed blob, opened.
pub struct Hit {
    pub size: u64,
    pub(crate) file: std::fs::File,
    pub(crate) guard: ReadGuard,
}

/// How much of a hit is mapped per step.
const HIT_CHUNK: u64 = 1024 * 1024;

impl Hit {
    /// The bytes `[start, end)` of a committed blob, straight from the page cache: each step
    /// maps the next megabyte of the file (pre-faulted) and hands the mapping to the socket
    /// as it is, so the only copy is the kernel's into the socket. The mapping is released
    /// when the socket has taken it, so memory stays bounded by what is in flight. Committed
    /// files are never written again (eviction unlinks, which keeps a mapping valid), so a
    /// mapping never sees them change. Where mapping fails, positioned reads serve instead.
    pub fn stream(self, start: u64, end: u64) -> BodyStream {
        let Hit { file, guard, .. } = self;
        let file = Arc::new(file);
        Box::pin(futures_util::stream::unfold(
            (file, start, end, guard),
            |(file, pos, end, guard)| async move {
                if pos >= end {
                    return None;
                }
                let want = (end - pos).min(HIT_CHUNK) as usize;
                let chunk = match map_chunk(&file, pos, want) {
                    Some(bytes) => Ok(bytes),
                    None => read_chunk(file.clone(), pos, want).await,
                };
                match chunk {
                    Ok(buf) if buf.is_empty() => Some((
                        Err(io::Error::other("the store file ended early")),
                        (file, end, end, guard),
                    )),
                    Ok(buf) => {
                        let n = buf.len() as u64;
                        Metrics::add(&guard.store.metrics.bytes_from_store, n);
                        Some((Ok::<Bytes, io::Error>(buf), (file, pos + n, end, guard)))
                    }
                    Err(e) => Some((Err(e), (file, end, end, guard))),
                }
            },
        ))
    }
}

/// `len` bytes of `file` at `pos` as a read-only, pre-faulted mapping.
fn map_chunk(file: &std::fs::File, pos: u64, len: usize) -> Option<Bytes> {
    // SAFETY: the file is a committed store object: it is never written or truncated again
    // (it is only ever unlinked, which leaves an existing mapping valid).
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(pos)
            .len(len)
            .populate()
            .map(file)
    }
    .ok()?;
    Some(Bytes::from_owner(map))
}

/// The fallback: a positioned read on the blocking pool.
async fn read_chunk(file: Arc<std::fs::File>, pos: u64, want: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    tokio::task::spawn_blocking(move || {
        let mut buf = BytesMut::zeroed(want);
        let n = file.read_at(&mut buf, pos)?;
        buf.truncate(n);
        Ok::<_, io::Error>(buf.freeze())
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// A range that cannot be served (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A `Range: bytes=...` header against a size: `Ok(None)` when absent or ignorable,
/// `Ok(Some((start, end_exclusive)))`, `Err(Unsatisfiable)` when it cannot be served.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: serve the whole blob
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 {
            return Err(Unsatisfiable);
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>()
                .map_err(|_| Unsatisfiable)?
                .saturating_add(1)
                .min(size)
        };
        if start >= size || start >= end {
            return Err(Unsatisfiable);
        }
        (start, end)
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Ok(Some((0, 5))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 10))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 10))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 10))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
    }
}
