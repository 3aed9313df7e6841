//! The remote backend: an OpenAI-compatible `POST /v1/completions` that returns the prompt's
//! log-probabilities and generates nothing of use. This module holds the settings and wire
//! shapes (plain data, checked against recorded responses); [`client`] holds
//! [`RemoteModel`], the HTTP client that implements [`crate::ScoringModel`] with them.
//!
//! Two forms of prompt log-probabilities are read:
//! - vLLM's `prompt_logprobs: 0` (the prompt token itself is always included): each choice
//!   carries `prompt_logprobs`, a list with one entry per prompt token, `null` for the first
//!   (nothing predicts it), else an object keyed by token id (as a string) whose entries hold
//!   `logprob`, `rank` and `decoded_token`;
//! - the OpenAI legacy `echo: true` with `logprobs: 0` (llama-cpp-python's server): the
//!   choice's `logprobs.token_logprobs` has one entry per prompt token, `null` for the first.
//!
//! Prompts are token-id arrays, so that the chunk, the separator and the query are tokenized
//! exactly as the local backend does it (each part on its own, chunk first: the server's
//! prefix cache then reuses a chunk across queries). The ids come from the local GGUF's
//! tokenizer when the server serves the same model, which keeps budgets counted in the scoring
//! model's tokenizer without a round trip per count.
//!
//! llama.cpp's own `llama-server` returns no prompt log-probabilities: such a server is
//! detected by its answer and refused with [`RemoteError::NoPromptLogprobs`], which names the
//! servers that work and how to start one.
//!
//! llama-cpp-python's server (0.3.36, checked) cannot serve ctxzip either: its completions
//! request type takes text prompts only (a token-id array is refused, [`RemoteError::TokenIdsRefused`]),
//! and its `echo` log-probabilities are read one token late (token `i`'s from the logits after
//! token `i`, not before it: upstream issues abetlen/llama-cpp-python#1276 and #1983), which
//! the start-up probe's plausibility check catches ([`RemoteError::ImplausibleLogprobs`]).
//! The legacy `echo` form is still read, for servers that implement it correctly.

pub mod client;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use client::{RemoteModel, RemoteModelConfig};

/// The environment variable holding the API key sent as `Authorization: Bearer KEY`.
pub const API_KEY_ENV: &str = "CTXZIP_SCORER_API_KEY";

/// The remote scorer's settings a user sets, by one name each (snake case, as config.toml
/// spells them): every surface offers each of them, spelled by its own convention
/// (`--scorer-url` on the command line of `compress`, `mcp` and `lsp`, `scorerUrl` in LSP
/// initializationOptions and the VS Code settings, `scorer_url` in the Neovim setup). The API
/// key is not among them: it comes only from [`API_KEY_ENV`]. A test walks this list over
/// every surface.
pub const SCORER_OPTIONS: &[&str] = &[
    "scorer_url",
    "scorer_model",
    "scorer_max_in_flight",
    "scorer_timeout_s",
];

/// Requests in flight at once by default: enough to fill a vLLM batch on one GPU.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// How a remote scorer is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// The API base, e.g. `http://gpu-box:8000/v1` (no trailing slash).
    pub base_url: String,
    /// The served model's name, as the server lists it under `/v1/models`.
    pub model: String,
    /// Sent as a bearer token when set.
    pub api_key: Option<String>,
    /// Requests in flight at once (at least 1).
    pub max_in_flight: usize,
    /// Time allowed for one request before it is retried or fails.
    pub request_timeout: Duration,
}

impl RemoteSettings {
    /// Checks the URL and the model name; the API key comes from [`API_KEY_ENV`] when
    /// `api_key` is `None`.
    pub fn new(url: &str, model: &str, api_key: Option<String>) -> Result<Self, RemoteError> {
        let base_url = url.trim().trim_end_matches('/').to_string();
        let scheme_ok = ["http://", "https://"]
            .iter()
            .any(|s| base_url.starts_with(s) && base_url.len() > s.len());
        if !scheme_ok {
            return Err(RemoteError::BadUrl {
                url: url.to_string(),
            });
        }
        let model = model.trim();
        if model.is_empty() {
            return Err(RemoteError::NoModelName { url: base_url });
        }
        let api_key = api_key
            .or_else(|| std::env::var(API_KEY_ENV).ok())
            .filter(|k| !k.trim().is_empty());
        Ok(RemoteSettings {
            base_url,
            model: model.to_string(),
            api_key,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: Duration::from_secs(60),
        })
    }

    /// The completions endpoint.
    pub fn completions_url(&self) -> String {
        format!("{}/completions", self.base_url)
    }
}

/// The remote-scorer settings a shell was given (CLI flags, LSP `initializationOptions`, MCP
/// flags); unset ones fall back to the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteFlags {
    pub url: Option<String>,
    pub model: Option<String>,
    pub max_in_flight: Option<usize>,
    pub timeout_s: Option<u64>,
}

/// The remote scorer to use, if any: each of `flags`, else `scorer_url`, `scorer_model`,
/// `scorer_max_in_flight` and `scorer_timeout_s` from the config file's `table`
/// ([`crate::models::config_table`]); the API key from [`API_KEY_ENV`] (never from a file
/// that may be shared). `None`: no URL anywhere, score locally.
pub fn resolve_settings(
    flags: &RemoteFlags,
    table: Option<&toml::Table>,
) -> Result<Option<RemoteSettings>, RemoteError> {
    let text = |key: &str| -> Result<Option<String>, RemoteError> {
        match table.and_then(|t| t.get(key)) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(RemoteError::BadConfig {
                key: key.to_string(),
                expected: "a string",
            }),
        }
    };
    let number = |key: &str| -> Result<Option<u64>, RemoteError> {
        match table.and_then(|t| t.get(key)) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n >= 1 => Ok(Some(*n as u64)),
            Some(_) => Err(RemoteError::BadConfig {
                key: key.to_string(),
                expected: "a whole number of at least 1",
            }),
        }
    };
    let Some(url) = flags.url.clone().or(text("scorer_url")?) else {
        return Ok(None);
    };
    let model = flags
        .model
        .clone()
        .or(text("scorer_model")?)
        .unwrap_or_default();
    let mut settings = RemoteSettings::new(&url, &model, None)?;
    if let Some(n) = flags
        .max_in_flight
        .map(|n| n as u64)
        .or(number("scorer_max_in_flight")?)
    {
        if n == 0 {
            return Err(RemoteError::BadConfig {
                key: "max_in_flight".into(),
                expected: "a whole number of at least 1",
            });
        }
        settings.max_in_flight = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(s) = flags.timeout_s.or(number("scorer_timeout_s")?) {
        settings.request_timeout = Duration::from_secs(s);
    }
    Ok(Some(settings))
}

/// Which form of prompt log-probabilities a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogprobForm {
    /// vLLM's `prompt_logprobs`.
    PromptLogprobs,
    /// OpenAI legacy `echo` + `logprobs`.
    Echo,
}

/// The body of `POST /v1/completions` for one scored sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionRequest {
    pub model: String,
    /// Token ids of the whole sequence: `[BOS] chunk sep query` (or `prefix text`).
    pub prompt: Vec<i32>,
    /// One token, thrown away: vLLM refuses 0.
    pub max_tokens: u32,
    pub temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
}

impl CompletionRequest {
    pub fn new(model: &str, prompt: Vec<i32>, form: LogprobForm) -> Self {
        let (prompt_logprobs, echo, logprobs) = match form {
            LogprobForm::PromptLogprobs => (Some(0), None, None),
            LogprobForm::Echo => (None, Some(true), Some(0)),
        };
        CompletionRequest {
            model: model.to_string(),
            prompt,
            max_tokens: 1,
            temperature: 0.0,
            prompt_logprobs,
            echo,
            logprobs,
        }
    }
}

/// What can go wrong between ctxzip and a scoring server, each with its fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "scorer URL `{url}` is not an http(s) URL; give the API base, e.g. --scorer-url http://gpu-box:8000/v1"
    )]
    BadUrl { url: String },

    #[error(
        "no model name for the scorer at {url}; name the served model, e.g. --scorer-model HuggingFaceTB/SmolLM2-135M (or scorer_model in config.toml)"
    )]
    NoModelName { url: String },

    #[error("the scorer setting `{key}` must be {expected} (fix it in config.toml or the flag)")]
    BadConfig { key: String, expected: &'static str },

    #[error(
        "the scoring server returned no prompt log-probabilities (llama.cpp's llama-server does not); serve the model with vLLM (`vllm serve MODEL --enable-prefix-caching`) or llama-cpp-python (`python3 -m llama_cpp.server --model FILE.gguf --logits_all true`)"
    )]
    NoPromptLogprobs,

    #[error(
        "the scoring server refused a prompt of token ids (HTTP {status}: {message}); ctxzip sends token ids so that the server scores exactly the local tokenization, which vLLM accepts and llama-cpp-python's server does not: serve the model with vLLM (`vllm serve MODEL --enable-prefix-caching`)"
    )]
    TokenIdsRefused { status: u16, message: String },

    #[error(
        "the scoring server's prompt log-probabilities are not those of the prompt's tokens: {mean_nll:.1} nats per token on a counting sequence any model predicts at under 3 (llama-cpp-python's echo log-probabilities are each read one token late); serve the model with vLLM (`vllm serve MODEL --enable-prefix-caching`)"
    )]
    ImplausibleLogprobs { mean_nll: f32 },

    #[error(
        "the scoring server does not serve model `{model}`: {message} (set --scorer-model to a name listed by GET /v1/models)"
    )]
    UnknownModel { model: String, message: String },

    #[error(
        "the scoring server refused the API key (HTTP {status}): set {API_KEY_ENV} to a key it accepts"
    )]
    Unauthorized { status: u16 },

    #[error(
        "the scoring server failed (HTTP {status}): {message} (retried; see the server's log, or score locally by leaving out --scorer-url)"
    )]
    Server { status: u16, message: String },

    #[error(
        "cannot reach the scoring server at {url}: {detail} (start the server, or fix --scorer-url / scorer_url in config.toml)"
    )]
    Unreachable { url: String, detail: String },

    #[error(
        "the scoring server at {url} did not answer within {timeout_s} s (raise --scorer-timeout-s, lower --scorer-max-in-flight, or give the server more capacity)"
    )]
    TimedOut { url: String, timeout_s: u64 },

    #[error(
        "the scoring server at {url} kept answering 429 Too Many Requests after {attempts} attempts (lower --scorer-max-in-flight, or give the server more capacity)"
    )]
    RateLimited { url: String, attempts: u32 },

    #[error(
        "the scoring server's answer does not fit the request: {detail} (is it serving the same model as the local tokenizer?)"
    )]
    Mismatch { detail: String },

    #[error("the scoring server's answer is not the completions shape: {detail}")]
    Malformed { detail: String },
}

/// The error of a non-2xx answer: `{"error": {"message": ...}}` (OpenAI), `{"message": ...}`
/// or `{"detail": ...}` (some servers), or the raw body.
pub fn error_from_status(status: u16, body: &str, model: &str) -> RemoteError {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let message = json
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
        })
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.chars().take(300).collect());
    match status {
        401 | 403 => RemoteError::Unauthorized { status },
        404 if message.contains(model) || message.to_lowercase().contains("model") => {
            RemoteError::UnknownModel {
                model: model.to_string(),
                message,
            }
        }
        _ => RemoteError::Server { status, message },
    }
}

/// The NLL in nats of each prompt token after the first (`nlls[i]` is that of
/// `prompt[i + 1]`), from a successful completions answer for `prompt`, in either form.
pub fn prompt_nlls(body: &str, prompt: &[i32]) -> Result<Vec<f32>, RemoteError> {
    let response: Value = serde_json::from_str(body).map_err(|e| RemoteError::Malformed {
        detail: format!("not JSON: {e}"),
    })?;
    let choice = response
        .pointer("/choices/0")
        .ok_or_else(|| RemoteError::Malformed {
            detail: "no choices".into(),
        })?;
    if let Some(entries) = choice.get("prompt_logprobs").and_then(Value::as_array) {
        return from_prompt_logprobs(entries, prompt);
    }
    if let Some(entries) = choice
        .pointer("/logprobs/token_logprobs")
        .and_then(Value::as_array)
    {
        return from_echo(entries, prompt.len());
    }
    Err(RemoteError::NoPromptLogprobs)
}

fn check_len(got: usize, prompt_len: usize) -> Result<(), RemoteError> {
    // Echo answers may append the generated token after the prompt's.
    if got < prompt_len {
        return Err(RemoteError::Mismatch {
            detail: format!("{got} log-probabilities for a prompt of {prompt_len} tokens"),
        });
    }
    Ok(())
}

fn logprob_to_nll(logprob: f64, position: usize) -> Result<f32, RemoteError> {
    if logprob.is_finite() && logprob <= 1e-6 {
        Ok((-logprob).max(0.0) as f32)
    } else {
        Err(RemoteError::Malformed {
            detail: format!("log-probability {logprob} at prompt position {position}"),
        })
    }
}

fn from_prompt_logprobs(entries: &[Value], prompt: &[i32]) -> Result<Vec<f32>, RemoteError> {
    check_len(entries.len(), prompt.len())?;
    (1..prompt.len())
        .map(|i| {
            let by_token = entries[i]
                .as_object()
                .ok_or_else(|| RemoteError::Malformed {
                    detail: format!("prompt_logprobs[{i}] is not an object"),
                })?;
            // The prompt's own token is always among the entries, keyed by its id.
            let entry =
                by_token
                    .get(&prompt[i].to_string())
                    .ok_or_else(|| RemoteError::Mismatch {
                        detail: format!(
                            "prompt token {} at position {i} is not in the answer (it has {:?})",
                            prompt[i],
                            by_token.keys().collect::<Vec<_>>()
                        ),
                    })?;
            let logprob = entry
                .get("logprob")
                .and_then(Value::as_f64)
                .ok_or_else(|| RemoteError::Malformed {
                    detail: format!("prompt_logprobs[{i}] has no logprob"),
                })?;
            logprob_to_nll(logprob, i)
        })
        .collect()
}

fn from_echo(entries: &[Value], prompt_len: usize) -> Result<Vec<f32>, RemoteError> {
    check_len(entries.len(), prompt_len)?;
    (1..prompt_len)
        .map(|i| {
            let logprob = entries[i].as_f64().ok_or_else(|| RemoteError::Malformed {
                detail: format!("token_logprobs[{i}] is not a number"),
            })?;
            logprob_to_nll(logprob, i)
        })
        .collect()
}

/// A token's NLL as [`prompt_nlls`] gives them: the last `n` of a sequence (the query after
/// its chunk, or a text after its prefix).
pub fn last_nlls(nlls: &[f32], n: usize) -> Result<&[f32], RemoteError> {
    nlls.len()
        .checked_sub(n)
        .map(|start| &nlls[start..])
        .ok_or_else(|| RemoteError::Mismatch {
            detail: format!("{} scored tokens, {n} wanted", nlls.len()),
        })
}

/// The part of a models listing (`GET /v1/models`) checked at start-up.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelList {
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub id: String,
}

impl ModelList {
    /// Fails with [`RemoteError::UnknownModel`] when `model` is not served.
    pub fn check(&self, model: &str) -> Result<(), RemoteError> {
        if self.data.iter().any(|m| m.id == model) {
            return Ok(());
        }
        Err(RemoteError::UnknownModel {
            model: model.to_string(),
            message: format!(
                "it serves {}",
                self.data
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}
