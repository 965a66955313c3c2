//! Which process a temporary file in the store belongs to, so that opening a store removes
//! the leftovers of processes that are gone and never the files of one still writing them
//! (`acr warm` opening the store of a running mirror).
//!
//! Each open store claims an owner id (process id and a random part) and holds an exclusive
//! `flock` on `locks/<id>.lock` for as long as it is open; its temporary files are named
//! `tmp/<what>.<id>.<n>`. The lock is taken on a file with a private name and only then
//! renamed into place, so no one ever sees an owner's lock file unlocked while it lives.
//! A lock held by a process that died (even `kill -9`) is released by the kernel, so its
//! files are known to be abandoned. Temporary files with no lock file (written by an older
//! acr, or by a process that crashed between naming and locking) are abandoned too.

use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The directory of the owners' lock files, under the store's root.
const LOCKS: &str = "locks";

/// This process's claim on its temporary files; released (and its lock file removed) on drop.
#[derive(Debug)]
pub struct TempOwner {
    id: String,
    path: PathBuf,
    _lock: std::fs::File,
}

impl TempOwner {
    /// Takes a new owner id in the store at `root` and locks it.
    pub fn claim(root: &Path) -> io::Result<TempOwner> {
        let dir = root.join(LOCKS);
        std::fs::create_dir_all(&dir)?;
        let id = format!("{}-{:08x}", std::process::id(), nonce());
        let path = dir.join(format!("{id}.lock"));
        let private = dir.join(format!(".{id}.lock.new"));
        let file = std::fs::File::create(&private)?;
        if !try_lock(&file) {
            let _ = std::fs::remove_file(&private);
            return Err(io::Error::other("cannot lock the store's owner file"));
        }
        std::fs::rename(&private, &path)?;
        Ok(TempOwner {
            id,
            path,
            _lock: file,
        })
    }

    /// The id temporary files are named with.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for TempOwner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An exclusive, non-blocking `flock`: `false` when another open file holds it.
fn try_lock(file: &std::fs::File) -> bool {
    // SAFETY: flock on a file descriptor we own, for as long as the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Whether the owner `id` is alive: its lock file exists and is locked by someone.
fn alive(root: &Path, id: &str) -> bool {
    let path = root.join(LOCKS).join(format!("{id}.lock"));
    match std::fs::File::open(&path) {
        // Locking it ourselves succeeds only when its owner is gone (the lock is dropped
        // with the file when this function returns).
        Ok(f) => !try_lock(&f),
        Err(_) => false,
    }
}

/// Removes the temporary files of owners that are gone, and their lock files. Returns how
/// many temporary files went.
pub fn remove_abandoned(root: &Path) -> usize {
    let mut removed = 0;
    let mut seen: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `<what>.<owner>.<n>`
            let owner = name.rsplit('.').nth(1).unwrap_or("").to_string();
            let live = *seen
                .entry(owner.clone())
                .or_insert_with(|| !owner.is_empty() && alive(root, &owner));
            if !live && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join(LOCKS)) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".lock") {
                if !id.starts_with('.') && !alive(root, id) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    removed
}

fn nonce() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos();
    }
    u32::from_ne_bytes(b)
}
