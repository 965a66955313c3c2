//! What the local disk tier holds, in memory: each committed object's kind, size, last use
//! and readers. It keeps the store under `max-size` (and the disk from filling) by evicting
//! the least recently used objects nobody is reading, and feeds the size gauges.
//!
//! Last use is the file's mtime (written at most once a minute per object), so the order
//! survives a restart: the index is rebuilt from the files when the store opens. An object
//! another process committed (`acr warm` beside a running mirror) joins the index when it is
//! first used.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{space, Metrics, Store};

/// How stale a stored object's mtime (its last use across restarts) may get.
const MTIME_EVERY: Duration = Duration::from_secs(60);

/// What a committed object is (where its file lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Blob,
    Manifest,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    kind: Kind,
    size: u64,
    last_use: SystemTime,
    readers: u32,
}

impl Store {
    pub(crate) fn update_gauges(&self) {
        if let Ok(index) = self.index.lock() {
            let bytes: u64 = index.values().map(|e| e.size).sum();
            self.metrics.store_bytes.store(bytes, Ordering::Relaxed);
            self.metrics
                .store_objects
                .store(index.len() as u64, Ordering::Relaxed);
        }
    }

    /// Marks `hex` as used now (index and file mtime) and, with `reader`, as being read. An
    /// object missing from the index was committed by another process using the same store
    /// (`acr warm` beside a running mirror): it joins the index here, so it is counted and
    /// evicted like the others.
    pub(crate) fn touch(&self, hex: &str, path: &Path, reader: bool) {
        let now = SystemTime::now();
        let mut persist = true;
        let mut adopted = false;
        if let Ok(mut index) = self.index.lock() {
            if !index.contains_key(hex) {
                if let Ok(meta) = std::fs::metadata(path) {
                    let kind = if path.starts_with(self.local.root().join("manifests")) {
                        Kind::Manifest
                    } else {
                        Kind::Blob
                    };
                    index.insert(
                        hex.to_string(),
                        Entry {
                            kind,
                            size: meta.len(),
                            last_use: UNIX_EPOCH,
                            readers: 0,
                        },
                    );
                    adopted = true;
                }
            }
            if let Some(e) = index.get_mut(hex) {
                // The index keeps the exact order; the file's mtime (the order after a restart)
                // is written at most once a minute per object, not on every hit.
                persist = now.duration_since(e.last_use).unwrap_or_default() >= MTIME_EVERY;
                e.last_use = now;
                if reader {
                    e.readers += 1;
                }
            }
        }
        if persist {
            if let Ok(f) = std::fs::File::options().write(true).open(path) {
                let _ = f.set_modified(now);
            }
        }
        if adopted {
            tracing::debug!(digest = %format!("sha256:{hex}"), "found an object another process committed");
            self.update_gauges();
        }
    }

    pub(crate) fn release(&self, hex: &str) {
        if let Ok(mut index) = self.index.lock() {
            if let Some(e) = index.get_mut(hex) {
                e.readers = e.readers.saturating_sub(1);
            }
        }
    }

    /// Adds a committed object to the index as used now (keeping the count of its readers if
    /// a request found it already).
    pub(crate) fn record(&self, hex: &str, size: u64, kind: Kind) {
        if let Ok(mut index) = self.index.lock() {
            let now = SystemTime::now();
            index
                .entry(hex.to_string())
                .and_modify(|e| {
                    e.kind = kind;
                    e.size = size;
                    e.last_use = now;
                })
                .or_insert(Entry {
                    kind,
                    size,
                    last_use: now,
                    readers: 0,
                });
        }
    }

    /// Records a committed object and evicts what the bound requires.
    pub(crate) fn committed(&self, hex: &str, size: u64, kind: Kind) {
        self.record(hex, size, kind);
        self.evict();
        self.update_gauges();
    }

    /// Bytes free for an unprivileged writer on the store's file system.
    pub fn free_bytes(&self) -> Option<u64> {
        self.local.free_bytes()
    }

    /// Whether a blob of `need` bytes can be stored, evicting what nobody reads if need be.
    /// `false`: it cannot fit even then (larger than [`StoreConfig::max_blob_size`], than
    /// `max-size` less what is being read or reserved, or than the disk's free space plus
    /// what eviction could free), and nothing was evicted. Evicts nothing itself: the fetch
    /// reserves its room (and evicts for it) when it starts.
    pub fn make_room(&self, need: u64) -> bool {
        self.check_room(need, need).is_ok()
    }

    /// Removes least-recently-used objects nobody is reading until the store, with the bytes
    /// reserved for fetches in flight, fits `max_size`, and the disk has room for what those
    /// fetches still have to write.
    pub(crate) fn evict(&self) {
        let (reserved, outstanding) = self
            .space
            .lock()
            .map(|s| (s.bytes, s.outstanding()))
            .unwrap_or((0, 0));
        if let Some(max) = self.config.max_size {
            let victims: Vec<(String, Kind)> = {
                let Ok(mut index) = self.index.lock() else {
                    return;
                };
                let mut total: u64 = index.values().map(|e| e.size).sum::<u64>() + reserved;
                if total <= max {
                    Vec::new()
                } else {
                    let mut order: Vec<(String, SystemTime, u64, Kind)> = index
                        .iter()
                        .filter(|(_, e)| e.readers == 0)
                        .map(|(k, e)| (k.clone(), e.last_use, e.size, e.kind))
                        .collect();
                    order.sort_by_key(|(_, t, _, _)| *t);
                    let mut out = Vec::new();
                    for (hex, _, size, kind) in order {
                        if total <= max {
                            break;
                        }
                        index.remove(&hex);
                        total = total.saturating_sub(size);
                        out.push((hex, kind));
                    }
                    out
                }
            };
            for (hex, kind) in victims {
                self.remove_object(&hex, kind);
                tracing::debug!(digest = %format!("sha256:{hex}"), "evicted");
            }
        }
        // The disk: room for what the fetches in flight still have to write.
        let want = outstanding.saturating_add(space::DISK_SLACK);
        while self.free_bytes().is_some_and(|free| free < want) {
            let victim = {
                let Ok(mut index) = self.index.lock() else {
                    return;
                };
                let oldest = index
                    .iter()
                    .filter(|(_, e)| e.readers == 0)
                    .min_by_key(|(_, e)| e.last_use)
                    .map(|(k, e)| (k.clone(), e.kind));
                if let Some((hex, _)) = &oldest {
                    index.remove(hex);
                }
                oldest
            };
            let Some((hex, kind)) = victim else { break };
            self.remove_object(&hex, kind);
            tracing::info!(digest = %format!("sha256:{hex}"), "evicted to make room on a full disk");
        }
        self.update_gauges();
    }

    /// Deletes a committed object's files (it already left the index) and counts it.
    fn remove_object(&self, hex: &str, kind: Kind) {
        let path = match kind {
            Kind::Blob => self.local.blob_path(hex),
            Kind::Manifest => self.local.manifest_path(hex),
        };
        let _ = std::fs::remove_file(&path);
        if kind == Kind::Manifest {
            self.manifests_in_memory.forget(hex);
            let _ = std::fs::remove_file(path.with_extension("type"));
        }
        Metrics::inc(&self.metrics.evictions);
    }

    /// Drops a committed blob nobody is reading (a copy of a bad object of the shared
    /// tier): out of the index and off the disk.
    pub(crate) fn forget_unread_blob(&self, hex: &str) {
        if let Ok(mut index) = self.index.lock() {
            if index.get(hex).is_some_and(|e| e.readers == 0) {
                index.remove(hex);
                let _ = std::fs::remove_file(self.local.blob_path(hex));
            }
        }
    }

    /// Committed bytes, and the part of them nobody is reading (what eviction could free).
    pub(crate) fn committed_bytes(&self) -> (u64, u64) {
        self.index
            .lock()
            .map(|index| {
                index.values().fold((0, 0), |(all, free), e| {
                    (
                        all + e.size,
                        if e.readers == 0 { free + e.size } else { free },
                    )
                })
            })
            .unwrap_or((0, 0))
    }
}

/// The committed objects of the tree at `dir`, as they are on disk.
pub(crate) fn scan(dir: &Path, kind: Kind, index: &mut HashMap<String, Entry>) -> io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                index.insert(
                    name,
                    Entry {
                        kind,
                        size: meta.len(),
                        last_use: meta.modified().unwrap_or(UNIX_EPOCH),
                        readers: 0,
                    },
                );
            }
        }
    }
    Ok(())
}
