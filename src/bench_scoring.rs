//! `ctxzip bench scoring`: tokens/s and wall time per query of the scorer's reuse modes
//! (sequential, packed, KV-state reuse, shared prefix) for each model, measured in one run.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ctxzip_scoring::{bench, models};

#[derive(Args)]
pub struct ScoringArgs {
    /// Models to measure (names or GGUF paths); all catalog models when omitted.
    #[arg(long, num_args = 1..)]
    pub models: Vec<String>,
    /// Chunks of real code (40-line pieces of the .rs files under --source) per query.
    #[arg(long, default_value_t = 16)]
    pub chunks: usize,
    /// Directory whose .rs files become the chunks.
    #[arg(long, default_value = "scoring/src")]
    pub source: PathBuf,
    /// CPU threads for the model (default: cores - 1).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Never download a missing model.
    #[arg(long)]
    pub offline: bool,
    /// Write the table into the `## Scoring` section of this file (e.g. BENCHMARKS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

pub fn run(args: ScoringArgs) -> Result<()> {
    let chunks = bench::code_chunks(&args.source, args.chunks, 40)
        .with_context(|| format!("cannot read code under {}", args.source.display()))?;
    if chunks.is_empty() {
        bail!(
            "no .rs code under {} (pass --source DIR with Rust files)",
            args.source.display()
        );
    }
    let specs: Vec<String> = if args.models.is_empty() {
        models::CATALOG.iter().map(|m| m.name.to_string()).collect()
    } else {
        args.models.clone()
    };
    let threads = args
        .threads
        .unwrap_or_else(ctxzip_scoring::engine::default_threads)
        .max(1);
    let mut reports = Vec::new();
    for spec in &specs {
        let model = models::resolve(Some(spec), args.offline)?;
        eprintln!(
            "ctxzip: benchmarking {} on {} chunks ...",
            model.name,
            chunks.len()
        );
        reports.push(bench::run_model(&model, &chunks, threads)?);
    }
    let table = bench::markdown(&reports);
    print!("{table}");
    if let Some(path) = &args.write {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let body = format!(
            "Measured by `{command}` (scores one query against every chunk per mode; \
             speedup = wall time of the baseline / wall time of the mode).\n\n{table}"
        );
        bench::write_section(path, &body)?;
        eprintln!("ctxzip: wrote the table into {}", path.display());
    }
    Ok(())
}
