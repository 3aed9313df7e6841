//! Hostile input for the fuzz tests of both transports: a seeded generator of byte
//! sequences that are not valid messages (random bytes, truncated frames, wrong or missing
//! lengths, oversized bodies and lines, invalid UTF-8), and of valid messages whose strings
//! hold text that looks like framing. Deterministic for a seed, so a failure is replayed by
//! its seed.

use serde_json::json;

/// xorshift64*: small, fast, and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// What a piece of hostile input is, and whether the server owes an answer for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    RandomBytes,
    Truncated,
    ShortLength,
    LongLength,
    MissingLength,
    BadLength,
    Oversized,
    LongHeaderLine,
    BadUtf8Header,
    BadUtf8Body,
    NotJson,
    Blank,
}

impl Family {
    /// Whether at least one error reply (or, for an oversized notification, a log line)
    /// must come back. Random bytes may happen to be blank lines; blank lines are allowed.
    pub fn answered(self) -> bool {
        !matches!(self, Family::RandomBytes | Family::Blank)
    }
}

/// A valid JSON-RPC request with id `id` and `method`, whose params hold text that looks
/// like framing (headers, escaped line breaks, non-ASCII) to prove it is not taken for any.
pub fn valid_message(rng: &mut Rng, id: u64, method: &str) -> String {
    let noise = [
        "Content-Length: 12",
        "content-length:7\\r\\n",
        "\r\n\r\n",
        "«ünï» 😀",
        "\"id\": 99",
        "{\"method\": \"x\"}",
        "",
    ];
    let note: String = (0..rng.below(4))
        .map(|_| noise[rng.below(noise.len())])
        .collect();
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"note": note}}).to_string()
}

fn frame(body: &[u8]) -> Vec<u8> {
    [
        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
        body,
    ]
    .concat()
}

fn random_text(rng: &mut Rng, n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcXYZ019 :{}[]\",\\\r\n\t-";
    (0..n)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
        .collect()
}

/// A piece of hostile LSP input (`Content-Length` framing). `limit` is the server's
/// message limit; oversized bodies are a little over it.
pub fn lsp_garbage(rng: &mut Rng, limit: usize) -> (Vec<u8>, Family) {
    let id = 900_000 + rng.below(1000) as u64;
    let message = valid_message(rng, id, "ctxzip/status");
    let body = message.as_bytes();
    match rng.below(12) {
        0 => {
            let n = 1 + rng.below(300);
            let bytes = if rng.below(2) == 0 {
                rng.bytes(n)
            } else {
                random_text(rng, n)
            };
            (bytes, Family::RandomBytes)
        }
        1 => {
            let whole = frame(body);
            let cut = 1 + rng.below(whole.len() - 1);
            (whole[..cut].to_vec(), Family::Truncated)
        }
        2 => {
            let short = rng.below(body.len());
            let head = format!("Content-Length: {short}\r\n\r\n");
            ([head.as_bytes(), body].concat(), Family::ShortLength)
        }
        3 => {
            let long = body.len() + 1 + rng.below(5000);
            let head = format!("Content-Length: {long}\r\n\r\n");
            ([head.as_bytes(), body].concat(), Family::LongLength)
        }
        4 => {
            let head = "Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n";
            ([head.as_bytes(), body].concat(), Family::MissingLength)
        }
        5 => {
            let values = [
                "abc",
                "-3",
                "1e3",
                "99999999999999999999999",
                "",
                "0x10",
                "12 34",
            ];
            let head = format!(
                "Content-Length: {}\r\n\r\n",
                values[rng.below(values.len())]
            );
            ([head.as_bytes(), body].concat(), Family::BadLength)
        }
        6 => {
            let pad = "p".repeat(limit + 1 + rng.below(1000));
            let big = json!({"jsonrpc": "2.0", "id": 900_001, "method": "ctxzip/status", "params": {"pad": pad}});
            let big = if rng.below(3) == 0 {
                // A notification: answered with a log message, never a response.
                json!({"jsonrpc": "2.0", "method": "ctxzip/nothing", "params": {"pad": big}})
            } else {
                big
            };
            (frame(big.to_string().as_bytes()), Family::Oversized)
        }
        7 => {
            let n = 9000 + rng.below(20_000);
            let mut line = random_text(rng, n);
            line.retain(|&b| b != b'\n' && b != b'\r');
            line.extend_from_slice(b"\r\n\r\n");
            (line, Family::LongHeaderLine)
        }
        8 => {
            let mut line = b"Content-".to_vec();
            let n = 1 + rng.below(20);
            line.extend(rng.bytes(n).into_iter().map(|b| b | 0x80));
            line.extend_from_slice(b": 5\r\n\r\n");
            (line, Family::BadUtf8Header)
        }
        9 => {
            let mut bad = body.to_vec();
            let at = bad.len() / 2;
            bad.splice(at..at, [0xff, 0xfe]);
            (frame(&bad), Family::BadUtf8Body)
        }
        10 => {
            let n = 1 + rng.below(200);
            (frame(&random_text(rng, n)), Family::NotJson)
        }
        _ => (b"\r\n".repeat(1 + rng.below(3)), Family::Blank),
    }
}

/// A piece of hostile MCP input (newline-delimited JSON), ending in a line break.
pub fn mcp_garbage(rng: &mut Rng, limit: usize) -> (Vec<u8>, Family) {
    let id = 900_000 + rng.below(1000) as u64;
    let message = valid_message(rng, id, "ping");
    let mut out = match rng.below(7) {
        0 => {
            let n = 1 + rng.below(300);
            let mut bytes = rng.bytes(n);
            bytes.retain(|&b| b != b'\n');
            (bytes, Family::RandomBytes)
        }
        1 => {
            let cut = rng.below(message.len() - 1) + 1;
            let mut cut_text = message.as_bytes()[..cut].to_vec();
            // A cut that leaves whole JSON (never, for an object cut short) or only
            // whitespace would not be garbage.
            if cut_text.iter().all(u8::is_ascii_whitespace) {
                cut_text = b"{".to_vec();
            }
            (cut_text, Family::Truncated)
        }
        2 => {
            let mut bad = message.into_bytes();
            let at = bad.len() / 2;
            bad.splice(at..at, [0xff, 0xfe]);
            (bad, Family::BadUtf8Body)
        }
        3 => {
            let pad = "p".repeat(limit + 1 + rng.below(1000));
            let big =
                json!({"jsonrpc": "2.0", "id": 900_001, "method": "ping", "params": {"pad": pad}});
            (big.to_string().into_bytes(), Family::Oversized)
        }
        4 => {
            let n = 1 + rng.below(200);
            let mut text = random_text(rng, n);
            text.retain(|&b| b != b'\n');
            text.insert(0, b'x'); // never whitespace only, never JSON
            (text, Family::NotJson)
        }
        5 => (b" \t\r".to_vec(), Family::Blank),
        _ => (
            b"{\"jsonrpc\": \"2.0\", \"id\": 900002, \"method\":".to_vec(),
            Family::Truncated,
        ),
    };
    out.0.push(b'\n');
    out
}
