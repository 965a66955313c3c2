//! An upstream that trickles a blob one byte at a time.

use super::*;

// ------------------------------------------------------------------------------------------
// 2. an upstream that trickles

/// An upstream that sends a blob's headers and then one byte a second. Meanwhile acr answers
/// everything else promptly (a cold manifest and config from the same upstream, the manifest
/// again, `/v2/`: each in under a second); the trickling client gets each byte as it comes;
/// when it gives up, acr closes its connection; nothing is stored while the blob is
/// incomplete; the fetch goes on for the next client, who gets the whole blob, and then it is
/// stored.
#[test]
fn a_trickling_upstream_holds_up_nothing_else_and_stores_nothing_partial() {
    const LEN: usize = 16;
    let layer = pseudo_random_bytes("acr-faults-trickle", LEN);
    let layer_digest = digest_of(&layer);
    let config = image_config("trickle", std::slice::from_ref(&layer_digest));
    let config_digest = digest_of(&config);
    let manifest = image_manifest(&config, &[(layer_digest.clone(), layer.clone())]);
    let manifest_digest = digest_of(&manifest);
    let fake = {
        let (ld, cd, md) = (
            layer_digest.clone(),
            config_digest.clone(),
            manifest_digest.clone(),
        );
        let (layer, config, manifest) = (layer.clone(), config.clone(), manifest.clone());
        SlowUpstream::start(move |r: &FakeRequest| {
            let p = r.path.as_str();
            if p == "/v2/" {
                return SlowReply::new(200, &[("Content-Type", "application/json")], "{}");
            }
            if p == "/v2/library/trickle/manifests/1"
                || p == format!("/v2/library/trickle/manifests/{md}")
            {
                return SlowReply::new(
                    200,
                    &[
                        ("Content-Type", OCI_MANIFEST),
                        ("Docker-Content-Digest", md.as_str()),
                    ],
                    manifest.clone(),
                );
            }
            if p == format!("/v2/library/trickle/blobs/{cd}") {
                return SlowReply::new(200, &[], config.clone());
            }
            if p == format!("/v2/library/trickle/blobs/{ld}") {
                let mut reply = SlowReply::new(
                    200,
                    &[("Content-Type", "application/octet-stream")],
                    layer.clone(),
                );
                reply.per_byte = Some(Duration::from_secs(1));
                return reply;
            }
            SlowReply::new(
                404,
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#,
            )
        })
    };
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &fake.url(),
        &[&cache_setting(cache.path())],
    ));
    let blob_path = format!("/v2/library/trickle/blobs/{layer_digest}");
    let blob_url = format!("{}{blob_path}", acr.url());

    // The trickling client, reading byte by byte and noting when each arrived.
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build();
    let started = Instant::now();
    let resp = agent.get(&blob_url).call().unwrap_or_else(|e| {
        panic!(
            "the trickled blob: {e} after {:?}\n{}",
            started.elapsed(),
            acr.log()
        )
    });
    let headers_after = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.header("content-length"),
        Some(LEN.to_string().as_str())
    );
    let mut reader = resp.into_reader();
    let mut got = Vec::new();
    let mut arrivals = Vec::new();
    let mut one = [0u8; 1];
    let mut checks = 0;
    while got.len() < 3 {
        let n = reader.read(&mut one).expect("a trickled byte");
        assert_eq!(n, 1, "the trickled body ended after {} bytes", got.len());
        got.push(one[0]);
        arrivals.push(started.elapsed());
        // Meanwhile everything else is prompt: a cold manifest and config from the same
        // upstream, then the manifest again (from the store), HEAD, `/v2/`.
        let limit = Duration::from_secs(1);
        let m = prompt_get(
            &acr,
            "/v2/library/trickle/manifests/1",
            &[("Accept", OCI_MANIFEST)],
            limit,
        );
        assert_eq!(m, manifest);
        let c = prompt_get(
            &acr,
            &format!("/v2/library/trickle/blobs/{config_digest}"),
            &[],
            limit,
        );
        assert_eq!(c, config);
        prompt_get(&acr, "/v2/", &[], limit);
        let head_started = Instant::now();
        let h = acr.fetch(
            "HEAD",
            "/v2/library/trickle/manifests/1",
            &[("Accept", OCI_MANIFEST)],
        );
        assert_eq!(h.status, 200);
        assert!(head_started.elapsed() < limit);
        checks += 1;
        // Incomplete: not in the store.
        assert!(!has_blob(cache.path(), &layer_digest));
    }
    assert_eq!(got[..], layer[..3]);
    println!(
        "trickle: headers after {headers_after:.1?}, the first three bytes after {arrivals:.1?}; \
         {checks} rounds of other requests each under 1 s meanwhile"
    );
    assert!(
        arrivals[0] < Duration::from_secs(5),
        "the first byte took {:?}",
        arrivals[0]
    );
    assert!(
        arrivals[2] - arrivals[0] >= Duration::from_millis(1500),
        "the bytes did not come as they were sent: {arrivals:?}"
    );

    // The client gives up: acr closes its side.
    let before = established_on_port(acr.pid(), acr.port());
    assert!(
        before >= 1,
        "acr holds no client connection while it streams"
    );
    drop(reader);
    let gave_up = Instant::now();
    let freed = wait_until(Duration::from_secs(10), || {
        established_on_port(acr.pid(), acr.port()) == 0
    });
    println!(
        "trickle: {before} client connection(s) held while streaming; after the client left: {} ({:.1?})",
        established_on_port(acr.pid(), acr.port()),
        gave_up.elapsed()
    );
    assert!(
        freed,
        "acr still holds {} client connection(s) 10 s after the client left",
        established_on_port(acr.pid(), acr.port())
    );
    let left = acr.wait_requests(&[&blob_path, "failed="], 1);
    assert_eq!(left.len(), 1, "{}", acr.log());
    assert!(left[0].contains("went away"), "{}", left[0]);
    assert!(!has_blob(cache.path(), &layer_digest));

    // The fetch goes on: the next client follows it and gets the whole blob.
    let got = fetch_blob(&blob_url, &[], &layer);
    got.assert_whole("the next client", &acr.log());
    println!(
        "trickle: the next client's first byte after {:.1?}, whole blob {:.1?} after the first request",
        got.first_byte.unwrap_or_default(),
        started.elapsed()
    );
    assert!(
        got.first_byte.unwrap_or_default() < Duration::from_secs(2),
        "what had arrived was not passed on at once"
    );
    assert!(wait_until(Duration::from_secs(10), || has_blob(
        cache.path(),
        &layer_digest
    )));
    assert!(temp_files(cache.path()).is_empty());
    let layer_gets = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {blob_path}")))
        .count();
    assert_eq!(layer_gets, 1, "{:?}", fake.requests());
    assert_eq!(
        fake.broken_off(),
        0,
        "acr broke off the upstream's transfer"
    );
}
