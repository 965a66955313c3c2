//! A blob copied down from the shared tier for a fetch's lead, verified whole before its
//! first byte is handed on: the shared store is not trusted, and a bad copy there must be
//! replaced by the upstream's within the same request. The copy waits in an unlinked
//! temporary file of the local disk tier; the stream handed on reads it, and single flight
//! (see `flight`) then commits it like an upstream's body.

use std::io;
use std::path::Path;

use super::local::file_stream;
use super::tier::ObjectKey;
use super::Store;
use crate::oci::{BodyStream, Digest};

impl Store {
    /// The blob from the shared tier, for a lead to copy down (the caller fetches from the
    /// upstream on `None`). Its stated size is checked against the room in the store before
    /// anything is read, the read stops at that size, and a body that does not hash to
    /// `digest` is deleted from the shared tier (and counted).
    pub async fn remote_blob(&self, digest: &Digest) -> Option<(u64, BodyStream)> {
        let shared = self.shared()?;
        let tier = shared.name();
        let key = ObjectKey::Blob(digest.hex());
        let (size, body) = match shared.open(key).await {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(digest = %digest, "the {tier} tier failed: {e}");
                return None;
            }
        };
        if let Err(e) = self.check_room(size.saturating_mul(2), size) {
            // Not stored from the shared tier; the upstream's answer is refused (or not) the
            // same way.
            tracing::warn!(digest = %digest, size, "not copying the blob down from {tier}: {}", e.message);
            return None;
        }
        let tmp = self.local.temp_path(digest.hex());
        match self.verify_remote_copy(body, size, digest, &tmp).await {
            Ok(file) => {
                let _ = std::fs::remove_file(&tmp);
                Some((
                    size,
                    file_stream(file, size, "the copy from S3 ended early"),
                ))
            }
            Err(RemoteCopy::Bad(why)) => {
                let _ = std::fs::remove_file(&tmp);
                self.shared_corrupt(key, digest, &why).await;
                // A local copy of what the shared tier held would be as bad; drop it too.
                self.forget_unread_blob(digest.hex());
                None
            }
            Err(RemoteCopy::Failed(e)) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(digest = %digest, "copying the blob down from {tier} failed: {e}");
                None
            }
        }
    }

    /// Writes `body` (the shared tier says `size` bytes) to `tmp`, hashing it; the file, rewound, when it
    /// is exactly `size` bytes that hash to `digest`.
    async fn verify_remote_copy(
        &self,
        mut body: BodyStream,
        size: u64,
        digest: &Digest,
        tmp: &Path,
    ) -> Result<std::fs::File, RemoteCopy> {
        use futures_util::StreamExt;
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt;
        let failed = |e: io::Error| RemoteCopy::Failed(e.to_string());
        // Read and write: the stream handed on reads this same file.
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .await
            .map_err(failed)?;
        let mut hasher = sha2::Sha256::new();
        let mut written = 0u64;
        let idle = self.config.idle_timeout;
        loop {
            let next = tokio::time::timeout(idle, body.next()).await.map_err(|_| {
                RemoteCopy::Failed(format!("the shared tier sent nothing for {idle:?}"))
            })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(failed)?;
            written += chunk.len() as u64;
            if written > size {
                return Err(RemoteCopy::Bad(format!(
                    "it sent more than the {size} bytes it stated"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(failed)?;
        }
        if written != size {
            return Err(RemoteCopy::Failed(format!(
                "it sent {written} of {size} bytes"
            )));
        }
        let got = hex::encode(hasher.finalize());
        if got != digest.hex() {
            return Err(RemoteCopy::Bad(format!("its bytes hash to sha256:{got}")));
        }
        file.flush().await.map_err(failed)?;
        let file = file.into_std().await;
        let mut file = file;
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).map_err(failed)?;
        Ok(file)
    }
}

/// Why a copy from the shared tier was not used.
enum RemoteCopy {
    /// The object is not what its key says: delete it.
    Bad(String),
    /// The transfer failed (S3 unreachable, the disk): try the upstream, keep the object.
    Failed(String),
}
