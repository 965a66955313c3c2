//! Digests and small encoders (hex, base64, Basic auth) and deterministic pseudo-random
//! bytes.

use std::fmt;

use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------------------------
// digests and small encoders

pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// `sha256:<hex>` of `data`, as registries name manifests and blobs.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(T[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Basic <base64(user:pass)>`.
pub fn basic_auth(user: &str, pass: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()))
}

/// Deterministic, incompressible bytes: SplitMix64 seeded from sha256(label).
/// (Cheap enough for hundreds of MiB even in debug builds.)
pub fn pseudo_random_bytes(label: &str, len: usize) -> Vec<u8> {
    let seed = Sha256::digest(label.as_bytes());
    let mut state = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `s` as a JSON string literal. That is also a valid YAML double-quoted scalar and, for
/// the paths and URLs written here, a valid TOML basic string.
pub(super) fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("string to json")
}
