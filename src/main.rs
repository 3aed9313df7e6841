//! The `ctxzip` binary: command-line glue over the chunker, scorer and servers.

mod bench_cmd;
mod bench_quality;
mod bench_remote;
mod bench_scoring;
mod chunks_cmd;
mod compress_cmd;
mod lsp_cmd;
mod model_cmd;
mod registry;
mod stage_line;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Give coding agents and editors the part of a codebase that matters for an instruction,
/// inside a token budget.
#[derive(Parser)]
#[command(name = "ctxzip", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a workspace for a query into a token budget.
    Compress(compress_cmd::CompressArgs),
    /// List the function-level chunks of files or directories.
    Chunks(chunks_cmd::ChunksArgs),
    /// Serve the Language Server Protocol on stdio (see lsp/README.md).
    Lsp(lsp_cmd::LspArgs),
    /// Serve compress_context to coding agents over MCP on stdio (see mcp/README.md).
    Mcp {
        #[command(flatten)]
        mcp: ctxzip_mcp::McpArgs,
        #[command(flatten)]
        model: compress_cmd::ModelArgs,
        #[command(flatten)]
        walk: chunks_cmd::WalkArgs,
    },
    /// Benchmarks (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Pull, list and locate the models the scorer runs.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compress(args) => compress_cmd::run(args),
        Command::Chunks(args) => chunks_cmd::run(args),
        Command::Lsp(args) => lsp_cmd::run(args),
        Command::Mcp { mcp, model, walk } => walk
            .options(None)
            .and_then(|walk| mcp.settings(walk))
            .and_then(|settings| ctxzip_mcp::run(settings, move || model.start_model())),
        Command::Bench(command) => bench_cmd::run(command).map(|()| ExitCode::SUCCESS),
        Command::Model(command) => model_cmd::run(command).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`ctxzip compress ... | head`): nothing failed that anyone is
        // still waiting for, so end quietly, as Unix tools do.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // Bad input exits 2 (the user can fix it); anything else 1.
            if err.downcast_ref::<compress_cmd::BadInput>().is_some()
                || err
                    .downcast_ref::<ctxzip_chunker::workspace::WalkError>()
                    .is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Whether `err` comes from writing to a pipe whose reader has closed it.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let broken = |kind: Option<std::io::ErrorKind>| kind == Some(std::io::ErrorKind::BrokenPipe);
    err.chain().any(|cause| {
        broken(
            cause
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind),
        ) || broken(
            cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        )
    })
}
