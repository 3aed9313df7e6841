//! Seeded fuzzing of both framers, as the shells drive them: streams of valid messages with
//! hostile input between them, pushed in random splits. Properties: every valid message
//! comes out, whole and in order, and nothing else parses as a message; every hostile piece
//! that owes an answer gets one; memory stays bounded; nothing panics.
//!
//! `cargo test -p ctxzip-framing --test fuzz` runs a smoke run of a few seconds;
//! `scripts/fuzz-transports` runs a long one (`CTXZIP_FUZZ_ROUNDS`, `CTXZIP_FUZZ_SEED`).

use ctxzip_framing::content_length::Framer;
use ctxzip_framing::hostile::{self, Family, Rng};
use ctxzip_framing::lines::LineFramer;
use ctxzip_framing::{Event, Limits, MAX_HEADER_LINE_BYTES, parse_json};
use serde_json::Value;

const LIMIT: usize = 4096;
const MAX_CHUNK: usize = 3000;

fn rounds() -> u64 {
    std::env::var("CTXZIP_FUZZ_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(400)
}

fn seed() -> u64 {
    std::env::var("CTXZIP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261130)
}

/// What the framer gave back for a stream.
#[derive(Default)]
struct Outcome {
    ids: Vec<u64>,
    answers: usize,
    max_buffered: usize,
}

trait Framing {
    fn push(&mut self, bytes: &[u8]);
    fn next_event(&mut self) -> Option<Event>;
    fn finish(&mut self) -> Option<Event>;
    fn bad_message(&mut self);
    fn buffered(&self) -> usize;
}

impl Framing for Framer {
    fn push(&mut self, bytes: &[u8]) {
        Framer::push(self, bytes)
    }
    fn next_event(&mut self) -> Option<Event> {
        Framer::next_event(self)
    }
    fn finish(&mut self) -> Option<Event> {
        Framer::finish(self)
    }
    fn bad_message(&mut self) {
        self.last_message_was_bad()
    }
    fn buffered(&self) -> usize {
        self.buffered_bytes()
    }
}

impl Framing for LineFramer {
    fn push(&mut self, bytes: &[u8]) {
        LineFramer::push(self, bytes)
    }
    fn next_event(&mut self) -> Option<Event> {
        LineFramer::next_event(self)
    }
    fn finish(&mut self) -> Option<Event> {
        LineFramer::finish(self)
    }
    fn bad_message(&mut self) {}
    fn buffered(&self) -> usize {
        self.buffered_bytes()
    }
}

fn take(event: Event, framer: &mut impl Framing, out: &mut Outcome) {
    match event {
        Event::Message(body) => match parse_json(&body) {
            // A message: one of the valid ones, or hostile input taken for one (a failure).
            Ok(value) if value.get("method").is_some() => out
                .ids
                .push(value.get("id").and_then(Value::as_u64).unwrap_or(u64::MAX)),
            // JSON that is no JSON-RPC message: the shell answers it (-32600).
            Ok(_) => out.answers += 1,
            Err(_) => {
                out.answers += 1;
                framer.bad_message();
            }
        },
        Event::Problem(_) => out.answers += 1,
    }
}

fn drive(framer: &mut impl Framing, stream: &[u8], rng: &mut Rng) -> Outcome {
    let mut out = Outcome::default();
    let mut at = 0;
    while at < stream.len() {
        let n = (1 + rng.below(MAX_CHUNK)).min(stream.len() - at);
        framer.push(&stream[at..at + n]);
        at += n;
        while let Some(event) = framer.next_event() {
            take(event, framer, &mut out);
        }
        out.max_buffered = out.max_buffered.max(framer.buffered());
    }
    while let Some(event) = framer.finish() {
        take(event, framer, &mut out);
    }
    out
}

fn fuzz(
    name: &str,
    new: impl Fn() -> Box<dyn FnMut(&[u8], &mut Rng) -> Outcome>,
    garbage: fn(&mut Rng, usize) -> (Vec<u8>, Family),
    frame: fn(&str) -> Vec<u8>,
) {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut families = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..rounds() {
        let mut stream = Vec::new();
        let mut expected_ids = Vec::new();
        let mut owed = 0;
        let mut pieces = Vec::new();
        for i in 0..1 + rng.below(6) {
            let (bad, family) = garbage(&mut rng, LIMIT);
            *families.entry(format!("{family:?}")).or_default() += 1;
            owed += usize::from(family.answered());
            stream.extend_from_slice(&bad);
            let id = (round * 10 + i as u64) % 900_000;
            stream.extend_from_slice(&frame(&hostile::valid_message(&mut rng, id, "m")));
            expected_ids.push(id);
            pieces.push(family);
        }
        let mut run = new();
        let out = run(&stream, &mut rng);
        let context = format!("{name}: seed {seed} round {round}, pieces {pieces:?}");
        if out.ids != expected_ids && std::env::var_os("CTXZIP_FUZZ_DUMP").is_some() {
            let shown = String::from_utf8_lossy(&stream);
            eprintln!(
                "{context}: stream {:?}",
                shown.chars().take(3000).collect::<String>()
            );
        }
        assert_eq!(out.ids, expected_ids, "{context}");
        assert!(
            out.answers >= owed,
            "{context}: {} answers for {owed} bad pieces",
            out.answers
        );
        assert!(
            out.max_buffered <= LIMIT + MAX_CHUNK + MAX_HEADER_LINE_BYTES + 128,
            "{context}: {} bytes held",
            out.max_buffered
        );
    }
    eprintln!(
        "{name}: {} rounds, seed {seed}, pieces {families:?}",
        rounds()
    );
}

#[test]
fn content_length_framing_survives_hostile_streams() {
    fuzz(
        "lsp",
        || {
            let mut framer = Framer::new(Limits {
                max_message_bytes: LIMIT,
            });
            Box::new(move |stream, rng| drive(&mut framer, stream, rng))
        },
        hostile::lsp_garbage,
        |body| format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes(),
    );
}

#[test]
fn line_framing_survives_hostile_streams() {
    fuzz(
        "mcp",
        || {
            let mut framer = LineFramer::new(Limits {
                max_message_bytes: LIMIT,
            });
            Box::new(move |stream, rng| drive(&mut framer, stream, rng))
        },
        hostile::mcp_garbage,
        |body| format!("{body}\n").into_bytes(),
    );
}
