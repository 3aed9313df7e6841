//! `ctxzip lsp`: the language server on stdio (the server itself is the ctxzip-lsp crate).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use ctxzip_lsp::{Defaults, Options};
use ctxzip_scoring::compress::CompressRequest;

use crate::compress_cmd::ModelArgs;

#[derive(Args)]
pub struct LspArgs {
    /// Accepted for editors that pass it; stdio is the only transport.
    #[arg(long)]
    pub stdio: bool,
    /// Default budget in tokens for requests that name none.
    #[arg(long)]
    pub budget: Option<usize>,
    /// Largest LSP message accepted, in bytes; a larger one is skipped unread and answered
    /// with an error.
    #[arg(long, default_value_t = ctxzip_framing::DEFAULT_MAX_MESSAGE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_message_bytes: u64,
    /// Show secrets found in file text instead of replacing them with `[REDACTED:<rule>]`
    /// (initializationOptions `"redact": false` does the same).
    #[arg(long)]
    pub no_redact: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Serves until `exit`: exit code 0 after `shutdown`, 1 when `exit` came without it.
pub fn run(args: LspArgs) -> Result<ExitCode> {
    let defaults = Defaults {
        options: Options {
            model: args.model.model,
            offline: args.model.offline.then_some(true),
            threads: args.model.threads,
            gpu_layers: args.model.gpu_layers,
            redact: args.no_redact.then_some(false),
            scorer_url: args.model.scorer_url,
            scorer_model: args.model.scorer_model,
            scorer_max_in_flight: args
                .model
                .scorer_max_in_flight
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            scorer_timeout_s: args.model.scorer_timeout_s,
            request: CompressRequest {
                budget: args.budget.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                ..CompressRequest::default()
            },
            ..Options::default()
        },
        verbose: args.model.verbose,
        max_message_bytes: Some(usize::try_from(args.max_message_bytes).unwrap_or(usize::MAX)),
    };
    let clean = ctxzip_lsp::run_stdio(defaults)?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
