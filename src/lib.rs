//! `acr`: a registry mirror whose every request runs through a plugin pipeline declared in a
//! runmd file. This crate is the runtime: the runmd language (`runmd`), the compiled World
//! (`world`), the engine that sequences plugin calls (`engine`) and the command line (`cli`).
//! What each plugin does lives in the `acr-plugins` crate.

pub mod allocator;
pub mod cli;
pub mod engine;
pub mod log_writer;
pub mod runmd;
pub mod server;
pub mod world;
