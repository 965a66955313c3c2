//! Bodies: a stream of bytes that is never held whole, and a reply body that is nothing, bytes
//! in hand, or such a stream.

use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;

/// Bytes as they arrive (from an upstream, a file of the store, an object of the shared tier).
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A reply body: nothing, bytes in hand, or a stream that is never held whole.
pub enum Body {
    Empty,
    Full(Bytes),
    Stream(BodyStream),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Full(b) => write!(f, "Full({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}
