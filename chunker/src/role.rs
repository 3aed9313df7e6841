//! What a file is for, read from its path alone: the code itself, its tests, its docs, type
//! stubs, examples, benchmarks, project records (changelogs, licences) or data and config;
//! and what a chunk is for, which differs from its file's role for tests kept inside code
//! files (Rust's `mod tests`). Later stages rank across kinds of files with it; nothing here
//! reads the disk.

use serde::Serialize;

use crate::lang::Lang;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileRole {
    /// The implementation: everything not recognised as one of the others.
    Code,
    /// Tests, their fixtures and test data.
    Test,
    /// Prose: Markdown, reStructuredText and plain text, and anything under a docs folder.
    Doc,
    /// Type declarations beside an implementation: `.pyi`, `.d.ts`.
    Stub,
    /// Examples, samples and demos.
    Example,
    /// Benchmarks.
    Bench,
    /// Records about the project rather than of it: changelogs, licences, policies, authors.
    Meta,
    /// Data and configuration without a grammar: JSON, YAML, TOML.
    Data,
}

impl FileRole {
    pub fn as_str(self) -> &'static str {
        match self {
            FileRole::Code => "code",
            FileRole::Test => "test",
            FileRole::Doc => "doc",
            FileRole::Stub => "stub",
            FileRole::Example => "example",
            FileRole::Bench => "bench",
            FileRole::Meta => "meta",
            FileRole::Data => "data",
        }
    }

    /// The role of a workspace-relative path (`/`-separated) in language `lang`.
    pub fn of(path: &str, lang: Lang) -> FileRole {
        let lower = path.to_ascii_lowercase();
        let mut segments: Vec<&str> = lower.split('/').filter(|s| !s.is_empty()).collect();
        let file = segments.pop().unwrap_or("");
        let in_dir = |names: &[&str]| segments.iter().any(|s| names.contains(s));
        if in_dir(TEST_DIRS) || is_test_file(file) {
            return FileRole::Test;
        }
        if in_dir(BENCH_DIRS) {
            return FileRole::Bench;
        }
        if in_dir(EXAMPLE_DIRS) {
            return FileRole::Example;
        }
        let stem = file.split('.').next().unwrap_or(file);
        if META_STEMS.contains(&stem) {
            return FileRole::Meta;
        }
        if in_dir(DOC_DIRS) || matches!(lang, Lang::Markdown | Lang::Text) {
            return FileRole::Doc;
        }
        if [".pyi", ".d.ts", ".d.mts", ".d.cts"]
            .iter()
            .any(|ext| file.ends_with(ext))
        {
            return FileRole::Stub;
        }
        if matches!(lang, Lang::Json | Lang::Yaml | Lang::Toml) {
            return FileRole::Data;
        }
        FileRole::Code
    }
}

impl FileRole {
    /// The role of a chunk named `qualified_name` in a file whose role is `self`
    /// ([`FileRole::of`] its path, once per file): its file's role, but [`FileRole::Test`] for
    /// a chunk inside a Rust test module (`tests::...`, `...::tests::...`), which is a test
    /// however much it restates the code's words.
    pub fn for_chunk(self, lang: Lang, qualified_name: Option<&str>) -> FileRole {
        let in_test_module = |name: &str| name.starts_with("tests::") || name.contains("::tests::");
        if self == FileRole::Code
            && lang == Lang::Rust
            && qualified_name.is_some_and(in_test_module)
        {
            return FileRole::Test;
        }
        self
    }
}

impl std::fmt::Display for FileRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const TEST_DIRS: &[&str] = &[
    "test",
    "tests",
    "__tests__",
    "__snapshots__",
    "__mocks__",
    "spec",
    "specs",
    "testdata",
    "test_data",
    "test-data",
    "fixtures",
    "e2e",
];
const BENCH_DIRS: &[&str] = &["bench", "benches", "benchmark", "benchmarks"];
const EXAMPLE_DIRS: &[&str] = &["example", "examples", "sample", "samples", "demo", "demos"];
const DOC_DIRS: &[&str] = &["doc", "docs", "documentation", "man"];
/// File stems (lower case, up to the first dot) of project records.
const META_STEMS: &[&str] = &[
    "changelog",
    "changes",
    "history",
    "news",
    "releases",
    "release-notes",
    "release_notes",
    "security",
    "contributing",
    "authors",
    "contributors",
    "code_of_conduct",
    "code-of-conduct",
    "license",
    "licence",
    "license-mit",
    "license-apache",
    "copying",
    "notice",
    "maintainers",
    "support",
    "funding",
];

/// Test files by name: `test_x.py`, `x_test.go`, `x.test.ts`, `x.spec.js`, `XTest.java`,
/// `conftest.py`.
fn is_test_file(file: &str) -> bool {
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    file == "conftest.py"
        || stem.starts_with("test_")
        || stem.ends_with("_test")
        || stem.ends_with("_tests")
        || stem.ends_with("_spec")
        || stem.ends_with(".test")
        || stem.ends_with(".spec")
        || stem.ends_with("test") && file.ends_with(".java")
        || stem.ends_with("tests") && (file.ends_with(".java") || file.ends_with(".cs"))
}

#[cfg(test)]
mod tests {
    use super::FileRole;
    use crate::lang::Lang;
    use std::path::Path;

    #[test]
    fn a_rust_test_module_inside_code_is_a_test() {
        let role = |name| FileRole::of("src/ast/parse.rs", Lang::Rust).for_chunk(Lang::Rust, name);
        assert_eq!(role(Some("tests::parse_nest_limit")), FileRole::Test);
        assert_eq!(role(Some("ast::tests::parse_nest_limit")), FileRole::Test);
        assert_eq!(role(Some("ParserI::parse_group")), FileRole::Code);
        assert_eq!(role(Some("contests::rank")), FileRole::Code);
        assert_eq!(role(None), FileRole::Code);
        // Only Rust keeps tests in a module of the code file by convention.
        assert_eq!(
            FileRole::of("lib/helpers.py", Lang::Python).for_chunk(Lang::Python, Some("tests::x")),
            FileRole::Code
        );
    }

    fn role(path: &str) -> FileRole {
        FileRole::of(path, Lang::from_path(Path::new(path)))
    }

    #[test]
    fn roles_come_from_folders_names_and_languages() {
        let cases = [
            ("src/requests/sessions.py", FileRole::Code),
            ("src/click/testing.py", FileRole::Code),
            ("tests/test_sessions.py", FileRole::Test),
            ("src/attr/__init__.pyi", FileRole::Stub),
            ("types/index.d.ts", FileRole::Stub),
            ("test/app.router.js", FileRole::Test),
            ("lib/router/index.js", FileRole::Code),
            ("src/__tests__/string.test.ts", FileRole::Test),
            ("src/parse.spec.ts", FileRole::Test),
            ("pkg/server_test.go", FileRole::Test),
            ("tests/data/valid/string.toml", FileRole::Test),
            ("docs/api.rst", FileRole::Doc),
            ("docs/conf.py", FileRole::Doc),
            ("README.md", FileRole::Doc),
            ("CHANGELOG.md", FileRole::Meta),
            ("History.md", FileRole::Meta),
            ("SECURITY.md", FileRole::Meta),
            ("LICENSE", FileRole::Meta),
            ("examples/tutorial/app.py", FileRole::Example),
            ("benches/parse.rs", FileRole::Bench),
            ("pyproject.toml", FileRole::Data),
            ("package.json", FileRole::Data),
            ("src/latest.rs", FileRole::Code),
            ("src/contest.py", FileRole::Code),
        ];
        for (path, expected) in cases {
            assert_eq!(role(path), expected, "{path}");
        }
    }
}
