//! The on-disk cache of per-token NLLs keyed by (model sha256, hash of the model input): a
//! chunk's unconditional NLLs keyed by its text, and the query-dependent results (a chunk's
//! per-query-token NLLs, a text's NLLs given a prefix) keyed by the hash of query and text
//! together, so that asking the same question again after an edit decodes only what changed.
//!
//! Store: SQLite (`rusqlite`, bundled) in WAL mode at `$XDG_CACHE_HOME/ctxzip/cache.sqlite`.
//! Chosen over redb because the LSP server and a CLI run must use the cache at the same time:
//! redb takes an exclusive lock on its file for as long as a database is open, so the second
//! process would run without a cache; SQLite's WAL gives concurrent readers and one writer
//! across processes, with a busy timeout for writer contention, and it is transactional and
//! crash-safe. Bundling compiles SQLite in, so there is no system dependency.
//!
//! - Schema-versioned with `PRAGMA user_version`: another version's tables are dropped and
//!   recreated (it is a cache).
//! - Size-capped: rows carry their size and a last-used time; past the cap the least recently
//!   used rows go first.
//! - Never fatal: a corrupt file is deleted and rebuilt with a warning; any other failure
//!   disables the cache for the process with one warning.
//! - KV states are not stored here: at 12–22 KiB per token they are large, and restoring them
//!   from disk is not measured to beat recomputation; they live in the in-memory LRU of
//!   [`crate::engine`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::error::Result;
use crate::models::cache_root;

/// Environment variable overriding the cache file (`off` disables the disk cache).
pub const CACHE_ENV: &str = "CTXZIP_CACHE";

/// Bumped whenever the table layout or the meaning of a value changes.
pub const SCHEMA_VERSION: i32 = 1;

/// How long a writer waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Check the size cap after this many inserted rows.
const EVICT_CHECK_EVERY: u64 = 64;

/// Query-independent results for one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    pub n_tokens: u32,
    /// Per-token NLL in nats given no prefix (0 for an unscored first token).
    pub token_nlls: Vec<f32>,
}

/// Hit and miss counts since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub enabled: bool,
}

/// A handle on the cache file; `None` inside when the cache is disabled.
pub struct DiskCache {
    conn: Option<Connection>,
    path: PathBuf,
    cap_bytes: u64,
    inserted: u64,
    stats: CacheStats,
}

impl DiskCache {
    /// `$XDG_CACHE_HOME/ctxzip/cache.sqlite`.
    pub fn default_path() -> Result<PathBuf> {
        Ok(cache_root()?.join("cache.sqlite"))
    }

    /// The cache file to use: `CTXZIP_CACHE` when set (a file path, or `off` for no disk
    /// cache), else [`DiskCache::default_path`].
    pub fn configured_path() -> Option<PathBuf> {
        match std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
            Some(v) if v == "off" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => DiskCache::default_path().ok(),
        }
    }

    /// Opens (creating, migrating or rebuilding as needed) the cache at `path`. Never fails:
    /// on trouble it warns once on stderr and returns a disabled cache.
    pub fn open(path: &Path, cap_bytes: u64) -> DiskCache {
        let mut cache = DiskCache {
            conn: None,
            path: path.to_path_buf(),
            cap_bytes,
            inserted: 0,
            stats: CacheStats::default(),
        };
        match open_connection(path) {
            Ok(conn) => cache.conn = Some(conn),
            Err(e) if is_corrupt(&e) => {
                warn(&format!(
                    "cache {} is corrupt ({e}); rebuilding it",
                    path.display()
                ));
                remove_files(path);
                match open_connection(path) {
                    Ok(conn) => cache.conn = Some(conn),
                    Err(e) => warn_disabled(path, &e),
                }
            }
            Err(e) => warn_disabled(path, &e),
        }
        cache.stats.enabled = cache.conn.is_some();
        cache
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The record for (model, chunk), if cached.
    pub fn get(&mut self, model_sha256: &str, content_hash: u64) -> Option<ChunkRecord> {
        let conn = self.conn.as_ref()?;
        let now = unix_seconds();
        let result = conn
            .query_row(
                "SELECT n_tokens, token_nlls, last_used FROM chunk
                 WHERE model_sha256 = ?1 AND content_hash = ?2",
                params![model_sha256, content_hash as i64],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional();
        match result {
            Ok(Some((n_tokens, blob, last_used))) => {
                // Touch rarely: a write per hit would serialise readers on the write lock.
                if now - last_used > 3600 {
                    let _ = conn.execute(
                        "UPDATE chunk SET last_used = ?3 WHERE model_sha256 = ?1 AND content_hash = ?2",
                        params![model_sha256, content_hash as i64, now],
                    );
                }
                match decode_nlls(&blob) {
                    Some(token_nlls) => {
                        self.stats.hits += 1;
                        Some(ChunkRecord {
                            n_tokens: u32::try_from(n_tokens).unwrap_or(0),
                            token_nlls,
                        })
                    }
                    None => {
                        self.stats.misses += 1;
                        None
                    }
                }
            }
            Ok(None) => {
                self.stats.misses += 1;
                None
            }
            Err(e) => {
                self.stats.misses += 1;
                self.fail(&e);
                None
            }
        }
    }

    /// Stores records in one transaction, then enforces the size cap now and then.
    pub fn put_many(&mut self, model_sha256: &str, records: &[(u64, ChunkRecord)]) {
        if records.is_empty() {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let now = unix_seconds();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO chunk
                     (model_sha256, content_hash, n_tokens, token_nlls, bytes, last_used)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (hash, record) in records {
                    let blob = encode_nlls(&record.token_nlls);
                    let bytes = (blob.len() + model_sha256.len() + 32) as i64;
                    insert.execute(params![
                        model_sha256,
                        *hash as i64,
                        i64::from(record.n_tokens),
                        blob,
                        bytes,
                        now
                    ])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            self.fail(&e);
            return;
        }
        let before = self.inserted;
        self.inserted += records.len() as u64;
        if before / EVICT_CHECK_EVERY != self.inserted / EVICT_CHECK_EVERY || before == 0 {
            self.evict();
        }
    }

    /// Stores one record.
    pub fn put(&mut self, model_sha256: &str, content_hash: u64, record: &ChunkRecord) {
        self.put_many(model_sha256, &[(content_hash, record.clone())]);
    }

    /// Total bytes of cached rows (as counted for the cap).
    pub fn used_bytes(&self) -> u64 {
        self.conn
            .as_ref()
            .and_then(|c| {
                c.query_row("SELECT COALESCE(SUM(bytes), 0) FROM chunk", [], |r| {
                    r.get::<_, i64>(0)
                })
                .ok()
            })
            .map_or(0, |b| b.max(0) as u64)
    }

    /// Deletes least recently used rows until the cache is under 90% of its cap.
    fn evict(&mut self) {
        let mut used = self.used_bytes();
        if used <= self.cap_bytes {
            return;
        }
        let target = self.cap_bytes / 10 * 9;
        while used > target {
            let Some(conn) = self.conn.as_ref() else {
                return;
            };
            let deleted = conn.execute(
                "DELETE FROM chunk WHERE (model_sha256, content_hash) IN
                 (SELECT model_sha256, content_hash FROM chunk ORDER BY last_used LIMIT 256)",
                [],
            );
            match deleted {
                Ok(0) => return,
                Ok(_) => used = self.used_bytes(),
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            }
        }
    }

    /// A failing cache is dropped for the rest of the process (rebuilt first if corrupt).
    fn fail(&mut self, e: &rusqlite::Error) {
        if is_corrupt(e) {
            warn(&format!(
                "cache {} is corrupt ({e}); rebuilding it",
                self.path.display()
            ));
            self.conn = None;
            remove_files(&self.path);
            self.conn = open_connection(&self.path).ok();
        } else if is_busy(e) {
            // Another process held the write lock past the timeout: skip this write only.
        } else {
            warn_disabled(&self.path, e);
            self.conn = None;
        }
        self.stats.enabled = self.conn.is_some();
    }
}

/// Opens (creating if needed) the cache. Processes that start together on a fresh file race
/// for the lock that switching to WAL and creating the schema take, and SQLite answers the
/// loser "database is locked" at once rather than through the busy handler; so the setup is
/// one immediate transaction, retried until `BUSY_TIMEOUT`.
fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let started = std::time::Instant::now();
    loop {
        match try_open(path) {
            Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

fn try_open(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version != SCHEMA_VERSION {
        tx.execute_batch("DROP TABLE IF EXISTS chunk;")?;
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS chunk (
             model_sha256 TEXT NOT NULL,
             content_hash INTEGER NOT NULL,
             n_tokens INTEGER NOT NULL,
             token_nlls BLOB NOT NULL,
             bytes INTEGER NOT NULL,
             last_used INTEGER NOT NULL,
             PRIMARY KEY (model_sha256, content_hash)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS chunk_last_used ON chunk (last_used);",
    )?;
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

fn remove_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn warn(message: &str) {
    eprintln!("ctxzip: warning: {message}");
}

fn warn_disabled(path: &Path, e: &rusqlite::Error) {
    warn(&format!(
        "cache {} is unusable ({e}); running without it (delete the file if this persists)",
        path.display()
    ));
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn encode_nlls(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode_nlls(blob: &[u8]) -> Option<Vec<f32>> {
    if !blob.len().is_multiple_of(4) {
        return None;
    }
    Some(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> ChunkRecord {
        ChunkRecord {
            n_tokens: n,
            token_nlls: (0..n).map(|i| i as f32 * 0.5).collect(),
        }
    }

    #[test]
    fn round_trips_and_counts_hits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let mut cache = DiskCache::open(&path, 1 << 20);
        assert!(cache.stats().enabled);
        assert_eq!(cache.get("m", 1), None);
        cache.put("m", 1, &record(3));
        assert_eq!(cache.get("m", 1), Some(record(3)));
        assert_eq!(cache.get("other-model", 1), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 2));
        // A second handle (as a second process would) sees the same rows.
        let mut second = DiskCache::open(&path, 1 << 20);
        assert_eq!(second.get("m", 1), Some(record(3)));
    }

    #[test]
    fn evicts_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let mut cache = DiskCache::open(&path, 20_000);
        for hash in 0..200u64 {
            cache.put("m", hash, &record(100));
        }
        assert!(cache.used_bytes() <= 20_000, "{}", cache.used_bytes());
        assert!(cache.get("m", 199).is_some());
    }

    #[test]
    fn a_corrupt_file_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        std::fs::write(&path, vec![0xAB; 8192]).unwrap();
        let mut cache = DiskCache::open(&path, 1 << 20);
        assert!(cache.stats().enabled);
        cache.put("m", 7, &record(2));
        assert_eq!(cache.get("m", 7), Some(record(2)));
    }

    #[test]
    fn another_schema_version_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE chunk (x); PRAGMA user_version = 999;")
                .unwrap();
        }
        let mut cache = DiskCache::open(&path, 1 << 20);
        cache.put("m", 1, &record(1));
        assert_eq!(cache.get("m", 1), Some(record(1)));
    }
}
