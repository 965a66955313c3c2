//! The single-flight fetcher's tests: one fetch, many readers; wrong bytes; stalls; eviction
//! and room; temporary files of a store opened twice.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::flight::{BlobLookup, Follow, Lead};
use super::{Metrics, Store, StoreConfig};
use crate::oci::{BodyStream, Digest, RegistryError};

/// A store in a temporary directory, removed when the returned `TempDir` is dropped.
fn store(max: Option<u64>) -> (Arc<Store>, tempfile::TempDir) {
    let root = tempfile::Builder::new()
        .prefix("acr-store-")
        .tempdir()
        .unwrap();
    let config = StoreConfig {
        root: root.path().to_path_buf(),
        max_size: max,
        ttl: Duration::from_secs(300),
        ttl_by_ns: vec![],
        remote: None,
        idle_timeout: Duration::from_millis(300),
        max_blob_size: None,
        fleet: None,
    };
    (
        Store::open(config, Arc::new(Metrics::default())).unwrap(),
        root,
    )
}

/// Looks `digest` up in a test that expects to lead its fetch.
fn must_lead(store: &Arc<Store>, digest: &Digest) -> Lead {
    match store.lookup_blob(digest).unwrap() {
        BlobLookup::Lead(lead) => lead,
        _ => panic!("expected to lead the fetch of {digest}"),
    }
}

/// Looks `digest` up in a test that expects to follow a fetch in flight.
fn must_follow(store: &Arc<Store>, digest: &Digest) -> Follow {
    match store.lookup_blob(digest).unwrap() {
        BlobLookup::Follow(follow) => follow,
        _ => panic!("expected to follow the fetch of {digest}"),
    }
}

/// How many temporary files the store under `root` holds.
fn temp_files(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("tmp")).unwrap().count()
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
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    (tx, Box::pin(stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fetch_many_readers_then_a_hit() {
    let (store, root) = store(None);
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&data);
    let lead = must_lead(&store, &digest);
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
    assert_eq!(temp_files(root.path()), 0, "no temp file left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_fail_every_reader_and_store_nothing() {
    let (store, _root) = store(None);
    let digest = Digest::of(b"the right bytes");
    let lead = must_lead(&store, &digest);
    let follower = must_follow(&store, &digest);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_fails_the_fetch_instead_of_wedging_it() {
    let (store, _root) = store(None);
    let data = vec![7u8; 1000];
    let digest = Digest::of(&data);
    let lead = must_lead(&store, &digest);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_dropped_before_the_upstream_answers_frees_the_digest() {
    let (store, root) = store(None);
    let digest = Digest::of(b"never fetched");
    let lead = must_lead(&store, &digest);
    let mut follower = must_follow(&store, &digest);
    drop(lead);
    assert!(follower.started().await.is_err(), "the follower is told");
    assert!(matches!(
        store.lookup_blob(&digest).unwrap(),
        BlobLookup::Lead(_)
    ));
    assert_eq!(temp_files(root.path()), 0, "no temp file left");
}

/// Commits `data` through a whole fetch and waits until it is in the store.
async fn put(store: &Arc<Store>, data: Vec<u8>) -> Digest {
    let digest = Digest::of(&data);
    let lead = must_lead(store, &digest);
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
    let (store, _root) = store(Some(250));
    let oldest = put(&store, vec![1; 100]).await;
    let BlobLookup::Hit(reading) = store.lookup_blob(&oldest).unwrap() else {
        panic!("expected a hit")
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = put(&store, vec![2; 100]).await;
    let third = put(&store, vec![3; 100]).await;
    // Over the bound: the least recently used blob nobody reads goes, not the one read.
    assert!(
        store.local.blob_path(oldest.hex()).exists(),
        "a blob being read was evicted"
    );
    assert!(!store.local.blob_path(second.hex()).exists());
    assert!(store.local.blob_path(third.hex()).exists());
    assert_eq!(collect(reading.stream(0, 100)).await.unwrap(), vec![1; 100]);
    // Read to the end and dropped: now it can go.
    put(&store, vec![4; 100]).await;
    assert!(!store.local.blob_path(oldest.hex()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_bound_and_spares_readers() {
    let (store, _root) = store(Some(250));
    let mut digests = Vec::new();
    for i in 0..4u8 {
        let data = vec![i; 100];
        let digest = Digest::of(&data);
        let lead = must_lead(&store, &digest);
        let body: BodyStream = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from(data))]));
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_cannot_fit_is_refused_before_anything_is_evicted() {
    let (store, _root) = store(Some(250));
    let kept = put(&store, vec![1; 100]).await;
    let also = put(&store, vec![2; 100]).await;
    assert!(!store.make_room(300), "a blob larger than max-size fits");
    let data = vec![9u8; 300];
    let digest = Digest::of(&data);
    let lead = must_lead(&store, &digest);
    let body: BodyStream = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from(data))]));
    let mut f = store.start_stream(lead, body, Some(300), digest.clone());
    let refused = f.started().await.expect_err("refused");
    assert_eq!(refused.status, 507);
    assert!(
        store.local.blob_path(kept.hex()).exists() && store.local.blob_path(also.hex()).exists()
    );
    assert_eq!(store.metrics.evictions.load(Ordering::Relaxed), 0);
    assert_eq!(store.metrics.store_refused.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_a_length_is_cut_off_at_the_room_left() {
    let (store, root) = store(Some(250));
    let kept = put(&store, vec![1; 100]).await;
    let data = vec![7u8; 400];
    let digest = Digest::of(&data);
    let lead = must_lead(&store, &digest);
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
    assert!(!store.local.blob_path(digest.hex()).exists());
    assert!(
        store.local.blob_path(kept.hex()).exists(),
        "evicted for a body that was cut off"
    );
    assert_eq!(temp_files(root.path()), 0, "no temp file left");
    assert_eq!(
        store.space.lock().unwrap().bytes,
        0,
        "the reservation was released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_store_in_use_leaves_its_fetches_alone() {
    let (store, root) = store(None);
    let digest = Digest::of(b"in flight");
    let lead = must_lead(&store, &digest);
    assert_eq!(temp_files(root.path()), 1, "the fetch in flight");
    // A leftover of a process that is gone (no lock held), and one of an older acr.
    std::fs::write(root.path().join("tmp").join("abc.999-dead.0"), b"x").unwrap();
    std::fs::write(root.path().join("tmp").join("abc.12345.0"), b"x").unwrap();
    let second = Store::open(store.config.clone(), Arc::new(Metrics::default())).unwrap();
    let left: Vec<_> = std::fs::read_dir(root.path().join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    drop(second);
    store.fail(lead, RegistryError::bad_gateway("done"));
}
