//! acr's content store: single flight, ranges, tags, faults, and replicas sharing S3.
//!
//! One test binary per area (each links once); each former test file is a module, so a
//! test keeps its name (`cargo nextest run -E 'test(name)'`).

// The harness is shared by every area binary and each uses a part of it.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

mod store_cache;
mod store_faults;
mod store_fleet;
mod store_lazy_ranges;
mod store_s3;
mod store_upstream_metrics;
