//! A small JSON-RPC client over a child process's stdio (LSP's `Content-Length` framing),
//! for driving the real `ctxzip lsp` binary in tests and benchmarks. It answers the server's
//! own requests (`window/workDoneProgress/create`, `client/registerCapability`) with `null`
//! and keeps every notification it sees.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct LspClient {
    child: Child,
    /// `None` once closed with [`LspClient::close_stdin`].
    stdin: Option<ChildStdin>,
    incoming: mpsc::Receiver<Value>,
    next_id: i64,
    responses: HashMap<i64, Value>,
    /// Every notification and server-to-client request received, in order.
    pub seen: Vec<Value>,
}

impl LspClient {
    /// Starts `command` with piped stdin and stdout (stderr as the caller set it).
    pub fn spawn(command: &mut Command) -> io::Result<LspClient> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            while let Some(message) = read_message(&mut reader) {
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Ok(LspClient {
            child,
            stdin: Some(stdin),
            incoming,
            next_id: 0,
            responses: HashMap::new(),
            seen: Vec::new(),
        })
    }

    /// Writes one framed message with `body` as its content, exactly as given.
    pub fn send_raw(&mut self, body: &str) -> io::Result<()> {
        self.send_bytes(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
    }

    /// Writes `bytes` as they are, framing and all (for hostile input).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin was closed"))?;
        stdin.write_all(bytes)?;
        stdin.flush()
    }

    /// Closes the server's stdin, as an editor that goes away does.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Takes the next message of any kind (response, notification, server request),
    /// without answering server requests; `None` at the deadline or when stdout closed.
    pub fn next_message(&mut self, timeout: Duration) -> Option<Value> {
        self.incoming.recv_timeout(timeout).ok()
    }

    pub fn send(&mut self, message: &Value) -> io::Result<()> {
        self.send_raw(&message.to_string())
    }

    /// Sends a request and returns its id without waiting.
    pub fn start_request(&mut self, method: &str, params: Value) -> io::Result<i64> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        Ok(id)
    }

    /// Sends a request and waits for its response message (with `result` or `error`).
    pub fn request(&mut self, method: &str, params: Value, timeout: Duration) -> Value {
        let id = self
            .start_request(method, params)
            .expect("server stdin open");
        self.wait_response(id, timeout)
            .unwrap_or_else(|| panic!("no response to {method} within {timeout:?}"))
    }

    pub fn notify(&mut self, method: &str, params: Value) -> io::Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }

    /// Waits for the response to request `id`.
    pub fn wait_response(&mut self, id: i64, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(response) = self.responses.remove(&id) {
                return Some(response);
            }
            self.pump(deadline)?;
        }
    }

    /// Waits for a notification or server request matching `predicate`, looking first at
    /// those already seen. Returns the first match.
    pub fn wait_for(
        &mut self,
        predicate: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        if let Some(found) = self.seen.iter().find(|m| predicate(m)) {
            return Some(found.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let before = self.seen.len();
            self.pump(deadline)?;
            if let Some(found) = self.seen[before..].iter().find(|m| predicate(m)) {
                return Some(found.clone());
            }
        }
    }

    /// Receives one message; `None` at the deadline or when the server closed stdout.
    fn pump(&mut self, deadline: Instant) -> Option<()> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let message = match self.incoming.recv_timeout(wait) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        };
        let has_method = message.get("method").is_some();
        match message.get("id").and_then(Value::as_i64) {
            Some(id) if !has_method => {
                self.responses.insert(id, message);
            }
            _ => {
                if has_method && message.get("id").is_some() {
                    // A request from the server: accept it.
                    let reply = json!({"jsonrpc": "2.0", "id": message["id"], "result": null});
                    self.send(&reply).ok()?;
                }
                self.seen.push(message);
            }
        }
        Some(())
    }

    /// Closes stdin and waits for the process to end.
    pub fn wait_exit(mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LspClient {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_message(reader: &mut impl BufRead) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}
