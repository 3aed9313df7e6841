//! Framing guard between stdio and tower-lsp-server: only whole, valid JSON-RPC messages
//! reach the server, and every framing error is answered.
//!
//! tower-lsp-server 0.23 stops reading its input for good after one message it cannot decode
//! (its framed reader ends the stream after a decoder error), buffers a message of any size
//! whole, and swallows requests for unknown `$/` methods without a reply. This layer frames
//! the input itself with `ctxzip_framing::content_length` (bounded memory, resynchronising
//! on the next `Content-Length` header), passes on the messages that are JSON-RPC, and
//! answers the rest with a JSON-RPC error (`-32700` parse error, `-32600` invalid request or
//! message too large, `-32601` for an unknown `$/` request), written between whole frames of
//! the server's output. Each problem is also logged to stderr.

use ctxzip_framing::content_length::Framer;
use ctxzip_framing::guard::{self, Shell};
use ctxzip_framing::{Limits, Problem, error_reply, parse_json};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::task::JoinHandle;
use tower_lsp_server::jsonrpc::{Request, Response};

/// The server's side of the guard ([`ctxzip_framing::guard`], the loop MCP runs too): read
/// from `input`, write to `output`. `on_eof` runs when stdin ends (the client is gone: work
/// in flight should stop). The returned task copies the server's output to `stdout`; await
/// it after the server ends so every reply is written.
pub fn guard<I, O>(
    stdin: I,
    stdout: O,
    limits: Limits,
    on_eof: impl FnOnce() + Send + 'static,
) -> (DuplexStream, DuplexStream, JoinHandle<()>)
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let shell = Shell {
        name: "ctxzip lsp",
        check,
        problem_message,
    };
    guard::guard::<Framer, I, O>(stdin, stdout, shell, limits, on_eof)
}

fn problem_message(problem: &Problem, limits: Limits) -> Option<Value> {
    Some(if problem.wants_reply() {
        problem.reply(&fix(problem, limits))
    } else {
        // An oversized notification or response: no reply is allowed, so the editor hears
        // of it as a log message.
        json!({"jsonrpc": "2.0", "method": "window/logMessage", "params": {
            "type": 2,
            "message": format!("ctxzip: {problem}{}", fix(problem, limits)),
        }})
    })
}

fn fix(problem: &Problem, limits: Limits) -> String {
    match problem {
        Problem::TooLarge { .. } => format!(
            " (the limit is `ctxzip lsp --max-message-bytes`, now {})",
            limits.max_message_bytes
        ),
        _ => String::new(),
    }
}

/// Whether `body` is a message tower-lsp can take; otherwise the error reply to send.
fn check(body: &[u8]) -> Result<(), Value> {
    let value = parse_json(body)?;
    if let Some(method) = value.get("method").and_then(Value::as_str)
        && method.starts_with("$/")
        && let Some(id) = value.get("id")
    {
        // tower-lsp drops unknown `$/` requests without a word; LSP asks for -32601.
        return Err(error_reply(
            id.clone(),
            -32601,
            &format!(
                "method not found: {method} (ctxzip answers no `$/` requests; `$/` notifications are ignored)"
            ),
        ));
    }
    if serde_json::from_value::<Request>(value.clone()).is_ok()
        || serde_json::from_value::<Response>(value.clone()).is_ok()
    {
        return Ok(());
    }
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    Err(error_reply(
        id,
        -32600,
        "invalid request: expected a JSON-RPC 2.0 request, notification or response ({\"jsonrpc\": \"2.0\", \"method\": ..., \"id\"?: ..., \"params\"?: ...})",
    ))
}
