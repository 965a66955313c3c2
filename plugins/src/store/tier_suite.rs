//! The tests every tier runs, as distribution's storage drivers all run one suite: each test
//! is a function generic over [`Tier`], and `tier_suite!` runs them all for one tier. A new
//! tier is its file plus one `tier_suite!` line at the end of this one.
//!
//! The object-store tier runs here over `object_store::memory::InMemory` and over Azurite (the
//! Azure Storage emulator, `tests/harness/azurite.rs`, installed by `scripts/deps.sh`); against
//! a real S3 server it runs in `plugins/tests/s3_remote.rs` and, end to end, in
//! `tests/store/store_s3.rs`.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::links::LinkScope;
use super::local::DiskTier;
use super::object::ObjectTier;
use super::tier::{ObjectKey, PutOutcome, Tier, WriteMode};

const HEX: &str = "00aa11bb22cc33dd44ee55ff66007788990011223344556677889900aabbccdd";

fn scope() -> LinkScope {
    LinkScope {
        ns: "registry.example:5000".into(),
        repo: "team/app".into(),
        token: None,
    }
}

async fn read_all<T: Tier>(tier: &T, key: ObjectKey<'_>) -> Option<(u64, Vec<u8>)> {
    let (size, mut body) = tier.open(key).await.expect("open")?;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("a piece of the body"));
    }
    Some((size, out))
}

pub async fn missing_objects_are_absent<T: Tier>(tier: &T) {
    let key = ObjectKey::Blob(HEX);
    assert_eq!(tier.size(key).await.unwrap(), None);
    assert_eq!(tier.read(key, 1024).await.unwrap(), None);
    assert!(read_all(tier, key).await.is_none());
    tier.delete(key)
        .await
        .expect("deleting what is not there succeeds");
}

pub async fn what_is_written_is_read_back<T: Tier>(tier: &T) {
    let key = ObjectKey::Manifest(HEX);
    let bytes = Bytes::from_static(b"{\"schemaVersion\":2}");
    let put = tier.write(key, bytes.clone(), WriteMode::Create).await;
    assert_eq!(put.unwrap(), PutOutcome::Created);
    assert_eq!(tier.size(key).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(tier.read(key, 1024).await.unwrap(), Some(bytes.clone()));
    let streamed = read_all(tier, key).await.expect("found");
    assert_eq!(streamed, (bytes.len() as u64, bytes.to_vec()));
}

pub async fn create_never_overwrites<T: Tier>(tier: &T) {
    let key = ObjectKey::Blob(HEX);
    let first = tier.write(key, Bytes::from_static(b"first"), WriteMode::Create);
    assert_eq!(first.await.unwrap(), PutOutcome::Created);
    let second = tier.write(key, Bytes::from_static(b"second"), WriteMode::Create);
    assert_eq!(second.await.unwrap(), PutOutcome::AlreadyThere);
    assert_eq!(
        tier.read(key, 1024).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
}

pub async fn overwrite_replaces<T: Tier>(tier: &T) {
    let key = ObjectKey::Tag {
        ns: "registry.example:5000",
        repo: "library/alpine",
        tag: "3.20",
    };
    for text in [&b"old"[..], &b"new"[..]] {
        let put = tier.write(key, Bytes::copy_from_slice(text), WriteMode::Overwrite);
        assert_eq!(put.await.unwrap(), PutOutcome::Created);
    }
    assert_eq!(
        tier.read(key, 1024).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
}

pub async fn a_read_stops_at_its_limit<T: Tier>(tier: &T) {
    let key = ObjectKey::Blob(HEX);
    tier.write(key, Bytes::from(vec![7u8; 100]), WriteMode::Create)
        .await
        .unwrap();
    let err = tier.read(key, 99).await.expect_err("larger than the limit");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        tier.read(key, 100).await.unwrap().map(|b| b.len()),
        Some(100)
    );
}

pub async fn files_are_written_once<T: Tier>(tier: &T) {
    let dir = tempfile::tempdir().unwrap();
    // Past the smallest multipart part, so an object store uploads it in parts.
    let data: Vec<u8> = (0..6 * 1024 * 1024 + 17u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let file = dir.path().join("blob");
    std::fs::write(&file, &data).unwrap();
    let key = ObjectKey::Blob(HEX);
    assert_eq!(
        tier.write_file(key, &file).await.unwrap(),
        PutOutcome::Created
    );
    std::fs::write(&file, b"other bytes").unwrap();
    assert_eq!(
        tier.write_file(key, &file).await.unwrap(),
        PutOutcome::AlreadyThere
    );
    let (size, got) = read_all(tier, key).await.expect("found");
    assert_eq!(size, data.len() as u64);
    assert!(got == data, "the bytes read back differ");
}

pub async fn delete_removes<T: Tier>(tier: &T) {
    let key = ObjectKey::MediaType(HEX);
    tier.write(key, Bytes::from_static(b"x"), WriteMode::Create)
        .await
        .unwrap();
    tier.delete(key).await.unwrap();
    assert_eq!(tier.size(key).await.unwrap(), None);
    tier.delete(key).await.unwrap();
}

pub async fn kinds_of_one_hex_are_apart<T: Tier>(tier: &T) {
    let scope = scope();
    let keys = [
        ObjectKey::Blob(HEX),
        ObjectKey::Manifest(HEX),
        ObjectKey::MediaType(HEX),
        ObjectKey::Link {
            scope: &scope,
            hex: HEX,
        },
    ];
    for (n, key) in keys.iter().enumerate() {
        let put = tier.write(*key, Bytes::from(vec![n as u8; n + 1]), WriteMode::Create);
        assert_eq!(put.await.unwrap(), PutOutcome::Created, "{key:?}");
    }
    for (n, key) in keys.iter().enumerate() {
        let got = tier.read(*key, 64).await.unwrap();
        assert_eq!(got.as_deref(), Some(&vec![n as u8; n + 1][..]), "{key:?}");
    }
}

/// The conditional writes leases are made of (see `lease`): exactly one create wins, and a
/// replace succeeds only on the version it names. A tier without them (the disk) says so.
pub async fn conditional_writes_have_one_winner<T: Tier>(tier: &T) {
    let key = ObjectKey::BlobLease(HEX);
    let first = match tier.create_versioned(key, Bytes::from_static(b"a")).await {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => return,
        other => other.expect("create").expect("the first create wins"),
    };
    let second = tier.create_versioned(key, Bytes::from_static(b"b")).await;
    assert_eq!(second.unwrap(), None, "the second create loses");
    let (bytes, seen) = tier.read_versioned(key, 64).await.unwrap().expect("found");
    assert_eq!((bytes.as_ref(), &seen), (&b"a"[..], &first));
    let renewed = tier
        .replace_versioned(key, Bytes::from_static(b"c"), &seen)
        .await;
    let renewed = renewed
        .unwrap()
        .expect("a replace of the version seen wins");
    assert_ne!(renewed, seen, "a new version");
    let stale = tier
        .replace_versioned(key, Bytes::from_static(b"d"), &seen)
        .await;
    assert_eq!(stale.unwrap(), None, "a replace of an old version loses");
    assert_eq!(
        tier.read(key, 64).await.unwrap().as_deref(),
        Some(&b"c"[..])
    );
    tier.delete(key).await.unwrap();
    let gone = tier
        .replace_versioned(key, Bytes::from_static(b"e"), &renewed)
        .await;
    assert_eq!(gone.unwrap(), None, "nothing to replace");
}

/// Runs every test of the suite for the tier `$make` builds (a tier and what must outlive it).
macro_rules! tier_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            macro_rules! run {
                ($test:ident) => {
                    #[tokio::test]
                    async fn $test() {
                        let (tier, _keep) = $make;
                        super::$test(&tier).await;
                    }
                };
            }

            run!(missing_objects_are_absent);
            run!(what_is_written_is_read_back);
            run!(create_never_overwrites);
            run!(overwrite_replaces);
            run!(a_read_stops_at_its_limit);
            run!(files_are_written_once);
            run!(delete_removes);
            run!(kinds_of_one_hex_are_apart);
            run!(conditional_writes_have_one_winner);
        }
    };
}

fn disk_tier() -> (DiskTier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (DiskTier::open(dir.path()).unwrap(), dir)
}

fn memory_tier() -> (ObjectTier, ()) {
    let store = Arc::new(object_store::memory::InMemory::new());
    // Parts of the smallest size S3 takes, so `files_are_written_once` goes up in parts.
    let tier = ObjectTier::over(store, "memory", "acr/test").with_parts(5 * 1024 * 1024, 2);
    (tier, ())
}

/// The object-store tier over a container of a fresh Azurite (killed when the test ends).
fn azurite_tier() -> (ObjectTier, azurite::Azurite) {
    let azurite = azurite::Azurite::start();
    let tier = azurite.tier("acr/test").with_parts(5 * 1024 * 1024, 2);
    (tier, azurite)
}

#[allow(dead_code)]
#[path = "../../../tests/harness/azurite.rs"]
mod azurite;

tier_suite!(disk, disk_tier());
tier_suite!(object_store_in_memory, memory_tier());
tier_suite!(object_store_azurite, azurite_tier());
