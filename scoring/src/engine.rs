//! The scoring engine: a [`Scorer`] handle over one worker thread that owns the llama.cpp
//! context, and the conditional-perplexity scores computed there.
//!
//! `LlamaContext` is not `Send`, so one thread owns backend, model and context and serves
//! requests from a channel; the handle is `Clone + Send + Sync`, offers blocking calls for the
//! CLI and `async` ones for tokio callers (both wait on a oneshot reply). Tokenization does not
//! need the context: it runs on the caller's thread against the shared model.
//!
//! ## The score
//! For a query `q` and a chunk `c`, with `sep = "\n\n"` and tokens concatenated as
//! `tok(c) ++ tok(sep) ++ tok(q)` (each part tokenized on its own, so a chunk's tokens and KV
//! state never depend on the query):
//!
//! - `NLL(q | c)` is the mean negative log-likelihood in nats of every query token, the first
//!   included, in the sequence `[BOS] c sep q`;
//! - `NLL(q)` is the same on `[BOS] sep q`, i.e. given an empty chunk;
//! - `score(c) = NLL(q) − NLL(q | c)`: how many nats per query token the chunk saves.
//!
//! `[BOS]` is present only for models whose tokenizer adds one. Chunks longer than the window
//! keep their head (the signature and doc comment carry most of what names a chunk, and a
//! head-truncated KV state can be reused for any shorter budget) and are marked `truncated`.
//!
//! ## Reuse
//! - KV states of chunks (`state_seq_get`/`set`) are kept in an in-memory LRU capped in bytes,
//!   keyed by the caller's chunk hash: a repeated chunk costs only `sep + q` tokens.
//! - [`Scorer::token_nlls_batch`] decodes a shared prefix once and copies its KV cells to every
//!   sequence (`seq_cp` on a unified KV cache shares the cells; nothing is copied).
//! - Several sequences can be packed into one decode (`max_packed_seqs`); on CPU this measured
//!   ~1.0x, so the default is 1, but it is kept for GPU backends.
//! - Per-token unconditional NLLs (`token_nlls` without prefix) go to the on-disk
//!   [`crate::cache::ScoreCache`] (the one every backend uses) keyed by (model sha256 and
//!   GPU: `cache_id`, text hash); results that depend on
//!   the query (a chunk's per-query-token NLLs, token NLLs given a prefix) go there too, keyed
//!   by the hash of the exact model input, so a query asked again after an edit decodes only
//!   the chunks that changed (`ScoreOptions::use_cache`). (Reading a scored chunk's own
//!   token NLLs on the way, for the fine stage, was tried: the output projection over every
//!   chunk token cost 30% of the coarse stage's time on one thread and saved nothing when the
//!   kept functions were longer than their scored heads; BENCHMARKS.md, LongCodeZip.)
//! - Token counts of chunk texts are remembered in memory by content hash
//!   ([`crate::model::TokenCountMemo`], shared by every backend).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LlamaStateSeqFlags, SeqState};
use tokio::sync::oneshot;

use crate::cache::{DiskCache, ScoreCache};
use crate::error::{Error, Result};
use crate::gguf;
use crate::model::{ModelDescription, ScoringModel, TokenCountMemo, TokenFloor};
use crate::models::ResolvedModel;

/// The text between a chunk and the query.
pub const SEPARATOR: &str = "\n\n";

/// Sequences one context can hold at once (llama.cpp allows up to 256).
const MAX_SEQS: usize = 64;

/// How the scorer is built. [`ScorerConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ScorerConfig {
    pub model_path: PathBuf,
    /// Content hash of the model file; keys the disk cache (no disk cache when `None`).
    pub model_sha256: Option<String>,
    /// CPU threads for llama.cpp; default: cores − 1, at least 1.
    pub n_threads: usize,
    /// Context window in tokens, shared by all sequences decoded together.
    pub n_ctx_tokens: usize,
    /// Tokens per decode call (also the micro-batch).
    pub n_batch_tokens: usize,
    /// Layers offloaded to a GPU (needs a `cuda`, `vulkan` or `metal` build).
    pub gpu_layers: u32,
    /// Default for [`ScoreOptions::max_packed_seqs`].
    pub max_packed_seqs: usize,
    /// Memory cap for cached chunk KV states; 0 disables them.
    pub kv_state_cache_bytes: usize,
    /// Path of the on-disk cache; `None` disables it.
    pub disk_cache_path: Option<PathBuf>,
    /// Size cap of the on-disk cache.
    pub disk_cache_bytes: u64,
    /// Use llama.cpp's flash attention (off by default: see `Worker::new`).
    pub flash_attention: bool,
    /// Let llama.cpp log to stderr (decided by the first scorer of the process).
    pub verbose: bool,
}

impl ScorerConfig {
    /// Defaults for a resolved model, with the disk cache at its default path.
    pub fn new(model: &ResolvedModel) -> Self {
        ScorerConfig {
            model_path: model.path.clone(),
            model_sha256: Some(model.sha256.clone()),
            disk_cache_path: DiskCache::configured_path(),
            ..ScorerConfig::for_path(model.path.clone())
        }
    }

    /// Defaults for a bare model file: no disk cache (nothing to key it by).
    pub fn for_path(model_path: PathBuf) -> Self {
        ScorerConfig {
            model_path,
            model_sha256: None,
            n_threads: default_threads(),
            n_ctx_tokens: 4096,
            n_batch_tokens: 512,
            gpu_layers: 0,
            max_packed_seqs: 1,
            kv_state_cache_bytes: 512 << 20,
            disk_cache_path: None,
            disk_cache_bytes: crate::cache::DEFAULT_CAP_BYTES,
            flash_attention: false,
            verbose: false,
        }
    }
}

/// Cores − 1, at least 1: leave a core to the editor and the rest of ctxzip.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Per-call knobs; [`Scorer::default_options`] reflects the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// Sequences packed into one decode (1 = one sequence at a time).
    pub max_packed_seqs: usize,
    /// Restore cached chunk KV states, and store new ones.
    pub reuse_kv_states: bool,
    /// Decode a shared prefix once and copy its KV cells (`token_nlls_batch`).
    pub reuse_prefix: bool,
    /// Read and write the disk cache: unconditional token NLLs by text, and results that
    /// depend on the query (a chunk's query NLLs, token NLLs given a prefix) by the hash of
    /// the exact model input, so asking again after an edit decodes only what changed.
    pub use_cache: bool,
    /// Decode nothing that would end after this instant: chunks (or texts) not decoded are
    /// returned `skipped`; cached results are still served. For answers within a latency
    /// budget. A decode group is started only if, at the speed measured on recent decodes,
    /// it ends in time (before any measurement, only the clock is checked); the query's own
    /// NLL, a few tokens, is always decoded.
    pub deadline: Option<Instant>,
    /// Decode at most this many tokens in this call: a group that would decode past it is
    /// not started, and it and what follows come back `skipped`, as past a deadline. Cached
    /// results cost nothing and are served; the query's own NLL (a few tokens) is always
    /// decoded and counts. For answers within a budget of model work.
    pub max_tokens: Option<usize>,
}

/// A chunk to score. `hash` must identify `text` (a content hash): it keys the KV-state cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInput {
    pub hash: u64,
    pub text: String,
}

/// The score of one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkScore {
    /// `NLL(q) − NLL(q | c)` in nats per query token; higher means more relevant.
    pub score: f32,
    /// `NLL(q | c)`, mean nats per query token.
    pub nll: f32,
    /// The NLL of each query token given the chunk, in the order of
    /// [`ScoreOutput::query_tokens`]; empty when `skipped`. For weighing the query's tokens
    /// unequally ([`crate::compress`] does).
    pub query_nlls: Vec<f32>,
    /// Chunk tokens the model saw (after truncation).
    pub n_tokens: usize,
    /// The chunk did not fit the window with the query; its head was kept.
    pub truncated: bool,
    /// The chunk's KV state came from the cache.
    pub kv_state_hit: bool,
    /// The whole result came from the disk cache: nothing was decoded for this chunk.
    pub cache_hit: bool,
    /// The deadline passed (or the token allowance ran out) before this chunk was reached:
    /// `score` is −∞ and `nll` ∞.
    pub skipped: bool,
}

/// Scores of one query against many chunks, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOutput {
    /// `NLL(q)`, mean nats per query token given an empty chunk.
    pub query_nll: f32,
    pub n_query_tokens: usize,
    /// Each query token: its byte range in the query and its NLL given an empty chunk.
    pub query_tokens: Vec<TokenNll>,
    pub scores: Vec<ChunkScore>,
    /// Tokens actually decoded for this call (cache hits make it smaller).
    pub model_tokens: usize,
}

/// The NLL of one token of a text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenNll {
    /// Byte range of the token in the text. A character split across tokens puts a boundary
    /// inside it.
    pub start: usize,
    pub end: usize,
    /// Nats. 0 for an unscored first token (see [`TokenNlls::first_token_scored`]).
    pub nll: f32,
}

/// Per-token NLLs of one text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenNlls {
    pub tokens: Vec<TokenNll>,
    /// False when the text had no prefix and the model has no BOS token: nothing predicts the
    /// first token, so its `nll` is 0.
    pub first_token_scored: bool,
    /// The text did not fit the window; only its head was scored.
    pub truncated: bool,
    /// The deadline passed (or the token allowance ran out) before this text was reached:
    /// `tokens` is empty.
    pub skipped: bool,
}

/// Cancels a request between decode batches; clone it to share.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters since the scorer was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScorerStats {
    pub tokens_decoded: u64,
    pub kv_state_hits: u64,
    pub kv_state_misses: u64,
    pub kv_states: u64,
    pub kv_state_bytes: u64,
    pub disk_hits: u64,
    pub disk_misses: u64,
}

#[derive(Debug, Default)]
struct Counters {
    tokens_decoded: AtomicU64,
    kv_state_hits: AtomicU64,
    kv_state_misses: AtomicU64,
    kv_states: AtomicU64,
    kv_state_bytes: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Which llama.cpp build this binary carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// `cpu`, `cuda`, `vulkan` or `metal`.
    pub backend: &'static str,
    /// `native` when built with `-C target-cpu=native` (llama.cpp's `GGML_NATIVE`), the CPU
    /// name for another `-C target-cpu`, else `portable`.
    pub simd: &'static str,
    /// The x86 extensions llama.cpp's CPU kernels were compiled to use, which the CPU must
    /// have (`scoring/build.rs` says how they are decided); empty elsewhere.
    pub cpu_features: Vec<&'static str>,
}

impl std::fmt::Display for BuildInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let features = if self.cpu_features.is_empty() {
            "baseline".to_string()
        } else {
            self.cpu_features.join(",")
        };
        write!(
            f,
            "backend={} simd={} ({features})",
            self.backend, self.simd
        )
    }
}

/// The llama.cpp build of this binary.
pub fn build_info() -> BuildInfo {
    let backend = if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "vulkan") {
        "vulkan"
    } else if cfg!(feature = "metal") {
        "metal"
    } else {
        "cpu"
    };
    let simd = match env!("CTXZIP_TARGET_CPU") {
        "" => "portable",
        cpu => cpu,
    };
    BuildInfo {
        backend,
        simd,
        cpu_features: kernel_features(),
    }
}

fn kernel_features() -> Vec<&'static str> {
    env!("CTXZIP_KERNEL_FEATURES")
        .split(',')
        .filter(|f| !f.is_empty())
        .collect()
}

/// Whether this CPU has the x86 extension `feature` (rustc's name for it).
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn cpu_has(feature: &str) -> bool {
    match feature {
        "sse4.2" => is_x86_feature_detected!("sse4.2"),
        "avx" => is_x86_feature_detected!("avx"),
        "avx2" => is_x86_feature_detected!("avx2"),
        "bmi2" => is_x86_feature_detected!("bmi2"),
        "fma" => is_x86_feature_detected!("fma"),
        "f16c" => is_x86_feature_detected!("f16c"),
        "avxvnni" => is_x86_feature_detected!("avxvnni"),
        "avx512f" => is_x86_feature_detected!("avx512f"),
        "avx512vbmi" => is_x86_feature_detected!("avx512vbmi"),
        "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
        "avx512bf16" => is_x86_feature_detected!("avx512bf16"),
        _ => true,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
fn cpu_has(_feature: &str) -> bool {
    true
}

/// Refuses, naming what is missing and the fix, a CPU that lacks an extension the kernels
/// were compiled to use: they would die of SIGILL in the first decode, with no message.
fn check_cpu(info: &BuildInfo, has: impl Fn(&str) -> bool) -> Result<()> {
    let missing: Vec<&str> = info
        .cpu_features
        .iter()
        .copied()
        .filter(|f| !has(f))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::UnsupportedCpu {
            missing: missing.join(", "),
            build: info.to_string(),
        })
    }
}

/// A device llama.cpp found in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// llama.cpp's name for it, e.g. `Vulkan0`, `CUDA0`, `CPU`.
    pub name: String,
    /// What it is, e.g. `NVIDIA H200` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub description: String,
    /// The ggml backend that drives it, e.g. `Vulkan`, `CUDA`, `CPU`.
    pub backend: String,
    /// Whether layers can be offloaded to it (`gpu_layers`): a discrete or integrated GPU.
    pub offloads: bool,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.description.is_empty() || self.description == self.name {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{} ({})", self.name, self.description)
        }
    }
}

/// The devices llama.cpp sees in this process, GPUs first (starts the backend if no scorer
/// did). Only a GPU build has any besides the CPU; Vulkan skips CPU-type devices such as
/// Mesa's lavapipe unless `GGML_VK_VISIBLE_DEVICES` names them.
pub fn devices() -> Result<Vec<Device>> {
    use llama_cpp_2::LlamaBackendDeviceType as Kind;
    backend(false)?;
    let mut devices: Vec<Device> = llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            offloads: matches!(d.device_type, Kind::Gpu | Kind::IntegratedGpu),
            name: d.name,
            description: d.description,
            backend: d.backend,
        })
        .collect();
    devices.sort_by_key(|d| !d.offloads);
    Ok(devices)
}

/// Where a loaded model's layers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The GPU that offloaded layers go to (llama.cpp splits them over every GPU it sees;
    /// this is the first); `None` when there is none and everything runs on the CPU.
    pub gpu: Option<Device>,
    /// Layers on the GPU, of [`Placement::n_layers`].
    pub gpu_layers: u32,
    /// The model's repeating layers plus its output layer: what `gpu_layers` counts.
    pub n_layers: u32,
    /// `gpu_layers` as configured.
    pub gpu_layers_asked: u32,
}

impl Placement {
    /// llama.cpp offloads the output layer first, then the repeating layers from the last.
    fn new(gpu: Option<Device>, asked: u32, n_repeating_layers: u32) -> Placement {
        let n_layers = n_repeating_layers + 1;
        Placement {
            gpu_layers: if gpu.is_some() {
                asked.min(n_layers)
            } else {
                0
            },
            gpu,
            n_layers,
            gpu_layers_asked: asked,
        }
    }

    /// The device that runs the model, for status reports: the GPU when any layer is on it.
    pub fn device(&self) -> String {
        match &self.gpu {
            Some(gpu) if self.gpu_layers > 0 => gpu.to_string(),
            _ => "CPU".to_string(),
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "device={} gpu_layers={}/{}",
            self.device(),
            self.gpu_layers,
            self.n_layers
        )?;
        if self.gpu.is_none() && self.gpu_layers_asked > 0 {
            write!(f, " (asked {}: no GPU device)", self.gpu_layers_asked)?;
        }
        Ok(())
    }
}

/// The key of everything this scorer caches beyond the process: the model's sha256, and the
/// GPU when one is present. GPU kernels round differently from the CPU's (every chunk's score
/// moved by about 0.1 nats per query token on lavapipe, up to 0.128: tests/gpu_offload.rs),
/// and llama.cpp runs large batches on a present GPU even with no layer offloaded, so results
/// of a GPU build never mix with a CPU build's, and each GPU keeps its own.
fn cache_id(model_sha256: Option<&str>, gpu: Option<&Device>) -> Option<String> {
    let sha = model_sha256?;
    Some(match gpu {
        None => sha.to_string(),
        Some(gpu) => format!("{sha}@{}:{}", gpu.backend, gpu.description),
    })
}

/// A handle to the scoring worker. Cheap to clone; the worker stops when the last handle goes.
#[derive(Clone)]
pub struct Scorer {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<LlamaModel>,
    jobs: Mutex<mpsc::Sender<Job>>,
    counters: Arc<Counters>,
    config: ScorerConfig,
    architecture: String,
    placement: Placement,
    /// [`cache_id`]: the disk cache's key and [`ScoringModel::model_id`].
    cache_id: Option<String>,
    disk_cache_enabled: bool,
    /// The disk cache, shared with the worker (for its hit counts).
    disk: Option<Arc<ScoreCache>>,
    adds_bos: bool,
    /// Token counts of chunk texts by content hash: a workspace's chunks are counted once,
    /// not on every query.
    counts: TokenCountMemo,
    /// What the vocabulary says about the fewest tokens of a text.
    floor: Option<TokenFloor>,
}

enum Job {
    Score {
        query: String,
        chunks: Vec<ChunkInput>,
        options: ScoreOptions,
        cancel: CancelFlag,
        reply: oneshot::Sender<Result<ScoreOutput>>,
    },
    TokenNlls {
        prefix: Option<String>,
        texts: Vec<String>,
        options: ScoreOptions,
        cancel: CancelFlag,
        reply: oneshot::Sender<Result<Vec<TokenNlls>>>,
    },
}

static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();

/// llama.cpp's backend may be initialised once per process; the first caller decides logging.
/// A CPU the kernels cannot run on is refused first.
fn backend(verbose: bool) -> Result<&'static LlamaBackend> {
    check_cpu(&build_info(), cpu_has)?;
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            if !verbose {
                backend.void_logs();
            }
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| Error::Llama(format!("cannot initialise the backend: {e}")))
}

impl Scorer {
    /// Checks the model file, loads it and starts the worker. Blocks for the load (a second or
    /// two for a 0.5B model).
    pub fn new(config: ScorerConfig) -> Result<Scorer> {
        if config.n_ctx_tokens < 16 || config.n_batch_tokens == 0 || config.n_threads == 0 {
            return Err(Error::InvalidSetting(format!(
                "context size {} (needs ≥ 16), batch size {} and threads {} (need ≥ 1)",
                config.n_ctx_tokens, config.n_batch_tokens, config.n_threads
            )));
        }
        let info = gguf::inspect(&config.model_path)?;
        let architecture = info.architecture.unwrap_or_else(|| "unknown".to_string());
        let backend = backend(config.verbose)?;
        // Read the weights into memory rather than mapping the file: a mapped model follows
        // its file, so a `cp` over the model while it is loaded (the file truncated and
        // rewritten in place) would kill the process with SIGBUS, or silently change the
        // weights under a cache key that still names the old ones. Read once, the model is the
        // one whose sha256 keys the cache for as long as it lives.
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(config.gpu_layers)
            .with_use_mmap(false);
        let model =
            LlamaModel::load_from_file(backend, &config.model_path, &params).map_err(|_| {
                Error::LoadFailed {
                    path: config.model_path.clone(),
                    arch: architecture.clone(),
                }
            })?;
        let adds_bos = model.vocab().should_add_bos();
        let gpu = devices()?.into_iter().find(|d| d.offloads);
        let cache_id = cache_id(config.model_sha256.as_deref(), gpu.as_ref());
        let placement = Placement::new(gpu, config.gpu_layers, model.n_layer());
        let model = Arc::new(model);
        let counters = Arc::new(Counters::default());
        let disk = match (&config.disk_cache_path, &cache_id) {
            (Some(path), Some(id)) => Some(Arc::new(ScoreCache::open(
                path,
                config.disk_cache_bytes,
                id,
            ))),
            _ => None,
        };
        let disk_cache_enabled = disk.is_some();
        let worker_disk = disk.clone();

        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let worker_model = Arc::clone(&model);
        let worker_counters = Arc::clone(&counters);
        let worker_config = config.clone();
        std::thread::Builder::new()
            .name("ctxzip-scorer".into())
            .spawn(move || {
                let model = worker_model;
                match Worker::new(
                    &model,
                    backend,
                    &worker_config,
                    worker_counters,
                    worker_disk,
                ) {
                    Ok(mut worker) => {
                        let _ = ready_tx.send(Ok(()));
                        while let Ok(job) = job_rx.recv() {
                            worker.serve(job);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the scoring thread", e))?;
        ready_rx.recv().map_err(|_| Error::WorkerGone)??;
        let floor = token_floor(&model);
        Ok(Scorer {
            inner: Arc::new(Inner {
                model,
                jobs: Mutex::new(jobs),
                counters,
                config,
                architecture,
                placement,
                cache_id,
                disk_cache_enabled,
                disk,
                adds_bos,
                counts: TokenCountMemo::new(),
                floor,
            }),
        })
    }

    /// The config this scorer was built with.
    pub fn config(&self) -> &ScorerConfig {
        &self.inner.config
    }

    /// `general.architecture` of the model.
    pub fn architecture(&self) -> &str {
        &self.inner.architecture
    }

    /// Build and runtime facts, e.g.
    /// `backend=cpu simd=native (avx2,...) threads=3 device=CPU gpu_layers=0/25`.
    pub fn build_info(&self) -> String {
        format!(
            "{} threads={} {}",
            build_info(),
            self.inner.config.n_threads,
            self.inner.placement
        )
    }

    /// Where the model's layers run.
    pub fn placement(&self) -> &Placement {
        &self.inner.placement
    }

    /// Whether every sequence starts with the model's BOS token.
    pub fn adds_bos(&self) -> bool {
        self.inner.adds_bos
    }

    pub fn disk_cache_enabled(&self) -> bool {
        self.inner.disk_cache_enabled
    }

    /// Options from the config: packing as configured, every reuse on.
    pub fn default_options(&self) -> ScoreOptions {
        ScoreOptions {
            max_packed_seqs: self.inner.config.max_packed_seqs,
            reuse_kv_states: self.inner.config.kv_state_cache_bytes > 0,
            reuse_prefix: true,
            use_cache: self.inner.disk_cache_enabled,
            deadline: None,
            max_tokens: None,
        }
    }

    pub fn stats(&self) -> ScorerStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (disk_hits, disk_misses) = self.inner.disk.as_ref().map_or((0, 0), |d| d.counts());
        ScorerStats {
            tokens_decoded: get(&c.tokens_decoded),
            kv_state_hits: get(&c.kv_state_hits),
            kv_state_misses: get(&c.kv_state_misses),
            kv_states: get(&c.kv_states),
            kv_state_bytes: get(&c.kv_state_bytes),
            disk_hits,
            disk_misses,
        }
    }

    /// The model's tokens of `text` (no BOS, special-token text not parsed). Any thread.
    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        tokenize(&self.inner.model, text)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// Number of model tokens of `text`: what the budget logic counts. Any thread.
    pub fn count_tokens(&self, text: &str) -> usize {
        tokenize(&self.inner.model, text).len()
    }

    /// [`Scorer::count_tokens`] for many texts, remembered by content hash: meant for texts
    /// that come back (a workspace's chunks on every query).
    pub fn count_tokens_batch<S: AsRef<str>>(&self, texts: &[S]) -> Vec<usize> {
        let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        self.inner
            .counts
            .counts(&texts, |text| self.count_tokens(text))
    }

    /// The text of `tokens` as the model renders them.
    pub fn detokenize(&self, tokens: &[i32]) -> String {
        let vocab = self.inner.model.vocab();
        let mut bytes = Vec::new();
        for &t in tokens {
            vocab.token_to_piece_into(LlamaToken(t), &mut bytes, false, None);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn submit(&self, job: Job) -> Result<()> {
        let jobs = self.inner.jobs.lock().map_err(|_| Error::WorkerGone)?;
        jobs.send(job).map_err(|_| Error::WorkerGone)
    }

    /// Scores every chunk against `query` (see the module docs), blocking. Not for use inside
    /// an async runtime: use [`Scorer::score_chunks_async`] there.
    pub fn score_chunks(
        &self,
        query: &str,
        chunks: &[ChunkInput],
        cancel: &CancelFlag,
    ) -> Result<ScoreOutput> {
        self.score_chunks_with(query, chunks, self.default_options(), cancel)
    }

    /// [`Scorer::score_chunks`] with explicit options (benchmarks, tests).
    pub fn score_chunks_with(
        &self,
        query: &str,
        chunks: &[ChunkInput],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<ScoreOutput> {
        let reply = self.send_score(query.to_string(), chunks.to_vec(), options, cancel.clone())?;
        reply.blocking_recv().map_err(|_| Error::WorkerGone)?
    }

    /// Async [`Scorer::score_chunks`]. Dropping the future does not stop the work: cancel the
    /// flag for that.
    pub async fn score_chunks_async(
        &self,
        query: String,
        chunks: Vec<ChunkInput>,
        cancel: CancelFlag,
    ) -> Result<ScoreOutput> {
        let reply = self.send_score(query, chunks, self.default_options(), cancel)?;
        reply.await.map_err(|_| Error::WorkerGone)?
    }

    fn send_score(
        &self,
        query: String,
        chunks: Vec<ChunkInput>,
        options: ScoreOptions,
        cancel: CancelFlag,
    ) -> Result<oneshot::Receiver<Result<ScoreOutput>>> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Score {
            query,
            chunks,
            options,
            cancel,
            reply,
        })?;
        Ok(rx)
    }

    /// Per-token NLLs of `text` given an optional `prefix` (token lists are concatenated:
    /// put any separator into the prefix), in one forward pass. Blocking.
    pub fn token_nlls(&self, prefix: Option<&str>, text: &str) -> Result<TokenNlls> {
        let mut out = self.token_nlls_batch(prefix, &[text], &CancelFlag::new())?;
        out.pop().ok_or(Error::WorkerGone)
    }

    /// [`Scorer::token_nlls`] for many texts sharing one prefix, which is decoded once.
    pub fn token_nlls_batch<S: AsRef<str>>(
        &self,
        prefix: Option<&str>,
        texts: &[S],
        cancel: &CancelFlag,
    ) -> Result<Vec<TokenNlls>> {
        self.token_nlls_batch_with(prefix, texts, self.default_options(), cancel)
    }

    /// [`Scorer::token_nlls_batch`] with explicit options.
    pub fn token_nlls_batch_with<S: AsRef<str>>(
        &self,
        prefix: Option<&str>,
        texts: &[S],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<Vec<TokenNlls>> {
        let texts = texts.iter().map(|t| t.as_ref().to_string()).collect();
        let reply = self.send_nlls(prefix.map(str::to_string), texts, options, cancel.clone())?;
        reply.blocking_recv().map_err(|_| Error::WorkerGone)?
    }

    /// Async [`Scorer::token_nlls_batch`].
    pub async fn token_nlls_batch_async(
        &self,
        prefix: Option<String>,
        texts: Vec<String>,
        cancel: CancelFlag,
    ) -> Result<Vec<TokenNlls>> {
        let reply = self.send_nlls(prefix, texts, self.default_options(), cancel)?;
        reply.await.map_err(|_| Error::WorkerGone)?
    }

    fn send_nlls(
        &self,
        prefix: Option<String>,
        texts: Vec<String>,
        options: ScoreOptions,
        cancel: CancelFlag,
    ) -> Result<oneshot::Receiver<Result<Vec<TokenNlls>>>> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::TokenNlls {
            prefix,
            texts,
            options,
            cancel,
            reply,
        })?;
        Ok(rx)
    }
}

/// The llama.cpp engine as a [`ScoringModel`]: each method is the inherent one.
impl ScoringModel for Scorer {
    fn model_id(&self) -> Option<&str> {
        self.inner.cache_id.as_deref()
    }

    fn description(&self) -> ModelDescription {
        let placement = &self.inner.placement;
        ModelDescription {
            location: self.inner.config.model_path.display().to_string(),
            architecture: self.inner.architecture.clone(),
            build: Scorer::build_info(self),
            device: placement.device(),
            gpu_layers: placement.gpu_layers,
            gpu_layers_asked: placement.gpu_layers_asked,
        }
    }

    fn default_options(&self) -> ScoreOptions {
        Scorer::default_options(self)
    }

    fn stats(&self) -> ScorerStats {
        Scorer::stats(self)
    }

    fn count_tokens(&self, text: &str) -> usize {
        Scorer::count_tokens(self, text)
    }

    fn count_tokens_batch(&self, texts: &[&str]) -> Vec<usize> {
        Scorer::count_tokens_batch(self, texts)
    }

    fn min_tokens(&self, text: &str) -> usize {
        self.inner.floor.map_or(0, |floor| floor.min_tokens(text))
    }

    fn score_chunks_with(
        &self,
        query: &str,
        chunks: &[ChunkInput],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<ScoreOutput> {
        Scorer::score_chunks_with(self, query, chunks, options, cancel)
    }

    fn token_nlls_batch_with(
        &self,
        prefix: Option<&str>,
        texts: &[&str],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<Vec<TokenNlls>> {
        Scorer::token_nlls_batch_with(self, prefix, texts, options, cancel)
    }
}

/// A GGUF's tokenizer alone (`vocab_only`: no weights are read), for a backend that scores
/// elsewhere but counts and splits text exactly as the local engine does.
pub(crate) fn load_tokenizer(path: &std::path::Path, verbose: bool) -> Result<LlamaModel> {
    let info = gguf::inspect(path)?;
    let architecture = info.architecture.unwrap_or_else(|| "unknown".to_string());
    let backend = backend(verbose)?;
    let params = LlamaModelParams::default()
        .with_vocab_only(true)
        .with_use_mmap(false);
    LlamaModel::load_from_file(backend, path, &params).map_err(|_| Error::LoadFailed {
        path: path.to_path_buf(),
        arch: architecture,
    })
}

/// The [`TokenFloor`] of a vocabulary whose pieces concatenate to the text they tokenize
/// (byte-level BPE, SentencePiece), checked on a probe text; `None` for the others
/// (WordPiece lower-cases and marks its pieces), which then get no floor.
pub(crate) fn token_floor(model: &LlamaModel) -> Option<TokenFloor> {
    const PROBE: &str = "fn Résumé_x2(a: &[u8]) -> ÆON {\n\tif a == b:  return [1, 22]; // ok\n}";
    let vocab = model.vocab();
    let piece = |token: LlamaToken| {
        let mut piece = Vec::new();
        // special = false: as tokenizing with parse_special = false, control tokens render
        // empty; user-defined ones render (and can be produced).
        vocab.token_to_piece_into(token, &mut piece, false, None);
        piece
    };
    let rendered: Vec<u8> = tokenize(model, PROBE).into_iter().flat_map(piece).collect();
    let with_space = [b" ".as_slice(), PROBE.as_bytes()].concat();
    if rendered != PROBE.as_bytes() && rendered != with_space {
        return None;
    }
    let pieces: Vec<Vec<u8>> = vocab.tokens().map(piece).collect();
    Some(TokenFloor::from_pieces(pieces.iter().map(Vec::as_slice)))
}

pub(crate) fn tokenize(model: &LlamaModel, text: &str) -> Vec<LlamaToken> {
    if text.is_empty() {
        return Vec::new();
    }
    // parse_special = false: code that mentions `<|endoftext|>` is text, not a control token.
    model.vocab().tokenize(text.as_bytes(), false, false)
}

/// Byte ranges of `tokens` in `text`, from their pieces; clamped to the text when a tokenizer
/// renders pieces that do not add up to it (e.g. a SentencePiece leading space).
pub(crate) fn token_spans(
    model: &LlamaModel,
    text: &str,
    tokens: &[LlamaToken],
) -> Vec<(usize, usize)> {
    let vocab = model.vocab();
    let mut piece = Vec::new();
    let mut start = 0usize;
    tokens
        .iter()
        .map(|&t| {
            piece.clear();
            vocab.token_to_piece_into(t, &mut piece, false, None);
            let s = start.min(text.len());
            start += piece.len();
            (s, start.min(text.len()))
        })
        .collect()
}

/// A run of tokens of one sequence to decode, and which of its outputs to score.
struct Span {
    seq: i32,
    pos0: usize,
    tokens: Vec<LlamaToken>,
    /// Logits are read from `tokens[score_from..]`; `targets[j]` is predicted by
    /// `tokens[score_from + j]`.
    score_from: usize,
    targets: Vec<LlamaToken>,
}

/// Chunk KV states, least recently used evicted first once over the byte cap.
struct StateLru {
    cap_bytes: usize,
    bytes: usize,
    tick: u64,
    entries: HashMap<u64, StateEntry>,
}

struct StateEntry {
    state: SeqState,
    /// Tokens in the state, BOS included.
    n_tokens: usize,
    last_used: u64,
}

impl StateLru {
    fn get(&mut self, hash: u64) -> Option<&StateEntry> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(&hash).map(|e| {
            e.last_used = tick;
            &*e
        })
    }

    /// Whether a state of at least `n_tokens` is cached for `hash` (not counted as a use).
    fn covers(&self, hash: u64, n_tokens: usize) -> bool {
        self.entries
            .get(&hash)
            .is_some_and(|e| e.n_tokens >= n_tokens)
    }

    fn put(&mut self, hash: u64, state: SeqState, n_tokens: usize) {
        let size = state.byte_len();
        if size > self.cap_bytes {
            return;
        }
        self.tick += 1;
        if let Some(old) = self.entries.insert(
            hash,
            StateEntry {
                state,
                n_tokens,
                last_used: self.tick,
            },
        ) {
            self.bytes -= old.state.byte_len();
        }
        self.bytes += size;
        while self.bytes > self.cap_bytes {
            let Some((&oldest, _)) = self.entries.iter().min_by_key(|(_, e)| e.last_used) else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.state.byte_len();
            }
        }
    }
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_ctx: usize,
    n_batch: usize,
    bos: Option<LlamaToken>,
    sep: Vec<LlamaToken>,
    states: StateLru,
    disk: Option<Arc<ScoreCache>>,
    counters: Arc<Counters>,
    /// Tokens decoded in the current request.
    decoded: usize,
    /// Recent seconds per decoded token (a moving average over decode calls): how long a
    /// group will take, so that a deadline is not overrun by starting one that cannot end
    /// in time.
    secs_per_token: Option<f64>,
}

impl<'m> Worker<'m> {
    fn new(
        model: &'m LlamaModel,
        backend: &LlamaBackend,
        config: &ScorerConfig,
        counters: Arc<Counters>,
        disk: Option<Arc<ScoreCache>>,
    ) -> Result<Self> {
        let n_ctx = config.n_ctx_tokens;
        let n_batch = config.n_batch_tokens.min(n_ctx);
        let threads = i32::try_from(config.n_threads).unwrap_or(i32::MAX);
        let ctx_u32 = u32::try_from(n_ctx)
            .map_err(|_| Error::InvalidSetting(format!("context size {n_ctx} is too large")))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(ctx_u32))
            .with_n_batch(n_batch as u32)
            .with_n_ubatch(n_batch as u32)
            .with_n_seq_max(MAX_SEQS as u32)
            // One KV pool for all sequences: packed sequences and prefix copies share it.
            .with_kv_unified(true)
            // llama.cpp's CPU flash attention makes a token's NLL depend on how the sequence
            // was split across decode calls (up to ~0.9 nats on single tokens, measured), which
            // would make restored KV states and shared prefixes disagree with a fresh pass.
            .with_flash_attention_policy(i32::from(config.flash_attention))
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model.new_context(backend, params).map_err(|e| {
            Error::Llama(format!(
                "cannot create a context of {n_ctx} tokens: {e} (lower the context size)"
            ))
        })?;
        let vocab = model.vocab();
        let bos = vocab.should_add_bos().then(|| vocab.bos());
        let sep = tokenize(model, SEPARATOR);
        Ok(Worker {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_ctx,
            n_batch,
            bos,
            sep,
            states: StateLru {
                cap_bytes: config.kv_state_cache_bytes,
                bytes: 0,
                tick: 0,
                entries: HashMap::new(),
            },
            disk,
            counters,
            decoded: 0,
            secs_per_token: None,
        })
    }

    fn serve(&mut self, job: Job) {
        self.decoded = 0;
        match job {
            Job::Score {
                query,
                chunks,
                options,
                cancel,
                reply,
            } => {
                let result = self.score(&query, &chunks, options, &cancel);
                let _ = reply.send(result);
            }
            Job::TokenNlls {
                prefix,
                texts,
                options,
                cancel,
                reply,
            } => {
                let result = self.token_nlls(prefix.as_deref(), &texts, options, &cancel);
                let _ = reply.send(result);
            }
        }
        // Leave an empty cache behind, whatever happened.
        self.ctx.clear_kv_cache();
        self.batch.clear();
    }

    /// Whether decoding `n_tokens` now would end past `deadline` (never, without one), by
    /// the recent speed; with no measurement yet, only a deadline already past counts.
    fn overruns(&self, deadline: Option<Instant>, n_tokens: usize) -> bool {
        let Some(deadline) = deadline else {
            return false;
        };
        let estimate = self.secs_per_token.unwrap_or(0.0) * n_tokens as f64;
        Instant::now() + Duration::from_secs_f64(estimate) >= deadline
    }

    /// Whether a group of `n_tokens` must not start: it would end past the deadline, or
    /// decode past the call's token allowance.
    fn stops(&self, options: &ScoreOptions, n_tokens: usize) -> bool {
        self.overruns(options.deadline, n_tokens)
            || options
                .max_tokens
                .is_some_and(|max| self.decoded + n_tokens > max)
    }

    fn bos_tokens(&self) -> Vec<LlamaToken> {
        self.bos.into_iter().collect()
    }

    fn score(
        &mut self,
        query: &str,
        chunks: &[ChunkInput],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<ScoreOutput> {
        let q = tokenize(self.model, query);
        if query.trim().is_empty() || q.is_empty() {
            return Err(Error::EmptyQuery);
        }
        let head = self.bos_tokens();
        // Tokens a sequence needs besides its chunk: [BOS] sep q[..n-1], plus one to spare.
        let overhead = head.len() + self.sep.len() + q.len();
        if overhead >= self.n_ctx {
            return Err(Error::QueryTooLong {
                n_tokens: q.len(),
                window_tokens: self.n_ctx,
            });
        }
        let chunk_budget = self.n_ctx - overhead;
        let suffix: Vec<LlamaToken> = self.sep.iter().chain(&q[..q.len() - 1]).copied().collect();
        let score_from = self.sep.len() - 1;

        // Query-dependent results are cached by the hash of the exact model input.
        let cache = options.use_cache;
        let query_key = ScoreCache::query_key(query);
        let query_nlls = match self.cached(cache, query_key, q.len()) {
            Some(nlls) => nlls,
            None => {
                self.ctx.clear_kv_cache();
                let unconditional = Span {
                    seq: 0,
                    pos0: 0,
                    tokens: head.iter().chain(&suffix).copied().collect(),
                    score_from: head.len() + score_from,
                    targets: q.clone(),
                };
                let nlls = self.decode_spans(&[unconditional], cancel)?.remove(0);
                if cache {
                    self.store(vec![(query_key, 0, nlls.clone())]);
                }
                nlls
            }
        };
        let query_nll = mean(&query_nlls);

        let max_packed = options.max_packed_seqs.clamp(1, MAX_SEQS);
        let mut scores: Vec<Option<ChunkScore>> = vec![None; chunks.len()];
        // Cached results first (free, served even past the deadline), then the rest in order.
        let mut todo: Vec<Member> = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            let mut tokens = tokenize(self.model, &chunk.text);
            let truncated = tokens.len() > chunk_budget;
            tokens.truncate(chunk_budget);
            let key = ScoreCache::score_key(query, &chunk.text);
            if !truncated && let Some(nlls) = self.cached(cache, key, q.len()) {
                let nll = mean(&nlls);
                scores[index] = Some(ChunkScore {
                    score: query_nll - nll,
                    nll,
                    query_nlls: nlls,
                    n_tokens: tokens.len(),
                    truncated,
                    kv_state_hit: false,
                    cache_hit: true,
                    skipped: false,
                });
                continue;
            }
            todo.push(Member {
                index,
                key,
                hash: chunk.hash,
                tokens,
                truncated,
                nlls: Vec::new(),
                kv_state_hit: false,
            });
        }
        let mut todo = todo.into_iter().peekable();
        while todo.peek().is_some() {
            // Chunks that fit the window together, up to `max_packed` of them.
            let mut group = Vec::new();
            let mut group_tokens = 0usize;
            while let Some(m) = todo.peek() {
                let n_seq_tokens = head.len() + m.tokens.len() + suffix.len();
                if !group.is_empty()
                    && (group.len() == max_packed || group_tokens + n_seq_tokens > self.n_ctx)
                {
                    break;
                }
                group_tokens += n_seq_tokens;
                group.extend(todo.next());
            }
            // What the group will decode: a chunk with a cached KV state only the suffix.
            let cost: usize = group
                .iter()
                .map(|m| {
                    let n_prefix = head.len() + m.tokens.len();
                    let restorable =
                        options.reuse_kv_states && self.states.covers(m.hash, n_prefix);
                    suffix.len() + if restorable { 0 } else { n_prefix }
                })
                .sum();
            if self.stops(&options, cost) {
                for m in group.into_iter().chain(todo) {
                    let index = m.index;
                    scores[index] = Some(m.skip());
                }
                break;
            }
            self.score_group(&mut group, &head, &suffix, score_from, &q, options, cancel)?;
            self.finish_group(&mut group, query_nll, cache, &mut scores);
        }
        let query_tokens = token_spans(self.model, query, &q)
            .into_iter()
            .zip(query_nlls)
            .map(|((start, end), nll)| TokenNll { start, end, nll })
            .collect();
        Ok(ScoreOutput {
            query_nll,
            n_query_tokens: q.len(),
            query_tokens,
            scores: scores.into_iter().flatten().collect(),
            model_tokens: self.decoded,
        })
    }

    /// Moves a scored group's results into `scores`, caching those of whole chunks.
    fn finish_group(
        &mut self,
        group: &mut Vec<Member>,
        query_nll: f32,
        cache: bool,
        scores: &mut [Option<ChunkScore>],
    ) {
        let mut records = Vec::new();
        for m in group.drain(..) {
            if cache && !m.truncated {
                records.push((m.key, m.tokens.len(), m.nlls.clone()));
            }
            let index = m.index;
            scores[index] = Some(m.finish(query_nll));
        }
        self.store(records);
    }

    /// Per-token NLLs cached under `key`, when caching is on and the record has `n` values.
    fn cached(&mut self, cache: bool, key: u64, n: usize) -> Option<Vec<f32>> {
        if !cache {
            return None;
        }
        self.disk.as_ref()?.get(key, n)
    }

    /// Stores (key, input tokens, per-token NLLs) records in the disk cache.
    fn store(&mut self, records: Vec<(u64, usize, Vec<f32>)>) {
        if let Some(disk) = &self.disk {
            disk.put_many(records);
        }
    }

    /// Scores chunks that fit the window together, one sequence each.
    #[allow(clippy::too_many_arguments)]
    fn score_group(
        &mut self,
        group: &mut [Member],
        head: &[LlamaToken],
        suffix: &[LlamaToken],
        score_from: usize,
        q: &[LlamaToken],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<()> {
        self.ctx.clear_kv_cache();
        let use_states = options.reuse_kv_states && self.states.cap_bytes > 0;
        let mut spans = Vec::with_capacity(group.len());
        if !use_states {
            // One span per chunk: [BOS] chunk sep q, scored on the query.
            for (seq, m) in group.iter().enumerate() {
                let tokens: Vec<LlamaToken> = head
                    .iter()
                    .chain(&m.tokens)
                    .chain(suffix)
                    .copied()
                    .collect();
                spans.push(Span {
                    seq: seq as i32,
                    pos0: 0,
                    score_from: head.len() + m.tokens.len() + score_from,
                    tokens,
                    targets: q.to_vec(),
                });
            }
        } else {
            // Phase 1: restore or decode each chunk, and keep the new states.
            let mut fresh = Vec::new();
            for (seq, m) in group.iter_mut().enumerate() {
                let n_prefix = head.len() + m.tokens.len();
                if n_prefix == 0 {
                    continue;
                }
                let restored = match self.states.get(m.hash) {
                    Some(entry) if entry.n_tokens >= n_prefix => {
                        let cut = entry.n_tokens > n_prefix;
                        self.ctx
                            .state_seq_set(&entry.state, seq as i32)
                            .map_err(|e| Error::Llama(format!("cannot restore a KV state: {e}")))?;
                        if cut {
                            self.ctx
                                .clear_kv_cache_seq(Some(seq as u32), Some(n_prefix as u32), None)
                                .map_err(|e| Error::Llama(e.to_string()))?;
                        }
                        true
                    }
                    _ => false,
                };
                m.kv_state_hit = restored;
                if restored {
                    bump(&self.counters.kv_state_hits, 1);
                } else {
                    bump(&self.counters.kv_state_misses, 1);
                    fresh.push(seq);
                    spans.push(Span {
                        seq: seq as i32,
                        pos0: 0,
                        tokens: head.iter().chain(&m.tokens).copied().collect(),
                        score_from: n_prefix,
                        targets: Vec::new(),
                    });
                }
            }
            self.decode_spans(&spans, cancel)?;
            for seq in fresh {
                let m = &group[seq];
                let state = self
                    .ctx
                    .state_seq_get(seq as i32, LlamaStateSeqFlags::empty())
                    .map_err(|e| Error::Llama(format!("cannot save a KV state: {e}")))?;
                self.states.put(m.hash, state, head.len() + m.tokens.len());
            }
            self.counters
                .kv_states
                .store(self.states.entries.len() as u64, Ordering::Relaxed);
            self.counters
                .kv_state_bytes
                .store(self.states.bytes as u64, Ordering::Relaxed);
            // Phase 2: sep + query on top of each chunk.
            spans.clear();
            for (seq, m) in group.iter().enumerate() {
                spans.push(Span {
                    seq: seq as i32,
                    pos0: head.len() + m.tokens.len(),
                    tokens: suffix.to_vec(),
                    score_from,
                    targets: q.to_vec(),
                });
            }
        }
        let nlls = self.decode_spans(&spans, cancel)?;
        for (m, nll) in group.iter_mut().zip(nlls) {
            m.nlls = nll;
        }
        Ok(())
    }

    fn token_nlls(
        &mut self,
        prefix: Option<&str>,
        texts: &[String],
        options: ScoreOptions,
        cancel: &CancelFlag,
    ) -> Result<Vec<TokenNlls>> {
        let mut p = self.bos_tokens();
        if let Some(prefix) = prefix {
            p.extend(tokenize(self.model, prefix));
        }
        if p.len() >= self.n_ctx {
            return Err(Error::PrefixTooLong {
                n_tokens: p.len(),
                window_tokens: self.n_ctx,
            });
        }
        let budget = self.n_ctx - p.len();
        let first_token_scored = !p.is_empty();
        // Disk-cached by text alone (unconditional, query-independent) or by (prefix, text).
        let cache = options.use_cache;
        let disk_key = |text: &str| ScoreCache::nlls_key(prefix, text);

        let mut results: Vec<Option<TokenNlls>> = vec![None; texts.len()];
        let mut todo: Vec<(usize, Vec<LlamaToken>, bool)> = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let mut tokens = tokenize(self.model, text);
            let truncated = tokens.len() > budget;
            tokens.truncate(budget);
            if !truncated && let Some(nlls) = self.cached(cache, disk_key(text), tokens.len()) {
                let spans = token_spans(self.model, text, &tokens);
                results[i] = Some(assemble(&spans, &nlls, first_token_scored, false));
                continue;
            }
            todo.push((i, tokens, truncated));
        }

        self.ctx.clear_kv_cache();
        if todo.is_empty() {
            return Ok(results.into_iter().flatten().collect());
        }
        let shared = options.reuse_prefix && p.len() > 1;
        // The shared prefix is decoded with the first group the deadline admits.
        let mut prefix_pending = shared;
        // Packing texts that share prefix cells changed NLLs of the later texts (mean 0.03,
        // up to 0.6 nats per token, measured with llama.cpp 0.1.160), so shared-prefix
        // batches decode one text at a time; packing without sharing is exact.
        let max_packed = if shared {
            1
        } else {
            options.max_packed_seqs.clamp(1, MAX_SEQS - 1)
        };
        let mut new_records = Vec::new();
        let mut start = 0;
        while start < todo.len() {
            // Group texts that fit the window together.
            // Shared prefix cells count once; otherwise every sequence holds its own prefix.
            let cost = |tokens: &Vec<LlamaToken>| tokens.len() + if shared { 0 } else { p.len() };
            let mut end = start;
            let mut used = if shared { p.len() } else { 0 };
            while end < todo.len()
                && end - start < max_packed
                && (end == start || used + cost(&todo[end].1) <= self.n_ctx)
            {
                used += cost(&todo[end].1);
                end += 1;
            }
            let prefix_cost = if prefix_pending { p.len() - 1 } else { 0 };
            let group_cost: usize = todo[start..end].iter().map(|(_, t, _)| cost(t)).sum();
            if self.stops(&options, prefix_cost + group_cost) {
                for (i, _, truncated) in &todo[start..] {
                    results[*i] = Some(TokenNlls {
                        tokens: Vec::new(),
                        first_token_scored,
                        truncated: *truncated,
                        skipped: true,
                    });
                }
                break;
            }
            if prefix_pending {
                let span = Span {
                    seq: 0,
                    pos0: 0,
                    tokens: p[..p.len() - 1].to_vec(),
                    score_from: p.len() - 1,
                    targets: Vec::new(),
                };
                self.decode_spans(&[span], cancel)?;
                prefix_pending = false;
            }
            let mut spans = Vec::with_capacity(end - start);
            let mut members = Vec::with_capacity(end - start);
            for (k, (_, tokens, _)) in todo[start..end].iter().enumerate() {
                let seq = if shared { k as i32 + 1 } else { k as i32 };
                if tokens.is_empty() {
                    continue;
                }
                let last = tokens.len() - 1;
                let span = if p.is_empty() {
                    // Nothing predicts the first token: score from the second on.
                    Span {
                        seq,
                        pos0: 0,
                        tokens: tokens[..last].to_vec(),
                        score_from: 0,
                        targets: tokens[1..].to_vec(),
                    }
                } else if shared {
                    self.ctx
                        .copy_kv_cache_seq(0, seq, None, None)
                        .map_err(|e| Error::Llama(e.to_string()))?;
                    Span {
                        seq,
                        pos0: p.len() - 1,
                        tokens: std::iter::once(p[p.len() - 1])
                            .chain(tokens[..last].iter().copied())
                            .collect(),
                        score_from: 0,
                        targets: tokens.clone(),
                    }
                } else {
                    Span {
                        seq,
                        pos0: 0,
                        tokens: p.iter().chain(&tokens[..last]).copied().collect(),
                        score_from: p.len() - 1,
                        targets: tokens.clone(),
                    }
                };
                spans.push(span);
                members.push(k);
            }
            let nlls = self.decode_spans(&spans, cancel)?;
            let mut by_member: Vec<Vec<f32>> = vec![Vec::new(); end - start];
            for (k, nll) in members.into_iter().zip(nlls) {
                by_member[k] = nll;
            }
            for (k, nll) in by_member.into_iter().enumerate() {
                let (i, tokens, truncated) = &todo[start + k];
                let mut values = nll;
                if !first_token_scored && !tokens.is_empty() {
                    values.insert(0, 0.0);
                }
                let text = &texts[*i];
                let token_spans = token_spans(self.model, text, tokens);
                if cache && !truncated {
                    new_records.push((disk_key(text), tokens.len(), values.clone()));
                }
                results[*i] = Some(assemble(
                    &token_spans,
                    &values,
                    first_token_scored,
                    *truncated,
                ));
            }
            // Drop this group's sequences; the shared prefix (seq 0) stays.
            if shared {
                for seq in 1..=(end - start) {
                    self.ctx
                        .clear_kv_cache_seq(Some(seq as u32), None, None)
                        .map_err(|e| Error::Llama(e.to_string()))?;
                }
            } else {
                self.ctx.clear_kv_cache();
            }
            start = end;
        }
        self.store(new_records);
        Ok(results.into_iter().flatten().collect())
    }

    /// Decodes `spans` in batches of `n_batch` tokens (a batch may hold several spans: that is
    /// packing) and returns, per span, the NLL of each target.
    fn decode_spans(&mut self, spans: &[Span], cancel: &CancelFlag) -> Result<Vec<Vec<f32>>> {
        let mut nlls: Vec<Vec<f32>> = spans
            .iter()
            .map(|s| Vec::with_capacity(s.targets.len()))
            .collect();
        let mut pending: Vec<(i32, usize, LlamaToken)> = Vec::new();
        self.batch.clear();
        for (span_index, span) in spans.iter().enumerate() {
            for (i, &token) in span.tokens.iter().enumerate() {
                let wants_logits = i >= span.score_from;
                let batch_index = self.batch.n_tokens();
                let pos = i32::try_from(span.pos0 + i).unwrap_or(i32::MAX);
                self.batch
                    .add(token, pos, &[span.seq], wants_logits)
                    .map_err(|e| Error::Llama(format!("batch: {e}")))?;
                if wants_logits {
                    pending.push((batch_index, span_index, span.targets[i - span.score_from]));
                }
                if self.batch.n_tokens() as usize >= self.n_batch {
                    self.flush(&mut pending, &mut nlls, cancel)?;
                }
            }
        }
        if self.batch.n_tokens() > 0 {
            self.flush(&mut pending, &mut nlls, cancel)?;
        }
        Ok(nlls)
    }

    fn flush(
        &mut self,
        pending: &mut Vec<(i32, usize, LlamaToken)>,
        nlls: &mut [Vec<f32>],
        cancel: &CancelFlag,
    ) -> Result<()> {
        if cancel.is_cancelled() {
            self.batch.clear();
            return Err(Error::Cancelled);
        }
        let n = self.batch.n_tokens() as usize;
        let started = Instant::now();
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| Error::Llama(format!("decode of {n} tokens failed: {e}")))?;
        self.decoded += n;
        bump(&self.counters.tokens_decoded, n as u64);
        for (batch_index, span_index, target) in pending.drain(..) {
            let logits = self.ctx.get_logits_ith(batch_index);
            nlls[span_index].push(token_nll(logits, target));
        }
        self.batch.clear();
        if n > 0 {
            let per_token = started.elapsed().as_secs_f64() / n as f64;
            self.secs_per_token = Some(match self.secs_per_token {
                Some(average) => 0.7 * average + 0.3 * per_token,
                None => per_token,
            });
        }
        Ok(())
    }
}

struct Member {
    /// Position in the request.
    index: usize,
    /// Disk-cache key of (query, chunk).
    key: u64,
    /// Content hash: keys the KV-state cache.
    hash: u64,
    tokens: Vec<LlamaToken>,
    truncated: bool,
    /// NLL of each query token given the chunk.
    nlls: Vec<f32>,
    kv_state_hit: bool,
}

impl Member {
    fn finish(self, query_nll: f32) -> ChunkScore {
        let nll = mean(&self.nlls);
        ChunkScore {
            score: query_nll - nll,
            nll,
            query_nlls: self.nlls,
            n_tokens: self.tokens.len(),
            truncated: self.truncated,
            kv_state_hit: self.kv_state_hit,
            cache_hit: false,
            skipped: false,
        }
    }

    fn skip(self) -> ChunkScore {
        ChunkScore {
            score: f32::NEG_INFINITY,
            nll: f32::INFINITY,
            query_nlls: Vec::new(),
            n_tokens: self.tokens.len(),
            truncated: self.truncated,
            kv_state_hit: false,
            cache_hit: false,
            skipped: true,
        }
    }
}

/// Token NLLs with their byte spans; shared with the remote scorer.
pub(crate) fn assemble(
    spans: &[(usize, usize)],
    nlls: &[f32],
    first_token_scored: bool,
    truncated: bool,
) -> TokenNlls {
    TokenNlls {
        tokens: spans
            .iter()
            .zip(nlls)
            .map(|(&(start, end), &nll)| TokenNll { start, end, nll })
            .collect(),
        first_token_scored,
        truncated,
        skipped: false,
    }
}

pub(crate) fn mean(values: &[f32]) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    (values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64) as f32
}

/// `-log softmax(logits)[target]`. The log-sum-exp over the vocabulary (150k entries for
/// Qwen) runs once per scored token, so it is written to vectorise: a polynomial `exp` in 16
/// independent f32 lanes (within 1e-4 nats of the f64 reference, tested below), summed in a
/// fixed order so the result is deterministic.
fn token_nll(logits: &[f32], target: LlamaToken) -> f32 {
    const LANES: usize = 16;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0f32; LANES];
    let blocks = logits.chunks_exact(LANES);
    let rest = blocks.remainder();
    for block in blocks {
        for (lane, &x) in lanes.iter_mut().zip(block) {
            *lane += exp_nonpositive(x - max);
        }
    }
    let sum: f64 = lanes.iter().map(|&v| f64::from(v)).sum::<f64>()
        + rest
            .iter()
            .map(|&x| f64::from(exp_nonpositive(x - max)))
            .sum::<f64>();
    let target_logit = usize::try_from(target.0)
        .ok()
        .and_then(|i| logits.get(i))
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    (f64::from(max) + sum.ln() - f64::from(target_logit)) as f32
}

/// `e^x` for `x ≤ 0` (relative error ~1e-7): `2^n · e^y` with `n = round(x·log2 e)` placed
/// in the exponent bits and `e^y`, `|y| ≤ ln2 / 2`, by its degree-6 Taylor polynomial.
/// Results below `e^-87` are flushed to about that value (they vanish in any sum with `1`).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds an f32 of magnitude < 2^22 to an integer.
    const ROUND: f32 = 12_582_912.0;
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    let n = (t + ROUND) - ROUND;
    let y = (t - n) * std::f32::consts::LN_2;
    let p = 1.0
        + y * (1.0
            + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y / 720.0)))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_without_an_extension_the_kernels_use_is_refused_by_name() {
        let info = BuildInfo {
            backend: "cpu",
            simd: "portable",
            cpu_features: vec!["sse4.2", "avx", "avx2", "fma"],
        };
        assert!(check_cpu(&info, |_| true).is_ok());
        let err = check_cpu(&info, |f| !matches!(f, "avx2" | "fma")).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::UnsupportedCpu { .. }), "{message}");
        assert!(message.contains("lacks avx2, fma"), "{message}");
        assert!(
            message.contains("simd=portable (sse4.2,avx,avx2,fma)"),
            "{message}"
        );
        assert!(message.contains("scripts/ctxzip"), "{message}");
    }

    #[test]
    fn this_machine_runs_the_kernels_this_build_carries() {
        let info = build_info();
        check_cpu(&info, cpu_has).unwrap();
        // A plain x86-64 build carries ggml's default kernels: AVX2, FMA and F16C among them
        // (scoring/build.rs), which a "baseline" label once hid.
        if cfg!(target_arch = "x86_64")
            && info.simd == "portable"
            && option_env!("SOURCE_DATE_EPOCH").is_none()
            && option_env!("GGML_AVX2").is_none()
        {
            for feature in ["avx2", "fma", "f16c"] {
                assert!(info.cpu_features.contains(&feature), "{info}");
            }
        }
    }

    #[test]
    fn token_nll_matches_the_f64_log_softmax() {
        // A vocabulary-sized row of spread-out logits, and a short one (remainder lanes only).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 60.0 - 30.0
        };
        for n in [151_936, 7] {
            let logits: Vec<f32> = (0..n).map(|_| next()).collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(max)
                + logits
                    .iter()
                    .map(|&x| f64::from(x - max).exp())
                    .sum::<f64>()
                    .ln();
            for target in [0, n / 2, n - 1] {
                let exact = (lse - f64::from(logits[target])) as f32;
                let fast = token_nll(&logits, LlamaToken(target as i32));
                assert!((exact - fast).abs() < 1e-4, "{exact} vs {fast} (n = {n})");
            }
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
    }
}
