//! Walking an image through the proxy: its manifest, the children of an index for the
//! platforms asked for, and every config and layer of the image manifests, read to the end
//! (that commits them to the store), counted and hashed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use acr_plugins::oci::{media, Body, Digest, ManifestKind, Platform, RegistryError};
use acr_plugins::registry::Reply;
use bytes::Bytes;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::progress::{short, Progress};
use super::{human, plural, ImageReport, ImageToWarm};
use crate::server::ProxyHost;

/// How many blobs are fetched at once.
const CONCURRENCY: usize = 4;
/// The largest config kept in memory to read its platform from.
const MAX_CONFIG_KEPT: u64 = 1 << 20;
/// How deep indexes may nest (an index of indexes of images).
const MAX_INDEX_DEPTH: usize = 4;

/// A manifest as fetched: its document, media type, kind and digest.
struct Manifest {
    json: serde_json::Value,
    media_type: String,
    kind: ManifestKind,
    digest: String,
}

impl Manifest {
    fn is_index(&self) -> bool {
        self.kind.is_index()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlobKind {
    Config,
    Layer,
}

impl BlobKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
        }
    }
}

/// A blob to warm, from a descriptor.
#[derive(Debug, Clone)]
pub(super) struct BlobTask {
    pub(super) digest: String,
    /// `None` only for Docker schema 1, whose layers carry no size.
    pub(super) size: Option<u64>,
    pub(super) kind: BlobKind,
}

/// How a blob went.
struct BlobOutcome {
    bytes: u64,
    cached: bool,
    /// A config's bytes (to read its platform), when small.
    kept: Option<Bytes>,
}

/// Walks images through one proxy, into its store.
pub(super) struct Warmer {
    pub(super) host: Arc<ProxyHost>,
    pub(super) key: (String, String),
    pub(super) store_root: PathBuf,
    /// `--platform`: what an index's entries must be (none: every platform).
    pub(super) platforms: Vec<Platform>,
    pub(super) progress: Arc<Progress>,
}

impl Warmer {
    pub(super) async fn warm(&self, image: &ImageToWarm) -> ImageReport {
        let started = Instant::now();
        let mut report = ImageReport {
            image: image.text.clone(),
            ..ImageReport::default()
        };
        if let Err(e) = self.warm_into(image, &mut report).await {
            report.error = Some(e);
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    async fn warm_into(&self, image: &ImageToWarm, report: &mut ImageReport) -> Result<(), String> {
        let top = self.manifest(image, &image.reference).await?;
        report.digest = Some(top.digest.clone());

        // The image manifests to warm, with the platform their index gave them.
        let mut manifests: Vec<(Option<Platform>, Manifest)> = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        let mut queue = vec![(top, 0usize)];
        while let Some((m, depth)) = queue.pop() {
            if !m.is_index() {
                manifests.push((None, m));
                continue;
            }
            if depth >= MAX_INDEX_DEPTH {
                return Err(format!(
                    "{} nests indexes more than {MAX_INDEX_DEPTH} deep",
                    m.digest
                ));
            }
            let entries = m
                .json
                .get("manifests")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            let mut chosen = Vec::new();
            for entry in &entries {
                let platform = entry.get("platform").and_then(Platform::from_json);
                let attestation = entry
                    .pointer("/annotations/vnd.docker.reference.type")
                    .and_then(|v| v.as_str())
                    == Some("attestation-manifest");
                if attestation || platform.as_ref().is_some_and(Platform::is_unknown) {
                    continue;
                }
                let wanted = self.platforms.is_empty()
                    || platform
                        .as_ref()
                        .is_some_and(|p| self.platforms.iter().any(|w| w.admits(p)));
                if !wanted {
                    if let Some(p) = &platform {
                        skipped.push(p.to_string());
                    }
                    continue;
                }
                let Some(digest) = entry.get("digest").and_then(|d| d.as_str()) else {
                    return Err(format!("an entry of the index {} has no digest", m.digest));
                };
                Digest::parse(digest)
                    .map_err(|e| format!("the index {} lists `{digest}`: {e}", m.digest))?;
                chosen.push((platform, digest.to_string()));
            }
            if chosen.is_empty() && depth == 0 {
                let asked: Vec<String> = self.platforms.iter().map(|p| p.to_string()).collect();
                return Err(format!(
                    "no platform {} in the index {} (it has: {})",
                    asked.join(", "),
                    m.digest,
                    if skipped.is_empty() {
                        "none".to_string()
                    } else {
                        skipped.join(", ")
                    }
                ));
            }
            for (platform, digest) in chosen {
                let child = self.manifest(image, &digest).await?;
                if child.is_index() {
                    queue.push((child, depth + 1));
                } else {
                    manifests.push((platform, child));
                }
            }
        }

        if manifests.is_empty() {
            return Err(format!(
                "the index {} lists no image to warm",
                top_digest(report)
            ));
        }
        // Every distinct blob of those manifests, configs first.
        let mut seen = HashSet::new();
        let mut configs = Vec::new();
        let mut layers = Vec::new();
        for (_, m) in &manifests {
            for task in blobs_of(m)? {
                if seen.insert(task.digest.clone()) {
                    match task.kind {
                        BlobKind::Config => configs.push(task),
                        BlobKind::Layer => layers.push(task),
                    }
                }
            }
        }
        report.layers = layers.len();
        report.blobs = configs.len() + layers.len();
        let tasks: Vec<BlobTask> = configs.into_iter().chain(layers).collect();
        let total: u64 = tasks.iter().filter_map(|t| t.size).sum();
        self.progress.begin(
            &format!(
                "{}: {} ({} manifest{}, {} blob{}, {})",
                image.text,
                report.digest.as_deref().map_or("-", short),
                manifests.len(),
                plural(manifests.len()),
                tasks.len(),
                plural(tasks.len()),
                human(total)
            ),
            &tasks,
        );
        let ticker = self.progress.clone().ticker();
        let results: Vec<(usize, Result<BlobOutcome, String>)> =
            futures_util::stream::iter(tasks.iter().enumerate())
                .map(|(i, task)| async move { (i, self.blob(image, i, task).await) })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        if let Some(t) = ticker {
            t.abort();
        }
        self.progress.end();

        let mut errors = Vec::new();
        let mut config_bytes = std::collections::HashMap::new();
        for (i, result) in results {
            match result {
                Ok(o) => {
                    report.bytes += o.bytes;
                    report.cached += usize::from(o.cached);
                    if let Some(b) = o.kept {
                        config_bytes.insert(tasks[i].digest.clone(), b);
                    }
                }
                Err(e) => {
                    let task = &tasks[i];
                    errors.push(format!("{} {}: {e}", task.kind.name(), task.digest));
                }
            }
        }
        // Platforms: the index's word, else the config's.
        for (platform, m) in &manifests {
            let p = platform.clone().or_else(|| {
                let digest = m.json.pointer("/config/digest")?.as_str()?;
                let bytes = config_bytes.get(digest)?;
                Platform::from_json(&serde_json::from_slice(bytes).ok()?)
            });
            if let Some(p) = p {
                let filtered = platform.is_none() && !self.platforms.is_empty();
                if filtered && !self.platforms.iter().any(|w| w.admits(&p)) {
                    tracing::warn!(
                        "{} is a single-platform image for {p}: warmed although --platform asks for another",
                        image.text
                    );
                }
                let p = p.to_string();
                if !report.platforms.contains(&p) {
                    report.platforms.push(p);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// GETs `path` through the proxy's route; anything but a 200 is an error that says why.
    async fn get(&self, path: &str, accept: bool) -> Result<Reply, String> {
        let mut headers = hyper::HeaderMap::new();
        if accept {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&media::ALL_MANIFESTS.join(", ")) {
                headers.insert(hyper::header::ACCEPT, v);
            }
        }
        let reply = self
            .host
            .in_process(&self.key, "GET", path, &headers)
            .await
            .map_err(|e| describe(&e))?;
        if reply.status != 200 {
            let status = reply.status;
            let body = read_all(reply.body, 4096).await.unwrap_or_default();
            return Err(format!(
                "the mirror answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Ok(reply)
    }

    /// A manifest by tag or digest, checked against its digest.
    async fn manifest(&self, image: &ImageToWarm, reference: &str) -> Result<Manifest, String> {
        // The image's own manifest is the image: only a child's errors name it.
        let what = if reference == image.reference {
            String::new()
        } else {
            format!("manifest {}: ", shown(image, reference))
        };
        let reply = self
            .get(&image.path("manifests", reference), true)
            .await
            .map_err(|e| format!("{what}{e}"))?;
        let content_type = reply.header("content-type").map(str::to_string);
        let said = reply.header("docker-content-digest").map(str::to_string);
        let bytes = read_all(reply.body, media::MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| format!("the manifest {}: {e}", shown(image, reference)))?;
        let digest = Digest::of(&bytes).to_string();
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            said
        };
        if let Some(expected) = expected.filter(|e| e.starts_with("sha256:")) {
            if expected != digest {
                return Err(format!(
                    "the manifest {} hashes to {digest}, not {expected}",
                    shown(image, reference)
                ));
            }
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the manifest {} is not JSON: {e}", shown(image, reference)))?;
        let content_type = content_type.unwrap_or_default();
        let kind = ManifestKind::detect(&json, &content_type);
        let media_type = json
            .get("mediaType")
            .and_then(|v| v.as_str())
            .unwrap_or(content_type.split(';').next().unwrap_or("").trim())
            .to_string();
        Ok(Manifest {
            json,
            media_type,
            kind,
            digest,
        })
    }

    /// Reads a blob through the proxy to its end, counting and hashing it.
    async fn blob(
        &self,
        image: &ImageToWarm,
        row: usize,
        task: &BlobTask,
    ) -> Result<BlobOutcome, String> {
        let hex = task.digest.strip_prefix("sha256:").unwrap_or(&task.digest);
        let cached = self
            .store_root
            .join("blobs/sha256")
            .join(hex.get(..2).unwrap_or("00"))
            .join(hex)
            .is_file();
        self.progress.start(row);
        let result = self.read_blob(image, row, task).await;
        match &result {
            Ok((bytes, _)) => self.progress.finish(row, *bytes, Ok(cached)),
            Err(e) => self.progress.finish(row, 0, Err(e.clone())),
        }
        result.map(|(bytes, kept)| BlobOutcome {
            bytes,
            cached,
            kept,
        })
    }

    async fn read_blob(
        &self,
        image: &ImageToWarm,
        row: usize,
        task: &BlobTask,
    ) -> Result<(u64, Option<Bytes>), String> {
        let reply = self.get(&image.path("blobs", &task.digest), false).await?;
        if let (Some(len), Some(size)) = (
            reply
                .header("content-length")
                .and_then(|v| v.trim().parse::<u64>().ok()),
            task.size,
        ) {
            if len != size {
                return Err(format!(
                    "the mirror announces {len} bytes, the descriptor says {size}"
                ));
            }
        }
        let keep = task.kind == BlobKind::Config && task.size.is_some_and(|s| s <= MAX_CONFIG_KEPT);
        let mut reading = Reading {
            size: task.size,
            keep,
            kept: Vec::new(),
            hasher: Sha256::new(),
            count: 0,
        };
        match reply.body {
            Body::Empty => return Err("the mirror answered without a body".into()),
            Body::Full(bytes) => {
                reading.take(&bytes)?;
                self.progress.advance(row, reading.count);
            }
            Body::Stream(mut stream) => {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        format!("the transfer broke after {} bytes: {e}", reading.count)
                    })?;
                    reading.take(&chunk)?;
                    self.progress.advance(row, reading.count);
                }
            }
        }
        let Reading {
            count,
            hasher,
            kept,
            ..
        } = reading;
        if let Some(size) = task.size {
            if count != size {
                return Err(format!("got {count} of the descriptor's {size} bytes"));
            }
        }
        let got = format!("sha256:{}", to_hex(&hasher.finalize()));
        if got != task.digest {
            return Err(format!("the bytes hash to {got}, not {}", task.digest));
        }
        Ok((count, keep.then(|| Bytes::from(kept))))
    }
}

/// A blob being read: counted, hashed, and (a small config) kept.
struct Reading {
    size: Option<u64>,
    keep: bool,
    kept: Vec<u8>,
    hasher: Sha256,
    count: u64,
}

impl Reading {
    fn take(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.count += chunk.len() as u64;
        if let Some(size) = self.size {
            if self.count > size {
                return Err(format!("more than the descriptor's {size} bytes"));
            }
        }
        self.hasher.update(chunk);
        if self.keep {
            self.kept.extend_from_slice(chunk);
        }
        Ok(())
    }
}

fn top_digest(report: &ImageReport) -> &str {
    report.digest.as_deref().unwrap_or("-")
}

fn shown(image: &ImageToWarm, reference: &str) -> String {
    let sep = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    match &image.registry {
        Some(r) => format!("{r}/{}{sep}{reference}", image.repo),
        None => format!("{}{sep}{reference}", image.repo),
    }
}

/// A registry error as one line: the message, with the status when it says something.
fn describe(e: &RegistryError) -> String {
    format!("{} {}: {}", e.status, e.code, e.message)
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A body whole, at most `max` bytes.
async fn read_all(body: Body, max: usize) -> Result<Bytes, String> {
    match body {
        Body::Empty => Ok(Bytes::new()),
        Body::Full(b) if b.len() > max => Err(format!("larger than {max} bytes")),
        Body::Full(b) => Ok(b),
        Body::Stream(mut s) => {
            let mut buf = Vec::new();
            while let Some(chunk) = s.next().await {
                let chunk = chunk.map_err(|e| format!("the transfer broke: {e}"))?;
                if buf.len() + chunk.len() > max {
                    return Err(format!("larger than {max} bytes"));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(buf))
        }
    }
}

/// The config and layers of an image manifest (Docker schema 1: its `fsLayers`).
fn blobs_of(m: &Manifest) -> Result<Vec<BlobTask>, String> {
    let descriptor = |d: &serde_json::Value, kind: BlobKind| -> Result<BlobTask, String> {
        let digest = d
            .get("digest")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("a {} of {} has no digest", kind.name(), m.digest))?;
        Digest::parse(digest)
            .map_err(|e| format!("{} `{digest}` of {}: {e}", kind.name(), m.digest))?;
        let size = d
            .get("size")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| format!("{} {digest} of {} has no size", kind.name(), m.digest))?;
        Ok(BlobTask {
            digest: digest.to_string(),
            size: Some(size),
            kind,
        })
    };
    let mut out = Vec::new();
    if m.kind == ManifestKind::Schema1 {
        let fs_layers = m.json.get("fsLayers").and_then(|v| v.as_array());
        for l in fs_layers.into_iter().flatten() {
            let digest = l
                .get("blobSum")
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("a layer of {} has no blobSum", m.digest))?;
            Digest::parse(digest).map_err(|e| format!("layer `{digest}` of {}: {e}", m.digest))?;
            out.push(BlobTask {
                digest: digest.to_string(),
                size: None,
                kind: BlobKind::Layer,
            });
        }
        return Ok(out);
    }
    match m.json.get("config").filter(|_| m.kind.is_image()) {
        Some(c) => out.push(descriptor(c, BlobKind::Config)?),
        None => {
            return Err(format!(
                "{} ({}) is neither an image manifest nor an index",
                m.digest,
                if m.media_type.is_empty() {
                    "no media type"
                } else {
                    &m.media_type
                }
            ))
        }
    }
    for l in m
        .json
        .get("layers")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        out.push(descriptor(l, BlobKind::Layer)?);
    }
    Ok(out)
}
