//! The remote scorer through the real binary: `ctxzip compress --scorer-url` against the
//! reference server (llama.cpp answering as vLLM does, `scoring/tests/data/remote/`) over the
//! same GGUF gives the local context, and the LSP and MCP
//! servers stay up when their scoring server fails (each failure an error naming the fix).

mod common;
#[path = "../scoring/tests/common/servers.rs"]
mod servers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mcp_client::{Client as McpClient, text_of};
use serde_json::{Value, json};
use servers::{SERVED_MODEL, Server};

const MODEL: &str = "smollm2-135m";
const WAIT: Duration = Duration::from_secs(180);

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "retry.py",
            "def backoff_delay(attempt, base=0.5, cap=30.0):\n    \"\"\"Seconds to wait before retry number `attempt`.\"\"\"\n    return min(cap, base * 2 ** attempt)\n\n\ndef should_retry(status):\n    return status == 429 or status >= 500\n",
        ),
        (
            "client.py",
            "import time\n\nfrom retry import backoff_delay, should_retry\n\n\nclass Client:\n    def __init__(self, transport, max_retries=5):\n        self.transport = transport\n        self.max_retries = max_retries\n\n    def send(self, request):\n        for attempt in range(self.max_retries):\n            response = self.transport.send(request)\n            if not should_retry(response.status):\n                return response\n            time.sleep(backoff_delay(attempt))\n        raise RuntimeError('retries exhausted')\n",
        ),
        (
            "table.py",
            "def render_table(rows):\n    width = max(len(r[0]) for r in rows)\n    return '\\n'.join(f'{a:<{width}} {b}' for a, b in rows)\n\n\ndef parse_header(line):\n    name, _, value = line.partition(':')\n    return name.strip().lower(), value.strip()\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn compress(root: &Path, cache: &Path, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ctxzip"))
        .args([
            "compress",
            ".",
            "-q",
            "how long does the client wait before it retries?",
            "--budget",
            "120",
            "--format",
            "json",
            "--ranker",
            "model",
            "--model",
            MODEL,
        ])
        .args(extra)
        .env("CTXZIP_CACHE", cache)
        .current_dir(root)
        .output()
        .expect("run ctxzip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn compress_with_a_scorer_url_gives_the_local_context() {
    let dir = workspace();
    let root = dir.path();
    let scratch = tempfile::tempdir().unwrap();
    let local = compress(root, &scratch.path().join("local.sqlite"), &[]);
    let server = Server::reference(
        &ctxzip_scoring::models::resolve(Some(MODEL), false)
            .unwrap()
            .path,
    );
    let remote = compress(
        root,
        &scratch.path().join("remote.sqlite"),
        &[
            "--scorer-url",
            &server.base_url,
            "--scorer-model",
            SERVED_MODEL,
        ],
    );
    let kept = |v: &Value| {
        v["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["path"].clone(), c["name"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kept(&remote),
        kept(&local),
        "remote {remote}\nlocal {local}"
    );
    assert_eq!(remote["context"], local["context"]);
    assert!(
        remote["stats"]["model_tokens"].as_u64().unwrap() > 0,
        "{remote}"
    );
}

#[test]
fn the_lsp_server_stays_up_when_its_scoring_server_fails() {
    // The probe passes (two requests), then every completion is a 500.
    let scoring = Server::fault(&["--fault", "status-500", "--after", "2"]);
    let dir = workspace();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut lsp = common::lsp::start(
        &root,
        json!({
            "model": MODEL,
            "scorerUrl": scoring.base_url,
            "scorerModel": SERVED_MODEL,
        }),
        &scratch.path().join("cache.sqlite"),
        WAIT,
    );
    // A budget below the workspace's size, so the model must score.
    let request = json!({
        "query": "how long does the client wait before it retries?",
        "ranker": "model",
        "budget": 100,
    });
    let answer = common::lsp::compress_when_indexed(&mut lsp, request, WAIT);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("HTTP 500"), "{answer}");
    assert!(message.contains("server's log"), "{answer}");
    let status = lsp.request("ctxzip/status", Value::Null, WAIT);
    assert!(
        status["result"].is_object(),
        "the server went down: {status}"
    );
    let build = status.to_string();
    assert!(build.contains("backend=remote"), "{status}");
}

#[test]
fn the_mcp_server_stays_up_when_its_scoring_server_has_no_prompt_logprobs() {
    let scoring = Server::fault(&["--fault", "no-logprobs"]);
    let dir = workspace();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut mcp = McpClient::start_with_stderr(
        &[
            "--scorer-url",
            &scoring.base_url,
            "--scorer-model",
            SERVED_MODEL,
            root.to_str().unwrap(),
        ],
        &root,
        Stdio::null(),
    );
    mcp.initialize(json!({}));
    let (is_error, text) = mcp.compress_context(json!({
        "query": "how long does the client wait before it retries?",
        "ranker": "model",
        "budget_tokens": 100
    }));
    assert!(is_error, "{text}");
    assert!(text.contains("prompt log-probabilities"), "{text}");
    assert!(text.contains("vllm serve"), "{text}");
    let status = mcp.call("status", json!({}));
    assert!(
        status["structuredContent"].is_object(),
        "the server went down: {status}"
    );
    assert_eq!(
        status["structuredContent"]["model"]["state"],
        "failed",
        "{}",
        text_of(&status)
    );
}
