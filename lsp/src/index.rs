//! The live workspace index: the files the workspace walk keeps, read from disk, with open
//! editor buffers (kept current by incremental reparse) shadowing their disk text. Plain
//! paths, byte offsets and line/column positions: no LSP types live here.
//!
//! Which files may be read is decided here too, by the chunker's one confinement rule
//! (`ctxzip_chunker::confine`): only files under a workspace root, reached without leaving
//! it by `..` or a symlink; every read is confined to the root's directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ctxzip_chunker::confine::{self, RootDir};
use ctxzip_chunker::secrets::{self, Redaction};
use ctxzip_chunker::workspace::{self, WalkError, WalkOptions};
use ctxzip_chunker::{Chunk, EditError, Lang, Skipped, SourceFile};
use dashmap::DashMap;
use rayon::prelude::*;

/// One file as a query sees it: disk text, or the unsaved buffer when the file is open.
#[derive(Debug)]
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
    /// not anything is there: one message, so it tells nothing about outside files.
    #[error(
        "{}: only files under the workspace folders can be read (open the folder that holds it as a workspace folder)",
        path.display()
    )]
    OutsideRoots { path: PathBuf },
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
}

#[derive(Default)]
pub struct Index {
    roots: RwLock<Vec<Root>>,
    files: DashMap<PathBuf, Arc<FileSnapshot>>,
    buffers: DashMap<PathBuf, Buffer>,
    walk: RwLock<WalkOptions>,
}

impl Index {
    pub fn new(walk: WalkOptions) -> Index {
        Index {
            walk: RwLock::new(walk),
            ..Index::default()
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
        self.files.retain(|key, _| {
            !key.starts_with(&path) || remaining.iter().any(|r| key.starts_with(r))
        });
    }

    /// The root holding `path` and the canonical key of `path`, or why it may not be read.
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
            if let Ok(found) = confine::resolve(&root.path, &raw) {
                let key = if found.rel.is_empty() {
                    root.path.clone()
                } else {
                    root.path.join(&found.rel)
                };
                return Ok((key, root.clone()));
            }
        }
        Err(IndexError::OutsideRoots {
            path: path.to_path_buf(),
        })
    }

    /// The files the walk keeps under `root` (no reading).
    pub fn discover(&self, root: &Root) -> Result<(Vec<PathBuf>, Vec<Skipped>), IndexError> {
        Ok(workspace::discover(&root.path, &self.walk_options())?)
    }

    /// Reads and chunks `paths` (under `root`) in parallel and puts them in the index.
    pub fn load(&self, root: &Root, paths: &[PathBuf]) -> LoadCounts {
        let options = self.walk_options();
        let Ok(root_dir) = RootDir::open(&root.path) else {
            // The root itself is gone: nothing under it can be read.
            return LoadCounts {
                loaded: 0,
                skipped: paths.len(),
            };
        };
        let results: Vec<Option<FileSnapshot>> = paths
            .par_iter()
            .map(|path| load_one(root, &root_dir, path, &options))
            .collect();
        let mut counts = LoadCounts::default();
        for file in results {
            match file {
                Some(file) => {
                    counts.loaded += 1;
                    self.files.insert(file.abs_path.clone(), Arc::new(file));
                }
                None => counts.skipped += 1,
            }
        }
        counts
    }

    /// Walks `root` again: loads files that appeared, drops files that are gone. Returns
    /// (added, removed).
    pub fn rescan(&self, root: &Root) -> Result<(usize, usize), IndexError> {
        let (paths, _) = self.discover(root)?;
        let keys: std::collections::HashSet<PathBuf> =
            paths.iter().map(|p| canonicalize_lenient(p)).collect();
        let new: Vec<PathBuf> = paths
            .into_iter()
            .filter(|p| !self.files.contains_key(&canonicalize_lenient(p)))
            .collect();
        let before = self.files.len();
        self.files
            .retain(|key, file| file.root != root.path || keys.contains(key));
        let removed = before - self.files.len();
        let added = self.load(root, &new).loaded;
        Ok((added, removed))
    }

    /// Reads an indexed file again from disk (after a save or an outside change).
    /// Returns false when the file is not indexed (the walk left it out).
    pub fn reload(&self, key: &Path) -> bool {
        let Some(root) = self.files.get(key).map(|f| f.root.clone()) else {
            return false;
        };
        let Some(root) = self.roots().into_iter().find(|r| r.path == root) else {
            return false;
        };
        let file = RootDir::open(&root.path)
            .ok()
            .and_then(|dir| load_one(&root, &dir, key, &self.walk_options()));
        match file {
            Some(file) => {
                self.files.insert(key.to_path_buf(), Arc::new(file));
            }
            None => {
                self.files.remove(key);
            }
        }
        true
    }

    /// Drops every indexed file of one root (before indexing it again).
    pub fn remove_root_files(&self, root: &Path) {
        self.files.retain(|_, file| file.root != root);
    }

    /// Drops `key` and, when it was a directory, everything under it.
    pub fn remove(&self, key: &Path) -> usize {
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
        ctxzip_chunker::chunk_source(lang, &text)
    };
    FileSnapshot {
        abs_path: disk.abs_path.clone(),
        root: disk.root.clone(),
        rel_path: disk.rel_path.clone(),
        lang,
        text,
        chunks,
        from_buffer: true,
        redactions,
    }
}

fn load_one(
    root: &Root,
    root_dir: &RootDir,
    path: &Path,
    options: &WalkOptions,
) -> Option<FileSnapshot> {
    let abs_path = canonicalize_lenient(path);
    // A symlink inside the workspace may still point out of it.
    if !abs_path.starts_with(&root.path) {
        return None;
    }
    let rel = workspace::relative(&root.path, &abs_path);
    // The read itself is confined too: the check above cannot see a swap that follows it.
    let file = workspace::load_file(root_dir, path, rel, options).ok()?;
    Some(FileSnapshot {
        abs_path,
        root: root.path.clone(),
        rel_path: file.path,
        lang: file.lang,
        text: file.text,
        chunks: file.chunks,
        from_buffer: false,
        redactions: file.redactions,
    })
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
            ctxzip_chunker::lines::utf16_position_to_byte(text, position.line, position.character)
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
        let (paths, _) = index.discover(&root).unwrap();
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
