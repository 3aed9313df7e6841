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

use std::time::Duration;

use ctxzip_framing::content_length::Framer;
use ctxzip_framing::{Event, Limits, Problem, error_reply, parse_json};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower_lsp_server::jsonrpc::{Request, Response};

/// A body that stops arriving for this long was framed with a wrong `Content-Length` (an
/// editor writes a message in one go); it is given up and answered so the client does not
/// wait forever.
const STALL: Duration = Duration::from_secs(2);
const READ_CHUNK_BYTES: usize = 1 << 16;

/// The server's side of the guard: read from `input`, write to `output`. `on_eof` runs when
/// stdin ends (the client is gone: work in flight should stop). The returned task copies the
/// server's output to `stdout`; await it after the server ends so every reply is written.
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
    let (server_input, to_server) = tokio::io::duplex(1 << 16);
    let (server_output, from_server) = tokio::io::duplex(1 << 16);
    let (replies_tx, replies_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(read_input(stdin, to_server, replies_tx, limits, on_eof));
    let writer = tokio::spawn(copy_output(from_server, replies_rx, stdout));
    (server_input, server_output, writer)
}

async fn read_input<I: AsyncRead + Unpin>(
    mut stdin: I,
    mut to_server: DuplexStream,
    replies: mpsc::UnboundedSender<Vec<u8>>,
    limits: Limits,
    on_eof: impl FnOnce(),
) {
    let mut framer = Framer::new(limits);
    let mut buf = vec![0; READ_CHUNK_BYTES];
    'read: loop {
        let read = if framer.mid_message() {
            match tokio::time::timeout(STALL, stdin.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    if let Some(event) = framer.stalled() {
                        handle(event, &mut framer, &mut to_server, &replies, limits).await;
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
                eprintln!("ctxzip lsp: cannot read stdin ({err}); stopping");
                break;
            }
        };
        framer.push(&buf[..n]);
        while let Some(event) = framer.next_event() {
            if !handle(event, &mut framer, &mut to_server, &replies, limits).await {
                break 'read;
            }
        }
    }
    while let Some(event) = framer.finish() {
        handle(event, &mut framer, &mut to_server, &replies, limits).await;
    }
    // The client is gone: nobody will read an answer, so model work in flight is cancelled
    // rather than finished.
    on_eof();
    // The server sees the end of its input and stops.
    let _ = to_server.shutdown().await;
}

/// Passes a message on or answers it; `false` once the server no longer reads.
async fn handle(
    event: Event,
    framer: &mut Framer,
    to_server: &mut DuplexStream,
    replies: &mpsc::UnboundedSender<Vec<u8>>,
    limits: Limits,
) -> bool {
    match event {
        Event::Message(body) => match check(&body) {
            Ok(()) => return write_frame(to_server, &body).await.is_ok(),
            Err(reply) => {
                if reply["error"]["code"] == -32700 {
                    framer.last_message_was_bad();
                }
                eprintln!(
                    "ctxzip lsp: answered a message with an error: {}",
                    reply["error"]["message"]
                );
                let _ = replies.send(reply.to_string().into_bytes());
            }
        },
        Event::Problem(problem) => {
            eprintln!("ctxzip lsp: {problem}");
            let reply = if problem.wants_reply() {
                problem.reply(&fix(&problem, limits))
            } else {
                // An oversized notification or response: no reply is allowed, so the editor
                // hears of it as a log message.
                json!({"jsonrpc": "2.0", "method": "window/logMessage", "params": {
                    "type": 2,
                    "message": format!("ctxzip: {problem}{}", fix(&problem, limits)),
                }})
            };
            let _ = replies.send(reply.to_string().into_bytes());
        }
    }
    true
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

async fn copy_output<O: AsyncWrite + Unpin>(
    mut from_server: DuplexStream,
    mut replies: mpsc::UnboundedReceiver<Vec<u8>>,
    mut stdout: O,
) {
    // The server's own frames, split so that a reply is never written inside one.
    let mut framer = Framer::new(Limits {
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
                    if write_frame(&mut stdout, &body).await.is_err() {
                        return;
                    }
                }
                None => replies_open = false,
            },
            read = from_server.read(&mut buf) => match read {
                Ok(0) | Err(_) => return, // the server is done
                Ok(n) => {
                    framer.push(&buf[..n]);
                    while let Some(event) = framer.next_event() {
                        if let Event::Message(body) = event
                            && write_frame(&mut stdout, &body).await.is_err()
                        {
                            return;
                        }
                    }
                }
            },
        }
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

async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, body: &[u8]) -> std::io::Result<()> {
    writer
        .write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await?;
    writer.write_all(body).await?;
    writer.flush().await
}
