//! The one live workspace index of the LSP and MCP servers: the files the workspace walk
//! keeps under one or more roots, each read through [`crate::confine`], chunked, and stamped
//! (modification time, size, inode) when read, so that a file changed on disk is read again
//! at the next query whether or not an event said so; and an optional overlay of open editor
//! buffers (kept current by incremental reparse) that shadow their disk text. Plain paths,
//! byte offsets and line/column positions: no protocol types live here; each server turns
//! its own events (watcher, `didChange`, a tool call) into calls of this one index.
//!
//! Which files may be read is decided by the one confinement rule ([`crate::confine`]): only
//! files under a root, reached without leaving it by `..` or a symlink; every read is
//! confined to the root's directory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use rayon::prelude::*;
use serde::Serialize;

use crate::confine::{self, Kind, PathError, RootDir};
use crate::secrets::{self, Redaction};
use crate::stored::{self, ChunkStore, FileKey};
use crate::workspace::{self, FileChunks, FileText, Skipped, WalkError, WalkOptions, Workspace};
use crate::{Chunk, EditError, Lang, SourceFile};

/// A modification time this close to the read is not trusted: a write within the file
/// system's timestamp resolution (a coarse clock tick; 2 s on FAT) after the read would leave
/// the same time and size. Such a file is read again at every query until its time is older
/// (git's "racy clean" rule).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What a file on disk looked like when it was read: when any part differs, its text may
/// have changed. Taken before the read, so a write that races the read leaves a stamp older
/// than the text and the file is read again at the next query (never the reverse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    /// An editor that saves by renaming a new file over the old one changes the inode even
    /// when the size and the time (at the file system's resolution) do not.
    #[cfg(unix)]
    inode: u64,
}

impl Stamp {
    /// The stamp of the file at `path` now (following symlinks, as the read does), or `None`
    /// when nothing is there.
    pub fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }

    /// Whether the stamp can vouch for the text read at `now` (see [`RACY_WINDOW`]).
    fn settled(&self, now: SystemTime) -> bool {
        self.modified.is_none_or(|modified| {
            now.duration_since(modified)
                .is_ok_and(|age| age >= RACY_WINDOW)
        })
    }
}

/// One file as a query sees it: disk text, or the unsaved buffer when the file is open.
#[derive(Clone, Debug)]
pub struct FileSnapshot {
    /// Canonical absolute path (the index key).
    pub abs_path: PathBuf,
    /// The workspace root the file lies under (canonical).
    pub root: PathBuf,
    /// Relative to `root`, `/`-separated.
    pub rel_path: String,
    pub lang: Lang,
    pub text: String,
    pub chunks: Vec<Chunk>,
    /// True when the text is an open buffer's, not the disk's.
    pub from_buffer: bool,
    /// Secrets replaced in `text` (empty when redaction is off).
    pub redactions: Vec<Redaction>,
    /// Set when the file was read with a caveat (invalid UTF-8 replaced, secrets redacted).
    pub warning: Option<String>,
    /// The disk file's stamp when it was read; `None` when it could not be taken or was too
    /// recent to trust, and the file is read again at the next query.
    pub stamp: Option<Stamp>,
}

impl FileSnapshot {
    /// The length of 0-based `row` in the text the user sees (the buffer or the file): a
    /// redacted secret changed the length of the lines it touched in `text`.
    pub fn user_line_length(&self, row: usize, encoding: PositionEncoding) -> u32 {
        match self.redactions.iter().find_map(|r| r.original_width(row)) {
            Some(width) => match encoding {
                PositionEncoding::Utf8 => width.utf8,
                PositionEncoding::Utf16 => width.utf16,
            },
            None => line_length(&self.text, row, encoding),
        }
    }
}

/// A workspace root: a canonical directory and a short name for multi-root paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub path: PathBuf,
    pub name: String,
}

/// How the `character` of a [`TextPosition`] counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PositionEncoding {
    Utf8,
    #[default]
    Utf16,
}

/// A 0-based line and a column in the negotiated encoding's code units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextPosition {
    pub line: u32,
    pub character: u32,
}

/// One change of a buffer: a range replaced by text, or (no range) the whole text.
#[derive(Clone, Debug)]
pub struct TextChange {
    pub range: Option<(TextPosition, TextPosition)>,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Every path outside the roots, however it gets there (`..`, a symlink) and whether or
    /// not anything is there: one message, so it tells nothing about outside files. Each
    /// shell words it in its own terms (the LSP's workspace folders, MCP's root).
    #[error(
        "{}: only files under the workspace folders can be read (open the folder that holds it as a workspace folder)",
        path.display()
    )]
    OutsideRoots { path: PathBuf },
    /// An empty path or one with a NUL byte.
    #[error(transparent)]
    Path(PathError),
    #[error("{}: the path must be absolute", path.display())]
    Relative { path: PathBuf },
    #[error("{}: no open buffer (send textDocument/didOpen first)", path.display())]
    NotOpen { path: PathBuf },
    #[error(
        "{}: position {line}:{character} is past the end of the buffer (the client and server disagree on its text; close and reopen the file)",
        path.display()
    )]
    BadPosition {
        path: PathBuf,
        line: u32,
        character: u32,
    },
    #[error("{}: {source}", path.display())]
    Edit { path: PathBuf, source: EditError },
    #[error(transparent)]
    Walk(#[from] WalkError),
}

struct Buffer {
    lang: Lang,
    version: i32,
    source: SourceFile,
    /// Built on first query after an edit.
    snapshot: Option<Arc<FileSnapshot>>,
}

/// What one indexing batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadCounts {
    pub loaded: usize,
    pub skipped: usize,
    /// Of `loaded`, the files whose chunks came from the chunk store (not parsed again).
    pub from_store: usize,
}

/// What one [`Index::refresh`] of a root did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RefreshReport {
    /// Files indexed under the root afterwards.
    pub files: usize,
    pub chunks: usize,
    /// Files read by this refresh (new, or changed since their stamp).
    pub rechunked: usize,
    /// Of `rechunked`, the files whose chunks came from the chunk store (read, not parsed).
    pub from_store: usize,
    pub removed: usize,
    pub skipped: usize,
    pub elapsed_ms: f64,
}

#[derive(Default)]
pub struct Index {
    roots: RwLock<Vec<Root>>,
    files: DashMap<PathBuf, Arc<FileSnapshot>>,
    buffers: DashMap<PathBuf, Buffer>,
    walk: RwLock<WalkOptions>,
    /// Per root: what its last walk left out, and why.
    skipped: DashMap<PathBuf, Vec<Skipped>>,
    /// Files the walk keeps but a read refused (binary, minified, too large, gone), by key,
    /// with the stamp they had: an unchanged one is not read again by every refresh.
    unread: DashMap<PathBuf, Unread>,
    /// Where files' chunks are kept by their text ([`crate::stored`]), if anywhere: a file
    /// whose text was chunked before is not parsed again. Used only while redaction is on.
    chunk_store: Option<Arc<dyn ChunkStore>>,
}

struct Unread {
    root: PathBuf,
    stamp: Option<Stamp>,
    skip: Skipped,
}

impl Index {
    pub fn new(walk: WalkOptions) -> Index {
        Index {
            walk: RwLock::new(walk),
            ..Index::default()
        }
    }

    /// An index that takes files' chunks from `store` when it holds them, and puts there the
    /// chunks it makes. Nothing is looked up or stored while redaction is off: a record holds
    /// the file's chunk names, and those must never reach the disk unredacted.
    /// With `None`, the same as [`Index::new`].
    pub fn with_chunk_store(walk: WalkOptions, store: Option<Arc<dyn ChunkStore>>) -> Index {
        Index {
            chunk_store: store,
            ..Index::new(walk)
        }
    }

    pub fn walk_options(&self) -> WalkOptions {
        read(&self.walk).clone()
    }

    pub fn set_walk_options(&self, walk: WalkOptions) {
        *self.walk.write().unwrap_or_else(|e| e.into_inner()) = walk;
    }

    pub fn roots(&self) -> Vec<Root> {
        read(&self.roots).clone()
    }

    /// Adds a root directory; returns it canonicalized. Adding a root twice is a no-op.
    pub fn add_root(&self, dir: &Path) -> Result<Root, IndexError> {
        let path = std::fs::canonicalize(dir).map_err(|_| WalkError::NotFound {
            path: dir.to_path_buf(),
        })?;
        if !path.is_dir() {
            return Err(WalkError::NotFound { path }.into());
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_owned());
        let root = Root { path, name };
        let mut roots = self.roots.write().unwrap_or_else(|e| e.into_inner());
        if !roots.contains(&root) {
            roots.push(root.clone());
        }
        Ok(root)
    }

    /// Forgets a root and every indexed file under it (unless another root holds it).
    pub fn remove_root(&self, dir: &Path) {
        let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut roots = self.roots.write().unwrap_or_else(|e| e.into_inner());
        roots.retain(|r| r.path != path);
        let remaining: Vec<PathBuf> = roots.iter().map(|r| r.path.clone()).collect();
        drop(roots);
        self.skipped.remove(&path);
        self.unread.retain(|_, unread| unread.root != path);
        self.files.retain(|key, _| {
            !key.starts_with(&path) || remaining.iter().any(|r| key.starts_with(r))
        });
    }

    /// The root holding the absolute `path` and the canonical key of `path`, or why it may
    /// not be read.
    ///
    /// A path that does not exist (a deleted file, an unsaved buffer) is resolved through
    /// its nearest existing ancestor.
    pub fn resolve(&self, path: &Path) -> Result<(PathBuf, Root), IndexError> {
        if !path.is_absolute() {
            return Err(IndexError::Relative {
                path: path.to_path_buf(),
            });
        }
        let raw = path.to_string_lossy();
        let roots = read(&self.roots);
        for root in roots.iter() {
            if let Ok((key, _)) = resolve_in(root, &raw) {
                return Ok((key, root.clone()));
            }
        }
        Err(IndexError::OutsideRoots {
            path: path.to_path_buf(),
        })
    }

    /// The files the walk keeps under `root` (no reading); what it leaves out is kept for
    /// [`Index::skip_reason`].
    pub fn discover(&self, root: &Root) -> Result<Vec<PathBuf>, IndexError> {
        let (paths, skipped) = workspace::discover(&root.path, &self.walk_options())?;
        self.skipped.insert(root.path.clone(), skipped);
        Ok(paths)
    }

    /// Reads and chunks `paths` (under `root`) in parallel and puts them in the index. A
    /// path that cannot be read (any more) leaves the index, its reason kept.
    pub fn load(&self, root: &Root, paths: &[PathBuf]) -> LoadCounts {
        let options = self.walk_options();
        let Ok(root_dir) = RootDir::open(&root.path) else {
            // The root itself is gone: nothing under it can be read.
            for path in paths {
                self.files.remove(&canonicalize_lenient(path));
            }
            return LoadCounts {
                skipped: paths.len(),
                ..LoadCounts::default()
            };
        };
        let read: Vec<(PathBuf, Option<Stamp>, Result<FileText, Skipped>)> = paths
            .par_iter()
            .map(|path| read_one(root, &root_dir, path, &options))
            .collect();
        let store = self.chunk_store.as_deref().filter(|_| options.redact);
        let mut counts = LoadCounts::default();
        for loaded in chunk_all(root, read, store) {
            match loaded.result {
                Ok(file) => {
                    counts.loaded += 1;
                    counts.from_store += usize::from(loaded.from_store);
                    self.unread.remove(&loaded.key);
                    self.files.insert(loaded.key, Arc::new(file));
                }
                Err(skip) => {
                    counts.skipped += 1;
                    self.files.remove(&loaded.key);
                    let root = root.path.clone();
                    let stamp = loaded.stamp;
                    self.unread.insert(loaded.key, Unread { root, stamp, skip });
                }
            }
        }
        counts
    }

    /// Brings one root up to date by walk and stamps: walks it again, reads the files that
    /// are new or whose stamp changed, and drops the files that are gone. What a server
    /// without events (MCP) does before every call, and the LSP on a file-created event.
    pub fn refresh(&self, root: &Root) -> Result<RefreshReport, IndexError> {
        let started = Instant::now();
        let paths = self.discover(root)?;
        let mut keys = HashSet::with_capacity(paths.len());
        let mut walked = Vec::with_capacity(paths.len());
        for path in paths {
            // A walk path under the canonical root is its own key unless it passes through a
            // symlink: one the index knows is used as it is, and only the others (new files,
            // paths through a symlink) pay for `canonicalize`, a syscall per component.
            let known = self.files.contains_key(&path) || self.unread.contains_key(&path);
            let key = if known {
                path.clone()
            } else {
                canonicalize_lenient(&path)
            };
            // A second path to a file already seen is a symlink inside the root.
            if keys.insert(key.clone()) {
                walked.push((path, key));
            }
        }
        let stale: Vec<PathBuf> = walked
            .into_par_iter()
            .filter(|(_, key)| {
                let now = Stamp::of(key);
                let fresh = now.is_some()
                    && (self.files.get(key).is_some_and(|file| file.stamp == now)
                        || self.unread.get(key).is_some_and(|u| u.stamp == now));
                !fresh
            })
            .map(|(path, _)| path)
            .collect();
        let before = self.files.len();
        self.files
            .retain(|key, file| file.root != root.path || keys.contains(key));
        let removed = before - self.files.len();
        self.unread
            .retain(|key, unread| unread.root != root.path || keys.contains(key));
        let rechunked = stale.len();
        let loaded = self.load(root, &stale);
        let (files, chunks) = self
            .files
            .iter()
            .filter(|file| file.root == root.path)
            .fold((0, 0), |(n, c), file| (n + 1, c + file.chunks.len()));
        Ok(RefreshReport {
            files,
            chunks,
            rechunked,
            from_store: loaded.from_store,
            removed,
            skipped: self.skipped.get(&root.path).map_or(0, |s| s.len())
                + self.unread.iter().filter(|u| u.root == root.path).count(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Reads again every indexed file (under one of `under`, if given) whose stamp changed
    /// since it was read: edited, replaced or deleted outside the editor with no event to
    /// say so. A stat per file; a read only for the changed ones. Returns how many changed.
    pub fn reload_changed(&self, under: Option<&[PathBuf]>) -> usize {
        let indexed: Vec<(PathBuf, Option<Stamp>)> = self
            .files
            .iter()
            .filter(|entry| {
                under.is_none_or(|dirs| dirs.iter().any(|d| entry.key().starts_with(d)))
            })
            .map(|entry| (entry.key().clone(), entry.stamp))
            .collect();
        let changed: Vec<PathBuf> = indexed
            .into_par_iter()
            .filter(|(key, stamp)| stamp.is_none() || Stamp::of(key) != *stamp)
            .map(|(key, _)| key)
            .collect();
        if !changed.is_empty() {
            self.reload(&changed);
        }
        changed.len()
    }

    /// Reads indexed files again from disk (after a save, a watcher event or a changed
    /// stamp); one that can no longer be read leaves the index. Keys the index does not
    /// hold are ignored: the walk left them out.
    pub fn reload(&self, keys: &[PathBuf]) -> LoadCounts {
        let mut by_root: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
        for key in keys {
            if let Some(file) = self.files.get(key) {
                by_root
                    .entry(file.root.clone())
                    .or_default()
                    .push(key.clone());
            }
        }
        let mut counts = LoadCounts::default();
        for root in self.roots() {
            if let Some(keys) = by_root.remove(&root.path) {
                let done = self.load(&root, &keys);
                counts.loaded += done.loaded;
                counts.skipped += done.skipped;
            }
        }
        // Files of a root removed meanwhile.
        for key in by_root.into_values().flatten() {
            self.files.remove(&key);
        }
        counts
    }

    /// Why the walk or a read left out `rel` (relative to `root`), if it saw it.
    pub fn skip_reason(&self, root: &Path, rel: &str) -> Option<String> {
        let walked = self
            .skipped
            .get(root)
            .and_then(|skipped| skipped.iter().find(|s| s.path == rel).cloned());
        let read = || {
            self.unread
                .iter()
                .find(|u| u.root == root && u.skip.path == rel)
                .map(|u| u.skip.clone())
        };
        walked.or_else(read).map(|s| s.reason)
    }

    /// What the last walk of `root` and the reads since left out, sorted by path.
    pub fn skipped(&self, root: &Path) -> Vec<Skipped> {
        let mut skipped: Vec<Skipped> = self
            .skipped
            .get(root)
            .map(|walked| walked.clone())
            .unwrap_or_default();
        skipped.extend(
            self.unread
                .iter()
                .filter(|u| u.root == root)
                .map(|u| u.skip.clone()),
        );
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        skipped
    }

    /// Drops every indexed file of one root (before indexing it again).
    pub fn remove_root_files(&self, root: &Path) {
        self.files.retain(|_, file| file.root != root);
        self.unread.retain(|_, unread| unread.root != root);
    }

    /// Drops `key` and, when it was a directory, everything under it.
    pub fn remove(&self, key: &Path) -> usize {
        self.unread.retain(|k, _| !k.starts_with(key));
        let before = self.files.len();
        self.files.retain(|k, _| !k.starts_with(key));
        before - self.files.len()
    }

    pub fn is_indexed(&self, key: &Path) -> bool {
        self.files.contains_key(key)
    }

    /// Opens (or reopens) a buffer: from now on its text wins over the disk's.
    pub fn open(&self, key: &Path, lang: Option<Lang>, version: i32, text: String) {
        let lang = lang.unwrap_or_else(|| Lang::from_path(key));
        self.buffers.insert(
            key.to_path_buf(),
            Buffer {
                lang,
                version,
                source: SourceFile::new(lang, text),
                snapshot: None,
            },
        );
    }

    /// Applies a buffer's changes in order, each an incremental reparse. On an error the
    /// changes before it stay applied.
    pub fn change(
        &self,
        key: &Path,
        version: i32,
        changes: &[TextChange],
        encoding: PositionEncoding,
    ) -> Result<(), IndexError> {
        let mut buffer = self
            .buffers
            .get_mut(key)
            .ok_or_else(|| IndexError::NotOpen {
                path: key.to_path_buf(),
            })?;
        buffer.version = version;
        buffer.snapshot = None;
        for change in changes {
            match change.range {
                None => {
                    let lang = buffer.lang;
                    buffer.source = SourceFile::new(lang, change.text.clone());
                }
                Some((start, end)) => {
                    let text = buffer.source.text();
                    let bad = |p: TextPosition| IndexError::BadPosition {
                        path: key.to_path_buf(),
                        line: p.line,
                        character: p.character,
                    };
                    let start_byte =
                        byte_offset(text, start, encoding).ok_or_else(|| bad(start))?;
                    let end_byte = byte_offset(text, end, encoding).ok_or_else(|| bad(end))?;
                    // Chunks follow at the next query (`snapshot`): typing pays for the
                    // incremental reparse only.
                    buffer
                        .source
                        .edit_deferred(start_byte, end_byte.max(start_byte), &change.text)
                        .map_err(|source| IndexError::Edit {
                            path: key.to_path_buf(),
                            source,
                        })?;
                }
            }
        }
        Ok(())
    }

    /// Replaces an open buffer's whole text (a save that carries it).
    pub fn replace_buffer(&self, key: &Path, text: String) {
        if let Some(mut buffer) = self.buffers.get_mut(key) {
            let lang = buffer.lang;
            buffer.source = SourceFile::new(lang, text);
            buffer.snapshot = None;
        }
    }

    /// Closes a buffer: the disk text counts again.
    pub fn close(&self, key: &Path) {
        self.buffers.remove(key);
    }

    pub fn buffer_text(&self, key: &Path) -> Option<String> {
        self.buffers.get(key).map(|b| b.source.text().to_owned())
    }

    pub fn buffer_version(&self, key: &Path) -> Option<i32> {
        self.buffers.get(key).map(|b| b.version)
    }

    /// The chunks an open buffer has now.
    pub fn buffer_chunks(&self, key: &Path) -> Option<Vec<Chunk>> {
        self.buffers.get_mut(key).map(|mut b| {
            b.source.refresh_chunks();
            b.source.chunks().to_vec()
        })
    }

    /// Every indexed file (open buffers' text winning), sorted by path, optionally only
    /// those under one of `under`.
    pub fn snapshot(&self, under: Option<&[PathBuf]>) -> Vec<Arc<FileSnapshot>> {
        let redact = read(&self.walk).redact;
        let mut out: Vec<Arc<FileSnapshot>> = self
            .files
            .iter()
            .filter(|entry| {
                under.is_none_or(|dirs| dirs.iter().any(|d| entry.key().starts_with(d)))
            })
            .map(|entry| {
                let disk = entry.value();
                match self.buffers.get_mut(entry.key()) {
                    Some(mut buffer) => {
                        let buffer = &mut *buffer;
                        buffer.source.refresh_chunks();
                        Arc::clone(buffer.snapshot.get_or_insert_with(|| {
                            Arc::new(buffer_snapshot(disk, buffer.lang, &buffer.source, redact))
                        }))
                    }
                    None => Arc::clone(disk),
                }
            })
            .collect();
        out.sort_by(|a, b| a.abs_path.cmp(&b.abs_path));
        out
    }

    /// (files, chunks, open buffers).
    pub fn counts(&self) -> (usize, usize, usize) {
        let chunks = self.files.iter().map(|f| f.chunks.len()).sum();
        (self.files.len(), chunks, self.buffers.len())
    }
}

/// Reads one path through the index once, for a caller that asks one question and exits
/// (the CLI's `compress` and `chunks`): the same walk, confined reads, redaction and chunking
/// as the servers' index, with nothing kept afterwards. A directory is walked; a file is read
/// under its own directory without the walk's name rules (naming it is the user's choice).
/// Files come sorted by path, relative to the directory (a file's: its name).
pub fn read_once(path: &Path, options: &WalkOptions) -> Result<Workspace, WalkError> {
    read_once_with(path, options, None)
}

/// [`read_once`], taking files' chunks from `store` where it holds them and putting there
/// the chunks it makes ([`Index::with_chunk_store`]): a repeat query on an unchanged tree
/// reads and redacts every file, and parses none.
pub fn read_once_with(
    path: &Path,
    options: &WalkOptions,
    store: Option<Arc<dyn ChunkStore>>,
) -> Result<Workspace, WalkError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => WalkError::NotFound {
            path: path.to_path_buf(),
        },
        _ => WalkError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let canonical = std::fs::canonicalize(path).map_err(|source| WalkError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Adding a root and walking it fail only as a walk does; anything else would be a new
    // kind of failure, reported with the path rather than lost.
    let walk_error = |e: IndexError| match e {
        IndexError::Walk(walk) => walk,
        other => WalkError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    };
    let index = Index::with_chunk_store(options.clone(), store);
    let (root, paths) = if meta.is_file() {
        let dir = canonical.parent().unwrap_or(Path::new("/"));
        (index.add_root(dir).map_err(walk_error)?, vec![canonical])
    } else {
        let root = index.add_root(&canonical).map_err(walk_error)?;
        let paths = index.discover(&root).map_err(walk_error)?;
        (root, paths)
    };
    let counts = index.load(&root, &paths);
    let skipped = index.skipped(&root.path);
    // The one-shot index holds the only handle on each file: taken, not copied.
    let mut files: Vec<FileSnapshot> = index
        .files
        .into_iter()
        .map(|(_, file)| Arc::try_unwrap(file).unwrap_or_else(|shared| (*shared).clone()))
        .collect();
    files.sort_by(|a, b| a.abs_path.cmp(&b.abs_path));
    let warnings = files
        .iter()
        .filter_map(|file| {
            file.warning.as_ref().map(|reason| Skipped {
                path: file.rel_path.clone(),
                reason: reason.clone(),
            })
        })
        .collect();
    let files = files
        .into_iter()
        .map(|file| FileChunks {
            path: file.rel_path,
            abs_path: file.abs_path,
            lang: file.lang,
            text: file.text,
            chunks: file.chunks,
            warning: file.warning,
            redactions: file.redactions,
        })
        .collect();
    Ok(Workspace {
        files,
        skipped,
        warnings,
        from_store: counts.from_store,
    })
}

/// `raw` (relative to `root`, absolute under it, or a `file://` URI) by the one rule of
/// every surface ([`confine::resolve`]): the index key it names and what lies there. Every
/// way out of the root is [`IndexError::OutsideRoots`], whatever is there.
pub fn resolve_in(root: &Root, raw: &str) -> Result<(PathBuf, Kind), IndexError> {
    let found = confine::resolve(&root.path, raw).map_err(|e| match e {
        PathError::Outside { .. } => IndexError::OutsideRoots {
            path: PathBuf::from(raw),
        },
        other => IndexError::Path(other),
    })?;
    let key = if found.rel.is_empty() {
        root.path.clone()
    } else {
        root.path.join(&found.rel)
    };
    Ok((key, found.kind))
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// An open buffer as a query sees it. The buffer keeps the editor's text (its edits are
/// positions in that text); the snapshot redacts secrets in a copy and chunks the copy again
/// (line numbers do not move, byte ranges do), the same redaction the disk read applies.
fn buffer_snapshot(
    disk: &FileSnapshot,
    lang: Lang,
    source: &SourceFile,
    redact: bool,
) -> FileSnapshot {
    let (text, redactions) = if redact {
        secrets::redact(source.text().to_owned())
    } else {
        (source.text().to_owned(), Vec::new())
    };
    let chunks = if redactions.is_empty() {
        source.chunks().to_vec()
    } else {
        crate::chunk_source(lang, &text)
    };
    FileSnapshot {
        abs_path: disk.abs_path.clone(),
        root: disk.root.clone(),
        rel_path: disk.rel_path.clone(),
        lang,
        text,
        chunks,
        from_buffer: true,
        warning: (!redactions.is_empty()).then(|| workspace::redaction_warning(&redactions)),
        redactions,
        stamp: disk.stamp,
    }
}

/// Reads one file of `root` (confined to it): its index key, its stamp before the read, and
/// its text or why it is left out.
fn read_one(
    root: &Root,
    root_dir: &RootDir,
    path: &Path,
    options: &WalkOptions,
) -> (PathBuf, Option<Stamp>, Result<FileText, Skipped>) {
    let abs_path = canonicalize_lenient(path);
    // A symlink inside the workspace may still point out of it.
    if !abs_path.starts_with(&root.path) {
        let skip = Skipped {
            path: workspace::relative(&root.path, path),
            reason: "symlink to outside the workspace (or dangling): not followed".into(),
        };
        return (abs_path, None, Err(skip));
    }
    let rel = workspace::relative(&root.path, &abs_path);
    let stamp = Stamp::of(&abs_path).filter(|stamp| stamp.settled(SystemTime::now()));
    // The read itself is confined too: the check above cannot see a swap that follows it.
    let file = workspace::read_file(root_dir, path, rel, options);
    (abs_path, stamp, file)
}

/// One file of a [`Index::load`] batch, chunked.
struct Loaded {
    key: PathBuf,
    stamp: Option<Stamp>,
    result: Result<FileSnapshot, Skipped>,
    from_store: bool,
    /// The record of chunks made here, for the store.
    new_record: Option<(FileKey, Vec<u8>)>,
}

/// Chunks the files read, in parallel: through `store` when given, where the files whose
/// chunks it holds are decoded, not parsed, and the chunks made for the others are stored
/// (in one batch each way, so that the store sees two calls, not one per file).
fn chunk_all(
    root: &Root,
    read: Vec<(PathBuf, Option<Stamp>, Result<FileText, Skipped>)>,
    store: Option<&dyn ChunkStore>,
) -> Vec<Loaded> {
    let file_keys: Vec<Option<FileKey>> = read
        .par_iter()
        .map(|(_, _, file)| {
            let file = file.as_ref().ok().filter(|_| store.is_some())?;
            Some(stored::file_key(file.lang, &file.text))
        })
        .collect();
    let wanted: Vec<FileKey> = file_keys.iter().flatten().copied().collect();
    let mut found = store
        .map(|store| store.get_many(&wanted))
        .unwrap_or_default()
        .into_iter();
    let records: Vec<Option<Vec<u8>>> = file_keys
        .iter()
        .map(|key| key.and_then(|_| found.next().flatten()))
        .collect();
    let mut loaded: Vec<Loaded> = read
        .into_par_iter()
        .zip(file_keys)
        .zip(records)
        .map(|(((key, stamp, file), file_key), record)| {
            let file = match file {
                Ok(file) => file,
                Err(skip) => {
                    return Loaded {
                        key,
                        stamp,
                        result: Err(skip),
                        from_store: false,
                        new_record: None,
                    };
                }
            };
            let decoded = record.and_then(|record| stored::decode(&record, file.lang, &file.text));
            let from_store = decoded.is_some();
            let (chunks, new_record) = match decoded {
                Some(chunks) => (chunks, None),
                None => {
                    let (chunks, settled) =
                        crate::source::chunk_source_timed(file.lang, &file.text);
                    let new_record = file_key
                        .filter(|_| settled)
                        .map(|file_key| (file_key, stored::encode(&chunks)));
                    (chunks, new_record)
                }
            };
            let snapshot = FileSnapshot {
                abs_path: key.clone(),
                root: root.path.clone(),
                rel_path: file.path,
                lang: file.lang,
                text: file.text,
                chunks,
                from_buffer: false,
                redactions: file.redactions,
                warning: file.warning,
                stamp,
            };
            Loaded {
                key,
                stamp,
                result: Ok(snapshot),
                from_store,
                new_record,
            }
        })
        .collect();
    let new_records: Vec<(FileKey, Vec<u8>)> = loaded
        .iter_mut()
        .filter_map(|file| file.new_record.take())
        .collect();
    if let Some(store) = store
        && !new_records.is_empty()
    {
        store.put_many(&new_records);
    }
    loaded
}

/// `canonicalize`, or for a path that does not exist, its nearest existing ancestor's
/// canonical path joined with the rest.
pub fn canonicalize_lenient(path: &Path) -> PathBuf {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return canonical;
    }
    let mut rest = Vec::new();
    let mut current = path;
    while let Some(parent) = current.parent() {
        if let Some(name) = current.file_name() {
            rest.push(name.to_owned());
        }
        if let Ok(canonical) = std::fs::canonicalize(parent) {
            let mut out = canonical;
            for name in rest.iter().rev() {
                out.push(name);
            }
            return out;
        }
        current = parent;
    }
    path.to_path_buf()
}

/// The byte offset of a position, or `None` past the last line + 1.
pub fn byte_offset(
    text: &str,
    position: TextPosition,
    encoding: PositionEncoding,
) -> Option<usize> {
    match encoding {
        PositionEncoding::Utf16 => {
            crate::lines::utf16_position_to_byte(text, position.line, position.character)
        }
        PositionEncoding::Utf8 => {
            let mut line_start = 0;
            for _ in 0..position.line {
                line_start += text[line_start..].find('\n')? + 1;
            }
            let line = &text[line_start..];
            let line_len = line.find('\n').unwrap_or(line.len());
            let mut offset = (position.character as usize).min(line_len);
            while !line.is_char_boundary(offset) {
                offset -= 1;
            }
            Some(line_start + offset)
        }
    }
}

/// The length of line `row` (0-based) in `encoding`'s code units, without its line break.
pub fn line_length(text: &str, row: usize, encoding: PositionEncoding) -> u32 {
    let line = text.split('\n').nth(row).unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    match encoding {
        PositionEncoding::Utf8 => line.len() as u32,
        PositionEncoding::Utf16 => line.encode_utf16().count() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: u32, character: u32) -> TextPosition {
        TextPosition { line, character }
    }

    #[test]
    fn edits_in_utf16_reach_the_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.rs");
        std::fs::write(&file, "fn alpha() {}\n").unwrap();
        let index = Index::new(WalkOptions::default());
        let root = index.add_root(dir.path()).unwrap();
        let paths = index.discover(&root).unwrap();
        assert_eq!(index.load(&root, &paths).loaded, 1);
        let (key, _) = index.resolve(&file).unwrap();
        index.open(&key, Some(Lang::Rust), 1, "// é😀\nfn alpha() {}\n".into());
        // Rename alpha -> beta: the emoji is two UTF-16 units, so line 0 is 5 units long.
        index
            .change(
                &key,
                2,
                &[TextChange {
                    range: Some((pos(1, 3), pos(1, 8))),
                    text: "beta".into(),
                }],
                PositionEncoding::Utf16,
            )
            .unwrap();
        let snapshot = index.snapshot(None);
        assert_eq!(snapshot.len(), 1);
        assert!(snapshot[0].from_buffer);
        assert_eq!(snapshot[0].text, "// é😀\nfn beta() {}\n");
        assert!(
            snapshot[0]
                .chunks
                .iter()
                .any(|c| c.name.as_deref() == Some("beta"))
        );
        index.close(&key);
        assert_eq!(index.snapshot(None)[0].text, "fn alpha() {}\n");
    }

    #[test]
    fn paths_outside_the_roots_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let root_dir = outer.path().join("ws");
        std::fs::create_dir(&root_dir).unwrap();
        std::fs::write(outer.path().join("secret.rs"), "fn s() {}").unwrap();
        let index = Index::new(WalkOptions::default());
        index.add_root(&root_dir).unwrap();
        let err = index.resolve(&outer.path().join("secret.rs")).unwrap_err();
        assert!(matches!(err, IndexError::OutsideRoots { .. }), "{err}");
        let err = index.resolve(&root_dir.join("../secret.rs")).unwrap_err();
        assert!(matches!(err, IndexError::OutsideRoots { .. }), "{err}");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outer.path().join("secret.rs"), root_dir.join("link.rs"))
                .unwrap();
            let err = index.resolve(&root_dir.join("link.rs")).unwrap_err();
            assert!(matches!(err, IndexError::OutsideRoots { .. }), "{err}");
            // Through the symlink to a file that does not exist: the same answer.
            std::os::unix::fs::symlink(outer.path(), root_dir.join("up")).unwrap();
            let missing = index.resolve(&root_dir.join("up/nope.rs")).unwrap_err();
            assert!(
                matches!(missing, IndexError::OutsideRoots { .. }),
                "{missing}"
            );
        }
        // A file that does not exist yet, inside the root, resolves.
        assert!(index.resolve(&root_dir.join("new/file.rs")).is_ok());
    }

    /// Sets a file's modification time `secs_ago` seconds back: stamps compare times, and a
    /// test must not depend on the file system's timestamp resolution.
    fn age(path: &Path, secs_ago: u64) {
        let when = SystemTime::now() - std::time::Duration::from_secs(secs_ago);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn write_aged(path: &Path, text: &str, secs_ago: u64) {
        std::fs::write(path, text).unwrap();
        age(path, secs_ago);
    }

    fn indexed(dir: &Path) -> (Index, Root) {
        let index = Index::new(WalkOptions::default());
        let root = index.add_root(dir).unwrap();
        let paths = index.discover(&root).unwrap();
        index.load(&root, &paths);
        (index, root)
    }

    fn text_of(index: &Index, key: &Path) -> Option<String> {
        index
            .snapshot(None)
            .iter()
            .find(|f| f.abs_path == key)
            .map(|f| f.text.clone())
    }

    #[test]
    fn refresh_rechunks_only_new_and_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        write_aged(&base.join("a.py"), "def a():\n    return 1\n", 3600);
        write_aged(&base.join("b.py"), "def b():\n    return 2\n", 3600);
        let index = Index::new(WalkOptions::default());
        let root = index.add_root(&base).unwrap();
        let first = index.refresh(&root).unwrap();
        assert_eq!((first.files, first.rechunked), (2, 2));
        let again = index.refresh(&root).unwrap();
        assert_eq!((again.files, again.rechunked, again.removed), (2, 0, 0));
        write_aged(
            &base.join("b.py"),
            "def b():\n    return 2\n\ndef c():\n    return 3\n",
            1800,
        );
        std::fs::remove_file(base.join("a.py")).unwrap();
        write_aged(&base.join("n.py"), "def n():\n    return 4\n", 1800);
        let changed = index.refresh(&root).unwrap();
        assert_eq!(
            (changed.files, changed.rechunked, changed.removed),
            (2, 2, 1)
        );
        let files = index.snapshot(None);
        assert_eq!(files[0].rel_path, "b.py");
        assert!(files[0].text.contains("def c"));
        assert_eq!(files[1].rel_path, "n.py");

        // A file the walk keeps but the read refuses is not read again while unchanged,
        // and keeps its reason.
        let blob = base.join("blob.py");
        std::fs::write(&blob, b"def x():\0\0\0\n").unwrap();
        age(&blob, 1800);
        assert_eq!(index.refresh(&root).unwrap().rechunked, 1);
        let unchanged = index.refresh(&root).unwrap();
        assert_eq!((unchanged.rechunked, unchanged.files), (0, 2));
        assert_eq!(
            index.skip_reason(&root.path, "blob.py").as_deref(),
            Some("binary file")
        );
        write_aged(&blob, "def x():\n    return 0\n", 900);
        let readable = index.refresh(&root).unwrap();
        assert_eq!((readable.rechunked, readable.files), (1, 3));
        assert_eq!(index.skip_reason(&root.path, "blob.py"), None);
    }

    #[test]
    fn a_file_changed_on_disk_is_read_again_at_the_next_query() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let (a, b) = (base.join("a.py"), base.join("b.py"));
        write_aged(&a, "def alpha():\n    return 1\n", 3600);
        write_aged(&b, "def bravo():\n    return 2\n", 3600);
        let (index, _) = indexed(&base);
        // Nothing changed: one stat per file, no read.
        assert_eq!(index.reload_changed(None), 0);
        // The same length, new text, and no event: only the stamp tells.
        write_aged(&a, "def omega():\n    return 1\n", 1800);
        assert_eq!(index.reload_changed(None), 1);
        assert!(text_of(&index, &a).unwrap().contains("omega"));
        // Only the files under `under` are looked at.
        write_aged(&a, "def gamma():\n    return 1\n", 900);
        assert_eq!(index.reload_changed(Some(std::slice::from_ref(&b))), 0);
        assert_eq!(index.reload_changed(Some(std::slice::from_ref(&a))), 1);
        // Written just now, twice, at the same length: a time within the file system's
        // resolution of the read is not trusted, so each version is read.
        std::fs::write(&b, "def delta():\n    return 2\n").unwrap();
        index.reload_changed(None);
        assert!(text_of(&index, &b).unwrap().contains("delta"));
        std::fs::write(&b, "def kappa():\n    return 2\n").unwrap();
        index.reload_changed(None);
        assert!(text_of(&index, &b).unwrap().contains("kappa"));
        // Deleted outside the editor: it leaves the index.
        std::fs::remove_file(&a).unwrap();
        index.reload_changed(None);
        assert_eq!(text_of(&index, &a), None);
        assert_eq!(index.counts().0, 1);
    }

    #[test]
    fn scopes_skips_and_outside_paths() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let root_dir = base.join("ws");
        std::fs::create_dir_all(root_dir.join("src/net")).unwrap();
        std::fs::write(
            root_dir.join("src/net/retry.py"),
            "def retry():\n    pass\n",
        )
        .unwrap();
        std::fs::write(
            root_dir.join("src/network.py"),
            "def connect():\n    pass\n",
        )
        .unwrap();
        std::fs::write(root_dir.join("deploy.pem"), "TOKEN = 1\n").unwrap();
        std::fs::write(base.join("secret.py"), "def s():\n    pass\n").unwrap();
        let (index, root) = indexed(&root_dir);
        // A scope is a directory by whole components: src/net holds no src/network.py.
        let (net, kind) = resolve_in(&root, "src/net").unwrap();
        assert_eq!(kind, Kind::Dir);
        let scoped = index.snapshot(Some(std::slice::from_ref(&net)));
        let names: Vec<&str> = scoped.iter().map(|f| f.rel_path.as_str()).collect();
        assert_eq!(names, ["src/net/retry.py"]);
        // What the walk left out, with its reason.
        let why = index.skip_reason(&root.path, "deploy.pem").unwrap();
        assert!(why.contains("secrets"), "{why}");
        // Outside, existing or not, through `..` or an absolute path: one error.
        for raw in [
            "../secret.py",
            "../nope.py",
            base.join("secret.py").to_str().unwrap(),
        ] {
            let err = resolve_in(&root, raw).unwrap_err();
            assert!(
                matches!(err, IndexError::OutsideRoots { .. }),
                "{raw}: {err}"
            );
        }
        assert!(matches!(
            resolve_in(&root, "a\0b"),
            Err(IndexError::Path(PathError::Nul { .. }))
        ));
        assert_eq!(resolve_in(&root, "src/new.py").unwrap().1, Kind::Missing);
    }

    #[test]
    fn read_once_reads_what_the_servers_index_reads() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(base.join("sub")).unwrap();
        std::fs::write(base.join("a.py"), "def a():\n    return 1\n").unwrap();
        std::fs::write(base.join("sub/b.rs"), "fn b() {}\n").unwrap();
        std::fs::write(base.join("deploy.pem"), "def p():\n    pass\n").unwrap();
        std::fs::write(base.join("blob.py"), b"def x():\0\0\n").unwrap();
        std::fs::write(base.join("odd.py"), b"def odd():\n    return '\xff'\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("a.py", base.join("alias.py")).unwrap();

        let once = read_once(&base, &WalkOptions::default()).unwrap();
        let (index, root) = indexed(&base);
        let served = index.snapshot(None);
        let rels = |files: Vec<(&str, &str)>| {
            files
                .into_iter()
                .map(|(p, t)| format!("{p}={t}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rels(
                once.files
                    .iter()
                    .map(|f| (f.path.as_str(), f.text.as_str()))
                    .collect()
            ),
            rels(
                served
                    .iter()
                    .map(|f| (f.rel_path.as_str(), f.text.as_str()))
                    .collect()
            ),
        );
        // The file behind the symlink once, under its real path.
        let names: Vec<&str> = once.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["a.py", "odd.py", "sub/b.rs"]);
        assert_eq!(once.skipped, index.skipped(&root.path));
        let skipped: Vec<&str> = once.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(skipped, ["blob.py", "deploy.pem"]);
        let warned: Vec<&str> = once.warnings.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(warned, ["odd.py"]);

        // A file named explicitly is read under its own name, the walk's name rules aside.
        let named = read_once(&base.join("deploy.pem"), &WalkOptions::default()).unwrap();
        assert_eq!(named.files.len(), 1);
        assert_eq!(named.files[0].path, "deploy.pem");
        assert!(matches!(
            read_once(&base.join("nope"), &WalkOptions::default()),
            Err(WalkError::NotFound { .. })
        ));
    }

    #[test]
    fn utf8_offsets_clamp_to_the_line() {
        let text = "ab\ncd\n";
        assert_eq!(
            byte_offset(text, pos(1, 1), PositionEncoding::Utf8),
            Some(4)
        );
        assert_eq!(
            byte_offset(text, pos(1, 9), PositionEncoding::Utf8),
            Some(5)
        );
        assert_eq!(byte_offset(text, pos(5, 0), PositionEncoding::Utf8), None);
    }
}
