//! Fuzzes request routing: `acr::server::route::parse(method, path)` and the query-string
//! decoding (`query_pairs`, `query_value`).
//!
//! Input: `METHOD\nPATH[?QUERY]` (no newline: the whole input is the path of a GET). The path
//! reaches `parse` as hyper hands it over (before `?`), the query goes to the query functions.
//!
//! Properties: never a panic; parsing is deterministic; an accepted request names a valid
//! repository (`is_repository`) with no `.`/`..` segment, a reference valid for its resource
//! and a method the resource serves, and its parts put back together give the path; a refusal
//! is a 4xx OCI error; `query_value` finds the first pair `query_pairs` decodes.

#![no_main]

use acr::server::route::{self, Target};
use acr_plugins::oci::reference::is_repository;
use acr_plugins::oci::{Digest, Reference};
use acr_plugins::registry::{Method, Resource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (method, target) = input.split_once('\n').unwrap_or(("GET", input));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let first = route::parse(method, path);
    let again = route::parse(method, path);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "not deterministic"),
        (Err(a), Err(b)) => assert_eq!(
            (a.status, a.code, &a.message),
            (b.status, b.code, &b.message),
            "not deterministic"
        ),
        _ => panic!("not deterministic: {first:?} vs {again:?}"),
    }

    match first {
        Ok(Target::Base) => {
            assert!(path == "/v2" || path == "/v2/", "Base for {path:?}");
            assert!(method == "GET" || method == "HEAD", "Base for method {method:?}");
        }
        Ok(Target::Api {
            method: m,
            resource,
            name,
            reference,
        }) => {
            assert!(is_repository(&name), "accepted an invalid name {name:?}");
            assert!(
                name.split('/').all(|s| s != ".." && s != "." && !s.is_empty()),
                "accepted a traversal in {name:?}"
            );
            assert!(!name.contains('\\') && !name.contains('%'), "{name:?}");
            assert_eq!(m.as_http(), method);
            assert!(resource.methods().contains(&m), "{m:?} on {resource:?}");
            let rebuilt = match resource {
                Resource::Tags => {
                    assert!(reference.is_empty());
                    format!("/v2/{name}/tags/list")
                }
                Resource::Manifests => {
                    assert!(Reference::parse(&reference).is_ok(), "{reference:?}");
                    format!("/v2/{name}/manifests/{reference}")
                }
                Resource::Blobs | Resource::Referrers => {
                    assert!(Digest::parse(&reference).is_ok(), "{reference:?}");
                    format!("/v2/{name}/{}/{reference}", resource.name())
                }
            };
            assert_eq!(rebuilt, path);
            assert!(matches!(m, Method::Get | Method::Head));
        }
        Err(e) => {
            assert!((400..500).contains(&e.status), "status {} for {path:?}", e.status);
            assert!(!e.code.is_empty());
        }
    }

    let pairs = route::query_pairs(query);
    assert_eq!(
        pairs.len(),
        query.split('&').filter(|p| !p.is_empty()).count()
    );
    for (key, _) in pairs.iter().take(8) {
        let expected = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(route::query_value(query, key), expected);
    }
    let _ = route::query_value(query, "ns");
});
