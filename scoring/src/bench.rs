//! The scoring benchmark: wall time and tokens/s per query of each reuse mode, measured in one
//! run on real code, as a markdown table (`ctxzip bench scoring` prints it).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::cache::text_hash;
use crate::engine::{CancelFlag, ChunkInput, ScoreOptions, Scorer, ScorerConfig};
use crate::error::{Error, Result};
use crate::models::ResolvedModel;

/// Queries the benchmark asks about the chunks (any text works; these name real code).
pub const QUERIES: &[&str] = &[
    "where is the sha256 of a downloaded model checked",
    "how are old rows evicted when the cache is over its size cap",
    "parse the tensor table of the GGUF header",
];

/// One measured mode.
#[derive(Debug, Clone)]
pub struct ModeResult {
    pub mode: &'static str,
    pub wall_ms_per_query: f64,
    pub decoded_tokens_per_query: usize,
    /// Decoded tokens per second of wall time.
    pub tokens_per_s: f64,
    /// Wall time of the baseline over this mode's (higher is faster).
    pub speedup: f64,
    pub baseline: &'static str,
}

/// All modes for one model.
#[derive(Debug, Clone)]
pub struct ModelReport {
    pub model: String,
    pub build_info: String,
    pub n_chunks: usize,
    pub chunk_tokens: usize,
    pub modes: Vec<ModeResult>,
    /// Peak resident memory of the process after this model's runs (VmHWM).
    pub peak_rss_mib: Option<f64>,
    pub load_ms: f64,
}

/// Splits the `.rs` files under `dir` (sorted, recursively) into pieces of `lines` lines and
/// returns the first `n` non-blank ones.
pub fn code_chunks(dir: &Path, n: usize, lines: usize) -> Result<Vec<ChunkInput>> {
    let mut files = Vec::new();
    collect_rs(dir, &mut files)?;
    files.sort();
    let mut chunks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
        let all: Vec<&str> = text.lines().collect();
        for piece in all.chunks(lines.max(1)) {
            let text = piece.join("\n");
            if text.trim().is_empty() {
                continue;
            }
            chunks.push(ChunkInput {
                hash: text_hash(&text),
                text,
            });
            if chunks.len() == n {
                return Ok(chunks);
            }
        }
    }
    Ok(chunks)
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs every mode for `model` over `chunks`.
pub fn run_model(
    model: &ResolvedModel,
    chunks: &[ChunkInput],
    n_threads: usize,
) -> Result<ModelReport> {
    let mut config = ScorerConfig::new(model);
    config.n_threads = n_threads;
    // The benchmark measures the model, not the disk cache.
    config.disk_cache_path = None;
    let started = Instant::now();
    let scorer = Scorer::new(config)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let cancel = CancelFlag::new();
    let options = |packed, kv, prefix| ScoreOptions {
        max_packed_seqs: packed,
        reuse_kv_states: kv,
        reuse_prefix: prefix,
        use_cache: false,
        deadline: None,
        max_tokens: None,
    };

    // Warm up allocations and caches of llama.cpp on a query the measured ones do not use.
    scorer.score_chunks_with(
        "warm up",
        &chunks[..chunks.len().min(2)],
        options(1, false, false),
        &cancel,
    )?;

    let time_scores = |query: &str, opts: ScoreOptions| -> Result<(f64, usize)> {
        let t = Instant::now();
        let out = scorer.score_chunks_with(query, chunks, opts, &cancel)?;
        Ok((t.elapsed().as_secs_f64() * 1e3, out.model_tokens))
    };
    let mut modes = Vec::new();
    let mut push = |mode, (ms, tokens): (f64, usize), baseline_ms: f64, baseline| {
        modes.push(ModeResult {
            mode,
            wall_ms_per_query: ms,
            decoded_tokens_per_query: tokens,
            tokens_per_s: tokens as f64 / (ms / 1e3),
            speedup: baseline_ms / ms,
            baseline,
        });
    };
    let sequential = time_scores(QUERIES[0], options(1, false, false))?;
    push("score: sequential", sequential, sequential.0, "sequential");
    let packed = time_scores(QUERIES[0], options(8, false, false))?;
    push(
        "score: packed (8 seqs/decode)",
        packed,
        sequential.0,
        "sequential",
    );
    let cold = time_scores(QUERIES[1], options(1, true, false))?;
    push(
        "score: KV-state reuse, cold (saves states)",
        cold,
        sequential.0,
        "sequential",
    );
    let warm = time_scores(QUERIES[2], options(1, true, false))?;
    push(
        "score: KV-state reuse, warm (new query)",
        warm,
        sequential.0,
        "sequential",
    );

    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let prefix = format!("{}\n\n", QUERIES[0]);
    let time_nlls = |opts: ScoreOptions| -> Result<(f64, usize)> {
        let before = scorer.stats().tokens_decoded;
        let t = Instant::now();
        scorer.token_nlls_batch_with(Some(&prefix), &texts, opts, &cancel)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        Ok((ms, (scorer.stats().tokens_decoded - before) as usize))
    };
    let per_text = time_nlls(options(1, false, false))?;
    push(
        "token NLLs given the query: prefix decoded per text",
        per_text,
        per_text.0,
        "prefix per text",
    );
    let shared = time_nlls(options(1, false, true))?;
    push(
        "token NLLs given the query: shared prefix (seq_cp)",
        shared,
        per_text.0,
        "prefix per text",
    );

    // Flash attention is off by default for exactness (see the engine docs): what does it cost?
    let mut fa_config = ScorerConfig::new(model);
    fa_config.n_threads = n_threads;
    fa_config.disk_cache_path = None;
    fa_config.flash_attention = true;
    let fa_scorer = Scorer::new(fa_config)?;
    fa_scorer.score_chunks_with(
        "warm up",
        &chunks[..chunks.len().min(2)],
        options(1, false, false),
        &cancel,
    )?;
    let t = Instant::now();
    let out = fa_scorer.score_chunks_with(QUERIES[0], chunks, options(1, false, false), &cancel)?;
    let fa = (t.elapsed().as_secs_f64() * 1e3, out.model_tokens);
    drop(fa_scorer);
    push(
        "score: sequential, flash attention on",
        fa,
        sequential.0,
        "sequential",
    );

    Ok(ModelReport {
        model: model.name.clone(),
        build_info: scorer.build_info(),
        n_chunks: chunks.len(),
        chunk_tokens: scorer.count_tokens_batch(&texts).iter().sum(),
        modes,
        peak_rss_mib: peak_rss_mib(),
        load_ms,
    })
}

/// VmHWM of this process in MiB (Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The reports as markdown: one table per model.
pub fn markdown(reports: &[ModelReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(
            out,
            "### {} — {} chunks, {} chunk tokens; {}; load {:.0} ms; peak RSS {}\n",
            r.model,
            r.n_chunks,
            r.chunk_tokens,
            r.build_info,
            r.load_ms,
            r.peak_rss_mib
                .map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB"))
        );
        let _ = writeln!(
            out,
            "| mode | wall ms/query | decoded tokens/query | decoded tok/s | speedup | vs |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
        for m in &r.modes {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {:.0} | {:.2}x | {} |",
                m.mode,
                m.wall_ms_per_query,
                m.decoded_tokens_per_query,
                m.tokens_per_s,
                m.speedup,
                m.baseline
            );
        }
        out.push('\n');
    }
    out
}

/// Replaces (or appends) the `## Scoring` section of the markdown file at `path` with `body`,
/// keeping every other section.
pub fn write_section(path: &Path, body: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let new = replace_section(&old, "## Scoring", body);
    std::fs::write(path, new).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

fn replace_section(doc: &str, heading: &str, body: &str) -> String {
    let section = format!("{heading}\n\n{}\n", body.trim_end());
    let start = doc
        .lines()
        .scan(0usize, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| line.trim_end() == heading)
        .map(|(at, _)| at);
    match start {
        None => format!("{}\n\n{section}", doc.trim_end()),
        Some(start) => {
            let rest = &doc[start + heading.len()..];
            let end = rest
                .match_indices("\n## ")
                .next()
                .map_or(doc.len(), |(i, _)| start + heading.len() + i + 1);
            format!(
                "{}{section}{}",
                &doc[..start],
                if end < doc.len() {
                    format!("\n{}", &doc[end..])
                } else {
                    String::new()
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_section() {
        let doc = "# Benchmarks\n\n## Chunking\n\nfast\n\n## Scoring\n\nold\n\n## Other\n\nkeep\n";
        let new = replace_section(doc, "## Scoring", "new table");
        assert_eq!(
            new,
            "# Benchmarks\n\n## Chunking\n\nfast\n\n## Scoring\n\nnew table\n\n## Other\n\nkeep\n"
        );
        let appended = replace_section("# Benchmarks\n", "## Scoring", "t");
        assert_eq!(appended, "# Benchmarks\n\n## Scoring\n\nt\n");
    }
}
