//! The VS Code extension's own test suite (`clients/vscode`, `node --test`) against the
//! built binary: `npm ci` when the lock file changed, the esbuild/tsc build, then the tests
//! (the extension's request code against the real `ctxzip lsp`, and the `.vsix` packaging).

mod common;

use common::node::{npm_ci, run};
use std::path::PathBuf;

const NEEDS: &str = "the VS Code client's tests need Node.js 20+ with npm on PATH";

#[test]
fn vscode_extension_tests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/vscode");
    npm_ci(&dir, &dir, &["npm"], &[], NEEDS);
    run(&dir, "npm", &["run", "build"], &[], NEEDS);
    let out = run(
        &dir,
        "npm",
        &["test"],
        &[
            ("CTXZIP_BIN", env!("CARGO_BIN_EXE_ctxzip")),
            ("CTXZIP_CACHE", &common::test_cache().to_string_lossy()),
        ],
        NEEDS,
    );
    assert!(out.contains("# fail 0"), "{out}");
}
