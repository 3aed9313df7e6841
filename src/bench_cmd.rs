//! `ctxzip bench ...`: benchmarks that live in the repo and print what BENCHMARKS.md records.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use ctxzip_chunker::index;
use ctxzip_chunker::workspace::WalkOptions;

// Parsed once per process from the command line: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Chunk a corpus and report MB/s, files/s and peak RSS.
    Chunker(ChunkerArgs),
    /// Recall of ctxzip vs BM25 (and LongCodeZip as published) on real packages.
    Quality(crate::bench_quality::QualityArgs),
    /// Scoring modes (sequential, packed, KV-state and prefix reuse) for the models.
    Scoring(crate::bench_scoring::ScoringArgs),
    /// The remote scorer against the local engine on the same GGUF, at several bounds on
    /// requests in flight.
    Remote(crate::bench_remote::RemoteArgs),
}

#[derive(Args)]
pub struct ChunkerArgs {
    /// Directories to chunk (e.g. fetched by scripts/bench-chunker).
    pub paths: Vec<PathBuf>,
    /// Timed runs after one warm-up run; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_file_bytes: u64,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Chunker(args) => chunker(args),
        BenchCommand::Quality(args) => crate::bench_quality::run(args),
        BenchCommand::Scoring(args) => crate::bench_scoring::run(args),
        BenchCommand::Remote(args) => crate::bench_remote::run(args),
    }
}

fn chunker(args: ChunkerArgs) -> Result<()> {
    if args.paths.is_empty() {
        bail!("give the corpus directories to chunk (scripts/bench-chunker fetches one)");
    }
    let options = WalkOptions {
        max_file_bytes: args.max_file_bytes,
        hidden: true,
        ..WalkOptions::default()
    };
    type ByLang = BTreeMap<&'static str, (usize, u64)>;
    let mut best: Option<(f64, usize, usize, u64, ByLang)> = None;
    for run in 0..=args.runs {
        let start = Instant::now();
        let (mut files, mut chunks, mut bytes) = (0usize, 0usize, 0u64);
        let mut by_lang: BTreeMap<&'static str, (usize, u64)> = BTreeMap::new();
        for path in &args.paths {
            let ws = index::read_once(path, &options)?;
            for file in &ws.files {
                files += 1;
                chunks += file.chunks.len();
                bytes += file.text.len() as u64;
                let entry = by_lang.entry(file.lang.name()).or_default();
                entry.0 += 1;
                entry.1 += file.text.len() as u64;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "run {run}: {files} files, {:.1} MB in {secs:.2} s",
            bytes as f64 / 1e6
        );
        if run > 0 && best.as_ref().is_none_or(|b| secs < b.0) {
            best = Some((secs, files, chunks, bytes, by_lang));
        }
    }
    let Some((secs, files, chunks, bytes, by_lang)) = best else {
        bail!("--runs must be at least 1");
    };
    let threads = rayon::current_num_threads();
    println!("| corpus | files | chunks | MB | wall s | MB/s | files/s | peak RSS MiB | threads |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {files} | {chunks} | {:.1} | {secs:.2} | {:.1} | {:.0} | {} | {threads} |",
        args.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        files as f64 / secs,
        peak_rss_mib().map_or("?".into(), |m| m.to_string()),
    );
    println!();
    println!("| language | files | MB |");
    println!("|---|---|---|");
    for (lang, (n, b)) in by_lang {
        println!("| {lang} | {n} | {:.1} |", b as f64 / 1e6);
    }
    Ok(())
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
