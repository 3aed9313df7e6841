//! The server's one scorer: loaded once (in the background after initialize, or by the first
//! request), kept for the server's life so its KV-state cache makes later queries cheap, and
//! replaced only when the model settings change.

use std::sync::Arc;

use ctxzip_scoring::SharedModel;
use ctxzip_scoring::backend::{self, BackendSettings};
use tokio::sync::Mutex;

/// What selects and runs the model (local or remote); a change means a new scorer.
pub type ModelSettings = BackendSettings;

struct Loaded {
    settings: ModelSettings,
    scorer: SharedModel,
}

/// Facts about the loaded model for `ctxzip/status`.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub path: String,
    pub architecture: String,
    pub build: String,
    pub device: String,
    pub gpu_layers: u32,
    pub gpu_layers_asked: u32,
}

#[derive(Clone, Default)]
pub struct ModelSlot {
    current: Arc<Mutex<Option<Loaded>>>,
}

impl ModelSlot {
    /// The scorer for `settings`, loading it when there is none or the settings changed.
    /// The load runs on its own task: a cancelled request does not waste it.
    pub async fn get(&self, settings: &ModelSettings) -> Result<SharedModel, String> {
        let mut guard = Arc::clone(&self.current).lock_owned().await;
        if let Some(loaded) = guard.as_ref()
            && loaded.settings == *settings
        {
            return Ok(Arc::clone(&loaded.scorer));
        }
        let settings = settings.clone();
        let task = tokio::spawn(async move {
            let load_settings = settings.clone();
            let loaded = tokio::task::spawn_blocking(move || load(&load_settings))
                .await
                .map_err(|e| format!("loading the model failed: {e}"))??;
            *guard = Some(Loaded {
                settings,
                scorer: Arc::clone(&loaded),
            });
            Ok::<SharedModel, String>(loaded)
        });
        task.await
            .map_err(|e| format!("loading the model failed: {e}"))?
    }

    /// The loaded model, if any (never waits for a load in progress).
    pub fn info(&self) -> Option<ModelInfo> {
        let guard = self.current.try_lock().ok()?;
        guard.as_ref().map(|l| {
            let description = l.scorer.description();
            ModelInfo {
                path: description.location,
                architecture: description.architecture,
                build: description.build,
                device: description.device,
                gpu_layers: description.gpu_layers,
                gpu_layers_asked: description.gpu_layers_asked,
            }
        })
    }

    pub fn stats(&self) -> Option<ctxzip_scoring::ScorerStats> {
        let guard = self.current.try_lock().ok()?;
        guard.as_ref().map(|l| l.scorer.stats())
    }
}

/// Starts the model the settings select: the llama.cpp engine, or the remote scorer.
fn load(settings: &ModelSettings) -> Result<SharedModel, String> {
    backend::start(settings).map_err(|e| format!("cannot start the model: {e}"))
}
