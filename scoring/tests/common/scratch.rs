//! Per-process scratch directories for tests: `$TMPDIR/ctxzip-tests/<name>-<pid>/`. A test
//! binary has no exit hook (statics are never dropped), so a binary's first call removes the
//! directories of earlier test processes that are gone instead; one still running (another
//! test binary of the same run, or of another checkout) keeps its own. Also compiled into
//! the binary's end-to-end tests (`#[path]`), so both crates clean up one way.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A fresh directory of this process's own, named `name-<pid>`, after removing the
/// directories whose process has exited.
pub fn process_dir(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join("ctxzip-tests");
    remove_exited(&root);
    let dir = root.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create the test scratch dir {}: {e}", dir.display()));
    dir
}

/// Removes the entries of `root` named `<name>-<pid>` whose process no longer runs. Where
/// processes cannot be seen (no `/proc`), nothing is removed.
fn remove_exited(root: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            // Another process may be removing it too.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
