//! [`OverlapModel`]: a deterministic [`ScoringModel`] computed from token overlap, with no
//! llama.cpp and no model file. It exists to test the pipeline's own logic (budgets, order,
//! deadlines, the fine stage, assembly) exactly and in milliseconds; it is not a language
//! model and its rankings say nothing about ctxzip's quality. The real engine is tested on
//! the real model.
//!
//! ## What it computes
//! - **Tokens**: maximal runs of letters, digits and `_` (identifiers and numbers), and every
//!   other character that is not whitespace on its own. Whitespace is free. Byte ranges are
//!   exact.
//! - **NLL of a token** in a sequence: [`SEEN_NLL`] nats if the same token (identifiers
//!   compared case-insensitively) occurred earlier in the sequence, else
//!   `NEW_NLL_BASE + NEW_NLL_PER_BYTE · len` nats (a long new word is harder to guess). This
//!   imitates the one behaviour of a language model that conditional perplexity relies on: a
//!   text that contains the query's words makes them cheaper to predict.
//! - **Scores**: the sequence of a chunk is `chunk ++ "\n\n" ++ query` as in
//!   [`crate::engine`], so `query_nlls` are the query tokens' NLLs with the chunk's tokens
//!   seen, `query_tokens` those without, and `score = mean(without) − mean(with)`. The first
//!   token of every sequence is scored (as with a BOS token).
//! - **Window**: a chunk longer than `window_tokens − query tokens` keeps its head and is
//!   `truncated`; a query or prefix that leaves no room fails as the engine does.
//! - **Deadlines**, made deterministic: a call with a deadline already past decodes nothing
//!   (skips every item); a call with a deadline still ahead decodes items in input order while
//!   their tokens fit [`OverlapModel::deadline_tokens`] (unlimited by default), the rest come
//!   back `skipped`. The query's own NLL is always computed, as in the engine.
//! - **Token allowances** ([`ScoreOptions::max_tokens`]) exactly as the engine counts them:
//!   items are decoded in input order while the call's tokens, the query's own included,
//!   stay within it; the rest come back `skipped`.
//! - **Stats**: `tokens_decoded` counts the tokens of every sequence computed; there is no
//!   cache, so every other counter stays 0.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::engine::{
    CancelFlag, ChunkInput, ChunkScore, SEPARATOR, ScoreOptions, ScoreOutput, ScorerStats,
    TokenNll, TokenNlls,
};
use crate::error::{Error, Result};
use crate::model::{ModelDescription, ScoringModel, TokenCountMemo};

/// NLL in nats of a token that occurred earlier in the sequence.
pub const SEEN_NLL: f32 = 0.5;
/// NLL of a new token: this plus [`NEW_NLL_PER_BYTE`] per byte.
pub const NEW_NLL_BASE: f32 = 2.0;
pub const NEW_NLL_PER_BYTE: f32 = 0.1;

/// The deterministic overlap model; see the module docs.
#[derive(Debug)]
pub struct OverlapModel {
    /// Tokens one sequence may hold (chunk and query, or prefix and text).
    pub window_tokens: usize,
    /// Under a deadline still ahead, a call decodes items in input order while their tokens
    /// add up to at most this; `None`: no limit.
    pub deadline_tokens: Option<usize>,
    tokens_decoded: AtomicU64,
    counts: TokenCountMemo,
}

impl Default for OverlapModel {
    fn default() -> Self {
        OverlapModel {
            window_tokens: 4096,
            deadline_tokens: None,
            tokens_decoded: AtomicU64::new(0),
            counts: TokenCountMemo::new(),
        }
    }
}

impl OverlapModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// A model whose deadlines let through about `tokens` tokens of work per call.
    pub fn with_deadline_tokens(tokens: usize) -> Self {
        OverlapModel {
            deadline_tokens: Some(tokens),
            ..Self::default()
        }
    }
}

/// The tokens of `text` as byte ranges (see the module docs).
pub fn tokens(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut end = start + c.len_utf8();
        if is_word(c) {
            while let Some(&(i, next)) = chars.peek() {
                if !is_word(next) {
                    break;
                }
                end = i + next.len_utf8();
                chars.next();
            }
        }
        out.push((start, end));
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The key two tokens are compared by.
fn key(token: &str) -> String {
    token.to_lowercase()
}

/// NLLs of `text`'s tokens when the keys in `seen` already occurred, adding each as it goes.
fn nlls_after(seen: &mut HashSet<String>, text: &str, spans: &[(usize, usize)]) -> Vec<f32> {
    spans
        .iter()
        .map(|&(a, b)| {
            let token = &text[a..b];
            if seen.insert(key(token)) {
                NEW_NLL_BASE + NEW_NLL_PER_BYTE * token.len() as f32
            } else {
                SEEN_NLL
            }
        })
        .collect()
}

fn seen_in(text: &str, spans: &[(usize, usize)]) -> HashSet<String> {
    spans.iter().map(|&(a, b)| key(&text[a..b])).collect()
}

fn mean(values: &[f32]) -> f32 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f32>() / values.len() as f32
    }
}

/// How many tokens of work a call may still start under `options` (its deadline and its
/// token allowance), having decoded `decoded` already.
fn allowance(options: &ScoreOptions, deadline_tokens: Option<usize>, decoded: usize) -> usize {
    let by_deadline = match options.deadline {
        None => usize::MAX,
        Some(d) if d <= Instant::now() => 0,
        Some(_) => deadline_tokens.unwrap_or(usize::MAX),
    };
    let by_tokens = options
        .max_tokens
        .map_or(usize::MAX, |max| max.saturating_sub(decoded));
    by_deadline.min(by_tokens)
}

impl ScoringModel for OverlapModel {
    fn model_id(&self) -> Option<&str> {
        Some("overlap-model-v1")
    }

    fn description(&self) -> ModelDescription {
        ModelDescription {
            location: "overlap (deterministic test model)".into(),
            architecture: "overlap".into(),
            build: format!("window={}", self.window_tokens),
            device: "CPU".into(),
            gpu_layers: 0,
            gpu_layers_asked: 0,
        }
    }

    fn default_options(&self) -> ScoreOptions {
        ScoreOptions {
            max_packed_seqs: 1,
            reuse_kv_states: false,
            reuse_prefix: false,
            use_cache: false,
            deadline: None,
            max_tokens: None,
        }
    }

    fn stats(&self) -> ScorerStats {
        ScorerStats {
            tokens_decoded: self.tokens_decoded.load(Ordering::Relaxed),
            ..ScorerStats::default()
        }
    }

    fn count_tokens(&self, text: &str) -> usize {
        tokens(text).len()
    }

    fn count_tokens_batch(&self, texts: &[&str]) -> Vec<usize> {
        self.counts.counts(texts, |t| tokens(t).len())
    }

    /// Half the count, loose on purpose: the pipeline's tests then meet both chunks the floor
    /// rules out and chunks it cannot, which must be counted.
    fn min_tokens(&self, text: &str) -> usize {
        tokens(text).len() / 2
    }

    fn score_chunks_with(
        &self,
        query: &str,
        chunks: &[ChunkInput],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<ScoreOutput> {
        let q = tokens(query);
        if q.is_empty() {
            return Err(Error::EmptyQuery);
        }
        let sep = tokens(SEPARATOR).len();
        if q.len() + sep >= self.window_tokens {
            return Err(Error::QueryTooLong {
                n_tokens: q.len(),
                window_tokens: self.window_tokens,
            });
        }
        let chunk_room = self.window_tokens - q.len() - sep;
        let unconditional = nlls_after(&mut HashSet::new(), query, &q);
        let mut decoded = q.len() + sep;
        let query_tokens: Vec<TokenNll> = q
            .iter()
            .zip(&unconditional)
            .map(|(&(start, end), &nll)| TokenNll { start, end, nll })
            .collect();
        let query_nll = mean(&unconditional);
        let mut left = allowance(&options, self.deadline_tokens, decoded);
        let mut scores = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let mut spans = tokens(&chunk.text);
            let truncated = spans.len() > chunk_room;
            spans.truncate(chunk_room);
            let cost = spans.len() + sep + q.len();
            if cost > left {
                // Nothing after a skipped item is started either: the engine's order.
                left = 0;
                scores.push(ChunkScore {
                    score: f32::NEG_INFINITY,
                    nll: f32::INFINITY,
                    query_nlls: Vec::new(),
                    n_tokens: spans.len(),
                    truncated,
                    kv_state_hit: false,
                    cache_hit: false,
                    skipped: true,
                });
                continue;
            }
            left -= cost;
            decoded += cost;
            let mut seen = seen_in(&chunk.text, &spans);
            let query_nlls = nlls_after(&mut seen, query, &q);
            let nll = mean(&query_nlls);
            scores.push(ChunkScore {
                score: query_nll - nll,
                nll,
                query_nlls,
                n_tokens: spans.len(),
                truncated,
                kv_state_hit: false,
                cache_hit: false,
                skipped: false,
            });
        }
        self.tokens_decoded
            .fetch_add(decoded as u64, Ordering::Relaxed);
        Ok(ScoreOutput {
            query_nll,
            n_query_tokens: q.len(),
            query_tokens,
            scores,
            model_tokens: decoded,
        })
    }

    fn token_nlls_batch_with(
        &self,
        prefix: Option<&str>,
        texts: &[&str],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<Vec<TokenNlls>> {
        let prefix = prefix.unwrap_or("");
        let p = tokens(prefix);
        if p.len() >= self.window_tokens {
            return Err(Error::PrefixTooLong {
                n_tokens: p.len(),
                window_tokens: self.window_tokens,
            });
        }
        let room = self.window_tokens - p.len();
        let prefix_seen = seen_in(prefix, &p);
        let mut left = allowance(&options, self.deadline_tokens, 0);
        let mut decoded = 0;
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let mut spans = tokens(text);
            let truncated = spans.len() > room;
            spans.truncate(room);
            let cost = p.len() + spans.len();
            if cost > left {
                left = 0;
                out.push(TokenNlls {
                    tokens: Vec::new(),
                    first_token_scored: true,
                    truncated,
                    skipped: true,
                });
                continue;
            }
            left -= cost;
            decoded += cost;
            let nlls = nlls_after(&mut prefix_seen.clone(), text, &spans);
            out.push(TokenNlls {
                tokens: spans
                    .iter()
                    .zip(nlls)
                    .map(|(&(start, end), nll)| TokenNll { start, end, nll })
                    .collect(),
                first_token_scored: true,
                truncated,
                skipped: false,
            });
        }
        self.tokens_decoded
            .fetch_add(decoded as u64, Ordering::Relaxed);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_words_and_single_symbols_with_exact_ranges() {
        let text = "fn é_1(x: u8) {}";
        let words: Vec<&str> = tokens(text).iter().map(|&(a, b)| &text[a..b]).collect();
        assert_eq!(words, ["fn", "é_1", "(", "x", ":", "u8", ")", "{", "}"]);
        assert!(tokens(" \n\t").is_empty());
    }

    #[test]
    fn a_chunk_with_the_query_words_scores_higher_and_values_are_exact() {
        let model = OverlapModel::new();
        let chunks = [
            ChunkInput {
                hash: 1,
                text: "def tax(total): return total".into(),
            },
            ChunkInput {
                hash: 2,
                text: "def draw(size): pass".into(),
            },
        ];
        let out = model
            .score_chunks_with(
                "tax total",
                &chunks,
                model.default_options(),
                &CancelFlag::new(),
            )
            .unwrap();
        // Unconditional: both words new: 2.0 + 0.3 and 2.0 + 0.5.
        let nlls: Vec<f32> = out.query_tokens.iter().map(|t| t.nll).collect();
        assert!(
            (nlls[0] - 2.3).abs() < 1e-6 && (nlls[1] - 2.5).abs() < 1e-6,
            "{nlls:?}"
        );
        assert_eq!(out.scores[0].query_nlls, [SEEN_NLL, SEEN_NLL]);
        assert_eq!(out.scores[1].query_nlls, nlls);
        assert!(out.scores[0].score > 0.0 && out.scores[1].score == 0.0);
        // The query once, then each chunk (8 and 7 tokens) with it; whitespace is free.
        assert_eq!(out.model_tokens, 2 + (8 + 2) + (7 + 2));
        assert_eq!(model.stats().tokens_decoded, out.model_tokens as u64);
    }

    #[test]
    fn a_deadline_lets_through_a_prefix_of_the_items_in_input_order() {
        let model = OverlapModel::with_deadline_tokens(6);
        let texts = ["a b c", "d e f", "g h i"];
        let ahead = ScoreOptions {
            deadline: Some(Instant::now() + std::time::Duration::from_secs(3600)),
            ..model.default_options()
        };
        let out = model
            .token_nlls_batch_with(None, &texts, ahead, &CancelFlag::new())
            .unwrap();
        let skipped: Vec<bool> = out.iter().map(|t| t.skipped).collect();
        assert_eq!(skipped, [false, false, true]);
        let past = ScoreOptions {
            deadline: Some(Instant::now()),
            ..ahead
        };
        let out = model
            .token_nlls_batch_with(None, &texts, past, &CancelFlag::new())
            .unwrap();
        assert!(out.iter().all(|t| t.skipped));
        let cancelled = CancelFlag::new();
        cancelled.cancel();
        let err = model.token_nlls_batch_with(None, &texts, ahead, &cancelled);
        assert!(matches!(err, Err(Error::Cancelled)));
    }

    #[test]
    fn a_token_allowance_counts_the_query_and_stops_at_the_first_item_past_it() {
        let model = OverlapModel::new();
        let chunks: Vec<ChunkInput> = ["a b", "c d e f", "g"]
            .iter()
            .enumerate()
            .map(|(i, text)| ChunkInput {
                hash: i as u64,
                text: text.to_string(),
            })
            .collect();
        // The query (2 tokens; whitespace is free), then each chunk with it: 2 + 2, 4 + 2,
        // 1 + 2; so 2, 6, 12 and 15 tokens in all.
        let options = |max| ScoreOptions {
            max_tokens: Some(max),
            ..model.default_options()
        };
        let skipped = |max| -> Vec<bool> {
            let out = model
                .score_chunks_with("x y", &chunks, options(max), &CancelFlag::new())
                .unwrap();
            assert!(
                out.model_tokens <= max.max(2),
                "{} > {max}",
                out.model_tokens
            );
            out.scores.iter().map(|s| s.skipped).collect()
        };
        assert_eq!(skipped(10), [false, true, true]);
        // The third would fit, but nothing after a skipped item starts.
        assert_eq!(skipped(11), [false, true, true]);
        assert_eq!(skipped(12), [false, false, true]);
        assert_eq!(skipped(15), [false, false, false]);
        // The query's own NLL is computed whatever the allowance.
        assert_eq!(skipped(0), [true, true, true]);
        let texts = ["a b c", "d e f"];
        let out = model
            .token_nlls_batch_with(None, &texts, options(3), &CancelFlag::new())
            .unwrap();
        let skipped: Vec<bool> = out.iter().map(|t| t.skipped).collect();
        assert_eq!(skipped, [false, true]);
    }
}
