//! `ctxzip mcp`: the MCP server that gives coding agents the part of a workspace that matters
//! for a task, over stdio with the official Rust SDK (`rmcp`). This crate owns the MCP shell
//! only: the tools' schemas and results, the workspace root, progress notifications and the
//! output cap. Chunking, the workspace index (walk, stamps, confinement: shared with the LSP)
//! and compression live in `ctxzip-chunker` and `ctxzip-scoring`.
//!
//! - [`server`]: the handler and its `compress_context` and `status` tools.
//! - [`progress`]: `notifications/progress` for calls that ask for it.
//! - `transport`: the framing guard in front of rmcp (bounded lines, every bad line
//!   answered).

pub mod progress;
pub mod schema;
pub mod server;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ctxzip_chunker::workspace::WalkOptions;
use ctxzip_scoring::SharedModel;
use rmcp::ServiceExt;
use tokio::sync::watch;

pub use server::{CtxzipServer, ModelState, Settings};

/// Claude Code refuses tool outputs over 25,000 tokens; leave room for the result's framing.
pub const DEFAULT_MAX_OUTPUT_TOKENS: usize = 20_000;

/// The flags of `ctxzip mcp` that are its own (model and walk flags come from the binary).
#[derive(clap::Args, Clone, Debug)]
pub struct McpArgs {
    /// Workspace root (default: the client's first root, else the working directory).
    #[arg(value_name = "ROOT", conflicts_with = "root")]
    pub root_arg: Option<PathBuf>,
    /// Workspace root; nothing outside it is read.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Largest context a call returns, in tokens of the call's `tokenizer` (the model's unless
    /// the call names o200k, cl100k or a tokenizer.json); larger budgets are clamped.
    #[arg(long, default_value_t = DEFAULT_MAX_OUTPUT_TOKENS)]
    pub max_output_tokens: usize,
    /// Budget of a call that gives none, in tokens.
    #[arg(long, default_value_t = ctxzip_scoring::compress::DEFAULT_BUDGET_TOKENS)]
    pub default_budget_tokens: usize,
    /// Largest message (one line of JSON) accepted, in bytes; a longer line is skipped
    /// unread and answered with an error.
    #[arg(long, default_value_t = ctxzip_framing::DEFAULT_MAX_MESSAGE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_message_bytes: u64,
}

impl McpArgs {
    /// Checks the flags and resolves the root to a canonical directory.
    pub fn settings(&self, walk: WalkOptions) -> Result<Settings> {
        if self.max_output_tokens == 0 || self.default_budget_tokens == 0 {
            bail!(
                "--max-output-tokens and --default-budget-tokens must be positive (e.g. 20000 and 2000)"
            );
        }
        let root = match self.root.as_ref().or(self.root_arg.as_ref()) {
            Some(dir) => {
                let canonical = std::fs::canonicalize(dir).with_context(|| {
                    format!("workspace root {}: no such directory", dir.display())
                })?;
                if !canonical.is_dir() {
                    bail!(
                        "workspace root {} is not a directory; give the repository's directory",
                        dir.display()
                    );
                }
                Some(canonical)
            }
            None => None,
        };
        Ok(Settings {
            root,
            max_output_tokens: self.max_output_tokens,
            default_budget_tokens: self.default_budget_tokens.min(self.max_output_tokens),
            max_message_bytes: usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX),
            walk,
        })
    }
}

/// Serves MCP on stdin/stdout until the client closes it. The model loads in the background
/// with `load_scorer`, the index builds in the background, and calls wait for both.
pub fn run(
    settings: Settings,
    load_scorer: impl FnOnce() -> Result<SharedModel> + Send + 'static,
) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(serve(settings, load_scorer));
    // A model load or a compression may still run on a blocking thread: the client is gone,
    // so do not wait for it.
    runtime.shutdown_background();
    served.map(|()| ExitCode::SUCCESS)
}

async fn serve(
    settings: Settings,
    load_scorer: impl FnOnce() -> Result<SharedModel> + Send + 'static,
) -> Result<()> {
    let (model_tx, model_rx) = watch::channel(ModelState::Loading);
    tokio::task::spawn_blocking(move || {
        let state = match load_scorer() {
            Ok(scorer) => ModelState::Ready(scorer),
            Err(e) => {
                eprintln!("ctxzip mcp: {e:#}");
                ModelState::Failed(format!("{e:#}"))
            }
        };
        let _ = model_tx.send(state);
    });
    let has_root = settings.root.is_some();
    let max_message_bytes = settings.max_message_bytes;
    let server = CtxzipServer::new(settings, model_rx);
    if has_root {
        server.start_indexing(None);
    }
    let limits = ctxzip_framing::Limits { max_message_bytes };
    let (input, output, writer) = transport::guard(tokio::io::stdin(), tokio::io::stdout(), limits);
    let running = server
        .serve((input, output))
        .await
        .context("MCP handshake failed")?;
    running.waiting().await.context("MCP session failed")?;
    // Every reply written reaches stdout; rmcp has closed its output by now.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(())
}
