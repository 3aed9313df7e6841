//! Files' chunks kept in the disk cache between reads (issue 12, item 11): the real index
//! (`read_once_with`), the real grammars on the chunker's fixture files, and the real SQLite
//! cache file. A repeat read takes every unchanged file from the cache and gives the chunks a
//! parse gives; an edited file is parsed again; a damaged record is dropped with a warning and
//! made again; with redaction off nothing is stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ctxzip_chunker::index::{read_once, read_once_with};
use ctxzip_chunker::{WalkOptions, Workspace};
use ctxzip_scoring::cache::ChunkCache;
use rusqlite::Connection;

/// A tree of every fixture of the chunker (one or more files per language it knows), and a
/// file whose body holds a marker that must never reach the cache file.
fn fixture_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chunker/test_data");
    for lang in std::fs::read_dir(&fixtures).unwrap() {
        let lang = lang.unwrap().path();
        let into = dir.path().join(lang.file_name().unwrap());
        std::fs::create_dir(&into).unwrap();
        for file in std::fs::read_dir(&lang).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "chunks") {
                continue;
            }
            std::fs::copy(&file, into.join(file.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("marked.py"),
        "def answer():\n    return \"body_marker_5f1c\"\n",
    )
    .unwrap();
    dir
}

fn open(path: &Path) -> Arc<ChunkCache> {
    Arc::new(ChunkCache::open(path, 1 << 30))
}

fn read(root: &Path, options: &WalkOptions, cache: &Arc<ChunkCache>) -> Workspace {
    read_once_with(root, options, Some(Arc::clone(cache) as _)).unwrap()
}

/// Every file's path, language, text and chunks, as JSON: what every later stage sees.
fn rendered(ws: &Workspace) -> String {
    let files: Vec<_> = ws
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path,
                "lang": f.lang,
                "text": f.text,
                "chunks": f.chunks,
                "warning": f.warning,
            })
        })
        .collect();
    serde_json::to_string_pretty(&files).unwrap()
}

fn rows(cache_path: &Path) -> i64 {
    let conn = Connection::open(cache_path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM file_chunks", [], |r| r.get(0))
        .unwrap()
}

fn cache_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("cache.sqlite")
}

#[test]
fn a_second_read_of_an_unchanged_tree_takes_every_file_from_the_cache() {
    let tree = fixture_tree();
    let scratch = tempfile::tempdir().unwrap();
    let options = WalkOptions::default();
    let parsed = read_once(tree.path(), &options).unwrap();
    assert!(parsed.files.len() >= 20, "{} files", parsed.files.len());

    let cache = open(&cache_path(&scratch));
    let first = read(tree.path(), &options, &cache);
    assert_eq!(first.from_store, 0);
    assert_eq!(rows(&cache_path(&scratch)), parsed.files.len() as i64);
    drop(cache);

    // A new handle, as the next CLI run opens it.
    let cache = open(&cache_path(&scratch));
    let second = read(tree.path(), &options, &cache);
    assert_eq!(second.from_store, parsed.files.len());
    assert_eq!(rendered(&second), rendered(&parsed));
    assert_eq!(rendered(&first), rendered(&parsed));
    assert_eq!(cache.stats().bad_records, 0);

    // Chunk records only: no text of any file is in the cache file.
    drop(cache);
    let mut bytes = std::fs::read(cache_path(&scratch)).unwrap();
    bytes.extend(std::fs::read(scratch.path().join("cache.sqlite-wal")).unwrap_or_default());
    let marker = b"body_marker_5f1c";
    assert!(!bytes.windows(marker.len()).any(|w| w == marker));
}

#[test]
fn an_edited_file_is_chunked_again() {
    let tree = fixture_tree();
    let scratch = tempfile::tempdir().unwrap();
    let options = WalkOptions::default();
    let cache = open(&cache_path(&scratch));
    let first = read(tree.path(), &options, &cache);
    let n_files = first.files.len();

    let edited = tree.path().join("marked.py");
    std::fs::write(
        &edited,
        "def answer():\n    return \"body_marker_5f1c\"\n\n\ndef question():\n    return 42\n",
    )
    .unwrap();
    let second = read(tree.path(), &options, &cache);
    assert_eq!(second.from_store, n_files - 1);
    let file = second.files.iter().find(|f| f.path == "marked.py").unwrap();
    assert!(
        file.chunks
            .iter()
            .any(|c| c.name.as_deref() == Some("question")),
        "{:?}",
        file.chunks
    );
    assert_eq!(
        rendered(&second),
        rendered(&read_once(tree.path(), &options).unwrap())
    );
    // The edited text was stored too: a third read parses nothing.
    assert_eq!(read(tree.path(), &options, &cache).from_store, n_files);
}

#[test]
fn a_damaged_record_is_dropped_and_made_again_with_a_warning() {
    let tree = fixture_tree();
    let scratch = tempfile::tempdir().unwrap();
    let path = cache_path(&scratch);
    let options = WalkOptions::default();
    let parsed = read_once(tree.path(), &options).unwrap();
    let n_files = parsed.files.len();
    read(tree.path(), &options, &open(&path));

    // One record's value changed behind the cache's back, as a damaged page would: a name
    // byte flipped, still a well-formed record, so only the checksum can tell.
    {
        let conn = Connection::open(&path).unwrap();
        let (key, mut blob): (Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT key, chunks FROM file_chunks ORDER BY length(chunks) DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let at = blob.len() / 2;
        blob[at] ^= 0x01;
        conn.execute(
            "UPDATE file_chunks SET chunks = ?2 WHERE key = ?1",
            rusqlite::params![key, blob],
        )
        .unwrap();
    }

    let cache = open(&path);
    let again = read(tree.path(), &options, &cache);
    assert_eq!(cache.stats().bad_records, 1);
    assert_eq!(cache.stats().rebuilds, 0);
    assert_eq!(again.from_store, n_files - 1);
    assert_eq!(rendered(&again), rendered(&parsed));
    // Made again and stored again.
    assert_eq!(rows(&path), n_files as i64);
    let cache = open(&path);
    assert_eq!(read(tree.path(), &options, &cache).from_store, n_files);
    assert_eq!(cache.stats().bad_records, 0);
}

#[test]
fn with_redaction_off_nothing_is_stored_or_looked_up() {
    let tree = fixture_tree();
    let scratch = tempfile::tempdir().unwrap();
    let path = cache_path(&scratch);
    let plain = WalkOptions {
        redact: false,
        ..WalkOptions::default()
    };
    let cache = open(&path);
    let ws = read(tree.path(), &plain, &cache);
    assert_eq!(ws.from_store, 0);
    assert_eq!(rows(&path), 0);

    // Records made with redaction on are not served to a read with it off either.
    read(tree.path(), &WalkOptions::default(), &cache);
    assert!(rows(&path) > 0);
    let again = read(tree.path(), &plain, &cache);
    assert_eq!(again.from_store, 0);
    assert_eq!(
        rendered(&again),
        rendered(&read_once(tree.path(), &plain).unwrap())
    );
}
