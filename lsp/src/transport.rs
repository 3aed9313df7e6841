//! Framing guard between stdio and tower-lsp-server.
//!
//! tower-lsp-server 0.23 stops reading its input for good after one message it cannot decode
//! (its framed reader ends the stream after a decoder error), so one bad message from a
//! client would end the session. This layer reads the frames itself, passes on the ones
//! that are JSON-RPC messages, and answers the others with a JSON-RPC error (`-32700` parse
//! error, `-32600` invalid request), written between whole frames of the server's output.

use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower_lsp_server::jsonrpc::{Request, Response};

/// Largest message accepted (an open of a huge file is still far below this).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The server's side of the guard: read from `input`, write to `output`. The returned task
/// copies the server's output to `stdout`; await it after the server ends so every reply is
/// written.
pub fn guard<I, O>(stdin: I, stdout: O) -> (DuplexStream, DuplexStream, JoinHandle<()>)
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let (server_input, mut to_server) = tokio::io::duplex(1 << 16);
    let (server_output, from_server) = tokio::io::duplex(1 << 16);
    let (errors_tx, errors_rx) = mpsc::unbounded_channel::<Vec<u8>>();

    tokio::spawn(async move {
        let mut stdin = BufReader::new(stdin);
        while let Some(frame) = read_frame(&mut stdin).await {
            match frame {
                Ok(body) => match check(&body) {
                    Ok(()) => {
                        if write_frame(&mut to_server, &body).await.is_err() {
                            break;
                        }
                    }
                    Err(reply) => {
                        eprintln!(
                            "ctxzip lsp: ignored a message: {}",
                            reply["error"]["message"]
                        );
                        let _ = errors_tx.send(reply.to_string().into_bytes());
                    }
                },
                Err(message) => {
                    eprintln!("ctxzip lsp: {message}");
                    let reply = error_reply(Value::Null, -32700, &message);
                    let _ = errors_tx.send(reply.to_string().into_bytes());
                }
            }
        }
        // End of stdin: the server sees the end of its input and stops.
        let _ = to_server.shutdown().await;
    });

    let writer = tokio::spawn(copy_output(from_server, errors_rx, stdout));
    (server_input, server_output, writer)
}

async fn copy_output<O: AsyncWrite + Unpin>(
    from_server: DuplexStream,
    mut errors: mpsc::UnboundedReceiver<Vec<u8>>,
    mut stdout: O,
) {
    let mut from_server = BufReader::new(from_server);
    let mut errors_open = true;
    loop {
        tokio::select! {
            frame = read_frame(&mut from_server) => match frame {
                Some(Ok(body)) => {
                    if write_frame(&mut stdout, &body).await.is_err() {
                        return;
                    }
                }
                _ => return, // the server is done
            },
            reply = errors.recv(), if errors_open => match reply {
                Some(body) => {
                    if write_frame(&mut stdout, &body).await.is_err() {
                        return;
                    }
                }
                None => errors_open = false,
            },
        }
    }
}

/// Whether `body` is a message tower-lsp can take; otherwise the error reply to send.
fn check(body: &[u8]) -> Result<(), Value> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => {
            return Err(error_reply(
                Value::Null,
                -32700,
                &format!("parse error: the message is not JSON ({err})"),
            ));
        }
    };
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

fn error_reply(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// One frame's body; `None` at the end of input; `Err` for a frame with bad headers (its
/// bytes are skipped).
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Option<Result<Vec<u8>, String>> {
    let mut length: Option<usize> = None;
    let mut saw_header = false;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if saw_header {
                break;
            }
            continue; // stray blank line between frames
        }
        saw_header = true;
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok();
        }
    }
    let Some(length) = length else {
        return Some(Err(
            "a message without a valid Content-Length header was skipped".to_owned(),
        ));
    };
    if length > MAX_MESSAGE_BYTES {
        let mut rest = (&mut *reader).take(length as u64);
        tokio::io::copy(&mut rest, &mut tokio::io::sink())
            .await
            .ok()?;
        return Some(Err(format!(
            "a message of {length} bytes is over the {MAX_MESSAGE_BYTES}-byte limit and was skipped"
        )));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(Ok(body))
}

async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, body: &[u8]) -> std::io::Result<()> {
    writer
        .write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await?;
    writer.write_all(body).await?;
    writer.flush().await
}
