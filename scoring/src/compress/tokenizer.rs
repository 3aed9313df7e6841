//! What a budget counts in: the scoring model's own tokenizer, or an agent's (OpenAI's o200k
//! or cl100k encodings, shipped inside `tiktoken-rs`: nothing is downloaded). [`BudgetCounter`]
//! is the one counter the pipeline's budget logic uses (unit counts, headers, the rendered
//! output); the model's own work (candidate heads, the query window, scoring) always counts
//! in the model's tokenizer.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

use crate::model::{ScoringModel, TokenCountMemo};

/// The tokenizer a budget is counted in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum BudgetTokenizer {
    /// The scoring model's own tokenizer (the default).
    #[default]
    Model,
    /// OpenAI's o200k_base (GPT-4o and later).
    O200k,
    /// OpenAI's cl100k_base (GPT-4, GPT-3.5).
    Cl100k,
}

impl BudgetTokenizer {
    /// The tokenizer's name, as every surface spells it.
    pub fn name(self) -> &'static str {
        match self {
            BudgetTokenizer::Model => "model",
            BudgetTokenizer::O200k => "o200k",
            BudgetTokenizer::Cl100k => "cl100k",
        }
    }
}

impl std::str::FromStr for BudgetTokenizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "model" => Ok(BudgetTokenizer::Model),
            "o200k" => Ok(BudgetTokenizer::O200k),
            "cl100k" => Ok(BudgetTokenizer::Cl100k),
            other => Err(format!(
                "unknown tokenizer {other:?}: use model, o200k or cl100k"
            )),
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
        BudgetTokenizer::Model => return None,
        BudgetTokenizer::O200k => (&O200K, tiktoken_rs::o200k_base_singleton),
        BudgetTokenizer::Cl100k => (&CL100K, tiktoken_rs::cl100k_base_singleton),
    };
    Some(cell.get_or_init(|| Encoding {
        bpe: bpe(),
        memo: TokenCountMemo::new(),
    }))
}

/// Counts text for the budget, in the request's tokenizer.
#[derive(Clone, Copy)]
pub struct BudgetCounter<'a> {
    scorer: &'a dyn ScoringModel,
    encoding: Option<&'static Encoding>,
}

impl<'a> BudgetCounter<'a> {
    pub fn new(scorer: &'a dyn ScoringModel, tokenizer: BudgetTokenizer) -> Self {
        BudgetCounter {
            scorer,
            encoding: encoding(tokenizer),
        }
    }

    /// Whether budgets count in the model's tokenizer (then a budget count is a model count).
    pub fn is_model(&self) -> bool {
        self.encoding.is_none()
    }

    /// Tokens of `text`. Special-token text in code (`<|endoftext|>`) counts as plain text:
    /// the larger count, so that an agent that reads it either way stays within the budget.
    pub fn count(&self, text: &str) -> usize {
        match self.encoding {
            None => self.scorer.count_tokens(text),
            Some(e) => e.bpe.count_ordinary(text),
        }
    }

    /// At most [`BudgetCounter::count`] of `text`, without tokenizing: the model's floor
    /// ([`ScoringModel::min_tokens`]); 0 for the other encodings, whose vocabularies give
    /// no floor here (sound, and their texts are then counted when a stage asks).
    pub fn min_tokens(&self, text: &str) -> usize {
        match self.encoding {
            None => self.scorer.min_tokens(text),
            Some(_) => 0,
        }
    }

    /// [`BudgetCounter::count`] of many texts, remembered by content hash: meant for texts
    /// that come back on every query (a workspace's chunks).
    pub fn count_batch(&self, texts: &[&str]) -> Vec<usize> {
        match self.encoding {
            None => self.scorer.count_tokens_batch(texts),
            Some(e) => e.memo.counts(texts, |t| e.bpe.count_ordinary(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlap::OverlapModel;

    #[test]
    fn names_round_trip_and_a_bad_name_lists_the_choices() {
        for t in [
            BudgetTokenizer::Model,
            BudgetTokenizer::O200k,
            BudgetTokenizer::Cl100k,
        ] {
            assert_eq!(t.name().parse::<BudgetTokenizer>(), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
        let e = "gpt2".parse::<BudgetTokenizer>().unwrap_err();
        assert!(e.contains("model, o200k or cl100k"), "{e}");
        let e = serde_json::from_value::<BudgetTokenizer>("gpt2".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("o200k") && e.contains("cl100k"), "{e}");
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
}
