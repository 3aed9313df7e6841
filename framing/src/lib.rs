//! JSON-RPC framing for the protocol shells: turns the bytes a client writes into whole
//! messages and framing errors, with bounded memory and resynchronisation.
//!
//! - [`content_length`]: LSP's `Content-Length: N\r\n\r\n<body>` frames.
//! - [`lines`]: MCP's newline-delimited JSON.
//! - [`TopLevelScan`]: finds the top-level `id` and `method` of a message streamed past it,
//!   so that a message too large to keep can still be answered under its own id.
//!
//! Both framers are pushed bytes as they arrive and give back [`Event`]s. They never hold
//! more than one message of at most [`Limits::max_message_bytes`] plus what was pushed last;
//! a message over the limit is streamed past (scanned, not kept) and reported as
//! [`Problem::TooLarge`]. The framers do no IO; [`guard`] is the one stdio loop both shells
//! (`ctxzip-lsp`, `ctxzip-mcp`) run around them, and the shells word the replies.

pub mod content_length;
pub mod guard;
pub mod hostile;
pub mod lines;
mod scan;

pub use scan::TopLevelScan;
use serde_json::{Value, json};

/// The default largest message body, in bytes: a `didOpen` of a file at the walk's 1 MiB
/// cap is at most ~6 MiB once JSON-escaped, and anything bigger is not a message an agent
/// or an editor needs to send to ctxzip.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 << 20;

/// Longest header line accepted; real headers are under 100 bytes.
pub const MAX_HEADER_LINE_BYTES: usize = 8 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// What a framer gives back.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// One whole message body, exactly as sent (not yet checked as JSON).
    Message(Vec<u8>),
    /// Bytes that did not make a message; they were skipped and the framer reads on.
    Problem(Problem),
}

/// Why bytes were skipped. `Display` says what happened, for the server's log and the
/// error reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The body was longer than the limit; it was scanned and dropped, never kept whole.
    TooLarge {
        bytes: usize,
        limit: usize,
        /// The message's top-level `id`, when it had one (a request, or a response).
        id: Option<Value>,
        /// Whether it had a top-level `method` (a request or a notification).
        has_method: bool,
    },
    /// Headers without a `Content-Length`, or with one that is not a number.
    BadLength(String),
    /// Bytes where a header line was expected (a stray body, invalid UTF-8, a line too long).
    NotAHeader(String),
    /// A message whose `Content-Length` was larger than what was sent: the next message's
    /// header began inside it, or the input stopped before it was complete.
    Truncated { expected: usize, received: usize },
}

impl Problem {
    /// The JSON-RPC error code of the reply: too large is an invalid request (it may well
    /// be JSON), everything else a parse error.
    pub fn code(&self) -> i64 {
        match self {
            Problem::TooLarge { .. } => -32600,
            _ => -32700,
        }
    }

    /// Whether the client may be waiting for an answer to these bytes. A message over the
    /// limit that is a response (an id but no method) or a notification (a method but no
    /// id) must not be answered; a request is answered under its id, and anything whose
    /// kind cannot be told gets a reply with a null id, as JSON-RPC asks.
    pub fn wants_reply(&self) -> bool {
        match self {
            Problem::TooLarge { id, has_method, .. } => id.is_some() == *has_method,
            _ => true,
        }
    }

    /// The error reply for these bytes: the message's own id for a request over the limit,
    /// else null.
    pub fn reply(&self, fix: &str) -> Value {
        let id = match self {
            Problem::TooLarge { id: Some(id), .. } => id.clone(),
            _ => Value::Null,
        };
        error_reply(id, self.code(), &format!("{self}{fix}"))
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::TooLarge { bytes, limit, .. } => write!(
                f,
                "message of {bytes} bytes is over the {limit}-byte limit; it was skipped"
            ),
            Problem::BadLength(why) => write!(f, "parse error: {why}; the message was skipped"),
            Problem::NotAHeader(why) => {
                write!(f, "parse error: {why}; skipped to the next message header")
            }
            Problem::Truncated { expected, received } => write!(
                f,
                "parse error: Content-Length said {expected} bytes but the message ended after {received}; it was skipped"
            ),
        }
    }
}

/// A JSON-RPC 2.0 error response.
pub fn error_reply(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Whether `body` parses as JSON; else the -32700 reply (id null, as JSON-RPC asks when the
/// id cannot be read), naming where the text went wrong.
pub fn parse_json(body: &[u8]) -> Result<Value, Value> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if let Err(err) = std::str::from_utf8(body) {
        return Err(error_reply(
            Value::Null,
            -32700,
            &format!(
                "parse error: the message is not UTF-8 (invalid byte at offset {})",
                err.valid_up_to()
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|err| {
        error_reply(
            Value::Null,
            -32700,
            &format!("parse error: the message is not JSON ({err})"),
        )
    })
}
