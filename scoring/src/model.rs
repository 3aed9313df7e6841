//! The model interface: what the compress pipeline, the benchmarks and the servers need from
//! a scoring model, so that they do not depend on one backend.
//!
//! [`crate::Scorer`] (llama.cpp in process) implements [`ScoringModel`]. Code that only
//! scores takes `&dyn ScoringModel` (or holds a [`SharedModel`]); only the start-up code that
//! loads a GGUF names the concrete engine.
//!
//! What every backend shares, so that it behaves the same whatever scores:
//! - results that outlive a call are keyed by [`ScoringModel::model_id`] (the GGUF's sha256,
//!   and the GPU when there is one, for the llama.cpp engine; server, served model and
//!   tokenizer for the remote scorer) in the one disk cache every backend uses
//!   ([`crate::cache::ScoreCache`]), so results of different models, backends or GPUs never
//!   mix;
//! - token counts of texts that come back (a workspace's chunks) are remembered by content
//!   hash in a [`TokenCountMemo`];
//! - [`ScoreOptions::deadline`] means the same everywhere: nothing is started that would end
//!   after it, cached results are served whatever the time, and what was not reached comes
//!   back `skipped`, in input order (so the caller's order decides what is reached first);
//! - [`ScoreOptions::max_tokens`] likewise, in tokens of work: nothing is started that would
//!   take the call's decoded (or, remote, sent) tokens past it, cached results are free, and
//!   the rest comes back `skipped` in input order.

use std::sync::Arc;

use dashmap::DashMap;

use crate::cache::text_hash;
use crate::engine::{CancelFlag, ChunkInput, ScoreOptions, ScoreOutput, ScorerStats, TokenNlls};
use crate::error::Result;

/// A scoring model, shared by reference between threads.
pub type SharedModel = Arc<dyn ScoringModel>;

/// What a status report says about the model in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDescription {
    /// Where the model lives: the GGUF file's path for the llama.cpp engine.
    pub location: String,
    /// The model's architecture (`general.architecture` of a GGUF).
    pub architecture: String,
    /// Build and runtime facts of the backend, e.g. `backend=cpu simd=native (...) threads=3`.
    pub build: String,
    /// The device that runs the model: `CPU`, or the GPU with its name, e.g.
    /// `CUDA0 (NVIDIA H200)`.
    pub device: String,
    /// Layers offloaded to that GPU.
    pub gpu_layers: u32,
    /// Layers the settings asked to offload (more than `gpu_layers` when the model has fewer,
    /// or when no GPU was found).
    pub gpu_layers_asked: u32,
}

/// The operations the pipeline needs from a language model; see the module docs for what
/// every implementation must keep. The scores themselves are defined in [`crate::engine`]:
/// chunk, separator and query tokenized apart and concatenated chunk first.
///
/// All methods block; call them from a worker thread, not from an async task.
pub trait ScoringModel: Send + Sync {
    /// The identity of the model's weights and tokenizer (the GGUF sha256 for llama.cpp).
    /// Every cache that outlives a call is keyed by it; `None` when it is unknown, and then
    /// nothing is cached beyond the process.
    fn model_id(&self) -> Option<&str>;

    /// Where the model lives and what runs it, for status reports.
    fn description(&self) -> ModelDescription;

    /// The options a plain call uses: every reuse the backend is configured for.
    fn default_options(&self) -> ScoreOptions;

    /// Counters since the model was loaded (tokens decoded, cache hits).
    fn stats(&self) -> ScorerStats;

    /// Number of model tokens of `text`: what budgets are counted in.
    fn count_tokens(&self, text: &str) -> usize;

    /// [`ScoringModel::count_tokens`] of many texts, remembered by content hash (a
    /// [`TokenCountMemo`]): meant for texts that come back on every query.
    fn count_tokens_batch(&self, texts: &[&str]) -> Vec<usize>;

    /// How many chunks the backend scores at once: a caller that splits a call (to report
    /// progress between the parts) keeps each part at least this large.
    fn chunks_in_flight(&self) -> usize {
        self.default_options().max_packed_seqs.max(1)
    }

    /// A lower bound on [`ScoringModel::count_tokens`] of `text`, without tokenizing (a scan
    /// of its bytes): the pipeline counts a chunk only when this floor says it could still
    /// fit ([`TokenFloor`]). 0 is always sound.
    fn min_tokens(&self, text: &str) -> usize;

    /// Scores every chunk against `query`: the query's tokens with their NLL given an empty
    /// chunk ([`ScoreOutput::query_tokens`]) and, per chunk, each query token's NLL given
    /// the chunk ([`crate::ChunkScore::query_nlls`]). Chunks the deadline did not let through
    /// come back `skipped`; a cancelled flag ends the call with [`crate::Error::Cancelled`].
    fn score_chunks_with(
        &self,
        query: &str,
        chunks: &[ChunkInput],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<ScoreOutput>;

    /// Per-token NLLs of each text given an optional `prefix` shared by all of them (token
    /// lists are concatenated: a separator belongs in the prefix). Texts the deadline did not
    /// let through come back `skipped`.
    fn token_nlls_batch_with(
        &self,
        prefix: Option<&str>,
        texts: &[&str],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<Vec<TokenNlls>>;
}

/// Token counts of texts by content hash, for [`ScoringModel::count_tokens_batch`]: a
/// workspace's chunks are counted once, not on every query. Cleared when it reaches
/// [`TokenCountMemo::MAX_TEXTS`] texts, so memory stays bounded.
#[derive(Debug, Default)]
pub struct TokenCountMemo {
    counts: DashMap<u64, u32>,
}

impl TokenCountMemo {
    /// About 25 MB of entries.
    pub const MAX_TEXTS: usize = 1 << 21;

    pub fn new() -> Self {
        Self::default()
    }

    /// The count of each text, from the memo or from `count` (then remembered).
    pub fn counts(&self, texts: &[&str], count: impl Fn(&str) -> usize) -> Vec<usize> {
        texts
            .iter()
            .map(|&text| {
                let key = text_hash(text);
                if let Some(n) = self.counts.get(&key) {
                    return *n as usize;
                }
                let n = count(text);
                if self.counts.len() >= Self::MAX_TEXTS {
                    self.counts.clear();
                }
                self.counts
                    .insert(key, u32::try_from(n).unwrap_or(u32::MAX));
                n
            })
            .collect()
    }
}

/// A cheap, sound lower bound on a tokenizer's count of a text, from two facts about its
/// vocabulary: the longest piece any token renders to (so a text of `n` bytes needs at least
/// `n / max_piece_bytes` tokens), and the most runs of letters and digits one piece holds
/// (BPE pre-tokenizers split words from punctuation, so a piece almost always holds one run:
/// `foo(bar)` needs a token for `foo` and another for `bar`).
///
/// Sound because a tokenizer's pieces, concatenated, are the text (a SentencePiece tokenizer
/// may add a leading space, which only adds bytes): a token whose piece holds at most `r`
/// runs touches at most `r` runs of the text, so a text of `R` runs needs `R / r` tokens.
/// Bytes that are not whole UTF-8 characters inside a piece count as letters, which can only
/// raise `r`. Tokens that tokenizing never produces (control tokens render empty) count for
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenFloor {
    /// The longest piece in bytes (at least 1).
    pub max_piece_bytes: usize,
    /// The most runs of letters and digits in one piece (at least 1).
    pub max_word_runs: usize,
}

impl TokenFloor {
    /// The floor of a vocabulary given each token's rendered piece.
    pub fn from_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> TokenFloor {
        let mut floor = TokenFloor {
            max_piece_bytes: 1,
            max_word_runs: 1,
        };
        for piece in pieces {
            floor.max_piece_bytes = floor.max_piece_bytes.max(piece.len());
            floor.max_word_runs = floor.max_word_runs.max(word_runs_of_bytes(piece));
        }
        floor
    }

    /// At least this many tokens make up `text`.
    pub fn min_tokens(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        let by_bytes = text.len().div_ceil(self.max_piece_bytes);
        let by_words = word_runs(text).div_ceil(self.max_word_runs);
        by_bytes.max(by_words).max(1)
    }
}

/// Maximal runs of alphanumeric characters in `text`.
pub fn word_runs(text: &str) -> usize {
    let mut runs = 0;
    let mut in_run = false;
    if text.is_ascii() {
        // Bytes are characters: no decoding (every chunk of a big tree passes here).
        for b in text.bytes() {
            let word = b.is_ascii_alphanumeric();
            runs += usize::from(word && !in_run);
            in_run = word;
        }
        return runs;
    }
    for c in text.chars() {
        let word = c.is_alphanumeric();
        runs += usize::from(word && !in_run);
        in_run = word;
    }
    runs
}

/// [`word_runs`] of a token's piece, which may end or begin inside a UTF-8 character: such
/// bytes count as alphanumeric (the most runs the piece could touch).
fn word_runs_of_bytes(piece: &[u8]) -> usize {
    let mut runs = 0;
    let mut in_run = false;
    for chunk in piece.utf8_chunks() {
        for c in chunk.valid().chars() {
            let word = c.is_alphanumeric();
            runs += usize::from(word && !in_run);
            in_run = word;
        }
        if !chunk.invalid().is_empty() {
            runs += usize::from(!in_run);
            in_run = true;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::{TokenFloor, word_runs};

    #[test]
    fn the_floor_counts_word_runs_per_piece_and_bytes_per_longest_piece() {
        let floor = TokenFloor::from_pieces([b"foo".as_slice(), b" bar", b"(", b"========"]);
        assert_eq!(floor.max_piece_bytes, 8);
        assert_eq!(floor.max_word_runs, 1);
        // foo, bar, baz: three runs, each its own token at least.
        assert_eq!(floor.min_tokens("foo(bar.baz)"), 3);
        assert_eq!(floor.min_tokens(&"=".repeat(20)), 3);
        assert_eq!(floor.min_tokens("  "), 1);
        assert_eq!(floor.min_tokens(""), 0);
        // A piece joining two words halves what runs can prove.
        let joined = TokenFloor::from_pieces([b"<tool_call>".as_slice()]);
        assert_eq!(joined.max_word_runs, 2);
        assert_eq!(joined.min_tokens("foo(bar.baz)"), 2);
    }

    #[test]
    fn word_runs_count_ascii_and_unicode_text_alike() {
        assert_eq!(word_runs("foo(bar.baz) + 42"), 4);
        assert_eq!(word_runs("foo(bar.baz) + 42 é"), 5);
        assert_eq!(word_runs("fooé(bar"), 2);
        assert_eq!(word_runs(""), 0);
    }

    #[test]
    fn a_piece_cut_inside_a_character_counts_the_cut_bytes_as_a_word() {
        // "é b" cut after the first byte of é: the tail byte could end a word.
        let floor = TokenFloor::from_pieces(["é b".as_bytes()[1..].as_ref()]);
        assert_eq!(floor.max_word_runs, 2);
        assert_eq!(word_runs("Ñiño façade, 東京!"), 3);
    }
}
