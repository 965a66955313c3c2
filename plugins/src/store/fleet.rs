//! A blob fetched once for the whole fleet: the lead of a local flight (see `flight`) that
//! finds the blob in no tier asks the fleet before the upstream (a replica without a fleet
//! asks the upstream at once, and its body goes to the flight as it is).
//!
//! It takes the blob's lease (see `lease`). The winner fetches from the upstream as a single
//! replica would, and holds the lease until the blob is committed and shared. A replica that
//! finds the lease held reads the bytes from the holder (see `peer`) while the holder receives
//! them, verifies them itself (the flight does, as for any body) and keeps its own copy.
//!
//! When the source breaks off (the holder died, or stalled for longer than a lease), the
//! reader looks again, and resumes where it was, skipping what it already has: from the
//! shared tier if the blob got there, from another holder, or from the upstream once it has
//! taken over the void lease itself. Its clients see one unbroken body. Only a failing
//! upstream ends the flight in an error, as it would without a fleet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::lease::{Claim, LeaseGuard, LeaseKey};
use super::peer::{self, PeerError};
use super::tier::ObjectKey;
use super::{FlightHandle, Lead, Store};
use crate::oci::{BodyStream, Digest, RegistryError};

/// Where a blob's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This replica asked the upstream.
    Upstream,
    /// Another replica, which holds the lease and is receiving the blob.
    Peer,
    /// The shared tier, where another replica had already stored it.
    Shared,
}

/// Asks the upstream for the blob: its length when it says, and the body; an error ends the
/// flight with that error (a 404 stays a 404).
pub type UpstreamFetch = Box<
    dyn FnMut() -> BoxFuture<'static, Result<(Option<u64>, BodyStream), RegistryError>>
        + Send
        + Sync,
>;

/// How often a replica waiting for an unreachable holder looks again.
const RETRY: Duration = Duration::from_millis(250);

impl Store {
    /// Fetches `digest` for `lead` through the fleet, in a detached task: returns where the
    /// first bytes come from once that is known (`None`: the fetch failed before any, and the
    /// flight carries the error).
    pub fn fetch_through_fleet(
        self: &Arc<Self>,
        lead: Lead,
        digest: Digest,
        upstream: UpstreamFetch,
    ) -> oneshot::Receiver<Source> {
        let (tx, rx) = oneshot::channel();
        let fetch = FleetFetch {
            store: self.clone(),
            key: LeaseKey::Blob(digest.hex().to_string()),
            digest,
            upstream,
            lease: None,
            unreachable_since: None,
        };
        tokio::spawn(fetch.run(lead, tx));
        rx
    }
}

struct FleetFetch {
    store: Arc<Store>,
    digest: Digest,
    key: LeaseKey,
    upstream: UpstreamFetch,
    /// The lease, once this replica holds it.
    lease: Option<LeaseGuard>,
    /// Since when the lease's holder has not answered.
    unreachable_since: Option<Instant>,
}

type Found = (Source, Option<u64>, BodyStream);

impl FleetFetch {
    async fn run(mut self, lead: Lead, started: oneshot::Sender<Source>) {
        let (source, total, body) = match self.next_source().await {
            Ok(found) => found,
            Err(e) => return self.store.fail(lead, e),
        };
        let _ = started.send(source);
        let handle = lead.handle();
        if source == Source::Upstream {
            // Nothing to resume from (an upstream's failure is the flight's): the body goes to
            // the flight as it is, with no hop through a channel.
            drop(
                self.store
                    .start(lead, body, total, self.digest.clone(), false),
            );
            if let Some(lease) = self.lease.take() {
                handle.keep_until_shared(Box::new(lease));
            }
            return;
        }
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let stream: BodyStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|item| (item, rx))
        }));
        let store = self.store.clone();
        drop(store.start(
            lead,
            stream,
            total,
            self.digest.clone(),
            source != Source::Upstream,
        ));
        self.pump(source, total, body, &tx, &handle).await;
        // The lease lives until the blob is committed and shared, so that no replica fetches it
        // again in between; then it goes.
        if let Some(lease) = self.lease.take() {
            handle.keep_until_shared(Box::new(lease));
        }
    }

    /// Forwards bytes from the source, and from the next one when it breaks off.
    async fn pump(
        &mut self,
        mut source: Source,
        total: Option<u64>,
        mut body: BodyStream,
        tx: &mpsc::Sender<std::io::Result<Bytes>>,
        handle: &FlightHandle,
    ) {
        let idle = self.store.config.idle_timeout;
        let mut sent = 0u64;
        loop {
            let broke = loop {
                match tokio::time::timeout(idle.min(self.lease_ttl()), body.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        sent += chunk.len() as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            return; // the flight ended (its writer failed): nothing to feed
                        }
                    }
                    Ok(Some(Err(e))) => break e.to_string(),
                    Ok(None) if total.is_none_or(|t| sent >= t) => return,
                    Ok(None) => break format!("ended after {sent} of {total:?} bytes"),
                    Err(_) => break "stalled".to_string(),
                }
            };
            if source == Source::Upstream {
                // As without a fleet: the upstream's failure is the flight's.
                let _ = tx.send(Err(std::io::Error::other(broke))).await;
                return;
            }
            tracing::info!(digest = %self.digest, sent, "the {source:?} source broke off ({broke}); resuming from another");
            let next = match self.next_source().await {
                Ok(found) => found,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
            };
            if next.1.is_some() && total.is_some() && next.1 != total {
                let why = format!("a source says {:?} bytes, the first said {total:?}", next.1);
                let _ = tx.send(Err(std::io::Error::other(why))).await;
                return;
            }
            source = next.0;
            handle.share_when_done(source == Source::Upstream);
            body = skip(next.2, sent);
        }
    }

    fn lease_ttl(&self) -> Duration {
        self.store
            .fleet()
            .map(|f| f.lease_ttl)
            .unwrap_or(super::lease::DEFAULT_LEASE_TTL)
    }

    /// The next place to read the blob from: the shared tier, the lease's holder, or the
    /// upstream once this replica holds the lease (or there is no fleet to ask).
    async fn next_source(&mut self) -> Result<Found, RegistryError> {
        let deadline = Instant::now() + self.store.config.idle_timeout;
        loop {
            if self.lease.is_some() || self.store.fleet().is_none() {
                return self.ask_upstream().await;
            }
            if let Some(found) = self.read_shared().await {
                return Ok(found);
            }
            let held = match self.store.claim(self.key.clone()).await {
                Claim::Alone => return self.ask_upstream().await,
                Claim::Won(lease) => {
                    self.lease = Some(lease);
                    // It may have landed in the shared tier since we looked.
                    if let Some(found) = self.read_shared().await {
                        return Ok(found);
                    }
                    continue;
                }
                Claim::Held(held) => held,
            };
            let stale = held.record.holder == self.store.holder_id()
                || held.record.expired(self.lease_ttl());
            let answer = if stale {
                Err(PeerError::NotThere)
            } else {
                let key = self
                    .store
                    .fleet()
                    .map(|f| f.peer_key.clone())
                    .unwrap_or_default();
                peer::get(&held.record.url, self.digest.hex(), &key).await
            };
            match answer {
                Ok((length, body)) => {
                    self.unreachable_since = None;
                    return Ok((Source::Peer, length, body));
                }
                Err(PeerError::NotThere) => {
                    self.lease = self.store.take_over(self.key.clone(), &held).await;
                }
                Err(PeerError::Unreachable(why)) => {
                    let since = *self.unreachable_since.get_or_insert_with(Instant::now);
                    tracing::debug!(digest = %self.digest, "the lease holder does not answer: {why}");
                    if since.elapsed() >= self.lease_ttl() {
                        // Renewed but unreachable (a wrong `.advertise`?): fetch it ourselves.
                        self.lease = self.store.take_over(self.key.clone(), &held).await;
                        self.unreachable_since = None;
                    }
                }
            }
            if self.lease.is_none() {
                if Instant::now() >= deadline {
                    return Err(RegistryError::new(
                        504,
                        "UNAVAILABLE",
                        "no replica of the mirror could fetch this blob in time; try again",
                    ));
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    async fn ask_upstream(&mut self) -> Result<Found, RegistryError> {
        let (length, body) = (self.upstream)().await?;
        Ok((Source::Upstream, length, body))
    }

    /// The blob from the shared tier, streamed (the flight verifies it like any body).
    async fn read_shared(&self) -> Option<Found> {
        let shared = self.store.shared()?;
        match shared.open(ObjectKey::Blob(self.digest.hex())).await {
            Ok(Some((size, body))) => Some((Source::Shared, Some(size), body)),
            _ => None,
        }
    }
}

/// `body` without its first `n` bytes.
fn skip(body: BodyStream, n: u64) -> BodyStream {
    Box::pin(
        body.scan(n, |left, chunk| {
            let out = match chunk {
                Ok(bytes) if *left >= bytes.len() as u64 => {
                    *left -= bytes.len() as u64;
                    Some(None)
                }
                Ok(bytes) => {
                    let from = *left as usize;
                    *left = 0;
                    Some(Some(Ok(bytes.slice(from..))))
                }
                Err(e) => Some(Some(Err(e))),
            };
            futures_util::future::ready(out)
        })
        .filter_map(futures_util::future::ready),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn skip_drops_exactly_the_bytes_already_sent() {
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defg")),
            Ok(Bytes::from_static(b"hi")),
        ];
        for n in 0..=9u64 {
            let body: BodyStream = Box::pin(futures_util::stream::iter(
                chunks
                    .iter()
                    .map(|c| Ok(c.as_ref().unwrap().clone()))
                    .collect::<Vec<_>>(),
            ));
            let got: Vec<u8> = skip(body, n).map(|c| c.unwrap().to_vec()).concat().await;
            assert_eq!(got, b"abcdefghi"[n as usize..].to_vec(), "skip {n}");
        }
    }
}
