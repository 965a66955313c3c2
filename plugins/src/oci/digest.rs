//! Content digests: `sha256:<64 hex>`, the only algorithm acr verifies.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// A `sha256:<64 hex>` digest (the only algorithm acr verifies; others are refused).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let Some((alg, hex)) = text.split_once(':') else {
            return Err("a digest is ALGORITHM:HEX");
        };
        if alg != "sha256" {
            return Err("only sha256 digests are supported");
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("a sha256 digest has 64 lowercase hex digits");
        }
        Ok(Self {
            hex: hex.to_string(),
        })
    }

    pub fn of(bytes: &[u8]) -> Self {
        use sha2::{Digest as _, Sha256};
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The digest of a finished sha256.
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self {
            hex: hex::encode(hash),
        }
    }

    pub fn from_hex(hex: String) -> Self {
        Self { hex }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Reads `reader` to its end and writes what it reads to `out` (`io::sink()` to only hash):
/// the digest and the length of the bytes. Past `limit` bytes it stops with
/// `io::ErrorKind::FileTooLarge`, before hashing or writing more.
pub fn copy_hashing(
    mut reader: impl Read,
    mut out: impl Write,
    limit: u64,
) -> io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    Ok((Digest::from_sha256(hasher.finalize().into()), total))
}
