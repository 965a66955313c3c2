//! The ground floor: what both the registry client and the store speak, and nothing else of
//! the crate. Digests, manifest references and the repository grammar, image references as
//! people write them, platforms (one normalization), media types and the one rule for what
//! kind a manifest is, bodies, and the OCI error a registry answers with.
//!
//! Nothing here imports another module of the crate: `registry`, `store` and the plugins
//! build on it.

pub mod body;
pub mod digest;
pub mod error;
pub mod image;
pub mod media;
pub mod platform;
pub mod reference;

pub use body::{Body, BodyStream};
pub use digest::{copy_hashing, Digest};
pub use error::RegistryError;
pub use image::{is_registry_host, ImageReference};
pub use media::{Manifest, ManifestKind};
pub use platform::Platform;
pub use reference::Reference;
