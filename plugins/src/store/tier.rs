//! What the store asks of a place that keeps its objects: a **tier**.
//!
//! The store has a local disk tier ([`super::local::DiskTier`]) and, when replicas share
//! content, a shared tier ([`super::object::ObjectTier`], an object store: S3 today). Both keep
//! the same objects under the same names ([`ObjectKey`]), each laid out its own way, and both
//! answer the few operations below. What is special to one of them stays outside the trait:
//! the disk's index, eviction and single flight (see `flight`), the object store's multipart
//! uploads. The "local, then shared" logic that walks the tiers is written once, in
//! `tiered` and `copy_down`.
//!
//! A tier does not verify what it holds against digests: the store does, before it writes
//! (digests are law) and, for the shared tier, again before it serves (the shared store is not
//! trusted). Every tier runs the same tests (`tier_suite`).

use std::io;
use std::path::Path;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::links::LinkScope;
use crate::oci::BodyStream;

/// An object of the store, by what it is; each tier turns it into its own path or key.
#[derive(Debug, Clone, Copy)]
pub enum ObjectKey<'a> {
    /// A blob, by the hex of its sha256.
    Blob(&'a str),
    /// A manifest, by the hex of its sha256.
    Manifest(&'a str),
    /// The media type of the manifest of that hex.
    MediaType(&'a str),
    /// The record of a tag as last seen upstream (see `TagEntry`).
    Tag {
        ns: &'a str,
        repo: &'a str,
        tag: &'a str,
    },
    /// A repository's link to an object (see `links`), by the object's hex.
    Link { scope: &'a LinkScope, hex: &'a str },
    /// The lease of the replica fetching a blob now (see `lease`), by the blob's hex.
    BlobLease(&'a str),
    /// The lease of the replica revalidating a tag now (see `lease`).
    TagLease {
        ns: &'a str,
        repo: &'a str,
        tag: &'a str,
    },
}

impl ObjectKey<'_> {
    /// The key's segments as the shared tier names them (`blobs/sha256/<hex>`, ...).
    pub fn parts(&self) -> Vec<String> {
        let own = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        match *self {
            ObjectKey::Blob(hex) => own(&["blobs", "sha256", hex]),
            ObjectKey::Manifest(hex) => own(&["manifests", "sha256", hex]),
            ObjectKey::MediaType(hex) => own(&["manifests", "sha256", &format!("{hex}.type")]),
            ObjectKey::Tag { ns, repo, tag } => {
                let ns = ns.replace('/', "_");
                let mut parts = vec!["tags", ns.as_str()];
                parts.extend(repo.split('/'));
                parts.extend(["_tags", tag]);
                own(&parts)
            }
            ObjectKey::Link { scope, hex } => scope.key_parts(hex),
            ObjectKey::BlobLease(hex) => own(&["leases", "blobs", "sha256", hex]),
            ObjectKey::TagLease { ns, repo, tag } => {
                let mut parts = ObjectKey::Tag { ns, repo, tag }.parts();
                parts.insert(0, "leases".to_string());
                parts
            }
        }
    }
}

/// Whether a write may replace what is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Only if nothing is there (content-addressed objects: replicas never overwrite).
    Create,
    /// Replace it (tag records).
    Overwrite,
}

/// How a write ended; both are success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The key already held an object (stored by another replica, or earlier).
    AlreadyThere,
}

/// Which version of an object a tier holds (its ETag), for a replace that must not undo
/// another replica's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

fn unsupported<'a, T: Send + 'a>(tier: &str) -> BoxFuture<'a, io::Result<T>> {
    let e = io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the {tier} tier has no conditional writes"),
    );
    Box::pin(async move { Err(e) })
}

/// A place that keeps the store's objects. Object-safe: the store holds its shared tier as a
/// `dyn Tier`.
pub trait Tier: Send + Sync + std::fmt::Debug {
    /// What logs and errors call it ("S3", "local disk").
    fn name(&self) -> &str;

    /// The object's size, or `None` when there is none.
    fn size<'a>(&'a self, key: ObjectKey<'a>) -> BoxFuture<'a, io::Result<Option<u64>>>;

    /// A small object (a manifest, a tag record) whole, at most `limit` bytes: the size the
    /// tier states is checked before any byte is read, and the read stops at `limit` whatever
    /// the body turns out to be. Larger: an error of kind `InvalidData`.
    fn read<'a>(
        &'a self,
        key: ObjectKey<'a>,
        limit: u64,
    ) -> BoxFuture<'a, io::Result<Option<Bytes>>>;

    /// The object as a stream, with the size the tier states (not checked against the bytes:
    /// the caller counts them).
    fn open<'a>(
        &'a self,
        key: ObjectKey<'a>,
    ) -> BoxFuture<'a, io::Result<Option<(u64, BodyStream)>>>;

    /// Writes a small object whole; with [`WriteMode::Create`] only if nothing is there.
    fn write<'a>(
        &'a self,
        key: ObjectKey<'a>,
        bytes: Bytes,
        mode: WriteMode,
    ) -> BoxFuture<'a, io::Result<PutOutcome>>;

    /// Writes the (verified) file at `file` as `key` unless something is there, reading it a
    /// part at a time, never whole.
    fn write_file<'a>(
        &'a self,
        key: ObjectKey<'a>,
        file: &'a Path,
    ) -> BoxFuture<'a, io::Result<PutOutcome>>;

    /// Removes the object; removing what is not there succeeds.
    fn delete<'a>(&'a self, key: ObjectKey<'a>) -> BoxFuture<'a, io::Result<()>>;

    /// Writes `bytes` as `key` only if nothing is there, atomically (exactly one of several
    /// replicas racing wins): the new object's version, or `None` when the key was taken.
    /// What leases are made of; a tier without conditional writes says `Unsupported`.
    fn create_versioned<'a>(
        &'a self,
        _key: ObjectKey<'a>,
        _bytes: Bytes,
    ) -> BoxFuture<'a, io::Result<Option<Version>>> {
        unsupported(self.name())
    }

    /// A small object (at most `limit` bytes, as [`Tier::read`]) with its version.
    fn read_versioned<'a>(
        &'a self,
        _key: ObjectKey<'a>,
        _limit: u64,
    ) -> BoxFuture<'a, io::Result<Option<(Bytes, Version)>>> {
        unsupported(self.name())
    }

    /// Replaces `key` with `bytes` only if it is still at `version`, atomically: the new
    /// version, or `None` when another write came first (or the object is gone).
    fn replace_versioned<'a>(
        &'a self,
        _key: ObjectKey<'a>,
        _bytes: Bytes,
        _version: &'a Version,
    ) -> BoxFuture<'a, io::Result<Option<Version>>> {
        unsupported(self.name())
    }
}
