//! `ctxzip compress`: a workspace, a query and a budget in; the context a model needs out.
//!
//! Exit codes: 0 success; 1 a runtime failure (model load, IO); 2 bad input (empty or too
//! long query, bad budget, missing path, empty workspace, a budget smaller than any chunk, a
//! `--focus` that is not a compressed file or names line 0 or a line past its end).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ctxzip_chunker::confine::{self, Kind};
use ctxzip_chunker::index;
use ctxzip_chunker::workspace::FileChunks;
use ctxzip_scoring::backend::{self, BackendSettings};
use ctxzip_scoring::compress::{
    self, CompressError, CompressRequest, Document, Focus, Format, NoModel, Progress, ProgressSink,
    Ranker, Stage,
};
use ctxzip_scoring::remote::RemoteFlags;
use ctxzip_scoring::{CancelFlag, ScorerConfig, SharedModel};
use serde_json::json;

use crate::chunks_cmd::{WalkArgs, parse_langs};
use crate::stage_line::StageLine;

#[derive(Args)]
pub struct CompressArgs {
    /// Files or directories to compress (default: the current directory).
    pub paths: Vec<PathBuf>,
    /// What the context is for; `-` reads it from standard input.
    #[arg(long, short = 'q', conflicts_with = "query_file")]
    pub query: Option<String>,
    /// Read the query from a file.
    #[arg(long)]
    pub query_file: Option<PathBuf>,
    /// What a compress request sets (budget, rate, format, ranker, ...): the core's
    /// `CompressRequest`, one flag per field.
    #[command(flatten)]
    pub request: CompressRequest,
    /// A file (optionally FILE:LINE) the user is working in: its chunk at LINE is always kept
    /// and its other chunks are favoured.
    #[arg(long)]
    pub focus: Option<String>,
    /// Only files of these languages.
    #[arg(long = "lang", value_delimiter = ',')]
    pub langs: Vec<String>,
    /// Print no progress: the stage line shown on stderr while it is a terminal.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub walk: WalkArgs,
}

/// How a command finds and runs the model.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model name from `ctxzip model list` or a path to a GGUF file.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Never download: fail if the model is not installed.
    #[arg(long)]
    pub offline: bool,
    /// CPU threads for the model (default: cores - 1).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Layers to offload to the GPU (GPU builds only; default: `gpu_layers` in config.toml,
    /// else 0). `ctxzip model list` shows the devices.
    #[arg(long)]
    pub gpu_layers: Option<u32>,
    /// Show llama.cpp's own log.
    #[arg(long)]
    pub verbose: bool,
    /// Score on a server instead of in process: the OpenAI-compatible API base of vLLM or
    /// llama-cpp-python serving the same model as --model (which still tokenizes), e.g.
    /// http://gpu-box:8000/v1. The API key comes from CTXZIP_SCORER_API_KEY. Default:
    /// scorer_url in config.toml, else local scoring.
    #[arg(long, value_name = "URL")]
    pub scorer_url: Option<String>,
    /// The served model's name, as the server's /v1/models lists it.
    #[arg(long, value_name = "NAME")]
    pub scorer_model: Option<String>,
    /// Requests to the scoring server in flight at once (default 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub scorer_max_in_flight: Option<u64>,
    /// Seconds one request to the scoring server may take (default 60).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub scorer_timeout_s: Option<u64>,
}

impl ModelArgs {
    /// The settings these flags give, for [`backend::start`].
    pub fn backend_settings(&self) -> BackendSettings {
        BackendSettings {
            model: self.model.clone(),
            offline: self.offline,
            threads: self.threads,
            gpu_layers: self.gpu_layers,
            verbose: self.verbose,
            remote: RemoteFlags {
                url: self.scorer_url.clone(),
                model: self.scorer_model.clone(),
                max_in_flight: self
                    .scorer_max_in_flight
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                timeout_s: self.scorer_timeout_s,
            },
        }
    }

    /// The model these flags select (remote when a scorer URL is set), behind the interface
    /// the pipeline scores through.
    pub fn start_model(&self) -> Result<SharedModel> {
        self.start_model_with(|_| {})
    }

    /// [`ModelArgs::start_model`] with a last word on the config (its disk cache and window
    /// hold for a remote scorer too).
    pub fn start_model_with(&self, adjust: impl FnOnce(&mut ScorerConfig)) -> Result<SharedModel> {
        let model = backend::start_with(&self.backend_settings(), adjust)
            .context("cannot start the model")?;
        let placed = model.description();
        // Layers asked for and none placed: no GPU is seen (a remote scorer asks for none).
        if placed.gpu_layers_asked > 0 && placed.gpu_layers == 0 {
            eprintln!(
                "ctxzip: {} GPU layers asked for, but this build ({}) sees no GPU: the model runs on the CPU ({})",
                placed.gpu_layers_asked,
                ctxzip_scoring::build_info().backend,
                no_gpu_fix()
            );
        }
        Ok(model)
    }
}

/// What to do when GPU layers are asked for and no GPU is seen.
fn no_gpu_fix() -> &'static str {
    if ctxzip_scoring::build_info().backend == "cpu" {
        "build with `--features cuda`, `vulkan` or `metal` to offload"
    } else {
        "check the GPU driver; `ctxzip model list` shows the devices"
    }
}

/// A failure of bad input: reported with exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn bad(message: impl Into<String>) -> anyhow::Error {
    BadInput(message.into()).into()
}

pub fn run(args: CompressArgs) -> Result<ExitCode> {
    let mut request = args.request.clone();
    request.query = read_query(&args)?;
    // clap refuses --budget with --rate; the budget's default gives way to a rate.
    if request.rate.is_some() {
        request.budget = None;
    }
    // Checked before the walk and the model load, which take seconds.
    request.resolve(None).map_err(|e| bad(cli_message(&e)))?;
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let options = args.walk.options(parse_langs(&args.langs)?)?;
    let line = StageLine::for_stderr(args.quiet);
    line.show(&Progress::start(Stage::Walk));
    let mut files: Vec<FileChunks> = Vec::new();
    let mut warnings = Vec::new();
    let store = crate::chunks_cmd::chunk_store(&options);
    for path in &paths {
        let ws =
            index::read_once_with(path, &options, store.clone()).map_err(|e| bad(e.to_string()))?;
        warnings.extend(ws.warnings);
        files.extend(ws.files);
    }
    // The cache file is closed before the model opens it for scores.
    drop(store);
    line.clear();
    let warnings: Vec<_> = warnings.iter().collect();
    crate::chunks_cmd::write_warnings(&mut std::io::stderr().lock(), &warnings)
        .context("cannot write to stderr")?;
    let focus = args
        .focus
        .as_deref()
        .map(|spec| parse_focus(spec, &paths, &files))
        .transpose()?;
    let compress_options = request.resolve(focus).map_err(|e| bad(cli_message(&e)))?;
    let docs: Vec<Document> = files.iter().map(Document::from).collect();
    if docs.iter().all(|d| d.chunks.is_empty()) {
        return Err(bad(format!(
            "{}: nothing to compress (no readable source files; see `ctxzip chunks` for what was skipped and why)",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    line.show(&Progress {
        done: files.len(),
        total: files.len(),
        ..Progress::start(Stage::Walk)
    });
    // Keyword ranking with a budget in another tokenizer reads no model: none is started.
    let model: SharedModel = match NoModel::for_options(&compress_options) {
        Some(none) => Arc::new(none),
        None => {
            line.show(&Progress::start(Stage::Load));
            args.model.start_model().map_err(|e| {
                if compress_options.ranker == Ranker::Bm25 {
                    // Counting the budget is all it needs the model for.
                    anyhow!(
                        "{e:#} (--ranker bm25 runs with no model when the budget counts in another tokenizer: add --tokenizer o200k or cl100k)"
                    )
                } else {
                    e
                }
            })?
        }
    };
    let show = |event: &Progress| line.show(event);
    let result = compress::compress_with_progress(
        &*model,
        &docs,
        &request.query,
        &compress_options,
        &CancelFlag::new(),
        // Nobody watching: the plain call, the same work as without a terminal.
        line.is_on().then_some(&show as ProgressSink),
    );
    line.clear();
    let result = result.map_err(|e| {
        // The user can fix these: bad input, exit 2.
        if e.is_bad_input() {
            bad(cli_message(&e))
        } else {
            anyhow::Error::new(e)
        }
    })?;
    let mut out = io::stdout().lock();
    if compress_options.format == Format::Json {
        let value = json!({
            "context": result.context,
            "chunks": result.chunks,
            "stats": result.stats,
        });
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    } else {
        out.write_all(result.context.as_bytes())?;
        let s = &result.stats;
        eprintln!(
            "ctxzip: {} -> {} tokens ({:.1}x) from {} chunks in {} files; {} model tokens, {:.0} ms",
            s.original_tokens,
            s.compressed_tokens,
            s.ratio,
            s.chunks,
            s.files,
            s.model_tokens,
            s.elapsed_ms
        );
        if s.redacted > 0 {
            eprintln!(
                "ctxzip: {} secret(s) redacted in the files read (see the warnings above; --no-redact shows them)",
                s.redacted
            );
        }
        if s.deadline_skipped > 0 {
            let limit = compress_options
                .model_limit_name("--deadline-ms", |max| format!("--max-model-tokens {max}"));
            eprintln!(
                "ctxzip: {limit} left {} candidates and functions to keyword ranking; the same command again continues from the cached scores (a larger --max-model-tokens reads more now)",
                s.deadline_skipped
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_query(args: &CompressArgs) -> Result<String> {
    let query = match (&args.query, &args.query_file) {
        (Some(q), _) if q == "-" => {
            let mut q = String::new();
            io::stdin()
                .read_to_string(&mut q)
                .context("cannot read the query from standard input")?;
            q
        }
        (Some(q), _) => q.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read query file {}: {e}", path.display())))?,
        (None, None) => {
            return Err(bad(
                "give a query: --query TEXT, --query-file FILE or --query - (stdin)",
            ));
        }
    };
    if query.trim().is_empty() {
        bail!(BadInput(cli_message(&CompressError::EmptyQuery)));
    }
    Ok(query)
}

/// A request's error with its fix in the command line's terms (its flags).
fn cli_message(e: &CompressError) -> String {
    match e {
        CompressError::EmptyQuery => {
            "empty query: say what the context is for, e.g. --query \"where are retries handled?\""
                .into()
        }
        CompressError::BadBudget { budget } => {
            format!("budget must be a positive number of tokens (got {budget}); e.g. --budget 2000")
        }
        CompressError::BadRate { rate } => {
            format!("rate must be in (0, 1] (got {rate}); e.g. --rate 0.2 keeps a fifth")
        }
        CompressError::BudgetAndRate => "give --budget or --rate, not both".into(),
        CompressError::BudgetTooSmall { budget, smallest } => format!(
            "budget of {budget} tokens is smaller than any chunk (the smallest needs {smallest} with its file header); raise --budget to at least {smallest}"
        ),
        CompressError::TokenizerFile(e) => format!("--tokenizer: {e}"),
        CompressError::EmptyWorkspace
        | CompressError::IndexNotReady { .. }
        | CompressError::PathOutsideRoot { .. }
        | CompressError::Scoring(_) => e.to_string(),
    }
}

/// `FILE[:LINE]` by the one focus rule (`confine::split_focus_line`: lines count from 1),
/// FILE as the shell sees it or relative to a given directory, and it must be one of the
/// files read; a line past the file's end is refused too. Paths outside every given path get
/// one message, whatever is there.
fn parse_focus(spec: &str, roots: &[PathBuf], files: &[FileChunks]) -> Result<Focus> {
    let (file, line) = confine::split_focus_line(spec).map_err(|e| bad(format!("--focus {e}")))?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut inside_but_not_read = None;
    for root in roots {
        let Ok(canonical) = std::fs::canonicalize(root) else {
            continue;
        };
        // A file given as a path: its directory is the root its focus must lie under.
        let (dir, only) = if canonical.is_file() {
            let name = canonical
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            match canonical.parent() {
                Some(parent) => (parent.to_path_buf(), name),
                None => continue,
            }
        } else {
            (canonical, None)
        };
        let as_given = cwd.join(file).to_string_lossy().into_owned();
        for raw in [as_given.as_str(), file] {
            let Ok(found) = confine::resolve(&dir, raw) else {
                continue;
            };
            if found.kind == Kind::Missing || only.as_ref().is_some_and(|n| *n != found.rel) {
                continue;
            }
            match files
                .iter()
                .find(|f| f.path == found.rel && f.abs_path.starts_with(&dir))
                .or_else(|| files.iter().find(|f| f.path == found.rel))
            {
                Some(read) => {
                    if let Some(line) = line {
                        confine::check_focus_line(spec, line, &read.text)
                            .map_err(|e| bad(format!("--focus {e}")))?;
                    }
                    return Ok(Focus {
                        path: found.rel,
                        line,
                    });
                }
                None => inside_but_not_read = Some(found),
            }
        }
    }
    let given = roots
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(bad(match inside_but_not_read {
        Some(found) if found.kind == Kind::Dir => {
            format!("--focus {spec:?} is a directory; give a file, e.g. --focus src/lib.rs:42")
        }
        Some(_) => format!(
            "--focus {spec:?} is not among the files read (skipped or not source code; see `ctxzip chunks {given}`)"
        ),
        None => format!(
            "--focus {spec:?} is not a file under {given} (give a file of the compressed paths, e.g. --focus src/lib.rs:42)"
        ),
    }))
}
