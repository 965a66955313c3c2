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
//!
//! Here: the lead and its followers (who waits for what, how a flight ends). The body's
//! writer is `fetch_body`; a committed blob is served by `hit`.

use std::io::{self, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use super::fetch_body::write_body;
pub use super::hit::{parse_range, Hit, ReadGuard, Unsatisfiable};
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
    pub(super) state: watch::Sender<FlightState>,
    /// Copied down from the S3 tier: no need to share it back.
    pub(super) from_remote: std::sync::atomic::AtomicBool,
    /// Bytes reserved in the store for this fetch (see `space`), and how many are written.
    pub(super) reserved: AtomicU64,
    pub(super) written: AtomicU64,
    /// Kept alive until the flight ends and its blob is shared (a fleet lease, see
    /// [`FlightHandle::keep_until_shared`]); `ended` once that moment has passed.
    kept: std::sync::Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    item: Option<Box<dyn std::any::Any + Send>>,
    ended: bool,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept").field("ended", &self.ended).finish()
    }
}

impl InFlight {
    /// The flight is over (failed, or committed and shared): what it kept goes.
    fn end_keeping(&self) {
        let item = self.kept.lock().ok().and_then(|mut k| {
            k.ended = true;
            k.item.take()
        });
        drop(item);
    }
}

/// What the fetcher of a flight may still say about it after it started.
#[derive(Clone)]
pub struct FlightHandle(Arc<InFlight>);

impl FlightHandle {
    /// Whether the committed blob goes to the shared tier: yes for bytes from the upstream, no
    /// for bytes that came from there or from another replica (which shares them itself).
    pub fn share_when_done(&self, yes: bool) {
        self.0
            .from_remote
            .store(!yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Keeps `item` alive until the flight has ended and its blob is shared (or the flight
    /// failed); dropped at once when that has already happened.
    pub fn keep_until_shared(&self, item: Box<dyn std::any::Any + Send>) {
        let late = match self.0.kept.lock() {
            Ok(mut k) if !k.ended => {
                k.item = Some(item);
                None
            }
            _ => Some(item),
        };
        drop(late);
    }
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
    /// A handle to say more about this flight once it has started.
    pub fn handle(&self) -> FlightHandle {
        FlightHandle(self.flight.clone())
    }

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
        let mut inflight = self
            .inflight
            .lock()
            .map_err(|_| io::Error::other("store lock poisoned"))?;
        if let Some(found) = self.found(&inflight, &hex)? {
            return Ok(found);
        }
        let temp = self.local.temp_path(&hex);
        let writer = std::fs::File::create(&temp)?;
        let reader = std::fs::File::open(&temp)?;
        let (tx, rx) = watch::channel(FlightState::Starting);
        let flight = Arc::new(InFlight {
            path: temp,
            state: tx,
            from_remote: std::sync::atomic::AtomicBool::new(false),
            reserved: AtomicU64::new(0),
            written: AtomicU64::new(0),
            kept: std::sync::Mutex::new(Kept::default()),
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

    /// `digest` on disk or in flight, without ever starting a fetch (for another replica).
    pub fn peek_blob(self: &Arc<Self>, digest: &Digest) -> io::Result<Option<BlobLookup>> {
        let inflight = self
            .inflight
            .lock()
            .map_err(|_| io::Error::other("store lock poisoned"))?;
        self.found(&inflight, digest.hex())
    }

    /// The blob `hex` in flight (to follow) or on disk (a hit), under the in-flight lock.
    fn found(
        self: &Arc<Self>,
        inflight: &std::collections::HashMap<String, Arc<InFlight>>,
        hex: &str,
    ) -> io::Result<Option<BlobLookup>> {
        if let Some(flight) = inflight.get(hex) {
            let file = std::fs::File::open(&flight.path)?;
            return Ok(Some(BlobLookup::Follow(Follow {
                file,
                state: flight.state.subscribe(),
                store: self.clone(),
            })));
        }
        let path = self.local.blob_path(hex);
        if let Ok(file) = std::fs::File::open(&path) {
            let size = file.metadata()?.len();
            self.touch(hex, &path, true);
            return Ok(Some(BlobLookup::Hit(Hit {
                size,
                file,
                guard: ReadGuard {
                    store: self.clone(),
                    hex: hex.to_string(),
                },
            })));
        }
        Ok(None)
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
                match std::fs::rename(&flight.path, self.local.blob_path(hex)) {
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
                flight.end_keeping();
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

    /// Starts the flight with `body`; `from_remote`: the bytes come from the shared tier or
    /// another replica, and are not shared again (see [`FlightHandle::share_when_done`]).
    pub fn start(
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
                    if let Some(parent) = store.local.blob_path(&hex).parent() {
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
                flight.end_keeping();
            }
        });
        follow
    }
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

    /// How many bytes of the blob are in the flight file so far (all of them once verified).
    pub fn written(&self) -> u64 {
        match &*self.state.borrow() {
            FlightState::Streaming { written, .. } => *written,
            FlightState::Verified { size } | FlightState::Done { size } => *size,
            FlightState::Starting | FlightState::Failed(_) => 0,
        }
    }

    /// The bytes `[start, end)` as they arrive; the last one only once the whole blob is
    /// verified (for a reply that claims to be the blob).
    pub fn stream(self, start: u64, end: Option<u64>) -> BodyStream {
        self.reader(start, end, true)
    }

    /// The bytes `[start, end)` of a part of the blob, each as soon as it is written, before the
    /// whole is verified (for a 206: see the README on partial replies).
    pub fn stream_part(self, start: u64, end: u64) -> BodyStream {
        self.reader(start, Some(end), false)
    }

    fn reader(self, start: u64, end: Option<u64>, hold_last: bool) -> BodyStream {
        let reader = Reader {
            file: tokio::fs::File::from_std(self.file),
            rx: self.state,
            pos: start,
            end,
            hold_last,
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
    /// Whether the last byte wanted waits for the digest (see [`Follow::stream_part`]).
    hold_last: bool,
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
            // Every byte wanted was sent (a part: its last byte goes as soon as it is written).
            if self.end.is_some_and(|end| self.pos >= end) {
                return Ok(None);
            }
            let state = self.rx.borrow_and_update().clone();
            let (available, done) = match state {
                FlightState::Starting => (0, false),
                // Until the digest is verified, the last byte of a whole blob stays back: a
                // transfer with wrong bytes must never end cleanly.
                FlightState::Streaming { written, .. } if !self.hold_last => (written, false),
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
