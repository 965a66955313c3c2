//! Who may read what, every bound crossed, hostile upstreams, and faults around the store.
//!
//! One test binary per area (each links once); each former test file is a module, so a
//! test keeps its name (`cargo nextest run -E 'test(name)'`).

// The harness is shared by every area binary and each uses a part of it.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

mod faults;
mod security_access;
mod security_bounds;
mod security_upstream;
mod verify;
