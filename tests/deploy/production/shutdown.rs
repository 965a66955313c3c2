//! Graceful shutdown.

use super::*;

// ------------------------------------------------------------------------------------------
// graceful shutdown

const BIG_MIB: u32 = 64;

/// `curl --limit-rate RATE -o FILE -w '%{http_code} %{size_download}'` in the background.
fn slow_client(url: &str, rate: &str, file: &Path, log: &Path) -> Proc {
    require_tools(&["curl"]);
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--limit-rate", rate, "-o"])
        .arg(file)
        .args(["-w", "%{http_code} %{size_download}\n", url]);
    Proc::spawn("curl", cmd, log)
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash");
    format!("sha256:{}", hex(&h.finalize()))
}

/// Whether a new TCP connection to `port` is refused.
fn refused(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Waits (up to `timeout`) for a background client to end; its exit status.
fn wait_client(client: &mut Proc, timeout: Duration) -> std::process::ExitStatus {
    assert!(
        wait_until(timeout, || !client.is_running()),
        "the client still runs after {timeout:?}: {}",
        client.log()
    );
    client.stop().expect("exit status")
}

/// Starts a client reading `big`'s layer from acr at `rate`, and once its first bytes arrived
/// (and a second more), sends acr SIGTERM. The scratch directory (keep it), the file the
/// client writes and the client.
fn sigterm_during_a_slow_transfer(
    acr: &mut Acr,
    big: &BigSeeded,
    rate: &str,
) -> (tempfile::TempDir, std::path::PathBuf, Proc) {
    let scratch = temp_dir("acr-shutdown-");
    let file = scratch.path().join("blob");
    let url = format!("{}/v2/library/big/blobs/{}", acr.url(), big.layer_digest);
    let client = slow_client(&url, rate, &file, &scratch.path().join("curl.log"));
    assert!(
        wait_until(Duration::from_secs(60), || file_len(&file) > 0),
        "the transfer did not start: {}\n{}",
        client.log(),
        acr.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    acr.signal(libc::SIGTERM);
    (scratch, file, client)
}

/// SIGTERM while a client slowly reads a 64 MiB blob: acr refuses new connections at once,
/// the client gets the whole blob (200, size and sha256), and acr then exits 0 saying every
/// transfer finished.
#[test]
fn sigterm_lets_a_transfer_in_progress_finish() {
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, BIG_MIB);
    let mut acr = Acr::launch(&pull_through(&reg.url()), AcrOptions::default());
    let (_scratch, file, mut client) = sigterm_during_a_slow_transfer(&mut acr, &big, "8M");
    let at_signal = file_len(&file);
    assert!(
        at_signal < big.layer_size,
        "the blob was already complete at the signal ({at_signal} bytes): slow the client"
    );
    assert!(
        poll(Duration::from_secs(5), || refused(acr.port()).then_some(())).is_some(),
        "acr still accepts connections after SIGTERM\n{}",
        acr.log()
    );
    assert!(
        try_http_request("GET", &format!("{}/v2/", acr.url()), &[], None).is_err(),
        "a new request after SIGTERM was answered"
    );

    let status = wait_client(&mut client, Duration::from_secs(180));
    let said = client.log();
    assert!(status.success(), "the client failed: {status:?} {said}");
    assert_eq!(
        said.trim(),
        format!("200 {}", big.layer_size),
        "curl's status and size"
    );
    assert_eq!(file_len(&file), big.layer_size);
    assert_eq!(sha256_file(&file), big.layer_digest);

    let exit = acr
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("acr did not exit after the transfer:\n{}", acr.log()));
    let log = acr.log();
    assert!(exit.success(), "acr exited with {exit:?}:\n{log}");
    assert!(log.contains("every transfer finished"), "{log}");
}

/// With `--shutdown-grace 1`, a client too slow to finish in the grace: acr exits about a
/// second after SIGTERM, and the client's transfer ends in an error (curl's exit code 18,
/// "transfer closed with N bytes remaining"), never a complete-looking success.
#[test]
fn sigterm_past_the_grace_breaks_slow_transfers_with_an_error() {
    let reg = Registry::start(RegistryAuth::None);
    let big = seed_big(&reg, BIG_MIB);
    let mut acr = Acr::launch(
        &pull_through(&reg.url()),
        AcrOptions {
            args: vec!["--shutdown-grace".into(), "1".into()],
            ..AcrOptions::default()
        },
    );
    let (_scratch, file, mut client) = sigterm_during_a_slow_transfer(&mut acr, &big, "2M");
    let signalled = Instant::now();
    let exit = acr
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("acr did not exit within 30 s:\n{}", acr.log()));
    let took = signalled.elapsed();
    let log = acr.log();
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(6),
        "acr exited {took:?} after SIGTERM with a 1 s grace:\n{log}"
    );
    assert!(log.contains("transfers still open"), "{log}");
    assert!(exit.code().is_some(), "acr died of a signal: {exit:?}");

    let status = wait_client(&mut client, Duration::from_secs(60));
    let said = client.log();
    let got = file_len(&file);
    assert!(
        got < big.layer_size,
        "the client got all {got} bytes though acr left"
    );
    assert!(
        !status.success(),
        "curl exited 0 with {got} of {} bytes: a cut transfer looked complete ({said})",
        big.layer_size
    );
    // 18: "transfer closed with N bytes remaining" (acr closed the connection short of the
    // Content-Length it sent); 56: the connection broke while receiving.
    assert!(
        matches!(status.code(), Some(18 | 56)),
        "curl should report a cut transfer (exit 18 or 56), got {status:?}: {said}"
    );
    assert!(
        said.contains("bytes remaining") || status.code() == Some(56),
        "{said}"
    );
}
