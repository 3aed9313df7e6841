//! `CTXZIP_CACHE` pointing at a file that is not a ctxzip cache (issue 12, item 5): the real
//! binary leaves the file, its `-wal`/`-shm` siblings and a foreign database's tables exactly as
//! they were, says on stderr which file it did not use and how to fix it, and still answers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = "smollm2-135m";

fn compress_with_cache(root: &Path, cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctxzip"))
        .args(["compress"])
        .arg(root)
        .args([
            "--query",
            "where is the invoice total computed",
            "--budget",
            "300",
            "--ranker",
            "bm25",
            "--format",
            "json",
            "--model",
            MODEL,
        ])
        .env("CTXZIP_CACHE", cache)
        .output()
        .expect("the ctxzip binary runs")
}

fn workspace(dir: &Path) -> PathBuf {
    let root = dir.join("ws");
    fs::create_dir(&root).unwrap();
    fs::write(
        root.join("billing.py"),
        "def compute_invoice_total(items, tax_rate):\n    \
         subtotal = sum(i.price * i.quantity for i in items)\n    \
         return subtotal * (1 + tax_rate)\n",
    )
    .unwrap();
    root
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The run succeeded with an answer and said why it did not use `cache`.
fn assert_answered_and_reported(out: &Output, cache: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(
        json.to_string().contains("compute_invoice_total"),
        "the answer is still given: {json}"
    );
    assert!(
        stderr.contains(&cache.display().to_string())
            && stderr.contains("not a ctxzip cache")
            && stderr.contains("CTXZIP_CACHE"),
        "stderr names the file and the fix: {stderr}"
    );
}

#[test]
fn a_text_file_named_by_ctxzip_cache_is_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let root = workspace(dir.path());
    let notes = dir.path().join("v.txt");
    fs::write(&notes, "notes\n").unwrap();
    fs::write(sibling(&notes, "-wal"), "wal notes\n").unwrap();
    fs::write(sibling(&notes, "-shm"), "shm notes\n").unwrap();

    let out = compress_with_cache(&root, &notes);
    assert_answered_and_reported(&out, &notes);
    assert_eq!(fs::read_to_string(&notes).unwrap(), "notes\n");
    assert_eq!(
        fs::read_to_string(sibling(&notes, "-wal")).unwrap(),
        "wal notes\n"
    );
    assert_eq!(
        fs::read_to_string(sibling(&notes, "-shm")).unwrap(),
        "shm notes\n"
    );
}

#[test]
fn a_foreign_sqlite_database_with_a_chunk_table_is_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let root = workspace(dir.path());
    let db = dir.path().join("app.db");
    let conn = foreign_database(&db);
    let before = fs::read(&db).unwrap();
    drop(conn);

    let out = compress_with_cache(&root, &db);
    assert_answered_and_reported(&out, &db);
    assert_eq!(
        fs::read(&db).unwrap(),
        before,
        "the database is byte for byte the same"
    );
    assert!(!sibling(&db, "-wal").exists() && !sibling(&db, "-shm").exists());
}

/// A SQLite database of another program that happens to have a table named `chunk`.
fn foreign_database(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE chunk (id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO chunk (body) VALUES ('kept');
         PRAGMA user_version = 7;",
    )
    .unwrap();
    conn
}
