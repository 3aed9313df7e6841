//! One workspace index below every surface (`ctxzip_chunker::index`): the LSP and MCP, each
//! the real binary over stdio, and the CLI's `compress` (a one-shot read through the same
//! index) answer the same request on the same workspace with the same context, before and
//! after a file is edited on disk with no event to say so; the servers also for one
//! directory named in each surface's own terms (a URI, a relative path). The workspace has
//! what a walk must agree on: a symlink inside it, a secret-named file, an ignored directory.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use ctxzip_lsp::client::LspClient;
use serde_json::{Value, json};

use common::mcp_client::Client as McpClient;

const MODEL: &str = "smollm2-135m";
const WAIT: Duration = Duration::from_secs(300);
const QUERY: &str = "how is the retry delay computed and where is the invoice total summed?";
const BUDGET: u64 = 300;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    // An hour old: what finds a later edit is the stamp's comparison, not the rule that
    // re-reads files written too recently to trust.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "src/net/retry.py",
        "import random\n\n\ndef backoff_delay(attempt):\n    \"\"\"Seconds to wait before retry number `attempt`.\"\"\"\n    return min(30.0, 0.5 * 2 ** attempt) + random.random()\n\n\ndef should_retry(status):\n    return status in (429, 502, 503)\n",
    );
    write(
        root,
        "src/billing.py",
        "def invoice_total(lines):\n    total = 0\n    for line in lines:\n        total += line.price * line.quantity\n    return total\n\n\ndef format_money(cents):\n    return f\"{cents / 100:.2f}\"\n",
    );
    write(
        root,
        "src/lib.rs",
        "/// Parses `key = value` lines.\npub fn parse_config(text: &str) -> Vec<(String, String)> {\n    text.lines()\n        .filter_map(|l| l.split_once('='))\n        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))\n        .collect()\n}\n",
    );
    write(root, "build/gen.py", "def generated_marker():\n    pass\n");
    write(root, ".gitignore", "build/\n");
    write(root, "deploy.pem", "not a key, but named like one\n");
    #[cfg(unix)]
    std::os::unix::fs::symlink("src/net", root.join("net")).unwrap();
    dir
}

fn start_lsp(root: &Path) -> LspClient {
    common::lsp::start(
        root,
        json!({"model": MODEL, "offline": true}),
        &common::test_cache(),
        WAIT,
    )
}

fn start_mcp(root: &Path) -> McpClient {
    let mut mcp = McpClient::start_with_stderr(&[root.to_str().unwrap()], root, Stdio::null());
    mcp.initialize(json!({}));
    mcp
}

/// What both answers must agree on: the context, and each kept chunk as path:start-end.
#[derive(Debug, PartialEq)]
struct Answer {
    context: String,
    chunks: Vec<String>,
}

fn lsp_answer(lsp: &mut LspClient, scope: Option<&Path>) -> Answer {
    let mut params = json!({"query": QUERY, "budget": BUDGET});
    if let Some(dir) = scope {
        params["paths"] = json!([format!("file://{}", dir.display())]);
    }
    let response = common::lsp::compress_when_indexed(lsp, params, WAIT);
    let result = &response["result"];
    let context = result["context"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"));
    let chunks = result["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            // LSP lines count from 0; the end is the last line itself.
            let start = c["range"]["start"]["line"].as_u64().unwrap() + 1;
            let end = c["range"]["end"]["line"].as_u64().unwrap() + 1;
            format!("{}:{start}-{end}", c["path"].as_str().unwrap())
        })
        .collect();
    Answer {
        context: context.to_owned(),
        chunks,
    }
}

fn mcp_answer(mcp: &mut McpClient, scope: Option<&str>) -> Answer {
    let mut arguments = json!({"query": QUERY, "budget_tokens": BUDGET});
    if let Some(dir) = scope {
        arguments["paths"] = json!([dir]);
    }
    let result = mcp.call("compress_context", arguments);
    assert_ne!(result["isError"], json!(true), "{result}");
    let output: &Value = &result["structuredContent"];
    answer_of(output)
}

/// The CLI's answer for the whole workspace, run in it (paths relative to it, as the servers
/// give them).
fn cli_answer(root: &Path) -> Answer {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctxzip"))
        .env("CTXZIP_CACHE", common::test_cache())
        .args(["compress", ".", "--query", QUERY, "--budget"])
        .arg(BUDGET.to_string())
        .args(["--format", "json", "--model", MODEL, "--offline", "--quiet"])
        .current_dir(root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let output: Value = serde_json::from_slice(&out.stdout).unwrap();
    answer_of(&output)
}

/// The context and the chunks (`path:start-end`) of a compress result as JSON, from any
/// front door.
fn answer_of(output: &Value) -> Answer {
    let chunks = output["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("{output}"))
        .iter()
        .map(|c| {
            format!(
                "{}:{}-{}",
                c["path"].as_str().unwrap(),
                c["start_line"],
                c["end_line"]
            )
        })
        .collect();
    Answer {
        context: output["context"].as_str().unwrap().to_owned(),
        chunks,
    }
}

#[test]
fn lsp_mcp_and_cli_give_the_same_answer_from_the_one_index() {
    let dir = workspace();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut lsp = start_lsp(&root);
    let mut mcp = start_mcp(&root);

    let from_lsp = lsp_answer(&mut lsp, None);
    let from_mcp = mcp_answer(&mut mcp, None);
    assert!(!from_lsp.chunks.is_empty(), "{from_lsp:?}");
    assert!(from_lsp.context.contains("backoff_delay"), "{from_lsp:?}");
    // What the walk leaves out, it leaves out for both.
    for left_out in ["generated_marker", "named like one"] {
        assert!(!from_lsp.context.contains(left_out), "{from_lsp:?}");
    }
    // The file behind the symlink once, under its real path.
    assert!(
        !from_lsp.chunks.iter().any(|c| c.starts_with("net/")),
        "{from_lsp:?}"
    );
    assert_eq!(from_lsp, from_mcp);
    // The CLI reads through the same index, once: the file behind the symlink is no second
    // copy there either.
    assert_eq!(cli_answer(&root), from_mcp);

    // One directory, named as each surface names it.
    let scoped_lsp = lsp_answer(&mut lsp, Some(&root.join("src/net")));
    let scoped_mcp = mcp_answer(&mut mcp, Some("src/net"));
    assert!(
        scoped_lsp.chunks.iter().all(|c| c.starts_with("src/net/")),
        "{scoped_lsp:?}"
    );
    assert_eq!(scoped_lsp, scoped_mcp);

    // Edited on disk, no event to either server: both read it again, and still agree.
    let retry = root.join("src/net/retry.py");
    let edited = std::fs::read_to_string(&retry)
        .unwrap()
        .replace("backoff_delay", "jittered_wait");
    std::fs::write(&retry, edited).unwrap();
    let after_lsp = lsp_answer(&mut lsp, None);
    let after_mcp = mcp_answer(&mut mcp, None);
    assert!(after_lsp.context.contains("jittered_wait"), "{after_lsp:?}");
    assert!(
        !after_lsp.context.contains("backoff_delay"),
        "{after_lsp:?}"
    );
    assert_eq!(after_lsp, after_mcp);
    assert_eq!(cli_answer(&root), after_mcp);
}
