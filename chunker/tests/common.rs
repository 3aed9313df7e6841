//! Helpers shared by the chunker's integration tests.

use ctxzip_chunker::Chunk;

/// Asserts the chunker's invariant: chunks in order, contiguous, covering every line and
/// every byte of `text` exactly once.
pub fn assert_tiles(path: &str, text: &str, chunks: &[Chunk]) {
    let n_lines = text.lines().count() as u32;
    if text.is_empty() {
        assert!(chunks.is_empty(), "{path}: empty file has chunks");
        return;
    }
    assert!(!chunks.is_empty(), "{path}: no chunks");
    assert_eq!(chunks[0].start_line, 1, "{path}: first chunk starts late");
    assert_eq!(
        chunks[0].byte_range.start, 0,
        "{path}: first byte uncovered"
    );
    for pair in chunks.windows(2) {
        assert_eq!(
            pair[0].end_line + 1,
            pair[1].start_line,
            "{path}: lines not contiguous between {:?} and {:?}",
            pair[0],
            pair[1]
        );
        assert_eq!(
            pair[0].byte_range.end, pair[1].byte_range.start,
            "{path}: bytes"
        );
    }
    for chunk in chunks {
        assert!(chunk.start_line <= chunk.end_line, "{path}: {chunk:?}");
        assert!(
            chunk.header_range.start == chunk.byte_range.start
                && chunk.header_range.end <= chunk.byte_range.end,
            "{path}: header outside chunk {chunk:?}"
        );
    }
    let last = chunks.last().unwrap();
    assert_eq!(last.end_line, n_lines, "{path}: last line uncovered");
    assert_eq!(
        last.byte_range.end,
        text.len(),
        "{path}: last byte uncovered"
    );
}
