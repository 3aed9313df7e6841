//! ctxzip's language server: a live index of the workspace, kept current as the user types,
//! answering `ctxzip/compress` with the context a code model needs inside a token budget.
//!
//! - [`indexer`]: the background task that walks and reads the workspace into the one
//!   workspace index (`ctxzip_chunker::index`, shared with MCP), with progress.
//! - `server`: the protocol shell (tower-lsp-server); `protocol`: ctxzip's own wire shapes;
//!   `model`: the one scorer the server keeps; `progress`: a compress request's `$/progress`.
//! - `transport`: the framing guard in front of tower-lsp (bounded, resynchronising, every
//!   framing error answered; stdin's end cancels work in flight).
//! - [`client`]: a small stdio JSON-RPC client that drives `ctxzip lsp` in tests and
//!   benchmarks.

pub mod client;
pub mod indexer;
mod model;
mod progress;
pub mod protocol;
mod server;
mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tower_lsp_server::{LspService, Server as LspTransport};

pub use protocol::Options;
pub use server::{COMPRESS_COMMAND, Defaults};

/// Requests handled at once; the rest wait in tower-lsp's queue. High enough that long
/// compress requests never keep `$/cancelRequest` or edits from being read.
const MAX_CONCURRENT_REQUESTS: usize = 64;

/// Serves LSP on stdin/stdout until `exit`. Returns whether `shutdown` came first (the exit
/// code is 0 then, 1 otherwise, as the protocol asks).
pub fn run_stdio(defaults: Defaults) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ctxzip-lsp")
        .build()
        .context("cannot start the async runtime")?;
    let shut_down = Arc::new(AtomicBool::new(false));
    let server_flag = Arc::clone(&shut_down);
    let limits = ctxzip_framing::Limits {
        max_message_bytes: defaults
            .max_message_bytes
            .unwrap_or(ctxzip_framing::DEFAULT_MAX_MESSAGE_BYTES),
    };
    runtime.block_on(async move {
        let stop = Arc::new(OnceLock::<server::StopHandle>::new());
        let stop_setter = Arc::clone(&stop);
        let (service, socket) = LspService::build(move |client| {
            let server = server::Server::new(client, defaults, server_flag);
            let _ = stop_setter.set(server.stop_handle());
            server
        })
        .custom_method("ctxzip/compress", server::Server::compress)
        .custom_method("ctxzip/status", server::Server::status)
        .finish();
        let on_eof = move || {
            if let Some(stop) = stop.get() {
                stop.stop();
            }
        };
        let (input, output, writer) =
            transport::guard(tokio::io::stdin(), tokio::io::stdout(), limits, on_eof);
        LspTransport::new(input, output, socket)
            .concurrency_level(MAX_CONCURRENT_REQUESTS)
            .serve(service)
            .await;
        // Every reply the server wrote reaches stdout before the process ends.
        let _ = writer.await;
    });
    // Blocking work still running (a compress being cancelled, the stdin reader) must not
    // hold the process open.
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(shut_down.load(Ordering::SeqCst))
}
