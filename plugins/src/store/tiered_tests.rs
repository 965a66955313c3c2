//! The "local, then shared" logic over an in-memory shared tier: what one replica writes
//! another reads (and keeps locally), and a bad object in the shared tier is never served,
//! but deleted there and counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::memory::InMemory;

use super::links::{self, LinkScope};
use super::object::ObjectTier;
use super::tier::{ObjectKey, Tier, WriteMode};
use super::{Metrics, Store, StoreConfig, TagEntry};
use crate::oci::Digest;

/// A replica: its own local disk, the shared bucket `bucket`.
fn replica(bucket: &Arc<InMemory>) -> (Arc<Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        root: dir.path().to_path_buf(),
        remote: None,
        max_size: None,
        ttl: Duration::from_secs(300),
        ttl_by_ns: vec![],
        idle_timeout: Duration::from_secs(5),
        max_blob_size: None,
        fleet: None,
    };
    let shared = ObjectTier::over(bucket.clone(), "memory", "acr");
    let store = Store::open_with(config, Arc::new(Metrics::default()), Some(Box::new(shared)));
    (store.unwrap(), dir)
}

/// The bucket as anyone with write access to it sees it.
fn bucket_tier(bucket: &Arc<InMemory>) -> ObjectTier {
    ObjectTier::over(bucket.clone(), "memory", "acr")
}

#[tokio::test]
async fn what_one_replica_stores_another_reads_and_keeps() {
    let bucket = Arc::new(InMemory::new());
    let ((a, _da), (b, _db)) = (replica(&bucket), replica(&bucket));
    let manifest = br#"{"schemaVersion":2}"#;
    let digest = Digest::of(manifest);
    a.put_manifest(
        &digest,
        manifest,
        "application/vnd.oci.image.manifest.v1+json",
    )
    .await
    .unwrap();
    assert!(!b.has_manifest(&digest));
    let (bytes, media_type) = b.manifest(&digest).await.expect("from the shared tier");
    assert_eq!(&bytes[..], manifest);
    assert_eq!(media_type, "application/vnd.oci.image.manifest.v1+json");
    assert!(b.has_manifest(&digest), "promoted to the local disk");

    let entry = TagEntry::confirmed_now(digest.to_string(), media_type);
    a.put_tag("ns", "library/alpine", "3.20", &entry)
        .await
        .unwrap();
    assert_eq!(b.tag("ns", "library/alpine", "3.20").await, Some(entry));

    let config = b"{\"config\":{}}";
    let config_digest = Digest::of(config);
    a.put_blob(&config_digest, config).await.unwrap();
    assert_eq!(b.blob_size(&config_digest), None);
    assert_eq!(
        b.blob_size_anywhere(&config_digest).await,
        Some(config.len() as u64)
    );
    assert_eq!(
        b.small_blob(&config_digest, 1024).await.as_deref(),
        Some(&config[..])
    );
    assert_eq!(b.blob_size(&config_digest), Some(config.len() as u64));
    assert_eq!(b.metrics.remote_corrupt.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_bad_shared_object_is_deleted_and_counted_never_served() {
    let bucket = Arc::new(InMemory::new());
    let (store, _dir) = replica(&bucket);
    let tier = bucket_tier(&bucket);
    let manifest = Digest::of(b"the manifest");
    let blob = Digest::of(b"the blob bytes");
    for (key, bad) in [
        (
            ObjectKey::Manifest(manifest.hex()),
            &b"not the manifest"[..],
        ),
        (ObjectKey::Blob(blob.hex()), &b"same length, bad"[..]),
    ] {
        tier.write(key, Bytes::from_static(bad), WriteMode::Create)
            .await
            .unwrap();
    }
    assert!(store.manifest(&manifest).await.is_none());
    assert!(store.remote_blob(&blob).await.is_none());
    assert_eq!(store.metrics.remote_corrupt.load(Ordering::Relaxed), 2);
    for key in [
        ObjectKey::Manifest(manifest.hex()),
        ObjectKey::Blob(blob.hex()),
    ] {
        assert_eq!(tier.size(key).await.unwrap(), None, "{key:?} deleted");
    }
    assert!(!store.has_manifest(&manifest) && store.blob_size(&blob).is_none());
}

#[tokio::test]
async fn a_good_shared_blob_is_copied_down_whole() {
    let bucket = Arc::new(InMemory::new());
    let (store, _dir) = replica(&bucket);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let digest = Digest::of(&data);
    bucket_tier(&bucket)
        .write(
            ObjectKey::Blob(digest.hex()),
            Bytes::from(data.clone()),
            WriteMode::Create,
        )
        .await
        .unwrap();
    let (size, mut body) = store.remote_blob(&digest).await.expect("found");
    assert_eq!(size, data.len() as u64);
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == data, "the copy differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_shared() {
    let bucket = Arc::new(InMemory::new());
    let ((a, _da), (b, _db)) = (replica(&bucket), replica(&bucket));
    let scope = LinkScope {
        ns: "registry.example".into(),
        repo: "team/app".into(),
        token: None,
    };
    let digest = Digest::of(b"layer");
    links::record(&a, &scope, &digest).unwrap();
    // Shared in the background.
    let mut shared = false;
    for _ in 0..200 {
        if links::linked(&b, &scope, &digest).await {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(shared, "the link never reached the other replica");
    assert!(links::is_linked(&b, &scope, &digest), "kept locally");
    let other = LinkScope {
        repo: "team/other".into(),
        ..scope
    };
    assert!(!links::linked(&b, &other, &digest).await);
}
