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
//!
//! Here: the command and its report. [`walk`] walks an image (indexes, manifests, blobs);
//! [`progress`] draws what it does on stderr. Images and platforms are parsed by
//! [`acr_plugins::oci`], as `.platform` in a pipeline is, so the same words choose the same
//! images.

mod progress;
mod walk;

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use acr_plugins::oci::{ImageReference, Platform};
use acr_plugins::registry::Shared;
use anyhow::Context as _;
use clap::Args;
use tokio::sync::watch;

use super::{Cli, CliError};
use crate::server::ProxyHost;
use crate::world::compile_file;
use progress::{Mode, Progress};
use walk::Warmer;

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
struct ImageToWarm {
    /// As written, for messages.
    text: String,
    /// Sent as `?ns=`; `None` for the proxy's default upstream.
    registry: Option<String>,
    repo: String,
    /// A tag or `sha256:...`.
    reference: String,
}

impl ImageToWarm {
    fn parse(text: &str) -> Result<ImageToWarm, String> {
        let image = ImageReference::parse(text)?;
        Ok(ImageToWarm {
            text: text.to_string(),
            reference: image.reference(),
            registry: image.registry,
            repo: image.repository,
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
        .map(|i| ImageToWarm::parse(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    let platforms = args
        .platforms
        .iter()
        .map(|p| Platform::parse(p).map_err(|e| format!("--platform: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths() {
        let r = ImageToWarm::parse("127.0.0.1:5000/library/test").unwrap();
        assert_eq!(
            r.path("manifests", "latest"),
            "/v2/library/test/manifests/latest?ns=127.0.0.1:5000"
        );
        let r = ImageToWarm::parse("alpine").unwrap();
        assert_eq!(
            (r.registry, r.repo.as_str(), r.reference.as_str()),
            (None, "alpine", "latest")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(64 << 20), "64.0 MiB");
    }
}
