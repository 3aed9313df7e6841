//! The fixture corpus: each `test_data/<lang>/<case>.<ext>` is chunked and compared with the
//! listing beside it in `<case>.<ext>.chunks`, one line per chunk:
//! `kind qualified_name start..end (header ..line)`. `UPDATE_EXPECT=1 cargo test -p
//! ctxzip-chunker --test fixtures` rewrites the listings; read the diff before committing it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ctxzip_chunker::{Chunk, LANGS, Lang, chunk_source};

fn test_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data")
}

/// Every source file under `test_data/`, sorted, with the language its directory names.
fn fixtures() -> Vec<(Lang, PathBuf)> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(test_data())
        .expect("test_data/ exists")
        .map(|entry| entry.expect("readable test_data entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let lang = LANGS
            .iter()
            .find(|spec| spec.name == dir_name)
            .unwrap_or_else(|| panic!("test_data/{dir_name}/ is not named after a language"))
            .lang;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("readable fixture directory")
            .map(|entry| entry.expect("readable fixture").path())
            .filter(|path| path.extension().is_none_or(|ext| ext != "chunks"))
            .collect();
        files.sort();
        found.extend(files.into_iter().map(|path| (lang, path)));
    }
    found
}

fn render(chunks: &[Chunk]) -> String {
    let mut out = String::new();
    for chunk in chunks {
        write!(
            out,
            "{} {} {}..{}",
            chunk.kind,
            chunk.display_name(),
            chunk.start_line,
            chunk.end_line
        )
        .unwrap();
        if chunk.kind.is_callable() || chunk.kind.is_container() {
            write!(out, " (header ..{})", chunk.header_end_line).unwrap();
        }
        out.push('\n');
    }
    out
}

/// The chunks tile the file: contiguous lines from the first to the last, contiguous bytes
/// from the start to the end, headers inside their chunk, names found in their chunk.
fn check_coverage(path: &Path, text: &str, chunks: &[Chunk]) {
    let shown = path.display();
    let n_lines = text.lines().count() as u32;
    assert!(!chunks.is_empty(), "{shown}: no chunks");
    assert_eq!(chunks[0].start_line, 1, "{shown}: first chunk");
    assert_eq!(
        chunks[0].byte_range.start, 0,
        "{shown}: first chunk's bytes"
    );
    let last = chunks.last().unwrap();
    assert_eq!(last.end_line, n_lines, "{shown}: last chunk");
    assert_eq!(
        last.byte_range.end,
        text.len(),
        "{shown}: last chunk's bytes"
    );
    for pair in chunks.windows(2) {
        assert_eq!(
            pair[0].end_line + 1,
            pair[1].start_line,
            "{shown}: lines of {pair:#?}"
        );
        assert_eq!(
            pair[0].byte_range.end, pair[1].byte_range.start,
            "{shown}: bytes of {pair:#?}"
        );
    }
    for chunk in chunks {
        assert!(chunk.start_line <= chunk.end_line, "{shown}: {chunk:#?}");
        let header = &chunk.header_range;
        assert!(
            header.start >= chunk.byte_range.start && header.end <= chunk.byte_range.end,
            "{shown}: header outside chunk {chunk:#?}"
        );
        if let Some(name) = &chunk.name {
            assert!(
                chunk.text(text).contains(name.as_str()),
                "{shown}: {name} is not in its chunk {chunk:#?}"
            );
        }
    }
}

#[test]
fn fixtures_match_their_listings() {
    let fixtures = fixtures();
    assert!(!fixtures.is_empty(), "no fixtures under test_data/");
    for (lang, path) in fixtures {
        assert_eq!(
            Lang::from_path(&path),
            lang,
            "{} is not recognised as {}",
            path.display(),
            lang.name()
        );
        let text = std::fs::read_to_string(&path).expect("fixture is UTF-8");
        let chunks = chunk_source(lang, &text);
        check_coverage(&path, &text, &chunks);
        let mut listing = path.clone().into_os_string();
        listing.push(".chunks");
        expect_test::expect_file![listing].assert_eq(&render(&chunks));
    }
}

#[test]
fn every_grammar_has_a_fixture() {
    let covered: Vec<Lang> = fixtures().into_iter().map(|(lang, _)| lang).collect();
    for spec in LANGS.iter().filter(|spec| spec.grammar.is_some()) {
        assert!(
            covered.contains(&spec.lang),
            "{} has no fixture in test_data/{}/",
            spec.name,
            spec.name
        );
    }
}
