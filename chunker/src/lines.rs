//! Line arithmetic over a file's text: 0-based rows internally, 1-based lines outside.

/// Byte offsets of line starts. A final newline does not start a further line.
pub struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        for (i, byte) in text.bytes().enumerate() {
            if byte == b'\n' && i + 1 < text.len() {
                starts.push(i + 1);
            }
        }
        if text.is_empty() {
            starts.clear();
        }
        LineIndex {
            starts,
            len: text.len(),
        }
    }

    /// Number of lines: zero for an empty file.
    pub fn n_rows(&self) -> usize {
        self.starts.len()
    }

    /// The row holding `byte` (a byte at or past the end is on the last row).
    pub fn row_of(&self, byte: usize) -> usize {
        match self.starts.binary_search(&byte) {
            Ok(row) => row,
            Err(next) => next.saturating_sub(1),
        }
    }

    pub fn row_start(&self, row: usize) -> usize {
        self.starts.get(row).copied().unwrap_or(self.len)
    }

    /// End of `row`, past its newline.
    pub fn row_end(&self, row: usize) -> usize {
        self.starts.get(row + 1).copied().unwrap_or(self.len)
    }

    pub fn rows_text<'a>(&self, text: &'a str, first: usize, last: usize) -> &'a str {
        &text[self.row_start(first)..self.row_end(last)]
    }
}

pub fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_whitespace())
}

/// The byte offset of an LSP position (0-based line, UTF-16 code units into it), clamped
/// to the line's end as LSP asks; `None` past the last line + 1.
pub fn utf16_position_to_byte(text: &str, line: u32, character: u32) -> Option<usize> {
    let mut line_start = 0;
    for _ in 0..line {
        line_start += text[line_start..].find('\n')? + 1;
    }
    let line_text = &text[line_start..];
    let line_text = &line_text[..line_text.find('\n').unwrap_or(line_text.len())];
    let mut units = 0u32;
    for (offset, ch) in line_text.char_indices() {
        if units >= character {
            return Some(line_start + offset);
        }
        units += ch.len_utf16() as u32;
    }
    Some(line_start + line_text.len())
}
