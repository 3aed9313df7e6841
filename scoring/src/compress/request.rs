//! One compress request on every surface: [`CompressRequest`] is what a user sets (the CLI's
//! flags, the LSP's `ctxzip/compress` params, the MCP tool's arguments, each spelled by its
//! surface's convention), resolved once here into the [`CompressOptions`] the pipeline runs;
//! [`CompressError`] is every way a request fails, as data (a kind and fields) that each
//! shell words in its own vocabulary.
//!
//! Adding an option: a field here (its doc is the CLI's help and the MCP schema's
//! description), its line in [`CompressRequest::resolve`], and the editor clients' setting
//! where an editor user would set it. The CLI flattens this struct into its flags (feature
//! `clap`), the MCP tool flattens it into its input schema (feature `schemars`), and the LSP
//! maps its camelCase keys onto these names; `tests/options_parity.rs` walks the fields
//! ([`CompressRequest::field_names`]) over every surface.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::tokenizer::{TokenizerFileError, TokenizerSpec};
use super::{Budget, CompressOptions, DEFAULT_BUDGET_TOKENS, Focus, Format, Ranker};

/// What a user asks for. Every field but `query` may be left out: [`CompressRequest::resolve`]
/// fills it from the surface's settings, else from [`CompressOptions::default`].
///
/// The focus (the file and line the user works at) is not a field: each surface gives it in
/// its own shape (`FILE:LINE`, an LSP position) and resolves it against its own files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct CompressRequest {
    /// What the context is for, in words: the task, question or bug, e.g. "where are
    /// retries handled and how is the backoff computed?".
    #[cfg_attr(feature = "clap", arg(skip))]
    pub query: String,
    /// Output budget in tokens of `tokenizer`; never exceeded.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, short = 'b', allow_hyphen_values = true,
        conflicts_with = "rate", value_name = "TOKENS",
        default_value = DEFAULT_BUDGET_TOKENS.to_string()))]
    pub budget: Option<i64>,
    /// Keep this fraction of the workspace's tokens instead of a budget (0 < rate <= 1).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "R"))]
    pub rate: Option<f64>,
    /// What the budget and the reported token counts count in: the scoring model's own
    /// tokenizer, an agent's (o200k: GPT-4o and later; cl100k: GPT-4), or the one a
    /// Hugging Face tokenizer.json describes (its path). The model's own work counts in its
    /// tokenizer whatever this is.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "model|o200k|cl100k|PATH",
        default_value = CompressOptions::default().tokenizer.name()))]
    pub tokenizer: Option<TokenizerSpec>,
    /// Layout of the context: text, markdown, json or xml.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_enum,
        default_value = CompressOptions::default().format.name()))]
    pub format: Option<Format>,
    /// Keep whole functions: skip the stage that prunes kept functions to their relevant
    /// blocks.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_fine: bool,
    /// How chunks are ranked: the model's scores fused with BM25's order by reciprocal rank
    /// (the default: it answered the most questions over whole repositories), the model
    /// alone, or BM25 alone (the lexical baseline, no model scoring; with a tokenizer other
    /// than the model's it needs no model at all).
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_enum,
        default_value = CompressOptions::default().ranker.name()))]
    pub ranker: Option<Ranker>,
    /// Chunks the model scores per query at most; more finds more, at more model time. 0
    /// scores none (BM25's order stands, chunks the query names are still scored) and keeps
    /// the stage that prunes kept functions: about half the model tokens, most of the
    /// gain over BM25 (BENCHMARKS.md, "What each model stage adds").
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N",
        default_value = CompressOptions::default().max_candidates.to_string()))]
    pub candidates: Option<usize>,
    /// Answer within about this many milliseconds of model time: candidates are scored best
    /// first (by BM25; functions first for a question) until then, the rest keep BM25's
    /// order, functions not reached stay whole.
    /// Scores already cached are used regardless, so asking again refines the answer.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "MS"))]
    pub deadline_ms: Option<u64>,
    /// Spend at most about this many model tokens (decoded, or sent to a remote scorer) on
    /// the answer (default 6000; more reads more candidates, worth it where a GPU or a
    /// scoring server makes model tokens cheap): the stage that prunes kept functions gets
    /// its share first, candidates are scored best first (by BM25; functions first for a
    /// question) with the rest, the others keep BM25's order. Cached scores cost nothing,
    /// so asking again refines the answer.
    #[serde(default)]
    #[cfg_attr(feature = "clap", arg(long, value_name = "TOKENS"))]
    pub max_model_tokens: Option<usize>,
}

impl CompressRequest {
    /// The request's field names (snake case), walked from its serialized form: the list
    /// every surface must offer, spelled by its convention.
    pub fn field_names() -> Vec<String> {
        match serde_json::to_value(CompressRequest::default()) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// This request with the fields it leaves unset taken from `defaults` (a surface's
    /// settings). A budget and a rate are one choice: a request that sets either takes
    /// neither from `defaults`.
    pub fn or_defaults(&self, defaults: &CompressRequest) -> CompressRequest {
        let (Ok(Value::Object(over)), Ok(Value::Object(mut merged)), Ok(Value::Object(unset))) = (
            serde_json::to_value(self),
            serde_json::to_value(defaults),
            serde_json::to_value(CompressRequest::default()),
        ) else {
            return self.clone();
        };
        if self.budget.is_some() || self.rate.is_some() {
            merged.insert("budget".into(), Value::Null);
            merged.insert("rate".into(), Value::Null);
        }
        // A field at its unset value (null, false, "") leaves the default in place.
        for (key, value) in over {
            if unset.get(&key) != Some(&value) {
                merged.insert(key, value);
            }
        }
        serde_json::from_value(Value::Object(merged)).unwrap_or_else(|_| self.clone())
    }

    /// Checks the request and resolves it into what the pipeline runs: fields left unset
    /// take [`CompressOptions::default`] (and [`DEFAULT_BUDGET_TOKENS`]); the focus comes
    /// from the surface, resolved against its own files.
    pub fn resolve(&self, focus: Option<Focus>) -> Result<CompressOptions, CompressError> {
        if self.query.trim().is_empty() {
            return Err(CompressError::EmptyQuery);
        }
        let budget = match (self.budget, self.rate) {
            (Some(_), Some(_)) => return Err(CompressError::BudgetAndRate),
            (Some(budget), None) if budget <= 0 => {
                return Err(CompressError::BadBudget { budget });
            }
            (Some(budget), None) => Budget::Tokens(usize::try_from(budget).unwrap_or(usize::MAX)),
            (None, Some(rate)) if !(rate > 0.0 && rate <= 1.0) => {
                return Err(CompressError::BadRate { rate });
            }
            (None, Some(rate)) => Budget::Rate(rate),
            (None, None) => Budget::Tokens(DEFAULT_BUDGET_TOKENS),
        };
        let defaults = CompressOptions::default();
        Ok(CompressOptions {
            budget,
            tokenizer: match &self.tokenizer {
                Some(spec) => spec.load()?,
                None => defaults.tokenizer,
            },
            format: self.format.unwrap_or(defaults.format),
            focus,
            fine: !self.no_fine,
            ranker: self.ranker.unwrap_or(defaults.ranker),
            max_candidates: self.candidates.unwrap_or(defaults.max_candidates),
            deadline: self.deadline_ms.map(Duration::from_millis),
            max_model_tokens: self.max_model_tokens.or(defaults.max_model_tokens),
            ..defaults
        })
    }
}

/// Every way a compress request fails, as data: a kind ([`CompressError::kind`]) and fields
/// ([`CompressError::data`]). The messages say what is wrong and the fix in words that hold
/// on every surface; each shell words the fix in its own terms (a flag, a request key, a
/// setting) from the kind and fields.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("empty query: say what the context is for, e.g. \"where are retries handled?\"")]
    EmptyQuery,
    #[error("budget must be a positive number of tokens (got {budget}), e.g. 2000")]
    BadBudget { budget: i64 },
    #[error("rate must be in (0, 1] (got {rate}); 0.2 keeps a fifth of the tokens")]
    BadRate { rate: f64 },
    #[error("give a budget or a rate, not both")]
    BudgetAndRate,
    #[error("nothing to compress: no source files with content under the given paths")]
    EmptyWorkspace,
    #[error(
        "budget of {budget} tokens is smaller than any chunk (the smallest needs {smallest} with its file header); raise the budget to at least {smallest}"
    )]
    BudgetTooSmall { budget: usize, smallest: usize },
    #[error(
        "nothing indexed yet: the workspace is still being indexed ({files_done} of {files_total} files); retry in a moment"
    )]
    IndexNotReady {
        files_done: usize,
        files_total: usize,
    },
    /// However the path gets outside (`..`, a symlink) and whether or not anything is there:
    /// `path` is the path as the request gave it, never where it leads.
    #[error("{path}: only files under the workspace root can be read")]
    PathOutsideRoot { path: String },
    /// The request's `tokenizer` names a file that is missing, unreadable or no tokenizer.
    #[error(transparent)]
    TokenizerFile(#[from] TokenizerFileError),
    #[error(transparent)]
    Scoring(#[from] crate::Error),
}

impl CompressError {
    /// The error's kind, in snake case: what clients switch on.
    pub fn kind(&self) -> &'static str {
        match self {
            CompressError::EmptyQuery => "empty_query",
            CompressError::BadBudget { .. } => "bad_budget",
            CompressError::BadRate { .. } => "bad_rate",
            CompressError::BudgetAndRate => "budget_and_rate",
            CompressError::EmptyWorkspace => "empty_workspace",
            CompressError::BudgetTooSmall { .. } => "budget_too_small",
            CompressError::IndexNotReady { .. } => "index_not_ready",
            CompressError::PathOutsideRoot { .. } => "path_outside_root",
            CompressError::TokenizerFile(_) => "tokenizer_file",
            CompressError::Scoring(_) => "scoring",
        }
    }

    /// The kind and the fields, e.g. `{"kind": "budget_too_small", "budget": 3,
    /// "smallest": 41}`: what a protocol sends beside the message.
    pub fn data(&self) -> Value {
        let mut data = match self {
            CompressError::BadBudget { budget } => json!({ "budget": budget }),
            CompressError::BadRate { rate } => json!({ "rate": rate }),
            CompressError::BudgetTooSmall { budget, smallest } => {
                json!({ "budget": budget, "smallest": smallest })
            }
            CompressError::IndexNotReady {
                files_done,
                files_total,
            } => json!({ "files_done": files_done, "files_total": files_total }),
            CompressError::PathOutsideRoot { path } => json!({ "path": path }),
            CompressError::TokenizerFile(e) => json!({ "path": e.path(), "problem": e.problem() }),
            CompressError::Scoring(e) => json!({ "message": e.to_string() }),
            CompressError::EmptyQuery
            | CompressError::BudgetAndRate
            | CompressError::EmptyWorkspace => Value::Object(Map::new()),
        };
        if let Value::Object(map) = &mut data {
            map.insert("kind".into(), self.kind().into());
        }
        data
    }

    /// Whether the user can fix it by changing the request (everything but the model's own
    /// failures, some of which are a query too long for the model).
    pub fn is_bad_input(&self) -> bool {
        match self {
            CompressError::Scoring(e) => matches!(
                e,
                crate::Error::EmptyQuery
                    | crate::Error::QueryTooLong { .. }
                    | crate::Error::PrefixTooLong { .. }
            ),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str) -> CompressRequest {
        CompressRequest {
            query: query.into(),
            ..CompressRequest::default()
        }
    }

    #[test]
    fn unset_fields_resolve_to_the_pipeline_defaults() {
        let options = request("retries").resolve(None).unwrap();
        let defaults = CompressOptions::default();
        assert_eq!(options.budget, Budget::Tokens(DEFAULT_BUDGET_TOKENS));
        assert_eq!(options.format, defaults.format);
        assert_eq!(options.tokenizer, defaults.tokenizer);
        assert_eq!(options.ranker, defaults.ranker);
        assert_eq!(options.max_candidates, defaults.max_candidates);
        assert_eq!(options.fine, defaults.fine);
        assert_eq!(options.deadline, None);
    }

    #[test]
    fn bad_values_are_refused_as_data() {
        let with = |f: fn(&mut CompressRequest)| {
            let mut r = request("retries");
            f(&mut r);
            r.resolve(None).unwrap_err()
        };
        assert_eq!(
            request("  \n").resolve(None).unwrap_err().kind(),
            "empty_query"
        );
        let e = with(|r| r.budget = Some(-3));
        assert_eq!(e.data(), json!({"kind": "bad_budget", "budget": -3}));
        let e = with(|r| r.rate = Some(1.5));
        assert_eq!(e.data(), json!({"kind": "bad_rate", "rate": 1.5}));
        let e = with(|r| {
            r.budget = Some(10);
            r.rate = Some(0.5)
        });
        assert_eq!(e.kind(), "budget_and_rate");
        // A tokenizer file that is not there: the file, as data.
        let missing = with(|r| r.tokenizer = Some("no/such/tokenizer.json".parse().unwrap()));
        assert_eq!(missing.kind(), "tokenizer_file");
        assert_eq!(missing.data()["problem"], "not_found");
        let path = missing.data()["path"].as_str().unwrap().to_string();
        assert!(path.ends_with("no/such/tokenizer.json"), "{missing}");
        assert!(missing.is_bad_input());
        // The core's words name no surface's flag or key.
        for e in [e, missing, with(|r| r.budget = Some(0))] {
            assert!(!e.to_string().contains("--"), "{e}");
        }
    }

    #[test]
    fn a_request_overrides_its_surface_defaults_and_a_rate_replaces_a_budget() {
        let defaults = CompressRequest {
            budget: Some(500),
            candidates: Some(8),
            ..CompressRequest::default()
        };
        let merged = request("q").or_defaults(&defaults);
        assert_eq!((merged.budget, merged.candidates), (Some(500), Some(8)));
        let rate = CompressRequest {
            rate: Some(0.2),
            candidates: Some(3),
            ..request("q")
        }
        .or_defaults(&defaults);
        assert_eq!(
            (rate.budget, rate.rate, rate.candidates),
            (None, Some(0.2), Some(3))
        );
        assert_eq!(rate.resolve(None).unwrap().budget, Budget::Rate(0.2));
    }

    #[test]
    fn field_names_walk_the_struct() {
        let names = CompressRequest::field_names();
        for name in [
            "query",
            "budget",
            "rate",
            "tokenizer",
            "no_fine",
            "deadline_ms",
        ] {
            assert!(names.iter().any(|n| n == name), "{names:?}");
        }
    }

    #[test]
    fn json_names_and_values_deserialize() {
        let r: CompressRequest = serde_json::from_value(json!({
            "query": "q", "format": "md", "ranker": "bm25", "no_fine": true, "candidates": 4,
            "tokenizer": "o200k"
        }))
        .unwrap();
        assert_eq!(r.format, Some(Format::Markdown));
        assert_eq!(r.tokenizer, Some("o200k".parse().unwrap()));
        assert_eq!(
            r.resolve(None).unwrap().tokenizer,
            crate::compress::BudgetTokenizer::O200k
        );
        assert_eq!(r.ranker, Some(Ranker::Bm25));
        assert!(r.no_fine);
        assert!(serde_json::from_value::<CompressRequest>(json!({"budget": 1})).is_err());
    }
}
