//! Languages as data: one row per language in [`LANGS`], and how a path maps to a row.
//!
//! Adding a language is a grammar dependency, a [`Lang`] variant, a row in [`LANGS`], a
//! `queries/<lang>/chunks.scm` file and a fixture in `test_data/<lang>/`.

use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;
use tree_sitter::{Language, Query};
use tree_sitter_language::LanguageFn;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
    C,
    Cpp,
    CSharp,
    Ruby,
    Php,
    Kotlin,
    Swift,
    Scala,
    Lua,
    Bash,
    // Languages without a grammar here: chunked into paragraph windows.
    Markdown,
    Toml,
    Yaml,
    Json,
    Text,
}

/// One language: how to recognise its files and how to chunk them.
pub struct LangSpec {
    pub lang: Lang,
    /// The name used on the command line (`--lang`) and in JSON output.
    pub name: &'static str,
    pub extensions: &'static [&'static str],
    /// Whole file names (`Rakefile`, `Gemfile`) recognised regardless of extension.
    pub file_names: &'static [&'static str],
    /// LSP `languageId`s that map to this language.
    pub lsp_ids: &'static [&'static str],
    /// `None` for languages chunked as text.
    pub grammar: Option<LanguageFn>,
    /// A tags-style query: `@definition.<kind>` on a definition node, `@name` on its name,
    /// and optionally `@scope` on the type a definition written outside it belongs to (a Go
    /// receiver, C++ `Foo::` or Lua `M:`). Where two patterns match one node, the earlier wins.
    pub chunk_query: &'static str,
    /// Where `chunk_query` comes from, relative to the chunker crate (for error messages).
    pub query_path: &'static str,
    /// Separator of qualified names (`Foo::bar` or `Foo.bar`).
    pub qualifier: &'static str,
    /// Node kinds that belong to the definition that follows them (comments, attributes,
    /// decorators, annotations) when no blank line separates them.
    pub attached_kinds: &'static [&'static str],
    /// Node kinds that wrap a definition and belong to it (`decorated_definition`,
    /// `export_statement`, `template_declaration`).
    pub wrapper_kinds: &'static [&'static str],
    /// The line-comment prefix used to mark elided code.
    pub line_comment: &'static str,
}

macro_rules! query {
    ($lang:literal) => {
        include_str!(concat!("../queries/", $lang, "/chunks.scm"))
    };
}

pub static LANGS: &[LangSpec] = &[
    LangSpec {
        lang: Lang::Rust,
        name: "rust",
        extensions: &["rs"],
        file_names: &[],
        lsp_ids: &["rust"],
        grammar: Some(tree_sitter_rust::LANGUAGE),
        chunk_query: query!("rust"),
        query_path: "queries/rust/chunks.scm",
        qualifier: "::",
        attached_kinds: &["line_comment", "block_comment", "attribute_item"],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Python,
        name: "python",
        extensions: &["py", "pyi", "pyw"],
        file_names: &[],
        lsp_ids: &["python"],
        grammar: Some(tree_sitter_python::LANGUAGE),
        chunk_query: query!("python"),
        query_path: "queries/python/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment"],
        wrapper_kinds: &["decorated_definition"],
        line_comment: "#",
    },
    LangSpec {
        lang: Lang::JavaScript,
        name: "javascript",
        extensions: &["js", "mjs", "cjs", "jsx"],
        file_names: &[],
        lsp_ids: &["javascript", "javascriptreact"],
        grammar: Some(tree_sitter_javascript::LANGUAGE),
        chunk_query: query!("javascript"),
        query_path: "queries/javascript/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment", "decorator"],
        wrapper_kinds: &["export_statement"],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::TypeScript,
        name: "typescript",
        extensions: &["ts", "mts", "cts"],
        file_names: &[],
        lsp_ids: &["typescript"],
        grammar: Some(tree_sitter_typescript::LANGUAGE_TYPESCRIPT),
        chunk_query: query!("typescript"),
        query_path: "queries/typescript/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment", "decorator"],
        wrapper_kinds: &["export_statement"],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Tsx,
        name: "tsx",
        extensions: &["tsx"],
        file_names: &[],
        lsp_ids: &["typescriptreact"],
        grammar: Some(tree_sitter_typescript::LANGUAGE_TSX),
        chunk_query: query!("typescript"),
        query_path: "queries/typescript/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment", "decorator"],
        wrapper_kinds: &["export_statement"],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Go,
        name: "go",
        extensions: &["go"],
        file_names: &[],
        lsp_ids: &["go"],
        grammar: Some(tree_sitter_go::LANGUAGE),
        chunk_query: query!("go"),
        query_path: "queries/go/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment"],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Java,
        name: "java",
        extensions: &["java"],
        file_names: &[],
        lsp_ids: &["java"],
        grammar: Some(tree_sitter_java::LANGUAGE),
        chunk_query: query!("java"),
        query_path: "queries/java/chunks.scm",
        qualifier: ".",
        attached_kinds: &["line_comment", "block_comment"],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::C,
        name: "c",
        extensions: &["c", "h"],
        file_names: &[],
        lsp_ids: &["c"],
        grammar: Some(tree_sitter_c::LANGUAGE),
        chunk_query: query!("c"),
        query_path: "queries/c/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment"],
        wrapper_kinds: &["declaration", "type_definition"],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Cpp,
        name: "cpp",
        extensions: &[
            "cc", "cpp", "cxx", "c++", "hh", "hpp", "hxx", "h++", "inl", "ipp", "tpp",
        ],
        file_names: &[],
        lsp_ids: &["cpp"],
        grammar: Some(tree_sitter_cpp::LANGUAGE),
        chunk_query: query!("cpp"),
        query_path: "queries/cpp/chunks.scm",
        qualifier: "::",
        attached_kinds: &["comment", "attribute_declaration"],
        wrapper_kinds: &[
            "template_declaration",
            "declaration",
            "type_definition",
            "linkage_specification",
        ],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::CSharp,
        name: "csharp",
        extensions: &["cs", "csx"],
        file_names: &[],
        lsp_ids: &["csharp"],
        grammar: Some(tree_sitter_c_sharp::LANGUAGE),
        chunk_query: query!("csharp"),
        query_path: "queries/csharp/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment"],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Ruby,
        name: "ruby",
        extensions: &["rb", "rake", "gemspec", "ru", "rbw"],
        file_names: &[
            "Rakefile",
            "Gemfile",
            "Guardfile",
            "Vagrantfile",
            "Podfile",
            "Fastfile",
        ],
        lsp_ids: &["ruby"],
        grammar: Some(tree_sitter_ruby::LANGUAGE),
        chunk_query: query!("ruby"),
        query_path: "queries/ruby/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment"],
        wrapper_kinds: &[],
        line_comment: "#",
    },
    LangSpec {
        lang: Lang::Php,
        name: "php",
        extensions: &["php", "phtml"],
        file_names: &[],
        lsp_ids: &["php"],
        grammar: Some(tree_sitter_php::LANGUAGE_PHP),
        chunk_query: query!("php"),
        query_path: "queries/php/chunks.scm",
        qualifier: "::",
        attached_kinds: &["comment"],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Kotlin,
        name: "kotlin",
        extensions: &["kt", "kts"],
        file_names: &[],
        lsp_ids: &["kotlin"],
        grammar: Some(tree_sitter_kotlin_ng::LANGUAGE),
        chunk_query: query!("kotlin"),
        query_path: "queries/kotlin/chunks.scm",
        qualifier: ".",
        attached_kinds: &["line_comment", "block_comment"],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Swift,
        name: "swift",
        extensions: &["swift"],
        file_names: &[],
        lsp_ids: &["swift"],
        grammar: Some(tree_sitter_swift::LANGUAGE),
        chunk_query: query!("swift"),
        query_path: "queries/swift/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment", "multiline_comment"],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Scala,
        name: "scala",
        extensions: &["scala", "sc", "sbt"],
        file_names: &[],
        lsp_ids: &["scala"],
        grammar: Some(tree_sitter_scala::LANGUAGE),
        chunk_query: query!("scala"),
        query_path: "queries/scala/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment", "block_comment"],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Lua,
        name: "lua",
        extensions: &["lua"],
        file_names: &[],
        lsp_ids: &["lua"],
        grammar: Some(tree_sitter_lua::LANGUAGE),
        chunk_query: query!("lua"),
        query_path: "queries/lua/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment"],
        wrapper_kinds: &["variable_declaration"],
        line_comment: "--",
    },
    LangSpec {
        lang: Lang::Bash,
        name: "bash",
        extensions: &["sh", "bash"],
        file_names: &[".bashrc", ".bash_profile", "PKGBUILD"],
        lsp_ids: &["shellscript", "bash", "sh"],
        grammar: Some(tree_sitter_bash::LANGUAGE),
        chunk_query: query!("bash"),
        query_path: "queries/bash/chunks.scm",
        qualifier: ".",
        attached_kinds: &["comment"],
        wrapper_kinds: &[],
        line_comment: "#",
    },
    LangSpec {
        lang: Lang::Markdown,
        name: "markdown",
        extensions: &["md", "markdown", "mdx", "rst"],
        file_names: &[],
        lsp_ids: &["markdown"],
        grammar: None,
        chunk_query: "",
        query_path: "",
        qualifier: ".",
        attached_kinds: &[],
        wrapper_kinds: &[],
        line_comment: "<!-- ... -->",
    },
    LangSpec {
        lang: Lang::Toml,
        name: "toml",
        extensions: &["toml"],
        file_names: &[],
        lsp_ids: &["toml"],
        grammar: None,
        chunk_query: "",
        query_path: "",
        qualifier: ".",
        attached_kinds: &[],
        wrapper_kinds: &[],
        line_comment: "#",
    },
    LangSpec {
        lang: Lang::Yaml,
        name: "yaml",
        extensions: &["yaml", "yml"],
        file_names: &[],
        lsp_ids: &["yaml"],
        grammar: None,
        chunk_query: "",
        query_path: "",
        qualifier: ".",
        attached_kinds: &[],
        wrapper_kinds: &[],
        line_comment: "#",
    },
    LangSpec {
        lang: Lang::Json,
        name: "json",
        extensions: &["json", "jsonc"],
        file_names: &[],
        lsp_ids: &["json", "jsonc"],
        grammar: None,
        chunk_query: "",
        query_path: "",
        qualifier: ".",
        attached_kinds: &[],
        wrapper_kinds: &[],
        line_comment: "//",
    },
    LangSpec {
        lang: Lang::Text,
        name: "text",
        extensions: &["txt"],
        file_names: &[],
        lsp_ids: &["plaintext"],
        grammar: None,
        chunk_query: "",
        query_path: "",
        qualifier: ".",
        attached_kinds: &[],
        wrapper_kinds: &[],
        line_comment: "#",
    },
];

impl Lang {
    pub fn spec(self) -> &'static LangSpec {
        LANGS
            .iter()
            .find(|spec| spec.lang == self)
            .expect("every Lang has a row in LANGS")
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Finds a language by its `name` or one of its LSP ids or extensions.
    pub fn from_name(name: &str) -> Option<Lang> {
        let name = name.to_ascii_lowercase();
        LANGS
            .iter()
            .find(|spec| {
                spec.name == name
                    || spec.lsp_ids.contains(&name.as_str())
                    || spec.extensions.contains(&name.as_str())
            })
            .map(|spec| spec.lang)
    }

    pub fn from_lsp_id(id: &str) -> Option<Lang> {
        LANGS
            .iter()
            .find(|spec| spec.lsp_ids.contains(&id))
            .map(|spec| spec.lang)
    }

    /// The language of a path by file name, then extension; `Text` when unknown.
    pub fn from_path(path: &Path) -> Lang {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(spec) = LANGS.iter().find(|s| s.file_names.contains(&file_name)) {
            return spec.lang;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        ext.and_then(|ext| {
            LANGS
                .iter()
                .find(|s| s.extensions.contains(&ext.as_str()))
                .map(|s| s.lang)
        })
        .unwrap_or(Lang::Text)
    }

    pub fn has_grammar(self) -> bool {
        self.spec().grammar.is_some()
    }

    pub fn language(self) -> Option<Language> {
        self.spec().grammar.map(Language::new)
    }

    /// The compiled chunk query, built once per process on first use.
    pub fn chunk_query(self) -> Option<&'static CompiledQuery> {
        static COMPILED: OnceLock<Vec<OnceLock<Option<CompiledQuery>>>> = OnceLock::new();
        let slots = COMPILED.get_or_init(|| LANGS.iter().map(|_| OnceLock::new()).collect());
        let index = LANGS.iter().position(|spec| spec.lang == self)?;
        slots[index]
            .get_or_init(|| CompiledQuery::new(self).ok())
            .as_ref()
    }
}

/// A chunk query with its capture indices resolved.
pub struct CompiledQuery {
    pub query: Query,
    pub name_capture: Option<u32>,
    /// `@scope`: the container a definition written outside it belongs to (a Go method's
    /// receiver type), prefixed to its qualified name.
    pub scope_capture: Option<u32>,
    /// For each capture index, the chunk kind of a `@definition.<kind>` capture.
    pub definition_kinds: Vec<Option<crate::ChunkKind>>,
}

impl CompiledQuery {
    /// Compiles `lang`'s query against its grammar; the error says which query is wrong.
    pub fn new(lang: Lang) -> Result<CompiledQuery, String> {
        let spec = lang.spec();
        let language = lang
            .language()
            .ok_or_else(|| format!("{} has no grammar", spec.name))?;
        let query = Query::new(&language, spec.chunk_query)
            .map_err(|e| format!("{}: {e}", spec.query_path))?;
        let definition_kinds = query
            .capture_names()
            .iter()
            .map(|name| {
                name.strip_prefix("definition.")
                    .and_then(crate::ChunkKind::from_capture)
            })
            .collect();
        let name_capture = query.capture_index_for_name("name");
        let scope_capture = query.capture_index_for_name("scope");
        Ok(CompiledQuery {
            query,
            name_capture,
            scope_capture,
            definition_kinds,
        })
    }
}
