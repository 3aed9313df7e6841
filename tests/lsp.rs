//! End-to-end tests of `ctxzip lsp`: the real binary over stdio, speaking LSP JSON-RPC, on a
//! small workspace written here, with the small real model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctxzip_lsp::client::LspClient;
use ctxzip_lsp::protocol::codes;
use serde_json::{Value, json};

const MODEL: &str = "smollm2-135m";
const WAIT: Duration = Duration::from_secs(60);

struct Session {
    client: LspClient,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A workspace of a few Rust files.
fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

const LIB_RS: &str = "\
//! Config loading — «unicode» before the code.

/// Parses «the» config file 😀 here.
pub fn parse_config(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

pub fn render_banner(name: &str) -> String {
    format!(\"== {name} ==\")
}
";

const NET_RS: &str = "\
/// Retries a request with exponential backoff.
pub fn retry_with_backoff(attempts: u32) -> u64 {
    let mut delay_ms = 100;
    for _ in 0..attempts {
        delay_ms *= 2;
    }
    delay_ms
}
";

const PANIC_QUERY: &str = "please panic inside the pipeline";

fn start(dir: tempfile::TempDir) -> Session {
    start_with(dir, &[])
}

fn start_with(dir: tempfile::TempDir, args: &[&str]) -> Session {
    start_with_env(dir, args, &[])
}

fn start_with_env(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &Path)]) -> Session {
    start_with_options(
        dir,
        args,
        env,
        json!({"model": MODEL, "offline": true, "budget": 400}),
    )
}

fn start_with_options(
    dir: tempfile::TempDir,
    args: &[&str],
    env: &[(&str, &Path)],
    initialization_options: Value,
) -> Session {
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let log = std::fs::File::create(root.join(".server-stderr.log")).unwrap();
    let client = LspClient::spawn(
        Command::new(env!("CARGO_BIN_EXE_ctxzip"))
            .arg("lsp")
            .args(args)
            .envs(env.iter().copied())
            .env("CTXZIP_LSP_TEST_PANIC_QUERY", PANIC_QUERY)
            .env("CTXZIP_CACHE", common::test_cache())
            .stderr(Stdio::from(log)),
    )
    .expect("ctxzip lsp starts");
    let mut session = Session {
        client,
        root,
        _dir: dir,
    };
    let root_uri = uri(&session.root);
    let response = session.client.request(
        "initialize",
        json!({
            "processId": null,
            "rootUri": root_uri,
            "workspaceFolders": [{"uri": root_uri, "name": "ws"}],
            "capabilities": {
                "window": {"workDoneProgress": true},
                "workspace": {
                    "didChangeWatchedFiles": {"dynamicRegistration": true},
                    "workspaceFolders": true
                }
            },
            "initializationOptions": initialization_options
        }),
        WAIT,
    );
    let caps = &response["result"]["capabilities"];
    assert_eq!(
        caps["executeCommandProvider"]["commands"],
        json!(["ctxzip.compress"]),
        "{response}"
    );
    assert_eq!(caps["textDocumentSync"]["change"], json!(2), "{response}");
    session.client.notify("initialized", json!({})).unwrap();
    session
}

impl Session {
    fn status(&mut self) -> Value {
        let response = self.client.request("ctxzip/status", Value::Null, WAIT);
        response["result"].clone()
    }

    /// Waits until indexing and every queued index job are done.
    fn wait_ready(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status();
            if status["indexing"]["state"] == "ready" {
                return status;
            }
            assert!(Instant::now() < deadline, "index never ready: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn compress(&mut self, params: Value) -> Value {
        self.client.request("ctxzip/compress", params, WAIT)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn shutdown(mut self) -> std::process::ExitStatus {
        let response = self.client.request("shutdown", Value::Null, WAIT);
        assert_eq!(response["result"], Value::Null, "{response}");
        self.client.notify("exit", Value::Null).unwrap();
        self.client
            .wait_exit(Duration::from_secs(10))
            .expect("server exits after exit")
    }
}

fn error_code(response: &Value) -> i64 {
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error: {response}"))
}

#[test]
fn indexing_reports_progress_then_status_is_complete() {
    let mut s = start(workspace(&[("src/lib.rs", LIB_RS), ("src/net.rs", NET_RS)]));
    let create = s
        .client
        .wait_for(|m| m["method"] == "window/workDoneProgress/create", WAIT)
        .expect("the server creates a progress token");
    let token = create["params"]["token"].clone();
    let is_progress = |kind: &'static str| {
        let token = token.clone();
        move |m: &Value| {
            m["method"] == "$/progress"
                && m["params"]["token"] == token
                && m["params"]["value"]["kind"] == kind
        }
    };
    s.client
        .wait_for(is_progress("begin"), WAIT)
        .expect("progress begin");
    let end = s
        .client
        .wait_for(is_progress("end"), WAIT)
        .expect("progress end");
    assert!(
        end["params"]["value"]["message"]
            .as_str()
            .unwrap()
            .contains("indexed 2 files"),
        "{end}"
    );
    let status = s.wait_ready();
    assert_eq!(status["files"], 2, "{status}");
    assert!(status["chunks"].as_u64().unwrap() >= 3, "{status}");
    assert_eq!(status["model"]["name"], MODEL, "{status}");
    assert!(s.shutdown().success());
}

/// With a model that cannot load, keyword ranking with the budget in o200k is still answered
/// (it reads no model); a request that ranks with the model gets the load's failure, naming
/// the file.
#[test]
fn keyword_ranking_is_answered_when_the_model_cannot_load() {
    let dir = workspace(&[("src/lib.rs", LIB_RS), ("src/net.rs", NET_RS)]);
    let missing = dir.path().join("no-such-model.gguf");
    let mut s = start_with_options(
        dir,
        &[],
        &[],
        json!({"model": missing.to_str().unwrap(), "offline": true, "budget": 400}),
    );
    s.wait_ready();
    let keywords =
        json!({"query": "parse the config file", "ranker": "bm25", "tokenizer": "o200k"});
    let response = s.compress(keywords.clone());
    let context = response["result"]["context"].as_str().unwrap_or_default();
    assert!(context.contains("fn parse_config"), "{response}");
    assert_eq!(response["result"]["stats"]["model_tokens"], 0, "{response}");
    let response = s.compress(json!({"query": "parse the config file"}));
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no-such-model.gguf"), "{response}");
    assert!(s.compress(keywords)["result"]["context"].is_string());
    assert!(s.shutdown().success());
}

/// `gpuLayers` from the editor, else `gpu_layers` in config.toml, reaches the model the
/// server loads, and `ctxzip/status` says where it runs.
#[test]
fn gpu_layers_from_settings_or_config_toml_reach_the_model() {
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(config.path().join("ctxzip")).unwrap();
    std::fs::write(config.path().join("ctxzip/config.toml"), "gpu_layers = 6\n").unwrap();
    let mut s = start_with_env(
        workspace(&[("src/lib.rs", LIB_RS), ("src/net.rs", NET_RS)]),
        &[],
        &[("XDG_CONFIG_HOME", config.path())],
    );
    s.wait_ready();
    let asked = |s: &mut Session| {
        let response = s.compress(json!({"query": "retry with backoff", "budget": 60}));
        assert!(response["result"].is_object(), "{response}");
        let status = s.status();
        let model = &status["model"];
        assert!(
            model["device"].as_str().is_some_and(|d| !d.is_empty()),
            "{status}"
        );
        assert!(model["gpuLayers"].as_u64().is_some(), "{status}");
        model["gpuLayersAsked"].clone()
    };
    assert_eq!(asked(&mut s), json!(6), "config.toml's gpu_layers");
    s.client
        .notify(
            "workspace/didChangeConfiguration",
            json!({"settings": {"ctxzip": {"gpuLayers": 2}}}),
        )
        .unwrap();
    assert_eq!(asked(&mut s), json!(2), "the editor's gpuLayers");
    assert!(s.shutdown().success());
}

#[test]
fn unsaved_edits_win_over_disk_and_compress_sees_them() {
    let mut s = start(workspace(&[("src/lib.rs", LIB_RS), ("src/net.rs", NET_RS)]));
    s.wait_ready();
    let lib = s.path("src/lib.rs");
    s.client
        .notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri(&lib), "languageId": "rust", "version": 1, "text": LIB_RS}}),
        )
        .unwrap();
    // Rename parse_config on line 3, then insert on line 2 after the emoji (two UTF-16
    // units, four bytes): positions are UTF-16 code units.
    let edits = json!({
        "textDocument": {"uri": uri(&lib), "version": 2},
        "contentChanges": [
            {"range": {"start": {"line": 3, "character": 7}, "end": {"line": 3, "character": 19}},
             "text": "parse_settings_unsaved"},
            {"range": {"start": {"line": 2, "character": 31}, "end": {"line": 2, "character": 31}},
             "text": " (edited)"}
        ]
    });
    s.client.notify("textDocument/didChange", edits).unwrap();
    let response = s.compress(json!({
        "query": "where is parse_settings_unsaved defined?",
        "budget": 300,
        "paths": [uri(&lib)],
    }));
    let result = &response["result"];
    let context = result["context"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"));
    assert!(
        context.contains("pub fn parse_settings_unsaved"),
        "{context}"
    );
    assert!(
        context.contains("/// Parses «the» config file 😀 (edited) here."),
        "{context}"
    );
    assert!(!context.contains("parse_config"), "{context}");
    assert_eq!(result["partial"], false);
    let chunk = result["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "parse_settings_unsaved")
        .unwrap_or_else(|| panic!("{result}"));
    assert_eq!(chunk["uri"], uri(&lib));
    // The chunk holds the doc comment (line 2) and the function (lines 3-8).
    assert!(
        chunk["range"]["start"]["line"].as_u64().unwrap() <= 2,
        "{chunk}"
    );
    assert!(
        chunk["range"]["end"]["line"].as_u64().unwrap() >= 8,
        "{chunk}"
    );
    // The disk is untouched, and closing the buffer brings the disk text back.
    assert_eq!(std::fs::read_to_string(&lib).unwrap(), LIB_RS);
    s.client
        .notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": uri(&lib)}}),
        )
        .unwrap();
    let response =
        s.compress(json!({"query": "parse_config", "budget": 300, "paths": [uri(&lib)]}));
    assert!(
        response["result"]["context"]
            .as_str()
            .unwrap()
            .contains("fn parse_config"),
        "{response}"
    );
    assert!(s.shutdown().success());
}

#[test]
fn a_file_created_on_disk_is_found_after_the_watcher_event() {
    let mut s = start(workspace(&[("src/lib.rs", LIB_RS)]));
    s.client
        .wait_for(
            |m| {
                m["method"] == "client/registerCapability"
                    && m["params"]["registrations"][0]["method"]
                        == "workspace/didChangeWatchedFiles"
            },
            WAIT,
        )
        .expect("the server registers for watched-file events");
    s.wait_ready();
    let late = s.path("src/late.rs");
    std::fs::write(&late, "pub fn late_arrival_marker() -> u32 {\n    42\n}\n").unwrap();
    s.client
        .notify(
            "workspace/didChangeWatchedFiles",
            json!({"changes": [{"uri": uri(&late), "type": 1}]}),
        )
        .unwrap();
    let status = s.wait_ready();
    assert_eq!(status["files"], 2, "{status}");
    // Through the command too.
    let response = s.client.request(
        "workspace/executeCommand",
        json!({"command": "ctxzip.compress", "arguments": [{"query": "late_arrival_marker", "budget": 200}]}),
        WAIT,
    );
    let context = response["result"]["context"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"));
    assert!(context.contains("fn late_arrival_marker"), "{context}");
    // A latency budget already spent: no model work for the new query, still an answer.
    let response = s.compress(json!({
        "query": "which function arrived late? (deadline)",
        "budget": 100,
        "deadlineMs": 0
    }));
    let stats = &response["result"]["stats"];
    assert!(stats["deadline_skipped"].as_u64() > Some(0), "{response}");
    assert!(stats["compressed_tokens"].as_u64() > Some(0), "{response}");
    let said = |s: &mut Session, words: &str| {
        s.client.wait_for(
            |m| {
                m["method"] == "window/logMessage"
                    && m["params"]["message"]
                        .as_str()
                        .is_some_and(|t| t.contains(words))
            },
            WAIT,
        )
    };
    let logged = said(&mut s, "deadlineMs reached or maxModelTokens (6000) spent");
    assert!(
        logged.is_some_and(|m| m["params"]["message"]
            .as_str()
            .is_some_and(|t| t.contains("in the background"))),
        "the log does not say the deadline left work to the background"
    );
    // The server finishes that model work in the background; once it has, the same
    // request is answered whole from the cache, deadline or not.
    let deadline = Instant::now() + WAIT;
    while s.status()["refining"] != json!(false) {
        assert!(Instant::now() < deadline, "refinement never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let response = s.compress(json!({
        "query": "which function arrived late? (deadline)",
        "budget": 100,
        "deadlineMs": 0
    }));
    let stats = &response["result"]["stats"];
    assert_eq!(stats["deadline_skipped"], 0, "{response}");
    assert_eq!(stats["model_tokens"], 0, "{response}");
    // A model-token budget spent: the log names it and how to read more; nothing runs on in
    // the background.
    let response = s.compress(json!({
        "query": "which function arrived late? (model tokens)",
        "budget": 100,
        "maxModelTokens": 1
    }));
    let stats = &response["result"]["stats"];
    assert!(stats["deadline_skipped"].as_u64() > Some(0), "{response}");
    assert!(
        said(&mut s, "maxModelTokens (1) spent").is_some_and(|m| m["params"]["message"]
            .as_str()
            .is_some_and(|t| t.contains("a larger maxModelTokens reads more"))),
        "no log of the model-token budget spent"
    );
    assert_eq!(s.status()["refining"], json!(false));

    // Deleted: gone from the index.
    std::fs::remove_file(&late).unwrap();
    s.client
        .notify(
            "workspace/didChangeWatchedFiles",
            json!({"changes": [{"uri": uri(&late), "type": 3}]}),
        )
        .unwrap();
    assert_eq!(s.wait_ready()["files"], 1);

    // A second workspace folder: indexed, and paths carry the folder name.
    let second = workspace(&[("tools/gen.rs", "pub fn generate_second_root_code() {}\n")]);
    let second_root = std::fs::canonicalize(second.path()).unwrap();
    s.client
        .notify(
            "workspace/didChangeWorkspaceFolders",
            json!({"event": {"added": [{"uri": uri(&second_root), "name": "second"}], "removed": []}}),
        )
        .unwrap();
    assert_eq!(s.wait_ready()["files"], 2);
    let response = s.compress(json!({"query": "generate_second_root_code", "budget": 200}));
    let chunks = response["result"]["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"));
    let name = second_root.file_name().unwrap().to_str().unwrap();
    assert!(
        chunks
            .iter()
            .any(|c| c["path"] == format!("{name}/tools/gen.rs")),
        "{response}"
    );
    // A configuration change of the ignore globs re-indexes without them.
    s.client
        .notify(
            "workspace/didChangeConfiguration",
            json!({"settings": {"ctxzip": {"ignore": ["tools/"]}}}),
        )
        .unwrap();
    assert_eq!(s.wait_ready()["files"], 1);
    assert!(s.shutdown().success());
}

#[test]
fn cancel_request_stops_model_work() {
    // Many distinct functions (salted so no cache from an earlier run helps).
    let salt = std::process::id();
    let mut big = String::new();
    for i in 0..300 {
        big.push_str(&format!(
            "/// Handler {i} of batch {salt}.\npub fn handle_event_{i}_{salt}(input: &[u8]) -> usize {{\n    let mut total = {i};\n    for byte in input {{\n        total = total.wrapping_mul(31).wrapping_add(*byte as usize ^ {i});\n    }}\n    total\n}}\n\n"
        ));
    }
    let mut s = start(workspace(&[
        ("src/handlers.rs", &big),
        ("src/lib.rs", LIB_RS),
    ]));
    s.wait_ready();
    let deadline = Instant::now() + WAIT;
    while s.status()["model"]["loaded"] != true {
        assert!(Instant::now() < deadline, "model never loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = s.status()["cache"]["tokensDecoded"].as_u64().unwrap();
    let id = s
        .client
        .start_request(
            "ctxzip/compress",
            json!({"query": format!("which handler mixes bytes for batch {salt}?"), "budget": 4000, "candidates": 300}),
        )
        .unwrap();
    // Wait until the model is busy with it, then cancel.
    loop {
        let decoded = s.status()["cache"]["tokensDecoded"].as_u64().unwrap();
        if decoded > before {
            break;
        }
        assert!(Instant::now() < deadline, "the model never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.client
        .notify("$/cancelRequest", json!({"id": id}))
        .unwrap();
    let response = s
        .client
        .wait_response(id, WAIT)
        .expect("cancelled request answers");
    assert_eq!(error_code(&response), -32800, "{response}");
    // Model work stops between batches: the decode counter soon stands still (one batch may
    // still finish), long before the whole request's work (hundreds of chunks) could be done.
    let cancelled_at = Instant::now();
    let mut last = s.status()["cache"]["tokensDecoded"].as_u64().unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = s.status()["cache"]["tokensDecoded"].as_u64().unwrap();
        if now == last {
            break;
        }
        last = now;
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(20),
            "the model kept decoding after the cancel"
        );
    }
    // And the server still answers compress.
    let response = s
        .compress(json!({"query": "parse_config", "budget": 300, "candidates": 4, "noFine": true}));
    assert!(response["result"]["context"].is_string(), "{response}");
    assert!(s.shutdown().success());
}

#[test]
fn bad_requests_get_errors_and_the_server_keeps_answering() {
    let outside = workspace(&[("secret.rs", "pub fn secret() {}\n")]);
    let mut s = start(workspace(&[("src/lib.rs", LIB_RS)]));
    s.wait_ready();
    let outside_file = std::fs::canonicalize(outside.path())
        .unwrap()
        .join("secret.rs");

    // Malformed params: no query, wrong types, unknown fields.
    for params in [
        json!({"budget": 100}),
        json!({"query": "x", "budget": "many"}),
        json!({"query": "x", "bogus": true}),
        json!("just a string"),
    ] {
        let response = s.compress(params.clone());
        assert_eq!(error_code(&response), -32602, "{params}: {response}");
    }
    // Values the server refuses, with a message that says what to do.
    let response = s.compress(json!({"query": "   ", "budget": 100}));
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty"),
        "{response}"
    );
    // Each refusal of the core has its code and its kind and fields as data, and its message
    // says the fix in the request's keys, never a command-line flag.
    let response = s.compress(json!({"query": "x", "budget": 0}));
    assert_eq!(error_code(&response), codes::BAD_BUDGET, "{response}");
    assert_eq!(
        response["error"]["data"],
        json!({"kind": "bad_budget", "budget": 0}),
        "{response}"
    );
    let message = response["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"budget\": 2000") && !message.contains("--"),
        "{response}"
    );
    let response = s.compress(json!({"query": "   "}));
    assert_eq!(error_code(&response), codes::EMPTY_QUERY, "{response}");
    assert_eq!(
        response["error"]["data"]["kind"], "empty_query",
        "{response}"
    );
    let response = s.compress(json!({"query": "x", "budget": 10, "rate": 0.5}));
    assert_eq!(error_code(&response), codes::BUDGET_AND_RATE, "{response}");
    let response = s.compress(json!({"query": "x", "rate": 2.0}));
    assert_eq!(
        response["error"]["data"],
        json!({"kind": "bad_rate", "rate": 2.0}),
        "{response}"
    );
    let response = s.compress(json!({"query": "retry delay", "budget": 1, "ranker": "bm25"}));
    assert_eq!(error_code(&response), codes::BUDGET_TOO_SMALL, "{response}");
    let data = &response["error"]["data"];
    let smallest = data["smallest"].as_u64().unwrap_or_default();
    assert!(
        data["kind"] == "budget_too_small" && data["budget"] == 1 && smallest > 1,
        "{response}"
    );
    let message = response["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("\"budget\": {smallest}")) && !message.contains("--"),
        "{response}"
    );
    let response = s.compress(json!({"query": "x", "format": "yaml"}));
    assert_eq!(error_code(&response), -32602, "{response}");

    // A tokenizer file that is missing or is no tokenizer: its own code, the file and the
    // problem as data, the request's key in the message.
    let elsewhere = tempfile::tempdir().unwrap();
    let missing = elsewhere.path().join("no-such-tokenizer.json");
    let not_a_tokenizer = elsewhere.path().join("package.json");
    std::fs::write(&not_a_tokenizer, "{\"name\": \"app\"}").unwrap();
    for (path, problem) in [(&missing, "not_found"), (&not_a_tokenizer, "invalid")] {
        let response = s.compress(
            json!({"query": "retry delay", "ranker": "bm25", "tokenizer": path.to_str().unwrap()}),
        );
        assert_eq!(error_code(&response), codes::TOKENIZER_FILE, "{response}");
        assert_eq!(
            response["error"]["data"],
            json!({"kind": "tokenizer_file", "problem": problem, "path": path.to_str().unwrap()}),
            "{response}"
        );
        let message = response["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("`tokenizer`") && message.contains("tokenizer.json"),
            "{response}"
        );
    }

    // Not JSON, and JSON that is not JSON-RPC: error replies, and the session goes on.
    s.client
        .send_raw("{\"jsonrpc\": \"2.0\", \"id\": 77, \"method\": ")
        .unwrap();
    let parse_error = s
        .client
        .wait_for(|m| m["error"]["code"] == -32700, WAIT)
        .expect("a parse error reply");
    assert_eq!(parse_error["id"], Value::Null, "{parse_error}");
    s.client
        .send_raw("{\"jsonrpc\": \"2.0\", \"id\": 78, \"method\": 5}")
        .unwrap();
    let invalid = s
        .client
        .wait_response(78, WAIT)
        .expect("an invalid-request reply");
    assert_eq!(error_code(&invalid), -32600, "{invalid}");

    // URIs outside the workspace, through `..`, or through a symlink.
    let response =
        s.compress(json!({"query": "secret", "budget": 100, "paths": [uri(&outside_file)]}));
    assert_eq!(
        error_code(&response),
        codes::PATH_OUTSIDE_ROOT,
        "{response}"
    );
    assert_eq!(
        response["error"]["data"],
        json!({"kind": "path_outside_root", "path": uri(&outside_file)}),
        "{response}"
    );
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("workspace folder"),
        "{response}"
    );
    let dotdot = format!("{}/src/../../secret.rs", uri(&s.root));
    let response = s.compress(json!({"query": "secret", "budget": 100, "focus": {"uri": dotdot, "position": {"line": 0, "character": 0}}}));
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only files under the workspace folders can be read"),
        "{response}"
    );
    #[cfg(unix)]
    {
        let link = s.path("src/escape.rs");
        std::os::unix::fs::symlink(&outside_file, &link).unwrap();
        let response = s.compress(json!({"query": "secret", "budget": 100, "paths": [uri(&link)]}));
        // The same message as any outside path: nothing about the link or its target.
        let message = response["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("only files under the workspace folders can be read"),
            "{response}"
        );
        assert!(!message.contains("symlink"), "{response}");
    }
    // Opening a buffer outside the workspace is refused (logged), not indexed.
    s.client
        .notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri(&outside_file), "languageId": "rust", "version": 1, "text": "pub fn secret() {}\n"}}),
        )
        .unwrap();
    s.client
        .wait_for(
            |m| {
                m["method"] == "window/logMessage"
                    && m["params"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("workspace folder")
            },
            WAIT,
        )
        .expect("a warning about the outside buffer");
    // A panic inside the pipeline is an error reply; the server stays up.
    let response = s.compress(json!({"query": PANIC_QUERY, "budget": 100}));
    assert_eq!(error_code(&response), -32603, "{response}");
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("still running"),
        "{response}"
    );
    let unknown = s.client.request("ctxzip/nope", json!({}), WAIT);
    assert_eq!(error_code(&unknown), -32601, "{unknown}");

    // Still serving.
    let status = s.status();
    assert_eq!(status["files"], 1, "{status}");
    assert_eq!(status["openBuffers"], 0, "{status}");
    let response = s.compress(json!({"query": "render_banner", "budget": 200}));
    let context = response["result"]["context"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"));
    assert!(!context.contains("secret"), "{context}");
    assert!(s.shutdown().success());
}

#[test]
fn exit_without_shutdown_exits_one() {
    let mut s = start(workspace(&[("src/lib.rs", LIB_RS)]));
    s.wait_ready();
    s.client.notify("exit", Value::Null).unwrap();
    let status = s
        .client
        .wait_exit(Duration::from_secs(10))
        .expect("server exits");
    assert_eq!(status.code(), Some(1));
}

/// Peak resident memory of a process, in bytes (Linux).
#[cfg(target_os = "linux")]
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

impl Session {
    /// Sends `bytes`, then a `ctxzip/status` request, and returns every message that came
    /// before the status answer (which must come).
    fn hostile_then_status(&mut self, name: &str, bytes: &[u8]) -> Vec<Value> {
        self.client.send_bytes(bytes).unwrap();
        let id = self
            .client
            .start_request("ctxzip/status", Value::Null)
            .unwrap();
        let mut before = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let message = self
                .client
                .next_message(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|| panic!("{name}: no answer to the next request; got {before:?}"));
            if message["id"] == json!(id) && message.get("method").is_none() {
                assert!(message["result"]["files"].is_number(), "{name}: {message}");
                return before;
            }
            before.push(message);
        }
    }
}

/// A hostile input, its bytes, and the error replies (code, id) due before the next answer.
type HostileCase = (&'static str, Vec<u8>, Vec<(i64, Value)>);

fn errors(messages: &[Value]) -> Vec<(i64, Value)> {
    messages
        .iter()
        .filter(|m| m.get("error").is_some())
        .map(|m| (error_code(m), m["id"].clone()))
        .collect()
}

fn request_bytes(id: i64, method: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": null})
        .to_string()
        .into_bytes()
}

fn framed(body: &[u8]) -> Vec<u8> {
    [
        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
        body,
    ]
    .concat()
}

#[test]
fn hostile_frames_are_answered_and_the_next_message_is_served() {
    let mut s = start(workspace(&[("src/lib.rs", LIB_RS)]));
    s.wait_ready();
    let status = request_bytes(1001, "ctxzip/status");
    let with_head = |head: &str, body: &[u8]| [head.as_bytes(), body].concat();
    // (case, bytes, the error replies expected before the next answer)
    let cases: Vec<HostileCase> = vec![
        (
            "Content-Length too large",
            with_head("Content-Length: 500\r\n\r\n", &status),
            vec![(-32700, Value::Null)],
        ),
        (
            "Content-Length too small",
            with_head("Content-Length: 5\r\n\r\n", &status),
            vec![(-32700, Value::Null)],
        ),
        (
            "Content-Length not a number",
            with_head("Content-Length: abc\r\n\r\n", &status),
            vec![(-32700, Value::Null)],
        ),
        (
            "Content-Length negative",
            with_head("Content-Length: -40\r\n\r\n", &status),
            vec![(-32700, Value::Null)],
        ),
        (
            "no Content-Length",
            with_head("Content-Type: application/vscode-jsonrpc\r\n\r\n", &status),
            vec![(-32700, Value::Null)],
        ),
        (
            "invalid UTF-8 in a header line",
            [b"Content-\xc3\x28Length: 10\r\n\r\n".as_slice(), &status].concat(),
            vec![(-32700, Value::Null)],
        ),
        (
            "invalid UTF-8 in the body",
            framed(b"{\"jsonrpc\":\"2.0\",\"id\":1002,\"method\":\"a\xff\"}"),
            vec![(-32700, Value::Null)],
        ),
        (
            "unknown $/ request",
            framed(&request_bytes(1003, "$/unknownRequest")),
            vec![(-32601, json!(1003))],
        ),
        (
            "unknown $/ notification (no reply allowed)",
            framed(br#"{"jsonrpc":"2.0","method":"$/unknownNotification"}"#),
            vec![],
        ),
    ];
    for (name, bytes, expected) in cases {
        let before = s.hostile_then_status(name, &bytes);
        assert_eq!(
            errors(&before),
            expected,
            "{name}: {before:?}; server log: {}",
            std::fs::read_to_string(s.path(".server-stderr.log")).unwrap_or_default()
        );
    }

    // A body that stops short, with nothing after it: answered on its own, no next message
    // needed to unstick it.
    s.client
        .send_bytes(&with_head("Content-Length: 500\r\n\r\n", &status))
        .unwrap();
    let stalled = s
        .client
        .next_message(Duration::from_secs(10))
        .expect("a body cut short is answered while the client waits");
    assert_eq!(error_code(&stalled), -32700, "{stalled}");

    // Oversized input is skipped without being kept: a 20 MiB request (answered under its
    // id), a 20 MiB notification (logged, not answered) and a 50 MB header line.
    #[cfg(target_os = "linux")]
    let rss_before = peak_rss_bytes(s.client.id());
    let pad = "x".repeat(20 << 20);
    let big_request = json!({"jsonrpc": "2.0", "id": 1004, "method": "ctxzip/compress",
        "params": {"query": pad}});
    let before = s.hostile_then_status(
        "20 MiB request",
        &framed(big_request.to_string().as_bytes()),
    );
    assert_eq!(errors(&before), [(-32600, json!(1004))], "{before:?}");
    assert!(
        before[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-message-bytes"),
        "{before:?}"
    );
    let big_open = json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
        "textDocument": {"uri": uri(&s.path("src/big.rs")), "languageId": "rust", "version": 1, "text": pad}}});
    let before = s.hostile_then_status(
        "20 MiB notification",
        &framed(big_open.to_string().as_bytes()),
    );
    assert_eq!(errors(&before), [], "{before:?}");
    assert!(
        before.iter().any(|m| m["method"] == "window/logMessage"
            && m["params"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("over the")),
        "{before:?}"
    );
    let mut long_line = vec![b'h'; 50_000_000];
    long_line.extend_from_slice(b"\r\n\r\n");
    let before = s.hostile_then_status("50 MB header line", &long_line);
    assert_eq!(errors(&before), [(-32700, Value::Null)], "{before:?}");
    #[cfg(target_os = "linux")]
    {
        let grown = peak_rss_bytes(s.client.id()).saturating_sub(rss_before);
        eprintln!(
            "lsp: peak RSS {} KiB before, grew by {} KiB over 90 MB of oversized input",
            rss_before / 1024,
            grown / 1024
        );
        assert!(grown < 32 << 20, "peak RSS grew by {grown} bytes");
    }
    assert!(s.shutdown().success());
}

#[test]
fn fuzzed_input_never_silences_the_server() {
    use ctxzip_framing::hostile::{self, Rng};
    let seed: u64 = std::env::var("CTXZIP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let rounds: u64 = std::env::var("CTXZIP_FUZZ_E2E_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let limit = 4096;
    let mut s = start_with(
        workspace(&[("src/lib.rs", LIB_RS)]),
        &["--max-message-bytes", &limit.to_string()],
    );
    s.wait_ready();
    let mut rng = Rng::new(seed);
    let mut answers = 0;
    for round in 0..rounds {
        let (bytes, family) = hostile::lsp_garbage(&mut rng, limit);
        let name = format!("seed {seed} round {round} ({family:?})");
        let before = s.hostile_then_status(&name, &bytes);
        let answered = before
            .iter()
            .filter(|m| m.get("error").is_some() || m["method"] == "window/logMessage")
            .count();
        if family.answered() {
            assert!(answered >= 1, "{name}: no answer: {before:?}");
        }
        answers += answered;
    }
    eprintln!("lsp fuzz: {rounds} rounds, seed {seed}, {answers} error answers, server up");
    assert!(s.shutdown().success());
}

#[test]
fn closing_stdin_during_compress_cancels_model_work_and_exits() {
    let salt = std::process::id() ^ 0x5eed;
    let mut big = String::new();
    for i in 0..300 {
        big.push_str(&format!(
            "/// Handler {i} of batch {salt}.\npub fn handle_event_{i}_{salt}(input: &[u8]) -> usize {{\n    let mut total = {i};\n    for byte in input {{\n        total = total.wrapping_mul(31).wrapping_add(*byte as usize ^ {i});\n    }}\n    total\n}}\n\n"
        ));
    }
    let mut s = start(workspace(&[("src/handlers.rs", &big)]));
    s.wait_ready();
    let deadline = Instant::now() + WAIT;
    while s.status()["model"]["loaded"] != true {
        assert!(Instant::now() < deadline, "model never loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = s.status()["cache"]["tokensDecoded"].as_u64().unwrap();
    s.client
        .start_request(
            "ctxzip/compress",
            json!({"query": format!("which handler mixes bytes for batch {salt}?"), "budget": 4000, "candidates": 300}),
        )
        .unwrap();
    loop {
        let decoded = s.status()["cache"]["tokensDecoded"].as_u64().unwrap();
        if decoded > before {
            break;
        }
        assert!(Instant::now() < deadline, "the model never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The editor goes away mid-request.
    let closed_at = Instant::now();
    s.client.close_stdin();
    let status = s
        .client
        .wait_exit(WAIT)
        .expect("the server exits after stdin closes");
    let took = closed_at.elapsed();
    eprintln!("exited {took:?} after stdin closed during a compress");
    assert_eq!(status.code(), Some(1), "no shutdown came first");
    // Model work stops at its next decode batch; finishing 300 candidates would take far
    // longer than this.
    assert!(took < Duration::from_secs(5), "took {took:?} to exit");
}

/// AWS's documented example key id and a PEM block whose body is made up: never real keys.
const CONFIG_PY: &str = "\
import os

AWS_ACCESS_KEY_ID = \"AKIAIOSFODNN7EXAMPLE\"
SIGNING_KEY = \"\"\"-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj
MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu
-----END PRIVATE KEY-----\"\"\"


def aws_region():
    return os.environ.get(\"AWS_REGION\", \"eu-west-1\")
";

#[test]
fn secrets_are_redacted_on_disk_and_in_open_buffers_unless_turned_off() {
    let files = [
        ("config.py", CONFIG_PY),
        ("src/lib.rs", LIB_RS),
        ("id_rsa", "not a key, but named like one\n"),
    ];
    let dir = workspace(&files);
    #[cfg(unix)]
    {
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::os::unix::fs::symlink("../id_rsa", dir.path().join("keys/deploy_key.txt")).unwrap();
    }
    let mut s = start(dir);
    s.wait_ready();
    let query = json!({"query": "aws access key id, signing key and region", "budget": 2000});
    let response = s.compress(query.clone());
    let result = &response["result"];
    let context = result["context"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"));
    assert!(context.contains("[REDACTED:aws-access-key]"), "{context}");
    assert!(context.contains("[REDACTED:private-key]"), "{context}");
    assert!(!context.contains("AKIAIOSFODNN7EXAMPLE") && !context.contains("MIIEv"));
    // The symlink to id_rsa is neither read nor labelled with its target's name.
    assert!(!context.contains("id_rsa") && !context.contains("deploy_key"));
    assert_eq!(result["stats"]["redacted"], 2, "{result}");
    // The chunk after the key block keeps its line number (10: `def aws_region`).
    let region = result["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "aws_region")
        .unwrap_or_else(|| panic!("{result}"));
    assert_eq!(region["range"]["start"]["line"], 9, "{region}");
    let warning = s.client.wait_for(
        |m| {
            m["method"] == "window/logMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|t| t.contains("2 secret(s)"))
        },
        WAIT,
    );
    assert!(warning.is_some(), "no warning logged");

    // An unsaved buffer is redacted too.
    let lib = s.path("src/lib.rs");
    let token = format!("ghp_{}", "a1B2c3D4e5".repeat(4).get(..36).unwrap());
    let edited = LIB_RS.replace("== {name} ==", &format!("{token} {{name}}"));
    s.client
        .notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri(&lib), "languageId": "rust", "version": 1, "text": edited}}),
        )
        .unwrap();
    let response =
        s.compress(json!({"query": "render_banner", "budget": 400, "paths": [uri(&lib)]}));
    let context = response["result"]["context"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"));
    assert!(context.contains("[REDACTED:github-token]"), "{context}");
    assert!(!context.contains(&token), "{context}");
    assert!(s.shutdown().success());

    // The opt-out shows the file as it is.
    let mut s = start_with(workspace(&files), &["--no-redact"]);
    s.wait_ready();
    let response = s.compress(query);
    let context = response["result"]["context"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"));
    assert!(context.contains("AKIAIOSFODNN7EXAMPLE"), "{context}");
    assert_eq!(response["result"]["stats"]["redacted"], 0);
    assert!(s.shutdown().success());
}

/// The `$/progress` values sent on `token`, in order, up to its end (which may reach the
/// client after the request's response: they are sent from different tasks).
fn progress_on(client: &mut LspClient, token: &Value) -> Vec<Value> {
    client.wait_for(
        |m| {
            m["method"] == "$/progress"
                && &m["params"]["token"] == token
                && m["params"]["value"]["kind"] == "end"
        },
        WAIT,
    );
    client
        .seen
        .iter()
        .filter(|m| m["method"] == "$/progress" && &m["params"]["token"] == token)
        .map(|m| m["params"]["value"].clone())
        .collect()
}

/// Begin, reports whose percentage never goes back and whose messages name the stages in
/// order (model scoring with done/total), end with the outcome.
fn assert_compress_progress(values: &[Value], response: &Value) {
    let kinds: Vec<&str> = values.iter().filter_map(|v| v["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"begin"), "{values:?}");
    assert_eq!(kinds.last(), Some(&"end"), "{values:?}");
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|&k| k == "report"),
        "{values:?}"
    );
    assert_eq!(values[0]["title"], "ctxzip compress", "{values:?}");
    let percentages: Vec<u64> = values
        .iter()
        .filter_map(|v| v["percentage"].as_u64())
        .collect();
    assert!(
        percentages.windows(2).all(|w| w[0] <= w[1]),
        "{percentages:?}"
    );
    let messages: Vec<&str> = values
        .iter()
        .filter_map(|v| v["message"].as_str())
        .collect();
    let mut from = 0;
    for stage in [
        "loading the model",
        "ranking chunks by keywords",
        "scoring candidates with the model: 0/",
        "candidates, ",
        "assembling the context",
    ] {
        let at = messages[from..]
            .iter()
            .position(|m| m.contains(stage))
            .unwrap_or_else(|| panic!("{stage:?} after message {from} of {messages:?}"));
        from += at;
    }
    let kept = response["result"]["stats"]["compressed_tokens"].clone();
    let end = messages.last().unwrap();
    assert!(
        end.starts_with(&format!("{kept} tokens from ")),
        "{end} vs {response}"
    );
}

#[test]
fn a_compress_request_reports_its_stages_on_its_token_or_one_the_server_creates() {
    let mut s = start(workspace(&[("src/lib.rs", LIB_RS), ("src/net.rs", NET_RS)]));
    s.wait_ready();

    // The request's own workDoneToken.
    let token = json!("compress-1");
    let response = s.compress(json!({
        "query": "retry with backoff",
        "budget": 60,
        "workDoneToken": token,
    }));
    assert!(response["result"]["context"].is_string(), "{response}");
    assert_compress_progress(&progress_on(&mut s.client, &token), &response);

    // No token: the client supports work-done progress, so the server creates one.
    let created_before = s.client.seen.len();
    let response = s.compress(json!({"query": "delay between retries", "budget": 60}));
    assert!(response["result"]["context"].is_string(), "{response}");
    let create = s.client.seen[created_before..]
        .iter()
        .find(|m| m["method"] == "window/workDoneProgress/create")
        .unwrap_or_else(|| panic!("a created token: {:?}", &s.client.seen[created_before..]))
        .clone();
    let token = &create["params"]["token"];
    assert!(
        token.as_str().unwrap().starts_with("ctxzip/compress/"),
        "{create}"
    );
    assert_compress_progress(&progress_on(&mut s.client, token), &response);
    assert!(s.shutdown().success());
}

#[test]
fn a_client_without_work_done_progress_gets_no_compress_progress() {
    let dir = workspace(&[("src/lib.rs", LIB_RS), ("src/net.rs", NET_RS)]);
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut lsp = common::lsp::start(
        &root,
        json!({"model": MODEL, "offline": true}),
        &common::test_cache(),
        WAIT,
    );
    let response = common::lsp::compress_when_indexed(
        &mut lsp,
        json!({"query": "retry with backoff", "budget": 60}),
        WAIT,
    );
    assert!(response["result"]["context"].is_string(), "{response}");
    let progress: Vec<&Value> = lsp
        .seen
        .iter()
        .filter(|m| m["method"] == "$/progress" || m["method"] == "window/workDoneProgress/create")
        .collect();
    assert!(progress.is_empty(), "{progress:?}");
}

/// A redacted secret changes its line's length (`[REDACTED:aws-access-key]` is 25 characters,
/// the key 20; a private key block keeps its lines but not their text), not the number of
/// lines: a chunk's range ends where its last line ends in the user's text, in an unsaved
/// buffer as in a file on disk, in the client's position encoding.
#[test]
fn ranges_after_a_redaction_point_into_the_users_text() {
    // Each secret on its chunk's last line (the file's last), `ünï` before the key: UTF-16
    // units and bytes differ on the key's line too.
    let access_py = "\
def aws_region():
    return 'eu-west-1'


def access_key_ünï():
    return {\"ünï\": \"AKIAIOSFODNN7EXAMPLE\"}
";
    let signing_py = "\
def signing_key():
    return \"\"\"-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj
-----END PRIVATE KEY-----\"\"\"
";
    let files = [
        ("open_access.py", access_py),
        ("open_signing.py", signing_py),
        ("disk_access.py", access_py),
        ("disk_signing.py", signing_py),
    ];
    // On disk, the buffers' files hold something else: what counts is the unsaved text.
    let mut s = start(workspace(&[
        ("open_access.py", "X = 1\n"),
        ("open_signing.py", "Y = 2\n"),
        files[2],
        files[3],
    ]));
    s.wait_ready();
    for (name, text) in &files[..2] {
        s.client
            .notify(
                "textDocument/didOpen",
                json!({"textDocument": {"uri": uri(&s.path(name)), "languageId": "python", "version": 1, "text": text}}),
            )
            .unwrap();
    }
    let response =
        s.compress(json!({"query": "access key, signing key and aws region", "budget": 2000}));
    let result = &response["result"];
    let chunks = result["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"));
    // The server speaks UTF-16 unless the client offers UTF-8 (this one offers nothing).
    let width = |line: &str| line.encode_utf16().count() as u64;
    let mut on_secrets = 0;
    for (path, text) in files {
        let lines: Vec<&str> = text.lines().collect();
        for chunk in chunks.iter().filter(|c| c["path"] == path) {
            let end = &chunk["range"]["end"];
            let row = end["line"].as_u64().unwrap() as usize;
            assert_eq!(
                end["character"].as_u64(),
                Some(width(lines[row])),
                "{path}: {chunk} should end at the end of {:?}",
                lines[row]
            );
            on_secrets += usize::from(lines[row].contains("AKIA") || lines[row].contains("END"));
        }
    }
    assert_eq!(on_secrets, 4, "{result}");
    assert_eq!(result["stats"]["redacted"], 4, "{result}");
    assert!(s.shutdown().success());
}

/// Sets `path`'s modification time an hour back: a stamp taken now is then settled (not
/// within the file system's timestamp resolution of the read), so what finds a later edit is
/// the stamp's comparison, not the rule that re-reads files too fresh to trust.
fn age(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

/// Another program edits a file (a formatter, `git checkout`, an agent) and nothing tells
/// the server: no didChange, no didSave, no watcher event. The next compress reads it anyway,
/// by the stamp the shared index keeps of every file; a deletion likewise.
#[test]
fn an_edit_on_disk_with_no_event_is_seen_by_the_next_compress() {
    let dir = workspace(&[("src/lib.rs", LIB_RS), ("src/net.rs", NET_RS)]);
    age(&dir.path().join("src/lib.rs"));
    age(&dir.path().join("src/net.rs"));
    let mut s = start(dir);
    s.wait_ready();
    let ask = |s: &mut Session| {
        let response =
            s.compress(json!({"query": "retry with backoff", "budget": 400, "ranker": "bm25"}));
        response["result"]["context"]
            .as_str()
            .unwrap_or_else(|| panic!("{response}"))
            .to_owned()
    };
    let before = ask(&mut s);
    assert!(before.contains("fn retry_with_backoff"), "{before}");
    // The same length: the size alone would not tell.
    let edited = NET_RS.replace("retry_with_backoff", "retry_with_jitters");
    assert_eq!(edited.len(), NET_RS.len());
    std::fs::write(s.path("src/net.rs"), &edited).unwrap();
    let after = ask(&mut s);
    assert!(after.contains("fn retry_with_jitters"), "{after}");
    assert!(!after.contains("retry_with_backoff"), "{after}");
    // Deleted with no event: gone from the answer and the index.
    std::fs::remove_file(s.path("src/net.rs")).unwrap();
    let gone = ask(&mut s);
    assert!(!gone.contains("retry_with_jitters"), "{gone}");
    assert_eq!(s.status()["files"], 1);
    assert!(s.shutdown().success());
}
