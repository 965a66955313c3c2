//! Hot reload: a changed pipeline file is compiled again; a good compile replaces the pipeline
//! for what starts next (an engine pass, a request), a bad one is logged with its diagnostics
//! and the old pipeline keeps running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::world::{compile, Pipeline};

/// Keeps the file watch alive; dropping it stops reloading.
pub struct Reloader {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The symlink a Kubernetes ConfigMap volume swaps to publish a new version of its files.
const KUBERNETES_DATA_LINK: &str = "..data";

/// Watches `path` and sends each good compile of it on `pipelines`.
pub fn watch(path: &Path, pipelines: watch::Sender<Arc<Pipeline>>) -> notify::Result<Reloader> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let file_name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // Editors often write a temporary file and rename it over the original, so the directory
    // is watched and events are matched by file name. A Kubernetes ConfigMap (or Secret)
    // volume changes no file of that name: the kubelet writes a new directory and renames a
    // symlink `..data` over the old one, through which the file's own symlink points; so an
    // event on `..data` is read too (the content comparison below drops a non-change).
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.paths.iter().any(|p| {
                p.file_name() == file_name.as_deref()
                    || p.file_name() == Some(std::ffi::OsStr::new(KUBERNETES_DATA_LINK))
            }) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let mut last = std::fs::read_to_string(&path).unwrap_or_default();
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let a burst of events (truncate, write, rename) settle, then read once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            let Ok(source) = tokio::fs::read_to_string(&path).await else {
                tracing::warn!(path = %path.display(), "pipeline file is gone; keeping the running pipeline");
                continue;
            };
            if source == last {
                continue;
            }
            match compile(&path, &source) {
                Ok(pipeline) => {
                    last = source;
                    let _ = pipelines.send(Arc::new(pipeline));
                    tracing::info!(path = %path.display(), "reloaded the pipeline");
                }
                Err(report) => {
                    last = source;
                    tracing::error!(
                        path = %path.display(),
                        "the edited pipeline has errors; the previous one keeps running\n{report}"
                    );
                }
            }
        }
    });
    Ok(Reloader {
        _watcher: watcher,
        task,
    })
}
