//! Fuzzes the runmd compiler: any UTF-8 text compiles to a pipeline or to diagnostics, never a
//! panic, and every diagnostic points inside the text (the same properties as
//! tests/grammar/never_panics.rs, driven by libFuzzer's coverage feedback).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = acr::runmd::parse(source);
    let lines: Vec<&str> = source.lines().collect();
    let inside = |d: &acr::runmd::Diagnostic| {
        let line = d.span.line as usize;
        assert!(line >= 1 && line <= lines.len(), "line out of range: {d:?}");
        let chars = lines[line - 1].chars().count() as u32;
        assert!(d.span.col >= 1, "col 0: {d:?}");
        assert!(
            d.span.col + d.span.len.max(1) - 1 <= chars + 1,
            "caret past the end of the line ({chars} chars): {d:?}"
        );
    };
    parsed.diagnostics.iter().for_each(inside);
    match acr::world::compile(Path::new("fuzz.runmd"), source) {
        Ok(pipeline) => {
            let _ = acr::world::dump::dump(&pipeline);
            let _ = pipeline.proxies();
            let names: Vec<String> = pipeline.engine_names().map(String::from).collect();
            for name in names {
                assert!(pipeline.engine(&name).is_some());
            }
        }
        Err(report) => {
            assert!(!report.diagnostics.is_empty());
            report.diagnostics.iter().for_each(inside);
            let _ = report.to_string();
        }
    }
});
