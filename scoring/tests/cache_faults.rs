//! Faults in the score cache (issue 12): damaged records, a malformed database, files that are
//! not ours, a read-only file or directory, `kill -9` in the middle of a write and a full disk.
//! Each must end with a clear message, no wrong answer, and nothing deleted that is not ours.
//!
//! Faults that need a whole process (a kill, a file size limit, another user) run the cache in
//! a child: this test binary started again on [`child_entry`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ctxzip_scoring::cache::{APPLICATION_ID, ChunkRecord, DiskCache};
use rusqlite::Connection;

const MODEL: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const CAP_BYTES: u64 = 1 << 30;

/// The value stored under `hash`: different for every key (20-69 pseudo-random values), so a
/// value served under the wrong key, or with damaged bytes, does not compare equal, and no
/// key's bytes appear inside another's.
fn expected(hash: u64) -> ChunkRecord {
    let n = 20 + (hash % 50) as u32;
    ChunkRecord {
        n_tokens: n,
        token_nlls: (0..u64::from(n))
            .map(|i| (mix(hash << 8 | i) % 1_000_000) as f32 / 1000.0)
            .collect(),
    }
}

/// splitmix64's finaliser.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn populate(path: &Path, keys: std::ops::Range<u64>) {
    let mut cache = DiskCache::open(path, CAP_BYTES);
    assert!(cache.stats().enabled, "{:?}", cache.stats());
    let records: Vec<(u64, ChunkRecord)> = keys.map(|k| (k, expected(k))).collect();
    cache.put_many(MODEL, &records);
    // Dropping the last connection checkpoints the WAL into the main file.
}

/// Every key is either a miss or exactly its value; returns the keys that hit.
fn assert_never_wrong(cache: &mut DiskCache, keys: std::ops::Range<u64>) -> Vec<u64> {
    let mut hits = Vec::new();
    for key in keys {
        if let Some(record) = cache.get(MODEL, key) {
            assert_eq!(record, expected(key), "key {key} served a wrong value");
            hits.push(key);
        }
    }
    hits
}

/// Deterministic noise (xorshift), so a failure reproduces.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn application_id(path: &Path) -> i32 {
    Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap()
}

fn quick_check(path: &Path) -> String {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Damage inside a cache that is ours.

#[test]
fn damaged_values_are_dropped_recomputed_and_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite");
    populate(&path, 0..400);
    // Flip a byte inside the stored value of five records: the b-tree stays valid (so
    // `quick_check` passes) and only the checksums can tell.
    let mut file = std::fs::read(&path).unwrap();
    let damaged: Vec<u64> = vec![10, 11, 12, 200, 333];
    for key in &damaged {
        let blob: Vec<u8> = expected(*key)
            .token_nlls
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let at: Vec<usize> = file
            .windows(blob.len())
            .enumerate()
            .filter(|(_, w)| *w == blob.as_slice())
            .map(|(i, _)| i)
            .collect();
        // Page splits leave stale copies of a cell behind; damage them all, live one included.
        assert!(!at.is_empty(), "record {key} is in the main file");
        for at in at {
            file[at + blob.len() / 2] ^= 0x40;
        }
    }
    std::fs::write(&path, &file).unwrap();

    let out = child("read", &path, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("hits 395 misses 5 bad 5 rebuilds 0 wrong 0"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        stderr.matches("failed its checksum").count(),
        1,
        "one warning, not one per record: {stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");

    // The bad rows were deleted: the next run misses them plainly, recomputes and stores them.
    let mut cache = DiskCache::open(&path, CAP_BYTES);
    for key in &damaged {
        assert_eq!(
            cache.get(MODEL, *key),
            None,
            "key {key}\n{stdout}\n{stderr}"
        );
        cache.put(MODEL, *key, &expected(*key));
    }
    assert_eq!(cache.stats().bad_records, 0);
    assert_eq!(assert_never_wrong(&mut cache, 0..400).len(), 400);
}

#[test]
fn random_bytes_in_the_middle_never_give_a_wrong_answer() {
    for seed in 1..=4u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        populate(&path, 0..600);
        let len = std::fs::metadata(&path).unwrap().len();
        // 8 KiB of noise into the middle of the file, as the hostile test did.
        overwrite(&path, len / 2 - 4096 + seed * 512, &noise(8192, seed));

        let mut cache = DiskCache::open(&path, CAP_BYTES);
        let hits = assert_never_wrong(&mut cache, 0..600);
        let stats = cache.stats();
        assert!(
            hits.len() < 600 && (stats.bad_records > 0 || stats.rebuilds > 0),
            "seed {seed}: the damage was noticed: {stats:?}"
        );
        assert_eq!(
            stats.refused, None,
            "seed {seed}: our own file is never refused"
        );
        // Recompute what was lost; the cache is whole again and sound.
        for key in 0..600 {
            if cache.get(MODEL, key).is_none() {
                cache.put(MODEL, key, &expected(key));
            }
        }
        drop(cache);
        assert_eq!(quick_check(&path), "ok", "seed {seed}");
        let mut cache = DiskCache::open(&path, CAP_BYTES);
        assert_eq!(
            assert_never_wrong(&mut cache, 0..600).len(),
            600,
            "seed {seed}"
        );
    }
}

#[test]
fn a_malformed_database_of_ours_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite");
    populate(&path, 0..400);
    let len = std::fs::metadata(&path).unwrap().len();
    // Every page but the first (which holds the header and the schema) becomes noise.
    overwrite(&path, 4096, &noise((len - 4096) as usize, 99));

    let mut cache = DiskCache::open(&path, CAP_BYTES);
    assert!(assert_never_wrong(&mut cache, 0..400).is_empty());
    let stats = cache.stats();
    assert_eq!(stats.rebuilds, 1, "{stats:?}");
    assert!(stats.enabled, "the rebuilt cache is used: {stats:?}");
    cache.put(MODEL, 7, &expected(7));
    assert_eq!(cache.get(MODEL, 7), Some(expected(7)));
    drop(cache);
    assert_eq!(quick_check(&path), "ok");
    assert_eq!(application_id(&path), APPLICATION_ID);
}

// ---------------------------------------------------------------------------------------------
// Files that are not ours: never altered, never deleted.

/// Opens the cache at `path` as a run would (and tries to use it), then checks that the file
/// and its would-be siblings are exactly as before.
fn assert_refused_and_untouched(path: &Path, expect_reason: &str) {
    let before = std::fs::read(path).ok();
    let siblings_before: Vec<bool> = ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| sibling(path, s).exists())
        .collect();
    let mut cache = DiskCache::open(path, CAP_BYTES);
    cache.put(MODEL, 1, &expected(1));
    assert_eq!(cache.get(MODEL, 1), None);
    let stats = cache.stats();
    assert!(!stats.enabled);
    let reason = stats.refused.unwrap_or_default();
    assert!(reason.contains(expect_reason), "{reason}");
    drop(cache);
    assert_eq!(
        std::fs::read(path).ok(),
        before,
        "{} changed",
        path.display()
    );
    let siblings_after: Vec<bool> = ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| sibling(path, s).exists())
        .collect();
    assert_eq!(siblings_after, siblings_before);
}

#[test]
fn a_text_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.txt");
    std::fs::write(&path, "notes\n").unwrap();
    std::fs::write(sibling(&path, "-wal"), "mine too\n").unwrap();
    assert_refused_and_untouched(&path, "is not a SQLite database");
    assert_eq!(
        std::fs::read_to_string(sibling(&path, "-wal")).unwrap(),
        "mine too\n"
    );
}

#[test]
fn a_foreign_database_with_a_chunk_table_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE chunk (id INTEGER PRIMARY KEY, body TEXT);
             INSERT INTO chunk (body) VALUES ('first'), ('second');
             PRAGMA user_version = 7;",
        )
        .unwrap();
    }
    assert_refused_and_untouched(&path, "ctxzip did not create");
    let conn = Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM chunk", [], |r| r.get(0))
        .unwrap();
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!((rows, version), (2, 7));
}

#[test]
fn a_database_with_a_schema_like_ours_in_wal_mode_is_refused() {
    // The same table as ours but without our id and at another version: not recognisably a
    // ctxzip cache, and WAL mode means SQLite itself must read it (the id may sit in the WAL).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lookalike.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE chunk (model_sha256 TEXT, content_hash INTEGER, n_tokens INTEGER,
                                 token_nlls BLOB, bytes INTEGER, last_used INTEGER);
             PRAGMA user_version = 5;",
        )
        .unwrap();
    }
    assert_refused_and_untouched(&path, "ctxzip did not create");
}

#[test]
fn another_programs_application_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA application_id = 1234; CREATE TABLE t (x);")
            .unwrap();
    }
    assert_refused_and_untouched(&path, "application_id 0x000004d2");
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "x").unwrap();
    let cache = DiskCache::open(dir.path(), CAP_BYTES);
    assert!(!cache.stats().enabled);
    assert_eq!(
        cache.stats().refused.as_deref(),
        Some("is not a regular file")
    );
    assert!(dir.path().join("keep.txt").exists());
}

// ---------------------------------------------------------------------------------------------
// Faults of the process and the file system.

#[test]
fn kill_9_in_the_middle_of_writes_leaves_a_sound_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite");
    let mut writer = child_command("write-forever", &path, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a few committed batches, then kill it while it writes the next ones.
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut committed = 0;
    while committed < 20 && started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(n) = line.strip_prefix("committed ") {
                    committed = n.trim().parse().unwrap();
                }
            }
            _ => break,
        }
    }
    writer.kill().unwrap(); // SIGKILL
    writer.wait().unwrap();
    assert!(committed >= 20, "the writer committed {committed} batches");

    let mut cache = DiskCache::open(&path, CAP_BYTES);
    assert!(cache.stats().enabled, "{:?}", cache.stats());
    // Every batch the writer reported committed survived, and nothing is wrong.
    let hits = assert_never_wrong(&mut cache, 0..(committed + 50) * 50);
    assert!(hits.len() as u64 >= committed * 50, "{} hits", hits.len());
    assert_eq!(cache.stats().bad_records, 0);
    drop(cache);
    assert_eq!(quick_check(&path), "ok");
}

#[test]
fn a_full_disk_disables_the_cache_with_a_message_and_keeps_it_sound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite");
    populate(&path, 0..100);
    // RLIMIT_FSIZE at 256 KiB (512-byte blocks in dash, 1 KiB in bash: either is far below
    // what the child writes); SIGXFSZ ignored, so a write past it fails with EFBIG as a write
    // to a full disk fails with ENOSPC, instead of killing the process.
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 512; exec \"$@\"")
        .arg("sh")
        .arg(&exe)
        .args(child_args())
        .env("CTXZIP_FAULT_CHILD", "write-many")
        .env("CTXZIP_FAULT_PATH", &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child did not crash: {stderr}");
    assert!(
        stderr.contains("is unusable") && stderr.contains("free disk space"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("ctxzip: warning").count(), 1, "{stderr}");

    let mut cache = DiskCache::open(&path, CAP_BYTES);
    let hits = assert_never_wrong(&mut cache, 0..20_000);
    assert!(hits.len() >= 100, "the records from before are kept");
    drop(cache);
    assert_eq!(quick_check(&path), "ok");
}

/// The child runs as another user when this test runs as root, since root writes through
/// permission bits.
fn as_unprivileged(command: Command) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        return command;
    }
    let mut wrapped = Command::new("setpriv");
    wrapped.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    wrapped.arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(key, value);
        }
    }
    wrapped
}

#[test]
fn a_read_only_cache_file_or_directory_is_reported_and_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A populated cache, read-only, in a read-only directory.
    let ro_dir = dir.path().join("ro");
    std::fs::create_dir(&ro_dir).unwrap();
    let path = ro_dir.join("cache.sqlite");
    populate(&path, 0..50);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = as_unprivileged(child_command("read-write", &path, &[]))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("wrong 0"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("writable"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A new cache in a directory it may not write to.
    let new_path = ro_dir.join("new.sqlite");
    let out = as_unprivileged(child_command("read-write", &new_path, &[]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&new_path.display().to_string()) && stderr.contains("writable"),
        "{stderr}"
    );
    assert!(!new_path.exists());
    std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The child process.

fn child_args() -> [&'static str; 5] {
    [
        "child_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

fn child_command(scenario: &str, path: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(child_args())
        .env("CTXZIP_FAULT_CHILD", scenario)
        .env("CTXZIP_FAULT_PATH", path);
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command
}

fn child(scenario: &str, path: &Path, extra_env: &[(&str, &str)]) -> Output {
    child_command(scenario, path, extra_env).output().unwrap()
}

/// Not a test: the body of the child processes the tests above start (`--ignored --exact`),
/// chosen by `CTXZIP_FAULT_CHILD`. Ignored so that a plain `cargo test` does not run it.
#[test]
#[ignore = "the entry point of the fault tests' child processes"]
fn child_entry() {
    let scenario = std::env::var("CTXZIP_FAULT_CHILD").expect("CTXZIP_FAULT_CHILD is set");
    let path = PathBuf::from(std::env::var_os("CTXZIP_FAULT_PATH").expect("a cache path"));
    let mut cache = DiskCache::open(&path, CAP_BYTES);
    match scenario.as_str() {
        "read" | "read-write" => {
            let mut wrong = 0;
            for key in 0..400 {
                if let Some(record) = cache.get(MODEL, key) {
                    wrong += usize::from(record != expected(key));
                }
            }
            if scenario == "read-write" {
                cache.put(MODEL, 1000, &expected(1000));
            }
            let s = cache.stats();
            println!(
                "hits {} misses {} bad {} rebuilds {} wrong {wrong}",
                s.hits, s.misses, s.bad_records, s.rebuilds
            );
        }
        "write-forever" => {
            for batch in 0u64.. {
                let records: Vec<(u64, ChunkRecord)> = (batch * 50..(batch + 1) * 50)
                    .map(|k| (k, expected(k)))
                    .collect();
                cache.put_many(MODEL, &records);
                println!("committed {}", batch + 1);
            }
        }
        "write-many" => {
            for batch in 0u64..400 {
                let records: Vec<(u64, ChunkRecord)> = (batch * 50..(batch + 1) * 50)
                    .map(|k| (k, expected(k)))
                    .collect();
                cache.put_many(MODEL, &records);
            }
        }
        other => panic!("unknown scenario {other}"),
    }
}
