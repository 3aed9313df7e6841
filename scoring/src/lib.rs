//! Conditional-perplexity scoring of code chunks with a local llama.cpp model: which chunks
//! help a small language model predict the query, model management, and a score cache.
//!
//! - [`models`]: the model catalog, `pull` through pip, and which model a command uses.
//! - [`model`]: [`ScoringModel`], the interface the pipeline and the servers score through.
//! - [`engine`]: the [`Scorer`] (llama.cpp; implements [`ScoringModel`]), a handle over the
//!   worker thread that owns the model context.
//! - [`cache`]: the on-disk store of query-independent per-chunk results.
//! - [`compress`]: the whole pipeline: candidates, coarse ranking, budget, fine pruning,
//!   assembly.
//! - [`gguf`]: checks a model file before llama.cpp loads it.
//! - [`overlap`]: a deterministic [`ScoringModel`] from token overlap, for testing the
//!   pipeline's own logic without llama.cpp.
//! - [`remote`]: the remote backend: [`remote::RemoteModel`] (implements [`ScoringModel`]
//!   over HTTP against vLLM or llama-cpp-python), its settings and wire shapes.
//! - [`backend`]: the settings every shell gathers, and the one function that starts the
//!   model they select (local or remote).
//! - [`bench`]: the scoring benchmark behind `ctxzip bench scoring`.

pub mod backend;
pub mod bench;
pub mod cache;
pub mod compress;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod model;
pub mod models;
pub mod overlap;
pub mod remote;

pub use engine::{
    BuildInfo, CancelFlag, ChunkInput, ChunkScore, Device, Placement, ScoreOptions, ScoreOutput,
    Scorer, ScorerConfig, ScorerStats, TokenNll, TokenNlls, build_info, devices,
};
pub use error::{Error, Result};
pub use model::{ModelDescription, ScoringModel, SharedModel, TokenCountMemo};
pub use models::{DEFAULT_MODEL, ResolvedModel};
