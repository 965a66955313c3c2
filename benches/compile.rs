//! How long `acr::world::compile` takes on the pipeline `acr init` writes (the goal: well under
//! a millisecond, so a hot reload is instant), and on its parts: the parse alone and `dump`.
//!
//!     cargo bench --bench compile
//!
//! The template is rendered the way `acr --registry example init` renders it.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn rendered() -> String {
    acr::cli::render_default("example", "azurecr.io")
}

fn compile_template(c: &mut Criterion) {
    let source = rendered();
    let path = Path::new(".world/azurecr.io/example/mirror.runmd");
    if let Err(report) = acr::world::compile(path, &source) {
        panic!("the rendered template does not compile:\n{report}");
    }
    let mut group = c.benchmark_group("template");
    group.throughput(Throughput::Bytes(source.len() as u64));
    group.bench_function("compile", |b| {
        b.iter(|| acr::world::compile(black_box(path), black_box(&source)))
    });
    group.bench_function("parse", |b| {
        b.iter(|| acr::runmd::parse(black_box(&source)))
    });
    let pipeline = acr::world::compile(path, &source).ok();
    group.bench_function("dump", |b| {
        b.iter(|| {
            pipeline
                .as_ref()
                .map(|p| acr::world::dump::dump(black_box(p)))
        })
    });
    group.finish();
}

criterion_group!(benches, compile_template);
criterion_main!(benches);
