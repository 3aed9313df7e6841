//! Walking a workspace and reading one file of it: which files are read, which are skipped
//! and why, and how one is read (confined, decoded, redacted, chunked). The one index
//! ([`crate::index`]) walks and reads through these, in parallel, for every surface; with
//! [`crate::confine`] (through which every file is read) the only modules of this crate that
//! touch the disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::WalkBuilder;
use ignore::overrides::OverrideBuilder;
use serde::Serialize;

use crate::chunk::Chunk;
use crate::confine::{ReadError, RootDir};
use crate::lang::Lang;
use crate::secrets::{self, Redaction};
use crate::source::chunk_source;

pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

/// File names that likely hold secrets: never read unless the user names them explicitly.
/// Matched case-insensitively (`SERVER.PEM`), against a symlink's own name and its target's
/// (`deploy_key.txt -> ../id_rsa`).
const SECRET_GLOBS: &[&str] = &[
    ".env",
    ".env.*",
    "*.env",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "credentials",
    "credentials.*",
    "*credentials*.json",
    ".netrc",
    "netrc*",
    "_netrc",
    ".pgpass",
    ".htpasswd",
    "*.kdbx",
    "secrets.y*ml",
    "service-account*.json",
];

/// Generated lock files: large, and useless as context.
const LOCK_FILES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "Pipfile.lock",
    "uv.lock",
    "Gemfile.lock",
    "composer.lock",
    "go.sum",
    "bun.lockb",
];

#[derive(Clone, Debug)]
pub struct WalkOptions {
    /// Files larger than this are skipped.
    pub max_file_bytes: u64,
    /// Walk hidden files and directories (`.github/`, `.eslintrc.js`).
    pub hidden: bool,
    /// Extra gitignore-style globs to leave out.
    pub ignore_globs: Vec<String>,
    /// Only these languages, if set.
    pub langs: Option<Vec<Lang>>,
    /// Replace secrets found in file text with `[REDACTED:<rule>]` ([`crate::secrets`]).
    pub redact: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            hidden: false,
            ignore_globs: Vec::new(),
            langs: None,
            redact: true,
        }
    }
}

/// A file the walk saw but did not chunk, or chunked with a caveat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Relative to the workspace root.
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct FileChunks {
    /// Relative to the workspace root, with `/` separators.
    pub path: String,
    pub abs_path: PathBuf,
    pub lang: Lang,
    pub text: String,
    pub chunks: Vec<Chunk>,
    /// Set when the file was read with a caveat (invalid UTF-8 replaced, secrets redacted).
    pub warning: Option<String>,
    /// Secrets replaced in `text` (empty when redaction is off).
    pub redactions: Vec<Redaction>,
}

/// One path read once ([`crate::index::read_once`]): its files in path order, what the walk
/// or a read left out, and the files read with a caveat.
#[derive(Debug, Default)]
pub struct Workspace {
    pub files: Vec<FileChunks>,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<Skipped>,
    /// Files whose chunks came from a chunk store ([`crate::stored`]) rather than a parse.
    pub from_store: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: no such file or directory (check the path)")]
    NotFound { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "invalid ignore glob {glob:?}: {message} (use gitignore syntax, e.g. `target/` or `*.min.js`)"
    )]
    BadGlob { glob: String, message: String },
}

/// Path of `path` relative to `root`, `/`-separated.
pub fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let text = rel.to_string_lossy().replace('\\', "/");
    if text.is_empty() {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        text
    }
}

/// The files under `root` to read, sorted, and the ones left out with a reason.
pub fn discover(
    root: &Path,
    options: &WalkOptions,
) -> Result<(Vec<PathBuf>, Vec<Skipped>), WalkError> {
    let meta = fs::metadata(root).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => WalkError::NotFound {
            path: root.to_path_buf(),
        },
        _ => WalkError::Io {
            path: root.to_path_buf(),
            source,
        },
    })?;
    if meta.is_file() {
        return Ok((vec![root.to_path_buf()], Vec::new()));
    }
    let canonical_root = fs::canonicalize(root).map_err(|source| WalkError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let secrets = globset(SECRET_GLOBS)?;
    let mut overrides = OverrideBuilder::new(root);
    for glob in &options.ignore_globs {
        let negated = format!("!{}", glob.trim_start_matches('!'));
        overrides.add(&negated).map_err(|e| WalkError::BadGlob {
            glob: glob.clone(),
            message: e.to_string(),
        })?;
    }
    let overrides = overrides.build().map_err(|e| WalkError::BadGlob {
        glob: options.ignore_globs.join(", "),
        message: e.to_string(),
    })?;

    let skipped = Arc::new(Mutex::new(Vec::new()));
    let escapes = Arc::clone(&skipped);
    let filter_root = canonical_root.clone();
    let display_root = root.to_path_buf();
    let walker = WalkBuilder::new(root)
        .hidden(!options.hidden)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(true)
        .require_git(false)
        .ignore(true)
        .parents(true)
        .add_custom_ignore_filename(".ctxzipignore")
        .follow_links(true)
        .overrides(overrides)
        .filter_entry(move |entry| {
            // A repository's own metadata (remotes with tokens in `.git/config`, hooks,
            // objects) is never context, even under --hidden.
            if entry.depth() > 0 && entry.file_name() == ".git" {
                return false;
            }
            if !entry.path_is_symlink() {
                return true;
            }
            // Never leave the workspace through a symlink.
            let inside = fs::canonicalize(entry.path())
                .map(|target| target.starts_with(&filter_root))
                .unwrap_or(false);
            if !inside && let Ok(mut skipped) = escapes.lock() {
                skipped.push(Skipped {
                    path: relative(&display_root, entry.path()),
                    reason: "symlink to outside the workspace (or dangling): not followed".into(),
                });
            }
            inside
        })
        .build();

    let mut paths = Vec::new();
    let mut own_skipped = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                own_skipped.push(walk_error(root, &err));
                continue;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let is_symlink = entry.path_is_symlink();
        let path = entry.into_path();
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let rel = relative(root, &path);
        // A symlink is judged by its target's name too: `deploy_key.txt -> ../id_rsa`.
        let target_is_secret = is_symlink
            && fs::canonicalize(&path)
                .ok()
                .and_then(|target| target.file_name().map(|n| secrets.is_match(n)))
                .unwrap_or(false);
        if secrets.is_match(file_name) || target_is_secret {
            own_skipped.push(Skipped {
                path: rel,
                reason: "may hold secrets: ignored by default (pass the file path explicitly to include it)".into(),
            });
            continue;
        }
        if LOCK_FILES.contains(&file_name) {
            own_skipped.push(Skipped {
                path: rel,
                reason: "generated lock file".into(),
            });
            continue;
        }
        if let Some(langs) = &options.langs
            && !langs.contains(&Lang::from_path(&path))
        {
            continue;
        }
        paths.push(path);
    }
    paths.sort();
    paths.dedup();
    let mut skipped = std::mem::take(&mut *skipped.lock().unwrap_or_else(|e| e.into_inner()));
    skipped.append(&mut own_skipped);
    Ok((paths, skipped))
}

fn walk_error(root: &Path, err: &ignore::Error) -> Skipped {
    let mut path = None;
    let mut loop_found = false;
    let mut current = err;
    loop {
        match current {
            ignore::Error::WithPath { path: p, err } => {
                path.get_or_insert_with(|| p.clone());
                current = err;
            }
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                current = err;
            }
            ignore::Error::Loop { child, .. } => {
                path.get_or_insert_with(|| child.clone());
                loop_found = true;
                break;
            }
            _ => break,
        }
    }
    Skipped {
        path: path.map(|p| relative(root, &p)).unwrap_or_default(),
        reason: if loop_found {
            "symlink loop: not followed".into()
        } else {
            format!("unreadable: {err}")
        },
    }
}

/// A case-insensitive set of `globs` (file systems and users disagree about case).
fn globset(globs: &[&str]) -> Result<GlobSet, WalkError> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        let built = GlobBuilder::new(glob).case_insensitive(true).build();
        builder.add(built.map_err(|e| WalkError::BadGlob {
            glob: glob.to_string(),
            message: e.to_string(),
        })?);
    }
    builder.build().map_err(|e| WalkError::BadGlob {
        glob: globs.join(", "),
        message: e.to_string(),
    })
}

/// One file read and ready to chunk: the text every surface shows (decoded, redacted).
#[derive(Clone, Debug)]
pub struct FileText {
    /// Relative to the workspace root, with `/` separators.
    pub path: String,
    pub abs_path: PathBuf,
    pub lang: Lang,
    pub text: String,
    /// Set when the file was read with a caveat (invalid UTF-8 replaced, secrets redacted).
    pub warning: Option<String>,
    /// Secrets replaced in `text` (empty when redaction is off).
    pub redactions: Vec<Redaction>,
}

impl FileText {
    /// The file with its chunks (of `text`).
    pub fn with_chunks(self, chunks: Vec<Chunk>) -> FileChunks {
        FileChunks {
            path: self.path,
            abs_path: self.abs_path,
            lang: self.lang,
            text: self.text,
            chunks,
            warning: self.warning,
            redactions: self.redactions,
        }
    }
}

/// Reads (confined to `root`) and chunks one file, or says why it is left out.
pub fn load_file(
    root: &RootDir,
    path: &Path,
    rel: String,
    options: &WalkOptions,
) -> Result<FileChunks, Skipped> {
    let file = read_file(root, path, rel, options)?;
    let chunks = chunk_source(file.lang, &file.text);
    Ok(file.with_chunks(chunks))
}

/// Reads (confined to `root`) one file as [`load_file`] does, without chunking it, or says
/// why it is left out.
pub fn read_file(
    root: &RootDir,
    path: &Path,
    rel: String,
    options: &WalkOptions,
) -> Result<FileText, Skipped> {
    let skip = |reason: String| Skipped {
        path: rel.clone(),
        reason,
    };
    let bytes = root
        .read_capped(path, options.max_file_bytes)
        .map_err(|err| {
            skip(match err {
                ReadError::NotFound => "deleted during the walk".into(),
                ReadError::Outside => {
                    "symlink to outside the workspace (or dangling): not followed".into()
                }
                ReadError::NotRegular => "not a regular file".into(),
                ReadError::TooLarge { .. } => format!(
                    "larger than {} (raise it with --max-file-size)",
                    human_bytes(options.max_file_bytes)
                ),
                ReadError::Io(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                    "unreadable: permission denied".into()
                }
                ReadError::Io(err) => format!("unreadable: {err}"),
            })
        })?;
    let lang = Lang::from_path(path);
    let (text, mut warning) = decode(bytes).map_err(skip)?;
    if let Some(reason) = looks_minified(&text) {
        return Err(skip(reason));
    }
    // Redacted before chunking: every surface that shows this file's text shows the
    // redacted text, and chunk byte ranges are ranges of it.
    let (text, redactions) = if options.redact {
        secrets::redact(text)
    } else {
        (text, Vec::new())
    };
    if !redactions.is_empty() {
        let note = redaction_warning(&redactions);
        warning = Some(match warning {
            Some(earlier) => format!("{earlier}; {note}"),
            None => note,
        });
    }
    Ok(FileText {
        path: rel,
        abs_path: path.to_path_buf(),
        lang,
        text,
        warning,
        redactions,
    })
}

/// The warning for a file whose secrets were redacted, naming the way to turn it off.
pub fn redaction_warning(redactions: &[Redaction]) -> String {
    format!(
        "{} (turn redaction off with --no-redact / \"redact\": false)",
        secrets::summary(redactions)
    )
}

/// Text of a file, or why it is not text. Invalid UTF-8 is replaced, with a warning.
pub fn decode(bytes: Vec<u8>) -> Result<(String, Option<String>), String> {
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return Err("binary file".into());
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok((text, None)),
        Err(err) => {
            let bytes = err.into_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let bad = text.matches('\u{FFFD}').count();
            if bad * 20 > text.chars().count().max(1) {
                return Err("binary file (mostly not UTF-8)".into());
            }
            Ok((
                text,
                Some(format!(
                    "not valid UTF-8: {bad} invalid sequence(s) replaced with U+FFFD"
                )),
            ))
        }
    }
}

/// Minified or generated one-line files cost many tokens and explain nothing.
fn looks_minified(text: &str) -> Option<String> {
    if text.len() < 4096 {
        return None;
    }
    let n_lines = text.lines().count().max(1);
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    let average = text.len() / n_lines;
    (average > 300 || longest > 32 * 1024)
        .then(|| format!("looks minified or generated ({n_lines} lines, longest {longest} bytes)"))
}

pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else if bytes >= 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}
