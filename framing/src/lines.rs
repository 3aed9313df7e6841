//! MCP's stdio framing: one JSON-RPC message per line. A line over the limit is streamed
//! past (its top level scanned for an id) and reported; blank lines are skipped.

use crate::scan::TopLevelScan;
use crate::{Event, Limits, Problem};

/// Push bytes as they arrive, then take events until [`LineFramer::next_event`] says `None`.
#[derive(Debug)]
pub struct LineFramer {
    limits: Limits,
    pending: Vec<u8>,
    line: Vec<u8>,
    /// The line being read is over the limit: its length so far and its scan.
    over: Option<(usize, TopLevelScan)>,
}

impl LineFramer {
    pub fn new(limits: Limits) -> LineFramer {
        LineFramer {
            limits,
            pending: Vec::new(),
            line: Vec::new(),
            over: None,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Bytes held: the partial line and what was pushed but not yet framed.
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len() + self.line.len()
    }

    /// Whether part of a line has arrived without its line break.
    pub fn mid_message(&self) -> bool {
        !self.line.is_empty() || self.over.is_some()
    }

    /// No byte came for a while after part of a line: a client that sent a whole JSON
    /// message without its line break is waiting for the answer, so the message is taken as
    /// it is. A partial line that is not yet JSON is left to wait.
    pub fn stalled(&mut self) -> Option<Event> {
        if self.over.is_none()
            && !self.line.iter().all(u8::is_ascii_whitespace)
            && serde_json::from_slice::<serde_json::Value>(&self.line).is_ok()
        {
            return Some(Event::Message(std::mem::take(&mut self.line)));
        }
        None
    }

    /// The end of input: a last line without its line break is still a message.
    pub fn finish(&mut self) -> Option<Event> {
        if let Some(event) = self.next_event() {
            return Some(event);
        }
        if let Some((bytes, scan)) = self.over.take() {
            return Some(Event::Problem(self.too_large(bytes, &scan)));
        }
        let line = std::mem::take(&mut self.line);
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(Event::Message(line))
    }

    fn too_large(&self, bytes: usize, scan: &TopLevelScan) -> Problem {
        Problem::TooLarge {
            bytes,
            limit: self.limits.max_message_bytes,
            id: scan.id(),
            has_method: scan.has_method(),
        }
    }

    /// The next message or problem from the bytes pushed so far; `None` when more bytes are
    /// needed.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let newline = self.pending.iter().position(|&b| b == b'\n');
            let take = newline.map_or(self.pending.len(), |i| i + 1);
            let chunk = &self.pending[..take];
            let content = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            if self.over.is_none()
                && self.line.len() + content.len() > self.limits.max_message_bytes
            {
                let mut scan = TopLevelScan::new();
                scan.feed(&self.line);
                self.over = Some((self.line.len(), scan));
                self.line = Vec::new(); // give the memory back, not just the length
            }
            match &mut self.over {
                Some((bytes, scan)) => {
                    scan.feed(content);
                    *bytes += content.len();
                }
                None => self.line.extend_from_slice(content),
            }
            self.pending.drain(..take);
            newline?;
            if let Some((bytes, scan)) = self.over.take() {
                return Some(Event::Problem(self.too_large(bytes, &scan)));
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Event::Message(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(input: &[u8], max: usize) -> Vec<Event> {
        let mut framer = LineFramer::new(Limits {
            max_message_bytes: max,
        });
        let mut out = Vec::new();
        for part in input.chunks(7) {
            framer.push(part);
            while let Some(e) = framer.next_event() {
                out.push(e);
            }
        }
        out.extend(framer.finish());
        out
    }

    #[test]
    fn lines_blank_lines_crlf_and_a_last_line_without_a_break() {
        let got = run(b"{\"a\":1}\r\n\n  \n{\"b\":2}\n{\"c\":3}", 100);
        assert_eq!(
            got,
            [
                Event::Message(b"{\"a\":1}".to_vec()),
                Event::Message(b"{\"b\":2}".to_vec()),
                Event::Message(b"{\"c\":3}".to_vec()),
            ]
        );
    }

    #[test]
    fn a_line_over_the_limit_is_streamed_past_and_answered_under_its_id() {
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":\"q1\",\"method\":\"tools/call\",\"params\":{{\"query\":\"{}\"}}}}\n{{\"ok\":1}}\n",
            "y".repeat(10_000)
        );
        let mut framer = LineFramer::new(Limits {
            max_message_bytes: 1000,
        });
        let mut got = Vec::new();
        for part in big.as_bytes().chunks(512) {
            framer.push(part);
            while let Some(e) = framer.next_event() {
                got.push(e);
            }
            assert!(framer.line.len() <= 1000, "the long line is not kept");
        }
        assert_eq!(
            got,
            [
                Event::Problem(Problem::TooLarge {
                    bytes: big.find('\n').unwrap(),
                    limit: 1000,
                    id: Some(json!("q1")),
                    has_method: true
                }),
                Event::Message(b"{\"ok\":1}".to_vec()),
            ]
        );
    }

    #[test]
    fn a_whole_message_without_a_line_break_is_taken_when_input_stalls() {
        let mut framer = LineFramer::new(Limits::default());
        framer.push(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"");
        assert_eq!(framer.next_event(), None);
        assert_eq!(framer.stalled(), None, "not yet JSON: keep waiting");
        framer.push(b"}");
        assert_eq!(framer.next_event(), None);
        assert!(matches!(framer.stalled(), Some(Event::Message(_))));
        assert!(!framer.mid_message());
    }
}
