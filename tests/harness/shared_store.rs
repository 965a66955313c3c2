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
        vec![
            format!(".cache s3://{}/{S3_PREFIX}", self.bucket()),
            format!(".cache-endpoint {}", self.url()),
        ]
    }
    /// The AWS environment, for a server started with [`S3::start`].
    fn env(&self) -> Vec<(String, String)> {
        pairs(&[
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ])
    }
    fn secret(&self) -> String {
        S3_SECRET_KEY.to_string()
    }
    fn prefix(&self) -> &'static str {
        S3_PREFIX
    }
    fn has(&self, key: &str) -> bool {
        self.file(key).is_file()
    }
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.file(key)).ok()
    }
    fn write(&self, key: &str, bytes: &[u8]) {
        std::fs::write(self.file(key), bytes).expect("overwrite the object");
    }
    fn requests(&self) -> Vec<String> {
        self.logged()
    }
    fn temporaries(&self) -> usize {
        store::files_under(&self.file(&format!("{S3_PREFIX}/tmp"))).len()
    }
}

/// Azurite's objects are read and written through acr's own tier over the container.
impl SharedStore for Azurite {
    fn name(&self) -> &'static str {
        "Azurite"
    }
    fn settings(&self) -> Vec<String> {
        vec![
            format!(".cache az://{AZURITE_CONTAINER}/{AZURITE_PREFIX}"),
            format!(".cache-endpoint {}", self.endpoint()),
        ]
    }
    fn env(&self) -> Vec<(String, String)> {
        pairs(&AZURITE_ENV)
    }
    fn secret(&self) -> String {
        AZURITE_KEY.to_string()
    }
    fn prefix(&self) -> &'static str {
        AZURITE_PREFIX
    }
    fn has(&self, key: &str) -> bool {
        let tier = self.tier("");
        block_on(async move { tier.head(key).await.expect("HEAD").is_some() })
    }
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        let tier = self.tier("");
        block_on(async move {
            let (_, mut body) = tier.get_stream(key, None).await.expect("GET")?;
            let mut out = Vec::new();
            while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                out.extend_from_slice(&chunk.expect("a piece of the object"));
            }
            Some(out)
        })
    }
    fn write(&self, key: &str, bytes: &[u8]) {
        let (tier, bytes) = (self.tier(""), bytes::Bytes::copy_from_slice(bytes));
        block_on(async move { tier.put_bytes(key, bytes, true).await.expect("PUT") });
    }
    /// From Azurite's access log (`... "PUT /devstoreaccount1/cache/... HTTP/1.1" 201 -`).
    fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| {
                let mut words = line.split('"').nth(1)?.split(' ');
                Some(format!("{} {}", words.next()?, words.next()?))
            })
            .collect()
    }
    /// Counted by removing them (`ObjectTier::sweep_temp`).
    fn temporaries(&self) -> usize {
        let tier = self.tier(AZURITE_PREFIX);
        block_on(async move { tier.sweep_temp(Duration::ZERO).await.expect("LIST tmp") })
    }
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `f` to completion on a runtime of its own (the tests here are synchronous).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}
