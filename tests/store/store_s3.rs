//! Replicas sharing one store: two acr processes with `: .cache s3://cache/acr` or
//! `: .cache az://cache/acr` (each its own local directory), a real S3 server (s3s-fs, with
//! SigV4 auth, run in this test process on 127.0.0.1) or Azurite (the Azure Storage emulator),
//! and a real CNCF distribution upstream. What replica A fetched, replica B serves with the
//! upstream stopped; one test body runs on both stores ([`SharedStore`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::store::*;
use crate::harness::*;

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}

fn local_store(acr: &Acr) -> PathBuf {
    acr.dir().join("cache")
}

/// Replica A pulls two images (one with a 12 MiB layer, which goes to S3 as a multipart upload
/// and a conditional copy) into the shared bucket; with the upstream stopped, replica B, which
/// has never seen them, serves both to skopeo from the bucket, byte for byte.
#[test]
fn replica_b_serves_what_replica_a_fetched_with_the_upstream_stopped() {
    replica_b_serves_what_replica_a_fetched(&S3::start());
}

/// The same on Azure Blob Storage (`: .cache az://cache/acr`, Azurite through
/// `: .cache-endpoint`): the 12 MiB layer goes up as blocks, then a conditional copy.
#[test]
fn replica_b_serves_from_azurite_what_replica_a_fetched_with_the_upstream_stopped() {
    replica_b_serves_what_replica_a_fetched(&Azurite::start());
}

/// Replica A fills `store`; replica B serves from it alone (the upstream is stopped), and its
/// `/status` names the store but shows none of its credentials.
fn replica_b_serves_what_replica_a_fetched(store: &dyn SharedStore) {
    let (name, prefix) = (store.name(), store.prefix());
    let reg = Registry::start(RegistryAuth::None);
    let images = [
        push_image(
            &reg,
            "library/shared",
            "1",
            vec![
                pseudo_random_bytes("acr-s3-big", 12 << 20),
                pseudo_random_bytes("acr-s3-small", 100 << 10),
            ],
        ),
        push_image(
            &reg,
            "library/other",
            "2",
            vec![pseudo_random_bytes("acr-s3-other", 300 << 10)],
        ),
    ];
    let (runmd, opts) = store.pipeline(&reg.url());
    let a = Acr::start_with(&runmd, opts.clone());
    let b = Acr::start_with(&runmd, opts);
    assert_ne!(local_store(&a), local_store(&b));

    let out = temp_dir("acr-pulls-");
    for (i, img) in images.iter().enumerate() {
        let dest = out.path().join(format!("a-{i}"));
        skopeo_to_dir(&a.host(), &img.repo_ref, &dest).ok();
        assert_dir_copy(&dest, &img.manifest_digest);
    }
    // A shares what it fetched: every blob, manifest and tag is in the bucket.
    let mut keys = Vec::new();
    for img in &images {
        let manifest = hex_of(&img.manifest_digest);
        keys.push(format!("{prefix}/manifests/sha256/{manifest}"));
        keys.push(format!("{prefix}/manifests/sha256/{manifest}.type"));
        for d in std::iter::once(&img.config_digest).chain(img.layers.iter().map(|(d, _)| d)) {
            keys.push(store.blob_key(d));
        }
        let (repo, tag) = img.repo_ref.split_once(':').expect("repo:tag");
        keys.push(format!("{prefix}/tags/{}/{repo}/_tags/{tag}", reg.host()));
    }
    let shared = wait_until(Duration::from_secs(30), || {
        keys.iter().all(|k| store.has(k))
    });
    let missing: Vec<&String> = keys.iter().filter(|k| !store.has(k)).collect();
    assert!(shared, "not in {name}: {missing:#?}\nA's log:\n{}", a.log());
    for img in &images {
        for (d, bytes) in &img.layers {
            let stored = store.read(&store.blob_key(d)).expect("object");
            assert!(stored == *bytes, "{name}'s {d} is not the layer");
        }
    }
    // The big layer went up through a temporary key, which is gone.
    assert_eq!(
        store.temporaries(),
        0,
        "temporary objects are left in {name}"
    );

    // The upstream stops; B has never seen these images.
    let upstream = reg.url();
    drop(reg);
    assert!(try_http_request("GET", &format!("{upstream}/v2/"), &[], None).is_err());
    assert!(stored_blobs(&local_store(&b)).is_empty());
    let m0 = scrape(&b);
    let store_before = store.requests().len();
    for (i, img) in images.iter().enumerate() {
        let dest = out.path().join(format!("b-{i}"));
        let pulled = skopeo_to_dir(&b.host(), &img.repo_ref, &dest);
        assert!(
            pulled.success(),
            "replica B, upstream down: {pulled:?}\nB's log:\n{}",
            b.log()
        );
        assert_dir_copy(&dest, &img.manifest_digest);
    }
    let m1 = scrape(&b);
    let blobs: usize = images.iter().map(|i| 1 + i.layers.len()).sum();
    assert!(
        m1.delta(&m0, "acr_cache_hits_total") >= (blobs + images.len()) as i64,
        "every manifest and blob is a hit of the shared store"
    );
    assert_eq!(m1.delta(&m0, "acr_cache_misses_total"), 0);
    assert_eq!(m1.delta(&m0, "acr_bytes_from_upstream_total"), 0);
    let total: u64 = images
        .iter()
        .flat_map(|i| i.layers.iter().map(|(_, b)| b.len() as u64))
        .sum();
    assert!(m1.delta(&m0, "acr_bytes_from_store_total") >= total as i64);
    // B copied what it served into its own local directory, verified.
    for img in &images {
        for (d, _) in &img.layers {
            assert!(wait_until(Duration::from_secs(10), || has_blob(
                &local_store(&b),
                d
            )));
        }
    }
    assert!(assert_store_verifies(&local_store(&b)) >= blobs);
    // B wrote nothing to the store: it never shares back what it copied down.
    let requests = store.requests();
    let b_phase = &requests[store_before..];
    let writes: Vec<&String> = b_phase
        .iter()
        .filter(|r| r.starts_with("PUT ") || r.starts_with("POST "))
        .collect();
    assert!(writes.is_empty(), "B wrote to {name}: {writes:#?}");
    // `/status` names the shared store, and none of its credentials.
    let status = b.fetch("GET", "/status", &[]).text();
    let url = format!("//cache/{prefix}");
    assert!(status.contains(&url), "{url} in B's /status:\n{status}");
    assert!(!status.contains(&store.secret()), "a secret in B's /status");
    assert!(!b.log().contains(&store.secret()), "a secret in B's log");
    println!(
        "replica B served {} images from {name} with the upstream down: {} hits, {} bytes from the store, {} {name} requests",
        images.len(),
        m1.delta(&m0, "acr_cache_hits_total"),
        m1.delta(&m0, "acr_bytes_from_store_total"),
        b_phase.len()
    );
}

/// `: .cache-dir DIR` puts a replica's local copy of a shared (`s3://`) store in DIR, so the
/// pipeline's own directory may be read-only (a ConfigMap): nothing is written beside it.
#[test]
fn cache_dir_holds_the_local_part_of_a_shared_store() {
    let (s3, reg) = (S3::start(), Registry::start(RegistryAuth::None));
    let layer = pseudo_random_bytes("acr-cache-dir", 200 << 10);
    let img = push_image(&reg, "library/local-dir", "1", vec![layer]);
    let local = temp_dir("acr-cache-dir-");
    let mut settings = s3.settings();
    settings.push(format!(".cache-dir {}", local.path().display()));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let opts = AcrOptions {
        env: s3.env(),
        ..AcrOptions::default()
    };
    let acr = Acr::start_with(&store_pipeline(&reg.url(), &settings), opts);
    let out = temp_dir("acr-pulls-");
    let dest = out.path().join("image");
    skopeo_to_dir(&acr.host(), &img.repo_ref, &dest).ok();
    assert_dir_copy(&dest, &img.manifest_digest);
    let (layer, _) = &img.layers[0];
    assert!(
        wait_until(Duration::from_secs(10), || has_blob(local.path(), layer)),
        "the layer {layer} is in the local copy under {}",
        local.path().display()
    );
    assert!(
        !local_store(&acr).exists(),
        "nothing is written beside the pipeline: {}",
        local_store(&acr).display()
    );
    let key = format!("{S3_PREFIX}/blobs/sha256/{}", hex_of(layer));
    assert!(
        wait_until(Duration::from_secs(20), || s3.has(&key)),
        "the layer is shared in the bucket too ({key})"
    );
}
