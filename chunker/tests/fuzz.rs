//! Property tests of the chunker on input no one wrote: arbitrary bytes, token soup, mutated
//! fixtures and generated deeply nested sources, in every language of the table. Every case
//! must tile its file (every line in exactly one chunk, in order, contiguous bytes), chunk the
//! same way after an incremental edit as after a fresh parse, and finish in bounded time.
//!
//! `cargo test -p ctxzip-chunker --test fuzz` is the smoke run (seconds, a fixed seed).
//! `scripts/fuzz-chunker` is the long run: the same properties with `CTXZIP_FUZZ_CASES`
//! cases per language, deeper nesting and a new `CTXZIP_FUZZ_SEED` each time. A failing case
//! prints its seed and writes its input to `target/tmp/fuzz-failures/`, so that it can be
//! replayed and kept as a regression test.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ctxzip_chunker::{Chunk, LANGS, Lang, SourceFile, chunk_source};

/// A case taking longer than this is a failure. Generous on purpose (a debug build on a
/// loaded machine); the real times are printed with `--nocapture` and recorded in
/// BENCHMARKS.md.
const MAX_CASE_TIME: Duration = Duration::from_secs(5);

/// splitmix64: a seeded generator, so that a failing case replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

struct Settings {
    seed: u64,
    /// Cases per language and generator.
    cases: usize,
    /// Deepest nesting the nested-source generator writes.
    max_depth: usize,
}

fn settings() -> Settings {
    let number = |name: &str, default: u64| {
        std::env::var(name).map_or(default, |value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name}={value:?} is not a number"))
        })
    };
    Settings {
        seed: number("CTXZIP_FUZZ_SEED", 0x00c7_2219),
        cases: number("CTXZIP_FUZZ_CASES", 3) as usize,
        max_depth: number("CTXZIP_FUZZ_MAX_DEPTH", 400) as usize,
    }
}

/// One generated input, checked against every property; the slowest time is kept for the
/// report.
struct Checker {
    generator: &'static str,
    seed: u64,
    slowest: Duration,
    slowest_case: String,
    /// The slowest input and its language, saved by [`Checker::report`] for profiling.
    slowest_input: Option<(Lang, String)>,
    n_cases: usize,
    n_bytes: usize,
}

impl Checker {
    fn new(generator: &'static str, seed: u64) -> Checker {
        Checker {
            generator,
            seed,
            slowest: Duration::ZERO,
            slowest_case: String::new(),
            slowest_input: None,
            n_cases: 0,
            n_bytes: 0,
        }
    }

    fn check(&mut self, lang: Lang, case: usize, text: &str) -> Vec<Chunk> {
        let label = format!(
            "{} case {case} ({}, {} bytes, CTXZIP_FUZZ_SEED={})",
            self.generator,
            lang.name(),
            text.len(),
            self.seed
        );
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| chunk_source(lang, text));
        let elapsed = started.elapsed();
        let chunks = match outcome {
            Ok(chunks) => chunks,
            Err(_) => self.fail(lang, case, text, &label, "chunking panicked"),
        };
        if let Err(panic) = std::panic::catch_unwind(|| common::assert_tiles(&label, text, &chunks))
        {
            let why = panic_message(&panic);
            self.fail(lang, case, text, &label, &why);
        }
        if elapsed > MAX_CASE_TIME {
            self.fail(lang, case, text, &label, &format!("took {elapsed:?}"));
        }
        self.n_cases += 1;
        self.n_bytes += text.len();
        if elapsed > self.slowest {
            self.slowest = elapsed;
            self.slowest_case = label;
            self.slowest_input = Some((lang, text.to_owned()));
        }
        chunks
    }

    /// Writes the input where it can be replayed, then fails the test naming it.
    fn fail(&self, lang: Lang, case: usize, text: &str, label: &str, why: &str) -> ! {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        let file = dir.join(format!(
            "{}-{}-{case}.{}",
            self.generator,
            self.seed,
            extension(lang)
        ));
        let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, text));
        let saved = match saved {
            Ok(()) => format!("input saved to {}", file.display()),
            Err(e) => format!("input not saved ({e})"),
        };
        panic!("{label}: {why}; {saved}");
    }

    fn report(&self) {
        println!(
            "{:<16} {:>5} cases {:>10} bytes, slowest {:>9.1?}: {}",
            self.generator, self.n_cases, self.n_bytes, self.slowest, self.slowest_case
        );
        if let Some((lang, text)) = &self.slowest_input {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-slowest");
            let file = dir.join(format!("{}.{}", self.generator, extension(*lang)));
            if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, text))
            {
                println!("(slowest input not saved to {}: {e})", file.display());
            }
        }
    }
}

fn extension(lang: Lang) -> &'static str {
    lang.spec().extensions.first().copied().unwrap_or("txt")
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

/// Bytes that matter to tokenizers and to line arithmetic: brackets, quotes, comment
/// openers, line ends of every kind, a BOM, NUL, multi-byte and astral characters.
const INTERESTING: &[&str] = &[
    "{", "}", "(", ")", "[", "]", "<", ">", ":", ";", ",", ".", "=", "=>", "->", "::", "\"", "'",
    "`", "\\", "/*", "*/", "//", "#", "--", "<?php", "?>", "@", "$", "\n", "\n\n", "\r\n", "\r",
    "\t", "    ", "\u{feff}", "\0", "é", "\u{2028}", "𝄞", "x", "Foo",
];

/// Words that start definitions or blocks in one language or another.
const KEYWORDS: &[&str] = &[
    "fn",
    "def",
    "class",
    "function",
    "struct",
    "impl",
    "mod",
    "module",
    "trait",
    "interface",
    "enum",
    "union",
    "func",
    "fun",
    "object",
    "namespace",
    "package",
    "import",
    "export",
    "const",
    "let",
    "var",
    "val",
    "local",
    "end",
    "do",
    "then",
    "fi",
    "if",
    "else",
    "return",
    "async",
    "static",
    "pub",
    "template",
    "typedef",
    "type",
    "extends",
    "self",
    "this",
];

fn arbitrary_bytes(rng: &mut Rng) -> String {
    let len = rng.below(4096);
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            if rng.below(2) == 0 {
                rng.next() as u8
            } else {
                rng.pick(INTERESTING).as_bytes()[0]
            }
        })
        .collect();
    // What the workspace loader does with invalid UTF-8.
    String::from_utf8_lossy(&bytes).into_owned()
}

fn token_soup(rng: &mut Rng) -> String {
    let mut text = String::new();
    for _ in 0..rng.below(1500) {
        match rng.below(3) {
            0 => text.push_str(rng.pick::<&str>(KEYWORDS)),
            1 => text.push_str(rng.pick::<&str>(INTERESTING)),
            _ => text.push_str(&format!("n{}", rng.below(50))),
        }
        if rng.below(3) == 0 {
            text.push(' ');
        }
    }
    text
}

/// How to nest code in a language: text before everything, pairs of (opening line,
/// closing line) with `{i}` standing for the level, and the innermost line.
struct Nesting {
    prefix: &'static str,
    pairs: &'static [(&'static str, &'static str)],
    leaf: &'static str,
}

fn nesting(lang: Lang) -> Nesting {
    const C_LIKE: &[(&str, &str)] = &[
        ("void f{i}(void) {", "}"),
        ("struct S{i} {", "};"),
        ("if (x) {", "}"),
        ("{", "}"),
    ];
    const JS: &[(&str, &str)] = &[
        ("const f{i} = () => {", "};"),
        ("function f{i}() {", "}"),
        ("class C{i} { m{i}() {", "} }"),
        ("const o{i} = { k{i}: () => {", "} };"),
        ("if (x) {", "}"),
        ("x([", "]);"),
    ];
    let (prefix, pairs, leaf): (&str, &[(&str, &str)], &str) = match lang {
        Lang::Rust => (
            "",
            &[
                ("fn f{i}() {", "}"),
                ("mod m{i} {", "}"),
                ("impl T{i} {", "}"),
                ("trait T{i} {", "}"),
                ("let c{i} = |x| {", "};"),
            ],
            "x();",
        ),
        Lang::Python => (
            "",
            &[
                ("def f{i}():", ""),
                ("class C{i}:", ""),
                ("if x:", ""),
                ("x = [", "]"),
            ],
            "pass",
        ),
        Lang::JavaScript | Lang::Tsx => ("", JS, "x();"),
        Lang::TypeScript => (
            "",
            &[
                ("namespace N{i} {", "}"),
                ("const f{i} = (): void => {", "};"),
                ("class C{i} { m{i}(): void {", "} }"),
                ("function f{i}() {", "}"),
            ],
            "x();",
        ),
        Lang::Go => (
            "package p\n",
            &[
                ("func f{i}() {", "}"),
                ("f{i} := func() {", "}"),
                ("if x {", "}"),
            ],
            "x()",
        ),
        Lang::Java => (
            "",
            &[
                ("class C{i} {", "}"),
                ("void m{i}() {", "}"),
                ("Runnable r{i} = () -> {", "};"),
            ],
            "x();",
        ),
        Lang::C => ("", C_LIKE, "x();"),
        Lang::Cpp => (
            "",
            &[
                ("namespace n{i} {", "}"),
                ("class C{i} {", "};"),
                ("auto l{i} = [&]() {", "};"),
                ("void f{i}() {", "}"),
            ],
            "x();",
        ),
        Lang::CSharp => (
            "",
            &[
                ("namespace N{i} {", "}"),
                ("class C{i} {", "}"),
                ("void M{i}() {", "}"),
                ("Action a{i} = () => {", "};"),
            ],
            "x();",
        ),
        Lang::Ruby => (
            "",
            &[
                ("def f{i}", "end"),
                ("class C{i}", "end"),
                ("module M{i}", "end"),
                ("x.each do |y|", "end"),
            ],
            "x",
        ),
        Lang::Php => (
            "<?php\n",
            &[
                ("function f{i}() {", "}"),
                ("class C{i} { function m{i}() {", "} }"),
                ("$f{i} = function() {", "};"),
            ],
            "x();",
        ),
        Lang::Kotlin => (
            "",
            &[
                ("fun f{i}() {", "}"),
                ("class C{i} {", "}"),
                ("object O{i} {", "}"),
                ("val l{i} = {", "}"),
            ],
            "x()",
        ),
        Lang::Swift => (
            "",
            &[
                ("func f{i}() {", "}"),
                ("class C{i} {", "}"),
                ("struct S{i} {", "}"),
                ("let c{i} = {", "}"),
            ],
            "x()",
        ),
        Lang::Scala => (
            "",
            &[
                ("def f{i} = {", "}"),
                ("object O{i} {", "}"),
                ("class C{i} {", "}"),
                ("trait T{i} {", "}"),
            ],
            "x",
        ),
        Lang::Lua => (
            "",
            &[
                ("function f{i}()", "end"),
                ("local t{i} = {", "}"),
                ("if x then", "end"),
                ("M{i} = function()", "end"),
            ],
            "x()",
        ),
        Lang::Bash => (
            "",
            &[
                ("f{i}() {", "}"),
                ("if x; then", "fi"),
                ("(", ")"),
                ("{", "}"),
            ],
            "x",
        ),
        Lang::Markdown => (
            "",
            &[("# h{i}", ""), ("- item {i}", ""), ("> ", "")],
            "text",
        ),
        Lang::Json => ("", &[("{\"k{i}\": [", "]}")], "1"),
        Lang::Toml | Lang::Yaml | Lang::Text => ("", &[("k{i}:", ""), ("[", "]")], "v"),
    };
    Nesting {
        prefix,
        pairs,
        leaf,
    }
}

/// The nested-source generator stops opening levels past this many bytes.
const MAX_OPENING_BYTES: usize = 400 * 1024;

/// A file of `depth` nested definitions and blocks, each level picked at random (or all of
/// one kind), sometimes with a sibling definition after the nested one.
fn nested_source(rng: &mut Rng, lang: Lang, depth: usize) -> String {
    let Nesting {
        prefix,
        pairs,
        leaf,
    } = nesting(lang);
    let one_kind = rng.below(2) == 0;
    let fixed = rng.below(pairs.len());
    let indent_step = if rng.below(4) == 0 { 0 } else { 1 };
    let mut text = String::from(prefix);
    let mut closers = Vec::with_capacity(depth);
    for level in 0..depth {
        // Stay under the workspace's 1 MiB cap (closers take about as much as openers).
        if text.len() > MAX_OPENING_BYTES {
            break;
        }
        let (open, close) = pairs[if one_kind {
            fixed
        } else {
            rng.below(pairs.len())
        }];
        // Python needs indentation to nest; the others get it or not at random.
        let indent = " ".repeat(if lang == Lang::Python {
            level
        } else {
            level * indent_step
        });
        text.push_str(&indent);
        text.push_str(&open.replace("{i}", &level.to_string()));
        text.push('\n');
        closers.push((indent, close, level));
    }
    text.push_str(&" ".repeat(closers.len()));
    text.push_str(leaf);
    text.push('\n');
    while let Some((indent, close, level)) = closers.pop() {
        if !close.is_empty() {
            text.push_str(&indent);
            text.push_str(close);
            text.push('\n');
        }
        if rng.below(8) == 0 {
            // A sibling after deep nesting: the case a bounded query must not lose.
            let (open, close) = pairs[rng.below(pairs.len())];
            text.push_str(&indent);
            text.push_str(&open.replace("{i}", &format!("{level}b")));
            text.push('\n');
            text.push_str(&indent);
            text.push(' ');
            text.push_str(leaf);
            text.push('\n');
            if !close.is_empty() {
                text.push_str(&indent);
                text.push_str(close);
                text.push('\n');
            }
        }
    }
    text
}

fn has_syntax_error(lang: Lang, text: &str) -> bool {
    let Some(language) = lang.language() else {
        return false;
    };
    let mut parser = tree_sitter::Parser::new();
    parser.set_language(&language).expect("grammar loads");
    parser
        .parse(text, None)
        .is_none_or(|tree| tree.root_node().has_error())
}

fn fixtures(lang: Lang) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data")
        .join(lang.name());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_none_or(|ext| ext != "chunks"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A random edit of `text`: delete, duplicate or insert, at character boundaries.
fn random_edit(rng: &mut Rng, text: &str) -> (usize, usize, String) {
    let boundary = |rng: &mut Rng| {
        let mut i = rng.below(text.len() + 1);
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let (a, b) = (boundary(rng), boundary(rng));
    let (start, end) = (a.min(b), a.max(b));
    let end = end.min(start + 400);
    let end = (start..=end)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(start);
    match rng.below(3) {
        0 => (start, end, String::new()),
        1 => (start, start, text[start..end].to_owned()),
        _ => {
            let insert: String = (0..rng.below(6))
                .map(|_| {
                    if rng.below(2) == 0 {
                        *rng.pick(KEYWORDS)
                    } else {
                        *rng.pick(INTERESTING)
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            (start, end, insert)
        }
    }
}

#[test]
fn arbitrary_bytes_and_token_soup_tile_every_language() {
    let settings = settings();
    let mut rng = Rng(settings.seed);
    let mut bytes = Checker::new("arbitrary-bytes", settings.seed);
    let mut soup = Checker::new("token-soup", settings.seed);
    for spec in LANGS {
        for case in 0..settings.cases {
            bytes.check(spec.lang, case, &arbitrary_bytes(&mut rng));
            soup.check(spec.lang, case, &token_soup(&mut rng));
        }
    }
    bytes.report();
    soup.report();
}

#[test]
fn deeply_nested_sources_tile_in_bounded_time() {
    let settings = settings();
    let mut rng = Rng(settings.seed ^ 0x6e65_7374);
    let mut checker = Checker::new("nested", settings.seed);
    for spec in LANGS {
        for case in 0..settings.cases {
            // The deepest case first, then random depths up to it.
            let depth = if case == 0 {
                settings.max_depth
            } else {
                1 + rng.below(settings.max_depth)
            };
            let text = nested_source(&mut rng, spec.lang, depth);
            // Inputs over the workspace's 1 MiB cap are never chunked.
            if text.len() <= 1 << 20 {
                checker.check(spec.lang, case, &text);
            }
        }
    }
    checker.report();
}

#[test]
fn mutated_fixtures_tile_and_edit_like_a_fresh_parse() {
    let settings = settings();
    let mut rng = Rng(settings.seed ^ 0x6d75_7465);
    let mut checker = Checker::new("mutated-fixture", settings.seed);
    let mut recovered_differently = 0;
    for spec in LANGS {
        for fixture in fixtures(spec.lang) {
            let original = std::fs::read_to_string(&fixture).expect("readable fixture");
            for case in 0..settings.cases {
                let mut text = original.clone();
                let mut file = SourceFile::new(spec.lang, text.clone());
                for _ in 0..1 + rng.below(8) {
                    let (start, end, insert) = random_edit(&mut rng, &text);
                    file.edit(start, end, &insert)
                        .expect("edit at char boundaries");
                    text.replace_range(start..end, &insert);
                }
                let fresh = checker.check(spec.lang, case, &text);
                common::assert_tiles("incrementally edited", &text, file.chunks());
                // tree-sitter recovers from a syntax error differently after an incremental
                // reparse than after a fresh one, so only error-free text must match.
                if file.chunks() != fresh && has_syntax_error(spec.lang, &text) {
                    recovered_differently += 1;
                    continue;
                }
                assert_eq!(
                    file.chunks(),
                    fresh,
                    "{} case {case}: incremental edits differ from a fresh parse \
                     (CTXZIP_FUZZ_SEED={})",
                    fixture.display(),
                    settings.seed
                );
            }
        }
    }
    println!(
        "mutated-fixture  {recovered_differently} cases with a syntax error chunked differently \
         after incremental edits than after a fresh parse"
    );
    checker.report();
}
