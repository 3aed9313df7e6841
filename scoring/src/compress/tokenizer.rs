//! What a budget counts in: the scoring model's own tokenizer, an agent's (OpenAI's o200k or
//! cl100k encodings, shipped inside `tiktoken-rs`: nothing is downloaded), or the tokenizer a
//! Hugging Face `tokenizer.json` file describes (the file agents' open models ship, read with
//! the `tokenizers` crate). A request names one ([`TokenizerSpec`]); resolving it loads a
//! file once per process ([`TokenizerSpec::load`]); [`BudgetCounter`] is the one counter the
//! pipeline's budget logic uses (unit counts, headers, the rendered output). The model's own
//! work (candidate heads, the query window, scoring) always counts in the model's tokenizer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

use crate::model::{ScoringModel, TokenCountMemo};

/// The tokenizer a budget is counted in, resolved: a file is already loaded. `Copy`, as the
/// named encodings are process-wide: a loaded file lives as long as the process
/// ([`TokenizerSpec::load`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BudgetTokenizer {
    /// The scoring model's own tokenizer (the default).
    #[default]
    Model,
    /// OpenAI's o200k_base (GPT-4o and later).
    O200k,
    /// OpenAI's cl100k_base (GPT-4, GPT-3.5).
    Cl100k,
    /// A Hugging Face `tokenizer.json`.
    File(&'static TokenizerFile),
}

impl BudgetTokenizer {
    /// The tokenizer's name as every surface spells it; a file's is its path.
    pub fn name(self) -> &'static str {
        match self {
            BudgetTokenizer::Model => "model",
            BudgetTokenizer::O200k => "o200k",
            BudgetTokenizer::Cl100k => "cl100k",
            BudgetTokenizer::File(file) => &file.name,
        }
    }
}

/// The names a request may give, beside a path.
const NAMED: [(&str, BudgetTokenizer); 3] = [
    ("model", BudgetTokenizer::Model),
    ("o200k", BudgetTokenizer::O200k),
    ("cl100k", BudgetTokenizer::Cl100k),
];

/// A tokenizer as a request names it: `model`, `o200k`, `cl100k` (any case), or else the path
/// of a Hugging Face `tokenizer.json` (or of a directory holding one). A string on every
/// surface (a flag's value, a JSON string); never refused when parsed: a path that does not
/// lead to a tokenizer is refused when the request is resolved, as data
/// ([`TokenizerFileError`]), so that each shell words the fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum TokenizerSpec {
    Named(BudgetTokenizer),
    File(PathBuf),
}

impl Default for TokenizerSpec {
    fn default() -> Self {
        TokenizerSpec::Named(BudgetTokenizer::Model)
    }
}

impl From<String> for TokenizerSpec {
    fn from(s: String) -> Self {
        match NAMED.iter().find(|(name, _)| name.eq_ignore_ascii_case(&s)) {
            Some(&(_, tokenizer)) => TokenizerSpec::Named(tokenizer),
            None => TokenizerSpec::File(PathBuf::from(s)),
        }
    }
}

impl From<TokenizerSpec> for String {
    fn from(spec: TokenizerSpec) -> Self {
        spec.to_string()
    }
}

impl std::fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerSpec::Named(tokenizer) => f.write_str(tokenizer.name()),
            TokenizerSpec::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// For clap's value parser: every string is a spec.
impl std::str::FromStr for TokenizerSpec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(TokenizerSpec::from(s.to_string()))
    }
}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for TokenizerSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TokenizerSpec".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "model (the scoring model's own tokenizer, the default), o200k (GPT-4o and later), cl100k (GPT-4, GPT-3.5), or the path of a Hugging Face tokenizer.json.",
            "examples": ["model", "o200k", "cl100k", "/models/Qwen2.5-Coder-7B/tokenizer.json"]
        })
    }
}

impl TokenizerSpec {
    /// The tokenizer this names, a file loaded: each file once per process per version (its
    /// path, modification time and length), kept for the process's life as the named
    /// encodings are, so that its token counts are memoised across requests. A relative path
    /// is read from the process's current directory; the error names the path tried.
    pub fn load(&self) -> Result<BudgetTokenizer, TokenizerFileError> {
        match self {
            TokenizerSpec::Named(tokenizer) => Ok(*tokenizer),
            TokenizerSpec::File(path) => TokenizerFile::load(path).map(BudgetTokenizer::File),
        }
    }
}

/// Why a tokenizer file was refused. `path` is the file tried (absolute).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerFileError {
    #[error(
        "tokenizer not found: {path} (give model, o200k, cl100k or the path of a Hugging Face tokenizer.json)"
    )]
    NotFound { path: String },
    #[error("cannot read the tokenizer file {path}: {reason} (check that it is a readable file)")]
    Unreadable { path: String, reason: String },
    #[error(
        "{path} is not a Hugging Face tokenizer.json: {reason} (give the tokenizer.json a model ships beside its weights)"
    )]
    Invalid { path: String, reason: String },
}

impl TokenizerFileError {
    /// The file tried.
    pub fn path(&self) -> &str {
        match self {
            TokenizerFileError::NotFound { path }
            | TokenizerFileError::Unreadable { path, .. }
            | TokenizerFileError::Invalid { path, .. } => path,
        }
    }

    /// What is wrong with it, in snake case: `not_found`, `unreadable` or `invalid`.
    pub fn problem(&self) -> &'static str {
        match self {
            TokenizerFileError::NotFound { .. } => "not_found",
            TokenizerFileError::Unreadable { .. } => "unreadable",
            TokenizerFileError::Invalid { .. } => "invalid",
        }
    }
}

/// A loaded `tokenizer.json` with its memo of counts.
pub struct TokenizerFile {
    /// The path as loaded (absolute), as [`BudgetTokenizer::name`] gives it.
    name: String,
    tokenizer: tokenizers::Tokenizer,
    memo: TokenCountMemo,
}

impl std::fmt::Debug for TokenizerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TokenizerFile").field(&self.name).finish()
    }
}

/// One load is one tokenizer: the same file loaded again is the same `&'static`.
impl PartialEq for TokenizerFile {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for TokenizerFile {}

/// A file's identity for the process-wide table of loaded tokenizers: an edited file is
/// loaded again (each version stays loaded: a server sees a handful).
type FileKey = (PathBuf, Option<SystemTime>, u64);

impl TokenizerFile {
    fn load(path: &Path) -> Result<&'static TokenizerFile, TokenizerFileError> {
        static LOADED: OnceLock<Mutex<HashMap<FileKey, &'static TokenizerFile>>> = OnceLock::new();
        let mut path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let shown = |path: &Path| path.display().to_string();
        let unreadable = |path: &Path, e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => TokenizerFileError::NotFound { path: shown(path) },
            _ => TokenizerFileError::Unreadable {
                path: shown(path),
                reason: e.to_string(),
            },
        };
        let mut meta = std::fs::metadata(&path).map_err(|e| unreadable(&path, e))?;
        // A model's directory: its tokenizer.json.
        if meta.is_dir() {
            path.push("tokenizer.json");
            meta = std::fs::metadata(&path).map_err(|e| unreadable(&path, e))?;
        }
        let canonical = std::fs::canonicalize(&path).map_err(|e| unreadable(&path, e))?;
        let key = (canonical, meta.modified().ok(), meta.len());
        let loaded = LOADED.get_or_init(Mutex::default);
        // Held while a file loads, so that two requests naming it load it once.
        let mut loaded = loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&file) = loaded.get(&key) {
            return Ok(file);
        }
        let bytes = std::fs::read(&path).map_err(|e| unreadable(&path, e))?;
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| TokenizerFileError::Invalid {
                path: shown(&path),
                reason: e.to_string(),
            })?;
        let file: &'static TokenizerFile = Box::leak(Box::new(TokenizerFile {
            name: shown(&path),
            tokenizer,
            memo: TokenCountMemo::new(),
        }));
        loaded.insert(key, file);
        Ok(file)
    }

    /// Tokens of `text` as an agent using this file counts a tool's output: no special
    /// tokens added around it (BOS, EOS, a template's), the file's added tokens split out as
    /// it splits them. A text the file cannot encode (a word-level vocabulary with no
    /// unknown token) counts as its bytes plus one, at least what any tokenizer whose
    /// pieces cover the text needs.
    fn count(&self, text: &str) -> usize {
        match self.tokenizer.encode_fast(text, false) {
            Ok(encoding) => encoding.len(),
            Err(_) => text.len() + 1,
        }
    }
}

/// An encoding with its memo of counts: a workspace's chunks are counted once per process,
/// as the model's counts are ([`TokenCountMemo`]).
struct Encoding {
    bpe: &'static CoreBPE,
    memo: TokenCountMemo,
}

fn encoding(tokenizer: BudgetTokenizer) -> Option<&'static Encoding> {
    static O200K: OnceLock<Encoding> = OnceLock::new();
    static CL100K: OnceLock<Encoding> = OnceLock::new();
    let (cell, bpe): (_, fn() -> &'static CoreBPE) = match tokenizer {
        BudgetTokenizer::Model | BudgetTokenizer::File(_) => return None,
        BudgetTokenizer::O200k => (&O200K, tiktoken_rs::o200k_base_singleton),
        BudgetTokenizer::Cl100k => (&CL100K, tiktoken_rs::cl100k_base_singleton),
    };
    Some(cell.get_or_init(|| Encoding {
        bpe: bpe(),
        memo: TokenCountMemo::new(),
    }))
}

/// What a [`BudgetCounter`] counts with.
#[derive(Clone, Copy)]
enum Counting {
    Model,
    Tiktoken(&'static Encoding),
    File(&'static TokenizerFile),
}

/// Counts text for the budget, in the request's tokenizer.
#[derive(Clone, Copy)]
pub struct BudgetCounter<'a> {
    scorer: &'a dyn ScoringModel,
    counting: Counting,
}

impl<'a> BudgetCounter<'a> {
    pub fn new(scorer: &'a dyn ScoringModel, tokenizer: BudgetTokenizer) -> Self {
        let counting = match (tokenizer, encoding(tokenizer)) {
            (BudgetTokenizer::File(file), _) => Counting::File(file),
            (_, Some(encoding)) => Counting::Tiktoken(encoding),
            (_, None) => Counting::Model,
        };
        BudgetCounter { scorer, counting }
    }

    /// Whether budgets count in the model's tokenizer (then a budget count is a model count).
    pub fn is_model(&self) -> bool {
        matches!(self.counting, Counting::Model)
    }

    /// Tokens of `text`. Special-token text in code (`<|endoftext|>`) counts as plain text
    /// in tiktoken's encodings: the larger count, so that an agent that reads it either way
    /// stays within the budget. A tokenizer file counts as [`TokenizerFile::count`] says.
    pub fn count(&self, text: &str) -> usize {
        match self.counting {
            Counting::Model => self.scorer.count_tokens(text),
            Counting::Tiktoken(e) => e.bpe.count_ordinary(text),
            Counting::File(file) => file.count(text),
        }
    }

    /// At most [`BudgetCounter::count`] of `text`, without tokenizing: the model's floor
    /// ([`ScoringModel::min_tokens`]); 0 for the other tokenizers, whose vocabularies give
    /// no floor here (sound, and their texts are then counted when a stage asks).
    pub fn min_tokens(&self, text: &str) -> usize {
        match self.counting {
            Counting::Model => self.scorer.min_tokens(text),
            Counting::Tiktoken(_) | Counting::File(_) => 0,
        }
    }

    /// [`BudgetCounter::count`] of many texts, remembered by content hash: meant for texts
    /// that come back on every query (a workspace's chunks).
    pub fn count_batch(&self, texts: &[&str]) -> Vec<usize> {
        match self.counting {
            Counting::Model => self.scorer.count_tokens_batch(texts),
            Counting::Tiktoken(e) => e.memo.counts(texts, |t| e.bpe.count_ordinary(t)),
            Counting::File(file) => file.memo.counts(texts, |t| file.count(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlap::OverlapModel;

    /// A word-level tokenizer.json written by hand, as the format documents it: words and
    /// punctuation runs split by the `Whitespace` pre-tokenizer, one token each (`[UNK]` for
    /// words outside the vocabulary).
    const WORD_LEVEL: &str = r#"{
      "version": "1.0",
      "truncation": null,
      "padding": null,
      "added_tokens": [],
      "normalizer": null,
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": null,
      "decoder": null,
      "model": {
        "type": "WordLevel",
        "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "fn": 3, "(": 4, ")": 5},
        "unk_token": "[UNK]"
      }
    }"#;

    #[test]
    fn names_round_trip_and_other_strings_are_paths() {
        for (name, tokenizer) in NAMED {
            let spec: TokenizerSpec = name.parse().unwrap();
            assert_eq!(spec, TokenizerSpec::Named(tokenizer));
            assert_eq!(serde_json::to_value(&spec).unwrap(), name);
            assert_eq!(spec.load(), Ok(tokenizer));
        }
        assert_eq!(
            serde_json::from_value::<TokenizerSpec>("O200K".into()).unwrap(),
            TokenizerSpec::Named(BudgetTokenizer::O200k)
        );
        let spec =
            serde_json::from_value::<TokenizerSpec>("models/qwen/tokenizer.json".into()).unwrap();
        assert_eq!(
            spec,
            TokenizerSpec::File(PathBuf::from("models/qwen/tokenizer.json"))
        );
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            "models/qwen/tokenizer.json"
        );
    }

    #[test]
    fn the_encodings_count_as_openai_documents_them() {
        let model = OverlapModel::new();
        // tiktoken's own examples: "hello world" is 2 tokens in both encodings.
        let o200k = BudgetCounter::new(&model, BudgetTokenizer::O200k);
        let cl100k = BudgetCounter::new(&model, BudgetTokenizer::Cl100k);
        assert_eq!(o200k.count("hello world"), 2);
        assert_eq!(cl100k.count("hello world"), 2);
        // The two encodings differ on code, and the memo returns what was counted.
        let code = "fn main() {\n    println!(\"héllo, wörld\");\n}\n";
        assert_eq!(o200k.count_batch(&[code, code]), vec![o200k.count(code); 2]);
        assert!(!o200k.is_model());
        let by_model = BudgetCounter::new(&model, BudgetTokenizer::Model);
        assert!(by_model.is_model());
        assert_eq!(by_model.count(code), model.count_tokens(code));
    }

    #[test]
    fn a_tokenizer_file_counts_as_it_describes_and_loads_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, WORD_LEVEL).unwrap();
        let tokenizer = TokenizerSpec::File(path.clone()).load().unwrap();
        let model = OverlapModel::new();
        let counter = BudgetCounter::new(&model, tokenizer);
        assert!(!counter.is_model());
        assert_eq!(counter.count("hello world"), 2);
        // `fn`, `main` ([UNK]), `()`: a punctuation run is one word to `Whitespace`.
        assert_eq!(counter.count("fn main()"), 3);
        assert_eq!(counter.count_batch(&["hello world", "fn"]), vec![2, 1]);
        assert_eq!(counter.min_tokens("hello world"), 0);
        // The same file, by its directory and again by its path: one load.
        let again = TokenizerSpec::File(dir.path().to_path_buf())
            .load()
            .unwrap();
        assert_eq!(again, tokenizer);
        assert_eq!(tokenizer.name(), path.display().to_string());
    }

    #[test]
    fn a_missing_or_invalid_file_is_refused_naming_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let e = TokenizerSpec::File(missing.clone()).load().unwrap_err();
        assert_eq!(e.problem(), "not_found");
        assert_eq!(e.path(), missing.display().to_string());
        assert!(e.to_string().contains("model, o200k, cl100k"), "{e}");
        // A directory without a tokenizer.json names the file it looked for.
        let e = TokenizerSpec::File(dir.path().into()).load().unwrap_err();
        assert!(e.path().ends_with("tokenizer.json"), "{e}");

        let bad = dir.path().join("config.json");
        std::fs::write(&bad, r#"{"model_type": "qwen2"}"#).unwrap();
        let e = TokenizerSpec::File(bad.clone()).load().unwrap_err();
        assert_eq!(e.problem(), "invalid");
        assert!(e.to_string().starts_with(&bad.display().to_string()), "{e}");
        assert!(e.to_string().contains("tokenizer.json"), "{e}");

        // A relative path is read from the current directory; the error shows it whole.
        let e = TokenizerSpec::from("gpt2".to_string()).load().unwrap_err();
        assert!(Path::new(e.path()).is_absolute(), "{e}");
    }
}
