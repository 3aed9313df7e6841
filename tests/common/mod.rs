//! Shared by the integration tests that run the `ctxzip` binary.

// Each test crate compiles this module and uses a part of it.
#[allow(dead_code)]
pub mod lsp;
#[allow(dead_code)]
pub mod mcp_client;
#[allow(dead_code)]
pub mod node;

#[path = "../../scoring/tests/common/scratch.rs"]
pub mod scratch;

/// A score cache of this test process's own (for `CTXZIP_CACHE`): results cached by earlier
/// runs would turn "the model did work" assertions into cache hits. It lives in the
/// process's scratch directory, which a later test run removes ([`scratch::process_dir`]).
pub fn test_cache() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| scratch::process_dir("cli"))
        .join("cache.sqlite")
}

/// A byte-level BPE `tokenizer.json` (GPT-2's scheme, which most open code models' files
/// use), trained here on `texts` with the `tokenizers` crate and written into `dir`: a real
/// tokenizer file, nothing downloaded. A small vocabulary counts code in many more tokens
/// than the scoring model does, so a test can tell the two apart.
#[allow(dead_code)]
pub fn trained_tokenizer_json(
    dir: &std::path::Path,
    texts: &[&str],
    vocab_size: usize,
) -> std::path::PathBuf {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default()));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(1)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, texts.iter().copied())
        .expect("train a tokenizer");
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).expect("write tokenizer.json");
    path
}

/// Tokens of `text` in the tokenizer.json at `path`, as an agent counts a tool's output (no
/// special tokens added): the test's own count, beside the binary's.
#[allow(dead_code)]
pub fn count_in_tokenizer_json(path: &std::path::Path, text: &str) -> usize {
    tokenizers::Tokenizer::from_file(path)
        .expect("load tokenizer.json")
        .encode_fast(text, false)
        .expect("encode")
        .len()
}
