//! The public keys `.verify cosign KEY...` trusts: PEM `PUBLIC KEY` files (what
//! `cosign generate-key-pair` and `openssl pkey -pubout` write), read when the file is
//! compiled, and the one place a signature is checked against them (with `ring`).
//!
//! A PEM block holds a SubjectPublicKeyInfo (DER); `ring` wants the key inside it (the EC
//! point, the 32 Ed25519 bytes, the PKCS#1 `RSAPublicKey`), so [`parse_spki`] walks the few
//! DER elements around it. Only parsing is done here; the signature math is `ring`'s.

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

/// A key file larger than this is not a public key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The kinds of key cosign makes and accepts that acr verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa { modulus_bytes: usize },
    Ed25519,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ECDSA P-256",
            KeyKind::Rsa { .. } => "RSA",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

/// One trusted public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub kind: KeyKind,
    /// The key `ring` takes: the EC point, the Ed25519 bytes, the PKCS#1 `RSAPublicKey`.
    raw: Vec<u8>,
    /// Where it was read from, for messages.
    pub file: PathBuf,
}

impl TrustedKey {
    /// Whether `signature` is this key's over `payload`. RSA accepts PKCS#1 v1.5 and PSS,
    /// both SHA-256 (cosign signs RSA keys with the first).
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        let algorithms: &[&'static dyn VerificationAlgorithm] = match self.kind {
            KeyKind::EcdsaP256 => &[&signature::ECDSA_P256_SHA256_ASN1],
            KeyKind::Ed25519 => &[&signature::ED25519],
            KeyKind::Rsa { .. } => &[
                &signature::RSA_PKCS1_2048_8192_SHA256,
                &signature::RSA_PSS_2048_8192_SHA256,
            ],
        };
        algorithms.iter().any(|alg| {
            UnparsedPublicKey::new(*alg, &self.raw)
                .verify(payload, signature)
                .is_ok()
        })
    }

    /// Whether `signature` has the shape of one this key could make (an ASN.1 ECDSA
    /// signature, 64 Ed25519 bytes, as many bytes as the RSA modulus): a signature of another
    /// shape was not made with this key's algorithm, or was damaged.
    pub fn could_have_made(&self, signature: &[u8]) -> bool {
        match self.kind {
            KeyKind::Ed25519 => signature.len() == 64,
            KeyKind::Rsa { modulus_bytes } => signature.len() == modulus_bytes,
            KeyKind::EcdsaP256 => is_ecdsa_der(signature),
        }
    }

    /// What tells this key from another: its algorithm's name and the key itself.
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut f = self.kind.name().as_bytes().to_vec();
        f.extend_from_slice(&self.raw);
        f
    }

    /// `ECDSA P-256 key /etc/acr/release.pub`.
    pub fn describe(&self) -> String {
        format!("{} key {}", self.kind.name(), self.file.display())
    }
}

/// `SEQUENCE { INTEGER r, INTEGER s }`, nothing after it.
fn is_ecdsa_der(sig: &[u8]) -> bool {
    let mut outer = Der(sig);
    let Some((0x30, body)) = outer.next() else {
        return false;
    };
    let mut inner = Der(body);
    matches!(
        (inner.next(), inner.next(), inner.0.is_empty(), outer.0.is_empty()),
        (Some((0x02, r)), Some((0x02, s)), true, true) if !r.is_empty() && !s.is_empty() && r.len() <= 33 && s.len() <= 33
    )
}

/// Reads the keys of `file` (relative paths against `base`): every `PUBLIC KEY` block in it.
pub fn load_key_file(file: &str, base: &Path) -> Result<Vec<TrustedKey>, String> {
    let path = if Path::new(file).is_absolute() {
        PathBuf::from(file)
    } else {
        base.join(file)
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{} is not a public key file (a PEM file of at most {MAX_KEY_FILE_BYTES} bytes)",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    let ders = pem_public_keys(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    ders.iter()
        .map(|der| {
            parse_spki(der)
                .map(|(kind, raw)| TrustedKey {
                    kind,
                    raw,
                    file: path.clone(),
                })
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect()
}

/// The DER of each `-----BEGIN PUBLIC KEY-----` block of `text`.
pub fn pem_public_keys(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        if label.contains("PRIVATE") {
            return Err("this is a private key: give acr the public key (`cosign.pub`, or `openssl pkey -pubout`)".into());
        }
        if label != "PUBLIC KEY" {
            return Err(format!(
                "a PEM `{label}` block: acr reads `PUBLIC KEY` blocks (SubjectPublicKeyInfo)"
            ));
        }
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l == end {
                closed = true;
                break;
            }
            b64.push_str(l);
        }
        if !closed {
            return Err(format!("the PEM block has no `{end}` line"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| format!("the PEM block is not base64: {e}"))?;
        keys.push(der);
    }
    if keys.is_empty() {
        return Err("no `-----BEGIN PUBLIC KEY-----` block: not a PEM public key".into());
    }
    Ok(keys)
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// The kind and the raw key of a DER SubjectPublicKeyInfo:
/// `SEQUENCE { SEQUENCE { OID algorithm, parameters }, BIT STRING key }`.
pub fn parse_spki(der: &[u8]) -> Result<(KeyKind, Vec<u8>), String> {
    let bad = |what: &str| format!("not a SubjectPublicKeyInfo: {what}");
    let mut outer = Der(der);
    let Some((0x30, spki)) = outer.next() else {
        return Err(bad("no outer SEQUENCE"));
    };
    if !outer.0.is_empty() {
        return Err(bad("bytes after the key"));
    }
    let mut fields = Der(spki);
    let (Some((0x30, algorithm)), Some((0x03, bits))) = (fields.next(), fields.next()) else {
        return Err(bad("no algorithm and key"));
    };
    let mut alg = Der(algorithm);
    let Some((0x06, oid)) = alg.next() else {
        return Err(bad("no algorithm OID"));
    };
    let params = alg.next();
    let Some((&0, key)) = bits.split_first() else {
        return Err(bad("the key is not a whole number of bytes"));
    };
    if oid == OID_EC_PUBLIC_KEY {
        match params {
            Some((0x06, curve)) if curve == OID_P256 => {}
            _ => return Err("an EC key on a curve other than P-256: acr verifies ECDSA P-256, RSA and Ed25519 keys".into()),
        }
        if key.len() != 65 || key[0] != 0x04 {
            return Err(bad("the P-256 point is not an uncompressed point"));
        }
        return Ok((KeyKind::EcdsaP256, key.to_vec()));
    }
    if oid == OID_ED25519 {
        if key.len() != 32 {
            return Err(bad("an Ed25519 key is 32 bytes"));
        }
        return Ok((KeyKind::Ed25519, key.to_vec()));
    }
    if oid == OID_RSA {
        let mut rsa = Der(key);
        let Some((0x30, body)) = rsa.next() else {
            return Err(bad("the RSA key is not an RSAPublicKey"));
        };
        let mut ints = Der(body);
        let (Some((0x02, modulus)), Some((0x02, _exponent))) = (ints.next(), ints.next()) else {
            return Err(bad("the RSA key has no modulus and exponent"));
        };
        let modulus_bytes = modulus.iter().skip_while(|b| **b == 0).count();
        if !(256..=1024).contains(&modulus_bytes) {
            return Err(format!(
                "an RSA key of {} bits: acr verifies RSA keys of 2048 to 8192 bits",
                modulus_bytes * 8
            ));
        }
        return Ok((KeyKind::Rsa { modulus_bytes }, key.to_vec()));
    }
    Err("a key of an algorithm acr does not verify: it verifies ECDSA P-256, RSA and Ed25519 keys (what cosign makes)".into())
}

/// DER elements one after another: `(tag, contents)`; `None` at the end or on a malformed
/// length (indefinite and over-long lengths included).
struct Der<'a>(&'a [u8]);

impl<'a> Iterator for Der<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                self.0 = &[];
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, &rest[n..])
        };
        if rest.len() < len {
            self.0 = &[];
            return None;
        }
        let (contents, after) = rest.split_at(len);
        self.0 = after;
        Some((tag, contents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key (`openssl ecparam -name prime256v1 -genkey | openssl pkey -pubout`).
    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfosyApqKdOD54tpa+yXsZAD8G/nb
JPtyMUvkys0TqULAROJIsGl6+ON03CnWTBvCN7niKr08uDFi1Sh1XFtnKg==
-----END PUBLIC KEY-----
";
    /// An Ed25519 key (`openssl genpkey -algorithm ed25519 | openssl pkey -pubout`).
    const ED25519_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEASxFhKVRywQgWp57+zSpWYBY8wBQZIKy1FZ2b+i7yqP0=
-----END PUBLIC KEY-----
";
    /// An RSA 2048 key and a P-384 key (which acr does not verify).
    const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArRedXtByoaCooCLZWrai
XECTgwbzI0s4oamH2GID9s01Jllj2/LytzqbrIMN7bOWvR/aaGa17iKK7IJqnqZa
tjU+4slhU4I//pb7CqOUVC3boScMeIeCx+5RTc4igshLIUzDqrI5OKazmfBuhHtK
jmBXfs2SRKYCZF1f9Xw6bnKv4g6qWS/K4JxYF53q8aCeluTnr1ghaPej7RFMMx0I
ahLW2frtxAXu63fr32dDlQL2tUr2AX6WL0iGpOQBF63tWHIgTaw7vnkSBcpXwUcA
QJtmdQclhmGucO4GW5f992DV/4FZ4iuR6NiO8Sl4ty1ukkPKK04AqFB8VVp6werm
5QIDAQAB
-----END PUBLIC KEY-----
";
    const P384_PEM: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEpC6OYKQy/oLNg4gzM7/1HAumwTnKXMVx
tQmWCxrFrky21iXdTCe5fCvPoJekvIWOF+WC3/JRbJ9jYQ1Q/OaiyWUHt5BcJvRZ
6pfT0f0cFcaZFEsTh76oc7dokHdagu+T
-----END PUBLIC KEY-----
";

    #[test]
    fn rsa_keys_are_read_and_p384_is_refused() {
        let der = &pem_public_keys(RSA_PEM).unwrap()[0];
        let (kind, _) = parse_spki(der).unwrap();
        assert_eq!(kind, KeyKind::Rsa { modulus_bytes: 256 });
        let der = &pem_public_keys(P384_PEM).unwrap()[0];
        let e = parse_spki(der).unwrap_err();
        assert!(e.contains("other than P-256"), "{e}");
    }

    #[test]
    fn p256_and_ed25519_keys_are_read() {
        let der = &pem_public_keys(P256_PEM).unwrap()[0];
        let (kind, raw) = parse_spki(der).unwrap();
        assert_eq!(kind, KeyKind::EcdsaP256);
        assert_eq!((raw.len(), raw[0]), (65, 4));
        let der = &pem_public_keys(ED25519_PEM).unwrap()[0];
        let (kind, raw) = parse_spki(der).unwrap();
        assert_eq!((kind, raw.len()), (KeyKind::Ed25519, 32));
    }

    #[test]
    fn what_is_not_a_public_key_says_why() {
        let e = pem_public_keys("hello").unwrap_err();
        assert!(e.contains("not a PEM public key"), "{e}");
        let e = pem_public_keys("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
        assert!(e.contains("private key"), "{e}");
        let e = pem_public_keys("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(e.contains("CERTIFICATE"), "{e}");
        let e = pem_public_keys("-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap_err();
        assert!(e.contains("no `-----END"), "{e}");
        assert!(parse_spki(&[0x30, 0x03, 0x02, 0x01]).is_err());
        assert!(parse_spki(&[]).is_err());
    }

    #[test]
    fn ecdsa_signatures_are_recognised_by_shape() {
        let key = TrustedKey {
            kind: KeyKind::EcdsaP256,
            raw: vec![4; 65],
            file: PathBuf::from("k"),
        };
        assert!(key.could_have_made(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]));
        assert!(!key.could_have_made(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01]));
        assert!(!key.could_have_made(b"not a signature"));
        assert!(!key.verifies(
            b"payload",
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]
        ));
    }
}
