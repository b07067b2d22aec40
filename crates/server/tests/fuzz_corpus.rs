//! Every committed fuzz input (`fuzz/corpus/<target>/`, and the crashes found and fixed in
//! `fuzz/regressions/<target>/`) fed to its target's function on stable Rust: what fuzzing
//! found once stays fixed, and CI needs no nightly toolchain. See SECURITY.md, "Fuzzing".

use std::path::Path;

#[test]
fn every_committed_fuzz_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (target, run) in sessiond::fuzz::TARGETS {
        let mut fed = 0;
        for folder in ["corpus", "regressions"] {
            let dir = root.join(folder).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                // A fuzz run in the same checkout may replace an input while this reads.
                let Ok(data) = std::fs::read(&path) else {
                    continue;
                };
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{target}: {} panics", path.display());
                fed += 1;
            }
        }
        assert!(fed > 0, "no committed input for the fuzz target {target}");
    }
}
