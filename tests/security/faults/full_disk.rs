//! A full disk under the store.

use super::*;

// ------------------------------------------------------------------------------------------
// 4. a full disk

/// The store on an 8 MiB tmpfs and a 64 MiB blob to pull through it: the client gets either a
/// clear error or the whole, right blob (never a 200 cut short or wrong bytes); nothing
/// partial is kept (no object, tmp/ emptied); the log says the store cannot write; small
/// images that fit still pull (and are stored).
#[test]
fn a_full_disk_fails_cleanly_and_small_pulls_still_work() {
    let disk = match Tmpfs::mount("8m") {
        Ok(d) => d,
        Err(why) => {
            println!("SKIPPED: cannot mount a tmpfs for the store here: {why}");
            return;
        }
    };
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, 64);
    let layer = Arc::new(big_fixture(64).blob(&big.layer_digest));
    let small = push_image(
        &reg,
        "library/small",
        "1",
        vec![pseudo_random_bytes("acr-faults-small", 200_000)],
    );
    let after = push_image(
        &reg,
        "library/after",
        "1",
        vec![
            pseudo_random_bytes("acr-faults-after-a", 300_000),
            pseudo_random_bytes("acr-faults-after-b", 2_000),
        ],
    );
    let acr = Acr::start(&store_pipeline(&reg.url(), &[&cache_setting(disk.path())]));
    let accept = [("Accept", OCI_MANIFEST)];
    let pull = |p: &Pushed| {
        let (repo, tag) = p.repo_ref.split_once(':').expect("repo:tag");
        let m = prompt_get(
            &acr,
            &format!("/v2/{repo}/manifests/{tag}"),
            &accept,
            Duration::from_secs(30),
        );
        assert_eq!(m, p.manifest);
        let config = image_config(&p.repo_ref, &p.layer_digests());
        assert_eq!(digest_of(&config), p.config_digest);
        let blobs = std::iter::once((p.config_digest.clone(), config)).chain(p.layers.clone());
        for (d, bytes) in &blobs.collect::<Vec<_>>() {
            let got = fetch_blob(&format!("{}/v2/{repo}/blobs/{d}", acr.url()), &[], bytes);
            got.assert_whole(d, "");
        }
    };
    pull(&small);
    println!(
        "full disk: {} KiB free on the store's tmpfs before the big blob",
        disk.free_bytes() >> 10
    );
    // The manifest fits; the 64 MiB layer cannot.
    prompt_get(
        &acr,
        "/v2/library/big/manifests/64",
        &accept,
        Duration::from_secs(30),
    );
    let blob_path = format!("/v2/library/big/blobs/{}", big.layer_digest);
    let got = fetch_blob(&format!("{}{blob_path}", acr.url()), &[], &layer);
    println!(
        "full disk: the client of the 64 MiB blob got {}",
        got.describe()
    );

    let mut problems = Vec::new();
    let clear_error = got.status >= 400
        && got.end.is_ok()
        && serde_json::from_str::<serde_json::Value>(&got.error_body)
            .ok()
            .and_then(|j| j["errors"][0]["code"].as_str().map(String::from))
            .is_some();
    let whole = got.is_whole();
    if !(clear_error || whole) {
        problems.push(format!(
            "the client got neither a clear error nor the whole blob: {}",
            got.describe()
        ));
    }
    // Nothing partial is kept.
    if !wait_until(Duration::from_secs(10), || {
        temp_files(disk.path()).is_empty()
    }) {
        problems.push(format!(
            "tmp/ is not emptied: {:?}",
            temp_files(disk.path())
        ));
    }
    if has_blob(disk.path(), &big.layer_digest) {
        problems.push("a 64 MiB object on an 8 MiB disk".to_string());
    }
    // The log says why.
    let why: Vec<String> = acr
        .log()
        .lines()
        .filter(|l| {
            l.contains("No space left on device")
                || l.contains("cannot write")
                || l.contains("not enough space")
        })
        .map(str::to_string)
        .collect();
    for l in &why {
        println!("full disk: acr: {l}");
    }
    if why.is_empty() {
        problems.push("acr's log does not say the store cannot write".to_string());
    }
    // acr goes on serving: what it has, and small images that fit.
    acr.assert_serves(Some(("library/small", "1")));
    pull(&after);
    for d in after.all_digests().iter().skip(1) {
        assert!(
            wait_until(Duration::from_secs(10), || has_blob(disk.path(), d)),
            "{d} was not stored after the disk had room again"
        );
    }
    println!("full disk: {} KiB free at the end", disk.free_bytes() >> 10);
    assert!(
        problems.is_empty(),
        "full disk:\n- {}",
        problems.join("\n- ")
    );
    // acr goes first; the tmpfs is unmounted when `disk` is dropped, last.
    drop(acr);
}
