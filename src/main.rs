//! The `ctxzip` binary: command-line glue over the chunker, scorer and servers.

mod chunks_cmd;

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
    /// List the function-level chunks of files or directories.
    Chunks(chunks_cmd::ChunksArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chunks(args) => chunks_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
