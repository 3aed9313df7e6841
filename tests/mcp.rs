//! End-to-end tests of `ctxzip mcp`: the real binary over stdio, spoken to in newline-delimited
//! JSON-RPC as an agent's MCP client would, with the small real model.

mod common;

use std::time::{Duration, Instant};

use expect_test::expect;
use serde_json::{Value, json};

use common::mcp_client::{Client, REPLY_TIMEOUT, text_of};

/// A small repository beside a directory the server must never read.
fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "net/retry.py",
        r#"import time


def backoff_delay(attempt, base=0.5, cap=30.0):
    """Seconds to wait before retry number `attempt`: exponential, capped."""
    return min(cap, base * (2 ** attempt))


def retry(call, attempts=5):
    """Calls `call` until it succeeds, sleeping backoff_delay between tries."""
    for attempt in range(attempts):
        try:
            return call()
        except ConnectionError:
            time.sleep(backoff_delay(attempt))
    raise ConnectionError("gave up after %d attempts" % attempts)
"#,
    );
    write(
        "billing/invoice.py",
        r#"def invoice_total(lines, tax_rate):
    """Sum of line amounts plus tax, rounded to cents."""
    subtotal = sum(line.quantity * line.unit_price for line in lines)
    return round(subtotal * (1 + tax_rate), 2)


def format_invoice(customer, lines):
    rows = ["%s x%d" % (line.name, line.quantity) for line in lines]
    return "Invoice for %s\n%s" % (customer, "\n".join(rows))
"#,
    );
    write(
        "users/accounts.py",
        r#"class Account:
    def __init__(self, email):
        self.email = email
        self.active = True

    def deactivate(self):
        self.active = False


def find_account(accounts, email):
    return next((a for a in accounts if a.email == email), None)
"#,
    );
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(
        dir.path().join("outside/secret.py"),
        "def secret():\n    return 42\n",
    )
    .unwrap();
    (dir, root)
}

#[test]
fn mcp_session_over_stdio() {
    let (dir, root) = fixture();
    let mut client = Client::start(
        &[
            "--max-output-tokens",
            "1000",
            "--gpu-layers",
            "2",
            root.to_str().unwrap(),
        ],
        dir.path(),
    );
    let init = client.initialize(json!({}));
    assert_eq!(init["serverInfo"]["name"], "ctxzip");
    assert!(init["capabilities"]["tools"].is_object());
    assert!(
        init["instructions"]
            .as_str()
            .unwrap()
            .contains("compress_context"),
        "{init}"
    );

    let tools = client.request("tools/list", json!({}));
    expect![[r##"
        [
          {
            "annotations": {
              "openWorldHint": false,
              "readOnlyHint": true,
              "title": "Compress workspace context"
            },
            "description": "Get the source code of this workspace that matters for a task, compressed into a token budget: whole functions, types and blocks ranked by how much they help explain the query, under their file paths, followed by a list of the kept chunks as path:start-end. Call it before reading files one by one when you need to understand, change or debug code; narrow with paths or focus_file.",
            "inputSchema": {
              "$defs": {
                "Format": {
                  "description": "How the context is laid out. JSON wraps the text layout with chunk lists and stats.",
                  "oneOf": [
                    {
                      "const": "text",
                      "description": "Each file under a `==> path <==` header; left-out code is marked by `...` comments.",
                      "type": "string"
                    },
                    {
                      "const": "markdown",
                      "description": "Each file's path, then its code in a fenced block.",
                      "type": "string"
                    },
                    {
                      "const": "json",
                      "description": "The text layout; a JSON result wraps it with the kept chunks and the stats.",
                      "type": "string"
                    },
                    {
                      "const": "xml",
                      "description": "Each file in a `<file path=\"…\">` element, XML-escaped.",
                      "type": "string"
                    }
                  ]
                },
                "Ranker": {
                  "oneOf": [
                    {
                      "const": "model",
                      "description": "Conditional perplexity under the model (ctxzip).",
                      "type": "string"
                    },
                    {
                      "const": "fused",
                      "description": "The model's ranking fused with BM25's by reciprocal rank (the default).",
                      "type": "string"
                    },
                    {
                      "const": "bm25",
                      "description": "BM25 alone, whole chunks: the lexical baseline, no model work; with the budget in a\ntokenizer other than the model's, no model is loaded at all.",
                      "type": "string"
                    }
                  ]
                },
                "TokenizerSpec": {
                  "description": "model (the scoring model's own tokenizer, the default), o200k (GPT-4o and later), cl100k (GPT-4, GPT-3.5), or the path of a Hugging Face tokenizer.json.",
                  "examples": [
                    "model",
                    "o200k",
                    "cl100k",
                    "/models/Qwen2.5-Coder-7B/tokenizer.json"
                  ],
                  "type": "string"
                }
              },
              "$schema": "https://json-schema.org/draft/2020-12/schema",
              "properties": {
                "budget_tokens": {
                  "description": "Most tokens of context to return, counted in `tokenizer` (default: the server's\n--default-budget-tokens; larger values are clamped to its --max-output-tokens).",
                  "type": "integer"
                },
                "candidates": {
                  "description": "Chunks the model scores per query at most; more finds more, at more model time. 0\nscores none (BM25's order stands, chunks the query names are still scored) and keeps\nthe stage that prunes kept functions: about half the model tokens, most of the\ngain over BM25 (BENCHMARKS.md, \"What each model stage adds\").",
                  "minimum": 0,
                  "type": "integer"
                },
                "deadline_ms": {
                  "description": "Answer within about this many milliseconds of model time: candidates are scored best\nfirst (by BM25; functions first for a question) until then, the rest keep BM25's\norder, functions not reached stay whole.\nScores already cached are used regardless, so asking again refines the answer.",
                  "minimum": 0,
                  "type": "integer"
                },
                "focus_file": {
                  "description": "The file being worked on, \"FILE\" or \"FILE:LINE\": the chunk at LINE is always kept\nand the file's other chunks are favoured.",
                  "type": "string"
                },
                "format": {
                  "$ref": "#/$defs/Format",
                  "description": "Layout of the context: text, markdown, json or xml."
                },
                "max_model_tokens": {
                  "description": "Spend at most about this many model tokens (decoded, or sent to a remote scorer) on\nthe answer (default 6000; more reads more candidates, worth it where a GPU or a\nscoring server makes model tokens cheap): the stage that prunes kept functions gets\nits share first, candidates are scored best first (by BM25; functions first for a\nquestion) with the rest, the others keep BM25's order. Cached scores cost nothing,\nso asking again refines the answer.",
                  "minimum": 0,
                  "type": "integer"
                },
                "no_fine": {
                  "default": false,
                  "description": "Keep whole functions: skip the stage that prunes kept functions to their relevant\nblocks.",
                  "type": "boolean"
                },
                "paths": {
                  "description": "Only these files or directories, relative to the workspace root (default: the whole\nworkspace).",
                  "items": {
                    "type": "string"
                  },
                  "type": "array"
                },
                "query": {
                  "description": "What the context is for, in words: the task, question or bug, e.g. \"where are\nretries handled and how is the backoff computed?\".",
                  "type": "string"
                },
                "ranker": {
                  "$ref": "#/$defs/Ranker",
                  "description": "How chunks are ranked: the model's scores fused with BM25's order by reciprocal rank\n(the default: it answered the most questions over whole repositories), the model\nalone, or BM25 alone (the lexical baseline, no model scoring; with a tokenizer other\nthan the model's it needs no model at all)."
                },
                "rate": {
                  "description": "Keep this fraction of the workspace's tokens instead of a budget (0 < rate <= 1).",
                  "type": "number"
                },
                "tokenizer": {
                  "$ref": "#/$defs/TokenizerSpec",
                  "description": "What the budget and the reported token counts count in: the scoring model's own\ntokenizer, an agent's (o200k: GPT-4o and later; cl100k: GPT-4), or the one a\nHugging Face tokenizer.json describes (its path). The model's own work counts in its\ntokenizer whatever this is."
                }
              },
              "required": [
                "query"
              ],
              "type": "object"
            },
            "name": "compress_context",
            "outputSchema": {
              "$defs": {
                "SelectedChunk": {
                  "properties": {
                    "end_line": {
                      "minimum": 0,
                      "type": "integer"
                    },
                    "kept_lines": {
                      "description": "Line runs kept (1-based, inclusive); one run when the chunk is whole.",
                      "items": {
                        "items": {
                          "minimum": 0,
                          "type": "integer"
                        },
                        "maxItems": 2,
                        "minItems": 2,
                        "type": "array"
                      },
                      "type": "array"
                    },
                    "kind": {
                      "description": "function, method, header, glue, ... (lower case).",
                      "type": "string"
                    },
                    "name": {
                      "anyOf": [
                        {
                          "type": "string"
                        },
                        {
                          "type": "null"
                        }
                      ]
                    },
                    "path": {
                      "type": "string"
                    },
                    "score": {
                      "type": "number"
                    },
                    "start_line": {
                      "minimum": 0,
                      "type": "integer"
                    },
                    "tokens": {
                      "description": "Tokens of this chunk in the output (after fine pruning).",
                      "minimum": 0,
                      "type": "integer"
                    }
                  },
                  "required": [
                    "path",
                    "start_line",
                    "end_line",
                    "name",
                    "kind",
                    "score",
                    "tokens",
                    "kept_lines"
                  ],
                  "type": "object"
                },
                "Stats": {
                  "properties": {
                    "budget_tokens": {
                      "minimum": 0,
                      "type": "integer"
                    },
                    "candidates": {
                      "minimum": 0,
                      "type": "integer"
                    },
                    "chunks": {
                      "minimum": 0,
                      "type": "integer"
                    },
                    "compressed_tokens": {
                      "minimum": 0,
                      "type": "integer"
                    },
                    "deadline_skipped": {
                      "description": "Candidates and functions the model did not reach before the deadline, or within\nthe model-token budget.",
                      "minimum": 0,
                      "type": "integer"
                    },
                    "elapsed_ms": {
                      "type": "number"
                    },
                    "files": {
                      "minimum": 0,
                      "type": "integer"
                    },
                    "model_tokens": {
                      "description": "Tokens the model processed for this query.",
                      "minimum": 0,
                      "type": "integer"
                    },
                    "original_tokens": {
                      "description": "Tokens of every chunk: exact up to 1 MiB of chunk text and for a rate budget; beyond,\nthe chunks no stage counted are estimated from their bytes (`compress/counts.rs`).",
                      "minimum": 0,
                      "type": "integer"
                    },
                    "ratio": {
                      "type": "number"
                    },
                    "redacted": {
                      "description": "Secrets replaced with `[REDACTED:<rule>]` in the files read (all, not just those\nselected).",
                      "minimum": 0,
                      "type": "integer"
                    }
                  },
                  "required": [
                    "original_tokens",
                    "compressed_tokens",
                    "ratio",
                    "elapsed_ms",
                    "model_tokens",
                    "budget_tokens",
                    "candidates",
                    "deadline_skipped",
                    "files",
                    "chunks",
                    "redacted"
                  ],
                  "type": "object"
                }
              },
              "$schema": "https://json-schema.org/draft/2020-12/schema",
              "properties": {
                "budget_tokens": {
                  "description": "The budget this call ran under (after the output cap).",
                  "minimum": 0,
                  "type": "integer"
                },
                "chunks": {
                  "description": "The kept chunks, in output order.",
                  "items": {
                    "$ref": "#/$defs/SelectedChunk"
                  },
                  "type": "array"
                },
                "context": {
                  "description": "The compressed context, as in the first text block.",
                  "type": "string"
                },
                "notes": {
                  "description": "What the caller should know: a clamped budget, redacted secrets, a deadline reached.",
                  "items": {
                    "type": "string"
                  },
                  "type": "array"
                },
                "root": {
                  "description": "The workspace root the paths are relative to.",
                  "type": "string"
                },
                "stats": {
                  "$ref": "#/$defs/Stats"
                }
              },
              "required": [
                "context",
                "root",
                "budget_tokens",
                "chunks",
                "stats",
                "notes"
              ],
              "type": "object"
            }
          },
          {
            "annotations": {
              "openWorldHint": false,
              "readOnlyHint": true,
              "title": "ctxzip status"
            },
            "description": "Show the workspace root, how many files and chunks are indexed, and whether the model is loaded, so you can tell whether compress_context is ready or still warming up.",
            "inputSchema": {
              "properties": {},
              "type": "object"
            },
            "name": "status"
          }
        ]"##]].assert_eq(&serde_json::to_string_pretty(&tools["tools"]).unwrap());
    // Every client takes the schemas: optional fields are declared by their plain type,
    // and the compress tool declares what its structuredContent holds.
    let compress_tool = &tools["tools"][0];
    assert_eq!(
        type_arrays(&compress_tool["inputSchema"], "inputSchema"),
        Vec::<String>::new()
    );
    let output_schema = &compress_tool["outputSchema"];
    assert_eq!(output_schema["type"], "object", "{compress_tool}");

    // Success, with progress notifications for the token the call carries.
    let result = client.request(
        "tools/call",
        json!({
            "name": "compress_context",
            "arguments": {"query": "how is the retry backoff delay computed?", "budget_tokens": 300},
            "_meta": {"progressToken": "compress-1"},
        }),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    assert!(text.contains("def backoff_delay"), "{text}");
    assert!(text.contains("function backoff_delay"), "{text}");
    conforms(
        &result["structuredContent"],
        output_schema,
        output_schema,
        "structuredContent",
    )
    .unwrap_or_else(|e| panic!("{e}: {}", result["structuredContent"]));
    assert_eq!(
        result["structuredContent"]["context"], result["content"][0]["text"],
        "the structured result holds the context"
    );
    let stats = &result["structuredContent"]["stats"];
    let compressed_tokens = stats["compressed_tokens"].as_u64().unwrap();
    assert!(compressed_tokens > 0 && compressed_tokens <= 300, "{stats}");
    let chunks = result["structuredContent"]["chunks"].as_array().unwrap();
    assert!(
        chunks.iter().any(|c| c["path"] == "net/retry.py"),
        "{chunks:?}"
    );
    let progress: Vec<f64> = client
        .notifications
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .filter(|n| n["params"]["progressToken"] == "compress-1")
        .map(|n| n["params"]["progress"].as_f64().unwrap())
        .collect();
    assert!(progress.len() >= 3, "{:?}", client.notifications);
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    // The core's stages, in order, out of 100; the model's scoring counted per candidate.
    let messages: Vec<(f64, &str)> = client
        .notifications
        .iter()
        .filter(|n| n["params"]["progressToken"] == "compress-1")
        .map(|n| {
            assert_eq!(n["params"]["total"], 100.0, "{n}");
            let p = &n["params"];
            (
                p["progress"].as_f64().unwrap(),
                p["message"].as_str().unwrap(),
            )
        })
        .collect();
    let mut from = 0;
    for stage in [
        "indexed ",
        "loading the model",
        "ranking chunks by keywords",
        "scoring candidates with the model: 0/",
        "candidates, ",
        "assembling the context",
        "done: ",
    ] {
        let at = messages[from..]
            .iter()
            .position(|(_, m)| m.contains(stage))
            .unwrap_or_else(|| panic!("{stage:?} after message {from} of {messages:?}"));
        from += at;
    }
    assert_eq!(messages.last().map(|m| m.0), Some(100.0), "{messages:?}");

    // Files written after startup are indexed by the next call.
    std::fs::write(
        root.join("net/jitter.py"),
        "import random\n\n\ndef jitter_delay(delay):\n    return delay * random.uniform(0.5, 1.5)\n",
    )
    .unwrap();
    let result = client.call(
        "compress_context",
        json!({"query": "random jitter on the delay", "paths": ["net/jitter.py"], "budget_tokens": 200}),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    assert!(text.contains("def jitter_delay"), "{text}");

    // A budget above the server's cap is clamped, and the result says so.
    let result = client.call(
        "compress_context",
        json!({"query": "invoice total with tax", "budget_tokens": 100000, "paths": ["billing"], "format": "markdown"}),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    assert_eq!(result["structuredContent"]["budget_tokens"], 1000);
    assert!(text.contains("clamped to 1000 tokens"), "{text}");
    assert!(text.contains("invoice_total"), "{text}");
    assert!(
        !text.contains("backoff_delay"),
        "paths narrows the scope: {text}"
    );

    // A latency budget already spent: keyword ranking, and the result says so.
    let result = client.call(
        "compress_context",
        json!({"query": "how are failed attempts retried? (deadline)", "budget_tokens": 100, "deadline_ms": 0}),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    assert!(text.contains("deadline_ms reached"), "{text}");

    // No model tokens to spend: likewise, and the result says which limit it was.
    let result = client.call(
        "compress_context",
        json!({"query": "how are failed attempts retried? (no model tokens)", "budget_tokens": 100, "max_model_tokens": 0}),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    assert!(text.contains("max_model_tokens (0) spent"), "{text}");

    // The options of the CLI and the LSP: a rate, BM25 alone, whole functions, candidates.
    let result = client.call(
        "compress_context",
        json!({"query": "invoice total with tax", "rate": 0.5, "ranker": "bm25", "no_fine": true, "candidates": 4}),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    conforms(
        &result["structuredContent"],
        output_schema,
        output_schema,
        "structuredContent",
    )
    .unwrap_or_else(|e| panic!("{e}: {}", result["structuredContent"]));
    let stats = &result["structuredContent"]["stats"];
    let original = stats["original_tokens"].as_u64().unwrap();
    assert_eq!(
        stats["budget_tokens"].as_u64().unwrap(),
        original / 2,
        "{stats}"
    );
    assert_eq!(stats["model_tokens"], 0, "bm25 runs no model: {stats}");
    assert!(text.contains("invoice_total"), "{text}");
    // Failures are results an agent can read and act on.
    // A JSON file outside the root whose value a parser's message would quote.
    std::fs::write(
        dir.path().join("outside/tokenizer.json"),
        r#"{"version": "1.0", "model": {"type": "BPE", "vocab": "hunter2-outside"}}"#,
    )
    .unwrap();
    let failures = [
        (json!({"query": "   "}), "query is empty"),
        (
            json!({"query": "retry", "budget_tokens": -5}),
            "budget_tokens must be a positive number",
        ),
        (
            json!({"query": "secret", "paths": ["../outside/secret.py"]}),
            "not inside the workspace root",
        ),
        (
            json!({"query": "secret", "focus_file": "../outside/secret.py:1"}),
            "not inside the workspace root",
        ),
        (
            json!({"query": "retry", "paths": ["net/missing.py"]}),
            "no such file or directory",
        ),
        (json!({"budget_tokens": 100}), "query"),
        (
            json!({"query": "retry", "budget_tokens": 100, "rate": 0.2}),
            "not both",
        ),
        (
            json!({"query": "retry", "rate": 1.5}),
            "rate must be in (0, 1]",
        ),
        (
            json!({"query": "retry", "ranker": "lexical"}),
            "expected one of `model`, `fused`, `bm25`",
        ),
        // The core's refusal, worded in the tool's own terms.
        (
            json!({"query": "retry", "budget_tokens": 1, "ranker": "bm25"}),
            "raise budget_tokens to at least",
        ),
        // A tokenizer that is no name and no file: the file tried and the choices.
        (
            json!({"query": "retry", "tokenizer": "/no/such/tokenizer.json"}),
            "tokenizer: /no/such/tokenizer.json does not exist; give model, o200k, cl100k or the path",
        ),
        // A file that is no tokenizer: said without quoting the file (it may lie outside the
        // root): no failure's text holds the file's value.
        (
            json!({"query": "retry", "tokenizer": dir.path().join("outside/tokenizer.json")}),
            "is not a Hugging Face tokenizer.json; give model",
        ),
    ];
    for (arguments, message) in failures {
        let result = client.call("compress_context", arguments.clone());
        assert_eq!(result["isError"], json!(true), "{arguments}: {result}");
        let text = text_of(&result);
        assert!(text.contains(message), "{arguments}: {text}");
        assert!(!text.contains("hunter2"), "{arguments}: {text}");
    }

    let status = client.call("status", json!({}));
    let s = &status["structuredContent"];
    assert_eq!(
        s["workspace"]["root"],
        std::fs::canonicalize(&root).unwrap().to_str().unwrap()
    );
    assert_eq!(s["workspace"]["source"], "--root");
    assert_eq!(s["index"]["state"], "ready");
    assert_eq!(s["index"]["files"], 4);
    assert_eq!(s["model"]["state"], "ready");
    assert_eq!(s["model"]["name"], "smollm2-135m");
    // `--gpu-layers` reaches the scorer, and the status says where the model runs.
    assert_eq!(s["model"]["gpu_layers_asked"], 2, "{s}");
    assert!(
        s["model"]["device"].as_str().is_some_and(|d| !d.is_empty()),
        "{s}"
    );
    assert!(s["model"]["gpu_layers"].as_u64().is_some(), "{s}");
    assert!(s["scorer_cache"]["tokens_decoded"].as_u64().unwrap() > 0);
    assert_eq!(s["max_output_tokens"], 1000);
    drop(client);

    // A rate past the output cap is clamped like a budget.
    let mut client = Client::start(
        &["--max-output-tokens", "120", root.to_str().unwrap()],
        dir.path(),
    );
    client.initialize(json!({}));
    let result = client.call(
        "compress_context",
        json!({"query": "invoice total with tax", "rate": 1.0, "ranker": "bm25"}),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    let stats = &result["structuredContent"]["stats"];
    assert!(stats["original_tokens"].as_u64().unwrap() > 120, "{stats}");
    assert!(
        stats["compressed_tokens"].as_u64().unwrap() <= 120,
        "{stats}"
    );
    assert!(text.contains("clamped to 120 tokens"), "{text}");

    // The cap counts in the call's tokenizer: the context holds at most 120 o200k tokens,
    // counted here by tiktoken itself.
    let result = client.call(
        "compress_context",
        json!({"query": "invoice total with tax", "budget_tokens": 100000, "ranker": "bm25",
               "tokenizer": "o200k"}),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    let content = &result["structuredContent"];
    let context = content["context"]
        .as_str()
        .unwrap_or_else(|| panic!("{content}"));
    let n = tiktoken_rs::o200k_base_singleton().count_ordinary(context);
    assert!(n <= 120, "{n} o200k tokens:\n{context}");
    assert_eq!(content["stats"]["compressed_tokens"], n, "{content}");
    assert!(text.contains("clamped to 120 tokens"), "{text}");

    // And in a tokenizer.json's (one trained here on the workspace's files, outside it).
    let texts: Vec<String> = ["net/retry.py", "billing/invoice.py"]
        .iter()
        .filter_map(|rel| std::fs::read_to_string(root.join(rel)).ok())
        .collect();
    assert!(!texts.is_empty(), "the fixture's files moved");
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokenizer = common::trained_tokenizer_json(dir.path(), &texts, 300);
    let result = client.call(
        "compress_context",
        json!({"query": "invoice total with tax", "budget_tokens": 100000, "ranker": "bm25",
               "tokenizer": tokenizer.to_str().unwrap()}),
    );
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    let content = &result["structuredContent"];
    let context = content["context"].as_str().unwrap();
    let n = common::count_in_tokenizer_json(&tokenizer, context);
    assert!(n <= 120, "{n} tokens of the tokenizer.json:\n{context}");
    assert_eq!(content["stats"]["compressed_tokens"], n, "{content}");
}

/// Every `"type": [..]` array under `schema`, by its JSON path.
fn type_arrays(schema: &Value, at: &str) -> Vec<String> {
    match schema {
        Value::Object(map) => map
            .iter()
            .flat_map(|(key, value)| {
                let here = format!("{at}/{key}");
                if key == "type" && value.is_array() {
                    vec![here]
                } else {
                    type_arrays(value, &here)
                }
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, v)| type_arrays(v, &format!("{at}/{i}")))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `value` conforms to `schema`, for the keywords schemars writes (`type`,
/// `properties`, `required`, `items`, `$ref` into `$defs`, `anyOf`, `minimum`, `minItems`,
/// `maxItems`, `additionalProperties: false`). No JSON Schema crate is in the lock file.
fn conforms(value: &Value, schema: &Value, root: &Value, at: &str) -> Result<(), String> {
    if let Some(branches) = schema["anyOf"].as_array() {
        let failures: Vec<String> = branches
            .iter()
            .filter_map(|branch| conforms(value, branch, root, at).err())
            .collect();
        if failures.len() == branches.len() {
            return Err(format!("{at}: matches no anyOf branch: {failures:?}"));
        }
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/$defs/")
            .ok_or_else(|| format!("{at}: unsupported $ref {reference}"))?;
        return conforms(value, &root["$defs"][name], root, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let type_ok = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|t| type_ok(t)) {
        return Err(format!("{at}: {value} is not of type {types:?}"));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < min
    {
        return Err(format!("{at}: {n} < minimum {min}"));
    }
    if let Value::Object(map) = value {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !map.contains_key(name) {
                return Err(format!("{at}: required field {name:?} missing"));
            }
        }
        for (key, field) in map {
            match schema["properties"].get(key) {
                Some(property) => conforms(field, property, root, &format!("{at}.{key}"))?,
                None if schema["additionalProperties"] == json!(false) => {
                    return Err(format!("{at}: field {key:?} is not in the schema"));
                }
                None => {}
            }
        }
    }
    if let Value::Array(items) = value {
        if let Some(min) = schema["minItems"].as_u64()
            && (items.len() as u64) < min
        {
            return Err(format!("{at}: fewer than {min} items"));
        }
        if let Some(max) = schema["maxItems"].as_u64()
            && (items.len() as u64) > max
        {
            return Err(format!("{at}: more than {max} items"));
        }
        if schema.get("items").is_some() {
            for (i, item) in items.iter().enumerate() {
                conforms(item, &schema["items"], root, &format!("{at}[{i}]"))?;
            }
        }
    }
    Ok(())
}

/// Without --root, the workspace is the client's first root.
#[test]
fn mcp_root_from_client_roots() {
    let (dir, root) = fixture();
    let mut client = Client::start(&[], dir.path());
    let uri = format!(
        "file://{}",
        std::fs::canonicalize(&root).unwrap().to_str().unwrap()
    );
    client.answers.push((
        "roots/list",
        json!({"roots": [{"uri": uri, "name": "repo"}]}),
    ));
    client.initialize(json!({"roots": {"listChanged": false}}));
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let status = client.call("status", json!({}));
        let s = &status["structuredContent"];
        if s["index"]["state"] == "ready" {
            assert_eq!(s["workspace"]["source"], "client roots", "{s}");
            assert_eq!(s["index"]["files"], 3, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "index never got ready: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A server whose model cannot load still answers what needs no model: keyword ranking with
/// the budget in o200k. A request that ranks with the model gets the load's failure and the
/// fix, and the server goes on answering.
#[test]
fn keyword_ranking_is_served_when_the_model_cannot_load() {
    let (dir, root) = fixture();
    let missing = dir.path().join("no-such-model.gguf");
    let mut client = Client::start(
        &[
            "--model",
            missing.to_str().unwrap(),
            "--offline",
            root.to_str().unwrap(),
        ],
        dir.path(),
    );
    client.initialize(json!({}));
    let keywords = json!({
        "query": "invoice total with tax",
        "budget_tokens": 200,
        "ranker": "bm25",
        "tokenizer": "o200k",
    });
    let (is_error, text) = client.compress_context(keywords.clone());
    assert!(!is_error, "{text}");
    assert!(text.contains("def invoice_total"), "{text}");
    let (is_error, text) = client.compress_context(json!({"query": "invoice total with tax"}));
    assert!(is_error, "{text}");
    assert!(
        text.contains("the model failed to load")
            && text.contains("no-such-model.gguf")
            && text.contains("\"ranker\": \"bm25\" with \"tokenizer\": \"o200k\" needs no model"),
        "{text}"
    );
    let (is_error, text) = client.compress_context(keywords);
    assert!(!is_error, "{text}");
}

/// The server's index keeps files' chunks in the cache file: a second server on the same
/// workspace and cache reads every file and parses none of them (and says so).
#[test]
fn a_restarted_server_takes_its_files_chunks_from_the_cache() {
    let (dir, root) = fixture();
    let cache = dir.path().join("cache.sqlite");
    let index_after_startup = || {
        let mut client = Client::start_with_env(
            &[root.to_str().unwrap()],
            dir.path(),
            std::process::Stdio::inherit(),
            &[("CTXZIP_CACHE", &cache)],
        );
        client.initialize(json!({}));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let status = client.call("status", json!({}));
            let index = status["structuredContent"]["index"].clone();
            if index["state"] == "ready" {
                return index;
            }
            assert!(Instant::now() < deadline, "index never got ready: {index}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = index_after_startup();
    assert_eq!(
        (
            &first["files"],
            &first["last_refresh_read_files"],
            &first["last_refresh_files_from_cache"]
        ),
        (&json!(3), &json!(3), &json!(0)),
        "{first}"
    );
    let again = index_after_startup();
    assert_eq!(
        (
            &again["files"],
            &again["chunks"],
            &again["last_refresh_read_files"],
            &again["last_refresh_files_from_cache"]
        ),
        (&json!(3), &first["chunks"], &json!(3), &json!(3)),
        "{again}"
    );
}

/// A hostile input, its bytes, and the error replies (code, id) due before the next answer.
type HostileCase = (&'static str, Vec<u8>, Vec<(i64, Value)>);

fn errors(messages: &[Value]) -> Vec<(i64, Value)> {
    messages
        .iter()
        .filter(|m| m.get("error").is_some())
        .map(|m| (m["error"]["code"].as_i64().unwrap(), m["id"].clone()))
        .collect()
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

#[test]
fn hostile_lines_are_answered_and_the_next_message_is_served() {
    let (dir, root) = fixture();
    let mut client = Client::start(&[root.to_str().unwrap()], dir.path());
    client.initialize(json!({}));
    let cases: Vec<HostileCase> = vec![
        (
            "malformed JSON",
            b"{\"jsonrpc\": \"2.0\", \"id\": 50, \"method\":\n".to_vec(),
            vec![(-32700, Value::Null)],
        ),
        (
            "invalid UTF-8",
            b"{\"jsonrpc\": \"2.0\", \"id\": 51, \"method\": \"pi\xffng\"}\n".to_vec(),
            vec![(-32700, Value::Null)],
        ),
        (
            "not JSON at all",
            b"hello there\n".to_vec(),
            vec![(-32700, Value::Null)],
        ),
        (
            "JSON that is no JSON-RPC message",
            b"{\"hello\": 1}\n".to_vec(),
            vec![(-32600, Value::Null)],
        ),
        (
            "a request without \"jsonrpc\": \"2.0\"",
            b"{\"id\": 54, \"method\": \"ping\"}\n".to_vec(),
            vec![(-32600, json!(54))],
        ),
        (
            "a JSON array",
            b"[1, 2]\n".to_vec(),
            vec![(-32600, Value::Null)],
        ),
        ("blank lines", b"\n\r\n  \n".to_vec(), vec![]),
    ];
    for (name, bytes, expected) in cases {
        let before = client.hostile_then_ping(name, &bytes);
        assert_eq!(errors(&before), expected, "{name}: {before:?}");
    }

    // A whole message without its line break: answered once input pauses.
    client.send_bytes(b"{\"jsonrpc\": \"2.0\", \"id\": 52, \"method\": \"ping\"}");
    let answer = client
        .next_message(Duration::from_secs(10))
        .expect("a message without a line break is answered while the client waits");
    assert_eq!(answer["id"], 52, "{answer}");

    // A 20 MiB request and a 50 MB line: skipped without being kept, answered promptly.
    #[cfg(target_os = "linux")]
    let rss_before = peak_rss_bytes(client.child.id());
    let pad = "q".repeat(20 << 20);
    let big = json!({"jsonrpc": "2.0", "id": 53, "method": "tools/call",
        "params": {"name": "compress_context", "arguments": {"query": pad}}});
    let started = Instant::now();
    let before = client.hostile_then_ping("20 MiB request", format!("{big}\n").as_bytes());
    assert_eq!(errors(&before), [(-32600, json!(53))], "{before:?}");
    assert!(
        before[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-message-bytes"),
        "{before:?}"
    );
    let mut long_line = vec![b'z'; 50_000_000];
    long_line.push(b'\n');
    let before = client.hostile_then_ping("50 MB line", &long_line);
    assert_eq!(errors(&before), [(-32600, Value::Null)], "{before:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    #[cfg(target_os = "linux")]
    {
        let grown = peak_rss_bytes(client.child.id()).saturating_sub(rss_before);
        eprintln!(
            "mcp: peak RSS {} KiB before, grew by {} KiB over 70 MB of oversized lines, answered in {took:?}",
            rss_before / 1024,
            grown / 1024
        );
        assert!(grown < 32 << 20, "peak RSS grew by {grown} bytes");
    }
    // And a real call still works.
    let result = client.call(
        "compress_context",
        json!({"query": "retry backoff", "budget": 300}),
    );
    assert!(text_of(&result).contains("backoff"), "{result}");
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
    let (dir, root) = fixture();
    let mut client = Client::start(
        &[
            "--max-message-bytes",
            &limit.to_string(),
            root.to_str().unwrap(),
        ],
        dir.path(),
    );
    client.initialize(json!({}));
    let mut rng = Rng::new(seed);
    let mut answers = 0;
    for round in 0..rounds {
        let (bytes, family) = hostile::mcp_garbage(&mut rng, limit);
        let name = format!("seed {seed} round {round} ({family:?})");
        let before = client.hostile_then_ping(&name, &bytes);
        let answered = errors(&before).len();
        if family.answered() {
            assert!(answered >= 1, "{name}: no answer: {before:?}");
        }
        answers += answered;
    }
    eprintln!("mcp fuzz: {rounds} rounds, seed {seed}, {answers} error answers, server up");
}

/// AWS's documented example key id and a PEM block whose body is made up: never real keys.
const CONFIG_PY: &str = "import os\n\nAWS_ACCESS_KEY_ID = \"AKIAIOSFODNN7EXAMPLE\"\nSIGNING_KEY = \"\"\"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\"\"\"\n\n\ndef aws_region():\n    return os.environ.get(\"AWS_REGION\", \"eu-west-1\")\n";

/// A workspace holding secrets by content and by (bypassing) name.
fn secrets_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("config.py", CONFIG_PY);
    write(
        "id_rsa",
        "def id_rsa_contents():\n    return 'named like a key'\n",
    );
    write(
        "keys/SERVER.PEM",
        "def server_pem_contents():\n    return 1\n",
    );
    write(
        "service-account.json",
        "{\"service_account_contents\": 1}\n",
    );
    write("netrc.txt", "machine netrc_contents login me password pw\n");
    write(
        ".git/config",
        "[remote \"origin\"]\n\turl = https://git_config_contents@host/r\n",
    );
    #[cfg(unix)]
    std::os::unix::fs::symlink("../id_rsa", root.join("keys/deploy_key.txt")).unwrap();
    (dir, root)
}

#[test]
fn secrets_are_redacted_and_secret_files_skipped_unless_turned_off() {
    let (dir, root) = secrets_fixture();
    let arguments = json!({"query": "aws access key, signing key, contents of every file", "budget_tokens": 4000});
    let mut client = Client::start(&["--hidden", root.to_str().unwrap()], dir.path());
    client.initialize(json!({}));
    let result = client.call("compress_context", arguments.clone());
    let text = text_of(&result);
    assert_ne!(result["isError"], json!(true), "{text}");
    assert!(text.contains("[REDACTED:aws-access-key]"), "{text}");
    assert!(text.contains("[REDACTED:private-key]"), "{text}");
    assert!(
        !text.contains("AKIAIOSFODNN7EXAMPLE") && !text.contains("MIIEv"),
        "{text}"
    );
    for name in [
        "id_rsa",
        "deploy_key",
        "server_pem_contents",
        "service_account_contents",
        "netrc_contents",
        "git_config_contents",
    ] {
        assert!(!text.contains(name), "{name} was read: {text}");
    }
    assert_eq!(
        result["structuredContent"]["stats"]["redacted"], 2,
        "{result}"
    );
    assert!(
        text.contains("--no-redact"),
        "the note names the opt-out: {text}"
    );
    drop(client);

    let mut client = Client::start(
        &["--hidden", "--no-redact", root.to_str().unwrap()],
        dir.path(),
    );
    client.initialize(json!({}));
    let result = client.call("compress_context", arguments);
    let text = text_of(&result);
    assert!(text.contains("AKIAIOSFODNN7EXAMPLE"), "{text}");
    assert!(!text.contains("[REDACTED:"), "{text}");
    assert_eq!(
        result["structuredContent"]["stats"]["redacted"], 0,
        "{result}"
    );
}
