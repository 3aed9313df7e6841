//! Ranking across kinds of files: which roles (code, tests, docs, ...) a query asks for.
//!
//! A question put to a whole repository is answered by its code far more often than by its
//! tests, docs, stubs or changelog, yet those share the question's words (a test names the
//! behaviour, a changelog entry describes it, prose predicts prose). So the code is preferred
//! unless the query names another kind of file ("where are the tests for ...", "what does
//! the changelog say ..."): then that kind competes on equal terms.

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

#[cfg(test)]
mod tests {
    use super::wanted_roles;
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
}
