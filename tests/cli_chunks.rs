//! `ctxzip chunks` end to end: the real binary, its text and JSON output, and its errors.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// The binary without a disk cache: chunks made by a parse, and the user's cache file left
/// alone ([`a_repeat_run_takes_its_chunks_from_the_cache`] runs it with one).
fn ctxzip(args: &[&str]) -> Output {
    ctxzip_with_cache(args, Path::new("off"))
}

fn ctxzip_with_cache(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctxzip"))
        .args(args)
        .env("CTXZIP_CACHE", cache)
        .output()
        .expect("the ctxzip binary runs")
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("src")).unwrap();
    fs::write(
        root.join("src/lib.rs"),
        "//! Crate doc.\n\nuse std::fmt;\n\n/// A point.\npub struct Point {\n    x: i32,\n}\n\nimpl Point {\n    /// Makes one.\n    pub fn new(x: i32) -> Self {\n        Point { x }\n    }\n}\n",
    )
    .unwrap();
    fs::write(
        root.join("app.py"),
        "import os\n\n\nclass App:\n    @staticmethod\n    def run():\n        return os.getcwd()\n",
    )
    .unwrap();
    fs::write(root.join("logo.png"), b"\x89PNG\r\n\x1a\n\x00\x00").unwrap();
    dir
}

#[test]
fn text_output_lists_chunks_and_a_summary() {
    let dir = workspace();
    let out = ctxzip(&["chunks", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stdout,
        "app.py:1-3 glue -\napp.py:4-4 class App\napp.py:5-7 method App.run\n\
         src/lib.rs:1-4 glue -\nsrc/lib.rs:5-9 struct Point\nsrc/lib.rs:10-10 impl Point\n\
         src/lib.rs:11-14 method Point::new\nsrc/lib.rs:15-15 glue Point\n"
    );
    assert!(stderr.contains("2 files, 8 chunks"), "{stderr}");
    assert!(stderr.contains("logo.png: binary file"), "{stderr}");
}

#[test]
fn json_output_keeps_the_contract_field_names() {
    let dir = workspace();
    let out = ctxzip(&[
        "chunks",
        "--format",
        "json",
        "--lang",
        "python",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let chunks = json["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 3);
    assert_eq!(
        chunks[2],
        serde_json::json!({"path": "app.py", "language": "python", "start_line": 5,
            "end_line": 7, "kind": "method", "name": "run", "qualified_name": "App.run"})
    );

    let out = ctxzip(&["chunks", "--format", "json", dir.path().to_str().unwrap()]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["chunks"].as_array().unwrap().len(), 8);
    assert_eq!(json["skipped"][0]["path"], "logo.png");
    assert_eq!(json["skipped"][0]["reason"], "binary file");
}

#[test]
fn errors_name_the_problem_and_the_fix() {
    let out = ctxzip(&["chunks", "/no/such/path"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("/no/such/path: no such file or directory"),
        "{stderr}"
    );

    let out = ctxzip(&["chunks", "--lang", "cobol", "."]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("unknown language \"cobol\"; known: rust, python"),
        "{stderr}"
    );

    let out = ctxzip(&["chunks", "--max-file-size", "lots", "."]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("K/M suffix")
    );
}

#[test]
fn help_and_version() {
    let out = ctxzip(&["--version"]);
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("ctxzip ")
    );
    let out = ctxzip(&["--help"]);
    assert!(String::from_utf8(out.stdout).unwrap().contains("chunks"));
}

/// Issue 12, item 11: a repeat run keeps files' chunks in the disk cache (`CTXZIP_CACHE`), and
/// prints what a run without it prints; a damaged record is dropped with one warning and made
/// again; `--no-redact` stores nothing.
#[test]
fn a_repeat_run_takes_its_chunks_from_the_cache() {
    let dir = workspace();
    let root = dir.path().to_str().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache.sqlite");
    let rows = |cache: &Path| -> i64 {
        let conn = rusqlite::Connection::open(cache).unwrap();
        conn.query_row("SELECT COUNT(*) FROM file_chunks", [], |r| r.get(0))
            .unwrap()
    };
    let uncached = ctxzip(&["chunks", "--format", "json", root]);
    assert!(uncached.status.success());
    for _ in 0..2 {
        let out = ctxzip_with_cache(&["chunks", "--format", "json", root], &cache);
        assert!(out.status.success());
        assert_eq!(out.stdout, uncached.stdout);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    }
    // src/lib.rs and app.py; logo.png is not text.
    assert_eq!(rows(&cache), 2);

    // One record's value changed behind the cache's back, as a damaged page would.
    rusqlite::Connection::open(&cache)
        .unwrap()
        .execute(
            "UPDATE file_chunks SET chunks = chunks || x'00' WHERE key = (SELECT MIN(key) FROM file_chunks)",
            [],
        )
        .unwrap();
    let out = ctxzip_with_cache(&["chunks", "--format", "json", root], &cache);
    assert!(out.status.success());
    assert_eq!(out.stdout, uncached.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("failed its checksum").count(), 1, "{stderr}");
    assert_eq!(rows(&cache), 2);

    let plain = scratch.path().join("plain.sqlite");
    let out = ctxzip_with_cache(&["chunks", "--no-redact", root], &plain);
    assert!(out.status.success());
    assert!(!plain.exists(), "--no-redact opened the cache");
}
