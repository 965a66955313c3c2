//! A store that replicas share, whichever service it is: [`SharedStore`] is what the tests of
//! replicas sharing content need of one (its `: .cache` lines and acr's environment, its
//! objects by key, the requests it served), so one test body runs against S3 (s3s-fs) and
//! against Azure Blob (Azurite).

use super::*;

/// A shared store started for one test.
pub trait SharedStore {
    /// What messages call it (`S3`, `Azurite`).
    fn name(&self) -> &'static str;
    /// `: .cache` and `: .cache-endpoint` (without the leading `: `).
    fn settings(&self) -> Vec<String>;
    /// The environment acr needs to reach it (credentials).
    fn env(&self) -> Vec<(String, String)>;
    /// The secret among [`env`](Self::env), which must never be shown.
    fn secret(&self) -> String;
    /// The key prefix of the pipelines' `: .cache` URL.
    fn prefix(&self) -> &'static str;
    fn has(&self, key: &str) -> bool;
    fn read(&self, key: &str) -> Option<Vec<u8>>;
    /// Overwrites (or creates) an object behind acr's back.
    fn write(&self, key: &str, bytes: &[u8]);
    /// `METHOD /path?query` of every request it served so far.
    fn requests(&self) -> Vec<String>;
    /// How many temporary objects (`PREFIX/tmp/...`) are left.
    fn temporaries(&self) -> usize;

    /// A store pipeline in front of `upstream` on this store, and the options that give acr
    /// its credentials.
    fn pipeline(&self, upstream: &str) -> (String, AcrOptions) {
        let settings = self.settings();
        let runmd = store::store_pipeline(
            upstream,
            &settings.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let opts = AcrOptions {
            env: self.env(),
            ..AcrOptions::default()
        };
        (runmd, opts)
    }

    /// The key of the blob `digest` (`sha256:...`).
    fn blob_key(&self, digest: &str) -> String {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        format!("{}/blobs/sha256/{hex}", self.prefix())
    }
}

impl SharedStore for S3 {
    fn name(&self) -> &'static str {
        "S3"
    }
    fn settings(&self) -> Vec<String> {
        S3::settings(self)
    }
    fn env(&self) -> Vec<(String, String)> {
        S3::env(self)
    }
    fn secret(&self) -> String {
        S3_SECRET_KEY.to_string()
    }
    fn prefix(&self) -> &'static str {
        S3_PREFIX
    }
    fn has(&self, key: &str) -> bool {
        S3::has(self, key)
    }
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.file(key)).ok()
    }
    fn write(&self, key: &str, bytes: &[u8]) {
        std::fs::write(self.file(key), bytes).expect("overwrite the object");
    }
    fn requests(&self) -> Vec<String> {
        S3::requests(self)
    }
    fn temporaries(&self) -> usize {
        store::files_under(&self.file(&format!("{S3_PREFIX}/tmp"))).len()
    }
}

impl SharedStore for Azurite {
    fn name(&self) -> &'static str {
        "Azurite"
    }
    fn settings(&self) -> Vec<String> {
        Azurite::settings(self)
    }
    fn env(&self) -> Vec<(String, String)> {
        Azurite::env(self)
    }
    fn secret(&self) -> String {
        AZURITE_KEY.to_string()
    }
    fn prefix(&self) -> &'static str {
        AZURITE_PREFIX
    }
    fn has(&self, key: &str) -> bool {
        Azurite::has(self, key)
    }
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        Azurite::read(self, key)
    }
    fn write(&self, key: &str, bytes: &[u8]) {
        Azurite::write(self, key, bytes)
    }
    fn requests(&self) -> Vec<String> {
        Azurite::requests(self)
    }
    fn temporaries(&self) -> usize {
        Azurite::temporaries(self)
    }
}
