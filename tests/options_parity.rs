//! One compress request on every surface: each field of the core's `CompressRequest`
//! (walked from the struct, [`CompressRequest::field_names`]) is a flag of `ctxzip compress`,
//! a key of the LSP's `ctxzip/compress` and a property of the MCP tool's input schema, each
//! spelled by its surface's convention, and a request that names no budget gets the core's
//! default on all three. The real binary on each surface; BM25 ranking keeps the model's work
//! out of it. Likewise each remote-scorer setting (`ctxzip_scoring::remote::SCORER_OPTIONS`)
//! and the GPU layers are a flag of every command that starts a model, an LSP
//! initializationOption, a VS Code setting and a Neovim option (and the scorer settings a
//! config.toml key).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ctxzip_lsp::client::LspClient;
use ctxzip_lsp::protocol::camel_case;
use ctxzip_scoring::compress::{CompressRequest, DEFAULT_BUDGET_TOKENS};
use ctxzip_scoring::remote::{RemoteFlags, SCORER_OPTIONS, resolve_settings};
use serde_json::{Value, json};

use common::mcp_client::Client as McpClient;

const MODEL: &str = "smollm2-135m";
const WAIT: Duration = Duration::from_secs(120);

/// The option every surface gives in its own shape (`FILE:LINE`, an LSP position), so it is
/// not a field of the request: each shell resolves it against its own files.
const FOCUS: &str = "focus";

/// MCP names that carry their unit or kind, kept for the agents that already send them.
const MCP_RENAMES: &[(&str, &str)] = &[("budget", "budget_tokens"), ("focus", "focus_file")];

/// Settings of the model that an editor user sets, beside the scorer's.
const EDITOR_MODEL_SETTINGS: &[&str] = &["gpu_layers"];

fn cli_flag(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

fn mcp_property(name: &str) -> String {
    MCP_RENAMES
        .iter()
        .find(|(option, _)| *option == name)
        .map_or(name, |(_, renamed)| renamed)
        .to_string()
}

/// The request's fields and the focus: every option a compress request takes.
fn request_options() -> Vec<String> {
    let mut names = CompressRequest::field_names();
    names.push(FOCUS.to_string());
    names
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("retry.py"),
        "def backoff_delay(attempt):\n    return min(30.0, 0.5 * 2 ** attempt)\n",
    )
    .unwrap();
    dir
}

fn ctxzip(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ctxzip"))
        .args(args)
        .env("CTXZIP_CACHE", common::test_cache())
        .current_dir(cwd)
        .output()
        .expect("run ctxzip")
}

/// The words of `text` that look like long flags, e.g. `--no-fine`.
fn long_flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// The keys a refusal of an unknown key names: "unknown field `x`, expected one of `a`, ...".
fn known_keys(refused: &Value) -> BTreeSet<String> {
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    let (_, accepted) = message
        .split_once("expected one of")
        .unwrap_or_else(|| panic!("no list of known keys: {refused}"));
    accepted
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The keys of the LSP's initializationOptions, named when it refuses an unknown one.
fn lsp_option_keys() -> BTreeSet<String> {
    let mut lsp = LspClient::spawn(
        Command::new(env!("CARGO_BIN_EXE_ctxzip"))
            .arg("lsp")
            .env("CTXZIP_CACHE", common::test_cache())
            .stderr(Stdio::null()),
    )
    .expect("ctxzip lsp starts");
    let refused = lsp.request(
        "initialize",
        json!({
            "processId": null,
            "capabilities": {},
            "initializationOptions": {"notAnOption": 1}
        }),
        WAIT,
    );
    known_keys(&refused)
}

#[test]
fn every_surface_offers_every_request_field_with_the_same_default_budget() {
    let dir = workspace();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut missing = Vec::new();
    let options = request_options();
    assert!(options.len() >= 9, "{options:?}");

    // The CLI: its flags, and the budget of a call that gives none.
    let help = ctxzip(&["compress", "--help"], &root);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let flags = long_flags(&help);
    for name in &options {
        if !flags.contains(&cli_flag(name)) {
            missing.push(format!("ctxzip compress {}", cli_flag(name)));
        }
    }
    let out = ctxzip(
        &[
            "compress",
            ".",
            "-q",
            "backoff delay",
            "--ranker",
            "bm25",
            "--format",
            "json",
            "--offline",
            "--model",
            MODEL,
        ],
        &root,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cli["stats"]["budget_tokens"], DEFAULT_BUDGET_TOKENS,
        "CLI default budget"
    );

    // The LSP: the keys `ctxzip/compress` accepts (named when it refuses an unknown one),
    // and the budget of a request that gives none.
    let mut lsp = common::lsp::start(
        &root,
        json!({"model": MODEL, "offline": true}),
        &common::test_cache(),
        WAIT,
    );
    let refused = lsp.request(
        "ctxzip/compress",
        json!({"query": "backoff", "notAnOption": 1}),
        WAIT,
    );
    let keys = known_keys(&refused);
    for name in &options {
        if !keys.contains(&camel_case(name)) {
            missing.push(format!("LSP ctxzip/compress {:?}", camel_case(name)));
        }
    }
    // Its settings: every field but the query is the default of requests that leave it out.
    let option_keys = lsp_option_keys();
    for name in options.iter().filter(|n| *n != "query" && *n != FOCUS) {
        if !option_keys.contains(&camel_case(name)) {
            missing.push(format!("LSP initializationOptions {:?}", camel_case(name)));
        }
    }
    let answer = common::lsp::compress_when_indexed(
        &mut lsp,
        json!({"query": "backoff delay", "ranker": "bm25"}),
        WAIT,
    );
    assert_eq!(
        answer["result"]["stats"]["budget_tokens"], DEFAULT_BUDGET_TOKENS,
        "LSP default budget: {answer}"
    );
    drop(lsp);

    // MCP: the tool's input schema, and the server's default budget.
    let mut mcp = McpClient::start(&[root.to_str().unwrap()], &root);
    mcp.initialize(json!({}));
    let tools = mcp.request("tools/list", json!({}));
    let compress = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "compress_context")
        .unwrap();
    let properties = &compress["inputSchema"]["properties"];
    for name in &options {
        if properties.get(mcp_property(name)).is_none() {
            missing.push(format!("MCP compress_context {:?}", mcp_property(name)));
        }
    }
    // One name per option: a renamed field is offered under its MCP name only.
    for (name, _) in MCP_RENAMES {
        if properties.get(*name).is_some() {
            missing.push(format!(
                "MCP compress_context offers {name:?} besides its MCP name"
            ));
        }
    }
    let result = mcp.call(
        "compress_context",
        json!({"query": "backoff delay", "ranker": "bm25"}),
    );
    assert_eq!(
        result["structuredContent"]["stats"]["budget_tokens"], DEFAULT_BUDGET_TOKENS,
        "MCP default budget: {result}"
    );

    assert!(
        missing.is_empty(),
        "fields of CompressRequest a surface does not offer:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_surface_offers_every_scorer_setting() {
    let dir = workspace();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut missing = Vec::new();

    // Every command that starts a model takes the flags.
    for command in ["compress", "mcp", "lsp"] {
        let help = ctxzip(&[command, "--help"], &root);
        let flags = long_flags(&String::from_utf8_lossy(&help.stdout));
        for name in SCORER_OPTIONS.iter().chain(EDITOR_MODEL_SETTINGS) {
            if !flags.contains(&cli_flag(name)) {
                missing.push(format!("ctxzip {command} {}", cli_flag(name)));
            }
        }
    }

    // The LSP's initializationOptions.
    let keys = lsp_option_keys();

    // The editor clients' settings, as their sources spell them.
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients");
    let read = |path: &str| std::fs::read_to_string(clients.join(path)).unwrap();
    let package_json: Value = serde_json::from_str(&read("vscode/package.json")).unwrap();
    let vscode_settings = &package_json["contributes"]["configuration"]["properties"];
    let core_ts = read("vscode/src/core.ts");
    let init_lua = read("nvim/lua/ctxzip/init.lua");
    let nvim_readme = read("nvim/README.md");

    for name in SCORER_OPTIONS.iter().chain(EDITOR_MODEL_SETTINGS) {
        let key = camel_case(name);
        if !keys.contains(&key) {
            missing.push(format!("LSP initializationOptions {key:?}"));
        }
        if vscode_settings.get(format!("ctxzip.{key}")).is_none() {
            missing.push(format!("VS Code setting ctxzip.{key} (package.json)"));
        }
        if !core_ts.contains(&format!("options.{key} =")) {
            missing.push(format!("VS Code core.ts sends {key}"));
        }
        if !init_lua.contains(&format!("{name} = nil"))
            || !init_lua.contains(&format!("opts.{key}"))
        {
            missing.push(format!("Neovim option {name} (init.lua)"));
        }
        if !nvim_readme.contains(*name) {
            missing.push(format!("Neovim option {name} (README.md)"));
        }
        // config.toml: each scorer key is read (a wrong type is refused by its name).
        if !SCORER_OPTIONS.contains(name) {
            continue;
        }
        let mut table = toml::Table::new();
        table.insert("scorer_url".into(), "http://gpu-box:8000/v1".into());
        table.insert("scorer_model".into(), "m".into());
        table.insert(name.to_string(), toml::Value::Boolean(true));
        let refused = resolve_settings(&RemoteFlags::default(), Some(&table));
        if !refused.is_err_and(|e| e.to_string().contains(name)) {
            missing.push(format!("config.toml key {name}"));
        }
    }

    assert!(
        missing.is_empty(),
        "model settings a surface does not offer:\n{}",
        missing.join("\n")
    );
}

/// AWS's documented example key id: never a real key.
const KEYED_PY: &str = "import os\n\nAWS_ACCESS_KEY_ID = \"AKIAIOSFODNN7EXAMPLE\"\n\n\ndef aws_region():\n    return os.environ.get(\"AWS_REGION\", \"eu-west-1\")\n";

/// `redact = false` in config.toml is the default of every surface (the CLI's `compress`
/// and `chunks`, the LSP, MCP), as `gpu_layers` is; a surface's own setting still wins, and a
/// `redact` that is not a boolean is refused by its name.
#[test]
fn redact_in_config_toml_is_the_default_of_every_surface() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("config.py"), KEYED_PY).unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(config.path().join("ctxzip")).unwrap();
    let config_toml = config.path().join("ctxzip/config.toml");
    std::fs::write(&config_toml, "redact = false\n").unwrap();
    let env = [("XDG_CONFIG_HOME", config.path())];
    let root_arg = root.to_str().unwrap();
    let key = "AKIAIOSFODNN7EXAMPLE";
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ctxzip"))
            .args(args)
            .env("CTXZIP_CACHE", common::test_cache())
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let compress = [
        "compress",
        root_arg,
        "--query",
        "aws key",
        "--format",
        "json",
        "--ranker",
        "bm25",
        "--model",
        MODEL,
        "--offline",
    ];

    // The CLI.
    let out = cli(&compress);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["context"].as_str().unwrap().contains(key), "{json}");
    assert_eq!(json["stats"]["redacted"], 0, "{json}");
    let out = cli(&["chunks", root_arg, "--format", "json"]);
    let chunks: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(chunks["redacted"], 0, "{chunks}");

    // MCP.
    let mut mcp = McpClient::start_with_env(&[root_arg], &root, Stdio::null(), &env);
    mcp.initialize(json!({}));
    let result = mcp.call("compress_context", json!({"query": "aws key"}));
    assert!(
        common::mcp_client::text_of(&result).contains(key),
        "{result}"
    );
    drop(mcp);

    // The LSP: the config's default, then the editor's own setting over it.
    for (init, shown) in [(json!({}), true), (json!({"redact": true}), false)] {
        let mut lsp = LspClient::spawn(
            Command::new(env!("CARGO_BIN_EXE_ctxzip"))
                .arg("lsp")
                .env("CTXZIP_CACHE", common::test_cache())
                .envs(env.iter().copied())
                .stderr(Stdio::null()),
        )
        .expect("ctxzip lsp starts");
        let root_uri = format!("file://{}", root.display());
        let mut options = json!({"model": MODEL, "offline": true});
        options
            .as_object_mut()
            .unwrap()
            .extend(init.as_object().unwrap().clone());
        let response = lsp.request(
            "initialize",
            json!({"processId": null, "rootUri": root_uri, "capabilities": {},
                   "initializationOptions": options}),
            WAIT,
        );
        assert!(response["result"].is_object(), "{response}");
        lsp.notify("initialized", json!({})).unwrap();
        // The index fills in the background: ask until it holds the file.
        let deadline = std::time::Instant::now() + WAIT;
        let context = loop {
            let answer = lsp.request(
                "ctxzip/compress",
                json!({"query": "aws key", "ranker": "bm25"}),
                WAIT,
            );
            let context = answer["result"]["context"].as_str().unwrap_or_default();
            if context.contains("AWS_ACCESS_KEY_ID") || std::time::Instant::now() > deadline {
                break context.to_string();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(context.contains(key), shown, "{init}: {context}");
    }

    // A value that is not a boolean is refused by its name.
    std::fs::write(&config_toml, "redact = \"no\"\n").unwrap();
    let out = cli(&compress);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`redact` must be true or false"),
        "{stderr}"
    );
}
