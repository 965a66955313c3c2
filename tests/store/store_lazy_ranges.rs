//! Lazy pulling through the store: ranges of a cold blob, as stargz / SOCI / nydus snapshotters
//! ask them, are answered without waiting for the whole blob. A real distribution (which
//! serves ranges of blobs) sits behind a paced relay so the whole fetch takes seconds; ranges
//! near the fetch are read from its file as it is written, ranges far ahead are asked of the
//! upstream on their own, and the blob still lands in the store, verified, fetched once.

use std::thread;
use std::time::{Duration, Instant};

use crate::harness::faults::Relay;
use crate::harness::store::*;
use crate::harness::*;

const MIB: usize = 1 << 20;

/// `(status, bytes sent)` of each GET of `blob_path` in the upstream's access log
/// (`... "GET PATH PROTO" STATUS SIZE ...`).
pub(crate) fn blob_gets(reg: &Registry, blob_path: &str) -> Vec<(u16, u64)> {
    reg.log()
        .lines()
        .filter(|l| l.contains(&format!("\"GET {blob_path} ")))
        .filter_map(|l| {
            let (_, after) = l.split_once(&format!("\"GET {blob_path} "))?;
            let (_, after) = after.split_once("\" ")?;
            let mut fields = after.split_whitespace();
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect()
}

/// A GET of `range`, with the moment it ended.
fn ranged_get(url: &str, range: &str) -> (HttpResponse, Instant) {
    let r = fetch("GET", url, &[("Range", range)]);
    (r, Instant::now())
}

/// A cold 32 MiB blob behind an upstream paced to 4 MiB/s (8 s for the whole): a suffix range
/// asked first (it leads the fetch), then a full GET that follows the same fetch, then ranges
/// at the start, middle and end. Every range gets its bytes and ends before the full GET does;
/// the full GET gets the whole blob; the store holds it verified and a later GET is a hit; the
/// upstream sent the blob once plus the ranges that were ahead of the fetch.
#[test]
fn cold_ranges_come_before_the_whole_blob_which_still_lands_verified() {
    let reg = Registry::start(RegistryAuth::None);
    let data = pseudo_random_bytes("acr-lazy-ranges", 32 * MIB);
    let size = data.len();
    let image = push_image(&reg, "library/lazy", "1", vec![data.clone()]);
    let (digest, _) = image.layers[0].clone();
    let relay = Relay::start(reg.addr(), 4 << 20);
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(
        &relay.url(),
        &[&cache_setting(cache.path())],
    ));
    let blob_path = format!("/v2/library/lazy/blobs/{digest}");
    let url = format!("{}{blob_path}", acr.url());

    // The suffix range leads: the blob's size is not known yet.
    let suffix = {
        let url = url.clone();
        thread::spawn(move || ranged_get(&url, "bytes=-1000"))
    };
    assert!(
        wait_until(Duration::from_secs(20), || !temp_files(cache.path())
            .is_empty()),
        "the fetch never started: {}",
        acr.log()
    );
    let full = {
        let (url, data) = (url.clone(), data.clone());
        thread::spawn(move || {
            let got = stream_get(&url, &[], Some(&data));
            (got, Instant::now())
        })
    };
    let ranges = [
        (0, MIB),
        (size / 2, size / 2 + MIB),
        (size - MIB - 17, size - 17),
    ];
    let readers: Vec<_> = ranges
        .iter()
        .map(|&(from, to)| {
            let url = url.clone();
            thread::spawn(move || ranged_get(&url, &format!("bytes={from}-{}", to - 1)))
        })
        .collect();

    let mut answered = vec![(suffix.join().expect("suffix"), size - 1000, size)];
    for ((from, to), reader) in ranges.into_iter().zip(readers) {
        answered.push((reader.join().expect("range"), from, to));
    }
    let (whole, whole_ended) = full.join().expect("full GET");
    assert!(
        whole.status == 200 && whole.end.is_ok() && whole.matches,
        "the full GET: {} {:?}",
        whole.status,
        whole.end
    );
    for ((r, ended), from, to) in &answered {
        assert_eq!(r.status, 206, "{from}-{to}: {}", r.text());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {from}-{}/{size}", to - 1).as_str())
        );
        assert!(r.body == data[*from..*to], "{from}-{to}: wrong bytes");
        assert!(
            ended < &whole_ended,
            "the range {from}-{to} waited for the whole blob"
        );
    }

    // The blob is in the store, verified, and the next client is a hit.
    assert!(wait_until(Duration::from_secs(20), || has_blob(
        cache.path(),
        &digest
    )));
    assert_eq!(assert_store_verifies(cache.path()), 1);
    let gets_before = blob_gets(&reg, &blob_path).len();
    let again = stream_get(&url, &[], Some(&data));
    assert!(again.status == 200 && again.matches);
    let r = fetch("GET", &url, &[("Range", "bytes=5-9")]);
    assert_eq!((r.status, &r.body[..]), (206, &data[5..10]));
    assert_eq!(blob_gets(&reg, &blob_path).len(), gets_before);

    // The upstream sent the whole blob once, plus the ranges ahead of the fetch (the suffix,
    // the middle and the end): the start was read from the fetch.
    let gets = blob_gets(&reg, &blob_path);
    let whole_gets: Vec<_> = gets.iter().filter(|(s, _)| *s == 200).collect();
    let parts: Vec<_> = gets.iter().filter(|(s, _)| *s == 206).collect();
    assert_eq!(whole_gets, [&(200, size as u64)], "{gets:?}");
    assert_eq!(parts.len(), 3, "{gets:?}");
    let sent: u64 = gets.iter().map(|(_, n)| n).sum();
    assert_eq!(sent, size as u64 + 1000 + 2 * MIB as u64, "{gets:?}");
}

/// The first client of a cold blob gets its part before the whole fetch starts, but a client
/// that asks for a large part and stops reading does not hold the whole fetch back: it starts
/// after a bounded wait (half a second), and the blob lands in the store, verified, while that
/// client still sits on its unread part.
#[test]
fn a_client_that_stops_reading_its_part_does_not_hold_back_the_whole_blob() {
    use std::io::{Read, Write};
    let reg = Registry::start(RegistryAuth::None);
    let data = pseudo_random_bytes("acr-lazy-stalled-part", 32 * MIB);
    let image = push_image(&reg, "library/stalled", "1", vec![data]);
    let (digest, _) = image.layers[0].clone();
    let cache = temp_dir("acr-store-");
    let acr = Acr::start(&store_pipeline(&reg.url(), &[&cache_setting(cache.path())]));
    let blob_path = format!("/v2/library/stalled/blobs/{digest}");

    // 24 MiB asked, the status line read, nothing more: the part stalls in the socket buffers.
    let mut client = std::net::TcpStream::connect(acr.host()).expect("connect to acr");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        client,
        "GET {blob_path} HTTP/1.1\r\nHost: {}\r\nRange: bytes=0-{}\r\n\r\n",
        acr.host(),
        24 * MIB - 1
    )
    .unwrap();
    let mut head = [0u8; 12];
    client
        .read_exact(&mut head)
        .expect("the part's status line");
    assert_eq!(&head, b"HTTP/1.1 206", "{}", String::from_utf8_lossy(&head));

    assert!(
        wait_until(Duration::from_secs(15), || has_blob(cache.path(), &digest)),
        "the whole blob waited for a client that stopped reading its part: {}",
        acr.log()
    );
    assert_eq!(assert_store_verifies(cache.path()), 1);
    // The upstream sent the part (as far as the client's stall let it) and the whole blob once.
    let gets = blob_gets(&reg, &blob_path);
    assert_eq!(
        gets.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{gets:?}"
    );
    drop(client);
}
