//! The workspace boundary: turning the paths an agent sends into paths relative to the canonical
//! workspace root, and refusing any that lead outside it (`..`, absolute paths, symlinks), by
//! the chunker's one confinement rule.

use std::path::Path;

use ctxzip_chunker::confine::{self, Kind};

/// A path inside the workspace, `/`-separated and relative to the root; `""` is the root itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsidePath {
    pub rel: String,
    pub is_dir: bool,
}

impl InsidePath {
    /// Whether the indexed file `rel_file` is this path or lies under it.
    pub fn covers(&self, rel_file: &str) -> bool {
        self.rel.is_empty()
            || rel_file == self.rel
            || (rel_file.starts_with(&self.rel) && rel_file[self.rel.len()..].starts_with('/'))
    }
}

/// Resolves `raw` (relative to `root`, or absolute, or a `file://` URI) to a path inside
/// `root`, which must be canonical, by the chunker's one rule (`confine::resolve`). Every
/// path outside the root gets the same error, whatever is there. The error is a sentence an
/// agent can act on.
pub fn resolve_inside(root: &Path, raw: &str) -> Result<InsidePath, String> {
    let found = confine::resolve(root, raw).map_err(|e| e.to_string())?;
    match found.kind {
        Kind::Missing => Err(format!(
            "{raw:?}: no such file or directory in the workspace {}; paths are relative to it",
            root.display()
        )),
        kind => Ok(InsidePath {
            rel: found.rel,
            is_dir: kind == Kind::Dir,
        }),
    }
}

/// `FILE` or `FILE:LINE` (1-based line): the one focus rule, `confine::split_focus_line`.
pub fn split_line(spec: &str) -> Result<(&str, Option<u32>), String> {
    confine::split_focus_line(spec)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("src/net")).unwrap();
        std::fs::write(root.join("src/net/retry.rs"), "fn retry() {}\n").unwrap();
        (dir, root)
    }

    #[test]
    fn relative_and_absolute_paths_inside_resolve() {
        let (_dir, root) = root();
        let file = resolve_inside(&root, "src/net/retry.rs").unwrap();
        assert_eq!(file.rel, "src/net/retry.rs");
        assert!(!file.is_dir);
        let dir = resolve_inside(&root, "./src/../src/net/").unwrap();
        assert_eq!(dir.rel, "src/net");
        assert!(dir.is_dir);
        let abs = root.join("src").display().to_string();
        assert_eq!(resolve_inside(&root, &abs).unwrap().rel, "src");
        assert_eq!(resolve_inside(&root, ".").unwrap().rel, "");
    }

    #[test]
    fn escapes_are_refused() {
        let (_dir, root) = root();
        let err = resolve_inside(&root, "../etc/passwd").unwrap_err();
        assert!(err.contains("not inside the workspace root"), "{err}");
        let err = resolve_inside(&root, "/etc/passwd").unwrap_err();
        assert!(err.contains("not inside the workspace root"), "{err}");
        let err = resolve_inside(&root, "src/missing.rs").unwrap_err();
        assert!(err.contains("no such file"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_escapes_are_refused() {
        let (_dir, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        let err = resolve_inside(&root, "link").unwrap_err();
        assert!(err.contains("not inside the workspace root"), "{err}");
        // Nothing about what is (or is not) behind the link.
        let missing = resolve_inside(&root, "link/zz_no_such_file").unwrap_err();
        assert_eq!(
            err.replace("\"link\"", "X"),
            missing.replace("\"link/zz_no_such_file\"", "X")
        );
    }

    #[test]
    fn covers_is_by_whole_components() {
        let dir = InsidePath {
            rel: "src/net".into(),
            is_dir: true,
        };
        assert!(dir.covers("src/net/retry.rs"));
        assert!(!dir.covers("src/network.rs"));
        let all = InsidePath {
            rel: String::new(),
            is_dir: true,
        };
        assert!(all.covers("anything.rs"));
    }

    #[test]
    fn focus_lines() {
        assert_eq!(split_line("src/a.rs:42").unwrap(), ("src/a.rs", Some(42)));
        assert_eq!(split_line("src/a.rs").unwrap(), ("src/a.rs", None));
        assert!(split_line("src/a.rs:0").is_err());
    }
}
