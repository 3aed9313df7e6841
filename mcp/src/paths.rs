//! The workspace boundary: turning the paths an agent sends into paths relative to the canonical
//! workspace root, and refusing any that lead outside it (`..`, absolute paths, symlinks).

use std::path::{Component, Path, PathBuf};

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

/// Resolves `raw` (relative to `root`, or absolute) to a path inside `root`, which must be
/// canonical. The error is a sentence an agent can act on.
pub fn resolve_inside(root: &Path, raw: &str) -> Result<InsidePath, String> {
    let trimmed = raw.trim();
    let trimmed = trimmed.strip_prefix("file://").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err("empty path: give a file or directory relative to the workspace root".into());
    }
    let given = Path::new(trimmed);
    let outside = || {
        format!(
            "{raw}: outside the workspace root {}; give a path relative to it, e.g. src/main.rs",
            root.display()
        )
    };
    let mut lexical = normalize(&if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(given)
    });
    if !lexical.starts_with(root) {
        // An absolute path may name the root through a symlink (e.g. /tmp vs /private/tmp).
        match std::fs::canonicalize(given) {
            Ok(canonical) if given.is_absolute() && canonical.starts_with(root) => {
                lexical = canonical
            }
            _ => return Err(outside()),
        }
    }
    let canonical = std::fs::canonicalize(&lexical).map_err(|_| {
        format!(
            "{raw}: no such file or directory in the workspace {}; paths are relative to it",
            root.display()
        )
    })?;
    if !canonical.starts_with(root) {
        return Err(format!(
            "{raw}: leads through a symlink to {}, outside the workspace root {}",
            canonical.display(),
            root.display()
        ));
    }
    let rel = lexical
        .strip_prefix(root)
        .map_err(|_| outside())?
        .to_string_lossy()
        .replace('\\', "/");
    Ok(InsidePath {
        rel,
        is_dir: canonical.is_dir(),
    })
}

/// `FILE` or `FILE:LINE` (1-based line).
pub fn split_line(spec: &str) -> Result<(&str, Option<u32>), String> {
    match spec.rsplit_once(':') {
        Some((file, line)) if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) => {
            match line.parse::<u32>() {
                Ok(n) if n >= 1 => Ok((file, Some(n))),
                _ => Err(format!(
                    "focus_file {spec:?}: the line must be a number from 1, e.g. src/lib.rs:42"
                )),
            }
        }
        _ => Ok((spec, None)),
    }
}

/// Removes `.` and applies `..` without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
        assert!(err.contains("outside the workspace root"), "{err}");
        let err = resolve_inside(&root, "/etc/passwd").unwrap_err();
        assert!(err.contains("outside the workspace root"), "{err}");
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
        assert!(err.contains("symlink"), "{err}");
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
