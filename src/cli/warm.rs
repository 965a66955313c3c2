//! `acr warm [--platform OS/ARCH]... [--json] IMAGE...`: pre-pulls images into the store of
//! the pipeline's proxy.
//!
//! Nothing listens and the engine does not run: every request goes through
//! [`ProxyHost::in_process`], so the proxy's own routes (`.login`, `.authn`, `.resolve`,
//! `.pull`) fetch and verify, and the store fills exactly as a client's pull through the
//! mirror fills it. A later pull is then a hit, even with the upstream down (tags are served
//! stale when it is unreachable).
//!
//! For each image: the manifest by tag or digest; for an index or list, every child of the
//! platforms asked for (all but attestations when none is); for every image manifest, its
//! config and layers, read to the end (that is what commits them to the store), 4 at a time,
//! counted, checked against the descriptor's size and hashed here as well.

use std::collections::HashSet;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acr_plugins::registry::media;
use acr_plugins::registry::{Body, Digest, RegistryError, Reply, Shared};
use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::{Cli, CliError};
use crate::server::ProxyHost;
use crate::world::compile_file;

/// How many blobs are fetched at once.
const CONCURRENCY: usize = 4;
/// The largest config kept in memory to read its platform from.
const MAX_CONFIG_KEPT: u64 = 1 << 20;
/// How deep indexes may nest (an index of indexes of images).
const MAX_INDEX_DEPTH: usize = 4;
/// How often the progress bars are redrawn.
const REDRAW: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Warm only this platform of an index or manifest list (`OS/ARCH[/VARIANT]`, e.g.
    /// `linux/arm64`); repeat it for several. Without it, every platform (attestations
    /// excepted).
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platforms: Vec<String>,
    /// No progress bars: print one JSON object on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// `[REGISTRY/]REPO[:TAG|@DIGEST]`: with a registry, one of the proxy's upstreams; without
    /// one, its default upstream (the first `.mirror` host). The tag defaults to `latest`.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

// ------------------------------------------------------------------------------------------
// what is asked for

/// An image named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageRef {
    /// As written, for messages.
    text: String,
    /// Sent as `?ns=`; `None` for the proxy's default upstream.
    registry: Option<String>,
    repo: String,
    /// A tag or `sha256:...`.
    reference: String,
}

impl ImageRef {
    fn parse(text: &str) -> Result<ImageRef, String> {
        let bad =
            |why: &str| format!("`{text}` is not an image ([REGISTRY/]REPO[:TAG|@DIGEST]): {why}");
        let (name, digest) = match text.split_once('@') {
            Some((name, d)) => {
                Digest::parse(d).map_err(&bad)?;
                (name, Some(d.to_string()))
            }
            None => (text, None),
        };
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !crate::server::upstream::is_registry_host(first) {
                    return Err(bad(&format!("`{first}` is not a registry host")));
                }
                (Some(first.to_ascii_lowercase()), rest)
            }
            _ => (None, name),
        };
        // A tag is after the last `:` of the last path segment.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if repo.is_empty()
            || repo.starts_with('/')
            || repo.ends_with('/')
            || repo.contains("//")
            || !repo.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'_' | b'-' | b'/')
            })
        {
            return Err(bad(
                "a repository is lowercase letters, digits and `._-`, in `/`-separated parts",
            ));
        }
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid {
                return Err(bad(&format!("`{tag}` is not a tag")));
            }
        }
        let reference = match (digest, tag) {
            (Some(d), _) => d,
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        Ok(ImageRef {
            text: text.to_string(),
            registry,
            repo: repo.to_string(),
            reference,
        })
    }

    /// `/v2/REPO/KIND/REFERENCE[?ns=REGISTRY]`
    fn path(&self, kind: &str, reference: &str) -> String {
        let mut p = format!("/v2/{}/{kind}/{reference}", self.repo);
        if let Some(r) = &self.registry {
            p.push_str("?ns=");
            p.push_str(r);
        }
        p
    }
}

/// `OS/ARCH[/VARIANT]`
#[derive(Debug, Clone, PartialEq, Eq)]
struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok = |s: &&str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                arch: arch.to_ascii_lowercase(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                arch: arch.to_ascii_lowercase(),
                variant: Some(variant.to_ascii_lowercase()),
            }),
            _ => Err(format!(
                "`--platform {text}` is not OS/ARCH[/VARIANT] (e.g. linux/arm64)"
            )),
        }
    }

    /// The platform of an index entry or an image config (`os`, `architecture`, `variant`).
    fn of(v: &serde_json::Value) -> Option<Platform> {
        let os = v.get("os")?.as_str()?;
        let arch = v.get("architecture")?.as_str()?;
        Some(Platform {
            os: os.to_ascii_lowercase(),
            arch: arch.to_ascii_lowercase(),
            variant: v
                .get("variant")
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase),
        })
    }

    /// Whether an image of platform `self` is what `want` asks for. A want without a variant
    /// takes every variant; `arm64` without a variant is `arm64/v8`.
    fn satisfies(&self, want: &Platform) -> bool {
        if self.os != want.os || self.arch != want.arch {
            return false;
        }
        match (&want.variant, &self.variant) {
            (None, _) => true,
            (Some(w), Some(v)) => w == v,
            (Some(w), None) => self.arch == "arm64" && w == "v8",
        }
    }

    fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.arch == "unknown"
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// the command

pub async fn run(cli: &Cli, args: &WarmArgs) -> Result<(), CliError> {
    let path = cli.runmd_path()?;
    if !path.exists() {
        let name = cli.registry.as_deref().unwrap_or("NAME");
        return Err(anyhow::anyhow!(
            "no pipeline at {}: run `acr --registry {name} init` first (or give --runmd-path FILE)",
            path.display()
        )
        .into());
    }
    let images = args
        .images
        .iter()
        .map(|i| ImageRef::parse(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    let platforms = args
        .platforms
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;

    let pipeline = compile_file(&path)?;
    let Some(proxy) = pipeline.proxies.first() else {
        return Err(anyhow::anyhow!(
            "{} has no `+ .proxy ADDR`: `acr warm` fills a proxy's store, and this pipeline serves none",
            path.display()
        )
        .into());
    };
    let key = proxy.key.clone();
    let base = std::env::current_dir().context("cannot read the current directory")?;
    let world_dir = std::path::absolute(&path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| base.clone());
    let store_root = match crate::server::store::config(proxy, &base, &world_dir) {
        Ok(Some(config)) => config.root,
        Ok(None) => {
            return Err(anyhow::anyhow!(
                "the proxy {} of {} has `: .cache off`: there is no store to warm (give it `: .cache DIR`, or drop the line for `cache/` beside the pipeline)",
                proxy.address,
                path.display()
            )
            .into())
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "the store of the proxy {} in {}: {e}",
                proxy.address,
                path.display()
            )
            .into())
        }
    };
    tracing::debug!(proxy = %proxy.address, store = %store_root.display(), "warming");

    let (_tx, rx) = watch::channel(Arc::new(pipeline));
    let shared = Shared::new().map_err(|e| anyhow::anyhow!("{e}"))?;
    let host = ProxyHost::new(rx, shared, base, world_dir);
    let mode = if args.json {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Bars
    } else {
        Mode::Lines
    };
    let warmer = Warmer {
        host,
        key,
        store_root,
        platforms,
        progress: Arc::new(Progress::new(mode)),
    };

    let started = Instant::now();
    let mut reports = Vec::new();
    for image in &images {
        let report = warmer.warm(image).await;
        if !args.json {
            super::write_stdout(&format!("{}\n", report.summary()))?;
        }
        reports.push(report);
    }
    // A store shared through S3 copies each blob up after it is kept locally: wait for that
    // before exiting, or the last uploads would be cut off.
    let left = warmer
        .host
        .settle_stores(std::time::Duration::from_secs(600))
        .await;
    if left > 0 {
        tracing::warn!(
            blobs = left,
            "some blobs were still being copied to S3 after 10 minutes"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let total_bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    if args.json {
        let json = serde_json::json!({
            "images": reports.iter().map(ImageReport::json).collect::<Vec<_>>(),
            "bytes": total_bytes,
            "seconds": round3(seconds),
        });
        super::write_stdout(&format!("{json}\n"))?;
    } else {
        let ok = reports.iter().filter(|r| r.error.is_none()).count();
        let layers: usize = reports.iter().map(|r| r.layers).sum();
        super::write_stdout(&format!(
            "warmed {ok} of {} image{}: {layers} layer{}, {} in {:.1}s\n",
            reports.len(),
            plural(reports.len()),
            plural(layers),
            human(total_bytes),
            seconds
        ))?;
    }
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.image)))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} of {} image{} not warmed:\n  {}",
            failed.len(),
            reports.len(),
            plural(reports.len()),
            failed.join("\n  ")
        )
        .into())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `1.5 KiB`, `12.0 MiB`
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// What happened to one image.
#[derive(Debug, Default)]
struct ImageReport {
    image: String,
    digest: Option<String>,
    platforms: Vec<String>,
    /// Distinct layers warmed (configs not counted).
    layers: usize,
    /// Distinct blobs (configs and layers) read.
    blobs: usize,
    /// Blobs that were in the store already.
    cached: usize,
    /// Config and layer bytes read.
    bytes: u64,
    seconds: f64,
    error: Option<String>,
}

impl ImageReport {
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "image": self.image,
            "digest": self.digest,
            "platforms": self.platforms,
            "layers": self.layers,
            "cached": self.cached,
            "bytes": self.bytes,
            "seconds": round3(self.seconds),
            "ok": self.error.is_none(),
        });
        if let Some(e) = &self.error {
            v["error"] = serde_json::Value::String(e.clone());
        }
        v
    }

    fn summary(&self) -> String {
        let Some(digest) = &self.digest else {
            return format!(
                "{}: FAILED: {}",
                self.image,
                self.error.as_deref().unwrap_or("no manifest")
            );
        };
        let platforms = if self.platforms.is_empty() {
            String::new()
        } else {
            format!(" [{}]", self.platforms.join(", "))
        };
        let what = format!(
            "{} {digest}{platforms}: {} layer{}, {} in {:.1}s",
            self.image,
            self.layers,
            plural(self.layers),
            human(self.bytes),
            self.seconds
        );
        match &self.error {
            None if self.cached > 0 => format!(
                "{what} ({} of {} blobs were in the store already)",
                self.cached, self.blobs
            ),
            None => what,
            Some(e) => format!("{what}: FAILED: {e}"),
        }
    }
}

/// A manifest as fetched: its bytes, media type and digest.
struct Manifest {
    json: serde_json::Value,
    media_type: String,
    digest: String,
}

impl Manifest {
    fn is_index(&self) -> bool {
        self.media_type == media::OCI_INDEX
            || self.media_type == media::DOCKER_LIST
            || (self.json.get("manifests").is_some_and(|m| m.is_array())
                && self.json.get("layers").is_none())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobKind {
    Config,
    Layer,
}

impl BlobKind {
    fn name(self) -> &'static str {
        match self {
            BlobKind::Config => "config",
            BlobKind::Layer => "layer",
        }
    }
}

/// A blob to warm, from a descriptor.
#[derive(Debug, Clone)]
struct BlobTask {
    digest: String,
    /// `None` only for Docker schema 1, whose layers carry no size.
    size: Option<u64>,
    kind: BlobKind,
}

/// How a blob went.
struct BlobOutcome {
    bytes: u64,
    cached: bool,
    /// A config's bytes (to read its platform), when small.
    kept: Option<Bytes>,
}

struct Warmer {
    host: Arc<ProxyHost>,
    key: (String, String),
    store_root: PathBuf,
    platforms: Vec<Platform>,
    progress: Arc<Progress>,
}

impl Warmer {
    async fn warm(&self, image: &ImageRef) -> ImageReport {
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

    async fn warm_into(&self, image: &ImageRef, report: &mut ImageReport) -> Result<(), String> {
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
                let platform = entry.get("platform").and_then(Platform::of);
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
                        .is_some_and(|p| self.platforms.iter().any(|w| p.satisfies(w)));
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
                Platform::of(&serde_json::from_slice(bytes).ok()?)
            });
            if let Some(p) = p {
                let filtered = platform.is_none() && !self.platforms.is_empty();
                if filtered && !self.platforms.iter().any(|w| p.satisfies(w)) {
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
    async fn manifest(&self, image: &ImageRef, reference: &str) -> Result<Manifest, String> {
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
        let media_type = json
            .get("mediaType")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or(content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()))
            .unwrap_or_default();
        Ok(Manifest {
            json,
            media_type,
            digest,
        })
    }

    /// Reads a blob through the proxy to its end, counting and hashing it.
    async fn blob(
        &self,
        image: &ImageRef,
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
        image: &ImageRef,
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

fn shown(image: &ImageRef, reference: &str) -> String {
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
    if let Some(fs_layers) = m.json.get("fsLayers").and_then(|v| v.as_array()) {
        for l in fs_layers {
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
    match m.json.get("config") {
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

// ------------------------------------------------------------------------------------------
// progress on stderr

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A terminal: live bars redrawn in place.
    Bars,
    /// Not a terminal: a plain line as each blob finishes.
    Lines,
    /// `--json`: nothing.
    Quiet,
}

enum RowState {
    Waiting,
    Pulling(Instant),
    Done { cached: bool, secs: f64 },
    Failed(String),
}

struct Row {
    label: String,
    total: Option<u64>,
    done: u64,
    state: RowState,
    /// Already written above the live area (Bars), or as a line (Lines).
    printed: bool,
}

#[derive(Default)]
struct Board {
    rows: Vec<Row>,
    /// Lines of the live area on screen now.
    drawn: usize,
}

struct Progress {
    mode: Mode,
    board: Mutex<Board>,
    width: usize,
}

const BAR: usize = 24;

impl Progress {
    fn new(mode: Mode) -> Progress {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|w| *w >= 40)
            .unwrap_or(80);
        Progress {
            mode,
            board: Mutex::new(Board::default()),
            width,
        }
    }

    fn write(text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }

    /// A line of its own (not for `--json`).
    fn note(&self, text: &str) {
        if self.mode != Mode::Quiet {
            Self::write(&format!("{}\n", self.fit(text)));
        }
    }

    fn fit(&self, text: &str) -> String {
        if self.mode == Mode::Bars && text.chars().count() >= self.width {
            let mut t: String = text.chars().take(self.width.saturating_sub(2)).collect();
            t.push('…');
            t
        } else {
            text.to_string()
        }
    }

    /// A new image: its header and one row per blob.
    fn begin(&self, header: &str, tasks: &[BlobTask]) {
        self.note(header);
        let Ok(mut b) = self.board.lock() else { return };
        b.drawn = 0;
        b.rows = tasks
            .iter()
            .map(|t| Row {
                label: format!("{} {:<6}", short(&t.digest), t.kind.name()),
                total: t.size,
                done: 0,
                state: RowState::Waiting,
                printed: false,
            })
            .collect();
    }

    fn start(&self, row: usize) {
        if let Ok(mut b) = self.board.lock() {
            if let Some(r) = b.rows.get_mut(row) {
                r.state = RowState::Pulling(Instant::now());
            }
        }
    }

    fn advance(&self, row: usize, done: u64) {
        if self.mode != Mode::Bars {
            return;
        }
        if let Ok(mut b) = self.board.lock() {
            if let Some(r) = b.rows.get_mut(row) {
                r.done = done;
            }
        }
    }

    fn finish(&self, row: usize, bytes: u64, outcome: Result<bool, String>) {
        let Ok(mut b) = self.board.lock() else { return };
        let Some(r) = b.rows.get_mut(row) else { return };
        let secs = match r.state {
            RowState::Pulling(at) => at.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        r.done = bytes;
        r.state = match outcome {
            Ok(cached) => RowState::Done { cached, secs },
            Err(e) => RowState::Failed(e),
        };
        if self.mode == Mode::Lines {
            r.printed = true;
            let line = format!("  {}\n", finished_text(r));
            drop(b);
            Self::write(&line);
        }
    }

    /// Redraws the live area every [`REDRAW`] while blobs are read (terminals only).
    fn ticker(self: Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.mode != Mode::Bars {
            return None;
        }
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REDRAW);
            loop {
                tick.tick().await;
                self.draw(false);
            }
        }))
    }

    /// The finished rows not yet shown go above the live area for good; the rows being read
    /// and a total line are redrawn in place.
    fn draw(&self, last: bool) {
        let Ok(mut b) = self.board.lock() else { return };
        let mut frame = String::new();
        if b.drawn > 0 {
            frame.push_str(&format!("\x1b[{}A\r\x1b[J", b.drawn));
        }
        for r in b.rows.iter_mut() {
            if !r.printed && matches!(r.state, RowState::Done { .. } | RowState::Failed(_)) {
                r.printed = true;
                frame.push_str(&self.fit(&format!("  {}", finished_text(r))));
                frame.push('\n');
            }
        }
        let mut drawn = 0;
        if !last {
            for r in b.rows.iter() {
                if let RowState::Pulling(_) = r.state {
                    frame.push_str(&self.fit(&format!("  {}", live_text(r))));
                    frame.push('\n');
                    drawn += 1;
                }
            }
            let waiting = b
                .rows
                .iter()
                .filter(|r| matches!(r.state, RowState::Waiting))
                .count();
            let done: u64 = b.rows.iter().map(|r| r.done).sum();
            let total: u64 = b.rows.iter().filter_map(|r| r.total).sum();
            let finished = b
                .rows
                .iter()
                .filter(|r| matches!(r.state, RowState::Done { .. } | RowState::Failed(_)))
                .count();
            frame.push_str(&self.fit(&format!(
                "  {finished}/{} blobs, {} of {}{}",
                b.rows.len(),
                human(done),
                human(total),
                if waiting > 0 {
                    format!(", {waiting} waiting")
                } else {
                    String::new()
                }
            )));
            frame.push('\n');
            drawn += 1;
        }
        b.drawn = drawn;
        drop(b);
        if !frame.is_empty() {
            Self::write(&frame);
        }
    }

    /// The image is done: every row stays on screen, the live area goes.
    fn end(&self) {
        if self.mode == Mode::Bars {
            self.draw(true);
        }
        if let Ok(mut b) = self.board.lock() {
            b.rows.clear();
            b.drawn = 0;
        }
    }
}

/// `sha256:` and 12 hex digits.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn live_text(r: &Row) -> String {
    match r.total {
        Some(total) if total > 0 => {
            let filled = ((r.done.min(total) as f64 / total as f64) * BAR as f64) as usize;
            format!(
                "{} [{}{}] {} / {}",
                r.label,
                "#".repeat(filled),
                "-".repeat(BAR - filled),
                human(r.done),
                human(total)
            )
        }
        _ => format!("{} {}", r.label, human(r.done)),
    }
}

fn finished_text(r: &Row) -> String {
    match &r.state {
        RowState::Done { cached: true, .. } => {
            format!("{} {:>10}  cached", r.label, human(r.done))
        }
        RowState::Done {
            cached: false,
            secs,
        } => {
            format!("{} {:>10}  pulled in {secs:.1}s", r.label, human(r.done))
        }
        RowState::Failed(e) => format!("{} FAILED: {e}", r.label),
        _ => r.label.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r = ImageRef::parse("library/test:1").unwrap();
        assert_eq!(
            (r.registry, r.repo.as_str(), r.reference.as_str()),
            (None, "library/test", "1")
        );
        let r = ImageRef::parse("127.0.0.1:5000/library/test").unwrap();
        assert_eq!(
            (r.registry.as_deref(), r.repo.as_str(), r.reference.as_str()),
            (Some("127.0.0.1:5000"), "library/test", "latest")
        );
        assert_eq!(
            r.path("manifests", "latest"),
            "/v2/library/test/manifests/latest?ns=127.0.0.1:5000"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/org/app:v1@{d}")).unwrap();
        assert_eq!(
            (r.registry.as_deref(), r.repo.as_str(), r.reference.as_str()),
            (Some("ghcr.io"), "org/app", d.as_str())
        );
        let r = ImageRef::parse("localhost/app").unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost"));
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(
            (r.repo.as_str(), r.reference.as_str()),
            ("alpine", "latest")
        );
        for bad in [
            "",
            "Upper/case",
            "a//b",
            "repo:",
            "repo:bad tag",
            "repo@sha256:abc",
            "repo@md5:0000",
            "evil.com#x/app",
            "a/b?x=1",
            "reg.io/",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platforms() {
        let want = Platform::parse("linux/arm64").unwrap();
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        let entry = |os: &str, arch: &str, variant: Option<&str>| Platform {
            os: os.into(),
            arch: arch.into(),
            variant: variant.map(String::from),
        };
        assert!(entry("linux", "arm64", None).satisfies(&want));
        assert!(entry("linux", "arm64", Some("v8")).satisfies(&want));
        assert!(entry("linux", "arm64", None).satisfies(&v8));
        assert!(!entry("linux", "amd64", None).satisfies(&want));
        assert!(
            !entry("linux", "arm", Some("v7")).satisfies(&Platform::parse("linux/arm/v6").unwrap())
        );
        assert!(entry("unknown", "unknown", None).is_unknown());
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(64 << 20), "64.0 MiB");
    }
}
