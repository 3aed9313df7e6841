//! The wire shapes ctxzip adds to LSP: server options (initializationOptions and
//! `workspace/didChangeConfiguration`), `ctxzip/compress` params (the core's
//! `CompressRequest` under camelCase keys) and result, the error codes of refused requests,
//! `ctxzip/status`.

use ctxzip_scoring::compress::{CompressError, CompressRequest};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tower_lsp_server::ls_types::{Position, ProgressToken, Range, Uri};

/// Options a client may set at initialize or later; every field optional. Beside the
/// server's own (the model, the index), every field of a compress request but `query` is an
/// option under its camelCase name (`budget`, `candidates`, `deadlineMs`, `format`, ...): the
/// default of requests that leave it out. Unknown options are refused so a typo is reported,
/// not ignored.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    /// Model name (`ctxzip model list`) or path to a GGUF file.
    pub model: Option<String>,
    /// Never download a model.
    pub offline: Option<bool>,
    /// CPU threads for the model.
    pub threads: Option<usize>,
    /// Layers offloaded to a GPU.
    pub gpu_layers: Option<u32>,
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
    /// The defaults of compress requests (its `query` unused): a request's own values win.
    #[serde(skip)]
    pub request: CompressRequest,
}

impl Options {
    /// `other`'s set fields over `self`'s.
    pub fn overlay(&self, other: &Options) -> Options {
        Options {
            model: other.model.clone().or_else(|| self.model.clone()),
            offline: other.offline.or(self.offline),
            threads: other.threads.or(self.threads),
            gpu_layers: other.gpu_layers.or(self.gpu_layers),
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
            request: other.request.or_defaults(&self.request),
        }
    }

    /// Every option's name, as a client spells it: the server's own, then the request
    /// defaults.
    pub fn keys() -> Vec<String> {
        let mut keys = match serde_json::to_value(Options::default()) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        keys.extend(request_default_names().map(|name| camel_case(&name)));
        keys
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
        let invalid = |e: String| format!("invalid ctxzip options: {e} (see lsp/README.md)");
        let map = match value {
            Value::Null => return Ok(Options::default()),
            Value::Object(map) => map,
            other => {
                // serde's words for a value that is no object.
                return serde_json::from_value::<Options>(other)
                    .map_err(|e| invalid(e.to_string()));
            }
        };
        let request_names: Vec<String> = request_default_names().collect();
        let own_keys = Options::keys();
        let (mut own, mut request) = (Map::new(), Map::new());
        for (key, value) in map {
            if let Some(name) = request_names.iter().find(|name| camel_case(name) == key) {
                request.insert(name.clone(), value);
            } else if own_keys.contains(&key) {
                own.insert(key, value);
            } else {
                return Err(invalid(unknown_field(&key, &own_keys)));
            }
        }
        let mut options: Options =
            serde_json::from_value(Value::Object(own)).map_err(|e| invalid(e.to_string()))?;
        request.insert("query".into(), Value::String(String::new()));
        options.request =
            serde_json::from_value(Value::Object(request)).map_err(|e| invalid(e.to_string()))?;
        Ok(options)
    }

    /// The defaults of requests, for [`CompressRequest::or_defaults`].
    pub fn request_defaults(&self) -> CompressRequest {
        self.request.clone()
    }
}

/// The request's fields a setting may give a default for: all but the query.
fn request_default_names() -> impl Iterator<Item = String> {
    CompressRequest::field_names()
        .into_iter()
        .filter(|name| name != "query")
}

/// serde's words for an unknown key, so that a client reads one kind of message.
fn unknown_field(key: &str, known: &[String]) -> String {
    format!(
        "unknown field `{key}`, expected one of {}",
        known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A position in a document.
#[derive(Clone, Debug, Deserialize)]
pub struct FocusParam {
    pub uri: Uri,
    pub position: Option<Position>,
}

/// `ctxzip/compress` params (also the first argument of the `ctxzip.compress` command): the
/// fields of the core's [`CompressRequest`] under their camelCase names (`query`, `budget`,
/// `rate`, `format`, `noFine`, `ranker`, `candidates`, `deadlineMs`, ...), beside the
/// LSP-shaped ones below. Unknown keys are refused so a typo is reported, not ignored.
#[derive(Clone, Debug)]
pub struct CompressParams {
    pub request: CompressRequest,
    /// Where the user is working: that chunk is always kept, its file favoured.
    pub focus: Option<FocusParam>,
    /// Only files under these URIs (files or directories inside the workspace).
    pub paths: Option<Vec<Uri>>,
    /// The client's token for this request's `$/progress` (LSP `WorkDoneProgressParams`).
    pub work_done_token: Option<ProgressToken>,
}

/// The params' keys that are LSP-shaped (URIs, positions, tokens) rather than request fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LspShaped {
    focus: Option<FocusParam>,
    paths: Option<Vec<Uri>>,
    work_done_token: Option<ProgressToken>,
}

const LSP_SHAPED: &[&str] = &["focus", "paths", "workDoneToken"];

impl CompressParams {
    /// Every key the params take, as a client spells it.
    pub fn keys() -> Vec<String> {
        let mut keys: Vec<String> = CompressRequest::field_names()
            .iter()
            .map(|name| camel_case(name))
            .collect();
        keys.extend(LSP_SHAPED.iter().map(|k| k.to_string()));
        keys
    }

    pub fn from_value(value: Value) -> Result<CompressParams, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "invalid type: {}, expected an object such as {{\"query\": \"where are retries handled?\", \"budget\": 2000}}",
                kind_of(&value)
            ));
        };
        let fields = CompressRequest::field_names();
        let (mut shaped, mut request) = (Map::new(), Map::new());
        for (key, value) in map {
            if LSP_SHAPED.contains(&key.as_str()) {
                shaped.insert(key, value);
            } else if let Some(name) = fields.iter().find(|name| camel_case(name) == key) {
                request.insert(name.clone(), value);
            } else {
                return Err(unknown_field(&key, &CompressParams::keys()));
            }
        }
        let shaped: LspShaped =
            serde_json::from_value(Value::Object(shaped)).map_err(|e| e.to_string())?;
        let request: CompressRequest =
            serde_json::from_value(Value::Object(request)).map_err(|e| e.to_string())?;
        Ok(CompressParams {
            request,
            focus: shaped.focus,
            paths: shaped.paths,
            work_done_token: shaped.work_done_token,
        })
    }
}

impl<'de> Deserialize<'de> for CompressParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        CompressParams::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// A snake_case name in the LSP's camelCase (`deadline_ms` → `deadlineMs`).
pub fn camel_case(name: &str) -> String {
    let mut parts = name.split('_');
    let mut key = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            key.extend(first.to_uppercase());
            key.push_str(chars.as_str());
        }
    }
    key
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON-RPC codes of refused compress requests, in the range JSON-RPC leaves to servers
/// (clear of the codes LSP itself uses there). The error's `data` holds the kind and fields
/// ([`CompressError::data`]); clients switch on these, never on the message's words.
pub mod codes {
    pub const INDEX_NOT_READY: i64 = -32050;
    pub const EMPTY_QUERY: i64 = -32051;
    pub const BAD_BUDGET: i64 = -32052;
    pub const BAD_RATE: i64 = -32053;
    pub const BUDGET_AND_RATE: i64 = -32054;
    pub const BUDGET_TOO_SMALL: i64 = -32055;
    pub const EMPTY_WORKSPACE: i64 = -32056;
    pub const PATH_OUTSIDE_ROOT: i64 = -32057;
    pub const TOKENIZER_FILE: i64 = -32058;
    /// The model failed (not the request): JSON-RPC's internal error.
    pub const INTERNAL: i64 = -32603;
}

/// The code of a refused request.
pub fn error_code(error: &CompressError) -> i64 {
    match error {
        CompressError::IndexNotReady { .. } => codes::INDEX_NOT_READY,
        CompressError::EmptyQuery => codes::EMPTY_QUERY,
        CompressError::BadBudget { .. } => codes::BAD_BUDGET,
        CompressError::BadRate { .. } => codes::BAD_RATE,
        CompressError::BudgetAndRate => codes::BUDGET_AND_RATE,
        CompressError::BudgetTooSmall { .. } => codes::BUDGET_TOO_SMALL,
        CompressError::EmptyWorkspace => codes::EMPTY_WORKSPACE,
        CompressError::PathOutsideRoot { .. } => codes::PATH_OUTSIDE_ROOT,
        CompressError::TokenizerFile(_) => codes::TOKENIZER_FILE,
        CompressError::Scoring(_) => codes::INTERNAL,
    }
}

/// A refused request's message, its fix in the LSP's terms: the request's keys and the
/// server's `budget` setting (initializationOptions; `ctxzip.budget` in VS Code).
pub fn error_message(error: &CompressError) -> String {
    match error {
        CompressError::EmptyQuery => {
            "`query` is empty: say what the context is for, e.g. \"where are retries handled?\""
                .into()
        }
        CompressError::BadBudget { budget } => format!(
            "`budget` must be a positive number of tokens (got {budget}); e.g. \"budget\": 2000, or leave it out for the server's `budget` setting"
        ),
        CompressError::BadRate { rate } => format!(
            "`rate` must be in (0, 1] (got {rate}); e.g. \"rate\": 0.2 keeps a fifth of the tokens"
        ),
        CompressError::BudgetAndRate => "give `budget` or `rate`, not both".into(),
        CompressError::BudgetTooSmall { budget, smallest } => format!(
            "a budget of {budget} tokens is smaller than any chunk (the smallest needs {smallest} with its file header); send \"budget\": {smallest} or more, or raise the `budget` setting"
        ),
        CompressError::TokenizerFile(e) => {
            format!("`tokenizer`: {e}; a relative path is read from the server's working directory")
        }
        CompressError::EmptyWorkspace
        | CompressError::IndexNotReady { .. }
        | CompressError::PathOutsideRoot { .. }
        | CompressError::Scoring(_) => error.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ctxzip_scoring::compress::{Format, Ranker};
    use serde_json::json;

    #[test]
    fn params_map_camel_case_keys_onto_the_request() {
        let params = CompressParams::from_value(json!({
            "query": "retries", "budget": 300, "noFine": true, "deadlineMs": 50,
            "format": "markdown", "ranker": "bm25",
            "focus": {"uri": "file:///ws/a.rs", "position": {"line": 1, "character": 0}}
        }))
        .unwrap();
        let r = &params.request;
        assert_eq!(
            (r.query.as_str(), r.budget, r.no_fine),
            ("retries", Some(300), true)
        );
        assert_eq!(r.deadline_ms, Some(50));
        assert_eq!(
            (r.format, r.ranker),
            (Some(Format::Markdown), Some(Ranker::Bm25))
        );
        assert!(params.focus.is_some() && params.paths.is_none());
        // The core's own spelling is not the LSP's.
        let refused = CompressParams::from_value(json!({"query": "q", "no_fine": true}));
        let message = refused.unwrap_err();
        assert!(
            message.starts_with("unknown field `no_fine`, expected one of"),
            "{message}"
        );
        assert!(
            message.contains("`noFine`") && message.contains("`focus`"),
            "{message}"
        );
        assert!(CompressParams::from_value(json!({"budget": 3})).is_err());
        assert!(CompressParams::from_value(json!("q")).is_err());
    }

    #[test]
    fn settings_give_defaults_for_every_request_field() {
        let base =
            Options::from_value(json!({"model": "m", "budget": 500, "candidates": 8})).unwrap();
        assert_eq!(base.model.as_deref(), Some("m"));
        assert_eq!(
            (base.request.budget, base.request.candidates),
            (Some(500), Some(8))
        );
        let changed =
            Options::from_value(json!({"ctxzip": {"rate": 0.1, "noFine": true}})).unwrap();
        let merged = base.overlay(&changed);
        assert_eq!(merged.model.as_deref(), Some("m"));
        assert_eq!(
            (
                merged.request.budget,
                merged.request.rate,
                merged.request.candidates
            ),
            (None, Some(0.1), Some(8))
        );
        assert!(merged.request.no_fine);
        let refused = Options::from_value(json!({"query": "q"})).unwrap_err();
        assert!(refused.contains("unknown field `query`"), "{refused}");
        assert!(
            refused.contains("`scorerUrl`") && refused.contains("`deadlineMs`"),
            "{refused}"
        );
    }
}
