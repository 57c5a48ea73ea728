//! Every fuzz target over its committed corpus and regressions, on the
//! stable toolchain: what the fuzzer once found (`fuzz/regressions/`) and
//! the inputs that cover what it reached (`fuzz/corpus/`) must pass in CI,
//! where there is no nightly and no libFuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use alumet_fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_passes_its_corpus_and_regressions() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for path in inputs(&fuzz_dir().join(kind).join(name)) {
                let data = std::fs::read(&path).unwrap();
                replayed += 1;
                if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                    failures.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "failing inputs:\n{}",
        failures.join("\n")
    );
    assert!(replayed > 0);
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (name, _) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ is empty");
    }
}

/// The cargo-fuzz project and this crate name the same targets: a target
/// added on one side only would be fuzzed but not replayed, or the reverse.
#[test]
fn the_fuzz_project_has_one_target_per_function() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut bins: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "alumet-fuzz")
        .map(str::to_owned)
        .collect();
    bins.sort();
    let mut files: Vec<String> = inputs(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .collect();
    files.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    names.sort();
    assert_eq!(bins, names, "fuzz/Cargo.toml [[bin]]s");
    assert_eq!(files, names, "fuzz/fuzz_targets/*.rs");
    for name in &names {
        let source =
            std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")))
                .unwrap();
        assert!(
            source.contains(&format!("alumet_fuzz_targets::{name}(data)")),
            "fuzz/fuzz_targets/{name}.rs must call alumet_fuzz_targets::{name}"
        );
    }
}
