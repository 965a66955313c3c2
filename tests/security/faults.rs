//! Faults around acr's content store that the other fault tests do not cover: a real upstream
//! killed in the middle of a 64 MiB blob (and back again), an upstream that trickles a blob one
//! byte a second, an upstream answering 500, 429 and 503 (with short and long `Retry-After`),
//! and a store on a full disk.
//!
//! Every test starts its own upstream and its own acr (own port, own temp dirs), so they run
//! in parallel.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::faults::*;
use crate::harness::store::*;
use crate::harness::*;

mod full_disk;
mod killed_upstream;
mod status_codes;
mod trickle;

const MIB: usize = 1 << 20;

/// What a blob GET got: status and headers, how many body bytes arrived, how the body ended,
/// whether the bytes are the expected ones, and the body itself when it is an error (status
/// ≥ 400).
struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    len: u64,
    end: Result<(), String>,
    matches: bool,
    error_body: String,
    /// From the request to the first body byte (or the end, without one).
    first_byte: Option<Duration>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A 200 whose body arrived to its end, every byte as expected.
    fn is_whole(&self) -> bool {
        self.status == 200 && self.end.is_ok() && self.matches
    }

    /// Asserts [`Fetched::is_whole`]; `what` (and `log`, when not empty) say which fetch.
    #[track_caller]
    fn assert_whole(&self, what: &str, log: &str) {
        assert!(self.is_whole(), "{what}: {}\n{log}", self.describe());
    }

    fn describe(&self) -> String {
        format!(
            "status {}, {} body bytes, end {:?}, bytes right: {}, Content-Length {:?}{}",
            self.status,
            self.len,
            self.end,
            self.matches,
            self.header("content-length"),
            if self.error_body.is_empty() {
                String::new()
            } else {
                format!(", body {:?}", self.error_body)
            }
        )
    }
}

/// GETs `url`, comparing the body with `expected` as it streams (never holding it whole).
fn fetch_blob(url: &str, headers: &[(&str, &str)], expected: &[u8]) -> Fetched {
    let started = Instant::now();
    let resp = match get_streaming(url, headers) {
        Ok(r) => r,
        Err(e) => {
            return Fetched {
                status: 0,
                headers: vec![],
                len: 0,
                end: Err(e.to_string()),
                matches: false,
                error_body: String::new(),
                first_byte: None,
            }
        }
    };
    let status = resp.status();
    let headers: Vec<(String, String)> = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut reader = resp.into_reader();
    if status >= 400 {
        let mut body = Vec::new();
        let end = reader
            .read_to_end(&mut body)
            .map(|_| ())
            .map_err(|e| e.to_string());
        return Fetched {
            status,
            headers,
            len: body.len() as u64,
            end,
            matches: false,
            error_body: String::from_utf8_lossy(&body).into_owned(),
            first_byte: Some(started.elapsed()),
        };
    }
    let mut buf = vec![0u8; 256 << 10];
    let mut len = 0u64;
    let mut matches = true;
    let mut first_byte = None;
    let end = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(k) => {
                first_byte.get_or_insert_with(|| started.elapsed());
                let at = len as usize;
                matches &= expected.get(at..at + k) == Some(&buf[..k]);
                len += k as u64;
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    matches &= len == expected.len() as u64;
    Fetched {
        status,
        headers,
        len,
        end,
        matches,
        error_body: String::new(),
        first_byte,
    }
}

/// The lines of acr's log that contain `needle`.
fn log_lines(acr: &Acr, needle: &str) -> Vec<String> {
    acr.log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A GET that must answer 200 within `limit`; returns the body.
#[track_caller]
fn prompt_get(acr: &Acr, path: &str, headers: &[(&str, &str)], limit: Duration) -> Vec<u8> {
    let started = Instant::now();
    let r = try_http_request("GET", &format!("{}{path}", acr.url()), headers, None)
        .unwrap_or_else(|e| panic!("{e}\n{}", acr.log()));
    let took = started.elapsed();
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert!(
        took < limit,
        "GET {path} took {took:?} (limit {limit:?})\n{}",
        acr.log()
    );
    r.body
}
