//! What running acr in production needs: deployment files, production settings, the
//! Grafana dashboard, a minute of load, and `acr warm`.
//!
//! One test binary per area (each links once); each former test file is a module, so a
//! test keeps its name (`cargo nextest run -E 'test(name)'`).

// The harness is shared by every area binary and each uses a part of it.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

mod deploy;
mod grafana;
mod load;
mod production;
mod warm;
