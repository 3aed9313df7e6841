//! Framing guard between stdio and rmcp: only whole lines of JSON reach rmcp, and every line
//! that is not one is answered.
//!
//! rmcp 3.11's stdio transport drops a line that is not JSON (or not UTF-8) without a reply,
//! and drops a line over its 16 MiB limit without a reply either, so an agent that sent one
//! waits forever. This layer frames the input itself with `ctxzip_framing::lines` (bounded
//! memory: a line over the limit is streamed past, never kept), answers a line that is not
//! JSON with `-32700` (id null), JSON that is not shaped as a JSON-RPC message and a line over
//! the limit with `-32600` (under the message's own id where it has one), and hands rmcp only
//! JSON-RPC messages, which rmcp then checks as MCP messages. Replies
//! are written between whole lines of rmcp's output; each problem is logged to stderr.

use ctxzip_framing::guard::{self, Shell};
use ctxzip_framing::lines::LineFramer;
use ctxzip_framing::{Limits, Problem, error_reply, parse_json};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::task::JoinHandle;

/// rmcp's side of the guard ([`ctxzip_framing::guard`], the loop the LSP runs too): it reads
/// the first stream and writes the second. The returned task copies rmcp's output to
/// `stdout`; await it after the session ends.
pub fn guard<I, O>(
    stdin: I,
    stdout: O,
    limits: Limits,
) -> (DuplexStream, DuplexStream, JoinHandle<()>)
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let shell = Shell {
        name: "ctxzip mcp",
        check,
        problem_message,
    };
    guard::guard::<LineFramer, I, O>(stdin, stdout, shell, limits, || {})
}

/// A line rmcp may see: JSON shaped as a JSON-RPC message.
fn check(line: &[u8]) -> Result<(), Value> {
    check_shape(parse_json(line)?)
}

fn problem_message(problem: &Problem, limits: Limits) -> Option<Value> {
    problem.wants_reply().then(|| {
        problem.reply(&format!(
            " (the limit is `ctxzip mcp --max-message-bytes`, now {})",
            limits.max_message_bytes
        ))
    })
}

/// JSON that is not shaped as a JSON-RPC 2.0 message gets -32600 here, under its id when it
/// has a usable one: rmcp would answer it without any `id` member, which JSON-RPC forbids.
fn check_shape(value: Value) -> Result<(), Value> {
    let is_message = value.get("jsonrpc") == Some(&Value::from("2.0"))
        && ["method", "result", "error"]
            .iter()
            .any(|key| value.get(key).is_some());
    if is_message {
        return Ok(());
    }
    let id = value
        .get("id")
        .filter(|id| id.is_number() || id.is_string())
        .cloned()
        .unwrap_or(Value::Null);
    Err(error_reply(
        id,
        -32600,
        "invalid request: expected a JSON-RPC 2.0 message ({\"jsonrpc\": \"2.0\", \"method\": ..., \"id\"?: ..., \"params\"?: ...})",
    ))
}
