//! Fuzzes `WWW-Authenticate` parsing (`acr_plugins::registry::challenge::parse`): upstream
//! registries and their proxies send these headers, so any text must parse.
//!
//! Properties: never a panic; every scheme is non-empty and lowercase, every parameter name
//! non-empty and lowercase; parsing is deterministic. The header is also parsed joined with
//! itself (`", "`), the way several headers are joined before parsing (registry/client.rs).

#![no_main]

use acr_plugins::registry::challenge;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let challenges = challenge::parse(header);
    for c in &challenges {
        assert!(!c.scheme.is_empty(), "empty scheme in {challenges:?}");
        assert!(
            !c.scheme.bytes().any(|b| b.is_ascii_uppercase()),
            "scheme not lowercase: {:?}",
            c.scheme
        );
        assert!(!c.scheme.contains([' ', '\t', ',', '=', '"']), "{:?}", c.scheme);
        for name in c.params.keys() {
            assert!(!name.is_empty(), "empty parameter name in {c:?}");
            assert!(
                !name.bytes().any(|b| b.is_ascii_uppercase()),
                "parameter name not lowercase: {name:?}"
            );
        }
        assert_eq!(c.is_bearer(), c.scheme == "bearer");
        assert_eq!(c.is_basic(), c.scheme == "basic");
        for (k, v) in &c.params {
            assert_eq!(c.param(k), Some(v.as_str()));
        }
    }
    assert_eq!(challenges, challenge::parse(header), "not deterministic");
    // Several headers are joined with ", " before parsing (registry/client.rs).
    let joined = format!("{header}, {header}");
    let _ = challenge::parse(&joined);
});
