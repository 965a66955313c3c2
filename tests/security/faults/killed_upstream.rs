//! The upstream killed in the middle of a blob, and back again.

use super::*;

// ------------------------------------------------------------------------------------------
// 1. the upstream killed in the middle of a blob

/// A real distribution serves the 64 MiB layer through a relay paced to 4 MiB/s; once acr
/// has 8 MiB of it, the registry is `kill -9`ed. The client's transfer breaks (never a
/// complete 200), the store keeps nothing of it (no object, tmp/ emptied), acr goes on
/// serving (the manifest from the store, `/v2/`), and once distribution is back on the same
/// storage and port the same blob pulls whole and is stored.
#[test]
fn an_upstream_killed_mid_blob_breaks_the_transfer_keeps_nothing_and_heals() {
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, 64);
    let layer = Arc::new(big_fixture(64).blob(&big.layer_digest));
    assert_eq!(layer.len() as u64, big.layer_size);
    let relay = Relay::start(reg.addr(), 4 * MIB as u64);
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &relay.url(),
        &[&cache_setting(cache.path())],
    ));
    let accept = [("Accept", ACCEPT_MANIFESTS)];
    // The manifest first: from now on it is in the store.
    let manifest = prompt_get(
        &acr,
        "/v2/library/big/manifests/64",
        &accept,
        Duration::from_secs(30),
    );
    assert_eq!(digest_of(&manifest), big.manifest_digest);

    let blob_path = format!("/v2/library/big/blobs/{}", big.layer_digest);
    let client = {
        let (url, layer) = (format!("{}{blob_path}", acr.url()), layer.clone());
        thread::spawn(move || fetch_blob(&url, &[], &layer))
    };
    let midway = wait_until(Duration::from_secs(60), || {
        temp_files(cache.path())
            .iter()
            .any(|(_, n)| *n >= 8 * MIB as u64)
    });
    assert!(midway, "the fetch never got 8 MiB in:\n{}", acr.log());
    let relayed = relay.bytes_down();
    kill9(reg.pid());
    let killed_at = Instant::now();
    let got = client.join().expect("client thread");
    let broke_after = killed_at.elapsed();
    println!(
        "killed the upstream after {:.1} MiB had passed the relay; the client: {}; it knew {:.1?} after the kill",
        relayed as f64 / MIB as f64,
        got.describe(),
        broke_after
    );
    assert!(
        !(got.status == 200 && got.end.is_ok()),
        "a complete-looking 200 although the upstream died: {}",
        got.describe()
    );
    assert!(got.len < layer.len() as u64, "{}", got.describe());
    assert!(
        broke_after < Duration::from_secs(30),
        "the client waited {broke_after:?} for a transfer that could not finish"
    );
    // Nothing of it is kept.
    assert!(
        wait_until(Duration::from_secs(10), || temp_files(cache.path())
            .is_empty()),
        "tmp/ after the failed fetch: {:?}",
        temp_files(cache.path())
    );
    assert!(!has_blob(cache.path(), &big.layer_digest));
    let failed = acr.wait_requests(&[&blob_path, "failed="], 1);
    assert_eq!(failed.len(), 1, "no failed request line:\n{}", acr.log());
    let why = log_lines(&acr, "fetch failed");
    assert!(!why.is_empty(), "the log does not say the fetch failed");
    println!("acr: {}\nacr: {}", why[0], failed[0]);
    // acr goes on serving what it has.
    acr.assert_serves(Some(("library/big", "64")));
    let by_digest = prompt_get(
        &acr,
        &format!("/v2/library/big/manifests/{}", big.manifest_digest),
        &accept,
        Duration::from_secs(5),
    );
    assert_eq!(by_digest, manifest);
    // While the upstream is down, the blob is a clear error.
    let r = acr.fetch("GET", &blob_path, &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAVAILABLE");

    // The upstream comes back on the same storage and port: the same blob pulls whole.
    relay.set_paced(false);
    let _back = restart_registry(&reg);
    let got = fetch_blob(&format!("{}{blob_path}", acr.url()), &[], &layer);
    got.assert_whole("after the upstream came back", &acr.log());
    assert!(
        wait_until(Duration::from_secs(20), || has_blob(
            cache.path(),
            &big.layer_digest
        )),
        "the blob was not stored after a good fetch"
    );
    assert!(temp_files(cache.path()).is_empty());
    let hex = big.layer_digest.trim_start_matches("sha256:");
    let stored = std::fs::read(cache.path().join("blobs/sha256").join(&hex[..2]).join(hex))
        .expect("read the stored blob");
    assert!(stored == *layer, "the stored blob is not the layer");
}
