//! Room in the store for fetches in flight.
//!
//! A fetch reserves its blob's size (from the upstream's Content-Length, or S3's) before the
//! first byte is written, and a body without a length reserves as it grows, [`GROW_STEP`] at
//! a time. Reserved bytes count against `max-size` and against the disk's free space exactly
//! like committed ones, so concurrent fetches cannot together overrun the bound. A
//! reservation that cannot be made even after evicting everything nobody reads is refused
//! (507) before anything is evicted: one request can never flush the store for a blob it
//! could not keep anyway.

use super::Store;
use crate::oci::RegistryError;

/// Kept free on the store's file system beyond what fetches need (tag records, manifests'
/// media types, file system metadata).
pub const DISK_SLACK: u64 = 4 * 1024 * 1024;

/// How much more a body without a length reserves each time it outgrows its reservation.
pub const GROW_STEP: u64 = 8 * 1024 * 1024;

/// Bytes promised to fetches in flight, and how many of them are already on disk.
#[derive(Debug, Default)]
pub struct Reserved {
    pub bytes: u64,
    pub written: u64,
}

impl Reserved {
    /// Reserved bytes not written yet: what the disk must still have room for.
    pub fn outstanding(&self) -> u64 {
        self.bytes.saturating_sub(self.written)
    }
}

/// The 507 a blob the store has no room for is answered with.
fn no_room(reason: String) -> RegistryError {
    RegistryError::new(
        507,
        "UNAVAILABLE",
        format!("{reason}; nothing was evicted for it: pull it from the registry, or give the store more space"),
    )
}

impl Store {
    /// Whether a blob of `size` bytes is within [`StoreConfig::max_blob_size`].
    ///
    /// [`StoreConfig::max_blob_size`]: super::StoreConfig::max_blob_size
    pub(crate) fn check_blob_size(&self, size: u64) -> Result<(), RegistryError> {
        match self.config.max_blob_size {
            Some(max) if size > max => Err(no_room(format!(
                "the mirror's store takes blobs up to {max} bytes; this one is {size} bytes or more"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether `need` more bytes, making a blob of `blob_size` bytes, can be stored (evicting
    /// what nobody reads if need be). Evicts nothing.
    pub(crate) fn check_room(&self, need: u64, blob_size: u64) -> Result<(), RegistryError> {
        let space = self
            .space
            .lock()
            .map_err(|_| RegistryError::new(500, "UNKNOWN", "the store's lock is poisoned"))?;
        self.room_given(&space, need, blob_size)
    }

    fn room_given(&self, space: &Reserved, need: u64, blob_size: u64) -> Result<(), RegistryError> {
        self.check_blob_size(blob_size)?;
        let (committed, evictable) = self.committed_bytes();
        if let Some(max) = self.config.max_size {
            let kept = committed.saturating_sub(evictable) + space.bytes;
            if kept.saturating_add(need) > max {
                return Err(no_room(format!(
                    "the mirror's store (max-size {max} bytes, {kept} of them being read or fetched) has no room for this blob of {blob_size} bytes or more"
                )));
            }
        }
        if let Some(free) = self.free_bytes() {
            let want = need
                .saturating_add(DISK_SLACK)
                .saturating_add(space.outstanding());
            if free.saturating_add(evictable) < want {
                return Err(no_room(format!(
                    "the mirror's store has no room for this blob of {blob_size} bytes or more ({free} bytes free on its disk, {evictable} more could be evicted)"
                )));
            }
        }
        Ok(())
    }

    /// Reserves `need` more bytes for a fetch in flight (its blob then `blob_size` bytes):
    /// refused, with nothing evicted, when they cannot fit; otherwise the least recently used
    /// objects go until they do.
    pub(crate) fn reserve(&self, need: u64, blob_size: u64) -> Result<(), RegistryError> {
        self.add_reservation(need, blob_size)?;
        self.evict();
        Ok(())
    }

    /// Like [`Store::reserve`] for a body without a length, which may yet be cut off: evicts
    /// only when the disk itself is short, and leaves `max-size` to the eviction at its
    /// commit. A body cut off at the bound has then evicted nothing for its bytes.
    pub(crate) fn reserve_deferred(&self, need: u64, blob_size: u64) -> Result<(), RegistryError> {
        let outstanding = self.add_reservation(need, blob_size)?;
        if self
            .free_bytes()
            .is_some_and(|free| free < outstanding.saturating_add(DISK_SLACK))
        {
            self.evict();
        }
        Ok(())
    }

    /// Checks and records a reservation; returns what all fetches still have to write.
    fn add_reservation(&self, need: u64, blob_size: u64) -> Result<u64, RegistryError> {
        let mut space = self
            .space
            .lock()
            .map_err(|_| RegistryError::new(500, "UNKNOWN", "the store's lock is poisoned"))?;
        self.room_given(&space, need, blob_size)?;
        space.bytes += need;
        Ok(space.outstanding())
    }

    /// `n` reserved bytes reached the disk.
    pub(crate) fn reserved_written(&self, n: u64) {
        if let Ok(mut space) = self.space.lock() {
            space.written += n;
        }
    }

    /// A fetch ended: its reservation (of which `written` bytes reached the disk) is over.
    pub(crate) fn unreserve(&self, bytes: u64, written: u64) {
        if let Ok(mut space) = self.space.lock() {
            space.bytes = space.bytes.saturating_sub(bytes);
            space.written = space.written.saturating_sub(written);
        }
    }
}
