//! Real-component test harness for acr's integration tests and benchmarks.
//!
//! Everything here drives real programs installed from Debian by `scripts/deps.sh`:
//! CNCF distribution (`docker-registry`), `skopeo`, `umoci`, `containerd`/`ctr`, `podman`,
//! `htpasswd`, `openssl` and `python3` (for `tests/support/tokenserver.py`).
//!
//! Isolation rules, so that tests can run in parallel (cargo nextest runs every test in its
//! own process, `cargo test` runs them on threads):
//! * every server listens on 127.0.0.1 on a free port and keeps all its files in its own
//!   temporary directory;
//! * every child process is started in its own process group; the owning value kills the
//!   whole group on `Drop` (also while a test unwinds from a panic), and the children get
//!   `PR_SET_PDEATHSIG` = SIGKILL so they die with the test process even if it is killed;
//! * the deterministic test images are built once per target dir (under
//!   `CARGO_TARGET_TMPDIR/acr-fixtures`), guarded by a lock file.
//!
//! Every area binary (`tests/<area>/main.rs`) includes it with
//! `#[path = "../harness/mod.rs"] mod harness;`.

mod acr;
pub mod acr_standin;
mod azurite;
pub mod bounds;
pub mod faults;
pub mod inject;
pub mod production;
pub mod store;

mod clients;
pub mod cosign;
mod encode;
mod fake_upstream;
mod http;
mod images;
mod pipelines;
mod process;
mod registry;
mod s3;
mod seed;
mod shared_store;
mod tokenserver;
mod tools;

// What a test gets with `use crate::harness::*`; each area binary uses a part of it.
#[allow(unused_imports)]
pub use {
    acr::*, azurite::*, clients::*, encode::*, fake_upstream::*, http::*, images::*, pipelines::*,
    process::*, registry::*, s3::*, seed::*, shared_store::*, tokenserver::*, tools::*,
};

use std::time::Duration;

// ------------------------------------------------------------------------------------------
// constants

/// The timestamp every file and image in the fixtures carries.
pub const EPOCH: &str = "2000-01-01T00:00:00Z";
/// Bump when the recipe of the fixture images changes, so caches are rebuilt.
pub const FIXTURES_VERSION: &str = "v1";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// An `Accept` header value that takes every manifest type the fixtures use.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Service name the token-auth registries are configured with (the JWT audience).
pub const TOKEN_SERVICE: &str = "acr-test-registry";
/// Issuer the token server signs with and the registries trust.
pub const TOKEN_ISSUER: &str = "acr-test-issuer";

/// Contents of `/hello.txt` in `test:1`.
pub const TEST_HELLO: &str = "hello from the acr test image test:1\n";

const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(20);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

// ------------------------------------------------------------------------------------------
// checks of the pure helpers (called from tests/selftest)

/// Checks the small pure helpers; call from a test.
pub fn check_pure_helpers() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"testuser:testpass"), "dGVzdHVzZXI6dGVzdHBhc3M=");
    assert_eq!(
        digest_of(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(pseudo_random_bytes("x", 100), pseudo_random_bytes("x", 100));
    assert_ne!(pseudo_random_bytes("x", 100), pseudo_random_bytes("y", 100));
    let e = parse_access_line(
        "127.0.0.1 - testuser [29/Nov/2026:18:31:56 +0000] \"HEAD /v2/library/test/manifests/1?ns=docker.io HTTP/1.1\" 200 0 \"\" \"containerd/1.6.20~ds1\"",
    )
    .expect("parses");
    assert_eq!(e.method, "HEAD");
    assert_eq!(e.path, "/v2/library/test/manifests/1?ns=docker.io");
    assert_eq!(e.status, 200);
    assert_eq!(e.user_agent, "containerd/1.6.20~ds1");
    assert!(parse_access_line("time=\"x\" level=info msg=\"listening on 127.0.0.1:1\"").is_none());
}
