//! The remote scorer: [`RemoteModel`] implements [`ScoringModel`] by asking an
//! OpenAI-compatible server for prompt log-probabilities (see the [parent module](super) for
//! the protocol), many requests at once.
//!
//! - The trait's calls block, as the llama.cpp engine's do; underneath, requests run on a
//!   small tokio runtime this model owns, through one `reqwest` client (rustls, keep-alive
//!   connection pool). A call hands its work to that runtime and waits on a channel, so it
//!   may be made from any thread that is not an async task (like the engine's).
//! - At most [`RemoteSettings::max_in_flight`] requests are in flight at once, across all
//!   calls (one semaphore); each has [`RemoteSettings::request_timeout`].
//! - 429 (after its `Retry-After`), 5xx and failed connections are retried with exponential
//!   backoff, [`MAX_ATTEMPTS`] tries in all; anything else fails the call at once.
//! - A cancelled flag or a passed deadline drops the requests in flight (which closes their
//!   connections, so the server stops working on them). A deadline admits a request only if,
//!   at the recent seconds per prompt token, it ends in time; what was not reached comes back
//!   `skipped`, as with the local engine. A token allowance (`ScoreOptions::max_tokens`)
//!   admits requests in order while the call's prompt tokens, the query's included, fit it.
//! - Prompts are token ids from the local GGUF's tokenizer (loaded `vocab_only`: no
//!   weights), so counts, truncation and the chunk / separator / query split are the local
//!   engine's exactly; the chunk comes first so the server's prefix cache reuses it.
//! - Results go to the same disk cache as the engine's ([`ScoreCache`]), keyed by
//!   [`RemoteModel::model_id`]: the server, the served model and the tokenizer's sha256, so
//!   remote and local results never mix. Nothing is stored from a failed call.
//! - Start-up probes the server: `GET /models` (when it answers) must list the model, and a
//!   short completion must come back with prompt log-probabilities, first as vLLM's
//!   `prompt_logprobs`, then as the legacy `echo` form; the form that works is used from
//!   then on. A server with neither (llama.cpp's `llama-server`) is refused with
//!   [`RemoteError::NoPromptLogprobs`], one that refuses token-id prompts (llama-cpp-python's)
//!   with [`RemoteError::TokenIdsRefused`], and one whose log-probabilities cannot be the
//!   prompt's (the probe is a counting sequence) with [`RemoteError::ImplausibleLogprobs`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{
    CompletionRequest, LogprobForm, ModelList, RemoteError, RemoteSettings, error_from_status,
    last_nlls, prompt_nlls,
};
use crate::cache::ScoreCache;
use crate::engine::{
    self, CancelFlag, ChunkInput, ChunkScore, SEPARATOR, ScoreOptions, ScoreOutput, ScorerConfig,
    ScorerStats, TokenNll, TokenNlls,
};
use crate::engine::{assemble, mean};
use crate::error::{Error, Result};
use crate::model::{ModelDescription, ScoringModel, TokenCountMemo, TokenFloor};
use crate::models::ResolvedModel;

/// Tries of one request before its error is returned (the first and three retries).
pub const MAX_ATTEMPTS: u32 = 4;

/// First backoff; doubled after each failed try.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait a `Retry-After` is honoured for; a longer one ends the retries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How often a waiting call looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Time allowed for the start-up probe's requests.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Text of the start-up probe: a sequence any model predicts well once it has started, so
/// that log-probabilities which are not the prompt's stand out ([`check_plausible`]).
const PROBE_TEXT: &str = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20";

/// Highest mean NLL, in nats per token, of the probe's second half that is believed.
const PLAUSIBLE_MEAN_NLL: f32 = 3.0;

/// How a [`RemoteModel`] is built.
#[derive(Debug, Clone)]
pub struct RemoteModelConfig {
    pub settings: RemoteSettings,
    /// The GGUF whose tokenizer makes the prompts: the model the server serves.
    pub tokenizer_path: PathBuf,
    /// Its sha256; part of the cache identity (no disk cache when `None`).
    pub tokenizer_sha256: Option<String>,
    /// Path of the on-disk cache; `None` disables it.
    pub disk_cache_path: Option<PathBuf>,
    pub disk_cache_bytes: u64,
    /// Longest sequence sent, in tokens: the local engine's window, so that chunks are cut
    /// where the local engine cuts them (the server must accept this many).
    pub n_ctx_tokens: usize,
    /// Let llama.cpp log while the tokenizer loads.
    pub verbose: bool,
}

impl RemoteModelConfig {
    /// Defaults for `settings` with the tokenizer of `model`, window and disk cache as the
    /// local engine's defaults.
    pub fn new(settings: RemoteSettings, model: &ResolvedModel) -> Self {
        let local = ScorerConfig::new(model);
        RemoteModelConfig {
            settings,
            tokenizer_path: model.path.clone(),
            tokenizer_sha256: Some(model.sha256.clone()),
            disk_cache_path: local.disk_cache_path,
            disk_cache_bytes: local.disk_cache_bytes,
            n_ctx_tokens: local.n_ctx_tokens,
            verbose: false,
        }
    }
}

/// A scoring model served over HTTP; see the module docs.
pub struct RemoteModel {
    wire: Arc<Wire>,
    /// `Some` until drop; shut down in the background so that dropping the model is allowed
    /// anywhere, an async task included.
    runtime: Option<tokio::runtime::Runtime>,
    tokenizer: LlamaModel,
    architecture: String,
    tokenizer_path: PathBuf,
    bos: Option<LlamaToken>,
    sep: Vec<LlamaToken>,
    n_ctx: usize,
    model_id: Option<String>,
    cache: Option<ScoreCache>,
    counts: TokenCountMemo,
    /// What the tokenizer's vocabulary says about the fewest tokens of a text.
    floor: Option<TokenFloor>,
}

/// What the request tasks share.
struct Wire {
    client: reqwest::Client,
    settings: RemoteSettings,
    form: LogprobForm,
    in_flight: Arc<Semaphore>,
    prompt_tokens: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    /// Recent seconds per prompt token of a request (moving average): whether a request
    /// admitted now would end before a deadline.
    secs_per_token: Mutex<Option<f64>>,
}

impl RemoteModel {
    /// Loads the tokenizer, checks the server (see the module docs) and returns a model
    /// ready to score. Blocks for the probe (a round trip or two).
    pub fn new(config: RemoteModelConfig) -> Result<RemoteModel> {
        if config.n_ctx_tokens < 16 {
            return Err(Error::InvalidSetting(format!(
                "context size {} (needs ≥ 16)",
                config.n_ctx_tokens
            )));
        }
        let info = crate::gguf::inspect(&config.tokenizer_path)?;
        let architecture = info.architecture.unwrap_or_else(|| "unknown".to_string());
        let tokenizer = engine::load_tokenizer(&config.tokenizer_path, config.verbose)?;
        let vocab = tokenizer.vocab();
        let bos = vocab.should_add_bos().then(|| vocab.bos());
        let sep = engine::tokenize(&tokenizer, SEPARATOR);
        let floor = engine::token_floor(&tokenizer);
        let settings = config.settings.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ctxzip-remote")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the remote scorer's runtime", e))?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(settings.max_in_flight.max(1))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| RemoteError::Unreachable {
                url: settings.base_url.clone(),
                detail: format!("cannot build an HTTP client: {e}"),
            })?;
        let mut probe: Vec<i32> = bos.iter().map(|t| t.0).collect();
        probe.extend(engine::tokenize(&tokenizer, PROBE_TEXT).iter().map(|t| t.0));
        let form = {
            let (client, settings) = (client.clone(), settings.clone());
            block_on(&runtime, async move {
                check_server(&client, &settings, probe).await
            })??
        };
        let model_id = config.tokenizer_sha256.as_ref().map(|sha| {
            format!(
                "remote {} at {} (tokens of {sha})",
                settings.model, settings.base_url
            )
        });
        let cache = match (&config.disk_cache_path, &model_id) {
            (Some(path), Some(id)) => Some(ScoreCache::open(path, config.disk_cache_bytes, id)),
            _ => None,
        };
        Ok(RemoteModel {
            wire: Arc::new(Wire {
                client,
                in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
                settings,
                form,
                prompt_tokens: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                secs_per_token: Mutex::new(None),
            }),
            runtime: Some(runtime),
            tokenizer,
            architecture,
            tokenizer_path: config.tokenizer_path,
            bos,
            sep,
            n_ctx: config.n_ctx_tokens,
            model_id,
            cache,
            counts: TokenCountMemo::new(),
            floor,
        })
    }

    /// The form of prompt log-probabilities the server answered the probe with.
    pub fn logprob_form(&self) -> LogprobForm {
        self.wire.form
    }

    /// Requests sent and retries made since start-up (the probe not included).
    pub fn request_counts(&self) -> (u64, u64) {
        (
            self.wire.requests.load(Ordering::Relaxed),
            self.wire.retries.load(Ordering::Relaxed),
        )
    }

    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        engine::tokenize(&self.tokenizer, text)
    }

    fn cached(&self, use_cache: bool, key: u64, n: usize) -> Option<Vec<f32>> {
        if !use_cache {
            return None;
        }
        self.cache.as_ref()?.get(key, n)
    }

    fn store(&self, use_cache: bool, records: Vec<(u64, usize, Vec<f32>)>) {
        if use_cache && let Some(cache) = &self.cache {
            cache.put_many(records);
        }
    }

    /// Sends `prompts` (token ids), at most `max_in_flight` at once, and returns each one's
    /// prompt NLLs, `None` for those the deadline or the token allowance (`max_tokens`
    /// prompt tokens in all) did not let through.
    fn send_all(
        &self,
        prompts: Vec<Vec<i32>>,
        deadline: Option<Instant>,
        max_tokens: Option<usize>,
        cancel: &CancelFlag,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let runtime = self.runtime.as_ref().ok_or(Error::WorkerGone)?;
        let wire = Arc::clone(&self.wire);
        let cancel = cancel.clone();
        let admit = Admit {
            deadline,
            tokens_left: max_tokens.unwrap_or(usize::MAX),
        };
        block_on(runtime, send_all(wire, prompts, admit, cancel))?
    }

    /// The prompt `[BOS] head tail`, as ids.
    fn prompt(&self, parts: &[&[LlamaToken]]) -> Vec<i32> {
        self.bos
            .iter()
            .chain(parts.iter().flat_map(|p| p.iter()))
            .map(|t| t.0)
            .collect()
    }
}

impl Drop for RemoteModel {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl ScoringModel for RemoteModel {
    fn model_id(&self) -> Option<&str> {
        self.model_id.as_deref()
    }

    fn chunks_in_flight(&self) -> usize {
        self.wire.settings.max_in_flight.max(1)
    }

    fn description(&self) -> ModelDescription {
        let s = &self.wire.settings;
        let form = match self.wire.form {
            LogprobForm::PromptLogprobs => "prompt_logprobs",
            LogprobForm::Echo => "echo",
        };
        ModelDescription {
            location: format!("{} at {}", s.model, s.base_url),
            architecture: self.architecture.clone(),
            build: format!(
                "backend=remote form={form} max_in_flight={} timeout_s={} tokenizer={}",
                s.max_in_flight,
                s.request_timeout.as_secs(),
                self.tokenizer_path.display()
            ),
            // The server's hardware is not ours to see.
            device: format!("remote ({})", s.base_url),
            gpu_layers: 0,
            gpu_layers_asked: 0,
        }
    }

    fn default_options(&self) -> ScoreOptions {
        ScoreOptions {
            max_packed_seqs: 1,
            // The server keeps its own prefix cache; there are no KV states here.
            reuse_kv_states: false,
            reuse_prefix: true,
            use_cache: self.cache.is_some(),
            deadline: None,
            max_tokens: None,
        }
    }

    fn stats(&self) -> ScorerStats {
        let (disk_hits, disk_misses) = self.cache.as_ref().map_or((0, 0), |c| c.counts());
        ScorerStats {
            // Prompt tokens sent: what the server computed at most (its prefix cache may
            // have saved some of them; the completions answer does not say).
            tokens_decoded: self.wire.prompt_tokens.load(Ordering::Relaxed),
            disk_hits,
            disk_misses,
            ..ScorerStats::default()
        }
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.tokenize(text).len()
    }

    fn count_tokens_batch(&self, texts: &[&str]) -> Vec<usize> {
        self.counts.counts(texts, |text| self.count_tokens(text))
    }

    fn min_tokens(&self, text: &str) -> usize {
        self.floor.map_or(0, |floor| floor.min_tokens(text))
    }

    fn score_chunks_with(
        &self,
        query: &str,
        chunks: &[ChunkInput],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<ScoreOutput> {
        let q = self.tokenize(query);
        if query.trim().is_empty() || q.is_empty() {
            return Err(Error::EmptyQuery);
        }
        let n_bos = usize::from(self.bos.is_some());
        let overhead = n_bos + self.sep.len() + q.len();
        if overhead >= self.n_ctx {
            return Err(Error::QueryTooLong {
                n_tokens: q.len(),
                window_tokens: self.n_ctx,
            });
        }
        let chunk_budget = self.n_ctx - overhead;
        let use_cache = options.use_cache;
        let sent_before = self.wire.prompt_tokens.load(Ordering::Relaxed);

        // The query's own NLLs come first, whatever the deadline (a few tokens).
        let query_key = ScoreCache::query_key(query);
        let query_nlls = match self.cached(use_cache, query_key, q.len()) {
            Some(nlls) => nlls,
            None => {
                let prompt = self.prompt(&[&self.sep, &q]);
                let all = self
                    .send_all(vec![prompt], None, None, cancel)?
                    .pop()
                    .flatten()
                    .ok_or(Error::Cancelled)?;
                let nlls = last_nlls(&all, q.len())?.to_vec();
                self.store(use_cache, vec![(query_key, 0, nlls.clone())]);
                nlls
            }
        };
        let query_nll = mean(&query_nlls);

        let mut scores: Vec<Option<ChunkScore>> = vec![None; chunks.len()];
        // (index in `chunks`, cache key, chunk tokens sent, truncated)
        let mut todo: Vec<(usize, u64, usize, bool)> = Vec::new();
        let mut prompts = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            let mut tokens = self.tokenize(&chunk.text);
            let truncated = tokens.len() > chunk_budget;
            tokens.truncate(chunk_budget);
            let key = ScoreCache::score_key(query, &chunk.text);
            if !truncated && let Some(nlls) = self.cached(use_cache, key, q.len()) {
                scores[index] = Some(chunk_score(query_nll, nlls, tokens.len(), truncated, true));
                continue;
            }
            prompts.push(self.prompt(&[&tokens, &self.sep, &q]));
            todo.push((index, key, tokens.len(), truncated));
        }
        // The query's own tokens count against the allowance.
        let sent_for_query = self.wire.prompt_tokens.load(Ordering::Relaxed) - sent_before;
        let max_tokens = options
            .max_tokens
            .map(|max| max.saturating_sub(usize::try_from(sent_for_query).unwrap_or(usize::MAX)));
        let answers = self.send_all(prompts, options.deadline, max_tokens, cancel)?;
        let mut records = Vec::new();
        for ((index, key, n_tokens, truncated), answer) in todo.into_iter().zip(answers) {
            scores[index] = Some(match answer {
                Some(all) => {
                    let nlls = last_nlls(&all, q.len())?.to_vec();
                    if !truncated {
                        records.push((key, n_tokens, nlls.clone()));
                    }
                    chunk_score(query_nll, nlls, n_tokens, truncated, false)
                }
                None => ChunkScore {
                    score: f32::NEG_INFINITY,
                    nll: f32::INFINITY,
                    query_nlls: Vec::new(),
                    n_tokens,
                    truncated,
                    kv_state_hit: false,
                    cache_hit: false,
                    skipped: true,
                },
            });
        }
        self.store(use_cache, records);
        let query_tokens = engine::token_spans(&self.tokenizer, query, &q)
            .into_iter()
            .zip(query_nlls)
            .map(|((start, end), nll)| TokenNll { start, end, nll })
            .collect();
        let sent = self.wire.prompt_tokens.load(Ordering::Relaxed) - sent_before;
        Ok(ScoreOutput {
            query_nll,
            n_query_tokens: q.len(),
            query_tokens,
            scores: scores.into_iter().flatten().collect(),
            model_tokens: usize::try_from(sent).unwrap_or(usize::MAX),
        })
    }

    fn token_nlls_batch_with(
        &self,
        prefix: Option<&str>,
        texts: &[&str],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<Vec<TokenNlls>> {
        let prefix_tokens = prefix.map(|p| self.tokenize(p)).unwrap_or_default();
        let n_head = usize::from(self.bos.is_some()) + prefix_tokens.len();
        if n_head >= self.n_ctx {
            return Err(Error::PrefixTooLong {
                n_tokens: n_head,
                window_tokens: self.n_ctx,
            });
        }
        let budget = self.n_ctx - n_head;
        // Nothing precedes the first token when there is neither BOS nor prefix.
        let first_token_scored = n_head > 0;
        let use_cache = options.use_cache;
        let mut results: Vec<Option<TokenNlls>> = vec![None; texts.len()];
        // (index in `texts`, cache key, tokens, truncated)
        let mut todo = Vec::new();
        let mut prompts = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let mut tokens = self.tokenize(text);
            let truncated = tokens.len() > budget;
            tokens.truncate(budget);
            let key = ScoreCache::nlls_key(prefix, text);
            let spans = engine::token_spans(&self.tokenizer, text, &tokens);
            let known = if tokens.is_empty() {
                Some(Vec::new())
            } else if !first_token_scored && tokens.len() == 1 {
                // One token and nothing before it: nothing to predict.
                Some(vec![0.0])
            } else if truncated {
                None
            } else {
                self.cached(use_cache, key, tokens.len())
            };
            if let Some(nlls) = known {
                results[i] = Some(assemble(&spans, &nlls, first_token_scored, truncated));
                continue;
            }
            prompts.push(self.prompt(&[&prefix_tokens, &tokens]));
            todo.push((i, key, spans, truncated));
        }
        let answers = self.send_all(prompts, options.deadline, options.max_tokens, cancel)?;
        let mut records = Vec::new();
        for ((i, key, spans, truncated), answer) in todo.into_iter().zip(answers) {
            results[i] = Some(match answer {
                Some(all) => {
                    let mut nlls = if first_token_scored {
                        last_nlls(&all, spans.len())?.to_vec()
                    } else {
                        let mut nlls = vec![0.0];
                        nlls.extend_from_slice(last_nlls(&all, spans.len() - 1)?);
                        nlls
                    };
                    nlls.truncate(spans.len());
                    if !truncated {
                        records.push((key, spans.len(), nlls.clone()));
                    }
                    assemble(&spans, &nlls, first_token_scored, truncated)
                }
                None => TokenNlls {
                    tokens: Vec::new(),
                    first_token_scored,
                    truncated,
                    skipped: true,
                },
            });
        }
        self.store(use_cache, records);
        Ok(results.into_iter().flatten().collect())
    }
}

fn chunk_score(
    query_nll: f32,
    nlls: Vec<f32>,
    n_tokens: usize,
    truncated: bool,
    cache_hit: bool,
) -> ChunkScore {
    let nll = mean(&nlls);
    ChunkScore {
        score: query_nll - nll,
        nll,
        query_nlls: nlls,
        n_tokens,
        truncated,
        kv_state_hit: false,
        cache_hit,
        skipped: false,
    }
}

/// Runs `future` on `runtime` and waits for it from this (non-async) thread.
fn block_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().map_err(|_| {
        Error::Remote(RemoteError::Malformed {
            detail: "the request task stopped before answering".into(),
        })
    })
}

/// Resolves when the call should stop: `Err(Cancelled)` once the flag is set, `Ok(())` once
/// the deadline has passed; never without either.
async fn stop_signal(cancel: &CancelFlag, deadline: Option<Instant>) -> Result<()> {
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let now = Instant::now();
        if let Some(deadline) = deadline
            && now >= deadline
        {
            return Ok(());
        }
        let nap = deadline.map_or(CANCEL_POLL, |d| CANCEL_POLL.min(d - now));
        tokio::time::sleep(nap).await;
    }
}

/// What lets a request of a call start: a deadline it must end before, and the prompt tokens
/// the call may still send.
struct Admit {
    deadline: Option<Instant>,
    tokens_left: usize,
}

/// The body of [`RemoteModel::send_all`], on the runtime.
async fn send_all(
    wire: Arc<Wire>,
    prompts: Vec<Vec<i32>>,
    mut admit: Admit,
    cancel: CancelFlag,
) -> Result<Vec<Option<Vec<f32>>>> {
    let deadline = admit.deadline;
    let mut results: Vec<Option<Vec<f32>>> = vec![None; prompts.len()];
    let mut tasks: JoinSet<(usize, std::result::Result<Vec<f32>, RemoteError>)> = JoinSet::new();
    let mut prompts = prompts.into_iter().enumerate().peekable();
    // Set once the deadline or the allowance stops admitting requests: the rest stay `None`
    // (skipped).
    let mut closed = false;
    loop {
        // Admit the next prompts, in order, while permits, the deadline and the allowance
        // allow.
        while !closed && let Some((_, prompt)) = prompts.peek() {
            if wire.overruns(deadline, prompt.len()) || prompt.len() > admit.tokens_left {
                closed = true;
                break;
            }
            let permit = if tasks.is_empty() {
                // Nothing of ours in flight: wait for a permit (other calls hold them all).
                tokio::select! {
                    permit = Arc::clone(&wire.in_flight).acquire_owned() => permit.ok(),
                    stop = stop_signal(&cancel, deadline) => {
                        stop?;
                        closed = true;
                        break;
                    }
                }
            } else {
                Arc::clone(&wire.in_flight).try_acquire_owned().ok()
            };
            let Some(permit) = permit else { break };
            let Some((index, prompt)) = prompts.next() else {
                break;
            };
            admit.tokens_left -= prompt.len();
            let wire = Arc::clone(&wire);
            tasks.spawn(async move {
                let answer = wire.complete(prompt).await;
                drop(permit);
                (index, answer)
            });
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok((index, Ok(nlls)))) => results[index] = Some(nlls),
                Some(Ok((_, Err(e)))) => {
                    tasks.abort_all();
                    return Err(e.into());
                }
                Some(Err(e)) => {
                    tasks.abort_all();
                    return Err(Error::Remote(RemoteError::Malformed {
                        detail: format!("a request task failed: {e}"),
                    }));
                }
                None => {}
            },
            stop = stop_signal(&cancel, deadline) => {
                // Dropping the requests closes their connections.
                tasks.abort_all();
                stop?;
                break;
            }
        }
    }
    Ok(results)
}

impl Wire {
    /// Whether a request of `n_tokens` admitted now would end past `deadline`, at the recent
    /// speed; with no measurement yet, only a deadline already past counts.
    fn overruns(&self, deadline: Option<Instant>, n_tokens: usize) -> bool {
        let Some(deadline) = deadline else {
            return false;
        };
        let per_token = self
            .secs_per_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(0.0);
        Instant::now() + Duration::from_secs_f64(per_token * n_tokens as f64) >= deadline
    }

    fn measured(&self, elapsed: Duration, n_tokens: usize) {
        if n_tokens == 0 {
            return;
        }
        let per_token = elapsed.as_secs_f64() / n_tokens as f64;
        let mut average = self
            .secs_per_token
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *average = Some(average.map_or(per_token, |a| 0.7 * a + 0.3 * per_token));
    }

    /// One scored sequence: its prompt NLLs, retried as the module docs say.
    async fn complete(&self, prompt: Vec<i32>) -> std::result::Result<Vec<f32>, RemoteError> {
        let n_tokens = prompt.len();
        let request = CompletionRequest::new(&self.settings.model, prompt, self.form);
        let body = serde_json::to_vec(&request).map_err(|e| RemoteError::Malformed {
            detail: format!("cannot encode the request: {e}"),
        })?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let outcome = post(
                &self.client,
                &self.settings,
                body.clone(),
                self.settings.request_timeout,
            )
            .await;
            let (error, wait) = match outcome {
                Ok(Answer { status, body, .. }) if status.is_success() => {
                    let nlls = prompt_nlls(&body, &request.prompt)?;
                    self.prompt_tokens
                        .fetch_add(n_tokens as u64, Ordering::Relaxed);
                    self.measured(started.elapsed(), n_tokens);
                    return Ok(nlls);
                }
                Ok(Answer {
                    status,
                    retry_after,
                    ..
                }) if status == StatusCode::TOO_MANY_REQUESTS => {
                    let error = RemoteError::RateLimited {
                        url: self.settings.base_url.clone(),
                        attempts: attempt,
                    };
                    match retry_after {
                        Some(wait) if wait > MAX_RETRY_AFTER => return Err(error),
                        wait => (error, wait),
                    }
                }
                Ok(Answer { status, body, .. }) if status.is_server_error() => (
                    error_from_status(status.as_u16(), &body, &self.settings.model),
                    None,
                ),
                Ok(Answer { status, body, .. }) => {
                    return Err(error_from_status(
                        status.as_u16(),
                        &body,
                        &self.settings.model,
                    ));
                }
                Err(e @ RemoteError::TimedOut { .. }) => return Err(e),
                Err(e) => (e, None),
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(error);
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            let backoff = FIRST_BACKOFF * 2u32.pow(attempt - 1);
            tokio::time::sleep(wait.unwrap_or(backoff)).await;
        }
    }
}

/// A server's answer: status, `Retry-After` and body.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: String,
}

/// `POST {base}/completions` with a JSON body; errors only for a request that got no answer.
async fn post(
    client: &reqwest::Client,
    settings: &RemoteSettings,
    body: Vec<u8>,
    timeout: Duration,
) -> std::result::Result<Answer, RemoteError> {
    let mut request = client
        .post(settings.completions_url())
        .header(CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(body);
    if let Some(key) = &settings.api_key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(settings, timeout, &e))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response
        .text()
        .await
        .map_err(|e| transport_error(settings, timeout, &e))?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// `Retry-After` in seconds (the HTTP-date form is not used by serving engines).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// A request that got no answer: timed out, or the connection failed (refused, reset, closed
/// mid-answer), described by its innermost cause.
fn transport_error(
    settings: &RemoteSettings,
    timeout: Duration,
    e: &reqwest::Error,
) -> RemoteError {
    if e.is_timeout() {
        return RemoteError::TimedOut {
            url: settings.base_url.clone(),
            timeout_s: timeout.as_secs().max(1),
        };
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    RemoteError::Unreachable {
        url: settings.base_url.clone(),
        detail: cause.to_string(),
    }
}

/// The start-up check (see the module docs); returns the form of log-probabilities to use.
async fn check_server(
    client: &reqwest::Client,
    settings: &RemoteSettings,
    probe: Vec<i32>,
) -> std::result::Result<LogprobForm, RemoteError> {
    let mut request = client
        .get(format!("{}/models", settings.base_url))
        .timeout(PROBE_TIMEOUT);
    if let Some(key) = &settings.api_key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(settings, PROBE_TIMEOUT, &e))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| transport_error(settings, PROBE_TIMEOUT, &e))?;
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(RemoteError::Unauthorized {
            status: status.as_u16(),
        });
    }
    // A server without a listing is judged by the completion alone.
    if status.is_success()
        && let Ok(list) = serde_json::from_str::<ModelList>(&body)
    {
        list.check(&settings.model)?;
    }
    // The first refusal of the probe, and whether any form was answered.
    let mut refused = None;
    let mut answered = false;
    for form in [LogprobForm::PromptLogprobs, LogprobForm::Echo] {
        let request = CompletionRequest::new(&settings.model, probe.clone(), form);
        let body = serde_json::to_vec(&request).map_err(|e| RemoteError::Malformed {
            detail: format!("cannot encode the request: {e}"),
        })?;
        let answer = post(client, settings, body, PROBE_TIMEOUT).await?;
        if answer.status.is_success() {
            answered = true;
            match prompt_nlls(&answer.body, &probe) {
                Ok(nlls) => {
                    check_plausible(&nlls)?;
                    return Ok(form);
                }
                Err(RemoteError::NoPromptLogprobs) => continue,
                Err(e) => return Err(e),
            }
        }
        match error_from_status(answer.status.as_u16(), &answer.body, &settings.model) {
            // A server that refuses one form may take the other (a refusal of the token ids
            // themselves comes back as a 4xx, or as a 500 from llama-cpp-python).
            RemoteError::Server { status, message } if status != 503 => {
                refused.get_or_insert(RemoteError::TokenIdsRefused { status, message });
            }
            error => return Err(error),
        }
    }
    Err(match refused {
        Some(refusal) if !answered => refusal,
        _ => RemoteError::NoPromptLogprobs,
    })
}

/// Refuses log-probabilities that cannot be the prompt's: the probe is a counting sequence
/// every language model predicts almost surely once it has started (0.03–0.16 nats per token
/// for SmolLM2-135M and Qwen2.5-Coder-0.5B), while log-probabilities read one token late put
/// it at 11–14 nats (measured with llama-cpp-python 0.3.36).
fn check_plausible(nlls: &[f32]) -> std::result::Result<(), RemoteError> {
    let second_half = &nlls[nlls.len() / 2..];
    let mean_nll = mean(second_half);
    if second_half.is_empty() || mean_nll < PLAUSIBLE_MEAN_NLL {
        Ok(())
    } else {
        Err(RemoteError::ImplausibleLogprobs { mean_nll })
    }
}
