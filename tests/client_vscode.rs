//! The VS Code extension's own test suite (`clients/vscode`, `node --test`) against the
//! built binary: `npm ci` when the lock file changed, the esbuild/tsc build, then the tests
//! (the extension's request code against the real `ctxzip lsp`, and the `.vsix` packaging).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

/// Runs `program args` in `dir`; panics with its whole output when it fails.
fn run(dir: &Path, program: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}`: {e} (the VS Code client's tests need Node.js 20+ with npm on PATH)")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`{program} {}` failed in {} ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        dir.display(),
        output.status
    );
    eprintln!(
        "`{program} {}`: {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    stdout.into_owned()
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

#[test]
fn vscode_extension_tests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/vscode");
    // `npm ci` only when node_modules is missing or older than the lock file: it deletes and
    // reinstalls everything, which costs more than the tests themselves.
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(&dir.join("package-lock.json")) {
        run(&dir, "npm", &["ci", "--no-audit", "--no-fund"], &[]);
    }
    run(&dir, "npm", &["run", "build"], &[]);
    let out = run(
        &dir,
        "npm",
        &["test"],
        &[
            ("CTXZIP_BIN", env!("CARGO_BIN_EXE_ctxzip")),
            ("CTXZIP_CACHE", &common::test_cache().to_string_lossy()),
        ],
    );
    assert!(out.contains("# fail 0"), "{out}");
}
