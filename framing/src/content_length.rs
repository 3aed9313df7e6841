//! LSP's base protocol: `Content-Length: N\r\n` (other headers ignored), a blank line, then
//! N bytes of body. A frame whose headers are wrong is reported and skipped to the next
//! `Content-Length` header, wherever it starts; a frame whose length is too large is cut
//! where the next header begins, because `Content-Length: <digits>` followed by a raw line
//! break can never occur inside a JSON text (a raw line break is not allowed in a string,
//! and the header's name is not a JSON token outside one).

use crate::scan::TopLevelScan;
use crate::{Event, Limits, MAX_HEADER_LINE_BYTES, Problem};

const HEADER_NAME: &[u8] = b"content-length:";
/// Spaces and digits a header may have before it is not taken for one.
const MAX_HEADER_SPACES: usize = 8;
const MAX_HEADER_DIGITS: usize = 20;
/// Bytes of an over-long header line kept, in case a real header starts at its end.
const OVERLONG_TAIL_BYTES: usize = 64;

#[derive(Debug)]
enum State {
    Headers {
        length: Option<Result<usize, String>>,
        saw_header: bool,
        /// The line being read went over the header line limit; only its tail is kept.
        overlong: bool,
    },
    Body {
        length: usize,
        body: Vec<u8>,
        header: HeaderMatch,
    },
    Skip {
        length: usize,
        remaining: usize,
        scan: TopLevelScan,
        header: HeaderMatch,
    },
}

impl State {
    fn headers() -> State {
        State::Headers {
            length: None,
            saw_header: false,
            overlong: false,
        }
    }
}

/// Push bytes as they arrive, then take events until [`Framer::next_event`] says `None`.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    pending: Vec<u8>,
    state: State,
    /// A problem was reported and no message has been framed since: skipped bytes are not
    /// reported again, so one bad frame is one reply.
    resyncing: bool,
}

impl Framer {
    pub fn new(limits: Limits) -> Framer {
        Framer {
            limits,
            pending: Vec::new(),
            state: State::headers(),
            resyncing: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The last message was not JSON: its `Content-Length` was probably short, so the bytes
    /// up to the next header are its tail and are skipped without a second report.
    pub fn last_message_was_bad(&mut self) {
        self.resyncing = true;
    }

    /// Bytes held: the partial message and what was pushed but not yet framed.
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len()
            + match &self.state {
                State::Body { body, .. } => body.len(),
                _ => 0,
            }
    }

    /// Whether a message's headers are done and its body is still coming in.
    pub fn mid_message(&self) -> bool {
        !matches!(self.state, State::Headers { .. })
    }

    /// No byte came for a while in the middle of a body: the length was wrong and the client
    /// is waiting for an answer. Gives the partial message up and reports it.
    pub fn stalled(&mut self) -> Option<Event> {
        let problem = match &self.state {
            State::Body { length, body, .. } => Problem::Truncated {
                expected: *length,
                received: body.len(),
            },
            State::Skip {
                length, remaining, ..
            } => Problem::Truncated {
                expected: *length,
                received: length - remaining,
            },
            State::Headers { .. } => return None,
        };
        self.state = State::headers();
        self.problem(problem)
    }

    /// The end of input: what is left is framed, then a message cut short is reported.
    pub fn finish(&mut self) -> Option<Event> {
        if let Some(event) = self.next_event() {
            return Some(event);
        }
        self.stalled()
    }

    fn problem(&mut self, problem: Problem) -> Option<Event> {
        self.resyncing = true;
        Some(Event::Problem(problem))
    }

    /// The next message or problem from the bytes pushed so far; `None` when more bytes are
    /// needed.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let step = match &mut self.state {
                State::Headers { .. } => self.header_step(),
                State::Body { .. } => self.body_step(),
                State::Skip { .. } => self.skip_step(),
            };
            match step {
                Step::Event(event) => return Some(event),
                Step::Continue => {}
                Step::NeedMore => return None,
            }
        }
    }

    fn header_step(&mut self) -> Step {
        let State::Headers {
            length,
            saw_header,
            overlong,
        } = &mut self.state
        else {
            return Step::Continue;
        };
        let Some(newline) = self.pending.iter().position(|&b| b == b'\n') else {
            if self.pending.len() > MAX_HEADER_LINE_BYTES {
                let cut = self.pending.len() - OVERLONG_TAIL_BYTES;
                self.pending.drain(..cut);
                *overlong = true;
            }
            return Step::NeedMore;
        };
        let mut line: Vec<u8> = self.pending.drain(..=newline).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let was_overlong = std::mem::take(overlong);
        if line.is_empty() && !was_overlong {
            if !*saw_header {
                return Step::Continue; // a stray blank line between frames
            }
            let length = length.take();
            self.state = State::headers();
            return match length {
                None => Step::from(self.problem(Problem::BadLength(
                    "a message had no Content-Length header".into(),
                ))),
                Some(Err(why)) => Step::from(self.problem(Problem::BadLength(why))),
                Some(Ok(n)) if n > self.limits.max_message_bytes => {
                    self.state = State::Skip {
                        length: n,
                        remaining: n,
                        scan: TopLevelScan::new(),
                        header: HeaderMatch::default(),
                    };
                    Step::Continue
                }
                Some(Ok(n)) => {
                    self.state = State::Body {
                        length: n,
                        body: Vec::with_capacity(n.min(1 << 16)),
                        header: HeaderMatch::default(),
                    };
                    Step::Continue
                }
            };
        }
        // The last header name in the line: bytes before it are the tail of something cut
        // short (a body with a short Content-Length, a header block cut off).
        let found = rfind_ignore_case(&line, HEADER_NAME);
        if was_overlong || found.is_some_and(|p| p > 0) || (found.is_none() && !is_header(&line)) {
            // Not a header: report it once, then look for a header inside it.
            let why = if was_overlong {
                format!("a header line was over {MAX_HEADER_LINE_BYTES} bytes")
            } else if std::str::from_utf8(&line).is_err() {
                "a header line was not UTF-8".to_owned()
            } else {
                let shown: String = String::from_utf8_lossy(&line).chars().take(40).collect();
                format!("expected a header like `Content-Length: 123`, got {shown:?}")
            };
            let reported = (!self.resyncing).then_some(Problem::NotAHeader(why));
            self.state = State::headers();
            self.resyncing = true;
            if let Some(start) = found {
                // Start afresh at the header found inside the line.
                let mut rest = line[start..].to_vec();
                rest.push(b'\n');
                rest.append(&mut self.pending);
                self.pending = rest;
            }
            return match reported {
                Some(problem) => Step::Event(Event::Problem(problem)),
                None => Step::Continue,
            };
        }
        if found.is_none() {
            *saw_header = true; // another header (Content-Type): ignored
            return Step::Continue;
        }
        let value = String::from_utf8_lossy(&line[HEADER_NAME.len()..]);
        let parsed = value.trim().parse::<usize>().map_err(|_| {
            format!(
                "Content-Length {:?} is not a byte count",
                value.trim().chars().take(40).collect::<String>()
            )
        });
        if length.is_some() {
            // A second Content-Length: the headers before it were cut short and a new
            // message starts here.
            let reported = (!self.resyncing).then_some(Problem::NotAHeader(
                "a message's headers were cut short by the next message".to_owned(),
            ));
            self.resyncing = true;
            self.state = State::Headers {
                length: Some(parsed),
                saw_header: true,
                overlong: false,
            };
            return match reported {
                Some(problem) => Step::Event(Event::Problem(problem)),
                None => Step::Continue,
            };
        }
        *length = Some(parsed);
        *saw_header = true;
        Step::Continue
    }

    fn body_step(&mut self) -> Step {
        let State::Body {
            length,
            body,
            header,
        } = &mut self.state
        else {
            return Step::Continue;
        };
        if self.pending.is_empty() {
            return Step::NeedMore;
        }
        let take = (*length - body.len()).min(self.pending.len());
        for (i, &b) in self.pending[..take].iter().enumerate() {
            if let Some(header_len) = header.feed(b) {
                // The next message's header began inside this body: the length was wrong.
                let end = body.len() + i + 1;
                body.extend_from_slice(&self.pending[..=i]);
                let start = end - header_len;
                let mut rest = body.split_off(start);
                rest.extend_from_slice(&self.pending[i + 1..]);
                self.pending = rest;
                let problem = Problem::Truncated {
                    expected: *length,
                    received: start,
                };
                self.state = State::headers();
                return Step::from(self.problem(problem));
            }
        }
        body.extend(self.pending.drain(..take));
        if body.len() < *length {
            return Step::NeedMore;
        }
        if !header.matched.is_empty() {
            // The body ends in the start of a `Content-Length` header, which no JSON text
            // can: the length was too large by a few bytes. Read the header again.
            let start = body.len() - header.matched.len();
            let mut rest = body.split_off(start);
            rest.append(&mut self.pending);
            self.pending = rest;
            let problem = Problem::Truncated {
                expected: *length,
                received: start,
            };
            self.state = State::headers();
            return Step::from(self.problem(problem));
        }
        let body = std::mem::take(body);
        self.state = State::headers();
        self.resyncing = false;
        Step::Event(Event::Message(body))
    }

    fn skip_step(&mut self) -> Step {
        let State::Skip {
            length,
            remaining,
            scan,
            header,
        } = &mut self.state
        else {
            return Step::Continue;
        };
        if *remaining > 0 && self.pending.is_empty() {
            return Step::NeedMore;
        }
        let take = (*remaining).min(self.pending.len());
        for (i, &b) in self.pending[..take].iter().enumerate() {
            if let Some(header_len) = header.feed(b) {
                let received = *length - *remaining + i + 1 - header_len;
                let mut rest = header.last.clone();
                rest.extend_from_slice(&self.pending[i + 1..]);
                self.pending = rest;
                let problem = Problem::Truncated {
                    expected: *length,
                    received,
                };
                self.state = State::headers();
                return Step::from(self.problem(problem));
            }
        }
        scan.feed(&self.pending[..take]);
        self.pending.drain(..take);
        *remaining -= take;
        if *remaining > 0 {
            return Step::NeedMore;
        }
        if !header.matched.is_empty() {
            let received = *length - header.matched.len();
            let mut rest = std::mem::take(&mut header.matched);
            rest.append(&mut self.pending);
            self.pending = rest;
            let problem = Problem::Truncated {
                expected: *length,
                received,
            };
            self.state = State::headers();
            return Step::from(self.problem(problem));
        }
        let problem = Problem::TooLarge {
            bytes: *length,
            limit: self.limits.max_message_bytes,
            id: scan.id(),
            has_method: scan.has_method(),
        };
        self.state = State::headers();
        Step::from(self.problem(problem))
    }
}

enum Step {
    Event(Event),
    Continue,
    NeedMore,
}

impl From<Option<Event>> for Step {
    fn from(event: Option<Event>) -> Step {
        event.map_or(Step::Continue, Step::Event)
    }
}

/// `Name: value` with a token name, as HTTP-style headers are.
fn is_header(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
        _ => false,
    }
}

fn rfind_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|w| w.eq_ignore_ascii_case(needle))
}

/// Recognises `Content-Length:` + spaces + digits + a line break in a stream, byte by byte.
#[derive(Debug, Default)]
struct HeaderMatch {
    stage: Stage,
    /// The bytes of the match so far; on a match, the whole header line.
    matched: Vec<u8>,
    /// The header line of the last match.
    last: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default)]
enum Stage {
    #[default]
    Name0,
    Name(usize),
    Spaces(usize),
    Digits(usize),
    Cr,
}

impl HeaderMatch {
    /// Feeds one byte; on the line break that ends a header, the header's length in bytes.
    fn feed(&mut self, b: u8) -> Option<usize> {
        let next = match self.stage {
            Stage::Name0 | Stage::Name(_) => {
                let i = match self.stage {
                    Stage::Name(i) => i,
                    _ => 0,
                };
                if b.to_ascii_lowercase() == HEADER_NAME[i] {
                    Some(if i + 1 == HEADER_NAME.len() {
                        Stage::Spaces(0)
                    } else {
                        Stage::Name(i + 1)
                    })
                } else {
                    None
                }
            }
            Stage::Spaces(n) if (b == b' ' || b == b'\t') && n < MAX_HEADER_SPACES => {
                Some(Stage::Spaces(n + 1))
            }
            Stage::Spaces(_) | Stage::Digits(_) if b.is_ascii_digit() => match self.stage {
                Stage::Digits(n) if n >= MAX_HEADER_DIGITS => None,
                Stage::Digits(n) => Some(Stage::Digits(n + 1)),
                _ => Some(Stage::Digits(1)),
            },
            Stage::Digits(_) if b == b'\r' => Some(Stage::Cr),
            Stage::Digits(_) | Stage::Cr if b == b'\n' => {
                self.matched.push(b);
                self.last = std::mem::take(&mut self.matched);
                self.stage = Stage::Name0;
                return Some(self.last.len());
            }
            _ => None,
        };
        match next {
            Some(stage) => {
                self.stage = stage;
                self.matched.push(b);
            }
            None => {
                self.matched.clear();
                // The pattern's first byte occurs nowhere else in it, so a mismatch can only
                // restart at this byte.
                if b.to_ascii_lowercase() == HEADER_NAME[0] {
                    self.stage = Stage::Name(1);
                    self.matched.push(b);
                } else {
                    self.stage = Stage::Name0;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    fn events(input: &[u8], limits: Limits) -> Vec<Event> {
        let mut framer = Framer::new(limits);
        let mut out = Vec::new();
        framer.push(input);
        while let Some(e) = framer.next_event() {
            out.push(e);
        }
        out.extend(framer.finish());
        out
    }

    fn messages(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(String::from_utf8_lossy(m).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn problems(events: &[Event]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Event::Problem(_)))
            .count()
    }

    const A: &str = r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#;
    const B: &str = r#"{"jsonrpc":"2.0","id":2,"method":"b"}"#;

    #[test]
    fn well_formed_frames_in_any_split() {
        let input = format!(
            "{}Content-Type: application/vscode-jsonrpc; charset=utf-8\r\ncontent-length:{}\r\n\r\n{B}",
            frame(A),
            B.len()
        );
        for split in 0..input.len() {
            let mut framer = Framer::new(Limits::default());
            let mut got = Vec::new();
            for part in [&input.as_bytes()[..split], &input.as_bytes()[split..]] {
                framer.push(part);
                while let Some(e) = framer.next_event() {
                    got.push(e);
                }
            }
            assert_eq!(messages(&got), [A, B], "split at {split}");
            assert_eq!(problems(&got), 0);
        }
    }

    #[test]
    fn a_length_too_large_is_cut_at_the_next_header() {
        let input = format!("Content-Length: 1000\r\n\r\n{A}{}", frame(B));
        let got = events(input.as_bytes(), Limits::default());
        assert_eq!(messages(&got), [B]);
        assert_eq!(
            got[0],
            Event::Problem(Problem::Truncated {
                expected: 1000,
                received: A.len()
            })
        );
    }

    #[test]
    fn a_length_too_small_or_missing_or_not_a_number_resyncs() {
        for bad in [
            format!("Content-Length: 5\r\n\r\n{A}"),
            format!("Content-Type: x\r\n\r\n{A}"),
            format!("Content-Length: abc\r\n\r\n{A}"),
            format!("Content-Length: -3\r\n\r\n{A}"),
            format!("Content-Length: 99999999999999999999999\r\n\r\n{A}"),
            format!("Cont\u{e9}nt-L\u{e9}ngth: 3\r\n\r\n{A}"),
            format!("{A}\n"),
        ]
        .into_iter()
        .map(String::into_bytes)
        .chain([[b"Content-Length: \xff\xfe\r\n\r\n", A.as_bytes()].concat()])
        {
            let input = [bad.clone(), frame(B).into_bytes()].concat();
            let got = events(&input, Limits::default());
            let msgs = messages(&got);
            assert_eq!(msgs.last().map(String::as_str), Some(B), "{bad:?}: {got:?}");
            assert!(problems(&got) >= 1, "{bad:?}: {got:?}");
        }
    }

    #[test]
    fn invalid_utf8_in_a_header_line_is_reported_once_and_skipped() {
        let mut input = b"X-Junk: \xff\xfe\xfd\r\nCont\xffent-Length: 3\r\n\r\n".to_vec();
        input.extend_from_slice(frame(A).as_bytes());
        let got = events(&input, Limits::default());
        assert_eq!(messages(&got), [A]);
        assert!(problems(&got) >= 1, "{got:?}");
    }

    #[test]
    fn an_oversized_body_is_skipped_and_answered_under_its_id() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","method":"ctxzip/compress","params":{{"query":"{}"}},"id":9}}"#,
            "x".repeat(5000)
        );
        let input = format!("{}{}", frame(&big), frame(B));
        let got = events(
            input.as_bytes(),
            Limits {
                max_message_bytes: 1000,
            },
        );
        assert_eq!(messages(&got), [B]);
        assert_eq!(
            got[0],
            Event::Problem(Problem::TooLarge {
                bytes: big.len(),
                limit: 1000,
                id: Some(serde_json::json!(9)),
                has_method: true
            })
        );
    }

    #[test]
    fn a_huge_header_line_is_not_kept() {
        let mut framer = Framer::new(Limits::default());
        let junk = vec![b'x'; 1 << 20];
        for _ in 0..50 {
            framer.push(&junk);
            while framer.next_event().is_some() {}
            assert!(framer.pending.len() <= MAX_HEADER_LINE_BYTES + junk.len());
        }
        framer.push(format!("\r\n{}", frame(A)).as_bytes());
        let mut got = Vec::new();
        while let Some(e) = framer.next_event() {
            got.push(e);
        }
        assert_eq!(messages(&got), [A]);
    }

    #[test]
    fn a_stalled_body_is_given_up() {
        let mut framer = Framer::new(Limits::default());
        framer.push(format!("Content-Length: 100\r\n\r\n{A}").as_bytes());
        assert_eq!(framer.next_event(), None);
        assert!(framer.mid_message());
        assert!(matches!(
            framer.stalled(),
            Some(Event::Problem(Problem::Truncated { .. }))
        ));
        framer.push(frame(B).as_bytes());
        assert_eq!(
            framer.next_event(),
            Some(Event::Message(B.as_bytes().to_vec()))
        );
    }
}
