//! Which backend scores: the one place that turns a shell's model settings (a GGUF, and a
//! remote scorer when one is configured) into a [`SharedModel`]. The CLI, the LSP server and
//! the MCP server all start their model here, so a setting means the same on each.

use std::sync::Arc;

use crate::engine::{Scorer, ScorerConfig};
use crate::error::Result;
use crate::model::SharedModel;
use crate::models;
use crate::remote::{RemoteFlags, RemoteModel, RemoteModelConfig, resolve_settings};

/// What selects and runs the model, as every shell gathers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSettings {
    /// Catalog name or GGUF path (the local model, or the remote model's tokenizer).
    pub model: Option<String>,
    /// Never download a model.
    pub offline: bool,
    /// CPU threads for llama.cpp (local only).
    pub threads: Option<usize>,
    /// Layers offloaded to a GPU (local only); `None`: `gpu_layers` in config.toml, else 0
    /// ([`models::gpu_layers`]).
    pub gpu_layers: Option<u32>,
    /// Let llama.cpp log to stderr.
    pub verbose: bool,
    /// The remote scorer's flags; with no URL here or in config.toml, scoring is local.
    pub remote: RemoteFlags,
}

/// The model `settings` select, loaded: the remote scorer when a URL is set (by flag or in
/// config.toml), else the llama.cpp engine. The GGUF is resolved either way: the remote
/// scorer tokenizes with it (see [`crate::remote`]).
pub fn start(settings: &BackendSettings) -> Result<SharedModel> {
    start_with(settings, |_| {})
}

/// [`start`] with a last word on the config (benchmarks and tests); its disk cache and window
/// hold for the remote scorer too.
pub fn start_with(
    settings: &BackendSettings,
    adjust: impl FnOnce(&mut ScorerConfig),
) -> Result<SharedModel> {
    let table = models::config_table()?;
    let remote = resolve_settings(&settings.remote, table.as_ref())?;
    let resolved = models::resolve(settings.model.as_deref(), settings.offline)?;
    let mut config = ScorerConfig::new(&resolved);
    if let Some(threads) = settings.threads {
        config.n_threads = threads.max(1);
    }
    config.gpu_layers = models::gpu_layers(settings.gpu_layers)?;
    config.verbose = settings.verbose;
    adjust(&mut config);
    if let Some(remote) = remote {
        // The adjusted disk cache and window hold for the remote scorer too.
        let remote = RemoteModelConfig {
            disk_cache_path: config.disk_cache_path,
            disk_cache_bytes: config.disk_cache_bytes,
            n_ctx_tokens: config.n_ctx_tokens,
            verbose: config.verbose,
            ..RemoteModelConfig::new(remote, &resolved)
        };
        return Ok(Arc::new(RemoteModel::new(remote)?));
    }
    Ok(Arc::new(Scorer::new(config)?))
}
