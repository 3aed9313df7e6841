//! `ctxzip compress` end to end with the real small model: budgets are never exceeded, the
//! relevant code is found, the JSON contract holds, and bad input gets a clear message and
//! exit code 2. The pipeline's own logic (budgets over random workspaces, order, callees,
//! deadlines, the fine stage, skeletons, the query window) is tested on the deterministic
//! model in `scoring/tests/pipeline.rs`.

mod common;

use std::fs;
use std::process::{Command, Output};

use serde_json::Value;

const MODEL: &str = "smollm2-135m";

fn ctxzip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctxzip"))
        .args(args)
        .env("CTXZIP_CACHE", common::test_cache())
        .output()
        .expect("the ctxzip binary runs")
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(
        root.join("billing.py"),
        r#"import decimal


def compute_invoice_total(items, tax_rate):
    """Sum the line items of an invoice and apply the tax rate."""
    subtotal = decimal.Decimal(0)
    for item in items:
        subtotal += item.price * item.quantity
    tax = subtotal * decimal.Decimal(tax_rate)
    return subtotal + tax


def format_currency(amount):
    return "${:,.2f}".format(amount)
"#,
    )
    .unwrap();
    fs::write(
        root.join("shapes.py"),
        r#"import math


class Circle:
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return math.pi * self.radius ** 2

    def perimeter(self):
        return 2 * math.pi * self.radius


def draw_ascii_square(size):
    for row in range(size):
        print("*" * size)
"#,
    )
    .unwrap();
    fs::write(
        root.join("net.py"),
        r#"import socket


def open_connection(host, port, timeout=5.0):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def retry(times, action):
    for attempt in range(times):
        try:
            return action()
        except OSError:
            if attempt == times - 1:
                raise
"#,
    )
    .unwrap();
    dir
}

fn json_compress(root: &str, query: &str, budget: &str, extra: &[&str]) -> (Value, Output) {
    let mut args = vec![
        "compress", root, "--query", query, "--budget", budget, "--format", "json", "--model",
        MODEL,
    ];
    args.extend_from_slice(extra);
    let out = ctxzip(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), out)
}

#[test]
fn finds_the_relevant_function_within_the_budget() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    for budget in [60usize, 120, 400] {
        let (json, _) = json_compress(
            root,
            "how is the tax added to the invoice subtotal?",
            &budget.to_string(),
            &[],
        );
        let stats = &json["stats"];
        let compressed = stats["compressed_tokens"].as_u64().unwrap() as usize;
        assert!(compressed <= budget, "budget {budget} exceeded: {stats}");
        assert!(compressed > 0);
        for key in [
            "original_tokens",
            "compressed_tokens",
            "ratio",
            "elapsed_ms",
            "model_tokens",
        ] {
            assert!(stats[key].is_number(), "stats.{key} missing: {stats}");
        }
        let chunks = json["chunks"].as_array().unwrap();
        for chunk in chunks {
            for key in ["path", "start_line", "end_line", "kind", "score", "tokens"] {
                assert!(!chunk[key].is_null(), "chunk.{key} missing: {chunk}");
            }
            assert!(chunk.get("name").is_some());
        }
        if budget >= 120 {
            let context = json["context"].as_str().unwrap();
            assert!(
                context.contains("def compute_invoice_total"),
                "budget {budget}:\n{context}"
            );
            assert!(context.contains("==> billing.py <=="), "{context}");
        }
    }
}

#[test]
fn output_formats_and_rate() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let out = ctxzip(&[
        "compress",
        root,
        "-q",
        "circle area",
        "--rate",
        "0.5",
        "--format",
        "markdown",
        "--model",
        MODEL,
        "--no-fine",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("```python\n"), "{text}");
    assert!(text.contains("def area(self):"), "{text}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("tokens"), "summary on stderr: {stderr}");

    let out = ctxzip(&[
        "compress",
        root,
        "-q",
        "open a tcp socket",
        "-b",
        "300",
        "--format",
        "xml",
        "--model",
        MODEL,
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("<file path=\"net.py\">"), "{text}");
}

/// `--tokenizer o200k|cl100k`: the output, as printed, never exceeds the budget counted by
/// tiktoken itself, on every format, and the reported counts are in that tokenizer.
#[test]
fn a_budget_in_a_named_tokenizer_holds_on_every_format() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let encodings = [
        ("o200k", tiktoken_rs::o200k_base_singleton()),
        ("cl100k", tiktoken_rs::cl100k_base_singleton()),
    ];
    for (name, bpe) in encodings {
        for budget in [70usize, 150, 400] {
            let b = budget.to_string();
            let common = [
                "--tokenizer",
                name,
                "--ranker",
                "bm25",
                "--budget",
                &b,
                "--model",
                MODEL,
            ];
            let query = "how is the tax added to the invoice subtotal?";
            for format in ["text", "markdown", "xml"] {
                let mut args = vec!["compress", root, "-q", query, "--format", format];
                args.extend(common);
                let out = ctxzip(&args);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{name} {format} {budget}: {stderr}");
                let printed = String::from_utf8(out.stdout).unwrap();
                let n = bpe.count_ordinary(&printed);
                assert!(n <= budget, "{name} {format}: {n} > {budget}:\n{printed}");
                assert!(n > 0, "{name} {format} {budget}: nothing printed");
            }
            let (json, _) =
                json_compress(root, query, &b, &["--tokenizer", name, "--ranker", "bm25"]);
            let context = json["context"].as_str().unwrap();
            let n = bpe.count_ordinary(context);
            assert!(n <= budget, "{name} json: {n} > {budget}:\n{context}");
            assert_eq!(
                json["stats"]["compressed_tokens"], n,
                "{name} json {budget}"
            );
            assert_eq!(json["stats"]["budget_tokens"], budget);
        }
    }
}

/// `--tokenizer PATH`: a budget in the tokenizer a Hugging Face tokenizer.json describes (one
/// trained here on the workspace's own files). The output, as printed, never exceeds the
/// budget counted by the `tokenizers` crate in this test, on every format; the reported
/// counts are in that tokenizer, not the model's; the directory holding the file names it too.
#[test]
fn a_budget_in_a_tokenizer_json_holds_on_every_format() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let texts: Vec<String> = ["billing.py", "shapes.py"]
        .iter()
        .map(|name| fs::read_to_string(dir.path().join(name)).unwrap())
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokenizer_dir = tempfile::tempdir().unwrap();
    let tokenizer = common::trained_tokenizer_json(tokenizer_dir.path(), &texts, 300);
    let path = tokenizer.to_str().unwrap();
    let count = |text: &str| common::count_in_tokenizer_json(&tokenizer, text);
    let query = "how is the tax added to the invoice subtotal?";
    for budget in [70usize, 150, 400] {
        let b = budget.to_string();
        for format in ["text", "markdown", "xml"] {
            let args = [
                "compress",
                root,
                "-q",
                query,
                "--format",
                format,
                "--tokenizer",
                path,
                "--ranker",
                "bm25",
                "--budget",
                &b,
                "--model",
                MODEL,
            ];
            let out = ctxzip(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{format} {budget}: {stderr}");
            let printed = String::from_utf8(out.stdout).unwrap();
            let n = count(&printed);
            assert!(n <= budget, "{format}: {n} > {budget}:\n{printed}");
            assert!(n > 0, "{format} {budget}: nothing printed");
        }
        let (json, _) = json_compress(root, query, &b, &["--tokenizer", path, "--ranker", "bm25"]);
        let context = json["context"].as_str().unwrap();
        let n = count(context);
        assert!(n <= budget, "json: {n} > {budget}:\n{context}");
        assert_eq!(json["stats"]["compressed_tokens"], n, "json {budget}");
    }
    // The workspace's size in this tokenizer, not the model's; a model's directory names
    // its tokenizer.json.
    let (by_file, _) = json_compress(
        root,
        query,
        "400",
        &["--tokenizer", path, "--ranker", "bm25"],
    );
    let (by_dir, _) = json_compress(
        root,
        query,
        "400",
        &[
            "--tokenizer",
            tokenizer_dir.path().to_str().unwrap(),
            "--ranker",
            "bm25",
        ],
    );
    let (by_model, _) = json_compress(root, query, "400", &["--ranker", "bm25"]);
    let original = |json: &Value| json["stats"]["original_tokens"].as_u64().unwrap();
    assert_eq!(original(&by_file), original(&by_dir));
    assert_ne!(original(&by_file), original(&by_model));
}

/// Keyword ranking with a budget in another tokenizer reads no model: it runs where no model
/// file exists, prints what it prints beside the real model, and spends no model tokens. The
/// same ranker counting in the model's tokenizer does need the model, and its error says how
/// to do without.
#[test]
fn keyword_ranking_in_another_tokenizer_runs_with_no_model() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let missing = dir.path().join("no-such-model.gguf");
    let missing = missing.to_str().unwrap();
    let query = "how is the tax added to the invoice subtotal?";
    let run = |model: &str, tokenizer: &str| {
        ctxzip(&[
            "compress",
            root,
            "-q",
            query,
            "--budget",
            "150",
            "--format",
            "json",
            "--ranker",
            "bm25",
            "--tokenizer",
            tokenizer,
            "--model",
            model,
            "--offline",
        ])
    };
    for tokenizer in ["o200k", "cl100k"] {
        let with_model = run(MODEL, tokenizer);
        let without = run(missing, tokenizer);
        let stderr = String::from_utf8_lossy(&without.stderr);
        assert!(without.status.success(), "{tokenizer}: {stderr}");
        let json = |out: &Output| -> Value { serde_json::from_slice(&out.stdout).unwrap() };
        let (with_model, without) = (json(&with_model), json(&without));
        assert_eq!(with_model["context"], without["context"], "{tokenizer}");
        assert!(
            without["context"]
                .as_str()
                .unwrap()
                .contains("def compute_invoice_total"),
            "{without}"
        );
        assert_eq!(without["stats"]["model_tokens"], 0);
    }
    let counted_by_model = run(missing, "model");
    assert_eq!(counted_by_model.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&counted_by_model.stderr);
    assert!(
        stderr.contains("no-such-model.gguf") && stderr.contains("--tokenizer o200k"),
        "{stderr}"
    );
}

#[test]
fn a_deadline_answers_without_the_model_and_a_repeat_completes_from_the_cache() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    // A query no other test asks, so this process's cache holds nothing for it.
    let query = "where does the invoice total get its tax rate added (deadline test)?";
    let (first, _) = json_compress(root, query, "120", &["--deadline-ms", "0"]);
    let stats = &first["stats"];
    let candidates = stats["candidates"].as_u64().unwrap();
    assert!(candidates > 0, "{stats}");
    // Every candidate, plus the functions the fine stage would have pruned.
    assert!(
        stats["deadline_skipped"].as_u64().unwrap() >= candidates,
        "{stats}"
    );
    assert!(
        stats["compressed_tokens"].as_u64().unwrap() <= 120,
        "{stats}"
    );
    assert!(!first["context"].as_str().unwrap().is_empty());

    let (full, _) = json_compress(root, query, "120", &[]);
    assert_eq!(full["stats"]["deadline_skipped"].as_u64(), Some(0));
    assert!(full["stats"]["model_tokens"].as_u64().unwrap() > 0);

    // Everything is cached now: the deadline costs nothing and changes nothing.
    let (again, _) = json_compress(root, query, "120", &["--deadline-ms", "0"]);
    assert_eq!(again["stats"]["deadline_skipped"].as_u64(), Some(0));
    assert_eq!(again["stats"]["model_tokens"].as_u64(), Some(0));
    assert_eq!(again["context"], full["context"]);
    assert_eq!(again["chunks"], full["chunks"]);
}

#[test]
fn a_model_token_budget_bounds_the_work_and_says_so_and_cached_scores_are_free() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    // A query no other test asks, so this process's cache holds nothing for it.
    let query = "where does the invoice total get its tax rate added (model token budget)?";
    let (capped, _) = json_compress(root, query, "120", &["--max-model-tokens", "700"]);
    let stats = &capped["stats"];
    // The query's own NLL (a few tokens) is read whatever the budget.
    assert!(
        stats["model_tokens"].as_u64().unwrap() <= 700 + 32,
        "{stats}"
    );
    assert!(stats["deadline_skipped"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["compressed_tokens"].as_u64().unwrap() <= 120,
        "{stats}"
    );

    // With the default budget (6000, more than this repository asks) the rest is read (what
    // the first run read comes from the cache).
    let (full, _) = json_compress(root, query, "120", &[]);
    assert_eq!(full["stats"]["deadline_skipped"].as_u64(), Some(0));
    assert!(full["stats"]["model_tokens"].as_u64().unwrap() > 0);
    // Everything is cached now: the budget costs nothing and changes nothing.
    let (again, _) = json_compress(root, query, "120", &["--max-model-tokens", "700"]);
    assert_eq!(again["stats"]["deadline_skipped"].as_u64(), Some(0));
    assert_eq!(again["stats"]["model_tokens"].as_u64(), Some(0));
    assert_eq!(again["context"], full["context"]);

    // In text, stderr says which limit left work to keyword ranking.
    let out = ctxzip(&[
        "compress",
        root,
        "--query",
        "how is a retry delay computed (model token budget, text)?",
        "--budget",
        "120",
        "--model",
        MODEL,
        "--max-model-tokens",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--max-model-tokens 0 left") && stderr.contains("again continues"),
        "{stderr}"
    );
}

#[test]
fn zero_candidates_keep_bm25s_order_and_the_fine_stage_still_prunes() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    // A query no other test asks, so that the model's work is not served from the cache.
    let query = "how is the tax added to the invoice subtotal (zero candidates)?";
    let (pruned, _) = json_compress(root, query, "60", &["--candidates", "0"]);
    let stats = &pruned["stats"];
    assert_eq!(stats["candidates"].as_u64(), Some(0), "{stats}");
    // The fine stage read the kept functions: the invoice function (62 tokens, over the
    // budget whole) fits as its signature with the body elided.
    assert!(stats["model_tokens"].as_u64().unwrap() > 0, "{stats}");
    let context = pruned["context"].as_str().unwrap();
    assert!(
        context.contains("def compute_invoice_total(items, tax_rate):\n    # ..."),
        "{context}"
    );

    let (whole, _) = json_compress(root, query, "60", &["--candidates", "0", "--no-fine"]);
    assert_eq!(
        whole["stats"]["model_tokens"].as_u64(),
        Some(0),
        "{}",
        whole["stats"]
    );
    assert!(
        !whole["context"]
            .as_str()
            .unwrap()
            .contains("def compute_invoice_total"),
        "{}",
        whole["context"]
    );
}

#[test]
fn deterministic_output() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let run = || {
        let out = ctxzip(&[
            "compress",
            root,
            "-q",
            "retry an action on OSError",
            "-b",
            "150",
            "--model",
            MODEL,
        ]);
        assert!(out.status.success());
        out.stdout
    };
    assert_eq!(run(), run());
}

#[test]
fn bad_input_is_reported_with_exit_code_2() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let billing = dir.path().join("billing.py").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["compress", root, "-q", "   ", "-b", "100"],
            "empty query",
        ),
        (
            vec!["compress", root, "-q", "x", "-b", "0"],
            "(got 0); e.g. --budget 2000",
        ),
        (
            vec!["compress", root, "-q", "x", "-b", "-5"],
            "budget must be a positive number",
        ),
        (
            vec!["compress", root, "-q", "x", "--rate", "1.5"],
            "rate must be in (0, 1]",
        ),
        (
            vec!["compress", root, "-q", "x", "-b", "100", "--rate", "0.2"],
            "cannot be used with",
        ),
        (
            vec!["compress", "/no/such/dir", "-q", "x", "-b", "100"],
            "no such file or directory",
        ),
        (
            vec!["compress", root, "-q", "tax", "-b", "3"],
            "smaller than any chunk (the smallest needs",
        ),
        // The core's refusal, its fix in the command line's terms.
        (
            vec!["compress", root, "-q", "tax", "-b", "3"],
            "raise --budget to at least",
        ),
        // Not a name, so a path: not found, with the choices.
        (
            vec!["compress", root, "-q", "tax", "--tokenizer", "gpt2"],
            "--tokenizer: tokenizer not found: ",
        ),
        (
            vec!["compress", root, "-q", "tax", "--tokenizer", "gpt2"],
            "give model, o200k, cl100k or the path of a Hugging Face tokenizer.json",
        ),
        (
            vec![
                "compress",
                root,
                "-q",
                "tax",
                "--tokenizer",
                billing.as_str(),
            ],
            "is not a Hugging Face tokenizer.json",
        ),
    ];
    for (mut args, expected) in cases {
        args.extend(["--model", MODEL]);
        let out = ctxzip(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }

    let empty = tempfile::tempdir().unwrap();
    let out = ctxzip(&[
        "compress",
        empty.path().to_str().unwrap(),
        "-q",
        "x",
        "-b",
        "100",
        "--model",
        MODEL,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to compress"));

    let binaries = tempfile::tempdir().unwrap();
    fs::write(binaries.path().join("a.bin"), b"\x00\x01\x02").unwrap();
    fs::write(binaries.path().join("b.py"), b"\x00\x00def f(): pass").unwrap();
    let out = ctxzip(&[
        "compress",
        binaries.path().to_str().unwrap(),
        "-q",
        "x",
        "-b",
        "100",
        "--model",
        MODEL,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to compress"));
}

#[test]
fn bench_quality_refuses_a_method_it_does_not_have_and_a_rate_out_of_range() {
    // Before any package is fetched or model loaded: the name and the choices.
    let out = ctxzip(&[
        "bench",
        "quality",
        "--methods",
        "bm25,nonesuch",
        "--model",
        MODEL,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no method \"nonesuch\"") && stderr.contains("ctxzip, ctxzip-nofine"),
        "{stderr}"
    );
    let out = ctxzip(&["bench", "quality", "--rate", "5", "--model", MODEL]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--rate 5 is not in [0, 1]"), "{stderr}");
}

#[test]
fn model_list_path_and_unknown_names() {
    // Pulls the small model if this machine lacks it (a compress test may be doing the same).
    let out = ctxzip(&["model", "pull", MODEL]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctxzip(&["model", "list"]);
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.contains("smollm2-135m") && list.contains("installed"),
        "{list}"
    );
    assert!(list.contains("llama.cpp build: backend=cpu"), "{list}");
    // What --gpu-layers could offload to: nothing in a CPU build.
    assert!(list.contains("\ndevices: CPU"), "{list}");
    assert!(
        list.contains("no GPU: --gpu-layers has nothing to offload to"),
        "{list}"
    );
    let out = ctxzip(&["model", "path", MODEL]);
    let path = String::from_utf8(out.stdout).unwrap();
    assert!(std::path::Path::new(path.trim()).is_file(), "{path}");
    let out = ctxzip(&["model", "path", "gpt-17"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("smollm2-135m"),
        "names the known models"
    );
}

/// A reader that stops early (`ctxzip compress ... | head`) ends the command quietly with
/// success, as Unix tools do: before, compress said `error: Broken pipe (os error 32)` and
/// exited 1, and `model list` panicked.
#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    for args in [
        &["compress", root, "--query", "invoice tax", "--model", MODEL][..],
        &["model", "list"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ctxzip"))
            .args(args)
            .env("CTXZIP_CACHE", common::test_cache())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The read end closes before the command writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(
            !stderr.contains("error") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

/// On an x86-64 CPU without the extensions llama.cpp's kernels were compiled to use (a
/// Nehalem, from before AVX, emulated by qemu), the binary says what the CPU lacks and how to
/// build for it, where it used to die of SIGILL with nothing printed.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_cpu_without_the_kernels_extensions_gets_an_error_naming_them_and_the_fix() {
    let info = ctxzip_scoring::build_info();
    if !info.cpu_features.contains(&"avx") {
        eprintln!("skipped: this build's kernels use no AVX ({info}), so a Nehalem runs them");
        return;
    }
    let out = ctxzip(&["model", "pull", MODEL]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let out = Command::new("qemu-x86_64")
        .args(["-cpu", "Nehalem", env!("CARGO_BIN_EXE_ctxzip")])
        .args([
            "compress",
            root,
            "--query",
            "how is tax added?",
            "--model",
            MODEL,
        ])
        .args(["--offline"])
        .env("CTXZIP_CACHE", common::test_cache())
        .output()
        .expect("qemu-x86_64 runs (install qemu-user; scripts/setup does)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "this CPU lacks avx, avx2, bmi2, fma, f16c, which this build's llama.cpp kernels use"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/ctxzip"), "{stderr}");
}

/// AWS's documented example key id and a PEM block whose body is made up: never real keys.
const CONFIG_PY: &str = "import os\n\nAWS_ACCESS_KEY_ID = \"AKIAIOSFODNN7EXAMPLE\"\nSIGNING_KEY = \"\"\"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\"\"\"\n\n\ndef aws_region():\n    return os.environ.get(\"AWS_REGION\", \"eu-west-1\")\n";

#[test]
fn secrets_are_redacted_counted_and_warned_about_unless_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("config.py"), CONFIG_PY).unwrap();
    fs::create_dir(root.join("keys")).unwrap();
    fs::write(root.join("keys/SERVER.PEM"), "server_pem_contents = 1\n").unwrap();
    fs::write(root.join("netrc.txt"), "netrc_contents\n").unwrap();
    let root_arg = root.to_str().unwrap();
    let query = "aws access key and signing key";
    let bm25 = ["--ranker", "bm25", "--hidden"];

    let (json, out) = json_compress(root_arg, query, "2000", &bm25);
    let context = json["context"].as_str().unwrap();
    assert!(context.contains("[REDACTED:aws-access-key]"), "{context}");
    assert!(context.contains("[REDACTED:private-key]"), "{context}");
    assert!(!context.contains("AKIAIOSFODNN7EXAMPLE") && !context.contains("MIIEv"));
    assert!(!context.contains("server_pem_contents") && !context.contains("netrc_contents"));
    assert_eq!(json["stats"]["redacted"], 2, "{}", json["stats"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("config.py: 2 secrets redacted (aws-access-key line 3, private-key line 4)"),
        "{stderr}"
    );
    // Line numbers are those of the file: `def aws_region` is on line 10.
    let region = json["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "aws_region")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(region["start_line"], 10, "{region}");

    let mut opted_out = bm25.to_vec();
    opted_out.push("--no-redact");
    let (json, out) = json_compress(root_arg, query, "2000", &opted_out);
    assert!(
        json["context"]
            .as_str()
            .unwrap()
            .contains("AKIAIOSFODNN7EXAMPLE")
    );
    assert_eq!(json["stats"]["redacted"], 0);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("redacted"));

    // `chunks` reads through the same door: counted there too.
    let out = ctxzip(&["chunks", root_arg, "--format", "json"]);
    let chunks: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(chunks["redacted"], 2, "{chunks}");
}

#[test]
fn many_files_with_secrets_give_a_few_warning_lines_and_a_count() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..8 {
        fs::write(dir.path().join(format!("config_{i}.py")), CONFIG_PY).unwrap();
    }
    let root = dir.path().to_str().unwrap();
    let (json, out) = json_compress(root, "aws region", "2000", &["--ranker", "bm25"]);
    assert_eq!(json["stats"]["redacted"], 16, "{}", json["stats"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let per_file = stderr
        .lines()
        .filter(|l| l.starts_with("warning: config_") && l.contains("secrets redacted"))
        .count();
    assert_eq!(per_file, 5, "{stderr}");
    assert!(
        stderr.contains("warning: 3 more files read with a caveat (`ctxzip chunks PATH --format json` lists them all"),
        "{stderr}"
    );
    // The listing the message points to has all eight.
    let out = ctxzip(&["chunks", root, "--format", "json"]);
    let chunks: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        chunks["warnings"].as_array().map(Vec::len),
        Some(8),
        "{chunks}"
    );
}

/// `--gpu-layers`, else `gpu_layers` in config.toml, reaches the scorer: a CPU build says how
/// many layers were asked for and that it runs them on the CPU; a bad value names the file.
#[cfg(not(any(feature = "cuda", feature = "vulkan", feature = "metal")))]
#[test]
fn gpu_layers_from_the_flag_or_config_toml_reach_the_scorer() {
    let dir = repo();
    let config = tempfile::tempdir().unwrap();
    fs::create_dir_all(config.path().join("ctxzip")).unwrap();
    let run = |toml: &str, extra: &[&str]| -> (bool, String) {
        fs::write(config.path().join("ctxzip/config.toml"), toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ctxzip"))
            .args(["compress", &dir.path().display().to_string()])
            .args(["-q", "invoice total", "--model", MODEL, "--offline"])
            .args(["--budget", "60"])
            .args(extra)
            .env("CTXZIP_CACHE", common::test_cache())
            .env("XDG_CONFIG_HOME", config.path())
            .output()
            .expect("the ctxzip binary runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run("gpu_layers = 7\n", &[]);
    assert!(ok && stderr.contains("7 GPU layers asked for"), "{stderr}");
    assert!(stderr.contains("runs on the CPU"), "{stderr}");
    let (ok, stderr) = run("gpu_layers = 7\n", &["--gpu-layers", "3"]);
    assert!(ok && stderr.contains("3 GPU layers asked for"), "{stderr}");
    let (ok, stderr) = run("", &[]);
    assert!(ok && !stderr.contains("GPU layers asked for"), "{stderr}");
    let (ok, stderr) = run("gpu_layers = -1\n", &[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("config.toml") && stderr.contains("`gpu_layers` must be a whole number"),
        "{stderr}"
    );
}

/// Runs `ctxzip ARGS` under a pseudo-terminal (util-linux `script`), so that its stderr is a
/// terminal; returns what the terminal received (stdout and stderr together).
fn on_a_terminal(args: &[&str]) -> String {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_ctxzip"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let out = Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .env("CTXZIP_CACHE", common::test_cache())
        .output()
        .expect("`script` (util-linux) runs: install util-linux");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn stages_show_on_a_terminal_and_nowhere_else() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let args = [
        "compress",
        root,
        "--query",
        "retry the connection",
        "--budget",
        "60",
        "--model",
        MODEL,
    ];
    let shown = on_a_terminal(&args);
    // Each stage in order, redrawn in place (carriage return, erase line), and erased before
    // the context is printed.
    let stages = [
        "reading the workspace",
        "loading the model",
        "ranking chunks by keywords",
        "scoring candidates with the model: 0/",
        "candidates, ",
        "assembling the context",
    ];
    let mut from = 0;
    for stage in stages {
        let at = shown[from..]
            .find(stage)
            .unwrap_or_else(|| panic!("{stage:?} after byte {from} of {shown:?}"));
        from += at + stage.len();
    }
    let context_at = shown.find("==> ").expect("the context");
    let last_erase = shown.rfind("\r\x1b[2K").expect("the line is erased");
    assert!(last_erase < context_at, "{shown:?}");
    assert!(shown.contains("ctxzip: "), "the summary: {shown:?}");

    // --quiet: the same output without the line.
    let quiet = on_a_terminal(&[&args[..], &["--quiet"]].concat());
    assert!(!quiet.contains('\x1b'), "{quiet:?}");
    assert!(
        quiet.contains("==> ") && quiet.contains("ctxzip: "),
        "{quiet:?}"
    );

    // stderr a pipe: only the summary.
    let piped = ctxzip(&args);
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
    assert!(!stderr.contains("scoring candidates"), "{stderr:?}");
    assert!(stderr.starts_with("ctxzip: "), "{stderr:?}");
}
