//! ctxzip's chunker: turns source files into function-level chunks that tile each file.
//!
//! - [`confine`]: reading under a workspace root so no symlink or race leads outside it, and
//!   the one rule for user- and agent-given paths (outside: one error, whatever is there).
//! - [`index`]: the one workspace index of the LSP and MCP servers and the CLI: the walk,
//!   files stamped when read (a change on disk is read at the next query), open buffers over
//!   them; [`index::read_once`] for a caller that asks once (the CLI).
//! - [`lang`]: the language table (extensions, LSP ids, grammar, chunk query per language).
//! - [`role`]: what a file is for (code, tests, docs, stubs, ...), from its path.
//! - [`secrets`]: secrets by content (provider key formats, private-key blocks, generated
//!   passwords), redacted in place as every file is read.
//! - [`source`]: one file's text → chunks, with incremental reparse under edits. No IO.
//! - [`stored`]: a file's chunks as a record keyed by its text, and [`stored::ChunkStore`],
//!   where the CLI keeps them between queries (the shells pass the on-disk cache). No IO.
//! - [`workspace`]: the walk (ignore files, secret names, lock files, symlinks) and the read
//!   of one file (binaries, size caps, minified text, redaction, chunks) that the index uses.
//!   With `confine` and `index`, the only modules that touch the disk.
//!
//! Invariant: the chunks of a file are in file order and cover every line exactly once.

pub mod chunk;
pub mod confine;
pub mod index;
pub mod lang;
pub mod lines;
mod pieces;
pub mod role;
pub mod secrets;
pub mod source;
pub mod stored;
mod syntax;
mod text;
pub mod workspace;

pub use chunk::{Chunk, ChunkKind};
pub use lang::{LANGS, Lang, LangSpec};
pub use role::FileRole;
pub use source::{EditError, SourceFile, chunk_source};
pub use workspace::{FileChunks, Skipped, WalkOptions, Workspace};
