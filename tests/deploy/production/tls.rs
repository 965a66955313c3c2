//! TLS (acr serving https, client certificates, certificate reloads).

use super::*;

// ------------------------------------------------------------------------------------------
// TLS

fn tls_settings(cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!(".tls-cert {}", cert.display()),
        format!(".tls-key {}", key.display()),
    ]
}

fn tls_mirror(reg: &Registry, settings: &[String]) -> Acr {
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Acr::launch(
        &pipeline(&reg.url(), &[], &settings, &routes("")),
        AcrOptions::default(),
    )
}

/// A plain upstream and acr mirroring it over https with a server certificate for `cn` from a
/// new CA: the upstream, the CA, the certificate and key files, acr.
fn https_mirror(cn: &str) -> (Registry, Pki, (std::path::PathBuf, std::path::PathBuf), Acr) {
    let reg = plain_upstream();
    let pki = Pki::new("acr test CA");
    let (cert, key) = pki.server("server", cn);
    let acr = tls_mirror(&reg, &tls_settings(&cert, &key));
    (reg, pki, (cert, key), acr)
}

/// `curl -w '%{http_code} %{http_version}'` of `url` with `args`: (exit success, output).
fn curl_status(args: &[&str], url: &str) -> (bool, String, CmdOutput) {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code} %{http_version}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all);
    (out.success(), out.stdout.trim().to_string(), out)
}

/// https with a certificate from a CA the clients trust: skopeo (`--cert-dir`,
/// `--src-cert-dir`) inspects and copies, curl speaks HTTP/2 and HTTP/1.1; skopeo without the
/// CA refuses the certificate; plain http to the port gets no answer.
#[test]
fn https_serves_clients_that_trust_the_ca_and_refuses_plain_http() {
    let (_reg, pki, _, acr) = https_mirror("acr-tls-one");
    let ca = pki.ca_cert();
    let ca = ca.to_string_lossy();
    let trust = pki.cert_dir();
    let trust = trust.to_string_lossy();

    let (ok, status, out) = curl_status(&["--cacert", &ca], &format!("{}/v2/", acr.https_url()));
    assert!(ok, "{out:?}");
    assert_eq!(status, "200 2", "HTTP/2 over ALPN");
    let (ok, status, out) = curl_status(
        &["--cacert", &ca, "--http1.1"],
        &format!("{}/v2/", acr.https_url()),
    );
    assert!(ok, "{out:?}");
    assert_eq!(status, "200 1.1");
    assert!(
        served_subject(acr.port()).contains("acr-tls-one"),
        "{}",
        served_subject(acr.port())
    );

    let scratch = temp_dir("acr-tls-");
    let auth = scratch.path().join("auth.json");
    assert_inspects_test_over_https(&acr, &auth, &pki.cert_dir());
    let src = format!("docker://{}/library/test:1", acr.host());
    let out = scratch.path().join("copied");
    let dest = format!("dir:{}", out.display());
    skopeo_as(
        &auth,
        false,
        &["copy", "--src-cert-dir", &trust, &src, &dest],
    )
    .ok();
    let manifest = std::fs::read(out.join("manifest.json")).expect("manifest.json");
    assert_eq!(digest_of(&manifest), fixtures().test.digest);
    for (digest, _) in fixtures().test.layers() {
        let blob = std::fs::read(out.join(digest.trim_start_matches("sha256:"))).expect("layer");
        assert_eq!(digest_of(&blob), digest);
    }

    // Not trusting the CA: refused.
    let untrusted = skopeo_as(&auth, false, &["inspect", "--raw", &src]);
    assert_failed_saying_one_of(
        &untrusted,
        "skopeo trusted a CA it was not given",
        &["x509", "certificate"],
    );
    // Plain http to the https port: no HTTP answer.
    let (ok, status, out) = curl_status(&["-m", "30"], &format!("{}/v2/", acr.url()));
    assert!(
        !ok && !status.starts_with("200"),
        "plain http to the https port answered: {out:?}"
    );
    assert!(
        try_http_request("GET", &format!("{}/v2/", acr.url()), &[], None)
            .map(|r| r.status != 200)
            .unwrap_or(true),
        "plain http got a 200"
    );
    assert!(acr.is_running(), "{}", acr.log());
}

/// A renewed certificate (new files renamed over the old ones, another subject) is served
/// within about two seconds, by the same process; a broken pair written over it is refused
/// and the current certificate kept.
#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let (_reg, pki, (cert, key), acr) = https_mirror("acr-before-renewal");
    let pid = acr.pid();
    let subject = served_subject(acr.port());
    assert!(subject.contains("acr-before-renewal"), "{subject}");

    // The new pair, written under other names, then renamed over the served files.
    let (new_cert, new_key) = pki.server("renewed", "acr-after-renewal");
    std::fs::rename(&new_cert, &cert).expect("rename the certificate");
    std::fs::rename(&new_key, &key).expect("rename the key");
    let swapped = Instant::now();
    // When the probe that first saw the new certificate started (a probe itself takes time
    // on a loaded machine).
    let seen = poll(Duration::from_secs(10), || {
        let asked = swapped.elapsed();
        served_subject(acr.port())
            .contains("acr-after-renewal")
            .then_some(asked)
    });
    assert!(
        seen.is_some(),
        "still serving {} 10 s after the renewal\n{}",
        served_subject(acr.port()),
        acr.log()
    );
    let took = seen.unwrap_or_default();
    assert!(
        took <= Duration::from_secs(3),
        "the renewed certificate was first served {took:?} after the renewal"
    );
    assert_eq!(acr.pid(), pid);
    assert!(acr.is_running());
    assert!(
        acr.log().contains("serving the renewed certificate"),
        "{}",
        acr.log()
    );
    // Clients that trust the CA still pull.
    let scratch = temp_dir("acr-tls-");
    assert_inspects_test_over_https(&acr, &scratch.path().join("a.json"), &pki.cert_dir());

    // A broken certificate file: the current pair stays.
    let junk = pki.dir().join("junk.crt");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .expect("write junk");
    std::fs::rename(&junk, &cert).expect("rename junk over the certificate");
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        let s = served_subject(acr.port());
        assert!(
            s.contains("acr-after-renewal"),
            "after a broken renewal: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        acr.log().contains("keeping the current certificate"),
        "{}",
        acr.log()
    );
}

/// `: .tls-client-ca`: a client without a certificate, or with one from another CA, is
/// refused; curl with a certificate the CA signed gets its answer, and so does skopeo with
/// the certificate in its `--cert-dir`.
#[test]
fn client_certificates_are_required_with_a_client_ca() {
    let reg = plain_upstream();
    let pki = Pki::new("acr test CA");
    let (cert, key) = pki.server("server", "acr-mtls");
    let clients = Pki::new("acr client CA");
    let (client_cert, client_key) = clients.client("client", "a-trusted-node");
    let (rogue_cert, rogue_key) = pki.client("rogue", "a-node-of-another-ca");
    let mut settings = tls_settings(&cert, &key);
    settings.push(format!(".tls-client-ca {}", clients.ca_cert().display()));
    let acr = tls_mirror(&reg, &settings);
    let ca = pki.ca_cert().to_string_lossy().into_owned();
    let url = format!("{}/v2/", acr.https_url());

    // curl trusting the CA, with the client certificate and key given, if any.
    let curl_with = |client: Option<(&Path, &Path)>| {
        let (cert, key) = client.map_or((String::new(), String::new()), |(c, k)| {
            (c.display().to_string(), k.display().to_string())
        });
        let mut args = vec!["--cacert", &ca, "-m", "30"];
        if client.is_some() {
            args.extend(["--cert", &cert, "--key", &key]);
        }
        curl_status(&args, &url)
    };
    let (ok, status, out) = curl_with(None);
    assert!(
        !ok && !status.starts_with("200"),
        "answered without a client certificate: {out:?}"
    );
    let (ok, status, out) = curl_with(Some((&rogue_cert, &rogue_key)));
    assert!(
        !ok && !status.starts_with("200"),
        "answered a certificate of another CA: {out:?}"
    );
    let (ok, status, out) = curl_with(Some((&client_cert, &client_key)));
    assert!(ok, "{out:?}");
    assert!(status.starts_with("200"), "{out:?}");

    // skopeo: ca.crt plus client.cert / client.key in --cert-dir.
    let trust = pki.cert_dir();
    std::fs::copy(&client_cert, trust.join("client.cert")).expect("copy client cert");
    std::fs::copy(&client_key, trust.join("client.key")).expect("copy client key");
    let scratch = temp_dir("acr-mtls-");
    assert_inspects_test_over_https(&acr, &scratch.path().join("a.json"), &trust);
}

/// Client auth over https: the challenge's realm is `https://.../token`, and skopeo, trusting
/// the CA, logs in and pulls with acr's token.
#[test]
fn client_auth_over_https_names_an_https_realm() {
    let reg = auth_upstream();
    let pki = Pki::new("acr test CA");
    let (cert, key) = pki.server("server", "acr-auth-tls");
    let tls = tls_settings(&cert, &key);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let acr = auth_mirror(&reg, &tls, &[]);
    let ca = pki.ca_cert().to_string_lossy().into_owned();

    let out = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-H",
        &format!("Accept: {ACCEPT_MANIFESTS}"),
        &format!("{}/v2/library/test/manifests/1", acr.https_url()),
    ])
    .ok();
    let head = out.stdout.to_ascii_lowercase();
    assert!(
        head.lines().next().is_some_and(|l| l.contains(" 401")),
        "{out:?}"
    );
    let challenge = format!(
        "www-authenticate: bearer realm=\"https://{}/token\",service=\"acr\",scope=\"repository:library/test:pull\"",
        acr.host()
    );
    assert!(head.contains(&challenge), "no {challenge} in {out:?}");

    let scratch = temp_dir("acr-auth-tls-");
    let auth = scratch.path().join("alice.json");
    let trust = pki.cert_dir();
    let trust = trust.to_string_lossy();
    skopeo_as(
        &auth,
        false,
        &[
            "login",
            "--cert-dir",
            &trust,
            "-u",
            ALICE.0,
            "-p",
            ALICE.1,
            &acr.host(),
        ],
    )
    .ok();
    assert_inspects_test_over_https(&acr, &auth, &pki.cert_dir());
    assert!(
        acr.log()
            .lines()
            .any(|l| l.contains("path=/token") && l.contains("status=200")),
        "skopeo did not use acr's /token:\n{}",
        acr.log()
    );
    assert_upstream_saw_only_acrs_credentials(&reg);
}

/// `skopeo inspect --raw` of `library/test:1` from acr over https, trusting what `cert_dir`
/// holds (`ca.crt`, and a client certificate when there is one), gets the fixture's manifest.
fn assert_inspects_test_over_https(acr: &Acr, auth_file: &Path, cert_dir: &Path) {
    let src = format!("docker://{}/library/test:1", acr.host());
    let cert_dir = cert_dir.to_string_lossy();
    let raw = skopeo_as(
        auth_file,
        false,
        &["inspect", "--raw", "--cert-dir", &cert_dir, &src],
    )
    .ok()
    .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);
}
