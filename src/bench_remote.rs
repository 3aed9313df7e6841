//! `ctxzip bench remote`: the remote scorer against the local engine on the same GGUF and the
//! same queries and chunks (those of `ctxzip bench scoring`), at several bounds on requests in
//! flight: wall time and model tokens per query, requests per query, and what the client
//! itself costs per request, measured against a server that answers at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use ctxzip_scoring::remote::{RemoteModel, RemoteModelConfig, RemoteSettings};
use ctxzip_scoring::{
    CancelFlag, ChunkInput, ScoreOptions, Scorer, ScorerConfig, ScoringModel, bench, models,
};

#[derive(Args)]
pub struct RemoteArgs {
    /// The scoring server (its API base), serving the same model as --model.
    #[arg(long, value_name = "URL")]
    pub scorer_url: String,
    /// The served model's name.
    #[arg(long, value_name = "NAME")]
    pub scorer_model: String,
    /// A server that answers at once with well-formed log-probabilities (the tests' fault
    /// server without a fault): the client's own cost per request is measured against it.
    #[arg(long, value_name = "URL")]
    pub instant_url: Option<String>,
    /// The model (catalog name or GGUF path): the local engine, and the remote tokenizer.
    #[arg(long, short = 'm', default_value = "smollm2-135m")]
    pub model: String,
    /// Bounds on requests in flight to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub in_flight: Vec<usize>,
    /// Chunks of real code (40-line pieces of the .rs files under --source) per query.
    #[arg(long, default_value_t = 16)]
    pub chunks: usize,
    /// Directory whose .rs files become the chunks.
    #[arg(long, default_value = "scoring/src")]
    pub source: PathBuf,
    /// Seconds one request may take (a serial server with many requests queued needs more
    /// than the default 60).
    #[arg(long, default_value_t = 600)]
    pub scorer_timeout_s: u64,
    /// CPU threads for the local engine (default: cores - 1).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Never download a missing model.
    #[arg(long)]
    pub offline: bool,
}

/// One measured configuration: totals over the benchmark's queries.
struct Row {
    backend: String,
    in_flight: String,
    wall_ms_per_query: f64,
    model_tokens_per_query: f64,
    requests_per_query: f64,
}

pub fn run(args: RemoteArgs) -> Result<()> {
    let chunks = bench::code_chunks(&args.source, args.chunks, 40)
        .with_context(|| format!("cannot read code under {}", args.source.display()))?;
    if chunks.is_empty() {
        bail!(
            "no .rs code under {} (pass --source DIR with Rust files)",
            args.source.display()
        );
    }
    let resolved = models::resolve(Some(&args.model), args.offline)?;
    let mut rows = Vec::new();
    println!(
        "| backend | in flight | wall ms / query | model tokens / query | requests / query | client ms / request |\n|---|---:|---:|---:|---:|---:|"
    );

    // The local engine: its KV-state reuse is its own, like the server's prefix cache.
    let mut config = ScorerConfig::new(&resolved);
    config.disk_cache_path = None;
    if let Some(threads) = args.threads {
        config.n_threads = threads.max(1);
    }
    let local: Arc<dyn ScoringModel> = Arc::new(Scorer::new(config)?);
    rows.push(measure(
        &*local,
        &chunks,
        "local llama.cpp",
        "-".into(),
        None,
    )?);
    print_row(rows.last(), false);
    drop(local);

    let connect = |url: &str, model: &str, in_flight: usize| -> Result<RemoteModel> {
        let mut settings = RemoteSettings::new(url, model, None)?;
        settings.max_in_flight = in_flight.max(1);
        settings.request_timeout = std::time::Duration::from_secs(args.scorer_timeout_s);
        let config = RemoteModelConfig {
            disk_cache_path: None,
            ..RemoteModelConfig::new(settings, &resolved)
        };
        Ok(RemoteModel::new(config)?)
    };
    for &n in &args.in_flight {
        let remote = connect(&args.scorer_url, &args.scorer_model, n)?;
        rows.push(measure(
            &remote,
            &chunks,
            "remote",
            n.to_string(),
            Some(&remote),
        )?);
        print_row(rows.last(), false);
    }
    if let Some(url) = &args.instant_url {
        for &n in &args.in_flight {
            // The tests' fault server lists one model, `smollm2`.
            let remote = connect(url, "smollm2", n)?;
            let row = measure(
                &remote,
                &chunks,
                "instant server",
                n.to_string(),
                Some(&remote),
            )?;
            print_row(Some(&row), true);
        }
    }
    Ok(())
}

/// One table row, printed as soon as it is measured; `per_request`: the wall time per
/// request is the client's own cost (against a server that answers at once).
fn print_row(row: Option<&Row>, per_request: bool) {
    let Some(row) = row else { return };
    let client = if per_request {
        format!(
            "{:.2}",
            row.wall_ms_per_query / row.requests_per_query.max(1.0)
        )
    } else {
        String::new()
    };
    println!(
        "| {} | {} | {:.0} | {:.0} | {:.1} | {client} |",
        row.backend,
        row.in_flight,
        row.wall_ms_per_query,
        row.model_tokens_per_query,
        row.requests_per_query
    );
}

/// Scores every benchmark query against `chunks` once to warm up, then again measured.
fn measure(
    model: &dyn ScoringModel,
    chunks: &[ChunkInput],
    backend: &str,
    in_flight: String,
    remote: Option<&RemoteModel>,
) -> Result<Row> {
    let options = ScoreOptions {
        use_cache: false,
        ..model.default_options()
    };
    let cancel = CancelFlag::new();
    // Warm-up: connections opened, the local engine's first decode done.
    model.score_chunks_with(bench::QUERIES[0], &chunks[..1], options, &cancel)?;
    let requests_before = remote.map_or(0, |r| r.request_counts().0);
    let started = Instant::now();
    let mut model_tokens = 0usize;
    for query in bench::QUERIES {
        model_tokens += model
            .score_chunks_with(query, chunks, options, &cancel)?
            .model_tokens;
    }
    let n = bench::QUERIES.len() as f64;
    let requests = remote.map_or(0, |r| r.request_counts().0) - requests_before;
    Ok(Row {
        backend: backend.to_string(),
        in_flight,
        wall_ms_per_query: started.elapsed().as_secs_f64() * 1000.0 / n,
        model_tokens_per_query: model_tokens as f64 / n,
        requests_per_query: requests as f64 / n,
    })
}
