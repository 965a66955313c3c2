//! One upstream fetch per digest, read by every client while it is written.
//!
//! The first request for a missing blob becomes the *lead*: it asks the upstream, and once the
//! upstream answers, a detached task writes the body to a temporary file, hashing it, and
//! publishes how many bytes are on disk. Every client (the lead's own included) is a
//! *follower*: it reads the temporary file up to that mark and waits for more. When the bytes
//! match the digest the file is renamed into the store; when they do not, the followers' streams
//! end in an error (the client sees a broken transfer, never a complete 200) and nothing is kept.
//!
//! A flight always ends: a lead whose request is dropped before the upstream answered fails
//! it, and an upstream silent for `idle_timeout` fails it, so the next request fetches anew
//! instead of following a fetch that will never finish.

use std::io::{self, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{Kind, Metrics, Store};
use crate::oci::{BodyStream, Digest, RegistryError};

const CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub enum FlightState {
    /// The lead is waiting for the upstream's answer.
    Starting,
    /// `written` bytes are in the temporary file; `total` from the upstream's Content-Length.
    Streaming {
        written: u64,
        total: Option<u64>,
    },
    /// Every byte is in the file and matches the digest; being made durable (fsync) and
    /// committed. Followers may send their last byte.
    Verified {
        size: u64,
    },
    /// Verified and committed.
    Done {
        size: u64,
    },
    Failed(RegistryError),
}

#[derive(Debug)]
pub struct InFlight {
    path: std::path::PathBuf,
    state: watch::Sender<FlightState>,
    /// Copied down from the S3 tier: no need to share it back.
    from_remote: std::sync::atomic::AtomicBool,
    /// Bytes reserved in the store for this fetch (see `space`), and how many are written.
    reserved: AtomicU64,
    written: AtomicU64,
}

/// Marks an object as being read until dropped, so eviction leaves it alone.
pub struct ReadGuard {
    store: Arc<Store>,
    hex: String,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.store.release(&self.hex);
    }
}

/// A committed blob, opened.
pub struct Hit {
    pub size: u64,
    file: std::fs::File,
    guard: ReadGuard,
}

/// A reader of a fetch in flight.
pub struct Follow {
    file: std::fs::File,
    state: watch::Receiver<FlightState>,
    store: Arc<Store>,
}

/// The request that fetches: it must call `Store::start_stream` or `Store::fail`. Dropped
/// before either (its client went away while the upstream had not answered yet), it fails
/// the flight, so the digest is not left in flight forever and the next request fetches.
pub struct Lead {
    hex: String,
    flight: Arc<InFlight>,
    writer: std::fs::File,
    follow: Follow,
    abandon: AbandonGuard,
}

impl Lead {
    /// Another reader of this fetch, for the lead's own client when the fetch itself runs in a
    /// detached task (so the client leaving cannot stop it).
    pub fn follower(&self) -> io::Result<Follow> {
        Ok(Follow {
            file: std::fs::File::open(&self.flight.path)?,
            state: self.flight.state.subscribe(),
            store: self.follow.store.clone(),
        })
    }
}

/// Fails a flight whose lead was dropped before the fetch started (see [`Lead`]).
struct AbandonGuard {
    store: Arc<Store>,
    hex: String,
    flight: Arc<InFlight>,
    armed: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(digest = %format!("sha256:{}", self.hex), "the request leading a fetch went away before the upstream answered");
            self.store.finish(
                &self.hex,
                &self.flight,
                FlightState::Failed(RegistryError::bad_gateway(
                    "the request that was fetching this blob went away before the upstream answered; try again",
                )),
            );
        }
    }
}

pub enum BlobLookup {
    Hit(Hit),
    Follow(Follow),
    Lead(Lead),
}

impl Store {
    /// Finds `digest`: in the store, in flight, or not at all (then the caller leads).
    pub fn lookup_blob(self: &Arc<Self>, digest: &Digest) -> io::Result<BlobLookup> {
        let hex = digest.hex().to_string();
        let path = self.blob_path(&hex);
        let mut inflight = self
            .inflight
            .lock()
            .map_err(|_| io::Error::other("store lock poisoned"))?;
        if let Some(flight) = inflight.get(&hex) {
            let file = std::fs::File::open(&flight.path)?;
            return Ok(BlobLookup::Follow(Follow {
                file,
                state: flight.state.subscribe(),
                store: self.clone(),
            }));
        }
        if let Ok(file) = std::fs::File::open(&path) {
            let size = file.metadata()?.len();
            self.touch(&hex, &path, true);
            return Ok(BlobLookup::Hit(Hit {
                size,
                file,
                guard: ReadGuard {
                    store: self.clone(),
                    hex,
                },
            }));
        }
        let temp = self.temp_path(&hex);
        let writer = std::fs::File::create(&temp)?;
        let reader = std::fs::File::open(&temp)?;
        let (tx, rx) = watch::channel(FlightState::Starting);
        let flight = Arc::new(InFlight {
            path: temp,
            state: tx,
            from_remote: std::sync::atomic::AtomicBool::new(false),
            reserved: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        inflight.insert(hex.clone(), flight.clone());
        Ok(BlobLookup::Lead(Lead {
            hex: hex.clone(),
            flight: flight.clone(),
            writer,
            follow: Follow {
                file: reader,
                state: rx,
                store: self.clone(),
            },
            abandon: AbandonGuard {
                store: self.clone(),
                hex,
                flight,
                armed: true,
            },
        }))
    }

    /// The upstream refused or failed before sending a body: every follower gets `error`.
    pub fn fail(&self, lead: Lead, error: RegistryError) {
        let Lead {
            hex,
            flight,
            mut abandon,
            ..
        } = lead;
        abandon.armed = false;
        self.finish(&hex, &flight, FlightState::Failed(error));
    }

    /// Ends a flight: a verified file takes its final name and joins the index in the same
    /// step (under the in-flight lock, so a request that finds it already counts as its
    /// reader and eviction spares it); anything else is removed.
    fn finish(&self, hex: &str, flight: &InFlight, state: FlightState) {
        if let Ok(mut inflight) = self.inflight.lock() {
            if let FlightState::Done { size } = state {
                match std::fs::rename(&flight.path, self.blob_path(hex)) {
                    Ok(()) => self.record(hex, size, Kind::Blob),
                    Err(e) => {
                        tracing::warn!(digest = %format!("sha256:{hex}"), "could not commit a verified blob: {e}");
                        let _ = std::fs::remove_file(&flight.path);
                    }
                }
            } else {
                let _ = std::fs::remove_file(&flight.path);
                if matches!(&state, FlightState::Failed(e) if e.status == 507) {
                    Metrics::inc(&self.metrics.store_refused);
                }
            }
            inflight.remove(hex);
            // Committed bytes are counted by the index now; failed ones are gone.
            self.unreserve(
                flight.reserved.swap(0, Ordering::SeqCst),
                flight.written.swap(0, Ordering::SeqCst),
            );
        }
        flight.state.send_replace(state);
    }

    /// The upstream answered: write `body` in a detached task; the lead follows like the rest.
    pub fn start_stream(
        self: &Arc<Self>,
        lead: Lead,
        body: BodyStream,
        total: Option<u64>,
        digest: Digest,
    ) -> Follow {
        self.start(lead, body, total, digest, false)
    }

    /// Like `start_stream`, for a body copied down from the S3 tier (verified the same way).
    pub fn start_from_remote(
        self: &Arc<Self>,
        lead: Lead,
        body: BodyStream,
        total: u64,
        digest: Digest,
    ) -> Follow {
        self.start(lead, body, Some(total), digest, true)
    }

    fn start(
        self: &Arc<Self>,
        lead: Lead,
        body: BodyStream,
        total: Option<u64>,
        digest: Digest,
        from_remote: bool,
    ) -> Follow {
        let Lead {
            hex,
            flight,
            writer,
            follow,
            mut abandon,
        } = lead;
        // From here the flight always ends here or in the detached task below.
        abandon.armed = false;
        drop(abandon);
        // The room for a body of known size is reserved before its first byte; one that
        // cannot fit is refused before anything is evicted for it.
        if let Some(t) = total {
            if let Err(e) = self.reserve(t, t) {
                tracing::warn!(digest = %digest, size = t, "no room in the store: {}", e.message);
                self.finish(&hex, &flight, FlightState::Failed(e));
                return follow;
            }
            flight.reserved.store(t, Ordering::SeqCst);
        }
        flight
            .from_remote
            .store(from_remote, std::sync::atomic::Ordering::Relaxed);
        flight
            .state
            .send_replace(FlightState::Streaming { written: 0, total });
        let store = self.clone();
        tokio::spawn(async move {
            let outcome = write_body(&store, &flight, writer, body, total, &digest).await;
            let state = match outcome {
                Ok(size) => {
                    if let Some(parent) = store.blob_path(&hex).parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    FlightState::Done { size }
                }
                Err(e) => {
                    tracing::warn!(digest = %digest, "fetch failed: {e}");
                    FlightState::Failed(e)
                }
            };
            let size = match &state {
                FlightState::Done { size } => Some(*size),
                _ => None,
            };
            let from_remote = flight
                .from_remote
                .load(std::sync::atomic::Ordering::Relaxed);
            store.finish(&hex, &flight, state);
            if size.is_some() {
                store.evict();
                store.update_gauges();
                if !from_remote {
                    store.share_blob(&hex).await;
                }
            }
        });
        follow
    }
}

async fn write_body(
    store: &Store,
    flight: &InFlight,
    writer: std::fs::File,
    mut body: BodyStream,
    total: Option<u64>,
    digest: &Digest,
) -> Result<u64, RegistryError> {
    // A copy from the S3 tier is not traffic from the upstream.
    let from_remote = flight
        .from_remote
        .load(std::sync::atomic::Ordering::Relaxed);
    let io_err =
        |e: io::Error| RegistryError::new(500, "UNKNOWN", format!("the store cannot write: {e}"));
    let mut file = tokio::fs::File::from_std(writer);
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    let source = if from_remote {
        "the S3 tier"
    } else {
        "upstream"
    };
    let idle = store.config.idle_timeout;
    loop {
        let next = tokio::time::timeout(idle, body.next()).await.map_err(|_| {
            RegistryError::new(
                504,
                "UNAVAILABLE",
                format!(
                    "{source} sent nothing for {} s after {written} bytes of {digest}",
                    idle.as_secs_f32()
                ),
            )
        })?;
        let Some(chunk) = next else { break };
        let mut chunk = chunk
            .map_err(|e| RegistryError::bad_gateway(format!("{source} transfer failed: {e}")))?;
        // What else has already arrived goes in the same write: one hand-off to the blocking
        // pool per batch instead of per network read (reads are 8-16 KiB), no added wait.
        let mut ended = false;
        if chunk.len() < WRITE_BATCH {
            let mut batch: Option<BytesMut> = None;
            while batch.as_ref().map_or(chunk.len(), BytesMut::len) < WRITE_BATCH {
                match futures_util::FutureExt::now_or_never(body.next()) {
                    Some(Some(Ok(more))) => batch
                        .get_or_insert_with(|| BytesMut::from(&chunk[..]))
                        .extend_from_slice(&more),
                    Some(Some(Err(e))) => {
                        return Err(RegistryError::bad_gateway(format!(
                            "{source} transfer failed: {e}"
                        )))
                    }
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            if let Some(b) = batch {
                chunk = b.freeze();
            }
        }
        let len = chunk.len() as u64;
        match total {
            Some(t) if written + len > t => {
                return Err(RegistryError::bad_gateway(format!(
                    "{source} sent more than the {t} bytes it announced for {digest}; nothing was stored"
                )))
            }
            Some(_) => {}
            // No length announced: the body must keep within the room it can reserve.
            None => grow_reservation(store, flight, written + len)?,
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io_err)?;
        // The bytes must be in the file before followers are told they are.
        file.flush().await.map_err(io_err)?;
        written += len;
        flight.written.fetch_add(len, Ordering::SeqCst);
        store.reserved_written(len);
        if !from_remote {
            Metrics::add(&store.metrics.bytes_from_upstream, chunk.len() as u64);
        }
        flight
            .state
            .send_replace(FlightState::Streaming { written, total });
        if ended {
            break;
        }
    }
    if let Some(t) = total {
        if t != written {
            return Err(RegistryError::bad_gateway(format!(
                "{source} sent {written} of {t} bytes of {digest}"
            )));
        }
    }
    let got = hex::encode(hasher.finalize());
    if got != digest.hex() {
        Metrics::inc(&store.metrics.digest_mismatches);
        return Err(RegistryError::bad_gateway(format!(
            "{source} sent bytes that do not match {digest} (got sha256:{got}); nothing was stored"
        )));
    }
    // Verified: the clients following this fetch may finish now; making the file durable
    // (fsync, tens of milliseconds) and committing it need not hold their last byte.
    flight
        .state
        .send_replace(FlightState::Verified { size: written });
    file.sync_all().await.map_err(io_err)?;
    Ok(written)
}

/// Makes a body without a length's reservation cover `needed` bytes: [`space::GROW_STEP`]
/// more at a time (or just what is missing, near the bound). Refused: the body is cut off.
fn grow_reservation(store: &Store, flight: &InFlight, needed: u64) -> Result<(), RegistryError> {
    // Checked on every piece: a reservation made ahead must not let the body past the cap.
    store.check_blob_size(needed)?;
    let have = flight.reserved.load(Ordering::SeqCst);
    if needed <= have {
        return Ok(());
    }
    let missing = needed - have;
    let step = missing.max(super::space::GROW_STEP);
    let granted = match store.reserve_deferred(step, needed) {
        Ok(()) => step,
        Err(_) if step > missing => store.reserve_deferred(missing, needed).map(|()| missing)?,
        Err(e) => return Err(e),
    };
    flight.reserved.fetch_add(granted, Ordering::SeqCst);
    Ok(())
}

impl Follow {
    /// Waits until the upstream has answered: the blob's size if it said, or its error.
    pub async fn started(&mut self) -> Result<Option<u64>, RegistryError> {
        loop {
            let state = self.state.borrow_and_update().clone();
            match state {
                FlightState::Starting => {}
                FlightState::Streaming { total, .. } => return Ok(total),
                FlightState::Verified { size } | FlightState::Done { size } => {
                    return Ok(Some(size))
                }
                FlightState::Failed(e) => return Err(e),
            }
            if self.state.changed().await.is_err() {
                return Err(RegistryError::bad_gateway("the fetch was abandoned"));
            }
        }
    }

    /// The bytes `[start, end)` as they arrive.
    pub fn stream(self, start: u64, end: Option<u64>) -> BodyStream {
        let reader = Reader {
            file: tokio::fs::File::from_std(self.file),
            rx: self.state,
            pos: start,
            end,
            seeked: false,
            stopped: false,
            _store: self.store,
        };
        Box::pin(futures_util::stream::unfold(reader, |mut r| async move {
            if r.stopped {
                return None;
            }
            match r.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), r)),
                Ok(None) => None,
                Err(e) => {
                    r.stopped = true;
                    Some((Err(e), r))
                }
            }
        }))
    }
}

/// A follower's position in a file being written.
struct Reader {
    file: tokio::fs::File,
    rx: watch::Receiver<FlightState>,
    pos: u64,
    end: Option<u64>,
    seeked: bool,
    stopped: bool,
    _store: Arc<Store>,
}

impl Reader {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.seeked {
            self.file.seek(SeekFrom::Start(self.pos)).await?;
            self.seeked = true;
        }
        loop {
            let state = self.rx.borrow_and_update().clone();
            let (available, done) = match state {
                FlightState::Starting => (0, false),
                // Until the digest is verified, the last byte this reader wants stays back: a
                // transfer with wrong bytes must never end cleanly.
                FlightState::Streaming { written, total } => {
                    let last = self.end.or(total).unwrap_or(u64::MAX);
                    (written.min(last.saturating_sub(1)), false)
                }
                FlightState::Verified { size } | FlightState::Done { size } => (size, true),
                FlightState::Failed(e) => return Err(io::Error::other(e.message)),
            };
            let limit = self.end.unwrap_or(u64::MAX).min(available);
            if self.pos < limit {
                let want = ((limit - self.pos) as usize).min(CHUNK);
                let mut buf = BytesMut::zeroed(want);
                let n = self.file.read(&mut buf).await?;
                if n == 0 {
                    return Err(io::Error::other("the store file ended early"));
                }
                buf.truncate(n);
                self.pos += n as u64;
                return Ok(Some(buf.freeze()));
            }
            if done {
                return Ok(None);
            }
            if self.rx.changed().await.is_err() {
                return Err(io::Error::other("the fetch was abandoned"));
            }
        }
    }
}

/// The most a fetch collects from what has already arrived before one write to the file.
const WRITE_BATCH: usize = 1024 * 1024;

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

#[cfg(test)]
mod flight_tests {
    use super::*;
    use crate::store::StoreConfig;
    use std::time::Duration;

    fn store(max: Option<u64>) -> (Arc<Store>, std::path::PathBuf) {
        let n = std::sync::atomic::AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "acr-store-{}-{}-{}",
            std::process::id(),
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rand_suffix()
        ));
        let config = StoreConfig {
            root: root.clone(),
            max_size: max,
            ttl: Duration::from_secs(300),
            ttl_by_ns: vec![],
            remote: None,
            idle_timeout: Duration::from_millis(300),
            max_blob_size: None,
        };
        (
            Store::open(config, Arc::new(Metrics::default())).unwrap(),
            root,
        )
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    /// Waits until no fetch of `digest` is in flight (it committed or failed).
    async fn settle(store: &Store, digest: &Digest) {
        for _ in 0..500 {
            let busy = store.inflight.lock().unwrap().contains_key(digest.hex());
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the fetch of {digest} never finished");
    }

    async fn collect(s: BodyStream) -> Result<Vec<u8>, io::Error> {
        let mut s = s;
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    /// A body that arrives in pieces, slowly, through a channel the test feeds.
    fn channel_body() -> (
        tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
        BodyStream,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
            );
        (tx, Box::pin(stream))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_fetch_many_readers_then_a_hit() {
        let (store, root) = store(None);
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&data);
        let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
            panic!("expected to lead")
        };
        let mut followers = Vec::new();
        for _ in 0..8 {
            match store.lookup_blob(&digest).unwrap() {
                BlobLookup::Follow(f) => followers.push(f),
                _ => panic!("expected to follow the fetch in flight"),
            }
        }
        let (tx, body) = channel_body();
        let lead_follow = store.start_stream(lead, body, Some(data.len() as u64), digest.clone());
        let readers: Vec<_> = std::iter::once(lead_follow)
            .chain(followers)
            .map(|mut f| {
                tokio::spawn(async move {
                    f.started().await.unwrap();
                    collect(f.stream(0, None)).await
                })
            })
            .collect();
        for piece in data.chunks(100_000) {
            tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(tx);
        for r in readers {
            assert_eq!(r.await.unwrap().unwrap(), data);
        }
        // Committed: the next lookup is a hit, with a range.
        settle(&store, &digest).await;
        let BlobLookup::Hit(hit) = store.lookup_blob(&digest).unwrap() else {
            panic!("expected a hit")
        };
        assert_eq!(hit.size, data.len() as u64);
        assert_eq!(
            collect(hit.stream(10, 20)).await.unwrap(),
            data[10..20].to_vec()
        );
        assert!(
            std::fs::read_dir(root.join("tmp"))
                .unwrap()
                .next()
                .is_none(),
            "no temp file left"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_bytes_fail_every_reader_and_store_nothing() {
        let (store, root) = store(None);
        let digest = Digest::of(b"the right bytes");
        let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
            panic!()
        };
        let BlobLookup::Follow(follower) = store.lookup_blob(&digest).unwrap() else {
            panic!()
        };
        let (tx, body) = channel_body();
        let lead_follow = store.start_stream(lead, body, Some(15), digest.clone());
        tx.send(Ok(Bytes::from_static(b"the wrong bytes")))
            .await
            .unwrap();
        drop(tx);
        // Each reader fails: before its first byte, or part way, but never cleanly.
        for mut f in [lead_follow, follower] {
            let clean = match f.started().await {
                Err(_) => false,
                Ok(_) => collect(f.stream(0, None)).await.is_ok(),
            };
            assert!(!clean, "a reader got the wrong bytes without an error");
        }
        settle(&store, &digest).await;
        assert!(
            matches!(store.lookup_blob(&digest).unwrap(), BlobLookup::Lead(_)),
            "nothing was committed"
        );
        assert_eq!(
            store
                .metrics
                .digest_mismatches
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_upstream_fails_the_fetch_instead_of_wedging_it() {
        let (store, root) = store(None);
        let data = vec![7u8; 1000];
        let digest = Digest::of(&data);
        let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
            panic!()
        };
        let (tx, body) = channel_body();
        let f = store.start_stream(lead, body, Some(1000), digest.clone());
        tx.send(Ok(Bytes::from(data[..500].to_vec())))
            .await
            .unwrap();
        // ... and then nothing, with the connection still open (`tx` is kept).
        let started = std::time::Instant::now();
        let got = collect(f.stream(0, None)).await;
        assert!(got.is_err(), "a stalled fetch ended cleanly");
        assert!(started.elapsed() < Duration::from_secs(5));
        settle(&store, &digest).await;
        assert!(
            matches!(store.lookup_blob(&digest).unwrap(), BlobLookup::Lead(_)),
            "the next request fetches anew"
        );
        drop(tx);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lead_dropped_before_the_upstream_answers_frees_the_digest() {
        let (store, root) = store(None);
        let digest = Digest::of(b"never fetched");
        let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
            panic!()
        };
        let BlobLookup::Follow(mut follower) = store.lookup_blob(&digest).unwrap() else {
            panic!()
        };
        drop(lead);
        assert!(follower.started().await.is_err(), "the follower is told");
        assert!(matches!(
            store.lookup_blob(&digest).unwrap(),
            BlobLookup::Lead(_)
        ));
        assert!(std::fs::read_dir(root.join("tmp"))
            .unwrap()
            .next()
            .is_none());
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Commits `data` through a whole fetch and waits until it is in the store.
    async fn put(store: &Arc<Store>, data: Vec<u8>) -> Digest {
        let digest = Digest::of(&data);
        let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
            panic!("expected to lead")
        };
        let len = data.len() as u64;
        let body: BodyStream = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from(data))]));
        let f = store.start_stream(lead, body, Some(len), digest.clone());
        collect(f.stream(0, None)).await.unwrap();
        settle(store, &digest).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        digest
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blob_being_read_is_never_evicted() {
        let (store, root) = store(Some(250));
        let oldest = put(&store, vec![1; 100]).await;
        let BlobLookup::Hit(reading) = store.lookup_blob(&oldest).unwrap() else {
            panic!("expected a hit")
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = put(&store, vec![2; 100]).await;
        let third = put(&store, vec![3; 100]).await;
        // Over the bound: the least recently used blob nobody reads goes, not the one read.
        assert!(
            store.blob_path(oldest.hex()).exists(),
            "a blob being read was evicted"
        );
        assert!(!store.blob_path(second.hex()).exists());
        assert!(store.blob_path(third.hex()).exists());
        assert_eq!(collect(reading.stream(0, 100)).await.unwrap(), vec![1; 100]);
        // Read to the end and dropped: now it can go.
        put(&store, vec![4; 100]).await;
        assert!(!store.blob_path(oldest.hex()).exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eviction_keeps_the_bound_and_spares_readers() {
        let (store, root) = store(Some(250));
        let mut digests = Vec::new();
        for i in 0..4u8 {
            let data = vec![i; 100];
            let digest = Digest::of(&data);
            let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
                panic!()
            };
            let body: BodyStream =
                Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from(data))]));
            let f = store.start_stream(lead, body, Some(100), digest.clone());
            collect(f.stream(0, None)).await.unwrap();
            settle(&store, &digest).await;
            // Distinct last-use times, so the order of eviction is the order of use.
            tokio::time::sleep(Duration::from_millis(20)).await;
            digests.push(digest);
        }
        let total = store
            .metrics
            .store_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(total <= 250, "store holds {total} bytes");
        assert!(
            store
                .metrics
                .evictions
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 2
        );
        // The newest is still there.
        assert!(matches!(
            store.lookup_blob(&digests[3]).unwrap(),
            BlobLookup::Hit(_)
        ));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blob_that_cannot_fit_is_refused_before_anything_is_evicted() {
        let (store, root) = store(Some(250));
        let kept = put(&store, vec![1; 100]).await;
        let also = put(&store, vec![2; 100]).await;
        assert!(!store.make_room(300), "a blob larger than max-size fits");
        let data = vec![9u8; 300];
        let digest = Digest::of(&data);
        let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
            panic!()
        };
        let body: BodyStream = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from(data))]));
        let mut f = store.start_stream(lead, body, Some(300), digest.clone());
        let refused = f.started().await.expect_err("refused");
        assert_eq!(refused.status, 507);
        assert!(store.blob_path(kept.hex()).exists() && store.blob_path(also.hex()).exists());
        assert_eq!(store.metrics.evictions.load(Ordering::Relaxed), 0);
        assert_eq!(store.metrics.store_refused.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_without_a_length_is_cut_off_at_the_room_left() {
        let (store, root) = store(Some(250));
        let kept = put(&store, vec![1; 100]).await;
        let data = vec![7u8; 400];
        let digest = Digest::of(&data);
        let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
            panic!()
        };
        let pieces: Vec<Result<Bytes, io::Error>> = data
            .chunks(50)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let f = store.start_stream(
            lead,
            Box::pin(futures_util::stream::iter(pieces)),
            None,
            digest.clone(),
        );
        let got = collect(f.stream(0, None)).await;
        assert!(got.is_err(), "an over-size body ended cleanly");
        settle(&store, &digest).await;
        assert!(!store.blob_path(digest.hex()).exists());
        assert!(
            store.blob_path(kept.hex()).exists(),
            "evicted for a body that was cut off"
        );
        assert!(std::fs::read_dir(root.join("tmp"))
            .unwrap()
            .next()
            .is_none());
        assert_eq!(
            store.space.lock().unwrap().bytes,
            0,
            "the reservation was released"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_a_store_in_use_leaves_its_fetches_alone() {
        let (store, root) = store(None);
        let digest = Digest::of(b"in flight");
        let BlobLookup::Lead(lead) = store.lookup_blob(&digest).unwrap() else {
            panic!()
        };
        let in_flight = std::fs::read_dir(root.join("tmp")).unwrap().count();
        assert_eq!(in_flight, 1);
        // A leftover of a process that is gone (no lock held), and one of an older acr.
        std::fs::write(root.join("tmp").join("abc.999-dead.0"), b"x").unwrap();
        std::fs::write(root.join("tmp").join("abc.12345.0"), b"x").unwrap();
        let second = Store::open(store.config.clone(), Arc::new(Metrics::default())).unwrap();
        let left: Vec<_> = std::fs::read_dir(root.join("tmp"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        drop(second);
        store.fail(lead, RegistryError::bad_gateway("done"));
        std::fs::remove_dir_all(root).unwrap();
    }
}
