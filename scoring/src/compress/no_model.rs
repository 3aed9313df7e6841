//! [`NoModel`]: what a compress request scores through when it needs no model. The BM25
//! ranker reads nothing with a model, and a budget counted in o200k, cl100k or a tokenizer
//! file counts nothing with one, so such a request runs without a model file: no download,
//! no load, no GPU, no scoring server ([`NoModel::for_options`] says when). Every front door
//! (CLI, LSP, MCP) asks it before it starts or waits for the model.

use super::tokenizer::{BudgetCounter, BudgetTokenizer};
use super::{CompressOptions, NO_REUSE, Ranker};
use crate::engine::{CancelFlag, ChunkInput, ScoreOptions, ScoreOutput, ScorerStats, TokenNlls};
use crate::error::{Error, Result};
use crate::model::{ModelDescription, ScoringModel};

/// A [`ScoringModel`] with no model behind it: it counts tokens in the request's budget
/// tokenizer and refuses to score ([`Error::NoModel`]).
#[derive(Debug, Clone, Copy)]
pub struct NoModel {
    /// Never [`BudgetTokenizer::Model`].
    tokenizer: BudgetTokenizer,
}

impl NoModel {
    /// The scorer for a request with these options when it needs no model: the BM25 ranker
    /// with a budget in a tokenizer other than the model's. `None`: start the model.
    pub fn for_options(options: &CompressOptions) -> Option<NoModel> {
        (options.ranker == Ranker::Bm25 && options.tokenizer != BudgetTokenizer::Model).then_some(
            NoModel {
                tokenizer: options.tokenizer,
            },
        )
    }

    fn counter(&self) -> BudgetCounter<'_> {
        BudgetCounter::new(self, self.tokenizer)
    }
}

impl ScoringModel for NoModel {
    /// Nothing it computes outlives the call.
    fn model_id(&self) -> Option<&str> {
        None
    }

    fn description(&self) -> ModelDescription {
        ModelDescription {
            location: "none (keyword ranking)".into(),
            architecture: "none".into(),
            build: format!("tokens counted in {}", self.tokenizer.name()),
            device: "none".into(),
            gpu_layers: 0,
            gpu_layers_asked: 0,
        }
    }

    fn default_options(&self) -> ScoreOptions {
        NO_REUSE
    }

    fn stats(&self) -> ScorerStats {
        ScorerStats::default()
    }

    /// With no model, "model tokens" are the budget tokenizer's.
    fn count_tokens(&self, text: &str) -> usize {
        self.counter().count(text)
    }

    fn count_tokens_batch(&self, texts: &[&str]) -> Vec<usize> {
        self.counter().count_batch(texts)
    }

    fn min_tokens(&self, _text: &str) -> usize {
        0
    }

    fn score_chunks_with(
        &self,
        _query: &str,
        _chunks: &[ChunkInput],
        _options: ScoreOptions,
        _cancel: &CancelFlag,
    ) -> Result<ScoreOutput> {
        Err(Error::NoModel)
    }

    fn token_nlls_batch_with(
        &self,
        _prefix: Option<&str>,
        _texts: &[&str],
        _options: ScoreOptions,
        _cancel: &CancelFlag,
    ) -> Result<Vec<TokenNlls>> {
        Err(Error::NoModel)
    }
}
