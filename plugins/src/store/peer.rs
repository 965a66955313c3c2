//! Requests between replicas: a replica that holds a blob's lease (see `lease`) serves the
//! bytes it is receiving at `GET /_acr/peer/blobs/sha256:<hex>`, and the others read them there.
//!
//! Only replicas may ask: a request carries `x-acr-peer: <expiry>.<mac>`, an HMAC-SHA256 of the
//! digest and the expiry (seconds since the epoch) under a key derived from the shared
//! `: .token-secret`. A token is good for one digest and at most [`TOKEN_LIFETIME`], so one
//! seen on the wire opens nothing else. The bytes themselves are verified against the digest by
//! the reader, like an upstream's: a peer is not trusted with content.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::TryStreamExt;
use ring::hmac;

use crate::clock::now_secs;
use crate::oci::BodyStream;

/// The header that carries a peer token.
pub const HEADER: &str = "x-acr-peer";

/// How long a peer token is good for.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// How long a replica waits for a peer to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The path of the peer endpoint for a blob.
pub fn path(hex: &str) -> String {
    format!("/_acr/peer/blobs/sha256:{hex}")
}

/// The key peer tokens are signed with, from the shared token secret (never the secret itself,
/// so a peer token cannot be mistaken for a client token).
pub fn derive_key(secret: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::sign(&key, b"acr peer key v1").as_ref().to_vec()
}

fn mac(key: &[u8], hex: &str, expires: u64) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, format!("blob sha256:{hex} {expires}").as_bytes())
}

/// A token for reading the blob `hex` from a peer, good for [`TOKEN_LIFETIME`].
pub fn token(key: &[u8], hex: &str) -> String {
    let expires = now_secs() + TOKEN_LIFETIME.as_secs();
    format!("{expires}.{}", hex::encode(mac(key, hex, expires)))
}

/// Whether `token` lets its bearer read the blob `hex` now.
pub fn verify(key: &[u8], hex: &str, token: &str) -> bool {
    let Some((expires, given)) = token.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(given)) = (expires.parse::<u64>(), hex::decode(given)) else {
        return false;
    };
    let now = now_secs();
    if expires < now || expires > now + TOKEN_LIFETIME.as_secs() {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(
        &key,
        format!("blob sha256:{hex} {expires}").as_bytes(),
        &given,
    )
    .is_ok()
}

/// Why a peer could not give the bytes.
#[derive(Debug)]
pub enum PeerError {
    /// It answered that it has no such fetch: its lease is stale.
    NotThere,
    /// It could not be reached, or answered something else.
    Unreachable(String),
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

/// The blob `hex` from the peer at `base` (a lease's URL, which comes from the shared store and
/// is not trusted: only an http(s) URL is asked, with no redirect followed): its length when
/// the peer says, and the body.
pub async fn get(
    base: &str,
    hex: &str,
    key: &[u8],
) -> Result<(Option<u64>, BodyStream), PeerError> {
    let url = reqwest::Url::parse(base)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .and_then(|u| u.join(&path(hex)).ok())
        .ok_or_else(|| {
            PeerError::Unreachable(format!("a lease names '{base}', not an http(s) URL"))
        })?;
    let resp = client()
        .get(url)
        .header(HEADER, token(key, hex))
        .send()
        .await
        .map_err(|e| PeerError::Unreachable(format!("{base}: {e}")))?;
    match resp.status().as_u16() {
        200 => {}
        404 => return Err(PeerError::NotThere),
        s => return Err(PeerError::Unreachable(format!("{base} answered {s}"))),
    }
    let length = resp.content_length();
    let body = resp.bytes_stream().map_err(std::io::Error::other);
    Ok((length, Box::pin(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "aa";

    #[tokio::test]
    async fn a_lease_naming_anything_but_an_http_url_is_never_asked() {
        for base in [
            "file:///etc/passwd",
            "gopher://127.0.0.1:70/",
            "not a url",
            "http://",
        ] {
            match get(base, HEX, b"key").await {
                Err(PeerError::Unreachable(why)) => {
                    assert!(why.contains("not an http(s) URL"), "{base}: {why}")
                }
                other => panic!("{base}: {:?}", other.map(|(len, _)| len)),
            }
        }
    }

    #[test]
    fn a_token_opens_its_digest_only_and_only_with_the_key() {
        let key = derive_key(b"a shared secret of enough bytes");
        let t = token(&key, HEX);
        assert!(verify(&key, HEX, &t));
        assert!(!verify(&key, "bb", &t), "another digest");
        assert!(
            !verify(&derive_key(b"another secret......"), HEX, &t),
            "another key"
        );
        assert!(!verify(&key, HEX, "garbage"));
        assert!(!verify(&key, HEX, ""));
        let expired = format!(
            "{}.{}",
            now_secs() - 1,
            hex::encode(mac(&key, HEX, now_secs() - 1))
        );
        assert!(!verify(&key, HEX, &expired), "expired");
        let far = now_secs() + 3600;
        let too_long = format!("{far}.{}", hex::encode(mac(&key, HEX, far)));
        assert!(!verify(&key, HEX, &too_long), "longer than a token lives");
    }
}
