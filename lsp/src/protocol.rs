//! The wire shapes ctxzip adds to LSP: server options (initializationOptions and
//! `workspace/didChangeConfiguration`), `ctxzip/compress` params and result, `ctxzip/status`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower_lsp_server::ls_types::{Position, Range, Uri};

/// Options a client may set at initialize or later; every field optional. Unknown fields
/// are refused so a typo is reported, not ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    /// Model name (`ctxzip model list`) or path to a GGUF file.
    pub model: Option<String>,
    /// Never download a model.
    pub offline: Option<bool>,
    /// Default budget in tokens when a request names none.
    pub budget: Option<usize>,
    /// CPU threads for the model.
    pub threads: Option<usize>,
    /// Layers offloaded to a GPU.
    pub gpu_layers: Option<u32>,
    /// Chunks the model scores per query at most.
    pub candidates: Option<usize>,
    /// Latency budget of a compress request's model work in milliseconds (none: no limit).
    pub deadline_ms: Option<u64>,
    /// Extra gitignore-style globs to leave out of the index.
    pub ignore: Option<Vec<String>>,
    /// Files larger than this are not indexed.
    pub max_file_bytes: Option<u64>,
    /// Replace secrets found in file text with `[REDACTED:<rule>]` (default: `redact` in
    /// config.toml, else true).
    pub redact: Option<bool>,
    /// Score on this OpenAI-compatible server (vLLM, llama-cpp-python) instead of in process.
    pub scorer_url: Option<String>,
    /// The served model's name on that server.
    pub scorer_model: Option<String>,
    /// Requests to the scoring server in flight at once.
    pub scorer_max_in_flight: Option<usize>,
    /// Seconds one request to the scoring server may take.
    pub scorer_timeout_s: Option<u64>,
}

impl Options {
    /// `other`'s set fields over `self`'s.
    pub fn overlay(&self, other: &Options) -> Options {
        Options {
            model: other.model.clone().or_else(|| self.model.clone()),
            offline: other.offline.or(self.offline),
            budget: other.budget.or(self.budget),
            threads: other.threads.or(self.threads),
            gpu_layers: other.gpu_layers.or(self.gpu_layers),
            candidates: other.candidates.or(self.candidates),
            deadline_ms: other.deadline_ms.or(self.deadline_ms),
            ignore: other.ignore.clone().or_else(|| self.ignore.clone()),
            max_file_bytes: other.max_file_bytes.or(self.max_file_bytes),
            redact: other.redact.or(self.redact),
            scorer_url: other.scorer_url.clone().or_else(|| self.scorer_url.clone()),
            scorer_model: other
                .scorer_model
                .clone()
                .or_else(|| self.scorer_model.clone()),
            scorer_max_in_flight: other.scorer_max_in_flight.or(self.scorer_max_in_flight),
            scorer_timeout_s: other.scorer_timeout_s.or(self.scorer_timeout_s),
        }
    }

    /// Options from initializationOptions or a configuration change: either the options
    /// object itself or `{"ctxzip": {...}}` (VS Code's settings section).
    pub fn from_value(value: Value) -> Result<Options, String> {
        let value = match value {
            Value::Null => return Ok(Options::default()),
            Value::Object(mut map) if map.len() == 1 && map.contains_key("ctxzip") => {
                map.remove("ctxzip").unwrap_or(Value::Null)
            }
            other => other,
        };
        if value.is_null() {
            return Ok(Options::default());
        }
        serde_json::from_value(value).map_err(|e| {
            format!(
                "invalid ctxzip options: {e} (known options: model, offline, budget, threads, gpuLayers, candidates, deadlineMs, ignore, maxFileBytes, redact, scorerUrl, scorerModel, scorerMaxInFlight, scorerTimeoutS; see lsp/README.md)"
            )
        })
    }
}

/// A position in a document.
#[derive(Clone, Debug, Deserialize)]
pub struct FocusParam {
    pub uri: Uri,
    pub position: Option<Position>,
}

/// `ctxzip/compress` params (also the first argument of the `ctxzip.compress` command).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompressParams {
    pub query: String,
    /// Output budget in tokens; the server's default budget when neither this nor `rate`.
    pub budget: Option<i64>,
    /// Keep this fraction of the workspace's tokens instead.
    pub rate: Option<f64>,
    /// Where the user is working: that chunk is always kept, its file favoured.
    pub focus: Option<FocusParam>,
    /// text (default), markdown, json or xml.
    pub format: Option<String>,
    /// Only files under these URIs (files or directories inside the workspace).
    pub paths: Option<Vec<Uri>>,
    /// Keep whole functions (skip the block-level stage).
    pub no_fine: Option<bool>,
    /// model (default), fused (the model's ranking fused with BM25's) or bm25 (no model).
    pub ranker: Option<String>,
    /// Chunks the model scores, for this request only.
    pub candidates: Option<usize>,
    /// Latency budget of the model's work for this request, in milliseconds: candidates
    /// the model did not reach keep BM25's order (`stats.deadline_skipped` counts them).
    pub deadline_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChunkResult {
    pub uri: Uri,
    pub range: Range,
    /// Relative to its workspace folder (prefixed with the folder name when there are
    /// several), as in the context's file headers.
    pub path: String,
    pub name: Option<String>,
    pub kind: String,
    pub score: f32,
    pub tokens: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompressResult {
    pub context: String,
    pub chunks: Vec<ChunkResult>,
    pub stats: Value,
    /// True when indexing was still running: the answer saw part of the workspace.
    pub partial: bool,
}
