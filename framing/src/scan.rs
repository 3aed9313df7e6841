//! A streaming scan of a JSON message's top level: its `id` and whether it has a `method`,
//! read from bytes that are never kept (a message over the size limit is answered under its
//! own id without being buffered).

use serde_json::Value;

/// Longest `id` value kept (ids are small numbers or strings).
const MAX_ID_BYTES: usize = 256;
/// Longest key compared (only `id` and `method` matter).
const MAX_KEY_BYTES: usize = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Field {
    #[default]
    None,
    Id,
    Other,
}

/// Feed bytes with [`TopLevelScan::feed`]; read [`TopLevelScan::id`] and
/// [`TopLevelScan::has_method`] at any point. Memory is bounded whatever is fed.
#[derive(Clone, Debug, Default)]
pub struct TopLevelScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Inside the top-level object, the next string is a key.
    expect_key: bool,
    capturing_key: bool,
    key: Vec<u8>,
    key_done: bool,
    field: Field,
    id_raw: Vec<u8>,
    id: Option<Value>,
    has_method: bool,
}

impl TopLevelScan {
    pub fn new() -> TopLevelScan {
        TopLevelScan::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// The top-level `id` (a number or a string) once its value has ended.
    pub fn id(&self) -> Option<Value> {
        self.id.clone()
    }

    /// Whether a top-level `method` key was seen.
    pub fn has_method(&self) -> bool {
        self.has_method
    }

    fn push_id(&mut self, b: u8) {
        if self.depth == 1 && self.field == Field::Id {
            if self.id_raw.len() < MAX_ID_BYTES {
                self.id_raw.push(b);
            } else {
                self.field = Field::Other; // an id this long is not one to answer under
            }
        }
    }

    fn end_value(&mut self) {
        if self.field == Field::Id
            && let Ok(value) = serde_json::from_slice::<Value>(&self.id_raw)
            && (value.is_number() || value.is_string())
        {
            self.id = Some(value);
        }
        self.field = Field::None;
        self.id_raw.clear();
    }

    fn byte(&mut self, b: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.capturing_key {
                    self.capturing_key = false;
                    self.key_done = true;
                    return;
                }
            }
            if self.capturing_key {
                if self.key.len() < MAX_KEY_BYTES {
                    self.key.push(b);
                }
            } else {
                self.push_id(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.capturing_key = true;
                    self.key.clear();
                } else {
                    self.push_id(b);
                }
            }
            b'{' | b'[' => {
                if self.depth == 1 && self.field == Field::Id {
                    self.field = Field::Other; // not a scalar id
                }
                self.depth = self.depth.saturating_add(1);
                if self.depth == 1 {
                    self.expect_key = b == b'{';
                }
            }
            b'}' | b']' => {
                if self.depth == 1 {
                    self.end_value();
                }
                self.depth = self.depth.saturating_sub(1);
            }
            b':' if self.depth == 1 && self.key_done => {
                self.key_done = false;
                self.expect_key = false;
                self.field = match self.key.as_slice() {
                    b"id" => Field::Id,
                    b"method" => {
                        self.has_method = true;
                        Field::Other
                    }
                    _ => Field::Other,
                };
                self.id_raw.clear();
            }
            b',' if self.depth == 1 => {
                self.end_value();
                self.expect_key = true;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => self.push_id(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan(text: &str) -> (Option<Value>, bool) {
        let mut s = TopLevelScan::new();
        // Byte by byte, as the worst split of a stream.
        for b in text.as_bytes() {
            s.feed(&[*b]);
        }
        (s.id(), s.has_method())
    }

    #[test]
    fn finds_the_top_level_id_wherever_it_is() {
        assert_eq!(
            scan(r#"{"jsonrpc":"2.0","id":7,"method":"x","params":{"id":9}}"#),
            (Some(json!(7)), true)
        );
        assert_eq!(
            scan(r#"{"method":"x","params":{"id":9,"t":"\"id\":3"},"id":"a\"b"}"#),
            (Some(json!("a\"b")), true)
        );
        assert_eq!(
            scan(r#"{ "id" : -12 , "result" : null }"#),
            (Some(json!(-12)), false)
        );
    }

    #[test]
    fn nested_ids_and_non_scalar_ids_are_not_taken() {
        assert_eq!(
            scan(r#"{"method":"n","params":{"id":9,"x":[{"id":1}]}}"#),
            (None, true)
        );
        assert_eq!(scan(r#"{"id":{"a":1},"method":"m"}"#), (None, true));
        assert_eq!(scan(r#"["id", 1]"#), (None, false));
    }

    #[test]
    fn a_truncated_message_still_gives_what_came_before_the_cut() {
        // The id's value ended at its comma, before the cut.
        assert_eq!(
            scan(r#"{"jsonrpc":"2.0","id":42,"method":"ctxzip/compress","params":{"query":"ab"#),
            (Some(json!(42)), true)
        );
    }
}
