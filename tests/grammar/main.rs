//! The runmd grammar, the `acr` CLI end to end and the never-panics properties: the tests
//! that start no registry (only the `acr` binary or the library), in one binary.
//!
//! One test binary per area (each links once); each former test file is a module, so a
//! test keeps its name (`cargo nextest run -E 'test(name)'`).

mod cli;
mod grammar;
mod never_panics;
