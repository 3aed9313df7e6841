//! `ctxzip chunks`: the chunker's view of a workspace, as text or JSON.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ctxzip_chunker::index;
use ctxzip_chunker::stored::ChunkStore;
use ctxzip_chunker::workspace::{self, WalkOptions};
use ctxzip_chunker::{LANGS, Lang};
use serde::Serialize;

#[derive(Args)]
pub struct ChunksArgs {
    /// Files or directories to chunk (default: the current directory).
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Only files of these languages (repeat or comma-separate: rust,python).
    #[arg(long = "lang", value_delimiter = ',')]
    pub langs: Vec<String>,
    #[command(flatten)]
    pub walk: WalkArgs,
}

/// Workspace walk flags shared by every command that reads a workspace.
#[derive(Args, Clone)]
pub struct WalkArgs {
    /// Skip files larger than this many bytes (suffixes K and M allowed).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub max_file_size: u64,
    /// Include hidden files and directories.
    #[arg(long)]
    pub hidden: bool,
    /// Extra gitignore-style globs to leave out (repeatable).
    #[arg(long = "ignore")]
    pub ignore_globs: Vec<String>,
    /// Show secrets found in file text (API keys, private keys, passwords) instead of
    /// replacing them with `[REDACTED:<rule>]` (default: `redact` in config.toml, else on).
    #[arg(long)]
    pub no_redact: bool,
}

impl WalkArgs {
    pub fn options(&self, langs: Option<Vec<Lang>>) -> Result<WalkOptions> {
        Ok(WalkOptions {
            max_file_bytes: self.max_file_size,
            hidden: self.hidden,
            ignore_globs: self.ignore_globs.clone(),
            langs,
            redact: ctxzip_scoring::models::redact(self.no_redact.then_some(false))?,
        })
    }
}

/// Where a command that reads once keeps files' chunks between runs: the disk cache of the
/// scores (`CTXZIP_CACHE`; `off` turns both off), so that a repeat run parses no file whose
/// text it chunked before. `None` with redaction off: then nothing is looked up or stored,
/// so no unredacted name reaches the disk.
pub fn chunk_store(options: &WalkOptions) -> Option<Arc<dyn ChunkStore>> {
    if !options.redact {
        return None;
    }
    ctxzip_scoring::cache::ChunkCache::configured_store()
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

fn parse_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let (digits, scale) = match raw.char_indices().last() {
        Some((i, 'k' | 'K')) => (&raw[..i], 1024),
        Some((i, 'm' | 'M')) => (&raw[..i], 1024 * 1024),
        _ => (raw, 1),
    };
    digits
        .parse::<u64>()
        .map(|n| n * scale)
        .map_err(|_| format!("{raw:?} is not a size; use bytes or a K/M suffix, e.g. 512K or 2M"))
}

pub fn parse_langs(names: &[String]) -> Result<Option<Vec<Lang>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut langs = Vec::new();
    for name in names {
        match Lang::from_name(name.trim()) {
            Some(lang) => langs.push(lang),
            None => {
                let known: Vec<_> = LANGS.iter().map(|s| s.name).collect();
                bail!(crate::compress_cmd::BadInput(format!(
                    "unknown language {name:?}; known: {}",
                    known.join(", ")
                )));
            }
        }
    }
    Ok(Some(langs))
}

#[derive(Serialize)]
struct JsonChunk<'a> {
    path: &'a str,
    language: &'static str,
    start_line: u32,
    end_line: u32,
    kind: &'static str,
    name: Option<&'a str>,
    qualified_name: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    chunks: Vec<JsonChunk<'a>>,
    skipped: Vec<&'a workspace::Skipped>,
    warnings: Vec<&'a workspace::Skipped>,
    /// Secrets replaced with `[REDACTED:<rule>]` in the files read.
    redacted: usize,
}

pub fn run(args: ChunksArgs) -> Result<ExitCode> {
    let options = args.walk.options(parse_langs(&args.langs)?)?;
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let store = chunk_store(&options);
    let mut workspaces = Vec::new();
    for path in &paths {
        let ws = index::read_once_with(path, &options, store.clone())
            .with_context(|| format!("cannot chunk {}", path.display()))?;
        workspaces.push(ws);
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Json => {
            let output = JsonOutput {
                chunks: workspaces
                    .iter()
                    .flat_map(|ws| &ws.files)
                    .flat_map(|file| {
                        file.chunks.iter().map(move |chunk| JsonChunk {
                            path: &file.path,
                            language: file.lang.name(),
                            start_line: chunk.start_line,
                            end_line: chunk.end_line,
                            kind: chunk.kind.as_str(),
                            name: chunk.name.as_deref(),
                            qualified_name: chunk.qualified_name.as_deref(),
                        })
                    })
                    .collect(),
                skipped: workspaces.iter().flat_map(|ws| &ws.skipped).collect(),
                warnings: workspaces.iter().flat_map(|ws| &ws.warnings).collect(),
                redacted: workspaces
                    .iter()
                    .flat_map(|ws| &ws.files)
                    .map(|f| f.redactions.len())
                    .sum(),
            };
            serde_json::to_writer_pretty(&mut out, &output)?;
            writeln!(out)?;
        }
        Format::Text => {
            let mut by_lang: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
            let (mut n_files, mut n_chunks) = (0, 0);
            for ws in &workspaces {
                for file in &ws.files {
                    n_files += 1;
                    n_chunks += file.chunks.len();
                    let entry = by_lang.entry(file.lang.name()).or_default();
                    entry.0 += 1;
                    entry.1 += file.chunks.len();
                    for chunk in &file.chunks {
                        writeln!(
                            out,
                            "{}:{}-{} {} {}",
                            file.path,
                            chunk.start_line,
                            chunk.end_line,
                            chunk.kind,
                            chunk.display_name()
                        )?;
                    }
                }
            }
            out.flush()?;
            let mut err = io::stderr().lock();
            let langs: Vec<String> = by_lang
                .iter()
                .map(|(lang, (files, chunks))| format!("{lang} {files} files/{chunks} chunks"))
                .collect();
            writeln!(
                err,
                "{n_files} files, {n_chunks} chunks ({})",
                if langs.is_empty() {
                    "no languages".to_string()
                } else {
                    langs.join(", ")
                }
            )?;
            let skipped: Vec<_> = workspaces.iter().flat_map(|ws| &ws.skipped).collect();
            if !skipped.is_empty() {
                writeln!(err, "{} skipped:", skipped.len())?;
                for skip in skipped {
                    writeln!(err, "  {}: {}", skip.path, skip.reason)?;
                }
            }
            let warnings: Vec<_> = workspaces.iter().flat_map(|ws| &ws.warnings).collect();
            write_warnings(&mut err, &warnings)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Files read with a caveat shown on stderr in full.
const WARNINGS_SHOWN: usize = 5;

/// The first few files read with a caveat (secrets redacted, invalid UTF-8), one line each,
/// then a count of the rest: a tree full of redacted fixtures must not bury the answer's
/// summary under a screen of warnings.
pub fn write_warnings(err: &mut impl Write, warnings: &[&workspace::Skipped]) -> io::Result<()> {
    for warning in warnings.iter().take(WARNINGS_SHOWN) {
        writeln!(err, "warning: {}: {}", warning.path, warning.reason)?;
    }
    if warnings.len() > WARNINGS_SHOWN {
        writeln!(
            err,
            "warning: {} more files read with a caveat (`ctxzip chunks PATH --format json` lists them all under \"warnings\")",
            warnings.len() - WARNINGS_SHOWN
        )?;
    }
    Ok(())
}
