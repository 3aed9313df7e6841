//! The live workspace index: every file the walk keeps, chunked, and re-chunked only when its
//! modification time or size changes between calls.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use ctxzip_chunker::confine::RootDir;
use ctxzip_chunker::workspace::{self, FileChunks, Skipped, WalkError, WalkOptions};
use rayon::prelude::*;
use serde::Serialize;

/// What a file looked like when it was chunked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(path: &std::path::Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

struct Entry {
    stamp: Stamp,
    file: Arc<FileChunks>,
}

/// The chunked files under one canonical root.
pub struct Index {
    root: PathBuf,
    options: WalkOptions,
    files: BTreeMap<String, Entry>,
    skipped: Vec<Skipped>,
}

/// What one refresh did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RefreshReport {
    pub files: usize,
    pub chunks: usize,
    /// Files read and chunked by this refresh (new or changed).
    pub rechunked: usize,
    pub removed: usize,
    pub skipped: usize,
    pub elapsed_ms: f64,
}

impl Index {
    pub fn new(root: PathBuf, options: WalkOptions) -> Index {
        Index {
            root,
            options,
            files: BTreeMap::new(),
            skipped: Vec::new(),
        }
    }

    /// Walks the root again and re-chunks new and changed files. Blocking.
    pub fn refresh(&mut self) -> Result<RefreshReport, WalkError> {
        let started = Instant::now();
        let (paths, mut skipped) = workspace::discover(&self.root, &self.options)?;
        let mut keep = BTreeMap::new();
        let mut stale = Vec::new();
        for path in paths {
            let rel = workspace::relative(&self.root, &path);
            let stamp = Stamp::of(&path);
            match (self.files.remove(&rel), stamp) {
                (Some(entry), Some(stamp)) if entry.stamp == stamp => {
                    keep.insert(rel, entry);
                }
                (_, stamp) => stale.push((rel, path, stamp)),
            }
        }
        let removed = self.files.len();
        let rechunked = stale.len();
        let options = &self.options;
        // Every read is confined to the root: a file swapped for a symlink since the walk
        // saw it is skipped, not followed out.
        let root_dir = RootDir::open(&self.root).map_err(|source| WalkError::Io {
            path: self.root.clone(),
            source,
        })?;
        let loaded: Vec<_> = stale
            .into_par_iter()
            .map(|(rel, path, stamp)| {
                let result = workspace::load_file(&root_dir, &path, rel.clone(), options);
                (rel, stamp, result)
            })
            .collect();
        for (rel, stamp, result) in loaded {
            match (result, stamp) {
                (Ok(file), Some(stamp)) => {
                    keep.insert(
                        rel,
                        Entry {
                            stamp,
                            file: Arc::new(file),
                        },
                    );
                }
                // Changed while we looked: read it again next time.
                (Ok(_), None) => {}
                (Err(skip), _) => skipped.push(skip),
            }
        }
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        self.files = keep;
        self.skipped = skipped;
        Ok(RefreshReport {
            files: self.files.len(),
            chunks: self.files.values().map(|e| e.file.chunks.len()).sum(),
            rechunked,
            removed,
            skipped: self.skipped.len(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The indexed files in path order; cheap (shared).
    pub fn snapshot(&self) -> Vec<Arc<FileChunks>> {
        self.files.values().map(|e| Arc::clone(&e.file)).collect()
    }

    /// Why `rel` is not indexed, if the walk saw and skipped it.
    pub fn skip_reason(&self, rel: &str) -> Option<&str> {
        self.skipped
            .iter()
            .find(|s| s.path == rel)
            .map(|s| s.reason.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_rechunks_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("a.py"), "def a():\n    return 1\n").unwrap();
        std::fs::write(root.join("b.py"), "def b():\n    return 2\n").unwrap();
        let mut index = Index::new(root.clone(), WalkOptions::default());
        let first = index.refresh().unwrap();
        assert_eq!((first.files, first.rechunked), (2, 2));
        let again = index.refresh().unwrap();
        assert_eq!((again.files, again.rechunked, again.removed), (2, 0, 0));
        std::fs::write(
            root.join("b.py"),
            "def b():\n    return 2\n\ndef c():\n    return 3\n",
        )
        .unwrap();
        std::fs::remove_file(root.join("a.py")).unwrap();
        let changed = index.refresh().unwrap();
        assert_eq!(
            (changed.files, changed.rechunked, changed.removed),
            (1, 1, 1)
        );
        let files = index.snapshot();
        assert_eq!(files[0].path, "b.py");
        assert!(files[0].text.contains("def c"));
    }
}
