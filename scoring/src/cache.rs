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
//! - Ours or untouched: `CTXZIP_CACHE` can name any file, so a file is written only when it is
//!   recognisably a ctxzip cache: it does not exist or is empty, or it is a SQLite database
//!   whose `application_id` is [`APPLICATION_ID`] (set at creation, before the file is switched
//!   to WAL, so the id is in the main file's header on disk), or a cache of schema 1 (written
//!   before the id existed, recognised by its exact tables). Anything else (a text file, another
//!   program's database) is never opened for writing, let alone deleted: the cache is refused
//!   with one warning that names the file, and the process runs without it. The check is made
//!   on a read-only connection first and again inside the write transaction that creates the
//!   schema.
//! - Schema-versioned with `PRAGMA user_version`: our own file of another version has its
//!   tables dropped and recreated (it is a cache).
//! - Verified: every row carries a checksum (blake3 over key and value); a row that fails it is
//!   deleted and counts as a miss, so it is recomputed, with one warning per process. A failed
//!   row is evidence of a damaged page, so it triggers `PRAGMA quick_check`; a database that
//!   fails the check, or that SQLite reports corrupt at any point, is rebuilt with a warning
//!   (only when its header says it is ours). The check is not run on every open: it reads the
//!   whole file, up to the 1 GiB cap, and the checksums already keep a bad value out.
//! - Size-capped: rows carry their size and a last-used time; past the cap the least recently
//!   used rows go first.
//! - Never fatal: any other failure (read-only file or directory, full disk) disables the
//!   cache for the process with one warning that says what to change; the answer is the same
//!   without the cache, only slower, so failing the command would cost the user more than it
//!   protects.
//! - Files' chunks too (`file_chunks`, [`ChunkCache`]): a file's chunks keyed by the hash of
//!   its redacted text, its language and the chunker's fingerprint
//!   ([`ctxzip_chunker::stored`]), so that a repeat CLI query parses no unchanged file. The
//!   same checksums, the same warning and check on a bad row, and the same size cap: one
//!   least-recently-used order over both tables. Only chunk records are stored, never text,
//!   and nothing at all while redaction is off (the index does not ask).
//! - KV states are not stored here: at 12–22 KiB per token they are large, and restoring them
//!   from disk is not measured to beat recomputation; they live in the in-memory LRU of
//!   [`crate::engine`].
//!
//! [`ScoreCache`] is the cache as every backend uses it (the llama.cpp engine and the remote
//! scorer): one model identity ([`crate::ScoringModel::model_id`]) that keys every row, the
//! keys of each kind of result, and hit and miss counts. There is one cache file and one way
//! of keying it, whatever scores.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use ctxzip_chunker::stored::{ChunkStore, FileKey};

use crate::error::Result;
use crate::models::cache_root;

/// Environment variable overriding the cache file (`off` disables the disk cache).
pub const CACHE_ENV: &str = "CTXZIP_CACHE";

/// Bumped whenever the table layout or the meaning of a value changes.
/// 2: rows carry a checksum; the file carries [`APPLICATION_ID`]. The `file_chunks` table
/// came later without a bump: it is created where missing, and a binary that does not know
/// it leaves it alone, so the score rows survive on both sides.
pub const SCHEMA_VERSION: i32 = 2;

/// The default size cap of the cache file's rows, scores and files' chunks together.
pub const DEFAULT_CAP_BYTES: u64 = 1 << 30;

/// SQLite `application_id` of a ctxzip cache: the bytes "CZIP".
pub const APPLICATION_ID: i32 = i32::from_be_bytes(*b"CZIP");

/// The schema version written before the cache had an application id.
const LEGACY_SCHEMA_VERSION: i32 = 1;

/// How long a writer waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Check the size cap after this many inserted rows.
const EVICT_CHECK_EVERY: u64 = 64;

/// Bytes of the blake3 checksum stored beside each value.
const CHECKSUM_BYTES: usize = 16;

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Byte offset of the big-endian `application_id` in a SQLite header.
const APPLICATION_ID_OFFSET: usize = 68;

/// The columns of the `chunk` table, in order (schema 1 had all but `checksum`).
const COLUMNS: [&str; 7] = [
    "model_sha256",
    "content_hash",
    "n_tokens",
    "token_nlls",
    "bytes",
    "last_used",
    "checksum",
];

/// Query-independent results for one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    pub n_tokens: u32,
    /// Per-token NLL in nats given no prefix (0 for an unscored first token).
    pub token_nlls: Vec<f32>,
}

/// Counts since open, and why the cache is off when it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub enabled: bool,
    /// Rows that failed their checksum (dropped, counted as misses, recomputed).
    pub bad_records: u64,
    /// Times the database was found malformed and rebuilt.
    pub rebuilds: u64,
    /// Set when the file was refused as not a ctxzip cache: what it looked like.
    pub refused: Option<String>,
}

/// A handle on the cache file; `None` inside when the cache is disabled.
pub struct DiskCache {
    conn: Option<Connection>,
    path: PathBuf,
    cap_bytes: u64,
    inserted: u64,
    stats: CacheStats,
}

/// What a file at the cache path is, judged before anything is written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ownership {
    /// Missing, empty, or a SQLite database with nothing in it: ours to create.
    Vacant,
    /// A ctxzip cache (current or an older schema).
    Ours,
    /// Anything else, described for the warning; never written or deleted.
    Foreign(String),
}

/// Why a connection could not be set up.
enum OpenError {
    Sqlite(rusqlite::Error),
    Foreign(String),
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
    /// on trouble it warns once on stderr and returns a disabled cache. A file that is not
    /// recognisably a ctxzip cache is left exactly as it was.
    pub fn open(path: &Path, cap_bytes: u64) -> DiskCache {
        let mut cache = DiskCache {
            conn: None,
            path: path.to_path_buf(),
            cap_bytes,
            inserted: 0,
            stats: CacheStats::default(),
        };
        match probe(path) {
            Ownership::Foreign(what) => cache.refuse(what),
            Ownership::Vacant | Ownership::Ours => match open_connection(path) {
                Ok(conn) => cache.conn = Some(conn),
                Err(OpenError::Foreign(what)) => cache.refuse(what),
                Err(OpenError::Sqlite(e)) if is_corrupt(&e) => cache.rebuild(&e.to_string()),
                Err(OpenError::Sqlite(e)) => warn_disabled(path, &e),
            },
        }
        cache.stats.enabled = cache.conn.is_some();
        cache
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> CacheStats {
        self.stats.clone()
    }

    /// The record for (model, chunk), if cached and intact.
    pub fn get(&mut self, model_sha256: &str, content_hash: u64) -> Option<ChunkRecord> {
        let conn = self.conn.as_ref()?;
        let now = unix_seconds();
        let result = conn
            .query_row(
                "SELECT n_tokens, token_nlls, last_used, checksum FROM chunk
                 WHERE model_sha256 = ?1 AND content_hash = ?2",
                params![model_sha256, content_hash as i64],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )
            .optional();
        let (n_tokens, blob, last_used, checksum) = match result {
            Ok(Some(row)) => row,
            Ok(None) => {
                self.stats.misses += 1;
                return None;
            }
            Err(e) => {
                self.stats.misses += 1;
                self.fail(&e);
                return None;
            }
        };
        let record = u32::try_from(n_tokens)
            .ok()
            .filter(|&n| checksum == record_checksum(model_sha256, content_hash, n, &blob))
            .and_then(|n| {
                Some(ChunkRecord {
                    n_tokens: n,
                    token_nlls: decode_nlls(&blob)?,
                })
            });
        let Some(record) = record else {
            self.stats.misses += 1;
            self.drop_bad_record(model_sha256, content_hash);
            return None;
        };
        // Touch rarely: a write per hit would serialise readers on the write lock.
        if now - last_used > 3600 {
            let _ = conn.execute(
                "UPDATE chunk SET last_used = ?3 WHERE model_sha256 = ?1 AND content_hash = ?2",
                params![model_sha256, content_hash as i64, now],
            );
        }
        self.stats.hits += 1;
        Some(record)
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
                     (model_sha256, content_hash, n_tokens, token_nlls, bytes, last_used, checksum)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (hash, record) in records {
                    let blob = encode_nlls(&record.token_nlls);
                    let checksum = record_checksum(model_sha256, *hash, record.n_tokens, &blob);
                    let bytes = (blob.len() + model_sha256.len() + 32 + CHECKSUM_BYTES) as i64;
                    insert.execute(params![
                        model_sha256,
                        *hash as i64,
                        i64::from(record.n_tokens),
                        blob,
                        bytes,
                        now,
                        checksum
                    ])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            self.fail(&e);
            return;
        }
        self.count_inserted(records.len());
    }

    /// Stores one record.
    pub fn put(&mut self, model_sha256: &str, content_hash: u64, record: &ChunkRecord) {
        self.put_many(model_sha256, &[(content_hash, record.clone())]);
    }

    /// The files' chunk records stored under `keys`, in order; `None` for a key not stored,
    /// or whose record failed its checksum (deleted, so that it is made and stored again).
    /// Reads in one transaction; the hits last used over an hour ago are touched in another.
    pub fn get_file_chunks(&mut self, keys: &[FileKey]) -> Vec<Option<Vec<u8>>> {
        let Some(conn) = self.conn.as_ref() else {
            return vec![None; keys.len()];
        };
        let now = unix_seconds();
        let mut bad = Vec::new();
        let mut stale = Vec::new();
        let result = (|| -> rusqlite::Result<Vec<Option<Vec<u8>>>> {
            let tx = conn.unchecked_transaction()?;
            let mut records = Vec::with_capacity(keys.len());
            {
                let mut select = tx.prepare_cached(
                    "SELECT chunks, last_used, checksum FROM file_chunks WHERE key = ?1",
                )?;
                for key in keys {
                    // A value of the wrong type is a damaged row like any other, not a
                    // reason to give up the cache.
                    let row = select
                        .query_row(params![&key[..]], |row| {
                            let blob = |i: usize| -> rusqlite::Result<Option<Vec<u8>>> {
                                Ok(row.get_ref(i)?.as_blob().ok().map(<[u8]>::to_vec))
                            };
                            Ok((blob(0)?, row.get_ref(1)?.as_i64().unwrap_or(0), blob(2)?))
                        })
                        .optional()?;
                    let record = match row {
                        Some((Some(blob), last_used, Some(checksum)))
                            if checksum == file_checksum(key, &blob) =>
                        {
                            if now - last_used > 3600 {
                                stale.push(*key);
                            }
                            Some(blob)
                        }
                        Some(_) => {
                            bad.push(*key);
                            None
                        }
                        None => None,
                    };
                    records.push(record);
                }
            }
            tx.commit()?;
            Ok(records)
        })();
        let records = match result {
            Ok(records) => records,
            Err(e) => {
                self.fail(&e);
                return vec![None; keys.len()];
            }
        };
        let touched = (|| -> rusqlite::Result<()> {
            if bad.is_empty() && stale.is_empty() {
                return Ok(());
            }
            let tx = conn.unchecked_transaction()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM file_chunks WHERE key = ?1")?;
                for key in &bad {
                    delete.execute(params![&key[..]])?;
                }
                let mut touch =
                    tx.prepare_cached("UPDATE file_chunks SET last_used = ?2 WHERE key = ?1")?;
                for key in &stale {
                    touch.execute(params![&key[..], now])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = touched {
            self.fail(&e);
        }
        for _ in &bad {
            self.note_bad_record();
        }
        records
    }

    /// Stores files' chunk records in one transaction, then enforces the size cap now and
    /// then.
    pub fn put_file_chunks(&mut self, records: &[(FileKey, Vec<u8>)]) {
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
                    "INSERT OR REPLACE INTO file_chunks (key, chunks, bytes, last_used, checksum)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (key, blob) in records {
                    let bytes = (blob.len() + key.len() + 16 + CHECKSUM_BYTES) as i64;
                    let checksum = file_checksum(key, blob);
                    insert.execute(params![&key[..], blob, bytes, now, checksum])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            self.fail(&e);
            return;
        }
        self.count_inserted(records.len());
    }

    /// Counts rows just stored, scores or files' chunks alike, and enforces the size cap on
    /// the first insert and every `EVICT_CHECK_EVERY` after.
    fn count_inserted(&mut self, n: usize) {
        let before = self.inserted;
        self.inserted += n as u64;
        if before / EVICT_CHECK_EVERY != self.inserted / EVICT_CHECK_EVERY || before == 0 {
            self.evict();
        }
    }

    /// Total bytes of cached rows (as counted for the cap).
    pub fn used_bytes(&self) -> u64 {
        self.conn
            .as_ref()
            .and_then(|c| {
                c.query_row(
                    "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM chunk)
                          + (SELECT COALESCE(SUM(bytes), 0) FROM file_chunks)",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .ok()
            })
            .map_or(0, |b| b.max(0) as u64)
    }

    /// Deletes least recently used rows, scores and files' chunks alike, until the cache is
    /// under 90% of its cap.
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
            // One order over both tables: the batch comes from the table whose oldest row is
            // older.
            let oldest = conn.query_row(
                "SELECT (SELECT MIN(last_used) FROM chunk), (SELECT MIN(last_used) FROM file_chunks)",
                [],
                |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
            );
            let files_first = match oldest {
                Ok((Some(scores), Some(files))) => files < scores,
                Ok((None, files)) => files.is_some(),
                Ok((Some(_), None)) => false,
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            };
            let sql = if files_first {
                "DELETE FROM file_chunks WHERE key IN
                 (SELECT key FROM file_chunks ORDER BY last_used LIMIT 256)"
            } else {
                "DELETE FROM chunk WHERE (model_sha256, content_hash) IN
                 (SELECT model_sha256, content_hash FROM chunk ORDER BY last_used LIMIT 256)"
            };
            let deleted = conn.execute(sql, []);
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

    /// A row failed its checksum: delete it (so it is recomputed and stored again), warn once,
    /// and check the database, since a damaged value usually means a damaged page.
    fn drop_bad_record(&mut self, model_sha256: &str, content_hash: u64) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let deleted = conn.execute(
            "DELETE FROM chunk WHERE model_sha256 = ?1 AND content_hash = ?2",
            params![model_sha256, content_hash as i64],
        );
        match deleted {
            Ok(_) => self.note_bad_record(),
            Err(e) => self.fail(&e),
        }
    }

    /// After a bad row was deleted: the warning (once per process) and, on the first, a
    /// check of the whole database.
    fn note_bad_record(&mut self) {
        self.stats.bad_records += 1;
        if self.stats.bad_records == 1 {
            warn(&format!(
                "cache {}: a cached result failed its checksum; dropping such results and \
                 recomputing them (further ones are counted, not reported)",
                self.path.display()
            ));
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        // One full check per process is enough to catch a damaged file.
        if self.stats.bad_records == 1 {
            match quick_check(conn) {
                Ok(None) => {}
                Ok(Some(problem)) => self.rebuild(&problem),
                Err(e) => self.fail(&e),
            }
        }
    }

    /// A failing cache is dropped for the rest of the process (rebuilt first if corrupt).
    fn fail(&mut self, e: &rusqlite::Error) {
        if is_corrupt(e) {
            self.rebuild(&e.to_string());
        } else if is_busy(e) {
            // Another process held the write lock past the timeout: skip this write only.
        } else {
            warn_disabled(&self.path, e);
            self.conn = None;
        }
        self.stats.enabled = self.conn.is_some();
    }

    /// Deletes and recreates a malformed cache, but only when its header still says it is
    /// ours: a file whose header is gone cannot be told from someone else's, so it is left.
    fn rebuild(&mut self, problem: &str) {
        self.conn = None;
        self.stats.enabled = false;
        if !header_says_ours(&self.path) {
            self.refuse(format!(
                "is malformed ({problem}) and its header does not carry ctxzip's application id"
            ));
            return;
        }
        warn(&format!(
            "cache {} is malformed ({problem}); rebuilding it (cached results are recomputed)",
            self.path.display()
        ));
        self.stats.rebuilds += 1;
        remove_files(&self.path);
        match open_connection(&self.path) {
            Ok(conn) => self.conn = Some(conn),
            Err(OpenError::Foreign(what)) => self.refuse(what),
            Err(OpenError::Sqlite(e)) => warn_disabled(&self.path, &e),
        }
        self.stats.enabled = self.conn.is_some();
    }

    /// Leaves a file that is not ours exactly as it is, and says so once.
    fn refuse(&mut self, what: String) {
        warn(&format!(
            "{} {what}, so it is not a ctxzip cache; it was left untouched and this run has no \
             score cache (set {CACHE_ENV} to a new file path, or to `off`)",
            self.path.display()
        ));
        self.conn = None;
        self.stats.enabled = false;
        self.stats.refused = Some(what);
    }
}

/// Judges the file at `path` without writing to it: the header is read as bytes first, so a
/// file that is not SQLite never reaches SQLite; a SQLite file without our id is opened
/// read-only to tell an empty database or a schema-1 cache from another program's data.
fn probe(path: &Path) -> Ownership {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ownership::Vacant,
        // Let the open report it (a directory without permission, say) with its own wording.
        Err(_) => return Ownership::Vacant,
    };
    if !meta.is_file() {
        return Ownership::Foreign("is not a regular file".into());
    }
    if meta.len() == 0 {
        return Ownership::Vacant;
    }
    let header = match read_header(path) {
        Ok(header) => header,
        Err(e) => return Ownership::Foreign(format!("cannot be read ({e})")),
    };
    if header.len() < 100 || &header[..16] != SQLITE_MAGIC {
        return Ownership::Foreign("is not a SQLite database".into());
    }
    match header_application_id(&header) {
        APPLICATION_ID => return Ownership::Ours,
        0 => {}
        other => {
            return Ownership::Foreign(format!(
                "is a SQLite database of another program (application_id {other:#010x})"
            ));
        }
    }
    // `immutable=1`: no locks and no `-wal`/`-shm` siblings created beside someone else's file.
    // It also ignores a WAL, which is safe here: our own id is always in the main header, and a
    // schema-1 cache is checkpointed when its last user closes it.
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let uri = format!("file:{}?mode=ro&immutable=1", uri_path(path));
    match Connection::open_with_flags(uri, flags).and_then(|conn| classify(&conn)) {
        Ok(ownership) => ownership,
        Err(e) => Ownership::Foreign(format!(
            "is a SQLite database without ctxzip's application id that cannot be read ({e})"
        )),
    }
}

/// `path` percent-encoded for a `file:` URI.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Judges an open database by what SQLite reports (through the WAL, unlike the raw header).
fn classify(conn: &Connection) -> rusqlite::Result<Ownership> {
    let application_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if application_id == APPLICATION_ID {
        return Ok(Ownership::Ours);
    }
    if application_id != 0 {
        return Ok(Ownership::Foreign(format!(
            "is a SQLite database of another program (application_id {application_id:#010x})"
        )));
    }
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut statement = conn.prepare("SELECT type, name FROM sqlite_master ORDER BY name")?;
    let objects = statement
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if objects.is_empty() && version == 0 {
        return Ok(Ownership::Vacant);
    }
    let schema_one_objects = [
        ("table".to_string(), "chunk".to_string()),
        ("index".to_string(), "chunk_last_used".to_string()),
    ];
    if version == LEGACY_SCHEMA_VERSION
        && objects == schema_one_objects
        && chunk_columns(conn)? == COLUMNS[..6]
    {
        return Ok(Ownership::Ours);
    }
    let names: Vec<&str> = objects.iter().map(|(_, name)| name.as_str()).collect();
    Ok(Ownership::Foreign(format!(
        "is a SQLite database that ctxzip did not create (user_version {version}, objects: {})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )))
}

fn chunk_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info('chunk')")?;
    statement
        .query_map([], |r| r.get::<_, String>(0))?
        .collect()
}

/// The first 100 bytes of the file (fewer if it is shorter).
fn read_header(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)?
        .take(100)
        .read_to_end(&mut header)?;
    Ok(header)
}

fn header_application_id(header: &[u8]) -> i32 {
    let mut id = [0u8; 4];
    id.copy_from_slice(&header[APPLICATION_ID_OFFSET..APPLICATION_ID_OFFSET + 4]);
    i32::from_be_bytes(id)
}

/// Whether the file on disk is a SQLite file whose header carries our application id.
fn header_says_ours(path: &Path) -> bool {
    read_header(path).is_ok_and(|h| {
        h.len() == 100 && &h[..16] == SQLITE_MAGIC && header_application_id(&h) == APPLICATION_ID
    })
}

/// `Ok(None)` when `PRAGMA quick_check` passes, else its first complaint.
fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let result: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    Ok((result != "ok").then_some(result))
}

/// Opens (creating if needed) the cache. Processes that start together on a fresh file race
/// for the lock that switching to WAL and creating the schema take, and SQLite answers the
/// loser "database is locked" at once rather than through the busy handler; so the setup is
/// retried until `BUSY_TIMEOUT`.
fn open_connection(path: &Path) -> std::result::Result<Connection, OpenError> {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let started = std::time::Instant::now();
    loop {
        match try_open(path) {
            Err(OpenError::Sqlite(e)) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

fn try_open(path: &Path) -> std::result::Result<Connection, OpenError> {
    let mut conn = Connection::open(path).map_err(OpenError::Sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(OpenError::Sqlite)?;
    // Ownership is checked again under the write lock, before anything is written: the file
    // may have changed since the probe.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(OpenError::Sqlite)?;
    match classify(&tx).map_err(OpenError::Sqlite)? {
        Ownership::Foreign(what) => return Err(OpenError::Foreign(what)),
        Ownership::Vacant | Ownership::Ours => {}
    }
    create_schema(&tx).map_err(OpenError::Sqlite)?;
    tx.commit().map_err(OpenError::Sqlite)?;
    // WAL only after the id is committed in rollback mode, so that the id sits in the main
    // file's header (where `header_says_ours` reads it) rather than only in the WAL.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .map_err(OpenError::Sqlite)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(OpenError::Sqlite)?;
    // A schema-1 cache is already in WAL mode, so its new id went to the WAL: copy it into
    // the main file now (best effort; the next checkpoint does it anyway).
    if !header_says_ours(path) {
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    Ok(conn)
}

/// Creates the current schema in a database already judged ours, replacing another version's.
fn create_schema(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let version: i32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version != SCHEMA_VERSION {
        tx.execute_batch("DROP TABLE IF EXISTS chunk; DROP TABLE IF EXISTS file_chunks;")?;
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS chunk (
             model_sha256 TEXT NOT NULL,
             content_hash INTEGER NOT NULL,
             n_tokens INTEGER NOT NULL,
             token_nlls BLOB NOT NULL,
             bytes INTEGER NOT NULL,
             last_used INTEGER NOT NULL,
             checksum BLOB NOT NULL,
             PRIMARY KEY (model_sha256, content_hash)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS chunk_last_used ON chunk (last_used);
         CREATE TABLE IF NOT EXISTS file_chunks (
             key BLOB PRIMARY KEY,
             chunks BLOB NOT NULL,
             bytes INTEGER NOT NULL,
             last_used INTEGER NOT NULL,
             checksum BLOB NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS file_chunks_last_used ON file_chunks (last_used);",
    )?;
    let application_id: i32 = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if application_id != APPLICATION_ID {
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(())
}

/// blake3 over the key and the value, so that a value moved under another key fails too.
fn record_checksum(model_sha256: &str, content_hash: u64, n_tokens: u32, blob: &[u8]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(model_sha256.len() as u64).to_le_bytes());
    hasher.update(model_sha256.as_bytes());
    hasher.update(&content_hash.to_le_bytes());
    hasher.update(&n_tokens.to_le_bytes());
    hasher.update(blob);
    hasher.finalize().as_bytes()[..CHECKSUM_BYTES].to_vec()
}

/// blake3 over a file record's key and value (tagged apart from the score rows' checksums).
fn file_checksum(key: &FileKey, blob: &[u8]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"file_chunks");
    hasher.update(key);
    hasher.update(blob);
    hasher.finalize().as_bytes()[..CHECKSUM_BYTES].to_vec()
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

/// Removes a cache file and its WAL siblings; called only on a file judged ours.
fn remove_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn warn(message: &str) {
    eprintln!("ctxzip: warning: {message}");
}

/// One warning for a cache that cannot be used, with the fix for the likely cause.
fn warn_disabled(path: &Path, e: &rusqlite::Error) {
    let fix = match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => {
            "make the file and its directory writable, or set CTXZIP_CACHE to a writable path"
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            "make its directory writable, or set CTXZIP_CACHE to a writable path"
        }
        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => {
            "free disk space (or raise the file size limit), or set CTXZIP_CACHE to another disk"
        }
        _ => "delete the file if this persists, or set CTXZIP_CACHE=off",
    };
    warn(&format!(
        "cache {} is unusable ({e}); this run has no score cache ({fix})",
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

/// The disk cache as a backend uses it: every row keyed by the backend's model identity, so
/// results of different models or backends never mix. Shared by reference between threads
/// (the remote scorer's requests finish on several).
pub struct ScoreCache {
    disk: Mutex<DiskCache>,
    model_id: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ScoreCache {
    /// Opens the cache file at `path` for results of `model_id` (never fails: see
    /// [`DiskCache::open`]).
    pub fn open(path: &Path, cap_bytes: u64, model_id: &str) -> ScoreCache {
        ScoreCache {
            disk: Mutex::new(DiskCache::open(path, cap_bytes)),
            model_id: model_id.to_string(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Key of a query's own NLLs (given an empty chunk).
    pub fn query_key(query: &str) -> u64 {
        input_hash(&["query", query])
    }

    /// Key of the query's NLLs given a chunk.
    pub fn score_key(query: &str, chunk: &str) -> u64 {
        input_hash(&["score", query, chunk])
    }

    /// Key of a text's token NLLs, alone (by its text) or after a prefix.
    pub fn nlls_key(prefix: Option<&str>, text: &str) -> u64 {
        match prefix {
            None => text_hash(text),
            Some(prefix) => input_hash(&["nlls", prefix, text]),
        }
    }

    /// The per-token NLLs stored under `key`, when the record holds exactly `n` of them.
    pub fn get(&self, key: u64, n: usize) -> Option<Vec<f32>> {
        let record = self
            .disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.model_id, key);
        match record {
            Some(record) if record.token_nlls.len() == n => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(record.token_nlls)
            }
            _ => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores `(key, input tokens, per-token NLLs)` records.
    pub fn put_many(&self, records: Vec<(u64, usize, Vec<f32>)>) {
        if records.is_empty() {
            return;
        }
        let records: Vec<(u64, ChunkRecord)> = records
            .into_iter()
            .map(|(key, n_tokens, token_nlls)| {
                (
                    key,
                    ChunkRecord {
                        n_tokens: u32::try_from(n_tokens).unwrap_or(u32::MAX),
                        token_nlls,
                    },
                )
            })
            .collect();
        self.disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put_many(&self.model_id, &records);
    }

    /// Hits and misses since open.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// The disk cache as the chunk index's store ([`ChunkStore`]): files' chunks by their text,
/// in the same file as the scores. Shared between the index's threads.
pub struct ChunkCache {
    disk: Mutex<DiskCache>,
}

impl ChunkCache {
    /// Opens the cache file at `path` (never fails: see [`DiskCache::open`]).
    pub fn open(path: &Path, cap_bytes: u64) -> ChunkCache {
        ChunkCache {
            disk: Mutex::new(DiskCache::open(path, cap_bytes)),
        }
    }

    /// The cache where the score cache is ([`DiskCache::configured_path`]), with the default
    /// cap; `None` when the disk cache is off (`CTXZIP_CACHE=off`).
    pub fn open_configured() -> Option<ChunkCache> {
        DiskCache::configured_path().map(|path| ChunkCache::open(&path, DEFAULT_CAP_BYTES))
    }

    /// [`ChunkCache::open_configured`] as an index's store
    /// ([`ctxzip_chunker::index::Index::with_chunk_store`]), for the CLI and both servers.
    pub fn configured_store() -> Option<Arc<dyn ChunkStore>> {
        ChunkCache::open_configured().map(|cache| Arc::new(cache) as Arc<dyn ChunkStore>)
    }

    pub fn stats(&self) -> CacheStats {
        self.disk.lock().unwrap_or_else(|e| e.into_inner()).stats()
    }
}

impl ChunkStore for ChunkCache {
    fn get_many(&self, keys: &[FileKey]) -> Vec<Option<Vec<u8>>> {
        self.disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_file_chunks(keys)
    }

    fn put_many(&self, records: &[(FileKey, Vec<u8>)]) {
        self.disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put_file_chunks(records);
    }
}

/// Key of a model input made of several texts (a kind tag first): each part is
/// length-prefixed, so different splits of the same bytes never collide.
fn input_hash(parts: &[&str]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Content hash of a text: keys its unconditional NLLs, its token count and KV states.
pub fn text_hash(text: &str) -> u64 {
    let digest = blake3::hash(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
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
    fn files_chunks_share_the_cap_with_the_scores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let mut cache = DiskCache::open(&path, 40_000);
        cache.put("m", 1, &record(100));
        // The score row is the oldest: the first to go.
        let conn = cache.conn.as_ref().unwrap();
        conn.execute("UPDATE chunk SET last_used = 0", []).unwrap();
        let key = |i: u32| {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&i.to_le_bytes());
            key
        };
        for batch in 0..20u32 {
            let records: Vec<(FileKey, Vec<u8>)> = (0..10)
                .map(|i| (key(batch * 10 + i), vec![7u8; 400]))
                .collect();
            cache.put_file_chunks(&records);
        }
        assert!(cache.used_bytes() <= 40_000, "{}", cache.used_bytes());
        assert!(cache.used_bytes() > 0);
        assert_eq!(cache.get("m", 1), None);
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let bytes = vec![0xAB; 8192];
        std::fs::write(&path, &bytes).unwrap();
        let mut cache = DiskCache::open(&path, 1 << 20);
        assert!(!cache.stats().enabled);
        assert_eq!(
            cache.stats().refused.as_deref(),
            Some("is not a SQLite database")
        );
        cache.put("m", 7, &record(2));
        assert_eq!(cache.get("m", 7), None);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_new_file_carries_the_application_id_in_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let cache = DiskCache::open(&path, 1 << 20);
        assert!(cache.stats().enabled);
        assert!(header_says_ours(&path));
        drop(cache);
        // An empty file is ours to fill.
        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, b"").unwrap();
        assert!(DiskCache::open(&empty, 1 << 20).stats().enabled);
        assert!(header_says_ours(&empty));
    }

    #[test]
    fn our_own_file_of_another_schema_version_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE chunk (x); PRAGMA application_id = {APPLICATION_ID}; \
                 PRAGMA user_version = 999;"
            ))
            .unwrap();
        }
        let mut cache = DiskCache::open(&path, 1 << 20);
        cache.put("m", 1, &record(1));
        assert_eq!(cache.get("m", 1), Some(record(1)));
    }

    #[test]
    fn a_schema_one_cache_is_recognised_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE chunk (
                     model_sha256 TEXT NOT NULL, content_hash INTEGER NOT NULL,
                     n_tokens INTEGER NOT NULL, token_nlls BLOB NOT NULL,
                     bytes INTEGER NOT NULL, last_used INTEGER NOT NULL,
                     PRIMARY KEY (model_sha256, content_hash)) WITHOUT ROWID;
                 CREATE INDEX chunk_last_used ON chunk (last_used);
                 INSERT INTO chunk VALUES ('m', 1, 1, x'00000000', 40, 0);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut cache = DiskCache::open(&path, 1 << 20);
        assert!(cache.stats().enabled, "{:?}", cache.stats());
        // The old row is gone with the old table (it had no checksum).
        assert_eq!(cache.get("m", 1), None);
        cache.put("m", 1, &record(1));
        assert_eq!(cache.get("m", 1), Some(record(1)));
        assert!(header_says_ours(&path));
    }

    #[test]
    fn a_record_under_another_key_fails_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let mut cache = DiskCache::open(&path, 1 << 20);
        cache.put("m", 1, &record(3));
        cache.put("m", 2, &record(4));
        // Move record 2's value under key 1, as a damaged page could.
        let conn = cache.conn.as_ref().unwrap();
        conn.execute_batch(
            "UPDATE chunk SET (n_tokens, token_nlls, checksum) =
             (SELECT n_tokens, token_nlls, checksum FROM chunk WHERE content_hash = 2)
             WHERE content_hash = 1",
        )
        .unwrap();
        assert_eq!(cache.get("m", 1), None);
        assert_eq!(cache.stats().bad_records, 1);
        assert_eq!(cache.get("m", 2), Some(record(4)));
        // The bad row was deleted, so the next lookup is a plain miss.
        assert_eq!(cache.get("m", 1), None);
        assert_eq!(cache.stats().bad_records, 1);
    }
}
