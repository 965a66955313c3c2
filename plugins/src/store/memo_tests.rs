//! The store's memory of manifests and tag records (see `memo`): a tag in memory is never
//! trusted past its TTL, a tag written replaces the one in memory, and a manifest evicted
//! from the disk is not served from memory.

use std::sync::Arc;
use std::time::Duration;

use super::{Metrics, Store, StoreConfig, TagEntry};
use crate::oci::Digest;

fn store(ttl: Duration, max_size: Option<u64>) -> (Arc<Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        root: dir.path().to_path_buf(),
        remote: None,
        max_size,
        ttl,
        ttl_by_ns: vec![],
        idle_timeout: Duration::from_secs(5),
        max_blob_size: None,
        fleet: None,
    };
    (
        Store::open(config, Arc::new(Metrics::default())).unwrap(),
        dir,
    )
}

fn entry(digest: &str) -> TagEntry {
    TagEntry::confirmed_now(digest.to_string(), "application/x".to_string())
}

/// Another writer (a process, an operator) replaces the tag's record on the disk.
fn rewrite_on_disk(store: &Store, record: Option<&TagEntry>) {
    let path = store.local.tag_path("up", "lib/a", "1");
    match record {
        Some(r) => std::fs::write(&path, serde_json::to_vec(r).unwrap()).unwrap(),
        None => std::fs::remove_file(&path).unwrap(),
    }
}

#[tokio::test]
async fn a_tag_in_memory_is_not_trusted_past_its_ttl() {
    let ttl = Duration::from_millis(300);
    let (store, _dir) = store(ttl, None);
    store
        .put_tag("up", "lib/a", "1", &entry("sha256:aa"))
        .await
        .unwrap();
    rewrite_on_disk(&store, Some(&entry("sha256:bb")));
    // Within the TTL the record in memory answers (it is what this process last wrote)...
    let within = store.tag("up", "lib/a", "1").await.expect("a record");
    assert_eq!(within.digest, "sha256:aa");
    assert!(within.age() < ttl);
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    // ...past it, the disk is read again: the caller sees the record's own (old) time and
    // revalidates with the upstream.
    let past = store.tag("up", "lib/a", "1").await.expect("a record");
    assert_eq!(past.digest, "sha256:bb");
    assert!(past.age() >= ttl, "a record past its TTL must look stale");
    // A record gone from the disk is gone from memory too, once past the TTL.
    rewrite_on_disk(&store, None);
    assert_eq!(store.tag("up", "lib/a", "1").await, None);
}

#[tokio::test]
async fn a_tag_written_replaces_the_one_in_memory() {
    let (store, _dir) = store(Duration::from_secs(300), None);
    store
        .put_tag("up", "lib/a", "1", &entry("sha256:aa"))
        .await
        .unwrap();
    assert_eq!(
        store.tag("up", "lib/a", "1").await.unwrap().digest,
        "sha256:aa"
    );
    store
        .put_tag("up", "lib/a", "1", &entry("sha256:bb"))
        .await
        .unwrap();
    assert_eq!(
        store.tag("up", "lib/a", "1").await.unwrap().digest,
        "sha256:bb"
    );
    // Other tags and repositories are other records.
    assert_eq!(store.tag("up", "lib/a", "2").await, None);
    assert_eq!(store.tag("up", "lib/b", "1").await, None);
}

#[tokio::test]
async fn an_evicted_manifest_is_not_served_from_memory() {
    let manifests: Vec<Vec<u8>> = (0..3)
        .map(|i| format!(r#"{{"schemaVersion":2,"n":{i}}}"#).into_bytes())
        .collect();
    let size = manifests[0].len() as u64;
    let (store, _dir) = store(Duration::from_secs(300), Some(2 * size));
    let digests: Vec<Digest> = manifests.iter().map(|m| Digest::of(m)).collect();
    store
        .put_manifest(&digests[0], &manifests[0], "t")
        .await
        .unwrap();
    let (bytes, media_type) = store.manifest(&digests[0]).await.expect("stored");
    assert_eq!((&bytes[..], media_type.as_str()), (&manifests[0][..], "t"));
    // Read again, from memory: the same.
    assert_eq!(
        &store.manifest(&digests[0]).await.unwrap().0[..],
        &manifests[0][..]
    );
    for i in 1..3 {
        // Distinct last-use times, so the first manifest is the least recently used.
        tokio::time::sleep(Duration::from_millis(20)).await;
        store
            .put_manifest(&digests[i], &manifests[i], "t")
            .await
            .unwrap();
    }
    assert!(
        !store.has_manifest(&digests[0]),
        "the bound evicts the oldest"
    );
    assert_eq!(store.manifest(&digests[0]).await, None);
    assert_eq!(
        &store.manifest(&digests[2]).await.unwrap().0[..],
        &manifests[2][..]
    );
}
