//! One file's text, syntax tree and chunks, kept current under edits with tree-sitter's
//! incremental reparse (the editor's unsaved buffer case).

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tree_sitter::{InputEdit, ParseOptions, ParseState, Parser, Point, Tree};

use crate::chunk::Chunk;
use crate::lang::Lang;
use crate::lines::LineIndex;
use crate::{syntax, text};

thread_local! {
    static PARSER: RefCell<Parser> = RefCell::new(Parser::new());
}

/// A parse that takes longer than this is abandoned and the file is chunked as text. Real
/// files parse far faster (the slowest of 9,317 real files, 1 MiB of C++, parses and chunks
/// in 0.3 s), but a grammar's own scanner can be quadratic on some input: tree-sitter-lua
/// takes 1.5 s on 4,000 nested `local t = {` lines and 6 s on 8,000. The chunker promises
/// an answer for any file under the size cap, so the parse has a deadline.
const PARSE_BUDGET: Duration = Duration::from_secs(2);

fn parse(lang: Lang, text: &str, old_tree: Option<&Tree>) -> Option<Tree> {
    let language = lang.language()?;
    PARSER.with(|parser| {
        let mut parser = parser.borrow_mut();
        parser.set_language(&language).ok()?;
        let deadline = Instant::now() + PARSE_BUDGET;
        // tree-sitter calls this every hundred parse steps.
        let mut past_deadline = |_: &ParseState| {
            if Instant::now() > deadline {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let bytes = text.as_bytes();
        let tree = parser.parse_with_options(
            &mut |offset, _| bytes.get(offset..).unwrap_or_default(),
            old_tree,
            Some(ParseOptions::new().progress_callback(&mut past_deadline)),
        );
        if tree.is_none() {
            // A cancelled parse would otherwise resume on this thread's next file
            // (`set_language` above resets it too, but only as a side effect).
            parser.reset();
        }
        tree
    })
}

/// Chunks `text` as a file of language `lang`. Never fails: a file tree-sitter cannot parse
/// (or cannot parse within the parse budget, 2 s) falls back to text windows.
pub fn chunk_source(lang: Lang, text: &str) -> Vec<Chunk> {
    chunk_source_timed(lang, text).0
}

/// [`chunk_source`], and whether the chunks are those of the text alone: false when the
/// parse ran out of its budget, so that text windows stood in for a grammar's chunks because
/// of the machine's load that moment. Such chunks are not worth keeping
/// ([`crate::stored`]); the next read may parse in time.
pub fn chunk_source_timed(lang: Lang, text: &str) -> (Vec<Chunk>, bool) {
    let tree = parse(lang, text, None);
    let settled = tree.is_some() || !lang.has_grammar();
    (chunks_of(lang, text, tree.as_ref()), settled)
}

fn chunks_of(lang: Lang, text: &str, tree: Option<&Tree>) -> Vec<Chunk> {
    let index = LineIndex::new(text);
    match tree {
        Some(tree) => syntax::chunk_tree(lang, text, tree, &index),
        None => text::chunk_plain(lang, text, &index),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error(
        "edit range {start}..{end} is outside the file ({len} bytes) or splits a character; resend the whole file"
    )]
    BadRange {
        start: usize,
        end: usize,
        len: usize,
    },
}

pub struct SourceFile {
    pub lang: Lang,
    text: String,
    tree: Option<Tree>,
    chunks: Vec<Chunk>,
    /// Set by [`SourceFile::edit_deferred`] until [`SourceFile::refresh_chunks`].
    chunks_stale: bool,
}

impl SourceFile {
    pub fn new(lang: Lang, text: String) -> SourceFile {
        let tree = parse(lang, &text, None);
        let mut file = SourceFile {
            lang,
            text,
            tree,
            chunks: Vec::new(),
            chunks_stale: false,
        };
        file.rechunk();
        file
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Chunk> {
        self.chunks
    }

    /// Replaces the whole text (a full reparse).
    pub fn replace(&mut self, text: String) {
        *self = SourceFile::new(self.lang, text);
    }

    /// Replaces bytes `start..end` with `new_text` and reparses incrementally.
    pub fn edit(&mut self, start: usize, end: usize, new_text: &str) -> Result<(), EditError> {
        self.edit_deferred(start, end, new_text)?;
        self.rechunk();
        Ok(())
    }

    /// Like [`SourceFile::edit`], but the chunks stay as they were until
    /// [`SourceFile::refresh_chunks`]: a burst of keystrokes pays for the incremental
    /// reparse only, and the next reader of the chunks for one chunk pass.
    pub fn edit_deferred(
        &mut self,
        start: usize,
        end: usize,
        new_text: &str,
    ) -> Result<(), EditError> {
        let len = self.text.len();
        if start > end
            || end > len
            || !self.text.is_char_boundary(start)
            || !self.text.is_char_boundary(end)
        {
            return Err(EditError::BadRange { start, end, len });
        }
        let start_position = point_at(&self.text, start);
        let old_end_position = point_at(&self.text, end);
        self.text.replace_range(start..end, new_text);
        let new_end = start + new_text.len();
        let new_end_position = point_at(&self.text, new_end);
        let old_tree = self.tree.as_mut().map(|tree| {
            tree.edit(&InputEdit {
                start_byte: start,
                old_end_byte: end,
                new_end_byte: new_end,
                start_position,
                old_end_position,
                new_end_position,
            });
            &*tree
        });
        // Without an old tree (the last parse ran out of time) this is a fresh parse.
        self.tree = parse(self.lang, &self.text, old_tree);
        self.chunks_stale = true;
        Ok(())
    }

    /// Brings the chunks up to date after [`SourceFile::edit_deferred`].
    pub fn refresh_chunks(&mut self) {
        if self.chunks_stale {
            self.rechunk();
        }
    }

    /// Whether [`SourceFile::chunks`] lags behind the text.
    pub fn chunks_stale(&self) -> bool {
        self.chunks_stale
    }

    fn rechunk(&mut self) {
        self.chunks_stale = false;
        self.chunks = chunks_of(self.lang, &self.text, self.tree.as_ref());
    }
}

fn point_at(text: &str, byte: usize) -> Point {
    let before = &text.as_bytes()[..byte];
    let row = before.iter().filter(|&&b| b == b'\n').count();
    let column = byte
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
    Point { row, column }
}
