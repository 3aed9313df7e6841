//! Every language row's chunk query compiles against its grammar and captures definitions.

use std::collections::HashMap;
use std::path::Path;

use ctxzip_chunker::LANGS;
use ctxzip_chunker::lang::CompiledQuery;

#[test]
fn every_query_compiles_against_its_grammar() {
    let mut failures = Vec::new();
    for spec in LANGS.iter().filter(|spec| spec.grammar.is_some()) {
        if spec.chunk_query.trim().is_empty() {
            failures.push(format!("{}: empty chunk query", spec.name));
            continue;
        }
        let on_disk =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(spec.query_path));
        if on_disk.ok().as_deref() != Some(spec.chunk_query) {
            failures.push(format!(
                "{}: query_path {} does not hold its chunk_query",
                spec.name, spec.query_path
            ));
            continue;
        }
        match CompiledQuery::new(spec.lang) {
            Ok(compiled) => {
                if !compiled.definition_kinds.iter().any(Option::is_some) {
                    failures.push(format!("{}: no @definition.<kind> capture", spec.name));
                }
                if compiled.name_capture.is_none() {
                    failures.push(format!("{}: no @name capture", spec.name));
                }
            }
            Err(error) => failures.push(error),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn text_rows_have_no_query() {
    for spec in LANGS.iter().filter(|spec| spec.grammar.is_none()) {
        assert!(
            spec.chunk_query.is_empty() && spec.query_path.is_empty(),
            "{} has a query but no grammar",
            spec.name
        );
    }
}

#[test]
fn extensions_file_names_and_names_are_unique() {
    let mut owners: HashMap<String, &str> = HashMap::new();
    for spec in LANGS {
        let keys = spec
            .extensions
            .iter()
            .map(|ext| format!("extension .{ext}"))
            .chain(
                spec.file_names
                    .iter()
                    .map(|name| format!("file name {name}")),
            )
            .chain(std::iter::once(format!("name {}", spec.name)));
        for key in keys {
            if let Some(other) = owners.insert(key.clone(), spec.name) {
                panic!("{key} belongs to both {other} and {}", spec.name);
            }
        }
        for ext in spec.extensions {
            assert_eq!(
                *ext,
                ext.to_ascii_lowercase(),
                "{}: extensions are matched lower-cased",
                spec.name
            );
        }
    }
}

#[test]
fn every_lang_has_exactly_one_row() {
    let mut seen = HashMap::new();
    for spec in LANGS {
        assert!(
            seen.insert(spec.lang, spec.name).is_none(),
            "{:?} has two rows",
            spec.lang
        );
        assert_eq!(spec.lang.spec().name, spec.name);
    }
}

#[test]
fn captures_are_known() {
    for spec in LANGS.iter().filter(|spec| spec.grammar.is_some()) {
        let compiled = CompiledQuery::new(spec.lang).expect("compiles");
        for (index, name) in compiled.query.capture_names().iter().enumerate() {
            let known = *name == "name"
                || *name == "scope"
                || name.starts_with('_')
                || compiled.definition_kinds[index].is_some();
            assert!(
                known,
                "{}: unknown capture @{name} (use @definition.<kind>, @name, @scope, or \
                 @_anything for predicates)",
                spec.query_path
            );
        }
    }
}

/// Each pattern of each query matches somewhere in that language's fixtures, so no pattern
/// is dead and every one is covered by a snapshot. Rows that share a query (TypeScript and
/// TSX) pool their fixtures.
#[test]
fn every_pattern_matches_in_the_fixtures() {
    let test_data = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data");
    // (query text, first row's query path, which patterns matched)
    let mut matched: Vec<(&str, &str, Vec<bool>)> = Vec::new();
    for spec in LANGS.iter().filter(|spec| spec.grammar.is_some()) {
        let compiled = CompiledQuery::new(spec.lang).expect("compiles");
        let slot = match matched.iter().position(|(q, _, _)| *q == spec.chunk_query) {
            Some(slot) => slot,
            None => {
                let pattern_count = compiled.query.pattern_count();
                matched.push((
                    spec.chunk_query,
                    spec.query_path,
                    vec![false; pattern_count],
                ));
                matched.len() - 1
            }
        };
        let Ok(dir) = std::fs::read_dir(test_data.join(spec.name)) else {
            continue;
        };
        let mut parser = tree_sitter::Parser::new();
        parser
            .set_language(&spec.lang.language().expect("grammar"))
            .expect("grammar loads");
        for entry in dir {
            let path = entry.expect("readable fixture").path();
            if path.extension().is_some_and(|ext| ext == "chunks") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("fixture is UTF-8");
            let tree = parser.parse(&text, None).expect("parses");
            let mut cursor = tree_sitter::QueryCursor::new();
            let mut matches = cursor.matches(&compiled.query, tree.root_node(), text.as_bytes());
            while let Some(m) = streaming_iterator::StreamingIterator::next(&mut matches) {
                matched[slot].2[m.pattern_index] = true;
            }
        }
    }
    let mut unmatched = Vec::new();
    for (query, path, hits) in &matched {
        let compiled = LANGS
            .iter()
            .find(|spec| spec.query_path == *path)
            .map(|spec| CompiledQuery::new(spec.lang).expect("compiles"))
            .expect("row exists");
        for (index, _) in hits.iter().enumerate().filter(|(_, hit)| !**hit) {
            let start = compiled.query.start_byte_for_pattern(index);
            let line = query[..start].lines().count() + 1;
            let pattern = query[start..].lines().next().unwrap_or_default();
            unmatched.push(format!("{path}:{line}: {pattern}"));
        }
    }
    assert!(
        unmatched.is_empty(),
        "patterns that match nothing in test_data/ (add code that uses them):\n{}",
        unmatched.join("\n")
    );
}
