//! The Azure Blob tier of the store against Azurite, the Azure Storage emulator (started
//! per test on 127.0.0.1 by the harness's `Azurite`): acr's own client config through the
//! path-style endpoint, and the conditional writes the fleet's leases rely on, straight
//! through `object_store`: of two creates (`If-None-Match: *`) exactly one wins, and an update
//! (`If-Match: ETAG`) with a stale ETag fails.

#[allow(dead_code)]
#[path = "../../tests/harness/azurite.rs"]
mod azurite;

use std::sync::Arc;

use acr_plugins::store::object::ObjectTier;
use acr_plugins::store::remote::RemoteConfig;
use acr_plugins::store::tier::PutOutcome;
use azurite::{Azurite, AZURITE_ACCOUNT, AZURITE_CONTAINER, AZURITE_KEY};
use bytes::Bytes;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};

/// The container through `object_store` alone, configured as acr configures it.
fn store(azurite: &Azurite) -> Arc<dyn ObjectStore> {
    let store = MicrosoftAzureBuilder::new()
        .with_account(AZURITE_ACCOUNT)
        .with_access_key(AZURITE_KEY)
        .with_container_name(AZURITE_CONTAINER)
        .with_endpoint(azurite.endpoint())
        .with_allow_http(true)
        .build()
        .expect("the Azurite store");
    Arc::new(store)
}

fn mode(mode: PutMode) -> PutOptions {
    PutOptions {
        mode,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_conditional_creates_exactly_one_wins() {
    let azurite = Azurite::start();
    let store = store(&azurite);
    let path = Path::from("leases/sha256/aa11");
    let put = |body: &'static str| {
        let (store, path) = (store.clone(), path.clone());
        tokio::spawn(async move {
            store
                .put_opts(&path, Bytes::from(body).into(), mode(PutMode::Create))
                .await
        })
    };
    let (first, second) = (put("replica-a"), put("replica-b"));
    let results = [first.await.unwrap(), second.await.unwrap()];
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    let lost: Vec<_> = results
        .iter()
        .filter(|r| matches!(r, Err(object_store::Error::AlreadyExists { .. })))
        .collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{results:?}");
    let winner = if results[0].is_ok() {
        "replica-a"
    } else {
        "replica-b"
    };
    let stored = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(
        stored,
        winner.as_bytes(),
        "the winner's body is what is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_with_a_stale_etag_fails() {
    let azurite = Azurite::start();
    let store = store(&azurite);
    let path = Path::from("leases/sha256/bb22");
    let created = store
        .put_opts(&path, Bytes::from("v1").into(), mode(PutMode::Create))
        .await
        .expect("create");
    let v1 = UpdateVersion::from(created);
    let renewed = store
        .put_opts(
            &path,
            Bytes::from("v2").into(),
            mode(PutMode::Update(v1.clone())),
        )
        .await
        .expect("an update with the current ETag succeeds");
    assert_ne!(renewed.e_tag, v1.e_tag, "a write changes the ETag");
    let stale = store
        .put_opts(&path, Bytes::from("v3").into(), mode(PutMode::Update(v1)))
        .await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "a stale ETag: {stale:?}"
    );
    let stored = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored, "v2");
}

/// acr's own tier (`RemoteConfig` for `az://`, through `.cache-endpoint`): a small object, a
/// file large enough for a multipart upload (Put Block, Put Block List, then a conditional copy
/// from the temporary key), and a second create of the same key that stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acr_tier_writes_reads_and_never_overwrites() {
    let azurite = Azurite::start();
    let tier = azurite.tier("acr").with_parts(5 << 20, 2);
    let key = tier.key(&["manifests", "sha256", "cc33"]);
    let body = Bytes::from_static(b"{\"schemaVersion\":2}");
    assert_eq!(
        tier.put_bytes(&key, body.clone(), false).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        tier.put_bytes(&key, Bytes::from_static(b"other"), false)
            .await
            .unwrap(),
        PutOutcome::AlreadyThere
    );
    assert_eq!(tier.get_bytes(&key).await.unwrap(), Some(body));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("layer");
    let big: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &big).unwrap();
    let blob = tier.key(&["blobs", "sha256", "dd44"]);
    assert_eq!(
        tier.put_file_if_absent(&blob, &file).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(tier.head(&blob).await.unwrap(), Some(big.len() as u64));
    let (total, mut stream) = tier
        .get_stream(&blob, Some((1000, 2000)))
        .await
        .unwrap()
        .unwrap();
    let mut ranged = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        ranged.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        total,
        big.len() as u64,
        "a ranged GET states the whole size"
    );
    assert!(
        ranged == big[1000..2000],
        "the range is the file's bytes 1000..2000"
    );
    assert_eq!(
        tier.put_file_create(&blob, &file).await.unwrap(),
        PutOutcome::AlreadyThere
    );
    assert_eq!(
        tier.sweep_temp(std::time::Duration::ZERO).await.unwrap(),
        0,
        "no temporary key is left"
    );
}

/// `AZURE_STORAGE_SAS_TOKEN` instead of the account key: acr's tier writes, reads and finds
/// objects with an account SAS alone; a SAS whose signature is wrong is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_token_authorises_the_tier() {
    let azurite = Azurite::start();
    let sas = azurite::azurite_account_sas();
    let tier_with = |sas: String| {
        let env = move |k: &str| match k {
            "AZURE_STORAGE_ACCOUNT_NAME" => Some(AZURITE_ACCOUNT.to_string()),
            "AZURE_STORAGE_SAS_TOKEN" => Some(sas.clone()),
            _ => None,
        };
        let config =
            RemoteConfig::parse_with("az://cache/acr", Some(&azurite.endpoint()), &env).unwrap();
        ObjectTier::new(config).unwrap()
    };
    let tier = tier_with(sas.clone());
    let key = tier.key(&["tags", "docker.io", "library/alpine", "_tags", "3"]);
    let record = Bytes::from_static(b"{\"digest\":\"sha256:00\"}");
    let put = tier.put_bytes(&key, record.clone(), true).await;
    assert_eq!(put.unwrap(), PutOutcome::Created);
    assert_eq!(tier.get_bytes(&key).await.unwrap(), Some(record));

    let forged = sas.replace("sp=rwdlac", "sp=rwdlacx");
    let refused = tier_with(forged).head(&key).await;
    let err = refused.expect_err("a SAS with a wrong signature is refused");
    assert!(
        !err.to_string().contains("sig="),
        "the SAS is not quoted: {err}"
    );
}

/// An unreachable blob service: the error names the store and the key, and never the SAS
/// token that the requests carry in their query string.
#[tokio::test]
async fn an_unreachable_service_is_an_error_without_the_sas() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/{AZURITE_ACCOUNT}", dead.local_addr().unwrap());
    drop(dead);
    let sas = azurite::azurite_account_sas();
    let env = |k: &str| match k {
        "AZURE_STORAGE_ACCOUNT_NAME" => Some(AZURITE_ACCOUNT.to_string()),
        "AZURE_STORAGE_SAS_TOKEN" => Some(sas.clone()),
        _ => None,
    };
    let mut config = RemoteConfig::parse_with("az://cache/acr", Some(&endpoint), &env).unwrap();
    config.max_retries = 0;
    let tier = ObjectTier::new(config).unwrap();
    let err = tier
        .head("acr/blobs/sha256/ee55")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("acr/blobs/sha256/ee55"), "{err}");
    let signature = sas.split("sig=").nth(1).unwrap();
    assert!(
        !err.contains("sig=") && !err.contains(signature),
        "the SAS leaked: {err}"
    );
}
