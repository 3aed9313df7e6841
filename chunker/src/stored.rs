//! A file's chunks as a stored record, so that a caller that asks once (the CLI) need not
//! parse and chunk an unchanged file again: the key of a file's chunks, the record format,
//! and [`ChunkStore`], the interface of whatever keeps the records (the shells pass the one
//! on-disk cache of `ctxzip-scoring`). No IO here.
//!
//! The key is a hash of everything a file's chunks depend on: the text as chunked (after
//! redaction, so a secret changes the key only through the text ctxzip shows), the language,
//! and [`chunker_fingerprint`] (this crate's version, the source of every module that chunks,
//! each language's chunk query and grammar shape, and the record format). The file's path
//! and stamp are not part of it: the text must be read anyway (every later stage shows it),
//! and a key by content is never stale, however the file changed and whatever its clock says;
//! a file copied or moved, or the same file in two checkouts, shares one record.
//!
//! A record is checked again when it is decoded: every range must lie inside the text, on
//! character boundaries; one that does not is treated as absent, so its file is chunked
//! again and its record replaced.

use std::sync::OnceLock;

use crate::chunk::{Chunk, ChunkKind};
use crate::lang::{LANGS, Lang};

/// Bytes of a [`FileKey`]: 128 bits of blake3, so that two different texts never meet.
pub const FILE_KEY_BYTES: usize = 16;

/// The key of one file's chunks ([`file_key`]).
pub type FileKey = [u8; FILE_KEY_BYTES];

/// Bumped whenever the layout of an encoded record changes.
const RECORD_FORMAT: u8 = 1;

/// Where records of files' chunks are kept. Implemented by the shells' disk cache; a store
/// that fails answers "not stored" and drops what it is given, since the chunks can always
/// be made again.
pub trait ChunkStore: Send + Sync {
    /// The records stored under `keys`, in the same order; `None` for a key not stored (or
    /// whose record was found damaged and dropped).
    fn get_many(&self, keys: &[FileKey]) -> Vec<Option<Vec<u8>>>;
    /// Stores records; a record already stored under its key is replaced.
    fn put_many(&self, records: &[(FileKey, Vec<u8>)]);
}

/// What a file's chunks are a function of, as a hash: the crate version, the source of the
/// modules that turn text into chunks (so any change to how chunks are made changes every
/// key, released or not), and for each language its chunk query and its grammar's shape
/// (ABI version and counts of node kinds, fields and parse states, which a new grammar
/// version changes). Computed once per process.
pub fn chunker_fingerprint() -> &'static [u8; 32] {
    static FINGERPRINT: OnceLock<[u8; 32]> = OnceLock::new();
    FINGERPRINT.get_or_init(|| {
        let mut hasher = blake3::Hasher::new();
        let mut part = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        part(b"ctxzip-chunker");
        part(env!("CARGO_PKG_VERSION").as_bytes());
        part(&[RECORD_FORMAT]);
        part(&tree_sitter::LANGUAGE_VERSION.to_le_bytes());
        for source in CHUNKING_SOURCES {
            part(source.as_bytes());
        }
        for spec in LANGS {
            part(spec.name.as_bytes());
            part(spec.chunk_query.as_bytes());
            if let Some(language) = spec.lang.language() {
                part(&(language.abi_version() as u64).to_le_bytes());
                part(&(language.node_kind_count() as u64).to_le_bytes());
                part(&(language.field_count() as u64).to_le_bytes());
                part(&(language.parse_state_count() as u64).to_le_bytes());
            }
        }
        *hasher.finalize().as_bytes()
    })
}

/// The modules whose code decides a file's chunks, given its text and language.
const CHUNKING_SOURCES: &[&str] = &[
    include_str!("chunk.rs"),
    include_str!("lang.rs"),
    include_str!("lines.rs"),
    include_str!("pieces.rs"),
    include_str!("source.rs"),
    include_str!("stored.rs"),
    include_str!("syntax.rs"),
    include_str!("text.rs"),
];

/// The key of the chunks of `text` as a file of `lang`.
pub fn file_key(lang: Lang, text: &str) -> FileKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(chunker_fingerprint());
    let name = lang.name().as_bytes();
    hasher.update(&(name.len() as u64).to_le_bytes());
    hasher.update(name);
    hasher.update(text.as_bytes());
    let mut key = [0u8; FILE_KEY_BYTES];
    key.copy_from_slice(&hasher.finalize().as_bytes()[..FILE_KEY_BYTES]);
    key
}

/// Every kind, in the order of its byte in a record.
const KINDS: [ChunkKind; 13] = [
    ChunkKind::Function,
    ChunkKind::Method,
    ChunkKind::Class,
    ChunkKind::Struct,
    ChunkKind::Enum,
    ChunkKind::Union,
    ChunkKind::Interface,
    ChunkKind::Trait,
    ChunkKind::Impl,
    ChunkKind::Module,
    ChunkKind::Type,
    ChunkKind::Glue,
    ChunkKind::Text,
];

/// A file's chunks as a record: the format byte, the chunk count, then per chunk its kind,
/// names, ranges, lines and content hash (integers as LEB128 varints). The language is not
/// in it (the key holds it) and no text is: names are the only words of the file it holds.
pub fn encode(chunks: &[Chunk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + chunks.len() * 48);
    out.push(RECORD_FORMAT);
    put_varint(&mut out, chunks.len() as u64);
    for chunk in chunks {
        let kind = KINDS.iter().position(|k| *k == chunk.kind).unwrap_or(0);
        out.push(kind as u8);
        put_name(&mut out, chunk.name.as_deref());
        put_name(&mut out, chunk.qualified_name.as_deref());
        for value in [
            chunk.byte_range.start,
            chunk.byte_range.end,
            chunk.header_range.start,
            chunk.header_range.end,
        ] {
            put_varint(&mut out, value as u64);
        }
        for value in [chunk.start_line, chunk.end_line, chunk.header_end_line] {
            put_varint(&mut out, u64::from(value));
        }
        out.extend_from_slice(&chunk.content_hash.to_le_bytes());
    }
    out
}

/// The chunks a record holds for `text` as a file of `lang`, or `None` when the record is not
/// one [`encode`] wrote for this text (another format, truncated, a range outside the text or
/// inside a character, lines out of order).
pub fn decode(record: &[u8], lang: Lang, text: &str) -> Option<Vec<Chunk>> {
    let mut reader = Reader { bytes: record };
    if reader.byte()? != RECORD_FORMAT {
        return None;
    }
    let count = usize::try_from(reader.varint()?).ok()?;
    // Each chunk takes at least 18 bytes: a bound that keeps a damaged count from allocating.
    if count > record.len() / 18 {
        return None;
    }
    let mut chunks = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = *KINDS.get(usize::from(reader.byte()?))?;
        let name = reader.name()?;
        let qualified_name = reader.name()?;
        let mut offset = || {
            let value = usize::try_from(reader.varint()?).ok()?;
            text.is_char_boundary(value).then_some(value)
        };
        let byte_range = offset()?..offset()?;
        let header_range = offset()?..offset()?;
        if byte_range.start > byte_range.end || header_range.start > header_range.end {
            return None;
        }
        let mut line = || u32::try_from(reader.varint()?).ok();
        let (start_line, end_line, header_end_line) = (line()?, line()?, line()?);
        if start_line == 0 || start_line > end_line {
            return None;
        }
        let content_hash = u64::from_le_bytes(reader.take(8)?.try_into().ok()?);
        chunks.push(Chunk {
            language: lang,
            kind,
            name,
            qualified_name,
            byte_range,
            start_line,
            end_line,
            header_range,
            header_end_line,
            content_hash,
        });
    }
    reader.bytes.is_empty().then_some(chunks)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A name as its length + 1 (0 for none), then its bytes.
fn put_name(out: &mut Vec<u8>, name: Option<&str>) {
    match name {
        None => put_varint(out, 0),
        Some(name) => {
            put_varint(out, name.len() as u64 + 1);
            out.extend_from_slice(name.as_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn name(&mut self) -> Option<Option<String>> {
        match usize::try_from(self.varint()?).ok()? {
            0 => Some(None),
            len => {
                let bytes = self.take(len - 1)?;
                Some(Some(std::str::from_utf8(bytes).ok()?.to_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_source;

    const RUST: &str = "//! Doc.\n\nuse std::fmt;\n\n/// A point.\npub struct Point {\n    x: i32,\n}\n\nimpl Point {\n    /// Makes one.\n    pub fn new(x: i32) -> Self {\n        Point { x }\n    }\n}\n";

    #[test]
    fn a_record_gives_back_the_chunks_it_was_made_from() {
        for (lang, text) in [
            (Lang::Rust, RUST),
            (
                Lang::Python,
                "import os\n\nclass App:\n    def run(self):\n        return os.getcwd()\n",
            ),
            (
                Lang::Markdown,
                "# Title\n\nSome words.\n\n## More\n\nMore words.\n",
            ),
            (Lang::Rust, ""),
        ] {
            let chunks = chunk_source(lang, text);
            let record = encode(&chunks);
            assert_eq!(decode(&record, lang, text), Some(chunks), "{lang:?}");
        }
    }

    #[test]
    fn a_record_that_does_not_fit_the_text_is_refused() {
        let chunks = chunk_source(Lang::Rust, RUST);
        assert!(chunks.len() > 3);
        let record = encode(&chunks);
        // Any cut is refused, never read as fewer chunks.
        for len in 0..record.len() {
            assert_eq!(
                decode(&record[..len], Lang::Rust, RUST),
                None,
                "cut at {len}"
            );
        }
        // Ranges past the end of a shorter text.
        assert_eq!(decode(&record, Lang::Rust, &RUST[..20]), None);
        // The same length, but the first chunk's end falls inside a two-byte character.
        let end = chunks[0].byte_range.end;
        let split = format!("{}é{}", &RUST[..end - 1], &RUST[end + 1..]);
        assert_eq!(split.len(), RUST.len());
        assert_eq!(decode(&record, Lang::Rust, &split), None);
        // Another format.
        let mut other = record.clone();
        other[0] = RECORD_FORMAT + 1;
        assert_eq!(decode(&other, Lang::Rust, RUST), None);
    }

    #[test]
    fn the_key_changes_with_the_text_and_the_language() {
        let key = file_key(Lang::Rust, RUST);
        assert_eq!(key, file_key(Lang::Rust, RUST));
        assert_ne!(key, file_key(Lang::Rust, &RUST.replace("Point", "Place")));
        assert_ne!(key, file_key(Lang::Text, RUST));
    }
}
