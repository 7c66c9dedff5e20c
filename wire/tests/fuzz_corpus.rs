//! Replays the kept fuzz corpus (`wire/fuzz/corpus/<target>/`) through the
//! fuzz targets on the stable toolchain, so that a change that breaks on
//! an input the fuzzer once found fails here without a fuzzing run.

#[path = "../fuzz/targets/mod.rs"]
mod targets;

use std::{fs, panic, path::Path};

#[test]
fn corpus_inputs_do_not_panic() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    for (name, target) in targets::ALL {
        let dir = corpus.join(name);
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()));
        let mut inputs = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let input = fs::read(&path).unwrap();
            inputs += 1;
            if panic::catch_unwind(|| target(&input)).is_err() {
                failures.push(path.display().to_string());
            }
        }
        assert!(inputs > 0, "{} has no inputs", dir.display());
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}
