//! The chunk: the unit every later stage (scoring, selection, the servers) works on.

use std::ops::Range;

use serde::Serialize;

use crate::lang::Lang;

/// What a chunk is, as a later stage needs to know it: functions and methods are the
/// units the model ranks; headers carry a container's signature; glue is everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkKind {
    Function,
    Method,
    Class,
    Struct,
    Enum,
    Union,
    Interface,
    Trait,
    Impl,
    Module,
    Type,
    /// Top-level code between definitions (imports, constants, statements), or the part of a
    /// container between and after its members (fields, closing brace).
    Glue,
    /// A window of a file without a grammar (Markdown, TOML, YAML, unknown languages).
    Text,
}

impl ChunkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkKind::Function => "function",
            ChunkKind::Method => "method",
            ChunkKind::Class => "class",
            ChunkKind::Struct => "struct",
            ChunkKind::Enum => "enum",
            ChunkKind::Union => "union",
            ChunkKind::Interface => "interface",
            ChunkKind::Trait => "trait",
            ChunkKind::Impl => "impl",
            ChunkKind::Module => "module",
            ChunkKind::Type => "type",
            ChunkKind::Glue => "glue",
            ChunkKind::Text => "text",
        }
    }

    /// Parses the suffix of a `@definition.<kind>` query capture.
    pub fn from_capture(suffix: &str) -> Option<ChunkKind> {
        Some(match suffix {
            "function" => ChunkKind::Function,
            "method" => ChunkKind::Method,
            "class" => ChunkKind::Class,
            "struct" => ChunkKind::Struct,
            "enum" => ChunkKind::Enum,
            "union" => ChunkKind::Union,
            "interface" => ChunkKind::Interface,
            "trait" => ChunkKind::Trait,
            "impl" => ChunkKind::Impl,
            "module" => ChunkKind::Module,
            "type" => ChunkKind::Type,
            _ => return None,
        })
    }

    /// Functions and methods: the units whose body the fine stage may prune.
    pub fn is_callable(self) -> bool {
        matches!(self, ChunkKind::Function | ChunkKind::Method)
    }

    /// Definitions whose members become chunks of their own.
    pub fn is_container(self) -> bool {
        !matches!(
            self,
            ChunkKind::Function | ChunkKind::Method | ChunkKind::Glue | ChunkKind::Text
        )
    }
}

impl std::fmt::Display for ChunkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One function-level piece of a file. The chunks of a file tile it: every line belongs to
/// exactly one chunk, in file order, and `byte_range`s are contiguous.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Chunk {
    pub language: Lang,
    pub kind: ChunkKind,
    /// The defined name (`bar`), or `None` for glue and text.
    pub name: Option<String>,
    /// The name with its enclosing containers (`Foo.bar`, `Foo::bar`).
    pub qualified_name: Option<String>,
    /// Byte range in the file's text (including a leading BOM, if any).
    pub byte_range: Range<usize>,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, 1-based, inclusive.
    pub end_line: u32,
    /// The part a later stage keeps when it elides the body: attached comments, attributes
    /// and the signature, up to the body's first line. Byte range within the file.
    pub header_range: Range<usize>,
    /// Last line of `header_range`, 1-based, inclusive.
    pub header_end_line: u32,
    /// blake3 of the chunk's bytes, truncated: the key of every per-chunk cache.
    pub content_hash: u64,
}

impl Chunk {
    pub fn text<'a>(&self, file_text: &'a str) -> &'a str {
        &file_text[self.byte_range.clone()]
    }

    pub fn n_lines(&self) -> u32 {
        self.end_line - self.start_line + 1
    }

    /// `name`, or for glue a short description of where it is.
    pub fn display_name(&self) -> &str {
        self.qualified_name
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or("-")
    }
}

pub fn content_hash(bytes: &[u8]) -> u64 {
    let hash = blake3::hash(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}
