//! `scripts/bench-lsp` runs this: the language server's numbers for BENCHMARKS.md.
//!
//! 1. Edit-to-updated-index latency: typing into a 2000-line file open in the [`Index`]
//!    (incremental reparse and rechunk per keystroke), p50/p95/max.
//! 2. Over stdio, the real `ctxzip lsp` on a large workspace: cold index time (initialize to
//!    the end of `$/progress`), files, chunks, resident memory.
//! 3. Compress latency in one long-lived server with a fresh cache directory: the first
//!    query (cold), the same query again, the same query after typing into its best chunk,
//!    and two new queries.
//!
//! Usage: bench-lsp --bin target/release/ctxzip --workspace DIR --edit-file FILE
//!        [--model NAME] [--edits N] [--edits-only]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctxzip_chunker::Lang;
use ctxzip_chunker::index::{Index, PositionEncoding, TextChange, TextPosition};
use ctxzip_chunker::workspace::WalkOptions;
use ctxzip_lsp::client::LspClient;
use serde_json::{Value, json};

struct Args {
    bin: PathBuf,
    workspace: PathBuf,
    edit_file: PathBuf,
    model: Option<String>,
    edits: usize,
    /// Only the in-process edit benchmark.
    edits_only: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        bin: PathBuf::from("target/release/ctxzip"),
        workspace: PathBuf::new(),
        edit_file: PathBuf::new(),
        model: None,
        edits: 1000,
        edits_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--edits-only" {
            args.edits_only = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => args.bin = value.into(),
            "--workspace" => args.workspace = value.into(),
            "--edit-file" => args.edit_file = value.into(),
            "--model" => args.model = Some(value),
            "--edits" => args.edits = value.parse().expect("--edits N"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args = parse_args();
    edit_latency(&args);
    if !args.edits_only {
        server(&args);
    }
}

/// Types into a 2000-line file: each keystroke inserts or deletes one character inside a
/// line, as an editor's didChange would, and is timed until the chunks are current.
fn edit_latency(args: &Args) {
    let text = std::fs::read_to_string(&args.edit_file).expect("readable --edit-file");
    let text: String = text.split_inclusive('\n').take(2000).collect();
    let n_lines = text.lines().count();
    let dir = std::env::temp_dir().join(format!("ctxzip-bench-lsp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("edited.rs");
    std::fs::write(&path, &text).unwrap();
    let index = Index::new(WalkOptions::default());
    let root = index.add_root(&dir).unwrap();
    let (key, _) = index.resolve(&path).unwrap();
    index.load(&root, std::slice::from_ref(&key));
    let started = Instant::now();
    index.open(&key, Some(Lang::Rust), 1, text.clone());
    let open_ms = started.elapsed().as_secs_f64() * 1e3;

    // Deterministic spread of edit lines; keystrokes alternate insert / delete so the text
    // stays the same size.
    let lines: Vec<&str> = text.lines().collect();
    let mut times_ms = Vec::with_capacity(args.edits);
    let mut with_chunks_ms = Vec::with_capacity(args.edits);
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut pending_delete: Option<TextPosition> = None;
    for version in 0..args.edits {
        let change = match pending_delete.take() {
            Some(at) => TextChange {
                range: Some((
                    at,
                    TextPosition {
                        line: at.line,
                        character: at.character + 1,
                    },
                )),
                text: String::new(),
            },
            None => {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let line = (state % n_lines as u64) as u32;
                let len = lines[line as usize].encode_utf16().count() as u32;
                let at = TextPosition {
                    line,
                    character: len / 2,
                };
                pending_delete = Some(at);
                TextChange {
                    range: Some((at, at)),
                    text: "x".into(),
                }
            }
        };
        let started = Instant::now();
        index
            .change(&key, version as i32 + 2, &[change], PositionEncoding::Utf16)
            .expect("edit applies");
        let edited = started.elapsed().as_secs_f64() * 1e3;
        times_ms.push(edited);
        // What a query right after this keystroke pays on top: the chunk pass and the
        // snapshot copy.
        let started = Instant::now();
        let snapshot = index.snapshot(None);
        assert!(snapshot[0].from_buffer);
        with_chunks_ms.push(edited + started.elapsed().as_secs_f64() * 1e3);
    }
    times_ms.sort_by(f64::total_cmp);
    with_chunks_ms.sort_by(f64::total_cmp);
    let chunks = index.buffer_chunks(&key).map_or(0, |c| c.len());
    println!("## edit-to-updated-index ({n_lines}-line Rust file, {chunks} chunks)");
    println!();
    println!("| edits | open (full parse) ms | measured | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (what, times) in [
        ("edit + incremental reparse (each didChange)", &times_ms),
        (
            "edit + chunks + snapshot (a query right after)",
            &with_chunks_ms,
        ),
    ] {
        println!(
            "| {} | {open_ms:.2} | {what} | {:.3} | {:.3} | {:.3} |",
            times.len(),
            percentile(times, 0.5),
            percentile(times, 0.95),
            times[times.len() - 1]
        );
    }
    println!();
    let _ = std::fs::remove_dir_all(&dir);
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn server(args: &Args) {
    let root = std::fs::canonicalize(&args.workspace).expect("--workspace exists");
    let lines: usize = ignore_lines(&root);
    // The model by path and a fresh cache directory: "cold" means no cached results from
    // earlier runs.
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| ctxzip_scoring::models::DEFAULT_MODEL.to_string());
    let output = Command::new(&args.bin)
        .args(["model", "path", &model])
        .stderr(Stdio::inherit())
        .output()
        .expect("ctxzip model path runs");
    assert!(output.status.success(), "ctxzip model path {model} failed");
    let model_path = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let cache_dir = std::env::temp_dir().join(format!("ctxzip-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache_dir);
    std::fs::create_dir_all(&cache_dir).unwrap();
    let mut client = LspClient::spawn(
        Command::new(&args.bin)
            .arg("lsp")
            .env("XDG_CACHE_HOME", &cache_dir)
            .stderr(Stdio::inherit()),
    )
    .expect("server starts");
    let pid = client.id();
    let root_uri = format!("file://{}", root.display());
    let wait = Duration::from_secs(1200);
    let init_options = json!({"model": model_path});
    let started = Instant::now();
    let response = client.request(
        "initialize",
        json!({
            "processId": null,
            "rootUri": root_uri,
            "capabilities": {"window": {"workDoneProgress": true}},
            "initializationOptions": init_options,
        }),
        wait,
    );
    assert!(response.get("result").is_some(), "{response}");
    client.notify("initialized", json!({})).unwrap();
    let end = client
        .wait_for(
            |m| m["method"] == "$/progress" && m["params"]["value"]["kind"] == "end",
            wait,
        )
        .expect("indexing ends");
    let index_s = started.elapsed().as_secs_f64();
    let status = client.request("ctxzip/status", Value::Null, wait)["result"].clone();
    let (rss_index, _) = rss_kib(pid);

    // Wait for the model the server loads in the background.
    let load_started = Instant::now();
    loop {
        let status = client.request("ctxzip/status", Value::Null, wait)["result"].clone();
        if status["model"]["loaded"] == true {
            break;
        }
        assert!(load_started.elapsed() < wait, "model never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let model_wait_s = load_started.elapsed().as_secs_f64();
    let status_model = client.request("ctxzip/status", Value::Null, wait)["result"].clone();

    let first = "how does the runtime schedule a task that is woken from another thread?";
    let timed = "how does a oneshot channel wake the receiver when the value is sent?";
    let steps = [
        ("cold", first, None),
        ("warm, same query", first, None),
        (
            "warm, same query after an edit to its top chunk",
            first,
            None,
        ),
        (
            "warm, new query",
            "where is the timer wheel advanced and expired timers fired?",
            None,
        ),
        (
            "warm, third query",
            "how are bytes read from a TCP stream into a buffer?",
            None,
        ),
        // A latency budget (deadlineMs): the answer within it; the server then finishes the
        // model work in the background; the same request asked after that (and without a
        // deadline, the full answer) comes from the cache.
        ("warm, new query, deadlineMs 2000", timed, Some(2000)),
        (
            "the same, deadlineMs 2000, asked again at once",
            timed,
            Some(2000),
        ),
        (
            "the same, deadlineMs 2000, after the background completion",
            timed,
            Some(2000),
        ),
        ("the same without a deadline (the full answer)", timed, None),
    ];
    let mut rows = Vec::new();
    let mut top: Option<(String, u64)> = None;
    for (label, query, deadline_ms) in steps {
        if label.contains("after an edit") {
            // Open the best chunk's file and type a comment line into the chunk, unsaved.
            let (uri, line) = top.clone().expect("the first query returned chunks");
            let path = uri.strip_prefix("file://").expect("a file URI");
            let text = std::fs::read_to_string(path).expect("result file is readable");
            client
                .notify(
                    "textDocument/didOpen",
                    json!({"textDocument": {"uri": uri, "languageId": "rust", "version": 1, "text": text}}),
                )
                .unwrap();
            client
                .notify(
                    "textDocument/didChange",
                    json!({
                        "textDocument": {"uri": uri, "version": 2},
                        "contentChanges": [{
                            "range": {"start": {"line": line + 1, "character": 0}, "end": {"line": line + 1, "character": 0}},
                            "text": "    // an edit the bench typed\n",
                        }],
                    }),
                )
                .unwrap();
        }
        if label.contains("after the background completion") {
            let waiting = Instant::now();
            loop {
                let status = client.request("ctxzip/status", Value::Null, wait)["result"].clone();
                if status["refining"] == false {
                    break;
                }
                assert!(waiting.elapsed() < wait, "the refinement never ended");
                std::thread::sleep(Duration::from_millis(100));
            }
            println!(
                "background completion ended {:.1} s after the previous answer",
                waiting.elapsed().as_secs_f64()
            );
        }
        let started = Instant::now();
        let response = client.request(
            "ctxzip/compress",
            json!({"query": query, "budget": 2000, "deadlineMs": deadline_ms}),
            wait,
        );
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let result = &response["result"];
        let stats = &result["stats"];
        assert!(stats.is_object(), "{response}");
        if top.is_none() {
            let chunk = &result["chunks"][0];
            top = Some((
                chunk["uri"].as_str().expect("chunk uri").to_string(),
                chunk["range"]["start"]["line"]
                    .as_u64()
                    .expect("chunk range"),
            ));
        }
        let kept: Vec<String> = result["chunks"]
            .as_array()
            .map(|chunks| {
                chunks
                    .iter()
                    .map(|c| format!("{}:{}", c["uri"], c["range"]["start"]["line"]))
                    .collect()
            })
            .unwrap_or_default();
        rows.push((label, ms, stats.clone(), kept));
    }
    let (rss_after, hwm) = rss_kib(pid);
    let status_after = client.request("ctxzip/status", Value::Null, wait)["result"].clone();
    let _ = client.request("shutdown", Value::Null, wait);
    let _ = client.notify("exit", Value::Null);

    println!("## server over stdio: {}", root.display());
    println!();
    println!(
        "{} source lines; model {} ({}); {}",
        lines,
        status_model["model"]["name"].as_str().unwrap_or("?"),
        status_model["model"]["path"].as_str().unwrap_or("?"),
        status_model["model"]["build"].as_str().unwrap_or("?"),
    );
    println!();
    println!("| files | chunks | cold index s | RSS after index MiB | model ready after index s |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {} | {index_s:.2} | {} | {model_wait_s:.2} |",
        status["files"],
        status["chunks"],
        rss_index / 1024,
    );
    println!();
    println!("progress end: {}", end["params"]["value"]["message"]);
    println!();
    // How much of the full answer (the last step) each answer to the same query holds.
    let (_, _, _, full) = rows.last().expect("steps ran");
    let full = full.clone();
    println!(
        "| query | wall ms | model tokens | candidates | deadline skipped | compressed tokens | chunks of the full answer |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, ms, stats, kept) in &rows {
        let overlap = if label.contains("deadlineMs") || label.contains("full answer") {
            let shared = kept.iter().filter(|k| full.contains(k)).count();
            format!("{shared} of {}", full.len())
        } else {
            String::new()
        };
        println!(
            "| {label} | {ms:.0} | {} | {} | {} | {} | {overlap} |",
            stats["model_tokens"],
            stats["candidates"],
            stats["deadline_skipped"],
            stats["compressed_tokens"]
        );
    }
    println!();
    let _ = std::fs::remove_dir_all(&cache_dir);
    println!(
        "RSS after queries {} MiB (peak {} MiB); cache: {}",
        rss_after / 1024,
        hwm / 1024,
        status_after["cache"]
    );
}

/// Lines of the files the walk keeps (what "a 100k-line workspace" counts).
fn ignore_lines(root: &std::path::Path) -> usize {
    let (paths, _) = ctxzip_chunker::workspace::discover(root, &WalkOptions::default())
        .expect("workspace walks");
    paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.lines().count())
        .sum()
}
