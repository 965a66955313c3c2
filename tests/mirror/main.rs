//! Pulls through a running `acr mirror start`: real clients, upstream auth, hostile clients
//! and upstreams, hot reload, and Azure Container Registry against its stand-ins.
//!
//! One test binary per area (each links once); each former test file is a module, so a
//! test keeps its name (`cargo nextest run -E 'test(name)'`).

// The harness is shared by every area binary and each uses a part of it.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

mod acr;
mod mirror_auth;
mod mirror_hostile;
mod mirror_pull;
mod mirror_reload;
