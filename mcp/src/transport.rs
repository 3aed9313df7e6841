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

use std::time::Duration;

use ctxzip_framing::lines::LineFramer;
use ctxzip_framing::{Event, Limits, error_reply, parse_json};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A line whose break does not come for this long, and which is already whole JSON, is
/// taken as a message (a client that forgot the line break is waiting for an answer).
const STALL: Duration = Duration::from_secs(2);
const READ_CHUNK_BYTES: usize = 1 << 16;

/// rmcp's side of the guard: it reads the first stream and writes the second. The returned
/// task copies rmcp's output to `stdout`; await it after the session ends.
pub fn guard<I, O>(
    stdin: I,
    stdout: O,
    limits: Limits,
) -> (DuplexStream, DuplexStream, JoinHandle<()>)
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let (rmcp_input, to_rmcp) = tokio::io::duplex(1 << 16);
    let (rmcp_output, from_rmcp) = tokio::io::duplex(1 << 16);
    let (replies_tx, replies_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(read_input(stdin, to_rmcp, replies_tx, limits));
    let writer = tokio::spawn(copy_output(from_rmcp, replies_rx, stdout));
    (rmcp_input, rmcp_output, writer)
}

async fn read_input<I: AsyncRead + Unpin>(
    mut stdin: I,
    mut to_rmcp: DuplexStream,
    replies: mpsc::UnboundedSender<Vec<u8>>,
    limits: Limits,
) {
    let mut framer = LineFramer::new(limits);
    let mut buf = vec![0; READ_CHUNK_BYTES];
    'read: loop {
        let read = if framer.mid_message() {
            match tokio::time::timeout(STALL, stdin.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    if let Some(event) = framer.stalled()
                        && !handle(event, &mut to_rmcp, &replies, limits).await
                    {
                        break;
                    }
                    continue;
                }
            }
        } else {
            stdin.read(&mut buf).await
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                eprintln!("ctxzip mcp: cannot read stdin ({err}); stopping");
                break;
            }
        };
        framer.push(&buf[..n]);
        while let Some(event) = framer.next_event() {
            if !handle(event, &mut to_rmcp, &replies, limits).await {
                break 'read;
            }
        }
    }
    while let Some(event) = framer.finish() {
        if !handle(event, &mut to_rmcp, &replies, limits).await {
            break;
        }
    }
    // rmcp sees the end of its input and ends the session.
    let _ = to_rmcp.shutdown().await;
}

/// Passes a line on or answers it; `false` once rmcp no longer reads.
async fn handle(
    event: Event,
    to_rmcp: &mut DuplexStream,
    replies: &mpsc::UnboundedSender<Vec<u8>>,
    limits: Limits,
) -> bool {
    match event {
        Event::Message(mut line) => match parse_json(&line).and_then(check_shape) {
            Ok(()) => {
                line.push(b'\n');
                return to_rmcp.write_all(&line).await.is_ok() && to_rmcp.flush().await.is_ok();
            }
            Err(reply) => {
                eprintln!(
                    "ctxzip mcp: answered a line with an error: {}",
                    reply["error"]["message"]
                );
                let _ = replies.send(reply.to_string().into_bytes());
            }
        },
        Event::Problem(problem) => {
            eprintln!("ctxzip mcp: {problem}");
            if problem.wants_reply() {
                let fix = format!(
                    " (the limit is `ctxzip mcp --max-message-bytes`, now {})",
                    limits.max_message_bytes
                );
                let _ = replies.send(problem.reply(&fix).to_string().into_bytes());
            }
        }
    }
    true
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

async fn copy_output<O: AsyncWrite + Unpin>(
    mut from_rmcp: DuplexStream,
    mut replies: mpsc::UnboundedReceiver<Vec<u8>>,
    mut stdout: O,
) {
    // rmcp's own lines, split so that a reply is never written inside one.
    let mut framer = LineFramer::new(Limits {
        max_message_bytes: usize::MAX,
    });
    let mut buf = vec![0; READ_CHUNK_BYTES];
    let mut replies_open = true;
    loop {
        // Replies first: one queued before the server saw the next message must reach the
        // client before the server's answer to it.
        tokio::select! {
            biased;
            reply = replies.recv(), if replies_open => match reply {
                Some(body) => {
                    if write_line(&mut stdout, &body).await.is_err() {
                        return;
                    }
                }
                None => replies_open = false,
            },
            read = from_rmcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => return, // rmcp is done
                Ok(n) => {
                    framer.push(&buf[..n]);
                    while let Some(event) = framer.next_event() {
                        if let Event::Message(line) = event
                            && write_line(&mut stdout, &line).await.is_err()
                        {
                            return;
                        }
                    }
                }
            },
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(writer: &mut W, line: &[u8]) -> std::io::Result<()> {
    writer.write_all(line).await?;
    writer.write_all(b"\n").await?;
    writer.flush().await
}
