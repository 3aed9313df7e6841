//! Ranking across kinds of files: which roles (code, tests, docs, ...) a query asks for.
//!
//! A question put to a whole repository is answered by its code far more often than by its
//! tests, docs, stubs or changelog, yet those share the question's words (a test names the
//! behaviour, a changelog entry describes it, prose predicts prose). So the code is preferred
//! unless the query names another kind of file ("where are the tests for ...", "what does
//! the changelog say ..."): then that kind competes on equal terms.
//!
//! Whether a query asks a question at all ([`asks_question`]) is read here too: a question
//! about how code behaves is answered by a function, a doc comment or a piece of code is not
//! asked.

use std::collections::HashSet;

use ctxzip_chunker::FileRole;

/// Words (lower case, whole words) that ask for a role other than code.
const ASKS_FOR: &[(FileRole, &[&str])] = &[
    (
        FileRole::Test,
        &[
            "tests",
            "tested",
            "unittest",
            "unittests",
            "pytest",
            "specs",
            "fixture",
            "fixtures",
            "conftest",
        ],
    ),
    (
        FileRole::Doc,
        &[
            "docs",
            "documentation",
            "documented",
            "readme",
            "tutorial",
            "guide",
        ],
    ),
    (
        FileRole::Stub,
        &[
            "stub", "stubs", "pyi", "typings", "typeshed", "mypy", "pyright",
        ],
    ),
    (
        FileRole::Example,
        &["example", "examples", "sample", "samples", "demo", "demos"],
    ),
    (
        FileRole::Bench,
        &["bench", "benches", "benchmark", "benchmarks"],
    ),
    (
        FileRole::Meta,
        &[
            "changelog",
            "changelogs",
            "license",
            "licence",
            "licensing",
            "contributing",
            "contributors",
            "authors",
        ],
    ),
    (FileRole::Data, &["manifest", "pyproject", "tsconfig"]),
];

/// Phrases (lower case) that ask for a role, for what one word cannot say. A single "test"
/// or "doc" does not: "the test client", "doc comments" are about code.
const ASKS_FOR_PHRASE: &[(FileRole, &str)] = &[
    (FileRole::Test, "test suite"),
    (FileRole::Test, "test case"),
    (FileRole::Test, "test file"),
    (FileRole::Test, "unit test"),
    (FileRole::Test, "test for"),
    (FileRole::Meta, "release notes"),
    (FileRole::Meta, "security policy"),
    (FileRole::Meta, "version history"),
    (FileRole::Stub, "type hint"),
    (FileRole::Stub, "type stub"),
    (FileRole::Stub, "type definitions"),
    (FileRole::Stub, "d.ts"),
    (FileRole::Data, "package.json"),
    (FileRole::Data, "cargo.toml"),
    (FileRole::Data, "setup.cfg"),
];

/// Words of the query's opening read for the kinds of files it asks for.
const OPENING_WORDS: usize = 40;

/// The roles `query` asks for: code always, plus every role its opening names (its first
/// line, at most [`OPENING_WORDS`] words: a question, or an instruction's title). A long task
/// description's later lines name tests and docs as work to do ("add a regression test",
/// "update the docs"), not as where its answer lies.
pub fn wanted_roles(query: &str) -> HashSet<FileRole> {
    let first_line = query.trim().lines().next().unwrap_or("");
    let opening: Vec<&str> = first_line.split_whitespace().take(OPENING_WORDS).collect();
    let lower = opening.join(" ").to_lowercase();
    let words: HashSet<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut wanted = HashSet::from([FileRole::Code]);
    for (role, names) in ASKS_FOR {
        if names.iter().any(|n| words.contains(n)) {
            wanted.insert(*role);
        }
    }
    for (role, phrase) in ASKS_FOR_PHRASE {
        if lower.contains(phrase) {
            wanted.insert(*role);
        }
    }
    wanted
}

/// Words (lower case, whole words) of which a question's sentence holds at least one.
const INTERROGATIVES: &[&str] = &[
    "how", "why", "what", "where", "when", "which", "who", "whose", "whom", "does", "do", "did",
    "is", "are", "was", "were", "can", "could", "should", "would", "will", "has", "have",
];

/// Whether `query` asks a question in words: one of its sentences ends with a question mark
/// (after a word or a closing quote or bracket, before a space or the end) and holds an
/// interrogative word ("how", "why", "does", ...). Code does not ask: Kotlin's `String? {`
/// and TypeScript's `name?: string` have no such sentence, Rust's `parse()?;` no such mark.
pub fn asks_question(query: &str) -> bool {
    query.match_indices('?').any(|(at, _)| {
        let before = query[..at].chars().next_back();
        let after = query[at + 1..].chars().next();
        let ends_a_word = before.is_some_and(|c| c.is_alphanumeric() || "_\"'`)]".contains(c));
        if !ends_a_word || !after.is_none_or(char::is_whitespace) {
            return false;
        }
        // The sentence: from the end of the one before (a stop before a space, or a line
        // break); a stop inside a word (`r.text`, `1.5`) does not end one.
        let head = &query[..at];
        let start = head
            .char_indices()
            .rev()
            .find(|&(i, c)| {
                c == '\n'
                    || (matches!(c, '.' | '!' | '?')
                        && head[i + 1..]
                            .chars()
                            .next()
                            .is_some_and(char::is_whitespace))
            })
            .map_or(0, |(i, _)| i + 1);
        head[start..]
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| INTERROGATIVES.contains(&w.to_lowercase().as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::{asks_question, wanted_roles};
    use ctxzip_chunker::FileRole;

    #[test]
    fn a_query_asks_for_code_and_the_kinds_of_files_it_names() {
        let plain = wanted_roles("How are attribute validators run when an instance is created?");
        assert_eq!(plain.len(), 1);
        assert!(plain.contains(&FileRole::Code));
        let tests = wanted_roles("Where are the tests for redirect handling?");
        assert!(tests.contains(&FileRole::Test) && tests.contains(&FileRole::Code));
        assert!(wanted_roles("What do the release notes say about 2.0?").contains(&FileRole::Meta));
        assert!(wanted_roles("Is this in the README?").contains(&FileRole::Doc));
        // Code concepts that merely contain the words.
        assert_eq!(
            wanted_roles("How are doc comments attached to the definition?").len(),
            1
        );
        assert_eq!(
            wanted_roles("How does the test client keep cookies?").len(),
            1
        );
        // Whole words only: "latest" is not "test", "contest" neither.
        assert_eq!(wanted_roles("the latest contest results").len(), 1);
        // A task's later lines name tests as work to do, not as where the answer is.
        let task = "Retries ignore the backoff factor\n\nSteps...\nAdd a regression test.";
        assert_eq!(wanted_roles(task).len(), 1);
    }

    #[test]
    fn a_question_in_words_asks_and_code_or_a_doc_comment_does_not() {
        assert!(asks_question(
            "How are doc comments attached to the definition below them?"
        ));
        assert!(asks_question(
            "Why is r.text garbled when the Content-Type has no charset? I see Latin-1."
        ));
        assert!(asks_question(
            "When I subclass, in what order do fields end up in the generated __init__?"
        ));
        assert!(asks_question(
            "I pass timeout=(3, 27). Is that one value or two?"
        ));
        // A doc comment, and a question mark with no question in its sentence.
        assert!(!asks_question(
            "Returns the number of bytes read into `buf`."
        ));
        assert!(!asks_question("Parses the header. Falls back to UTF-8?"));
        // Code: nullable and optional types, the `?` operator, a regex.
        assert!(!asks_question("fun find(key: String): Any? {"));
        assert!(!asks_question(
            "function get(name?: string): Value | undefined"
        ));
        assert!(!asks_question("let n = s.parse::<u32>()?;\nOk(n)"));
        assert!(!asks_question(
            "pub fn is_match(re: &str) -> bool // (?i)is"
        ));
    }
}
