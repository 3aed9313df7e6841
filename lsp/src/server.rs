//! The protocol shell: LSP messages in, [`Index`] / indexer / compress calls out. Each
//! `LanguageServer` method is one line calling an inherent method of [`Server`].
//!
//! The protocol loop never waits on the model: compress runs on a blocking thread behind a
//! one-at-a-time gate, and a request's future owns a guard that cancels its model work when
//! tower-lsp drops it (on `$/cancelRequest` or shutdown).

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ctxzip_chunker::Lang;
use ctxzip_chunker::confine;
use ctxzip_chunker::workspace::WalkOptions;
use ctxzip_scoring::cache::ChunkCache;
use ctxzip_scoring::compress::{
    self, CompressError, CompressOptions, Compressed, Document, Focus, NoModel, Progress,
    ProgressSink, Stage,
};
use ctxzip_scoring::remote::RemoteFlags;
use ctxzip_scoring::{CancelFlag, Error as ScoringError, SharedModel};
use futures::FutureExt;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tower_lsp_server::jsonrpc::{self, ErrorCode};
use tower_lsp_server::ls_types::*;
use tower_lsp_server::{Client, LanguageServer};

use crate::indexer::{Event, Indexer, Job};
use crate::model::{ModelSettings, ModelSlot};
use crate::progress::RequestProgress;
use crate::protocol::{self, ChunkResult, CompressParams, CompressResult, Options};
use ctxzip_chunker::index::{
    self, FileSnapshot, Index, PositionEncoding, TextChange, TextPosition,
};

pub const COMPRESS_COMMAND: &str = "ctxzip.compress";
/// A compress whose query equals this variable's value panics (for tests only).
const PANIC_HOOK_ENV: &str = "CTXZIP_LSP_TEST_PANIC_QUERY";

/// Settings from the command line; initializationOptions and configuration changes go over
/// them.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    pub options: Options,
    pub verbose: bool,
    /// Largest message body read, in bytes (`None`: `ctxzip_framing`'s default).
    pub max_message_bytes: Option<usize>,
}

#[derive(Clone, Copy, Debug, Default)]
struct ClientCaps {
    work_done_progress: bool,
    watched_files_dynamic: bool,
    encoding: PositionEncoding,
}

/// State shared by the protocol handlers and the tasks they start.
struct Shared {
    client: Client,
    index: Arc<Index>,
    indexer: OnceLock<Indexer>,
    events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    events_tx: mpsc::UnboundedSender<Event>,
    defaults: Defaults,
    options: RwLock<Options>,
    caps: OnceLock<ClientCaps>,
    model: ModelSlot,
    /// One compress at a time: the model has one worker anyway, and a cancelled request
    /// releases the gate only when its model work has stopped.
    gate: Arc<Semaphore>,
    /// Cancel flags of requests in flight, cancelled at shutdown.
    in_flight: Mutex<HashMap<u64, CancelFlag>>,
    /// The background refinement of the last answer a deadline cut short; the next
    /// compress request (or shutdown) cancels it.
    refine: Mutex<Option<CancelFlag>>,
    /// Refinements running (0 or 1 but for a moment of overlap).
    refining: Arc<AtomicU64>,
    next_request: AtomicU64,
    shut_down: Arc<AtomicBool>,
    progress_tokens: AtomicU64,
}

pub struct Server {
    shared: Arc<Shared>,
}

impl Shared {
    /// Cancels every request's model work and the background refinement; each stops at its
    /// next decode batch.
    fn cancel_all(&self) {
        for flag in self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            flag.cancel();
        }
        if let Some(flag) = self.refine.lock().unwrap_or_else(|e| e.into_inner()).take() {
            flag.cancel();
        }
    }
}

/// Stops a server's model work from outside the protocol: when stdin closes there is no
/// client left to answer, and tower-lsp would otherwise wait for every request in flight.
#[derive(Clone)]
pub struct StopHandle(std::sync::Weak<Shared>);

impl StopHandle {
    pub fn stop(&self) {
        if let Some(shared) = self.0.upgrade() {
            shared.cancel_all();
        }
    }
}

impl Server {
    pub fn new(client: Client, defaults: Defaults, shut_down: Arc<AtomicBool>) -> Server {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let options = defaults.options.clone();
        Server {
            shared: Arc::new(Shared {
                client,
                // Files' chunks kept by their text in the score cache's file: a restart
                // parses only what changed (nothing is stored while redaction is off).
                index: Arc::new(Index::with_chunk_store(
                    walk_options(&options),
                    ChunkCache::configured_store(),
                )),
                indexer: OnceLock::new(),
                events: Mutex::new(Some(events_rx)),
                events_tx,
                defaults,
                options: RwLock::new(options),
                caps: OnceLock::new(),
                model: ModelSlot::default(),
                gate: Arc::new(Semaphore::new(1)),
                in_flight: Mutex::new(HashMap::new()),
                refine: Mutex::new(None),
                refining: Arc::new(AtomicU64::new(0)),
                next_request: AtomicU64::new(0),
                shut_down,
                progress_tokens: AtomicU64::new(0),
            }),
        }
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::downgrade(&self.shared))
    }

    fn indexer(&self) -> &Indexer {
        let shared = &self.shared;
        shared
            .indexer
            .get_or_init(|| Indexer::start(Arc::clone(&shared.index), shared.events_tx.clone()))
    }

    fn caps(&self) -> ClientCaps {
        self.shared.caps.get().copied().unwrap_or_default()
    }

    fn options(&self) -> Options {
        self.shared
            .options
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn model_settings(&self) -> ModelSettings {
        let options = self.options();
        ModelSettings {
            model: options.model,
            offline: options.offline.unwrap_or(false),
            threads: options.threads,
            gpu_layers: options.gpu_layers,
            verbose: self.shared.defaults.verbose,
            remote: RemoteFlags {
                url: options.scorer_url,
                model: options.scorer_model,
                max_in_flight: options.scorer_max_in_flight,
                timeout_s: options.scorer_timeout_s,
            },
        }
    }

    // ---- lifecycle -------------------------------------------------------------------

    async fn on_initialize(&self, params: InitializeParams) -> jsonrpc::Result<InitializeResult> {
        let init_options = match params.initialization_options.clone() {
            Some(value) => Options::from_value(value).map_err(invalid_params)?,
            None => Options::default(),
        };
        let options = self.shared.defaults.options.overlay(&init_options);
        self.shared.index.set_walk_options(walk_options(&options));
        *self
            .shared
            .options
            .write()
            .unwrap_or_else(|e| e.into_inner()) = options;

        let caps = &params.capabilities;
        let offered_utf8 = caps
            .general
            .as_ref()
            .and_then(|g| g.position_encodings.as_ref())
            .is_some_and(|e| e.contains(&PositionEncodingKind::UTF8));
        let client_caps = ClientCaps {
            work_done_progress: caps
                .window
                .as_ref()
                .and_then(|w| w.work_done_progress)
                .unwrap_or(false),
            watched_files_dynamic: caps
                .workspace
                .as_ref()
                .and_then(|w| w.did_change_watched_files.as_ref())
                .and_then(|d| d.dynamic_registration)
                .unwrap_or(false),
            encoding: if offered_utf8 {
                PositionEncoding::Utf8
            } else {
                PositionEncoding::Utf16
            },
        };
        let _ = self.shared.caps.set(client_caps);

        for dir in root_dirs(&params) {
            if let Err(err) = self.shared.index.add_root(&dir) {
                self.shared
                    .events_tx
                    .send(Event::Warning(format!("workspace folder skipped: {err}")))
                    .ok();
            }
        }

        Ok(InitializeResult {
            capabilities: ServerCapabilities {
                position_encoding: Some(if offered_utf8 {
                    PositionEncodingKind::UTF8
                } else {
                    PositionEncodingKind::UTF16
                }),
                text_document_sync: Some(TextDocumentSyncCapability::Options(
                    TextDocumentSyncOptions {
                        open_close: Some(true),
                        change: Some(TextDocumentSyncKind::INCREMENTAL),
                        save: Some(TextDocumentSyncSaveOptions::SaveOptions(SaveOptions {
                            include_text: Some(false),
                        })),
                        ..Default::default()
                    },
                )),
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: vec![COMPRESS_COMMAND.to_owned()],
                    work_done_progress_options: WorkDoneProgressOptions {
                        work_done_progress: Some(true),
                    },
                }),
                workspace: Some(WorkspaceServerCapabilities {
                    workspace_folders: Some(WorkspaceFoldersServerCapabilities {
                        supported: Some(true),
                        change_notifications: Some(OneOf::Left(true)),
                    }),
                    file_operations: None,
                }),
                ..Default::default()
            },
            server_info: Some(ServerInfo {
                name: "ctxzip".to_owned(),
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            }),
            offset_encoding: None,
        })
    }

    async fn on_initialized(&self) {
        self.spawn_progress_forwarder();
        for root in self.shared.index.roots() {
            self.indexer().send(Job::IndexRoot(root.path));
        }
        if self.caps().watched_files_dynamic {
            self.register_file_watcher().await;
        }
        // Load the model now so the first query does not pay for it.
        let model = self.shared.model.clone();
        let settings = self.model_settings();
        let client = self.shared.client.clone();
        tokio::spawn(async move {
            if let Err(err) = model.get(&settings).await {
                client.show_message(MessageType::ERROR, err).await;
            }
        });
    }

    async fn register_file_watcher(&self) {
        let options = DidChangeWatchedFilesRegistrationOptions {
            watchers: vec![FileSystemWatcher {
                glob_pattern: GlobPattern::String("**/*".to_owned()),
                kind: None,
            }],
        };
        let registration = Registration {
            id: "ctxzip-watched-files".to_owned(),
            method: "workspace/didChangeWatchedFiles".to_owned(),
            register_options: serde_json::to_value(options).ok(),
        };
        let client = self.shared.client.clone();
        // The client answers later; do not hold up `initialized` for it.
        tokio::spawn(async move {
            if let Err(err) = client.register_capability(vec![registration]).await {
                client
                    .log_message(
                        MessageType::WARNING,
                        format!(
                            "ctxzip: could not register for file change events ({err}); files changed outside the editor are picked up on save only"
                        ),
                    )
                    .await;
            }
        });
    }

    /// Forwards indexer events to the client as `$/progress` (when it supports work-done
    /// progress) or log messages.
    fn spawn_progress_forwarder(&self) {
        let Some(mut events) = self
            .shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let client = self.shared.client.clone();
        let use_progress = self.caps().work_done_progress;
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let mut ongoing = None;
            while let Some(event) = events.recv().await {
                match event {
                    Event::Begin { title } => {
                        if use_progress {
                            let n = shared.progress_tokens.fetch_add(1, Ordering::SeqCst);
                            let token = NumberOrString::String(format!("ctxzip/index/{n}"));
                            if client
                                .create_work_done_progress(token.clone())
                                .await
                                .is_ok()
                            {
                                ongoing = Some(
                                    client
                                        .progress(token, title)
                                        .with_percentage(0)
                                        .begin()
                                        .await,
                                );
                            }
                        } else {
                            client.log_message(MessageType::INFO, title).await;
                        }
                    }
                    Event::Report {
                        done_files,
                        total_files,
                    } => {
                        if let Some(progress) = &ongoing {
                            let percentage =
                                (done_files * 100).checked_div(total_files).unwrap_or(100);
                            progress
                                .report_with_message(
                                    format!("{done_files}/{total_files} files"),
                                    percentage as u32,
                                )
                                .await;
                        }
                    }
                    Event::End { message } => match ongoing.take() {
                        Some(progress) => progress.finish_with_message(message).await,
                        None => {
                            client
                                .log_message(MessageType::INFO, format!("ctxzip: {message}"))
                                .await
                        }
                    },
                    Event::Warning(message) => {
                        client
                            .log_message(MessageType::WARNING, format!("ctxzip: {message}"))
                            .await;
                    }
                }
            }
        });
    }

    async fn on_shutdown(&self) -> jsonrpc::Result<()> {
        self.shared.shut_down.store(true, Ordering::SeqCst);
        self.shared.cancel_all();
        Ok(())
    }

    /// Cancels the background refinement, if one runs; it stops at its next decode batch.
    fn stop_refining(&self) {
        if let Some(flag) = self
            .shared
            .refine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            flag.cancel();
        }
    }

    /// Finishes, in the background, the model work a deadline cut short, so that the same
    /// request asked again is answered whole from the cache. Holds the model gate while it
    /// runs; any compress request cancels it first.
    fn refine_in_background(
        &self,
        scorer: SharedModel,
        files: Vec<Arc<FileSnapshot>>,
        display: Vec<String>,
        query: String,
        options: CompressOptions,
    ) {
        let flag = CancelFlag::new();
        if let Some(old) = self
            .shared
            .refine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(flag.clone())
        {
            old.cancel();
        }
        let gate = Arc::clone(&self.shared.gate);
        let refining = Arc::clone(&self.shared.refining);
        refining.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Ok(permit) = gate.acquire_owned().await
                && !flag.is_cancelled()
            {
                let options = CompressOptions {
                    deadline: None,
                    ..options
                };
                // The answer is dropped: what it leaves in the cache is the point. A cancelled
                // or failed refinement leaves nothing to report.
                let _ = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let docs = documents(&files, &display);
                    compress::compress(&*scorer, &docs, &query, &options, &flag)
                })
                .await;
            }
            refining.fetch_sub(1, Ordering::SeqCst);
        });
    }

    // ---- documents -----------------------------------------------------------------

    /// The index key of a document URI, or why it may not be read.
    fn key_of(&self, uri: &Uri) -> Result<PathBuf, String> {
        let scheme = uri.scheme().as_str();
        if scheme != "file" {
            return Err(format!(
                "{}: only file:// URIs are supported (got the {scheme} scheme)",
                uri.as_str()
            ));
        }
        let path = uri
            .to_file_path()
            .ok_or_else(|| format!("{}: not a file path", uri.as_str()))?;
        self.shared
            .index
            .resolve(&path)
            .map(|(key, _)| key)
            .map_err(|e| e.to_string())
    }

    /// The index key of a URI a request names. A path outside the workspace folders is the
    /// core's `PathOutsideRoot` (its own code and data), worded by the index's one message
    /// that tells nothing about what lies outside.
    fn request_key(&self, uri: &Uri) -> jsonrpc::Result<PathBuf> {
        self.key_of(uri).map_err(|message| {
            let outside = uri.to_file_path().is_some_and(|path| {
                matches!(
                    self.shared.index.resolve(&path),
                    Err(index::IndexError::OutsideRoots { .. })
                )
            });
            if outside {
                let error = CompressError::PathOutsideRoot {
                    path: uri.as_str().to_owned(),
                };
                refused(&error, message)
            } else {
                invalid_params(message)
            }
        })
    }

    async fn warn(&self, message: String) {
        self.shared
            .client
            .log_message(MessageType::WARNING, format!("ctxzip: {message}"))
            .await;
    }

    async fn on_did_open(&self, params: DidOpenTextDocumentParams) {
        let doc = params.text_document;
        match self.key_of(&doc.uri) {
            Ok(key) => {
                let lang = Lang::from_lsp_id(&doc.language_id);
                self.shared.index.open(&key, lang, doc.version, doc.text);
            }
            Err(err) => self.warn(format!("not tracking this buffer: {err}")).await,
        }
    }

    async fn on_did_change(&self, params: DidChangeTextDocumentParams) {
        // Applied before any await, so edits land in the order they arrived.
        let result = self.key_of(&params.text_document.uri).and_then(|key| {
            let changes: Vec<TextChange> = params
                .content_changes
                .into_iter()
                .map(|c| TextChange {
                    range: c
                        .range
                        .map(|r| (text_position(r.start), text_position(r.end))),
                    text: c.text,
                })
                .collect();
            let result = self.shared.index.change(
                &key,
                params.text_document.version,
                &changes,
                self.caps().encoding,
            );
            if result.is_err() {
                // Out of sync: fall back to the disk text rather than keep a wrong buffer.
                self.shared.index.close(&key);
            }
            result.map_err(|e| e.to_string())
        });
        if let Err(err) = result {
            self.warn(err).await;
        }
    }

    async fn on_did_save(&self, params: DidSaveTextDocumentParams) {
        let key = match self.key_of(&params.text_document.uri) {
            Ok(key) => key,
            Err(_) => return,
        };
        if let Some(text) = params.text {
            self.shared.index.replace_buffer(&key, text);
        }
        if self.shared.index.is_indexed(&key) {
            self.indexer().send(Job::Reload(vec![key]));
        } else if let Ok((_, root)) = self.shared.index.resolve(&key) {
            // A new file: the walk decides whether it belongs in the index.
            self.indexer().send(Job::Rescan(root.path));
        }
    }

    async fn on_did_close(&self, params: DidCloseTextDocumentParams) {
        if let Ok(key) = self.key_of(&params.text_document.uri) {
            self.shared.index.close(&key);
        }
    }

    async fn on_did_change_watched_files(&self, params: DidChangeWatchedFilesParams) {
        let mut rescan: HashSet<PathBuf> = HashSet::new();
        let mut reload = Vec::new();
        let mut remove = Vec::new();
        for event in params.changes {
            let Some(path) = event.uri.to_file_path().map(|p| p.into_owned()) else {
                continue;
            };
            let Ok((key, root)) = self.shared.index.resolve(&path) else {
                continue; // outside the workspace: not ours
            };
            match event.typ {
                FileChangeType::CREATED => {
                    rescan.insert(root.path);
                }
                FileChangeType::CHANGED => reload.push(key),
                FileChangeType::DELETED => remove.push(key),
                _ => {}
            }
        }
        if !remove.is_empty() {
            self.indexer().send(Job::Remove(remove));
        }
        if !reload.is_empty() {
            self.indexer().send(Job::Reload(reload));
        }
        for root in rescan {
            self.indexer().send(Job::Rescan(root));
        }
    }

    async fn on_did_change_workspace_folders(&self, params: DidChangeWorkspaceFoldersParams) {
        for folder in params.event.removed {
            if let Some(path) = folder.uri.to_file_path() {
                self.shared.index.remove_root(&path);
            }
        }
        for folder in params.event.added {
            let Some(path) = folder.uri.to_file_path().map(|p| p.into_owned()) else {
                continue;
            };
            match self.shared.index.add_root(&path) {
                Ok(root) => self.indexer().send(Job::IndexRoot(root.path)),
                Err(err) => self.warn(format!("workspace folder skipped: {err}")).await,
            }
        }
    }

    async fn on_did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let changed = match Options::from_value(params.settings) {
            Ok(changed) => changed,
            Err(err) => {
                self.shared
                    .client
                    .show_message(MessageType::ERROR, format!("ctxzip: {err}"))
                    .await;
                return;
            }
        };
        let before = self.options();
        let after = before.overlay(&changed);
        *self
            .shared
            .options
            .write()
            .unwrap_or_else(|e| e.into_inner()) = after.clone();
        if walk_options_differ(&before, &after) {
            self.shared.index.set_walk_options(walk_options(&after));
            self.indexer().send(Job::Reindex);
        }
        // A changed model setting loads the new model on the next request.
    }

    // ---- requests ------------------------------------------------------------------

    async fn on_execute_command(
        &self,
        params: ExecuteCommandParams,
    ) -> jsonrpc::Result<Option<Value>> {
        if params.command != COMPRESS_COMMAND {
            return Err(invalid_params(format!(
                "unknown command {:?}: ctxzip supports {COMPRESS_COMMAND}",
                params.command
            )));
        }
        let argument = params.arguments.into_iter().next().ok_or_else(|| {
            invalid_params(format!(
                "{COMPRESS_COMMAND} needs one argument: {{\"query\": ..., \"budget\": ...}}"
            ))
        })?;
        let mut compress_params = CompressParams::from_value(argument)
            .map_err(|e| invalid_params(format!("{COMPRESS_COMMAND} argument: {e}")))?;
        // The command's own token stands for the request's when the argument has none.
        if compress_params.work_done_token.is_none() {
            compress_params.work_done_token = params.work_done_progress_params.work_done_token;
        }
        let result = self.compress(compress_params).await?;
        Ok(Some(serde_json::to_value(result).map_err(internal)?))
    }

    /// `ctxzip/compress`.
    pub async fn compress(&self, params: CompressParams) -> jsonrpc::Result<CompressResult> {
        let id = self.shared.next_request.fetch_add(1, Ordering::SeqCst);
        let cancel = CancelFlag::new();
        let _guard = CancelOnDrop {
            shared: Arc::clone(&self.shared),
            id,
            flag: cancel.clone(),
        };
        self.shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, cancel.clone());
        guarded("ctxzip/compress", self.compress_inner(params, cancel)).await
    }

    async fn compress_inner(
        &self,
        params: CompressParams,
        cancel: CancelFlag,
    ) -> jsonrpc::Result<CompressResult> {
        // This request needs the model now.
        self.stop_refining();
        let options = self.options();
        // The request's own values over the server's settings, checked before any work.
        let request = params.request.or_defaults(&options.request_defaults());
        request.resolve(None).map_err(|e| compress_error(&e))?;
        let query = request.query.trim().to_owned();
        let under = match &params.paths {
            Some(uris) => {
                let mut keys = Vec::new();
                for uri in uris {
                    keys.push(self.request_key(uri)?);
                }
                Some(keys)
            }
            None => None,
        };
        let focus_key = match &params.focus {
            Some(focus) => Some(self.request_key(&focus.uri)?),
            None => None,
        };

        // A file edited, replaced or deleted outside the editor with no event for it (no
        // watcher, no save) is read again now: its stamp on disk tells.
        let index = Arc::clone(&self.shared.index);
        let scope = under.clone();
        let _ = tokio::task::spawn_blocking(move || index.reload_changed(scope.as_deref())).await;
        let partial = self.indexer().is_indexing();
        let files = self.shared.index.snapshot(under.as_deref());
        if files.iter().all(|f| f.chunks.is_empty()) {
            let state = self.indexer().state();
            return Err(if self.shared.index.roots().is_empty() {
                refused(
                    &CompressError::EmptyWorkspace,
                    "no workspace folder: open a folder (initialize with workspaceFolders or rootUri)",
                )
            } else if partial {
                compress_error(&CompressError::IndexNotReady {
                    files_done: state.done_files,
                    files_total: state.total_files,
                })
            } else {
                refused(
                    &CompressError::EmptyWorkspace,
                    "nothing to compress: no readable source files under the workspace folders (or the given paths)",
                )
            });
        }
        let multi_root = self.shared.index.roots().len() > 1;
        let display: Vec<String> = files.iter().map(|f| display_path(f, multi_root)).collect();
        // The one focus rule of every surface: the focus must be a file the request reads,
        // and its line must lie in it (LSP lines count from 0; the core's from 1).
        let focus = match (&params.focus, &focus_key) {
            (Some(focus), Some(key)) => {
                let Some((file, path)) =
                    files.iter().zip(&display).find(|(f, _)| &f.abs_path == key)
                else {
                    if partial {
                        let state = self.indexer().state();
                        let not_ready = CompressError::IndexNotReady {
                            files_done: state.done_files,
                            files_total: state.total_files,
                        };
                        return Err(refused(
                            &not_ready,
                            format!(
                                "focus {}: not indexed yet (the workspace is still being indexed); retry in a moment",
                                focus.uri.as_str()
                            ),
                        ));
                    }
                    return Err(invalid_params(format!(
                        "focus {}: not an indexed file of the workspace (or outside the given paths); give a source file the index holds (see ctxzip/status)",
                        focus.uri.as_str()
                    )));
                };
                let line = focus.position.map(|p| p.line + 1);
                if let Some(line) = line {
                    confine::check_focus_line(focus.uri.as_str(), line, &file.text).map_err(
                        |e| invalid_params(format!("focus {e} (positions count lines from 0)")),
                    )?;
                }
                Some(Focus {
                    path: path.clone(),
                    line,
                })
            }
            _ => None,
        };
        let compress_options = request.resolve(focus).map_err(|e| compress_error(&e))?;

        let progress = self.request_progress(params.work_done_token.clone()).await;
        let n_files = files.len();
        progress
            .report(&Progress {
                done: n_files,
                total: n_files,
                ..Progress::start(Stage::Walk)
            })
            .await;
        progress.report(&Progress::start(Stage::Load)).await;
        let outcome = self
            .run_compress(
                &files,
                &display,
                &query,
                &compress_options,
                cancel,
                &progress,
            )
            .await;
        progress
            .end(match &outcome {
                Ok((compressed, _)) => format!(
                    "{} tokens from {} chunks",
                    compressed.stats.compressed_tokens,
                    compressed.chunks.len()
                ),
                Err(e) => format!("failed: {}", e.message),
            })
            .await;
        let (compressed, scorer) = outcome?;
        if compressed.stats.redacted > 0 {
            self.warn(format!(
                "{} secret(s) in the files read (API keys, private keys, passwords) were replaced with [REDACTED:<rule>]; set \"redact\": false in initializationOptions to show them",
                compressed.stats.redacted
            ))
            .await;
        }
        // What a deadline cut short is finished in the background; what a model-token budget
        // left is the user's choice to spend (the refinement keeps that budget), so the log
        // says what was left and how to spend more.
        if compressed.stats.deadline_skipped > 0 {
            let limit = compress_options.model_limit_name("deadlineMs reached", |max| {
                format!("maxModelTokens ({max}) spent")
            });
            let next = if compress_options.deadline.is_some() {
                "the server scores them in the background, so the same request again is answered from the cache"
            } else {
                "the same request again continues where this one stopped; a larger maxModelTokens reads more now"
            };
            self.shared
                .client
                .log_message(
                    MessageType::INFO,
                    format!(
                        "ctxzip: {limit}: the model did not score {} of the candidates and functions (ranked by keyword match instead); {next}",
                        compressed.stats.deadline_skipped
                    ),
                )
                .await;
            if compress_options.deadline.is_some() {
                self.refine_in_background(
                    scorer,
                    files.clone(),
                    display.clone(),
                    query,
                    compress_options,
                );
            }
        }

        let by_path: HashMap<&str, &Arc<FileSnapshot>> = display
            .iter()
            .map(String::as_str)
            .zip(files.iter())
            .collect();
        let encoding = self.caps().encoding;
        let chunks = compressed
            .chunks
            .iter()
            .filter_map(|c| {
                let file = by_path.get(c.path.as_str())?;
                let uri = Uri::from_file_path(&file.abs_path)?;
                let end_row = c.end_line.saturating_sub(1) as usize;
                Some(ChunkResult {
                    uri,
                    range: Range {
                        start: Position::new(c.start_line.saturating_sub(1), 0),
                        end: Position::new(
                            end_row as u32,
                            file.user_line_length(end_row, encoding),
                        ),
                    },
                    path: c.path.clone(),
                    name: c.name.clone(),
                    kind: c.kind.as_str().to_owned(),
                    score: c.score,
                    tokens: c.tokens,
                })
            })
            .collect();
        Ok(CompressResult {
            context: compressed.context,
            chunks,
            stats: serde_json::to_value(&compressed.stats).map_err(internal)?,
            partial,
        })
    }

    /// The model work of a compress request: waits for the model and the gate, then runs
    /// the core on a blocking thread, its stage events forwarded to `progress` as they come.
    async fn run_compress(
        &self,
        files: &[Arc<FileSnapshot>],
        display: &[String],
        query: &str,
        options: &CompressOptions,
        cancel: CancelFlag,
        progress: &RequestProgress,
    ) -> jsonrpc::Result<(Compressed, SharedModel)> {
        // Keyword ranking with a budget in another tokenizer reads no model: none is loaded.
        let scorer: SharedModel = match NoModel::for_options(options) {
            Some(none) => Arc::new(none),
            None => self
                .shared
                .model
                .get(&self.model_settings())
                .await
                .map_err(internal)?,
        };
        let permit = Arc::clone(&self.shared.gate)
            .acquire_owned()
            .await
            .map_err(internal)?;
        if cancel.is_cancelled() {
            return Err(jsonrpc::Error::request_cancelled());
        }
        let (work_files, work_display) = (files.to_vec(), display.to_vec());
        let (work_scorer, work_query, work_options) =
            (Arc::clone(&scorer), query.to_owned(), options.clone());
        let listening = progress.is_on();
        let (events_tx, mut events) = mpsc::unbounded_channel::<Progress>();
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Test hook: the end-to-end tests prove a panic here leaves the server up.
            if std::env::var_os(PANIC_HOOK_ENV).is_some_and(|q| q == work_query.as_str()) {
                panic!("{PANIC_HOOK_ENV} matched the query");
            }
            let docs = documents(&work_files, &work_display);
            // A closed channel (the request was dropped) only loses the event.
            let send = |event: &Progress| drop(events_tx.send(event.clone()));
            compress::compress_with_progress(
                &*work_scorer,
                &docs,
                &work_query,
                &work_options,
                &cancel,
                listening.then_some(&send as ProgressSink),
            )
        });
        // The channel closes when the job ends (its sender goes with it), which ends this.
        let forward = async {
            while let Some(event) = events.recv().await {
                progress.report(&event).await;
            }
        };
        let (outcome, ()) = tokio::join!(job, forward);
        match outcome {
            Ok(Ok(compressed)) => Ok((compressed, scorer)),
            Ok(Err(err)) => Err(compress_error(&err)),
            Err(join) => Err(panic_error("ctxzip/compress", join.into_panic_message())),
        }
    }

    /// A compress request's `$/progress`: on the client's `workDoneToken`, else on a token
    /// the server creates when the client supports work-done progress.
    async fn request_progress(&self, token: Option<ProgressToken>) -> RequestProgress {
        let client = &self.shared.client;
        let token = match token {
            Some(token) => Some(token),
            None if self.caps().work_done_progress => {
                let n = self.shared.progress_tokens.fetch_add(1, Ordering::SeqCst);
                let token = NumberOrString::String(format!("ctxzip/compress/{n}"));
                // A client that refuses the token gets no progress; the request goes on.
                client
                    .create_work_done_progress(token.clone())
                    .await
                    .is_ok()
                    .then_some(token)
            }
            None => None,
        };
        RequestProgress::begin(client, token).await
    }

    /// `ctxzip/status`.
    pub async fn status(&self) -> jsonrpc::Result<Value> {
        let (files, chunks, buffers) = self.shared.index.counts();
        let state = self.indexer().state();
        let settings = self.model_settings();
        let info = self.shared.model.info();
        let stats = self.shared.model.stats();
        let rate = |hits: u64, misses: u64| {
            if hits + misses == 0 {
                Value::Null
            } else {
                json!(hits as f64 / (hits + misses) as f64)
            }
        };
        Ok(json!({
            "roots": self.shared.index.roots().iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>(),
            "files": files,
            "chunks": chunks,
            "openBuffers": buffers,
            "indexing": {
                "state": if state.indexing { "indexing" } else if state.queued_jobs > 0 { "updating" } else { "ready" },
                "doneFiles": state.done_files,
                "totalFiles": state.total_files,
                "queuedJobs": state.queued_jobs,
            },
            // Finishing the model work of an answer a deadline cut short.
            "refining": self.shared.refining.load(Ordering::SeqCst) > 0,
            "model": {
                "name": settings.model.unwrap_or_else(|| ctxzip_scoring::DEFAULT_MODEL.to_owned()),
                "loaded": info.is_some(),
                "path": info.as_ref().map(|i| i.path.clone()),
                "architecture": info.as_ref().map(|i| i.architecture.clone()),
                "build": info.as_ref().map(|i| i.build.clone()),
                "device": info.as_ref().map(|i| i.device.clone()),
                "gpuLayers": info.as_ref().map(|i| i.gpu_layers),
                "gpuLayersAsked": info.as_ref().map(|i| i.gpu_layers_asked),
            },
            "cache": stats.map(|s| json!({
                "tokensDecoded": s.tokens_decoded,
                "kvStateHits": s.kv_state_hits,
                "kvStateMisses": s.kv_state_misses,
                "kvStateHitRate": rate(s.kv_state_hits, s.kv_state_misses),
                "kvStates": s.kv_states,
                "kvStateBytes": s.kv_state_bytes,
                "diskHits": s.disk_hits,
                "diskMisses": s.disk_misses,
                "diskHitRate": rate(s.disk_hits, s.disk_misses),
            })),
            "positionEncoding": match self.caps().encoding {
                PositionEncoding::Utf8 => "utf-8",
                PositionEncoding::Utf16 => "utf-16",
            },
        }))
    }
}

impl LanguageServer for Server {
    async fn initialize(&self, params: InitializeParams) -> jsonrpc::Result<InitializeResult> {
        guarded("initialize", self.on_initialize(params)).await
    }

    async fn initialized(&self, _: InitializedParams) {
        self.on_initialized().await
    }

    async fn shutdown(&self) -> jsonrpc::Result<()> {
        self.on_shutdown().await
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        notify_guarded(self.on_did_open(params)).await
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        notify_guarded(self.on_did_change(params)).await
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        notify_guarded(self.on_did_save(params)).await
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        notify_guarded(self.on_did_close(params)).await
    }

    async fn did_change_watched_files(&self, params: DidChangeWatchedFilesParams) {
        notify_guarded(self.on_did_change_watched_files(params)).await
    }

    async fn did_change_workspace_folders(&self, params: DidChangeWorkspaceFoldersParams) {
        notify_guarded(self.on_did_change_workspace_folders(params)).await
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        notify_guarded(self.on_did_change_configuration(params)).await
    }

    async fn execute_command(
        &self,
        params: ExecuteCommandParams,
    ) -> jsonrpc::Result<Option<Value>> {
        guarded("workspace/executeCommand", self.on_execute_command(params)).await
    }
}

/// The pipeline's view of index snapshots, under their display paths.
fn documents<'a>(files: &'a [Arc<FileSnapshot>], display: &'a [String]) -> Vec<Document<'a>> {
    files
        .iter()
        .zip(display)
        .map(|(f, path)| Document {
            path,
            lang: f.lang,
            text: &f.text,
            chunks: &f.chunks,
            redacted: f.redactions.len(),
        })
        .collect()
}

/// Cancels a request's model work when its future is dropped (by `$/cancelRequest`).
struct CancelOnDrop {
    shared: Arc<Shared>,
    id: u64,
    flag: CancelFlag,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.flag.cancel();
        self.shared
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Runs a request handler, turning a panic into an error response.
async fn guarded<T>(
    method: &str,
    future: impl Future<Output = jsonrpc::Result<T>>,
) -> jsonrpc::Result<T> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(panic_error(method, panic_message(&*panic))),
    }
}

/// Runs a notification handler; a panic is logged to stderr and swallowed.
async fn notify_guarded(future: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(future).catch_unwind().await {
        eprintln!(
            "ctxzip lsp: a notification handler panicked: {}",
            panic_message(&*panic)
        );
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

trait IntoPanicMessage {
    fn into_panic_message(self) -> String;
}

impl IntoPanicMessage for tokio::task::JoinError {
    fn into_panic_message(self) -> String {
        match self.try_into_panic() {
            Ok(panic) => panic_message(&*panic),
            Err(err) => err.to_string(),
        }
    }
}

fn panic_error(method: &str, message: String) -> jsonrpc::Error {
    jsonrpc::Error {
        code: ErrorCode::InternalError,
        message: format!(
            "{method} failed with an internal error ({message}); the server is still running: please report this with the request that caused it"
        )
        .into(),
        data: None,
    }
}

/// A refused compress request: its own code, the fix in the LSP's terms, and the kind and
/// fields as `data` for clients to switch on.
fn compress_error(error: &CompressError) -> jsonrpc::Error {
    match error {
        CompressError::Scoring(ScoringError::Cancelled) => jsonrpc::Error::request_cancelled(),
        CompressError::Scoring(err) => internal(err),
        _ => refused(error, protocol::error_message(error)),
    }
}

/// `error`'s code and data with a message of the shell's own.
fn refused(error: &CompressError, message: impl Into<String>) -> jsonrpc::Error {
    jsonrpc::Error {
        code: ErrorCode::from(protocol::error_code(error)),
        message: message.into().into(),
        data: Some(error.data()),
    }
}

fn invalid_params(message: impl ToString) -> jsonrpc::Error {
    jsonrpc::Error::invalid_params(message.to_string())
}

fn internal(err: impl ToString) -> jsonrpc::Error {
    jsonrpc::Error {
        code: ErrorCode::InternalError,
        message: err.to_string().into(),
        data: None,
    }
}

fn text_position(position: Position) -> TextPosition {
    TextPosition {
        line: position.line,
        character: position.character,
    }
}

fn display_path(file: &FileSnapshot, multi_root: bool) -> String {
    if multi_root {
        let root_name = file
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{root_name}/{}", file.rel_path)
    } else {
        file.rel_path.clone()
    }
}

fn walk_options(options: &Options) -> WalkOptions {
    let mut walk = WalkOptions::default();
    if let Some(globs) = &options.ignore {
        walk.ignore_globs = globs.clone();
    }
    if let Some(max) = options.max_file_bytes {
        walk.max_file_bytes = max;
    }
    // The editor's setting, else config.toml's `redact` (the rule every surface shares),
    // else on. A config file that cannot say leaves redaction on.
    walk.redact = ctxzip_scoring::models::redact(options.redact).unwrap_or_else(|e| {
        eprintln!("ctxzip lsp: {e}; secrets stay redacted");
        true
    });
    walk
}

fn walk_options_differ(a: &Options, b: &Options) -> bool {
    a.ignore != b.ignore || a.max_file_bytes != b.max_file_bytes || a.redact != b.redact
}

/// Workspace folders, else rootUri, else rootPath.
#[allow(deprecated)]
fn root_dirs(params: &InitializeParams) -> Vec<PathBuf> {
    if let Some(folders) = &params.workspace_folders
        && !folders.is_empty()
    {
        return folders
            .iter()
            .filter_map(|f| f.uri.to_file_path().map(|p| p.into_owned()))
            .collect();
    }
    if let Some(uri) = &params.root_uri {
        return uri
            .to_file_path()
            .map(|p| vec![p.into_owned()])
            .unwrap_or_default();
    }
    params
        .root_path
        .as_ref()
        .map(|p| vec![PathBuf::from(p)])
        .unwrap_or_default()
}
