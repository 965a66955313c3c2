//! Azure Container Registry without Azure, for `tests/mirror/acr.rs`:
//!
//! * [`AcrStandin`] runs `tests/support/acr_standin.py`: Azure AD (client secret, workload
//!   identity, managed identity) and ACR's token service (`/oauth2/exchange`,
//!   `/oauth2/token`) on one port, which also forwards `/v2/` to a CNCF distribution, so that
//!   one address is the whole "login server" as with a real registry;
//! * [`AcrRegistry`] is that stand-in plus the distribution behind it (token auth whose
//!   realm is the stand-in), with helpers to seed images, streaming links and referrers;
//! * [`AcrMirror`] is acr as a user runs it: `acr --registry example --registry-host URL
//!   init`, then `mirror start` in the same directory, with the stand-in `az`
//!   (`tests/support/az`) on PATH, or none.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::harness::*;

mod aad;
mod mirror;
mod registry;

// Each area binary uses a part of the stand-in.
#[allow(unused_imports)]
pub use {aad::*, mirror::*, registry::*};

/// The tenant the stand-in AAD knows.
pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
/// An app registration with a client secret (also what the stand-in `az` logs in as).
pub const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
pub const CLIENT_SECRET: &str = "standin-client-secret";
/// An app that takes a federated (workload identity) assertion.
pub const WI_CLIENT_ID: &str = "bbbbbbbb-cccc-dddd-eeee-ffffffffffff";
/// The ACR admin user the tests push with (Basic at `/oauth2/token`).
pub const ADMIN_USER: &str = "acradmin";
pub const ADMIN_PASS: &str = "Adm1n-pa55word";
/// distribution's `auth.token.service` (the JWT audience) and issuer.
pub const STANDIN_SERVICE: &str = "acr-standin";
pub const STANDIN_ISSUER: &str = "acr-standin-issuer";
/// The user name that goes with an ACR refresh token.
pub const TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";
/// The registry name given to `acr --registry`.
pub const REGISTRY_NAME: &str = "example";
/// ACR artifact streaming's link artifact type.
pub const LINK_TYPE: &str = "application/vnd.azure.artifact.streaming.link.v1";
/// A referrer that is not a streaming link.
pub const SIGNATURE_TYPE: &str = "application/vnd.example.signature.v1";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The header containerd sends to acr (from hosts.toml) to ask for a streamable twin.
pub const STREAMABLE_HEADER: &str = "x-ms-upgrade-if-streamable";

/// Generous, for a shared 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

pub fn standin_script() -> PathBuf {
    repo_root().join("tests/support/acr_standin.py")
}

pub fn az_script() -> PathBuf {
    repo_root().join("tests/support/az")
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    base64(data)
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string()
}

/// Decodes base64 or base64url, with or without padding.
pub fn b64decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The claims of a JWT (`header.claims.signature`), or `None` when it is not one.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.trim().split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    serde_json::from_slice(&b64decode(claims)?).ok()
}

/// The federated (Kubernetes service account) token the stand-in AAD accepts for
/// [`WI_CLIENT_ID`]: JWT-shaped, as the projected token file holds.
pub fn federated_assertion() -> String {
    let header = br#"{"alg":"RS256","kid":"standin-sa-key"}"#;
    let claims = br#"{"aud":["api://AzureADTokenExchange"],"iss":"https://oidc.standin.example/","sub":"system:serviceaccount:default:acr"}"#;
    format!(
        "{}.{}.{}",
        b64url(header),
        b64url(claims),
        b64url(b"standin-signature")
    )
}
