//! Every language row's chunk query compiles against its grammar and captures definitions.

use std::collections::HashMap;

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
            spec.chunk_query.is_empty(),
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
