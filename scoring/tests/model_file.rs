//! The model file replaced while the model is loaded (issue 12, faults): the loaded model
//! keeps answering as it did, with no crash and no change in its scores, so results cached
//! under its sha256 stay right.

mod common;

use std::fs;

use ctxzip_scoring::{Scorer, TokenNlls};

fn assert_close(a: &TokenNlls, b: &TokenNlls) {
    assert_eq!(a.tokens.len(), b.tokens.len());
    for (x, y) in a.tokens.iter().zip(&b.tokens) {
        assert!((x.nll - y.nll).abs() < 1e-3, "{a:?}\n{b:?}");
    }
}

#[test]
fn overwriting_the_model_file_in_place_does_not_change_a_loaded_model() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.gguf");
    fs::copy(&common::test_model().path, &model_path).unwrap();
    let mut config = common::config();
    config.model_path = model_path.clone();
    config.disk_cache_path = None;
    let scorer = Scorer::new(config).expect("the copied model loads");
    let text = "def add(a, b):\n    return a + b\n";
    let before = scorer.token_nlls(None, text).unwrap();

    // As `cp other.gguf model.gguf` does: truncate, then write other bytes in place.
    fs::write(&model_path, b"not a model any more").unwrap();
    let after_truncate = scorer.token_nlls(None, text).unwrap();
    assert_eq!(after_truncate, before);

    // And the same length of other bytes (a different model of the same size).
    let len = fs::metadata(&common::test_model().path).unwrap().len() as usize;
    fs::write(&model_path, vec![0x5Au8; len]).unwrap();
    // New text, so the model decodes it with its weights (nothing cached answers it); the
    // reference is the same model loaded from the untouched file.
    let other = "def sub(a, b):\n    return a - b\n";
    let after_rewrite = scorer.token_nlls(None, other).unwrap();
    let reference = common::scorer().token_nlls(None, other).unwrap();
    assert_close(&after_rewrite, &reference);
    assert_eq!(scorer.token_nlls(None, text).unwrap(), before);
}
