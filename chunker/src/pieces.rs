//! Row intervals with their chunk kind and name, before they become [`Chunk`]s; shared by the
//! syntax and text chunkers so that both tile a file in the same way.

use crate::chunk::{Chunk, ChunkKind, content_hash};
use crate::lang::Lang;
use crate::lines::{LineIndex, is_blank};

/// Glue longer than this is split at blank lines, so that no stretch of top-level code or
/// text is scored as one oversized unit.
pub const MAX_GLUE_ROWS: usize = 60;

#[derive(Clone, Debug)]
pub struct Piece {
    pub first_row: usize,
    pub last_row: usize,
    pub kind: ChunkKind,
    pub name: Option<String>,
    pub qualified_name: Option<String>,
    /// Where the body starts (the header ends just before), for definitions.
    pub body_start: Option<usize>,
}

/// Accumulates pieces in row order and folds whitespace-only gaps into a neighbour.
pub struct PieceList<'a> {
    pub text: &'a str,
    pub index: &'a LineIndex,
    pub pieces: Vec<Piece>,
    /// Leading blank rows waiting for the first piece.
    pending_from: Option<usize>,
}

impl<'a> PieceList<'a> {
    pub fn new(text: &'a str, index: &'a LineIndex) -> PieceList<'a> {
        PieceList {
            text,
            index,
            pieces: Vec::new(),
            pending_from: None,
        }
    }

    pub fn push(&mut self, mut piece: Piece) {
        if let Some(first) = self.pending_from.take() {
            piece.first_row = first;
        }
        self.pieces.push(piece);
    }

    /// Rows `first..end` not covered by a definition: blank rows join the previous piece,
    /// anything else becomes glue named after its container (if any).
    pub fn gap(&mut self, first: usize, end: usize, parent: Option<&str>, split_long: bool) {
        if first >= end {
            return;
        }
        let last = end - 1;
        if is_blank(self.index.rows_text(self.text, first, last)) {
            match self.pieces.last_mut() {
                Some(previous) => previous.last_row = last,
                None => {
                    self.pending_from.get_or_insert(first);
                }
            }
            return;
        }
        // Blank rows at the start of the gap belong to the piece before it.
        let mut first = first;
        if let Some(previous) = self.pieces.last_mut() {
            while first < last && is_blank(self.index.rows_text(self.text, first, first)) {
                previous.last_row = first;
                first += 1;
            }
        }
        let glue = |first_row, last_row| Piece {
            first_row,
            last_row,
            kind: ChunkKind::Glue,
            name: None,
            qualified_name: parent.map(str::to_owned),
            body_start: None,
        };
        if !split_long || last - first < MAX_GLUE_ROWS {
            self.push(glue(first, last));
            return;
        }
        for (a, b) in split_rows(self.text, self.index, first, last, MAX_GLUE_ROWS) {
            self.push(glue(a, b));
        }
    }

    pub fn finish(mut self, lang: Lang) -> Vec<Chunk> {
        if let Some(first) = self.pending_from.take() {
            // A file of blank lines: one glue chunk keeps every line covered.
            let last = self.index.n_rows() - 1;
            self.pieces.push(Piece {
                first_row: first,
                last_row: last,
                kind: if lang.has_grammar() {
                    ChunkKind::Glue
                } else {
                    ChunkKind::Text
                },
                name: None,
                qualified_name: None,
                body_start: None,
            });
        }
        let (text, index) = (self.text, self.index);
        self.pieces
            .into_iter()
            .map(|piece| to_chunk(piece, text, index, lang))
            .collect()
    }
}

fn to_chunk(piece: Piece, text: &str, index: &LineIndex, lang: Lang) -> Chunk {
    let start = index.row_start(piece.first_row);
    let end = index.row_end(piece.last_row);
    let (header_range, header_end_line) = match piece.body_start {
        Some(body_start) if body_start > start => {
            // The header ends on the last row holding code before the body.
            let before = text[start..body_start.min(end)].trim_end();
            let header_row = index
                .row_of(start + before.len().saturating_sub(1))
                .clamp(piece.first_row, piece.last_row);
            (start..index.row_end(header_row), header_row as u32 + 1)
        }
        Some(_) => (
            start..index.row_end(piece.first_row),
            piece.first_row as u32 + 1,
        ),
        None if piece.kind.is_callable() || piece.kind.is_container() => {
            (start..end, piece.last_row as u32 + 1)
        }
        None => (start..start, piece.first_row as u32),
    };
    Chunk {
        language: lang,
        kind: piece.kind,
        name: piece.name,
        qualified_name: piece.qualified_name,
        byte_range: start..end,
        start_line: piece.first_row as u32 + 1,
        end_line: piece.last_row as u32 + 1,
        header_range,
        header_end_line,
        content_hash: content_hash(&text.as_bytes()[start..end]),
    }
}

/// Splits rows `first..=last` into windows of at most `max_rows`, preferring to cut after a
/// blank row.
pub fn split_rows(
    text: &str,
    index: &LineIndex,
    first: usize,
    last: usize,
    max_rows: usize,
) -> Vec<(usize, usize)> {
    let mut windows = Vec::new();
    let mut start = first;
    while start <= last {
        let hard_end = (start + max_rows - 1).min(last);
        let mut end = hard_end;
        if hard_end < last {
            // Cut after the last blank row in the second half of the window, if there is one.
            let floor = start + max_rows / 2;
            if let Some(blank) = (floor..=hard_end)
                .rev()
                .find(|&row| is_blank(index.rows_text(text, row, row)))
            {
                end = blank;
            }
        }
        windows.push((start, end));
        start = end + 1;
    }
    windows
}
