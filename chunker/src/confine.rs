//! Confinement to a workspace root: reading a file so that no symlink, `..` or race can
//! redirect the read outside the root, and the one rule for paths a user or an agent gives
//! (relative, absolute, `file://`, `FILE:LINE`). The CLI walk, the LSP and MCP all read and
//! resolve through here.
//!
//! Symlinks that stay inside the root are followed (the walk follows them, so a workspace
//! that links `lib -> src/lib` reads as it always did); a symlink that leads outside, at any
//! step, is refused. The check and the read are one step: on Linux the kernel resolves the
//! path beneath the root's directory handle (`openat2` with `RESOLVE_BENEATH`), so a file
//! swapped for a symlink after the walk looked at it cannot be followed out. Where `openat2`
//! is missing (Linux before 5.6, seccomp sandboxes, other systems) the file is opened and the
//! opened file is checked instead: its real path must lie under the root and be the very
//! file that was opened (same device and inode), so a swap between the two is caught too.
//! A hard link to an outside file is, to every kernel, a file inside the root: not caught.
//!
//! Every path outside the root gets one error, [`PathError::Outside`], whatever lies there
//! (an existing file, a missing one, a symlink's target): the wording must not tell an agent
//! which outside files exist.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path, at most (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// A workspace root opened for confined reads: paths are resolved beneath it.
#[derive(Debug)]
pub struct RootDir {
    /// The root as the caller spelled it (paths from the walk start with it).
    given: PathBuf,
    canonical: PathBuf,
    /// The root's directory handle, which `openat2` resolves beneath.
    #[cfg(target_os = "linux")]
    dir: Option<std::os::fd::OwnedFd>,
}

/// Why a confined read did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("outside the workspace root: not read")]
    Outside,
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {max_bytes} bytes")]
    TooLarge { max_bytes: u64 },
    #[error("{0}")]
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Io(err),
        }
    }
}

impl RootDir {
    /// Opens `root` (a directory). Paths given to [`RootDir::read_capped`] must lie under it.
    pub fn open(root: &Path) -> io::Result<RootDir> {
        let given = if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root.to_path_buf()
        };
        let canonical = fs::canonicalize(&given)?;
        if !canonical.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", given.display()),
            ));
        }
        #[cfg(target_os = "linux")]
        let dir = {
            use rustix::fs::{Mode, OFlags};
            rustix::fs::open(
                &canonical,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
        };
        Ok(RootDir {
            given,
            canonical,
            #[cfg(target_os = "linux")]
            dir,
        })
    }

    /// The root's canonical path.
    pub fn canonical(&self) -> &Path {
        &self.canonical
    }

    /// `path` (under the root as given or as canonical, or relative to it) as a relative path
    /// of plain names, or `Outside`.
    fn relative_part(&self, path: &Path) -> Result<PathBuf, ReadError> {
        let rel = if let Ok(rel) = path.strip_prefix(&self.canonical) {
            rel
        } else if let Ok(rel) = path.strip_prefix(&self.given) {
            rel
        } else if path.is_relative() && self.given == Path::new(".") {
            path
        } else {
            return Err(ReadError::Outside);
        };
        let mut out = PathBuf::new();
        for component in rel.components() {
            match component {
                Component::Normal(name) => out.push(name),
                Component::CurDir => {}
                _ => return Err(ReadError::Outside),
            }
        }
        if out.as_os_str().is_empty() {
            return Err(ReadError::NotRegular);
        }
        Ok(out)
    }

    /// Opens the regular file at `path` for reading, beneath the root.
    pub fn open_file(&self, path: &Path) -> Result<File, ReadError> {
        let rel = self.relative_part(path)?;
        let file = self.open_beneath(&rel)?;
        if !file.metadata()?.is_file() {
            return Err(ReadError::NotRegular);
        }
        Ok(file)
    }

    /// Reads the regular file at `path`, beneath the root, refusing more than `max_bytes`.
    pub fn read_capped(&self, path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
        let file = self.open_file(path)?;
        let len = file.metadata()?.len();
        if len > max_bytes {
            return Err(ReadError::TooLarge { max_bytes });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        // The file may grow between the size check and the read.
        file.take(max_bytes + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max_bytes {
            return Err(ReadError::TooLarge { max_bytes });
        }
        Ok(bytes)
    }

    #[cfg(target_os = "linux")]
    fn open_beneath(&self, rel: &Path) -> Result<File, ReadError> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        use rustix::io::Errno;
        if let Some(dir) = &self.dir {
            // Non-blocking so that a FIFO swapped in cannot stall the read; no controlling
            // terminal from a tty.
            let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            for _ in 0..4 {
                match rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve) {
                    Ok(fd) => return Ok(File::from(fd)),
                    // A rename raced with the lookup: the kernel asks to try again.
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Err(ReadError::NotFound),
                    Err(Errno::ACCESS) => {
                        return Err(ReadError::Io(io::ErrorKind::PermissionDenied.into()));
                    }
                    Err(Errno::LOOP) => return Err(ReadError::Outside),
                    // EXDEV: the path leaves the root, or an absolute symlink (refused by
                    // RESOLVE_BENEATH even when it points inside). ENOSYS/EPERM: no openat2
                    // here. The checked open below decides both.
                    Err(_) => break,
                }
            }
        }
        self.open_checked(rel)
    }

    #[cfg(not(target_os = "linux"))]
    fn open_beneath(&self, rel: &Path) -> Result<File, ReadError> {
        self.open_checked(rel)
    }

    /// Opens, then checks that the opened file is the file at a real path under the root.
    fn open_checked(&self, rel: &Path) -> Result<File, ReadError> {
        let path = self.canonical.join(rel);
        let file = open_nonblocking(&path)?;
        let real = fs::canonicalize(&path).map_err(|_| ReadError::Outside)?;
        if !real.starts_with(&self.canonical) {
            return Err(ReadError::Outside);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let opened = file.metadata()?;
            let named = fs::metadata(&real).map_err(|_| ReadError::Outside)?;
            if (opened.dev(), opened.ino()) != (named.dev(), named.ino()) {
                // Swapped between the open and the check: the opened file may be anything.
                return Err(ReadError::Outside);
            }
        }
        Ok(file)
    }
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// A user- or agent-given path that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path: give a file or directory relative to the workspace root")]
    Empty,
    #[error(
        "{raw:?}: contains a NUL byte; give a file or directory relative to the workspace root"
    )]
    Nul { raw: String },
    /// The one answer for every path outside the root, existing or not.
    #[error(
        "{raw:?}: not inside the workspace root {}; only files under it can be read (give a path relative to it, e.g. src/main.rs)",
        root.display()
    )]
    Outside { raw: String, root: PathBuf },
}

/// What a path inside the root resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A FIFO, socket or device.
    Other,
    /// Nothing there (yet).
    Missing,
}

/// A path inside the root: its real location, relative, `/`-separated (`""` is the root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub rel: String,
    pub kind: Kind,
}

/// Resolves `raw` against `root` (which must be canonical) by the one rule every surface
/// applies: relative to the root, or absolute under it, or a `file://` URI (percent-decoded);
/// NUL refused; symlinks followed while they stay inside the root; any step that leaves the
/// root (`..` above it, a symlink out, `/proc/self/root/...`) is [`PathError::Outside`]
/// before anything past it is looked at. A plain path is not percent-decoded: `a%2Fb` names
/// a file called that.
pub fn resolve(root: &Path, raw: &str) -> Result<Resolved, PathError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(PathError::Empty);
    }
    let outside = || PathError::Outside {
        raw: raw.to_owned(),
        root: root.to_path_buf(),
    };
    let nul = || PathError::Nul {
        raw: raw.replace('\0', "\\0"),
    };
    if trimmed.contains('\0') {
        return Err(nul());
    }
    let decoded;
    let text = match strip_prefix_ignore_case(trimmed, "file://") {
        Some(rest) => {
            // Only local URIs (`file:///path`): a host names another machine's file.
            let rest = strip_prefix_ignore_case(rest, "localhost").unwrap_or(rest);
            if !rest.starts_with('/') {
                return Err(outside());
            }
            decoded = percent_decode(rest).ok_or_else(outside)?;
            if decoded.contains('\0') {
                return Err(nul());
            }
            decoded.as_str()
        }
        None => trimmed,
    };
    let given = Path::new(text);
    let rel: PathBuf = if given.is_absolute() {
        match given.strip_prefix(root) {
            Ok(rel) => rel.to_path_buf(),
            // The root may be named through a symlink (/tmp vs /private/tmp). The answer
            // is the same `Outside` whether or not the path exists.
            Err(_) => match fs::canonicalize(given) {
                Ok(real) if real.starts_with(root) => real
                    .strip_prefix(root)
                    .map_err(|_| outside())?
                    .to_path_buf(),
                _ => return Err(outside()),
            },
        }
    } else {
        given.to_path_buf()
    };
    walk_beneath(root, &rel).ok_or_else(outside)
}

/// Follows `rel` from `root` one component at a time; `None` as soon as a step leaves it.
fn walk_beneath(root: &Path, rel: &Path) -> Option<Resolved> {
    let mut real = root.to_path_buf();
    let mut pending: Vec<PathBuf> = Vec::new();
    push_front(&mut pending, rel);
    let mut links = 0;
    let mut kind = Kind::Dir;
    while let Some(name) = pending.pop() {
        if name == Path::new("..") {
            if real == root {
                return None;
            }
            real.pop();
            kind = Kind::Dir;
            continue;
        }
        if kind != Kind::Dir {
            // A name under a file or a missing directory: nothing there.
            return finish_missing(root, real, pending, name);
        }
        let candidate = real.join(&name);
        let meta = match fs::symlink_metadata(&candidate) {
            Ok(meta) => meta,
            Err(_) => return finish_missing(root, real, pending, name),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                // A loop inside the root: nothing readable there.
                return finish_missing(root, real, pending, name);
            }
            let target = fs::read_link(&candidate).ok()?;
            if target.is_absolute() {
                // Followed only when it names a place under the root.
                let inner = target.strip_prefix(root).ok()?;
                real = root.to_path_buf();
                push_front(&mut pending, inner);
            } else {
                push_front(&mut pending, &target);
            }
            kind = Kind::Dir;
            continue;
        }
        real = candidate;
        kind = if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
    }
    Some(Resolved {
        rel: rel_string(root, &real),
        kind,
    })
}

/// The rest of a path past a missing component, applied lexically; still never above the root.
fn finish_missing(
    root: &Path,
    mut real: PathBuf,
    mut pending: Vec<PathBuf>,
    name: PathBuf,
) -> Option<Resolved> {
    pending.push(name);
    while let Some(name) = pending.pop() {
        if name == Path::new("..") {
            if real == root {
                return None;
            }
            real.pop();
        } else {
            real.push(name);
        }
    }
    Some(Resolved {
        rel: rel_string(root, &real),
        kind: Kind::Missing,
    })
}

/// Puts the components of `path` (names and `..` only) on the stack so that its first
/// component is popped next.
fn push_front(pending: &mut Vec<PathBuf>, path: &Path) {
    let names: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(PathBuf::from(name)),
            Component::ParentDir => Some(PathBuf::from("..")),
            // `.`, and a root or prefix already handled by the caller.
            _ => None,
        })
        .collect();
    pending.extend(names.into_iter().rev());
}

fn rel_string(root: &Path, real: &Path) -> String {
    real.strip_prefix(root)
        .unwrap_or(Path::new(""))
        .to_string_lossy()
        .replace('\\', "/")
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `%XX` decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `FILE` or `FILE:LINE`, the one focus rule of every surface: LINE counts from 1, so `:0`
/// is refused (not ignored); a suffix that is not all digits is part of the file name.
pub fn split_focus_line(spec: &str) -> Result<(&str, Option<u32>), String> {
    match spec.rsplit_once(':') {
        Some((file, line)) if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) => {
            match line.parse::<u32>() {
                Ok(n) if n >= 1 => Ok((file, Some(n))),
                _ => Err(format!(
                    "{spec:?}: the line must be a number from 1 (lines count from 1), e.g. src/lib.rs:42"
                )),
            }
        }
        _ => Ok((spec, None)),
    }
}

/// Checks a 1-based focus line against the file's text.
pub fn check_focus_line(spec: &str, line: u32, text: &str) -> Result<(), String> {
    let n_lines = text.lines().count().max(1);
    if line as usize > n_lines {
        return Err(format!(
            "{spec:?}: line {line} is past the end of the file ({n_lines} lines)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let root = base.join("ws");
        fs::create_dir_all(root.join("src/net")).unwrap();
        fs::write(root.join("src/net/retry.rs"), "fn retry() {}\n").unwrap();
        fs::write(base.join("secret.txt"), "outside\n").unwrap();
        (dir, base, root)
    }

    fn outside(root: &Path, raw: &str) {
        match resolve(root, raw) {
            Err(PathError::Outside { .. }) => {}
            other => panic!("{raw:?}: expected Outside, got {other:?}"),
        }
    }

    #[test]
    fn paths_inside_resolve_to_their_real_place() {
        let (_dir, _base, root) = root();
        let file = resolve(&root, "src/net/retry.rs").unwrap();
        assert_eq!(
            (file.rel.as_str(), file.kind),
            ("src/net/retry.rs", Kind::File)
        );
        assert_eq!(resolve(&root, "./src/../src/net/").unwrap().rel, "src/net");
        assert_eq!(resolve(&root, ".").unwrap().kind, Kind::Dir);
        let abs = root.join("src").display().to_string();
        assert_eq!(resolve(&root, &abs).unwrap().rel, "src");
        let uri = format!("file://{}/src/n%65t", root.display());
        assert_eq!(resolve(&root, &uri).unwrap().rel, "src/net");
        let missing = resolve(&root, "src/nope.rs").unwrap();
        assert_eq!(
            (missing.rel.as_str(), missing.kind),
            ("src/nope.rs", Kind::Missing)
        );
    }

    #[test]
    fn every_way_out_gets_the_same_error() {
        let (_dir, base, root) = root();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&base, root.join("up")).unwrap();
            std::os::unix::fs::symlink("../secret.txt", root.join("rel_out")).unwrap();
            std::os::unix::fs::symlink("/proc/self/root/etc", root.join("proc_link")).unwrap();
        }
        let forms = [
            "..".to_owned(),
            "../secret.txt".into(),
            "../nope.txt".into(),
            "src/../../secret.txt".into(),
            base.join("secret.txt").display().to_string(),
            base.join("nope.txt").display().to_string(),
            format!("{}/../secret.txt", root.display()),
            format!("file://{}", base.join("secret.txt").display()),
            format!("file://{}/%2E%2E/secret.txt", root.display()),
            "file://otherhost/etc/passwd".into(),
            "/proc/self/root/etc/passwd".into(),
            #[cfg(unix)]
            "up/secret.txt".into(),
            #[cfg(unix)]
            "up/nope.txt".into(),
            #[cfg(unix)]
            "rel_out".into(),
            #[cfg(unix)]
            "proc_link/passwd".into(),
        ];
        for raw in &forms {
            outside(&root, raw);
        }
        // The message names neither what exists there nor a symlink's target.
        let a = resolve(&root, "../secret.txt").unwrap_err().to_string();
        let b = resolve(&root, "../nope.txt").unwrap_err().to_string();
        assert_eq!(
            a.replace("../secret.txt", "X"),
            b.replace("../nope.txt", "X")
        );
        assert!(matches!(
            resolve(&root, "src\0/x"),
            Err(PathError::Nul { .. })
        ));
        assert_eq!(resolve(&root, "  "), Err(PathError::Empty));
        // Not decoded: a literal name, inside.
        assert_eq!(resolve(&root, "%2e%2e").unwrap().kind, Kind::Missing);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_are_followed_and_reads_cannot_leave() {
        let (_dir, base, root) = root();
        std::os::unix::fs::symlink("src/net", root.join("net")).unwrap();
        std::os::unix::fs::symlink(root.join("src"), root.join("abs_src")).unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("leak.rs")).unwrap();
        assert_eq!(
            resolve(&root, "net/retry.rs").unwrap().rel,
            "src/net/retry.rs"
        );
        assert_eq!(resolve(&root, "abs_src/net").unwrap().rel, "src/net");
        let dir = RootDir::open(&root).unwrap();
        let read = |p: &str| dir.read_capped(&root.join(p), 1024);
        assert_eq!(read("net/retry.rs").unwrap(), b"fn retry() {}\n");
        assert_eq!(read("abs_src/net/retry.rs").unwrap(), b"fn retry() {}\n");
        assert!(matches!(read("leak.rs"), Err(ReadError::Outside)));
        assert!(matches!(
            dir.read_capped(&base.join("secret.txt"), 1024),
            Err(ReadError::Outside)
        ));
        assert!(matches!(
            read("src/../../secret.txt"),
            Err(ReadError::Outside)
        ));
        assert!(matches!(read("src"), Err(ReadError::NotRegular)));
        assert!(matches!(read("nope.rs"), Err(ReadError::NotFound)));
        assert!(matches!(
            dir.read_capped(&root.join("src/net/retry.rs"), 4),
            Err(ReadError::TooLarge { .. })
        ));
        // The fallback alone (no openat2) refuses the same escapes.
        assert!(matches!(
            dir.open_checked(Path::new("leak.rs")),
            Err(ReadError::Outside)
        ));
        assert!(dir.open_checked(Path::new("net/retry.rs")).is_ok());
    }

    #[test]
    fn focus_lines_count_from_one() {
        assert_eq!(
            split_focus_line("src/a.rs:42").unwrap(),
            ("src/a.rs", Some(42))
        );
        assert_eq!(split_focus_line("src/a.rs").unwrap(), ("src/a.rs", None));
        assert_eq!(split_focus_line("a:b.rs").unwrap(), ("a:b.rs", None));
        assert!(split_focus_line("src/a.rs:0").is_err());
        assert!(split_focus_line("src/a.rs:99999999999").is_err());
        assert!(check_focus_line("a.rs:3", 3, "a\nb\nc\n").is_ok());
        assert!(check_focus_line("a.rs:4", 4, "a\nb\nc\n").is_err());
    }
}
