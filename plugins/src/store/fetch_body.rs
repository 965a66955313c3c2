//! The body of a fetch in flight, written to its temporary file: hashed as it arrives, each
//! piece flushed before the followers are told it is there, bounded by the room the store can
//! reserve and by the upstream's silence, and verified against the digest before the last
//! byte may leave (see `flight`).

use std::io;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::flight::{FlightState, InFlight};
use super::{Metrics, Store};
use crate::oci::{BodyStream, Digest, RegistryError};

/// The most a fetch collects from what has already arrived before one write to the file.
const WRITE_BATCH: usize = 1024 * 1024;

/// Writes `body` to `writer`; its size when every byte arrived and matches `digest`.
pub(super) async fn write_body(
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
    let source = if from_remote {
        "the S3 tier"
    } else {
        "upstream"
    };
    let idle = store.config.idle_timeout;
    // The hashing and the write of one batch run on the blocking pool while the next batch
    // arrives: the pieces are handed over as they came (no copy into a batch buffer, none into
    // an async file's buffer), and the network is read while the last batch is hashed.
    let mut hashing: Option<HashAndWrite> = Some((writer, Sha256::new()));
    let mut writing: Option<(tokio::task::JoinHandle<io::Result<HashAndWrite>>, u64)> = None;
    let mut written: u64 = 0;
    let mut received: u64 = 0;
    loop {
        let next = tokio::time::timeout(idle, body.next()).await.map_err(|_| {
            RegistryError::new(
                504,
                "UNAVAILABLE",
                format!(
                    "{source} sent nothing for {} s after {received} bytes of {digest}",
                    idle.as_secs_f32()
                ),
            )
        })?;
        let Some(chunk) = next else { break };
        let chunk = chunk
            .map_err(|e| RegistryError::bad_gateway(format!("{source} transfer failed: {e}")))?;
        // What else has already arrived goes in the same batch: one hand-off to the blocking
        // pool per batch instead of per network read (reads are 8-16 KiB), no added wait.
        let mut batch = vec![chunk];
        let mut len = batch[0].len() as u64;
        let mut ended = false;
        while len < WRITE_BATCH as u64 {
            match futures_util::FutureExt::now_or_never(body.next()) {
                Some(Some(Ok(more))) => {
                    len += more.len() as u64;
                    batch.push(more);
                }
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
        match total {
            Some(t) if received + len > t => {
                return Err(RegistryError::bad_gateway(format!(
                    "{source} sent more than the {t} bytes it announced for {digest}; nothing was stored"
                )))
            }
            Some(_) => {}
            // No length announced: the body must keep within the room it can reserve.
            None => grow_reservation(store, flight, received + len)?,
        }
        received += len;
        if let Some((job, done)) = writing.take() {
            hashing = Some(job_done(job).await.map_err(io_err)?);
            written += done;
            wrote(store, flight, from_remote, done, written, total);
        }
        let Some((mut file, mut hasher)) = hashing.take() else {
            return Err(io_err(io::Error::other("the store's writer was lost")));
        };
        let job = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            for piece in &batch {
                hasher.update(piece);
                file.write_all(piece)?;
            }
            Ok((file, hasher))
        });
        writing = Some((job, len));
        if ended {
            break;
        }
    }
    if let Some((job, done)) = writing.take() {
        hashing = Some(job_done(job).await.map_err(io_err)?);
        written += done;
        wrote(store, flight, from_remote, done, written, total);
    }
    let Some((file, hasher)) = hashing else {
        return Err(io_err(io::Error::other("the store's writer was lost")));
    };
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
    let file = tokio::fs::File::from_std(file);
    // Verified: the clients following this fetch may finish now; making the file durable
    // (fsync, tens of milliseconds) and committing it need not hold their last byte.
    flight
        .state
        .send_replace(FlightState::Verified { size: written });
    file.sync_all().await.map_err(io_err)?;
    Ok(written)
}

/// The temporary file and the hash of what is in it, handed to the blocking pool and back.
type HashAndWrite = (std::fs::File, Sha256);

async fn job_done(
    job: tokio::task::JoinHandle<io::Result<HashAndWrite>>,
) -> io::Result<HashAndWrite> {
    job.await.map_err(io::Error::other)?
}

/// `done` more bytes are in the file (`written` in all): counted, and the followers told.
fn wrote(
    store: &Store,
    flight: &InFlight,
    from_remote: bool,
    done: u64,
    written: u64,
    total: Option<u64>,
) {
    flight.written.fetch_add(done, Ordering::SeqCst);
    store.reserved_written(done);
    if !from_remote {
        Metrics::add(&store.metrics.bytes_from_upstream, done);
    }
    flight
        .state
        .send_replace(FlightState::Streaming { written, total });
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
