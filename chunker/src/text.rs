//! Chunking without a grammar: paragraphs gathered into windows, Markdown split at headings.

use crate::chunk::{Chunk, ChunkKind};
use crate::lang::Lang;
use crate::lines::{LineIndex, is_blank};
use crate::pieces::{MAX_GLUE_ROWS, Piece, PieceList, split_rows};

/// Text windows aim for this many rows; a heading always starts a new window.
const TEXT_WINDOW_ROWS: usize = 40;

pub fn chunk_plain(lang: Lang, text: &str, index: &LineIndex) -> Vec<Chunk> {
    let mut list = PieceList::new(text, index);
    let n_rows = index.n_rows();
    if n_rows == 0 {
        return Vec::new();
    }
    let row = |r: usize| index.rows_text(text, r, r);
    // Sections: runs of rows that start at a heading (Markdown) or at the file start.
    let mut sections: Vec<(usize, usize, Option<String>)> = Vec::new();
    let mut section_start = 0;
    let mut section_name = None;
    for r in 0..n_rows {
        if let Some(heading) = heading(lang, row(r))
            && r > section_start
        {
            sections.push((section_start, r - 1, section_name.take()));
            section_start = r;
            section_name = Some(heading);
        } else if let Some(heading) = heading(lang, row(r)) {
            section_name = Some(heading);
        }
    }
    sections.push((section_start, n_rows - 1, section_name));

    for (first, last, name) in sections {
        // Leading blank rows of a section join the previous one.
        let mut content_first = first;
        while content_first <= last && is_blank(row(content_first)) {
            content_first += 1;
        }
        if content_first > last {
            list.gap(first, last + 1, None, false);
            continue;
        }
        list.gap(first, content_first, None, false);
        let max_rows = if name.is_some() {
            MAX_GLUE_ROWS
        } else {
            TEXT_WINDOW_ROWS
        };
        for (i, (a, b)) in split_rows(text, index, content_first, last, max_rows)
            .into_iter()
            .enumerate()
        {
            let name = name.as_ref().map(|n| {
                if i == 0 {
                    n.clone()
                } else {
                    format!("{n} ({})", i + 1)
                }
            });
            list.push(Piece {
                first_row: a,
                last_row: b,
                kind: ChunkKind::Text,
                qualified_name: name.clone(),
                name,
                body_start: None,
            });
        }
    }
    list.finish(lang)
}

fn heading(lang: Lang, line: &str) -> Option<String> {
    if lang != Lang::Markdown {
        return None;
    }
    let trimmed = line.trim_end();
    let title = trimmed.trim_start_matches('#');
    let level = trimmed.len() - title.len();
    if (1..=6).contains(&level) && (title.is_empty() || title.starts_with(' ')) {
        Some(title.trim().to_owned()).filter(|t| !t.is_empty())
    } else {
        None
    }
}
