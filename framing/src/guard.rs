//! The one stdin/stdout loop both protocol shells run between the client and their protocol
//! library (tower-lsp-server, rmcp): frame the client's bytes with a [`Framing`], pass on
//! the messages the shell accepts, answer the rest, and copy the library's output to stdout
//! with those answers written between whole messages. The only IO in this crate; what a
//! shell accepts and how it words an answer stay in the shell ([`Shell`]).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::content_length::Framer;
use crate::lines::LineFramer;
use crate::{Event, Limits, Problem};

/// A message that stops arriving for this long was framed wrongly (a wrong
/// `Content-Length`, a missing line break): a client writes a message in one go, so it is
/// given up (or taken, if already whole) and answered rather than waited for forever.
const STALL: Duration = Duration::from_secs(2);
const READ_CHUNK_BYTES: usize = 1 << 16;

/// A wire format: a framer of incoming bytes and the encoding of one outgoing message.
pub trait Framing: Send + 'static {
    fn new(limits: Limits) -> Self;
    fn push(&mut self, bytes: &[u8]);
    fn mid_message(&self) -> bool;
    fn stalled(&mut self) -> Option<Event>;
    fn next_event(&mut self) -> Option<Event>;
    fn finish(&mut self) -> Option<Event>;
    /// The last message was not JSON: a framer may look for the next header in its body.
    fn last_message_was_bad(&mut self) {}
    /// `body` as one message on the wire.
    fn encode(body: &[u8]) -> Vec<u8>;
}

impl Framing for Framer {
    fn new(limits: Limits) -> Self {
        Framer::new(limits)
    }
    fn push(&mut self, bytes: &[u8]) {
        Framer::push(self, bytes)
    }
    fn mid_message(&self) -> bool {
        Framer::mid_message(self)
    }
    fn stalled(&mut self) -> Option<Event> {
        Framer::stalled(self)
    }
    fn next_event(&mut self) -> Option<Event> {
        Framer::next_event(self)
    }
    fn finish(&mut self) -> Option<Event> {
        Framer::finish(self)
    }
    fn last_message_was_bad(&mut self) {
        Framer::last_message_was_bad(self)
    }
    fn encode(body: &[u8]) -> Vec<u8> {
        let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out
    }
}

impl Framing for LineFramer {
    fn new(limits: Limits) -> Self {
        LineFramer::new(limits)
    }
    fn push(&mut self, bytes: &[u8]) {
        LineFramer::push(self, bytes)
    }
    fn mid_message(&self) -> bool {
        LineFramer::mid_message(self)
    }
    fn stalled(&mut self) -> Option<Event> {
        LineFramer::stalled(self)
    }
    fn next_event(&mut self) -> Option<Event> {
        LineFramer::next_event(self)
    }
    fn finish(&mut self) -> Option<Event> {
        LineFramer::finish(self)
    }
    fn encode(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 1);
        out.extend_from_slice(body);
        out.push(b'\n');
        out
    }
}

/// What a shell decides about the client's input.
#[derive(Clone, Copy)]
pub struct Shell {
    /// Prefix of every line logged to stderr (`ctxzip lsp`).
    pub name: &'static str,
    /// `Ok` for a message the library may see, else the error reply to send instead.
    pub check: fn(&[u8]) -> Result<(), Value>,
    /// The message sent for bytes that made no message (a reply, a log notification, or
    /// nothing where the protocol forbids an answer).
    pub problem_message: fn(&Problem, Limits) -> Option<Value>,
}

/// The library's side of the guard: it reads the first stream and writes the second.
/// `on_eof` runs when stdin ends (the client is gone: work in flight should stop). The
/// returned task copies the library's output to `stdout`; await it after the session ends
/// so every reply is written.
pub fn guard<F, I, O>(
    stdin: I,
    stdout: O,
    shell: Shell,
    limits: Limits,
    on_eof: impl FnOnce() + Send + 'static,
) -> (DuplexStream, DuplexStream, JoinHandle<()>)
where
    F: Framing,
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let (library_input, to_library) = tokio::io::duplex(1 << 16);
    let (library_output, from_library) = tokio::io::duplex(1 << 16);
    let (replies_tx, replies_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(read_input::<F, I>(
        stdin, to_library, replies_tx, shell, limits, on_eof,
    ));
    let writer = tokio::spawn(copy_output::<F, O>(from_library, replies_rx, stdout));
    (library_input, library_output, writer)
}

async fn read_input<F: Framing, I: AsyncRead + Unpin>(
    mut stdin: I,
    mut to_library: DuplexStream,
    replies: mpsc::UnboundedSender<Vec<u8>>,
    shell: Shell,
    limits: Limits,
    on_eof: impl FnOnce(),
) {
    let mut framer = F::new(limits);
    let mut buf = vec![0; READ_CHUNK_BYTES];
    let mut guard = Guard {
        to_library: &mut to_library,
        replies: &replies,
        shell,
        limits,
    };
    'read: loop {
        let read = if framer.mid_message() {
            match tokio::time::timeout(STALL, stdin.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    if let Some(event) = framer.stalled()
                        && !guard.handle(event, &mut framer).await
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
                eprintln!("{}: cannot read stdin ({err}); stopping", shell.name);
                break;
            }
        };
        framer.push(&buf[..n]);
        while let Some(event) = framer.next_event() {
            if !guard.handle(event, &mut framer).await {
                break 'read;
            }
        }
    }
    while let Some(event) = framer.finish() {
        if !guard.handle(event, &mut framer).await {
            break;
        }
    }
    // The client is gone: nobody will read an answer, so work in flight is cancelled rather
    // than finished.
    on_eof();
    // The library sees the end of its input and ends the session.
    let _ = to_library.shutdown().await;
}

struct Guard<'a> {
    to_library: &'a mut DuplexStream,
    replies: &'a mpsc::UnboundedSender<Vec<u8>>,
    shell: Shell,
    limits: Limits,
}

impl Guard<'_> {
    /// Passes a message on or answers it; `false` once the library no longer reads.
    async fn handle<F: Framing>(&mut self, event: Event, framer: &mut F) -> bool {
        match event {
            Event::Message(body) => match (self.shell.check)(&body) {
                Ok(()) => {
                    let wire = F::encode(&body);
                    return self.to_library.write_all(&wire).await.is_ok()
                        && self.to_library.flush().await.is_ok();
                }
                Err(reply) => {
                    if reply["error"]["code"] == -32700 {
                        framer.last_message_was_bad();
                    }
                    eprintln!(
                        "{}: answered a message with an error: {}",
                        self.shell.name, reply["error"]["message"]
                    );
                    let _ = self.replies.send(reply.to_string().into_bytes());
                }
            },
            Event::Problem(problem) => {
                eprintln!("{}: {problem}", self.shell.name);
                if let Some(message) = (self.shell.problem_message)(&problem, self.limits) {
                    let _ = self.replies.send(message.to_string().into_bytes());
                }
            }
        }
        true
    }
}

async fn copy_output<F: Framing, O: AsyncWrite + Unpin>(
    mut from_library: DuplexStream,
    mut replies: mpsc::UnboundedReceiver<Vec<u8>>,
    mut stdout: O,
) {
    // The library's own messages, split so that a reply is never written inside one.
    let mut framer = F::new(Limits {
        max_message_bytes: usize::MAX,
    });
    let mut buf = vec![0; READ_CHUNK_BYTES];
    let mut replies_open = true;
    loop {
        // Replies first: one queued before the library saw the next message must reach the
        // client before the library's answer to it.
        tokio::select! {
            biased;
            reply = replies.recv(), if replies_open => match reply {
                Some(body) => {
                    if write_message::<F, O>(&mut stdout, &body).await.is_err() {
                        return;
                    }
                }
                None => replies_open = false,
            },
            read = from_library.read(&mut buf) => match read {
                Ok(0) | Err(_) => return, // the library is done
                Ok(n) => {
                    framer.push(&buf[..n]);
                    while let Some(event) = framer.next_event() {
                        if let Event::Message(body) = event
                            && write_message::<F, O>(&mut stdout, &body).await.is_err()
                        {
                            return;
                        }
                    }
                }
            },
        }
    }
}

async fn write_message<F: Framing, W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    writer.write_all(&F::encode(body)).await?;
    writer.flush().await
}
