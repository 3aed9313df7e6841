//! The real `ctxzip lsp` over stdio, initialized on one folder: shared by
//! `tests/options_parity.rs` and `tests/remote.rs`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctxzip_lsp::client::LspClient;
use ctxzip_lsp::protocol::codes;
use serde_json::{Value, json};

/// Starts `ctxzip lsp` with a score cache at `cache` and initializes it on `root` with
/// `init_options`; panics unless the server answers `initialize`.
pub fn start(root: &Path, init_options: Value, cache: &Path, wait: Duration) -> LspClient {
    let mut lsp = LspClient::spawn(
        Command::new(env!("CARGO_BIN_EXE_ctxzip"))
            .arg("lsp")
            .env("CTXZIP_CACHE", cache)
            .stderr(Stdio::null()),
    )
    .expect("ctxzip lsp starts");
    let root_uri = format!("file://{}", root.display());
    let init = lsp.request(
        "initialize",
        json!({
            "processId": null,
            "rootUri": root_uri,
            "workspaceFolders": [{"uri": root_uri, "name": "ws"}],
            "capabilities": {},
            "initializationOptions": init_options,
        }),
        wait,
    );
    assert!(init["result"].is_object(), "{init}");
    lsp.notify("initialized", json!({})).unwrap();
    lsp
}

/// `ctxzip/compress` with `params`, asked again while the index has nothing yet (the
/// server's `IndexNotReady` or, before the walk starts, `EmptyWorkspace` code) until `wait`
/// has passed; the first other answer.
pub fn compress_when_indexed(lsp: &mut LspClient, params: Value, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let answer = lsp.request("ctxzip/compress", params.clone(), wait);
        let code = answer["error"]["code"].as_i64();
        let not_yet = code == Some(codes::INDEX_NOT_READY) || code == Some(codes::EMPTY_WORKSPACE);
        if !not_yet || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
