//! The MCP handler: the `compress_context` and `status` tools, the workspace root, the one
//! workspace index (`ctxzip_chunker::index`, the LSP's too) and the one scorer they share. Tool failures an agent can fix come back as results
//! with `isError: true`, never as protocol errors.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ctxzip_chunker::confine::{self, Kind};
use ctxzip_chunker::index::{self, FileSnapshot, Index, IndexError, RefreshReport};
use ctxzip_chunker::workspace::WalkOptions;
use ctxzip_scoring::cache::ChunkCache;
use ctxzip_scoring::compress::Progress as CoreProgress;
use ctxzip_scoring::compress::{
    self, Budget, CompressError, CompressOptions, CompressRequest, Compressed, Document, Focus,
    NoModel, ProgressSink, SelectedChunk, Stage, Stats,
};
use ctxzip_scoring::{CancelFlag, SharedModel, models};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::{NotificationContext, Peer, RequestContext};
use rmcp::{RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, mpsc, watch};

use crate::progress::Progress;

/// How long the server waits for the client to answer `roots/list`.
const ROOTS_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolved settings of one server.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Canonical workspace root given on the command line, if any.
    pub root: Option<PathBuf>,
    pub max_output_tokens: usize,
    pub default_budget_tokens: usize,
    /// Largest message read, in bytes.
    pub max_message_bytes: usize,
    pub walk: WalkOptions,
}

/// The model, as far as it has got.
#[derive(Clone)]
pub enum ModelState {
    Loading,
    Ready(SharedModel),
    Failed(String),
}

/// Where the workspace root came from.
#[derive(Clone, Debug)]
struct Root {
    path: PathBuf,
    source: &'static str,
}

#[derive(Default)]
struct IndexState {
    indexing: bool,
    last: Option<RefreshReport>,
    refreshed_at: Option<SystemTime>,
    error: Option<String>,
}

struct Shared {
    settings: Settings,
    root: OnceCell<Result<Root, String>>,
    /// The one workspace index, holding the root once it is known.
    index: Arc<Index>,
    /// One refresh at a time: a call waits for the one in flight, then finds little to do.
    refreshing: tokio::sync::Mutex<()>,
    index_state: Mutex<IndexState>,
    model: watch::Receiver<ModelState>,
}

/// The `ctxzip mcp` server. Cheap to clone: clones share the index and the scorer.
#[derive(Clone)]
pub struct CtxzipServer {
    shared: Arc<Shared>,
}

/// The `compress_context` arguments: the core's `CompressRequest` (query, rate, format,
/// no_fine, ranker, candidates, deadline_ms, ...) under its own snake_case names, and the
/// arguments an agent gives in MCP's terms. The request's `budget` is `budget_tokens` here
/// (the name carries the unit): the schema leaves `budget` out.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crate::schema::plain_optionals)]
#[schemars(transform = crate::schema::budget_as_budget_tokens)]
pub struct CompressParams {
    #[serde(flatten)]
    pub request: CompressRequest,
    /// Most tokens of context to return, counted in `tokenizer` (default: the server's
    /// --default-budget-tokens; larger values are clamped to its --max-output-tokens).
    #[serde(default)]
    pub budget_tokens: Option<i64>,
    /// Only these files or directories, relative to the workspace root (default: the whole
    /// workspace).
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// The file being worked on, "FILE" or "FILE:LINE": the chunk at LINE is always kept
    /// and the file's other chunks are favoured.
    #[serde(default)]
    pub focus_file: Option<String>,
}

/// The files one call compresses, taken from the index after its refresh.
struct View {
    root: PathBuf,
    files: Vec<Arc<FileSnapshot>>,
    focus: Option<Focus>,
    report: RefreshReport,
}

impl CtxzipServer {
    pub fn new(settings: Settings, model: watch::Receiver<ModelState>) -> CtxzipServer {
        let root = match &settings.root {
            Some(path) => OnceCell::new_with(Some(Ok(Root {
                path: path.clone(),
                source: "--root",
            }))),
            None => OnceCell::new(),
        };
        // Files' chunks kept by their text in the score cache's file: a restart parses only
        // what changed (nothing is stored while redaction is off).
        let index = Arc::new(Index::with_chunk_store(
            settings.walk.clone(),
            ChunkCache::configured_store(),
        ));
        CtxzipServer {
            shared: Arc::new(Shared {
                settings,
                root,
                index,
                refreshing: tokio::sync::Mutex::new(()),
                index_state: Mutex::new(IndexState::default()),
                model,
            }),
        }
    }

    /// Indexes the workspace in the background (at startup, or once the root is known).
    pub fn start_indexing(&self, peer: Option<Peer<RoleServer>>) {
        let server = self.clone();
        tokio::spawn(async move {
            if let Ok(root) = server.root(peer.as_ref()).await {
                let _ = server.refresh(&root.path).await;
            }
        });
    }

    /// The workspace root: from the command line, else the client's first root, else the
    /// working directory. Decided once.
    async fn root(&self, peer: Option<&Peer<RoleServer>>) -> Result<Root, String> {
        self.shared
            .root
            .get_or_init(|| resolve_root(peer.cloned()))
            .await
            .clone()
    }

    /// Brings the index up to date by walk and stamps: new and changed files are read and
    /// chunked, gone ones dropped (an agent's edits have no events to tell).
    async fn refresh(&self, root: &Path) -> Result<(RefreshReport, index::Root), String> {
        let _one = self.shared.refreshing.lock().await;
        self.set_index_state(|s| s.indexing = true);
        let index = Arc::clone(&self.shared.index);
        let dir = root.to_path_buf();
        let joined = tokio::task::spawn_blocking(move || {
            let root = index.add_root(&dir)?;
            index.refresh(&root).map(|report| (report, root))
        })
        .await;
        let result = match joined {
            Ok(refreshed) => refreshed.map_err(|e| format!("cannot index the workspace: {e}")),
            Err(e) => Err(format!("indexing failed: {e}")),
        };
        self.set_index_state(|s| {
            s.indexing = false;
            match &result {
                Ok((report, _)) => {
                    s.last = Some(report.clone());
                    s.refreshed_at = Some(SystemTime::now());
                    s.error = None;
                }
                Err(e) => s.error = Some(e.clone()),
            }
        });
        result
    }

    fn set_index_state(&self, update: impl FnOnce(&mut IndexState)) {
        let mut state = self
            .shared
            .index_state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        update(&mut state);
    }

    /// Refreshes the index and picks the files of this call.
    async fn view(
        &self,
        peer: &Peer<RoleServer>,
        paths: Option<&[String]>,
        focus_file: Option<&str>,
    ) -> Result<View, String> {
        let root = self.root(Some(peer)).await?;
        let (report, indexed) = self.refresh(&root.path).await?;
        let scopes = paths
            .unwrap_or_default()
            .iter()
            .map(|raw| inside(&indexed, raw))
            .collect::<Result<Vec<Inside>, String>>()?;
        let focus = focus_file
            .map(|spec| -> Result<(Inside, Option<u32>), String> {
                let (file, line) = confine::split_focus_line(spec)?;
                let found = inside(&indexed, file).map_err(|e| format!("focus_file {e}"))?;
                if found.kind == Kind::Dir {
                    return Err(format!(
                        "focus_file {spec:?} is a directory; give a file, e.g. src/lib.rs:42"
                    ));
                }
                Ok((found, line))
            })
            .transpose()?;
        let index = &self.shared.index;
        let all = index.snapshot(Some(std::slice::from_ref(&indexed.path)));
        let why_not = |rel: &str| index.skip_reason(&indexed.path, rel);
        for scope in &scopes {
            if !all.iter().any(|f| f.abs_path.starts_with(&scope.key)) {
                let why = why_not(&scope.rel)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_else(|| {
                        " (ignored by .gitignore/.ctxzipignore, or no source files)".into()
                    });
                return Err(format!(
                    "paths: {:?} holds no indexed file{why}; see the status tool for the workspace",
                    scope.rel
                ));
            }
        }
        let focus = match (focus, focus_file) {
            (Some((file, line)), Some(spec)) => {
                let Some(read) = all.iter().find(|f| f.abs_path == file.key) else {
                    let why = why_not(&file.rel)
                        .unwrap_or_else(|| "ignored, or not a source file".into());
                    return Err(format!(
                        "focus_file {:?} is not indexed ({why}); give a source file of the workspace",
                        file.rel
                    ));
                };
                if let Some(line) = line {
                    confine::check_focus_line(spec, line, &read.text)
                        .map_err(|e| format!("focus_file {e}"))?;
                }
                Some(Focus {
                    path: read.rel_path.clone(),
                    line,
                })
            }
            _ => None,
        };
        let files = if scopes.is_empty() {
            all
        } else {
            all.into_iter()
                .filter(|f| scopes.iter().any(|s| f.abs_path.starts_with(&s.key)))
                .collect()
        };
        Ok(View {
            root: root.path,
            files,
            focus,
            report,
        })
    }

    /// Waits for the model to finish loading.
    async fn scorer(&self) -> Result<SharedModel, String> {
        let mut model = self.shared.model.clone();
        let state = model
            .wait_for(|s| !matches!(s, ModelState::Loading))
            .await
            .map_err(|_| "the model loader stopped; restart the server".to_string())?
            .clone();
        match state {
            ModelState::Ready(scorer) => Ok(scorer),
            ModelState::Failed(e) => Err(format!(
                "the model failed to load: {e}. Fix the model setting of the server (`ctxzip mcp --model NAME`, see `ctxzip model list`) and restart it; meanwhile \"ranker\": \"bm25\" with \"tokenizer\": \"o200k\" needs no model"
            )),
            ModelState::Loading => Err("the model is still loading; retry shortly".into()),
        }
    }

    async fn compress(
        &self,
        params: CompressParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let settings = &self.shared.settings;
        let mut request = params.request.clone();
        if params.budget_tokens.is_some() {
            request.budget = params.budget_tokens;
        }
        let request = request.or_defaults(&CompressRequest {
            budget: Some(i64::try_from(settings.default_budget_tokens).unwrap_or(i64::MAX)),
            ..CompressRequest::default()
        });
        // Checked before the index and the model are waited for.
        let mut options = request.resolve(None).map_err(compress_error)?;
        let query = request.query.trim().to_string();
        let mut notes = Vec::new();
        if let Budget::Tokens(requested) = options.budget
            && requested > settings.max_output_tokens
        {
            notes.push(clamped_note(
                format!("budget_tokens {requested}"),
                settings.max_output_tokens,
            ));
            options.budget = Budget::Tokens(settings.max_output_tokens);
        }

        let mut progress = Progress::new(ctx);
        progress.event(&CoreProgress::start(Stage::Walk)).await;
        let view = self
            .view(
                &ctx.peer,
                params.paths.as_deref(),
                params.focus_file.as_deref(),
            )
            .await?;
        if view.files.iter().all(|f| f.chunks.is_empty()) {
            return Err(format!(
                "nothing to compress: no source files with content under {}{}",
                view.root.display(),
                params
                    .paths
                    .as_ref()
                    .map(|p| format!(" (paths {p:?})"))
                    .unwrap_or_default()
            ));
        }
        let n_files = view.files.len();
        let walked = CoreProgress {
            done: n_files,
            total: n_files,
            ..CoreProgress::start(Stage::Walk)
        };
        let n_chunks: usize = view.files.iter().map(|f| f.chunks.len()).sum();
        // The walk's own words: what the index re-read this time.
        progress
            .report(
                f64::from(walked.percentage()),
                format!(
                    "indexed {} files ({} read, {} of them chunked before), {} chunks in scope",
                    view.report.files, view.report.rechunked, view.report.from_store, n_chunks
                ),
            )
            .await;
        // Keyword ranking with a budget in another tokenizer reads no model: it neither waits
        // for the load nor fails with it.
        let scorer: SharedModel = match NoModel::for_options(&options) {
            Some(none) => Arc::new(none),
            None => {
                // The model load has no events of its own: the ticks carry it.
                let loading = CoreProgress::start(Stage::Load);
                progress.event(&loading).await;
                progress.wait(loading, self.scorer()).await?
            }
        };

        let options = CompressOptions {
            focus: view.focus.clone(),
            ..options
        };
        let max_output_tokens = settings.max_output_tokens;
        // What can stop the model's work short, for the note that says it did.
        let limit = options.model_limit_name("deadline_ms reached", |max| {
            format!("max_model_tokens ({max}) spent")
        });
        let cancel = CancelFlag::new();
        let worker_cancel = cancel.clone();
        let files = view.files.clone();
        let worker_query = query.clone();
        let listening = progress.is_on();
        let (events_tx, events) = mpsc::unbounded_channel::<CoreProgress>();
        let mut job = tokio::task::spawn_blocking(move || {
            let docs: Vec<Document> = files.iter().map(|f| document(f)).collect();
            // A closed channel (the call is over) only loses the event.
            let send = |event: &CoreProgress| drop(events_tx.send(event.clone()));
            let compressed = compress::compress_with_progress(
                &*scorer,
                &docs,
                &worker_query,
                &options,
                &worker_cancel,
                listening.then_some(&send as ProgressSink),
            )?;
            // A rate is a share of a scope only the core counts; past the output cap, the
            // same call under the cap (the model's scores are cached: assembly only).
            if matches!(options.budget, Budget::Rate(_))
                && compressed.stats.budget_tokens > max_output_tokens
            {
                let capped = CompressOptions {
                    budget: Budget::Tokens(max_output_tokens),
                    ..options
                };
                let again =
                    compress::compress(&*scorer, &docs, &worker_query, &capped, &worker_cancel)?;
                return Ok((again, Some(compressed.stats.budget_tokens)));
            }
            Ok((compressed, None))
        });
        let ct = ctx.ct.clone();
        let work = async {
            tokio::select! {
                joined = &mut job => joined,
                _ = ct.cancelled() => {
                    cancel.cancel();
                    (&mut job).await
                }
            }
        };
        // The core reports its first stage as soon as it starts.
        let joined = progress
            .follow(CoreProgress::start(Stage::Candidates), events, work)
            .await;
        let compressed = match joined {
            Ok(Ok((compressed, clamped_from))) => {
                if let (Some(requested), Some(rate)) = (clamped_from, request.rate) {
                    notes.push(clamped_note(
                        format!("rate {rate} ({requested} tokens)"),
                        settings.max_output_tokens,
                    ));
                }
                compressed
            }
            Ok(Err(e)) if cancel.is_cancelled() => {
                return Err(format!("cancelled by the client ({e})"));
            }
            Ok(Err(e)) => return Err(compress_error(e)),
            Err(e) => return Err(format!("compression failed: {e}")),
        };
        if compressed.stats.redacted > 0 {
            notes.push(format!(
                "{} secret(s) in the files read (API keys, private keys, passwords) were replaced with [REDACTED:<rule>]; start the server with --no-redact to show them",
                compressed.stats.redacted
            ));
        }
        if compressed.stats.deadline_skipped > 0 {
            notes.push(format!(
                "{limit}: the model did not score {} of the candidates and functions (ranked by keyword match instead); the same call again continues where this one stopped",
                compressed.stats.deadline_skipped
            ));
        }
        progress
            .done(format!(
                "done: {} tokens from {} chunks",
                compressed.stats.compressed_tokens,
                compressed.chunks.len()
            ))
            .await;
        Ok(compress_result(&view.root, compressed, notes))
    }

    async fn status_value(&self) -> Value {
        let root = self.shared.root.get().cloned();
        let index = {
            let s = self
                .shared
                .index_state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let state = match (&root, s.indexing, &s.last, &s.error) {
                (None, _, _, _) => "waiting for the workspace root",
                (Some(Err(_)), _, _, _) => "failed",
                (_, _, _, Some(_)) => "failed",
                (_, true, None, _) => "indexing",
                (_, true, Some(_), _) => "refreshing",
                (_, false, Some(_), _) => "ready",
                (_, false, None, _) => "not started",
            };
            json!({
                "state": state,
                "files": s.last.as_ref().map(|r| r.files),
                "chunks": s.last.as_ref().map(|r| r.chunks),
                "skipped_files": s.last.as_ref().map(|r| r.skipped),
                "last_refresh_ms": s.last.as_ref().map(|r| r.elapsed_ms.round()),
                // Files the last refresh read, and of those the ones whose chunks came from
                // the cache (not parsed again).
                "last_refresh_read_files": s.last.as_ref().map(|r| r.rechunked),
                "last_refresh_files_from_cache": s.last.as_ref().map(|r| r.from_store),
                "refreshed_at_unix_s": s.refreshed_at
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
                "error": s.error,
            })
        };
        let model_state = self.shared.model.borrow().clone();
        let (model, scorer_cache) = match &model_state {
            ModelState::Loading => (json!({"state": "loading"}), Value::Null),
            ModelState::Failed(e) => (json!({"state": "failed", "error": e}), Value::Null),
            ModelState::Ready(scorer) => {
                let description = scorer.description();
                let stats = scorer.stats();
                (
                    json!({
                        "state": "ready",
                        "name": model_name(Path::new(&description.location)),
                        "path": description.location,
                        "architecture": description.architecture,
                        "build": description.build,
                        "device": description.device,
                        "gpu_layers": description.gpu_layers,
                        "gpu_layers_asked": description.gpu_layers_asked,
                    }),
                    json!({
                        "tokens_decoded": stats.tokens_decoded,
                        "kv_state_hits": stats.kv_state_hits,
                        "kv_state_misses": stats.kv_state_misses,
                        "kv_states": stats.kv_states,
                        "kv_state_bytes": stats.kv_state_bytes,
                        "disk_hits": stats.disk_hits,
                        "disk_misses": stats.disk_misses,
                    }),
                )
            }
        };
        let advice = match (&root, &model_state) {
            (Some(Err(e)), _) => format!("no workspace: {e}"),
            (_, ModelState::Failed(_)) => {
                "compress_context cannot work: the model failed to load (see model.error)".into()
            }
            (_, ModelState::Loading) => {
                "the model is loading: compress_context calls wait for it (seconds; minutes if it is being downloaded)".into()
            }
            (None, _) => "the workspace root is not known yet: the first call decides it".into(),
            _ => "ready: call compress_context".into(),
        };
        json!({
            "workspace": match &root {
                Some(Ok(r)) => json!({"root": r.path.display().to_string(), "source": r.source}),
                Some(Err(e)) => json!({"error": e}),
                None => Value::Null,
            },
            "index": index,
            "model": model,
            "scorer_cache": scorer_cache,
            "max_output_tokens": self.shared.settings.max_output_tokens,
            "default_budget_tokens": self.shared.settings.default_budget_tokens,
            "version": env!("CARGO_PKG_VERSION"),
            "advice": advice,
        })
    }
}

#[tool_router]
impl CtxzipServer {
    /// The part of the workspace's code that matters for a task, compressed to a token budget.
    #[tool(
        description = "Get the source code of this workspace that matters for a task, compressed into a token budget: whole functions, types and blocks ranked by how much they help explain the query, under their file paths, followed by a list of the kept chunks as path:start-end. Call it before reading files one by one when you need to understand, change or debug code; narrow with paths or focus_file.",
        output_schema = crate::schema::output_schema::<CompressOutput>(),
        annotations(
            title = "Compress workspace context",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn compress_context(
        &self,
        Parameters(params): Parameters<CompressParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        match self.compress(params, &ctx).await {
            Ok(result) => result,
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        }
    }

    /// Workspace, index and model state.
    #[tool(
        description = "Show the workspace root, how many files and chunks are indexed, and whether the model is loaded, so you can tell whether compress_context is ready or still warming up.",
        annotations(
            title = "ctxzip status",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn status(&self) -> CallToolResult {
        let value = self.status_value().await;
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
        result.structured_content = Some(value);
        result
    }
}

#[tool_handler]
impl ServerHandler for CtxzipServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("ctxzip", env!("CARGO_PKG_VERSION")))
            .with_instructions(instructions(&self.shared.settings))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Without --root the client's roots decide the workspace: ask now, index in the
        // background, and let the first call find a warm index.
        if self.shared.root.get().is_none() {
            self.start_indexing(Some(context.peer));
        }
    }
}

fn instructions(settings: &Settings) -> String {
    format!(
        "ctxzip returns the parts of this workspace's source code that matter for a task, \
         compressed to fit a token budget. Call compress_context first when a task needs code \
         you have not read (understanding a feature, fixing a bug, planning a change): pass the \
         task itself as `query`, optionally `paths` to narrow the search and `focus_file` \
         (FILE:LINE) for the code being edited. `budget_tokens` defaults to {} and is capped \
         at {}. The result ends with the kept chunks as path:start-end; open a full file only \
         when an excerpt is not enough. If a call is slow or fails, call status: the index or the model may \
         still be loading.",
        settings.default_budget_tokens, settings.max_output_tokens
    )
}

/// `what`: "budget_tokens 50000" or "rate 0.5 (50000 tokens)".
fn clamped_note(what: String, cap: usize) -> String {
    format!(
        "{what} is above this server's output cap; clamped to {cap} tokens (--max-output-tokens)"
    )
}

/// A path an agent gave, inside the root.
struct Inside {
    /// The index key (canonical, absolute).
    key: PathBuf,
    /// Relative to the root, `/`-separated (`""` is the root itself).
    rel: String,
    kind: Kind,
}

/// Resolves an agent's path (relative to the root, absolute under it, or a `file://` URI) by
/// the index's one rule. Every path outside the root is the core's `PathOutsideRoot`, worded
/// once whatever lies there (no oracle for outside files); a path inside with nothing there
/// is worded here.
fn inside(root: &index::Root, raw: &str) -> Result<Inside, String> {
    let (key, kind) = match index::resolve_in(root, raw) {
        Ok(found) => found,
        Err(IndexError::OutsideRoots { .. }) => {
            return Err(compress_error(CompressError::PathOutsideRoot {
                path: raw.to_owned(),
            }));
        }
        Err(e) => return Err(e.to_string()),
    };
    if kind == Kind::Missing {
        return Err(format!(
            "{raw:?}: no such file or directory in the workspace {}; paths are relative to it",
            root.path.display()
        ));
    }
    let rel = key
        .strip_prefix(&root.path)
        .map(|rel| rel.to_string_lossy().replace('\\', "/"))
        .unwrap_or_default();
    Ok(Inside { key, rel, kind })
}

/// The pipeline's view of an indexed file, under its path relative to the root.
fn document(file: &FileSnapshot) -> Document<'_> {
    Document {
        path: &file.rel_path,
        lang: file.lang,
        text: &file.text,
        chunks: &file.chunks,
        redacted: file.redactions.len(),
    }
}

/// A refused call's message, its fix in the tool's terms (its arguments, the server's flags).
fn compress_error(e: CompressError) -> String {
    match e {
        CompressError::EmptyQuery => "query is empty: say in words what the context is for, e.g. \"where are retries handled and how is the backoff computed?\"".into(),
        CompressError::BadBudget { budget } => format!(
            "budget_tokens must be a positive number of tokens (got {budget}); e.g. 2000, or leave it out for the default"
        ),
        CompressError::BadRate { rate } => format!(
            "rate must be in (0, 1] (got {rate}); e.g. 0.2 keeps a fifth of the scope's tokens"
        ),
        CompressError::BudgetAndRate => "give budget_tokens or rate, not both".into(),
        CompressError::BudgetTooSmall { budget, smallest } => format!(
            "budget_tokens {budget} is smaller than any chunk (the smallest needs {smallest} tokens with its file header); raise budget_tokens to at least {smallest}"
        ),
        CompressError::EmptyWorkspace => {
            "nothing to compress: no source files with content in scope; widen paths".into()
        }
        CompressError::IndexNotReady { .. } => {
            format!("{e}; the status tool shows the index's progress")
        }
        CompressError::PathOutsideRoot { path } => format!(
            "{path:?} is not inside the workspace root; give paths relative to it (the status tool shows the root)"
        ),
        // Not the parser's words: they can quote the file's values, and a call may name any
        // file (tokenizers live outside workspaces), so only the file and the problem are said.
        CompressError::TokenizerFile(e) => {
            let problem = match e.problem() {
                "not_found" => "does not exist",
                "unreadable" => "cannot be read",
                _ => "is not a Hugging Face tokenizer.json",
            };
            format!(
                "tokenizer: {} {problem}; give model, o200k, cl100k or the path of a tokenizer.json (a relative path is read from the server's working directory)",
                e.path()
            )
        }
        CompressError::Scoring(e) => format!(
            "the model failed while scoring: {e}. Retry; if it fails again, call status and check the model"
        ),
    }
}

/// The `structuredContent` of a `compress_context` result; its schema is the tool's
/// `outputSchema`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CompressOutput {
    /// The compressed context, as in the first text block.
    pub context: String,
    /// The workspace root the paths are relative to.
    pub root: String,
    /// The budget this call ran under (after the output cap).
    pub budget_tokens: usize,
    /// The kept chunks, in output order.
    pub chunks: Vec<SelectedChunk>,
    pub stats: Stats,
    /// What the caller should know: a clamped budget, redacted secrets, a deadline reached.
    pub notes: Vec<String>,
}

fn compress_result(root: &Path, compressed: Compressed, notes: Vec<String>) -> CallToolResult {
    let budget_tokens = compressed.stats.budget_tokens;
    let s = &compressed.stats;
    let mut summary = format!(
        "[ctxzip: {} of {} budget tokens, {} chunks from {} files; the workspace scope holds {} tokens ({:.1}x); {:.0} ms]",
        s.compressed_tokens,
        budget_tokens,
        compressed.chunks.len(),
        s.files,
        s.original_tokens,
        s.ratio,
        s.elapsed_ms
    );
    for chunk in &compressed.chunks {
        let _ = write!(
            summary,
            "\n{}:{}-{} {}",
            chunk.path,
            chunk.start_line,
            chunk.end_line,
            chunk.kind.as_str()
        );
        if let Some(name) = &chunk.name {
            let _ = write!(summary, " {name}");
        }
    }
    for note in &notes {
        summary.push_str("\nnote: ");
        summary.push_str(note);
    }
    let text = compressed.context.clone();
    let output = CompressOutput {
        context: compressed.context,
        root: root.display().to_string(),
        budget_tokens,
        chunks: compressed.chunks,
        stats: compressed.stats,
        notes,
    };
    let mut result =
        CallToolResult::success(vec![ContentBlock::text(text), ContentBlock::text(summary)]);
    result.structured_content = serde_json::to_value(&output).ok();
    result
}

/// The catalog name of a model file, else its file stem.
fn model_name(path: &Path) -> String {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    models::CATALOG
        .iter()
        .find(|m| m.file_name == file_name)
        .map(|m| m.name.to_string())
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

/// The client's first `file://` root, else the working directory.
async fn resolve_root(peer: Option<Peer<RoleServer>>) -> Result<Root, String> {
    if let Some(peer) = peer
        && let Some(path) = client_root(&peer).await
    {
        return Ok(Root {
            path,
            source: "client roots",
        });
    }
    let cwd = std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .map_err(|e| {
            format!("cannot read the working directory ({e}); start the server with --root DIR")
        })?;
    Ok(Root {
        path: cwd,
        source: "working directory",
    })
}

#[allow(deprecated)] // roots/list: still how today's clients say where the workspace is.
async fn client_root(peer: &Peer<RoleServer>) -> Option<PathBuf> {
    let info = peer.peer_info()?;
    info.capabilities.roots.as_ref()?;
    let roots = tokio::time::timeout(ROOTS_TIMEOUT, peer.list_roots())
        .await
        .ok()?
        .ok()?;
    roots.roots.iter().find_map(|root| {
        let path = file_uri_path(&root.uri)?;
        let canonical = std::fs::canonicalize(path).ok()?;
        canonical.is_dir().then_some(canonical)
    })
}

/// The path of a `file://` URI, percent-decoded.
fn file_uri_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    // `file://host/path`: only the local host is ours.
    let path = if rest.starts_with('/') {
        rest
    } else {
        let slash = rest.find('/')?;
        if &rest[..slash] != "localhost" {
            return None;
        }
        &rest[slash..]
    };
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    // Windows: file:///C:/dir
    let decoded = match decoded.strip_prefix('/') {
        Some(rest) if rest.as_bytes().get(1) == Some(&b':') => rest.to_string(),
        _ => decoded,
    };
    Some(PathBuf::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_decode() {
        assert_eq!(
            file_uri_path("file:///home/me/my%20repo"),
            Some(PathBuf::from("/home/me/my repo"))
        );
        assert_eq!(
            file_uri_path("file://localhost/srv/x"),
            Some(PathBuf::from("/srv/x"))
        );
        assert_eq!(file_uri_path("file://elsewhere/srv/x"), None);
        assert_eq!(file_uri_path("https://example.com/x"), None);
    }
}
