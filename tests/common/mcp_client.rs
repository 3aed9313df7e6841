//! A minimal MCP client over the real `ctxzip mcp` binary's stdio (newline-delimited
//! JSON-RPC, as an agent speaks it): shared by `tests/mcp.rs` and `tests/confinement.rs`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// No single exchange may take longer than this, a first pull of the model included.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// A minimal MCP client over a child process's stdio.
pub struct Client {
    pub child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next_id: u64,
    /// Notifications seen so far, in order.
    pub notifications: Vec<Value>,
    /// Answers to server-to-client requests, by method.
    pub answers: Vec<(&'static str, Value)>,
}

impl Client {
    /// Starts `ctxzip mcp ARGS` in `cwd` with the small model (unless ARGS name one), its
    /// stderr passed through.
    pub fn start(args: &[&str], cwd: &Path) -> Client {
        Client::start_with_stderr(args, cwd, Stdio::inherit())
    }

    pub fn start_with_stderr(args: &[&str], cwd: &Path, stderr: Stdio) -> Client {
        Client::start_with_env(args, cwd, stderr, &[])
    }

    /// [`Client::start_with_stderr`] with extra environment variables (a config dir).
    pub fn start_with_env(
        args: &[&str],
        cwd: &Path,
        stderr: Stdio,
        env: &[(&str, &Path)],
    ) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ctxzip"))
            .arg("mcp")
            .env("CTXZIP_CACHE", super::test_cache())
            .envs(env.iter().copied())
            // Not --offline: on a fresh machine the first call waits while the model is pulled.
            // A test that names its own model passes --model in `args`.
            .args(if args.contains(&"--model") {
                &[][..]
            } else {
                &["--model", "smollm2-135m"][..]
            })
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start ctxzip mcp");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            stdin,
            lines,
            next_id: 1,
            notifications: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Writes `bytes` as they are (for hostile input).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next message of any kind; `None` at the deadline or when stdout closed.
    pub fn next_message(&mut self, timeout: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}")),
        )
    }

    /// Sends `bytes`, then a `ping`, and returns every message that came before the ping's
    /// answer (which must come, and promptly).
    pub fn hostile_then_ping(&mut self, name: &str, bytes: &[u8]) -> Vec<Value> {
        self.send_bytes(bytes);
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": "ping"}));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut before = Vec::new();
        loop {
            let message = self
                .next_message(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|| panic!("{name}: no answer to the next request; got {before:?}"));
            if message["id"] == json!(id) && message.get("method").is_none() {
                assert!(message["result"].is_object(), "{name}: {message}");
                return before;
            }
            before.push(message);
        }
    }

    pub fn send(&mut self, message: &Value) {
        let mut line = serde_json::to_string(message).unwrap();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns its `result`, keeping notifications and answering the
    /// server's own requests on the way; an error response fails the test.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let message = self.response(method, params);
        if let Some(error) = message.get("error") {
            panic!("{method} failed: {error}");
        }
        message["result"].clone()
    }

    /// Sends a request and returns the whole response message (result or error).
    pub fn response(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let line = match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!("no reply to {method} in time"),
                Err(RecvTimeoutError::Disconnected) => panic!("server exited during {method}"),
            };
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
            if message.get("id") == Some(&json!(id)) && message.get("method").is_none() {
                return message;
            }
            match (message.get("method"), message.get("id")) {
                (Some(server_method), Some(server_id)) => {
                    let result = self
                        .answers
                        .iter()
                        .find(|(m, _)| server_method == *m)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| json!({}));
                    self.send(&json!({"jsonrpc": "2.0", "id": server_id, "result": result}));
                }
                (Some(_), None) => self.notifications.push(message),
                _ => panic!("unexpected message while waiting for {method}: {message}"),
            }
        }
    }

    pub fn initialize(&mut self, capabilities: Value) -> Value {
        let result = self.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": capabilities,
                "clientInfo": {"name": "ctxzip-test", "version": "0"},
            }),
        );
        self.notify("notifications/initialized", json!({}));
        result
    }

    pub fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
    }

    /// `compress_context` with `arguments`: (is_error, all text).
    pub fn compress_context(&mut self, arguments: Value) -> (bool, String) {
        let result = self.call("compress_context", arguments);
        assert!(result.is_object(), "{result}");
        (result["isError"] == json!(true), text_of(&result))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// All text blocks of a tool result, joined by newlines.
pub fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
