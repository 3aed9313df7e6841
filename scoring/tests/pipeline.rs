//! The compress pipeline's own guarantees, on the deterministic [`OverlapModel`] (no
//! llama.cpp, no model file; exact and fast): the budget is never exceeded over random
//! workspaces, budgets and formats; the context is exactly the selected lines with one
//! elision marker per gap; the refill leaves out no chunk that still fits; a refusal means
//! no chunk fits alone; pinned chunks come first; callees follow their callers; a deadline
//! reaches the candidates in their order; the fine stage's knapsack is optimal; code outranks
//! tests and docs; skeletons are never printed alone; a definition's copies (bundles, stubs)
//! are shown once; a long query costs a bounded window (or a bounded prefix); progress reports change no answer
//! and come in stage order; a budget in a named tokenizer or a tokenizer.json holds in it.
//! What the real model ranks is tested end to end in the workspace's `tests/cli_compress.rs`.

use std::time::Duration;

use ctxzip_chunker::{Chunk, Lang, chunk_source};
use ctxzip_scoring::compress::assemble::{FileRuns, assemble, merge_runs};
use ctxzip_scoring::compress::fine::knapsack;
use ctxzip_scoring::compress::{
    Budget, BudgetTokenizer, CompressError, CompressOptions, CompressRequest, Compressed,
    Conditioning, DEFAULT_MAX_MODEL_TOKENS, Document, Format, MAX_PREFIX_QUERY_TOKENS, Progress,
    Ranker, Stage, candidate_chunks, compress, compress_with_progress, is_skeleton,
    texts_are_copies,
};
use ctxzip_scoring::overlap::OverlapModel;
use ctxzip_scoring::{CancelFlag, ScoringModel};

/// Files of a workspace with their chunks, as the index would hand them to `compress`.
struct Workspace {
    files: Vec<(String, Lang, String, Vec<Chunk>)>,
}

impl Workspace {
    fn new(files: &[(&str, Lang, &str)]) -> Self {
        Workspace {
            files: files
                .iter()
                .map(|&(path, lang, text)| {
                    (
                        path.to_owned(),
                        lang,
                        text.to_owned(),
                        chunk_source(lang, text),
                    )
                })
                .collect(),
        }
    }

    fn docs(&self) -> Vec<Document<'_>> {
        self.files
            .iter()
            .map(|(path, lang, text, chunks)| Document {
                path,
                lang: *lang,
                text,
                chunks,
                redacted: 0,
            })
            .collect()
    }
}

fn run(
    model: &dyn ScoringModel,
    ws: &Workspace,
    query: &str,
    options: &CompressOptions,
) -> Result<Compressed, CompressError> {
    compress(model, &ws.docs(), query, options, &CancelFlag::new())
}

fn names(result: &Compressed) -> Vec<String> {
    result
        .chunks
        .iter()
        .map(|c| c.name.clone().unwrap_or_default())
        .collect()
}

/// A small seeded generator (xorshift64*): the cases are the same on every run, and a failing
/// one is named by its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() - 1)]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.range(1, 100) <= percent
    }
}

const WORDS: &[&str] = &[
    "invoice", "total", "tax", "parse", "config", "token", "retry", "socket", "ledger", "balance",
    "amount", "render", "cache", "index", "query", "budget", "user", "order", "item", "price",
    "stream", "buffer", "header", "route", "layer", "client", "server", "event", "queue", "limit",
];

fn ident(rng: &mut Rng) -> String {
    format!("{}_{}", rng.pick(WORDS), rng.pick(WORDS))
}

/// A function of 1–12 body lines in `lang`, calling functions named from the vocabulary.
fn function(rng: &mut Rng, lang: Lang, name: &str, indent: &str) -> String {
    let arg = *rng.pick(WORDS);
    let n = rng.range(1, 12);
    let body: Vec<String> = (0..n)
        .map(|i| {
            let (var, callee, other) = (rng.pick(WORDS), ident(rng), rng.pick(WORDS));
            match lang {
                Lang::Python => format!("{indent}    {var}_{i} = {callee}({arg}) + {other}\n"),
                Lang::Rust => format!("{indent}    let {var}_{i} = {callee}({arg}) + {other};\n"),
                Lang::Go => format!("{indent}\t{var}_{i} := {callee}({arg}) + {other}\n"),
                _ => format!("{indent}  const {var}_{i} = {callee}({arg}) + {other};\n"),
            }
        })
        .collect();
    let body = body.concat();
    match lang {
        Lang::Python => format!("{indent}def {name}({arg}):\n{body}{indent}    return {arg}\n"),
        Lang::Rust => {
            format!(
                "{indent}pub fn {name}({arg}: i64) -> i64 {{\n{body}{indent}    {arg}\n{indent}}}\n"
            )
        }
        Lang::Go => format!("func {name}({arg} int) int {{\n{body}\treturn {arg}\n}}\n"),
        _ => format!(
            "{indent}function {name}({arg}) {{\n{body}{indent}  return {arg};\n{indent}}}\n"
        ),
    }
}

/// A random source file: functions, and sometimes a class or impl block of methods.
fn source_file(rng: &mut Rng, lang: Lang) -> String {
    let mut text = String::new();
    for _ in 0..rng.range(1, 5) {
        let name = ident(rng);
        if rng.chance(25) && matches!(lang, Lang::Python | Lang::Rust) {
            let ty = format!("{}{}", rng.pick(WORDS).to_uppercase(), rng.pick(WORDS));
            let methods: Vec<String> = (0..rng.range(1, 3))
                .map(|_| {
                    let m = ident(rng);
                    function(rng, lang, &m, "    ")
                })
                .collect();
            if lang == Lang::Python {
                text += &format!("class {ty}:\n{}\n", methods.join("\n"));
            } else {
                text += &format!(
                    "pub struct {ty};\n\nimpl {ty} {{\n{}}}\n\n",
                    methods.join("\n")
                );
            }
        } else {
            text += &function(rng, lang, &name, "");
            text.push('\n');
        }
    }
    text
}

fn random_workspace(rng: &mut Rng) -> Workspace {
    let langs = [
        (Lang::Python, "py"),
        (Lang::Rust, "rs"),
        (Lang::JavaScript, "js"),
        (Lang::Go, "go"),
    ];
    let files: Vec<(String, Lang, String)> = (0..rng.range(1, 6))
        .map(|f| {
            let &(lang, ext) = rng.pick(&langs);
            let dir = if rng.chance(20) { "tests/" } else { "src/" };
            (format!("{dir}f{f}.{ext}"), lang, source_file(rng, lang))
        })
        .collect();
    let refs: Vec<(&str, Lang, &str)> = files
        .iter()
        .map(|(p, l, t)| (p.as_str(), *l, t.as_str()))
        .collect();
    Workspace::new(&refs)
}

/// The context of a Text or JSON result is exactly the kept lines of each file, in order,
/// with one elision marker (a comment ending in `...`) for each gap: checked against the
/// result's own `kept_lines`, file by file.
fn assert_context_is_the_kept_lines(ws: &Workspace, result: &Compressed, case: &str) {
    let mut sections: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in result.context.lines() {
        if let Some(path) = line
            .strip_prefix("==> ")
            .and_then(|l| l.strip_suffix(" <=="))
        {
            sections.push((path, Vec::new()));
        } else {
            let (_, lines) = sections
                .last_mut()
                .expect("the context starts with a header");
            lines.push(line);
        }
    }
    for (path, printed) in &sections {
        let (_, _, text, _) = ws
            .files
            .iter()
            .find(|f| f.0 == *path)
            .unwrap_or_else(|| panic!("{case}: unknown file {path}"));
        let rows: Vec<&str> = text.lines().collect();
        let kept = merge_runs(
            result
                .chunks
                .iter()
                .filter(|c| c.path == *path)
                .flat_map(|c| c.kept_lines.iter())
                .map(|&[a, b]| (a as usize - 1, b as usize - 1))
                .collect(),
        );
        assert!(!kept.is_empty(), "{case}: {path} printed with no chunk");
        let mut expected: Vec<Option<&str>> = Vec::new();
        let mut next = 0;
        for (a, b) in kept {
            if a > next {
                expected.push(None);
            }
            expected.extend(rows[a..=b.min(rows.len() - 1)].iter().map(|l| Some(*l)));
            next = b + 1;
        }
        if next < rows.len() {
            expected.push(None);
        }
        assert_eq!(
            printed.len(),
            expected.len(),
            "{case}: {path}\n{}",
            result.context
        );
        for (got, want) in printed.iter().zip(&expected) {
            match want {
                Some(line) => assert_eq!(got, line, "{case}: {path}"),
                None => assert!(got.trim_end().ends_with("..."), "{case}: marker {got:?}"),
            }
        }
    }
}

/// What a refusal for a budget too small promises: no chunk the pipeline may print alone
/// (skeletons are never printed alone) fits the budget with its file's frame in `format`.
fn assert_no_chunk_fits_alone(
    count: &dyn Fn(&str) -> usize,
    ws: &Workspace,
    format: Format,
    budget: usize,
    case: &str,
) -> usize {
    let mut smallest = usize::MAX;
    for (path, lang, text, chunks) in &ws.files {
        for chunk in chunks {
            let chunk_text = chunk.text(text);
            if chunk_text.trim().is_empty() || is_skeleton(chunk, chunk_text) {
                continue;
            }
            let alone = assemble(
                format,
                &[FileRuns {
                    path,
                    lang: *lang,
                    text,
                    runs: vec![(chunk.start_line as usize - 1, chunk.end_line as usize - 1)],
                }],
            );
            let n = count(&alone);
            assert!(
                n > budget,
                "{case}: refused, but this fits in {n} tokens:\n{alone}"
            );
            smallest = smallest.min(n);
        }
    }
    smallest
}

/// The refill's promise: no chunk left out (skeletons aside) would still fit whole beside
/// what was selected, next to a kept run (where it replaces a marker) or not. Checked by
/// rendering the selection with each left-out chunk added.
fn assert_nothing_left_out_fits(
    count: &dyn Fn(&str) -> usize,
    ws: &Workspace,
    result: &Compressed,
    format: Format,
    budget: usize,
    case: &str,
) {
    let selected: Vec<(&str, u32)> = result
        .chunks
        .iter()
        .map(|c| (c.path.as_str(), c.start_line))
        .collect();
    let mut files: Vec<&(String, Lang, String, Vec<Chunk>)> = ws.files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, _, text, chunks) in &ws.files {
        for chunk in chunks {
            let chunk_text = chunk.text(text);
            if chunk_text.trim().is_empty()
                || is_skeleton(chunk, chunk_text)
                || selected.contains(&(path.as_str(), chunk.start_line))
            {
                continue;
            }
            let with: Vec<FileRuns> = files
                .iter()
                .filter_map(|(p, lang, t, _)| {
                    let mut rows: Vec<(usize, usize)> = result
                        .chunks
                        .iter()
                        .filter(|c| c.path == *p)
                        .flat_map(|c| c.kept_lines.iter())
                        .map(|&[a, b]| (a as usize - 1, b as usize - 1))
                        .collect();
                    if p == path {
                        rows.push((chunk.start_line as usize - 1, chunk.end_line as usize - 1));
                    }
                    (!rows.is_empty()).then(|| FileRuns {
                        path: p,
                        lang: *lang,
                        text: t,
                        runs: merge_runs(rows),
                    })
                })
                .collect();
            let n = count(&assemble(format, &with));
            assert!(
                n > budget,
                "{case}: {path}:{} was left out but fits ({n} of {budget} tokens)",
                chunk.start_line
            );
        }
    }
}

#[test]
fn the_budget_is_never_exceeded_over_random_workspaces_budgets_and_formats() {
    let formats = [Format::Text, Format::Markdown, Format::Json, Format::Xml];
    let rankers = [Ranker::Model, Ranker::Bm25, Ranker::Fused];
    let (mut answered, mut too_small, mut pruned) = (0, 0, 0);
    for seed in 0..400u64 {
        let mut rng = Rng::new(seed);
        let ws = random_workspace(&mut rng);
        let model = if rng.chance(30) {
            OverlapModel::with_deadline_tokens(rng.range(0, 400))
        } else {
            OverlapModel::new()
        };
        let total: usize = ws
            .files
            .iter()
            .map(|f| model.count_tokens(&f.2))
            .sum::<usize>()
            .max(1);
        let budget = if rng.chance(70) {
            Budget::Tokens(rng.range(1, total + total / 4))
        } else {
            Budget::Rate(rng.range(1, 100) as f64 / 100.0)
        };
        let mut query: Vec<String> = (0..rng.range(1, 8))
            .map(|_| rng.pick(WORDS).to_string())
            .collect();
        if rng.chance(30) {
            query.push(ident(&mut rng));
        }
        let options = CompressOptions {
            budget,
            format: *rng.pick(&formats),
            fine: rng.chance(70),
            ranker: *rng.pick(&rankers),
            max_candidates: rng.range(1, 30),
            callers: if rng.chance(80) { usize::MAX } else { 0 },
            deadline: match rng.range(0, 2) {
                0 => None,
                1 => Some(Duration::ZERO),
                _ => Some(Duration::from_secs(3600)),
            },
            max_model_tokens: rng.chance(25).then(|| rng.range(0, 3000)),
            ..CompressOptions::default()
        };
        let case = format!("seed {seed}, {budget:?}, {options:?}");
        match run(&model, &ws, &query.join(" "), &options) {
            Ok(result) => {
                answered += 1;
                if let Some(max) = options.max_model_tokens {
                    // The query's own NLL is read whatever the budget.
                    let q = model.count_tokens(&query.join(" "));
                    assert!(result.stats.model_tokens <= max + q, "{case}: {result:?}");
                }
                let limit = match budget {
                    Budget::Tokens(n) => n,
                    Budget::Rate(r) => ((total as f64 * r).floor() as usize).max(1),
                };
                let stats = &result.stats;
                assert_eq!(stats.budget_tokens, limit, "{case}");
                assert_eq!(
                    stats.compressed_tokens,
                    model.count_tokens(&result.context),
                    "{case}"
                );
                assert!(stats.compressed_tokens <= limit, "{case}: {stats:?}");
                assert!(!result.chunks.is_empty(), "{case}");
                pruned += usize::from(result.chunks.iter().any(|c| c.kept_lines.len() > 1));
                if matches!(options.format, Format::Text | Format::Json) {
                    assert_context_is_the_kept_lines(&ws, &result, &case);
                }
                let count = |t: &str| model.count_tokens(t);
                assert_nothing_left_out_fits(&count, &ws, &result, options.format, limit, &case);
            }
            Err(CompressError::BudgetTooSmall { budget, smallest }) => {
                too_small += 1;
                let count = |t: &str| model.count_tokens(t);
                let alone = assert_no_chunk_fits_alone(&count, &ws, options.format, budget, &case);
                // The error's figure is what the smallest chunk costs alone, in this format.
                assert_eq!(smallest, alone, "{case}: the smallest answer");
            }
            Err(e) => panic!("{case}: {e}"),
        }
    }
    // The cases cover what they claim to: answers, refusals and pruned functions.
    assert!(answered > 300, "{answered} answered");
    assert!(too_small > 0, "no budget was too small");
    assert!(pruned > 10, "{pruned} answers pruned a function");
}

/// A budget in an agent's tokenizer (o200k, cl100k) holds in that tokenizer, counted here by
/// tiktoken itself, on every format: the model's counts (a word-like split) differ from it,
/// so a pipeline that counted any part of the budget in the model's tokens would overflow.
#[test]
fn a_budget_in_a_named_tokenizer_holds_in_that_tokenizer_on_every_format() {
    let o200k = |t: &str| tiktoken_rs::o200k_base_singleton().count_ordinary(t);
    let cl100k = |t: &str| tiktoken_rs::cl100k_base_singleton().count_ordinary(t);
    assert_a_budget_holds_in(&[
        (BudgetTokenizer::O200k, &o200k),
        (BudgetTokenizer::Cl100k, &cl100k),
    ]);
}

/// The same for a Hugging Face tokenizer.json (a byte-level BPE trained here on random
/// workspaces with the `tokenizers` crate, written to a file), named in a request by its path
/// as every surface names it, counted here by the crate itself.
#[test]
fn a_budget_in_a_tokenizer_json_holds_in_that_tokenizer_on_every_format() {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let corpus: Vec<String> = (1000..1008u64)
        .flat_map(|seed| random_workspace(&mut Rng::new(seed)).files)
        .map(|file| file.2)
        .collect();
    let mut trained = tokenizers::Tokenizer::new(BPE::default());
    trained.with_pre_tokenizer(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(400)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    trained.train(&mut trainer, corpus.iter()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    trained.save(&path, false).unwrap();
    let request: CompressRequest =
        serde_json::from_value(serde_json::json!({"query": "q", "tokenizer": path})).unwrap();
    let tokenizer = request.resolve(None).unwrap().tokenizer;
    let reader = tokenizers::Tokenizer::from_file(&path).unwrap();
    let count = |t: &str| reader.encode_fast(t, false).unwrap().len();
    assert_a_budget_holds_in(&[(tokenizer, &count)]);
}

/// Counts tokens of a text in one tokenizer.
type Counter<'a> = dyn Fn(&str) -> usize + 'a;

/// Random workspaces, budgets, formats and rankers, each in one of `tokenizers` (picked per
/// case) whose tokens `count` counts: every answer holds in it and nothing left out fits;
/// every refusal means no chunk fits alone.
fn assert_a_budget_holds_in(tokenizers: &[(BudgetTokenizer, &Counter)]) {
    let formats = [Format::Text, Format::Markdown, Format::Json, Format::Xml];
    let model = OverlapModel::new();
    let (mut answered, mut too_small, mut differs) = (0, 0, 0);
    for seed in 0..160u64 {
        let mut rng = Rng::new(seed);
        let ws = random_workspace(&mut rng);
        let (tokenizer, count) = *rng.pick(tokenizers);
        let total: usize = ws.files.iter().map(|f| count(&f.2)).sum::<usize>().max(1);
        let limit = rng.range(1, total + total / 4);
        let query: Vec<&str> = (0..rng.range(1, 6)).map(|_| *rng.pick(WORDS)).collect();
        let options = CompressOptions {
            budget: Budget::Tokens(limit),
            tokenizer,
            format: formats[seed as usize % formats.len()],
            fine: rng.chance(70),
            ranker: *rng.pick(&[Ranker::Model, Ranker::Bm25, Ranker::Fused]),
            ..CompressOptions::default()
        };
        let case = format!("seed {seed}, {options:?}");
        match run(&model, &ws, &query.join(" "), &options) {
            Ok(result) => {
                answered += 1;
                let n = count(&result.context);
                assert_eq!(result.stats.compressed_tokens, n, "{case}");
                assert!(n <= limit, "{case}: {n} > {limit} tokens");
                differs += usize::from(model.count_tokens(&result.context) != n);
                assert_nothing_left_out_fits(count, &ws, &result, options.format, limit, &case);
            }
            Err(CompressError::BudgetTooSmall { budget, smallest }) => {
                too_small += 1;
                let alone = assert_no_chunk_fits_alone(count, &ws, options.format, budget, &case);
                assert_eq!(smallest, alone, "{case}: the smallest answer");
            }
            Err(e) => panic!("{case}: {e}"),
        }
    }
    assert!(answered > 100, "{answered} answered");
    assert!(too_small > 0, "no budget was too small");
    // The model's counts are not the tokenizer's: the test can tell the two apart.
    assert!(differs > answered / 2, "{differs} of {answered} differ");
}

#[test]
fn the_fine_stage_knapsack_is_optimal() {
    for seed in 0..300u64 {
        let mut rng = Rng::new(seed);
        let items: Vec<(usize, f32)> = (0..rng.range(0, 10))
            .map(|_| (rng.range(0, 12), rng.range(0, 1000) as f32 / 100.0))
            .collect();
        let capacity = rng.range(0, 40);
        let chosen = knapsack(&items, capacity);
        let weight: usize = chosen.iter().map(|&i| items[i].0).sum();
        let value: f32 = chosen.iter().map(|&i| items[i].1).sum();
        assert!(weight <= capacity, "seed {seed}");
        assert!(chosen.windows(2).all(|w| w[0] < w[1]), "seed {seed}");
        let best = (0u32..1 << items.len())
            .filter_map(|mask| {
                let set = (0..items.len()).filter(|i| mask >> i & 1 == 1);
                let (w, v) = set.fold((0, 0.0f32), |(w, v), i| (w + items[i].0, v + items[i].1));
                (w <= capacity).then_some(v)
            })
            .fold(0.0f32, f32::max);
        assert!((value - best).abs() < 1e-3, "seed {seed}: {value} < {best}");
    }
}

const BILLING: &str = r#"def compute_invoice_total(items, tax_rate):
    """Sum the line items of an invoice and apply the tax rate."""
    subtotal = 0
    for item in items:
        subtotal += item.price * item.quantity
    return apply_rounding(subtotal * (1 + tax_rate))


def invoice_header(customer):
    return "invoice for " + customer.name


def invoice_footer(customer):
    return "thank you " + customer.name
"#;

const ROUNDING: &str = r#"def apply_rounding(amount):
    cents = int(amount * 100 + 0.5)
    return cents / 100
"#;

#[test]
fn pinned_chunks_come_first_and_callees_follow_their_callers() {
    let ws = Workspace::new(&[
        ("billing.py", Lang::Python, BILLING),
        ("rounding.py", Lang::Python, ROUNDING),
    ]);
    let model = OverlapModel::new();
    let options = CompressOptions {
        budget: Budget::Tokens(120),
        fine: false,
        // Only BM25's best is scored: the callee must come from its caller, not from BM25.
        max_candidates: 1,
        ..CompressOptions::default()
    };
    let query = "where is the invoice total computed with tax?";
    let result = run(&model, &ws, query, &options).unwrap();
    let ranked = names(&result);
    assert_eq!(
        ranked[..2],
        ["compute_invoice_total", "apply_rounding"],
        "{ranked:?}"
    );
    // Without callee placement the callee, which shares no word with the query, is last.
    let no_callees = CompressOptions {
        callers: 0,
        ..options.clone()
    };
    let ranked = names(&run(&model, &ws, query, &no_callees).unwrap());
    assert_ne!(
        ranked.get(1).map(String::as_str),
        Some("apply_rounding"),
        "{ranked:?}"
    );

    // A name in the query pins its definition ahead of what scores better.
    let pinned = "how does apply_rounding round the invoice total for the invoice header?";
    let ranked = names(&run(&model, &ws, pinned, &options).unwrap());
    assert_eq!(ranked[0], "apply_rounding", "{ranked:?}");
}

#[test]
fn a_name_written_as_code_pins_its_definition_and_a_shared_name_pins_none() {
    // Five classes with a constructor each: `Choice.__init__` names one of them, a bare
    // `__init__` none in particular.
    let mut source = String::new();
    for class in ["Choice", "Path", "Option", "Context", "Command"] {
        source.push_str(&format!(
            "class {class}:\n    \"\"\"A {class} of the CLI.\"\"\"\n\n    def __init__(self, value):\n        self.value = value\n\n    def describe(self):\n        return '{class}'\n\n\n"
        ));
    }
    source.push_str("def paint(color):\n    return color.upper()\n");
    let ws = Workspace::new(&[("types.py", Lang::Python, &source)]);
    let options = CompressOptions {
        max_candidates: 1,
        ..CompressOptions::default()
    };
    let pool = |query: &str| {
        let docs = ws.docs();
        let order = candidate_chunks(&OverlapModel::new(), &docs, query, &options).unwrap();
        order
            .pool(options.max_candidates)
            .iter()
            .map(|&(d, c)| docs[d].chunks[c].display_name().to_owned())
            .collect::<Vec<_>>()
    };
    let named = pool("Widen the type hints on `Choice.__init__` so that paint takes an enum");
    assert_eq!(named, ["Choice.__init__"]);
    // `click.Choice`: the module is not part of a qualified name; its tail still finds it.
    assert_eq!(
        pool("accept an Enum in click.Choice for paint")[0],
        "Choice"
    );
    // Five definitions share the name: none is pinned, BM25's best is the pool.
    assert_eq!(pool("what does __init__ do in paint")[0], "paint");
}

#[test]
fn a_deadline_scores_the_candidates_in_their_order_and_the_rest_follow_by_bm25() {
    let mut rng = Rng::new(7);
    let ws = random_workspace_of(&mut rng, 6);
    let query = "parse the invoice total and retry the socket";
    let options = CompressOptions {
        fine: false,
        deadline: Some(Duration::from_secs(3600)),
        budget: Budget::Tokens(1_000_000),
        max_candidates: 5,
        ..CompressOptions::default()
    };
    let order = candidate_chunks(&OverlapModel::new(), &ws.docs(), query, &options).unwrap();
    let pool = order.pool(options.max_candidates).to_vec();
    assert!(pool.len() >= 4, "{} candidates", pool.len());
    let docs = ws.docs();
    let cost = |&(d, c): &(usize, usize)| {
        let q = OverlapModel::new().count_tokens(query);
        OverlapModel::new().count_tokens(docs[d].chunks[c].text(docs[d].text)) + q
    };
    // Exactly the first two candidates fit the deadline.
    let allowance = cost(&pool[0]) + cost(&pool[1]);
    let model = OverlapModel::with_deadline_tokens(allowance);
    let total: usize = ws.files.iter().map(|f| model.count_tokens(&f.2)).sum();
    // Not the whole workspace: a budget it fits is answered without the model.
    let options = CompressOptions {
        budget: Budget::Tokens(total - 1),
        ..options
    };
    let result = run(&model, &ws, query, &options).unwrap();
    assert_eq!(result.stats.candidates, pool.len());
    assert_eq!(result.stats.deadline_skipped, pool.len() - 2);
    let key = |c: &ctxzip_scoring::compress::SelectedChunk| (c.path.clone(), c.start_line);
    let chunk_key =
        |&(d, c): &(usize, usize)| (docs[d].path.to_owned(), docs[d].chunks[c].start_line);
    let mut first_two: Vec<_> = result.chunks[..2].iter().map(key).collect();
    let mut expected: Vec<_> = pool[..2].iter().map(chunk_key).collect();
    first_two.sort();
    expected.sort();
    assert_eq!(first_two, expected, "the scored candidates rank first");
    // The skipped ones follow in BM25 order (the candidate order, pins aside).
    let skipped: Vec<_> = result.chunks[2..pool.len()].iter().map(key).collect();
    let expected: Vec<_> = pool[2..].iter().map(chunk_key).collect();
    assert_eq!(skipped, expected);
    // A deadline already past skips every candidate and still answers within the budget.
    let past = CompressOptions {
        deadline: Some(Duration::ZERO),
        ..options
    };
    let result = run(&model, &ws, query, &past).unwrap();
    assert_eq!(result.stats.deadline_skipped, pool.len());
    assert!(result.stats.compressed_tokens < total);
}

#[test]
fn a_model_token_budget_bounds_the_model_work_with_the_fine_stage_share_set_aside() {
    let mut rng = Rng::new(11);
    let ws = random_workspace_of(&mut rng, 8);
    let query = "parse the invoice total and retry the socket";
    let model = OverlapModel::new();
    let q = model.count_tokens(query);
    let total: usize = ws.files.iter().map(|f| model.count_tokens(&f.2)).sum();
    let options = CompressOptions {
        budget: Budget::Tokens(total / 3),
        max_candidates: 8,
        max_model_tokens: None,
        ..CompressOptions::default()
    };
    let unbounded = run(&model, &ws, query, &options).unwrap();
    let work = unbounded.stats.model_tokens;
    assert!(work > 0 && unbounded.stats.deadline_skipped == 0);
    // A budget the work fits in changes nothing.
    let roomy = CompressOptions {
        max_model_tokens: Some(1_000_000),
        ..options.clone()
    };
    let result = run(&model, &ws, query, &roomy).unwrap();
    assert_eq!(result.context, unbounded.context);
    assert_eq!(result.stats.model_tokens, work);
    // Any smaller one bounds the work (the query's own NLL, `q` tokens, is always read) and
    // still answers within the output budget.
    // Both passes over what the fine stage may read, and the query before the second.
    let fine_share =
        2 * ((total / 3).min(options.max_fine_tokens) as f32 / options.fine_rate) as usize + q;
    assert!(fine_share < work, "the coarse stage has a share to cut");
    for max in [
        0,
        q,
        fine_share / 2,
        fine_share,
        (fine_share + work) / 2,
        work - 1,
    ] {
        let bounded = CompressOptions {
            max_model_tokens: Some(max),
            ..options.clone()
        };
        let result = run(&model, &ws, query, &bounded).unwrap();
        let stats = &result.stats;
        assert!(stats.model_tokens <= max + q, "{max}: {stats:?}");
        assert!(
            stats.model_tokens < work && stats.deadline_skipped > 0,
            "{max}: {stats:?}"
        );
        assert!(stats.compressed_tokens <= total / 3);
        if max <= fine_share {
            // The fine stage's share comes first: the coarse stage reads no candidate.
            assert!(
                stats.deadline_skipped >= stats.candidates,
                "{max}: {stats:?}"
            );
        }
    }
}

#[test]
fn a_request_that_names_no_model_token_budget_gets_the_default_one() {
    let mut rng = Rng::new(12);
    let ws = random_workspace_of(&mut rng, 48);
    let query = "parse the invoice total and retry the socket";
    let model = OverlapModel::new();
    assert_eq!(
        CompressOptions::default().max_model_tokens,
        Some(DEFAULT_MAX_MODEL_TOKENS)
    );
    // More candidates than the default, so that unbounded work passes the default budget.
    let defaults = CompressOptions {
        max_candidates: 64,
        ..CompressOptions::default()
    };
    let unbounded = CompressOptions {
        max_model_tokens: None,
        ..defaults.clone()
    };
    let work = run(&model, &ws, query, &unbounded)
        .unwrap()
        .stats
        .model_tokens;
    assert!(
        work > DEFAULT_MAX_MODEL_TOKENS,
        "the workspace must cost more: {work}"
    );
    let stats = run(&model, &ws, query, &defaults).unwrap().stats;
    let q = model.count_tokens(query);
    assert!(
        stats.model_tokens <= DEFAULT_MAX_MODEL_TOKENS + q,
        "{stats:?}"
    );
    assert!(stats.deadline_skipped > 0, "{stats:?}");
}

/// A workspace of `n` Python files (BM25 ties are unlikely with random bodies).
fn random_workspace_of(rng: &mut Rng, n: usize) -> Workspace {
    let files: Vec<(String, String)> = (0..n)
        .map(|f| (format!("m{f}.py"), source_file(rng, Lang::Python)))
        .collect();
    let refs: Vec<(&str, Lang, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), Lang::Python, t.as_str()))
        .collect();
    Workspace::new(&refs)
}

/// A 31-line function whose repeated lines cost little once seen; three lines of new words
/// (rows 10, 17 and 24) are the spikes that start blocks, and only the middle one holds
/// words of the query "how is an amount posted to the ledger balance?".
fn ledger_function() -> String {
    let body: String = (1..30)
        .map(|i| match i {
            10 => "    step = unrelated(value)\n".to_string(),
            17 => "    balance = posted(ledger, amount)\n".to_string(),
            24 => "    other = distinct(thing)\n".to_string(),
            _ => "    count = count + 1\n".to_string(),
        })
        .collect();
    format!("def process(ledger, amount):\n{body}    return balance\n")
}

#[test]
fn the_fine_stage_prunes_a_long_function_to_blocks_with_elision_markers() {
    let text = ledger_function();
    let ws = Workspace::new(&[("ledger.py", Lang::Python, &text)]);
    let model = OverlapModel::new();
    let whole = model.count_tokens(&text);
    let options = CompressOptions {
        // The coarse stage must keep the function whole (it may over-select by what the fine
        // stage saves) and the fine stage must prune it.
        budget: Budget::Tokens(whole * 6 / 10),
        // A lone function's rate is fine_rate · (1 + beta): 0.45 of it, which fits.
        fine_rate: 0.3,
        ..CompressOptions::default()
    };
    let result = run(
        &model,
        &ws,
        "how is an amount posted to the ledger balance?",
        &options,
    )
    .unwrap();
    assert!(result.stats.compressed_tokens <= whole * 6 / 10);
    let chunk = &result.chunks[0];
    assert!(
        chunk.kept_lines.len() > 1,
        "pruned to blocks: {:?}",
        chunk.kept_lines
    );
    assert!(
        result.context.contains("def process(ledger, amount):"),
        "the signature stays"
    );
    assert!(
        result.context.contains("balance = posted(ledger, amount)"),
        "{}",
        result.context
    );
    assert!(result.context.contains("    # ...\n"), "{}", result.context);
    assert_context_is_the_kept_lines(&ws, &result, "fine");
}

#[test]
fn under_a_model_token_budget_the_fine_stage_reads_the_head_of_a_function_and_elides_the_rest() {
    let text = ledger_function();
    let ws = Workspace::new(&[("ledger.py", Lang::Python, &text)]);
    let model = OverlapModel::new();
    let whole = model.count_tokens(&text);
    let query = "how is an amount posted to the ledger balance?";
    let q = model.count_tokens(query);
    // The query's own NLL, then both passes over 70% of the function (the second after the
    // query): the head through line 20 or so, not line 24.
    let per_pass = whole * 7 / 10;
    let max = q + q + 2 * per_pass;
    let options = CompressOptions {
        budget: Budget::Tokens(whole * 6 / 10),
        fine_rate: 0.3,
        max_model_tokens: Some(max),
        ..CompressOptions::default()
    };
    let result = run(&model, &ws, query, &options).unwrap();
    assert!(result.stats.model_tokens <= max, "{:?}", result.stats);
    // The coarse stage's share went to the fine stage: its one candidate was not scored;
    // the fine stage read the function (in part), so it was not skipped.
    assert_eq!(result.stats.deadline_skipped, 1, "{:?}", result.stats);
    assert!(result.stats.compressed_tokens <= whole * 6 / 10);
    assert!(
        result.context.contains("balance = posted(ledger, amount)"),
        "{}",
        result.context
    );
    assert!(
        !result.context.contains("other = distinct(thing)"),
        "the unread rows are elided: {}",
        result.context
    );
    assert!(result.chunks[0].kept_lines.len() > 1);
    assert_context_is_the_kept_lines(&ws, &result, "partial read");
}

// Moved from `tests/cli_compress.rs`: they test the ranking across kinds of files, skeletons
// and the query window, not what the model knows.

const TEST_INVOICE: &str = r#"from billing import compute_invoice_total


def test_invoice_total_with_tax():
    items = [Item(price=10, quantity=2)]
    assert compute_invoice_total(items, 0.1) == 22


def test_invoice_total_without_tax():
    assert compute_invoice_total([], 0) == 0
"#;

#[test]
fn code_outranks_tests_docs_and_changelogs_unless_the_query_asks_for_them() {
    let ws = Workspace::new(&[
        ("billing.py", Lang::Python, BILLING),
        ("tests/test_invoice_total.py", Lang::Python, TEST_INVOICE),
        (
            "docs/invoices.md",
            Lang::Markdown,
            "# Invoices\n\nThe invoice total is the subtotal of the invoice plus tax. The tax rate\n\
             applies to the invoice subtotal; the invoice total is rounded when printed.\n",
        ),
        (
            "CHANGELOG.md",
            Lang::Markdown,
            "# Changes\n\n## 1.2\n\n- The invoice total now adds the tax to the invoice subtotal\n  \
             (invoice total and tax were swapped).\n",
        ),
    ]);
    let model = OverlapModel::new();
    let options = CompressOptions {
        budget: Budget::Tokens(80),
        ranker: Ranker::Bm25,
        ..CompressOptions::default()
    };
    let first = |query: &str| {
        run(&model, &ws, query, &options).unwrap().chunks[0]
            .path
            .clone()
    };
    assert_eq!(
        first("how is the tax added to the invoice total?"),
        "billing.py"
    );
    assert_eq!(
        first("Where are the tests for the invoice total with tax?"),
        "tests/test_invoice_total.py"
    );
}

#[test]
fn a_container_header_or_closing_brace_is_never_printed_alone() {
    let methods: String = (0..12)
        .map(|i| {
            format!(
                "    /// Posts entry {i} of the ledger.\n    pub fn post_{i}(&mut self, amount: i64) -> i64 {{\n        self.balance += amount * {i};\n        self.balance\n    }}\n\n"
            )
        })
        .collect();
    let text = format!(
        "pub struct Ledger {{\n    balance: i64,\n}}\n\nimpl Ledger {{\n{methods}}}\n\nimpl Drop for Ledger {{\n    fn drop(&mut self) {{}}\n}}\n"
    );
    let ws = Workspace::new(&[("ledger.rs", Lang::Rust, &text)]);
    let lines: Vec<&str> = text.lines().collect();
    for ranker in [Ranker::Bm25, Ranker::Model] {
        let options = CompressOptions {
            budget: Budget::Tokens(150),
            ranker,
            ..CompressOptions::default()
        };
        let result = run(
            &OverlapModel::new(),
            &ws,
            "how is an amount posted to the ledger balance?",
            &options,
        )
        .unwrap();
        for chunk in &result.chunks {
            let (a, b) = (chunk.start_line as usize, chunk.end_line as usize);
            let only_punctuation = lines[a - 1..b]
                .iter()
                .all(|l| l.trim().chars().all(|c| "{}();,".contains(c)));
            let lone_header = chunk.kind == ctxzip_chunker::ChunkKind::Impl && a == b;
            assert!(
                !only_punctuation && !lone_header,
                "a skeleton was selected: {chunk:?}\n{}",
                result.context
            );
        }
    }
}

#[test]
fn a_long_instruction_costs_a_bounded_window_of_model_work() {
    let ws = Workspace::new(&[
        ("billing.py", Lang::Python, BILLING),
        ("rounding.py", Lang::Python, ROUNDING),
    ]);
    let options = CompressOptions {
        budget: Budget::Tokens(60),
        ..CompressOptions::default()
    };
    let short_model = OverlapModel::new();
    let short = run(
        &short_model,
        &ws,
        "where does an invoice total get its tax?",
        &options,
    )
    .unwrap();
    // About 100 KB: far more than the model's window of 4096 tokens.
    let filler = "Our team relies on this service every day and we are grateful for it. ";
    let long = format!(
        "Invoice totals are wrong when a tax rate is given.\n{}\nThe tax must be added to the invoice subtotal.\n",
        filler.repeat(1500)
    );
    let long_model = OverlapModel::new();
    let result = run(&long_model, &ws, &long, &options).unwrap();
    assert!(
        result.context.contains("def compute_invoice_total"),
        "{}",
        result.context
    );
    // The model reads at most 64 tokens of a query: the long one costs about what a question
    // costs, though the whole of it would not even fit the window.
    let (long_tokens, short_tokens) = (result.stats.model_tokens, short.stats.model_tokens);
    assert!(short_tokens > 0);
    assert!(
        long_tokens <= 3 * short_tokens,
        "long query {long_tokens} model tokens vs short {short_tokens}"
    );
}

/// With the chunks conditioned on the query instead, the query is read once, as the prefix
/// every candidate shares, cut to its most informative [`MAX_PREFIX_QUERY_TOKENS`]: a 100 KB
/// instruction costs at most that many tokens more than a question.
#[test]
fn a_long_instruction_read_once_as_a_prefix_costs_a_bounded_prefix() {
    let ws = Workspace::new(&[
        ("billing.py", Lang::Python, BILLING),
        ("rounding.py", Lang::Python, ROUNDING),
    ]);
    let options = CompressOptions {
        budget: Budget::Tokens(60),
        conditioning: Conditioning::ChunkGivenQuery,
        ..CompressOptions::default()
    };
    let question = "where does an invoice total get its tax?";
    let short = run(&OverlapModel::new(), &ws, question, &options).unwrap();
    let filler = "Our team relies on this service every day and we are grateful for it. ";
    let long = format!(
        "Invoice totals are wrong when a tax rate is given.\n{}\nThe tax must be added to the invoice subtotal.\n",
        filler.repeat(1500)
    );
    for conditioning in [Conditioning::ChunkGivenQuery, Conditioning::ByLength] {
        let options = CompressOptions {
            conditioning,
            ..options.clone()
        };
        let result = run(&OverlapModel::new(), &ws, &long, &options).unwrap();
        assert!(
            result.context.contains("def compute_invoice_total"),
            "{conditioning:?}: {}",
            result.context
        );
        let (long_tokens, short_tokens) = (result.stats.model_tokens, short.stats.model_tokens);
        assert!(short_tokens > 0);
        assert!(
            long_tokens <= short_tokens + MAX_PREFIX_QUERY_TOKENS,
            "{conditioning:?}: long query {long_tokens} model tokens vs short {short_tokens}"
        );
    }
    // By length, a question that fits the window is read after each candidate, as by default.
    let by_length = CompressOptions {
        conditioning: Conditioning::ByLength,
        ..options.clone()
    };
    let default = CompressOptions {
        budget: Budget::Tokens(60),
        ..CompressOptions::default()
    };
    let a = run(&OverlapModel::new(), &ws, question, &by_length).unwrap();
    let b = run(&OverlapModel::new(), &ws, question, &default).unwrap();
    assert_eq!(a.context, b.context);
    assert_eq!(a.stats.model_tokens, b.stats.model_tokens);
}

const MERGE_ESM: &str = "export class ZodObject {\n  merge(merging) {\n    const merged = new ZodObject({\n      unknownKeys: merging._def.unknownKeys,\n      catchall: merging._def.catchall,\n      shape: () => ({ ...this._def.shape(), ...merging._def.shape() }),\n      typeName: ZodFirstPartyTypeKind.ZodObject,\n    });\n    return merged;\n  }\n}\n";

#[test]
fn a_definition_copied_in_bundles_and_stubs_is_shown_once() {
    // The same source built twice (ESM and CommonJS) and an unrelated function of the same
    // name in another file, which is no copy.
    let cjs = MERGE_ESM.replace("export class", "class") + "exports.ZodObject = ZodObject;\n";
    let ws = Workspace::new(&[
        ("index.mjs", Lang::JavaScript, MERGE_ESM),
        ("index.cjs", Lang::JavaScript, &cjs),
        (
            "other.js",
            Lang::JavaScript,
            "class ZodObject {\n  merge(a, b) {\n    return Object.assign({}, a, b);\n  }\n}\n",
        ),
        (
            "filler.js",
            Lang::JavaScript,
            &"// unrelated filler text for the budget\n".repeat(40),
        ),
    ]);
    let model = OverlapModel::new();
    let query = "how does merge combine the shape, unknownKeys and catchall of two objects?";
    let shown = |keep_copies: bool| {
        let options = CompressOptions {
            budget: Budget::Tokens(400),
            keep_copies,
            ..CompressOptions::default()
        };
        let result = run(&model, &ws, query, &options).unwrap();
        let mut paths: Vec<String> = result
            .chunks
            .iter()
            .filter(|c| c.name.as_deref() == Some("ZodObject.merge"))
            .map(|c| c.path.clone())
            .collect();
        paths.sort();
        paths
    };
    let once = shown(false);
    assert_eq!(
        once.len(),
        2,
        "one copy of the bundles plus the unrelated merge: {once:?}"
    );
    assert!(once.contains(&"other.js".to_string()), "{once:?}");
    let all = shown(true);
    assert_eq!(all.len(), 3, "every copy when asked for: {all:?}");
    // The same test on two texts, as `bench quality` counts an answer's copies.
    assert!(texts_are_copies(MERGE_ESM, &cjs));
    assert!(!texts_are_copies(
        MERGE_ESM,
        "merge(a, b) {\n    return Object.assign({}, a, b);\n  }\n"
    ));

    // A type stub beside its implementation: the implementation is shown.
    let ws = Workspace::new(&[
        (
            "attr/converters.py",
            Lang::Python,
            "class Converter:\n    def __init__(self, converter, *, takes_self=False, takes_field=False):\n        self.converter = converter\n        self.takes_self = takes_self\n        self.takes_field = takes_field\n",
        ),
        (
            "attr/converters.pyi",
            Lang::Python,
            "class Converter:\n    def __init__(self, converter, *, takes_self: bool = ..., takes_field: bool = ...) -> None: ...\n",
        ),
        (
            "filler.py",
            Lang::Python,
            &"# unrelated filler text for the budget\n".repeat(40),
        ),
    ]);
    let query = "what do takes_self and takes_field of a Converter do?";
    for (keep_copies, expected) in [
        (false, vec!["attr/converters.py"]),
        (true, vec!["attr/converters.py", "attr/converters.pyi"]),
    ] {
        let options = CompressOptions {
            budget: Budget::Tokens(200),
            keep_copies,
            ..CompressOptions::default()
        };
        let result = run(&model, &ws, query, &options).unwrap();
        let mut paths: Vec<&str> = result
            .chunks
            .iter()
            .filter(|c| c.name.as_deref() == Some("Converter.__init__"))
            .map(|c| c.path.as_str())
            .collect();
        paths.sort();
        assert_eq!(paths, expected, "keep_copies {keep_copies}");
    }
}

#[test]
fn copies_of_a_definition_the_query_names_are_shown_once() {
    // Naming a function pins every definition of that name; the bundles' copies of it are
    // still one definition (three pinned copies once filled a budget before anything else).
    let esm = "export function merge_shapes(a, b) {\n  const shape = { ...a.shape, ...b.shape };\n  return { shape, unknownKeys: b.unknownKeys, catchall: b.catchall };\n}\n";
    let cjs = esm.replace("export function", "function") + "exports.merge_shapes = merge_shapes;\n";
    let ws = Workspace::new(&[
        ("index.mjs", Lang::JavaScript, esm),
        ("index.cjs", Lang::JavaScript, &cjs),
        (
            "filler.js",
            Lang::JavaScript,
            &"// unrelated filler text for the budget\n".repeat(40),
        ),
    ]);
    let model = OverlapModel::new();
    let query = "why does merge_shapes drop the first object's catchall?";
    for (keep_copies, expected) in [(false, 1), (true, 2)] {
        let options = CompressOptions {
            budget: Budget::Tokens(300),
            keep_copies,
            ..CompressOptions::default()
        };
        let result = run(&model, &ws, query, &options).unwrap();
        let shown = names(&result)
            .iter()
            .filter(|n| n.as_str() == "merge_shapes")
            .count();
        assert_eq!(
            shown,
            expected,
            "keep_copies {keep_copies}: {:?}",
            names(&result)
        );
    }
}

#[test]
fn progress_reports_change_no_answer_and_come_in_stage_order() {
    // The overlap model's deadline lets a number of tokens through per call, which a sliced
    // call would multiply; the real engines' deadline is a point in time. So no deadline here.
    let (mut scored, mut fined) = (0, 0);
    for seed in 0..60u64 {
        let mut rng = Rng::new(seed);
        let ws = random_workspace(&mut rng);
        let model = OverlapModel::new();
        let total: usize = ws.files.iter().map(|f| model.count_tokens(&f.2)).sum();
        let query: Vec<&str> = (0..rng.range(1, 6)).map(|_| *rng.pick(WORDS)).collect();
        let query = query.join(" ");
        let options = CompressOptions {
            budget: Budget::Tokens(rng.range(total / 4 + 1, total / 2 + 2)),
            max_candidates: rng.range(1, 30),
            fine_rate: 0.3,
            ..CompressOptions::default()
        };
        let case = format!("seed {seed}, {options:?}");
        let plain = run(&model, &ws, &query, &options);
        let events = std::sync::Mutex::new(Vec::<Progress>::new());
        let sink = |p: &Progress| events.lock().unwrap().push(p.clone());
        let reported = compress_with_progress(
            &model,
            &ws.docs(),
            &query,
            &options,
            &CancelFlag::new(),
            Some(&sink),
        );
        let events = events.into_inner().unwrap();
        let (plain, reported) = match (plain, reported) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "{case}");
                continue;
            }
            (a, b) => panic!("{case}: {a:?} vs {b:?}"),
        };
        assert_eq!(plain.context, reported.context, "{case}");
        assert_eq!(names(&plain), names(&reported), "{case}");

        // Stages in order, the bar never going back, ending in assembly.
        assert_eq!(
            events.first().map(|e| e.stage),
            Some(Stage::Candidates),
            "{case}"
        );
        assert_eq!(
            events.last().map(|e| e.stage),
            Some(Stage::Assembly),
            "{case}"
        );
        for pair in events.windows(2) {
            assert!(pair[0].stage <= pair[1].stage, "{case}: {events:?}");
            assert!(
                pair[0].percentage() <= pair[1].percentage(),
                "{case}: {events:?}"
            );
            assert!(
                pair[0].model_tokens <= pair[1].model_tokens,
                "{case}: {events:?}"
            );
        }
        // Scoring counts up to the candidates the result says were scored, a few at a time.
        let scoring: Vec<&Progress> = events
            .iter()
            .filter(|e| e.stage == Stage::Scoring)
            .collect();
        if reported.stats.candidates > 0 {
            scored += 1;
            let n = reported.stats.candidates;
            assert_eq!(scoring.first().map(|e| e.done), Some(0), "{case}");
            assert_eq!(
                scoring.last().map(|e| (e.done, e.total)),
                Some((n, n)),
                "{case}"
            );
            assert!(scoring.len() <= 1 + 8, "{case}: {scoring:?}");
            assert!(scoring.len() >= 2, "{case}: {scoring:?}");
            // Between the first and the last slice there is a time left to show; at the end
            // there is none.
            for e in &scoring {
                let between = e.done > 0 && e.done < n;
                assert_eq!(e.eta.is_some(), between, "{case}: {scoring:?}");
            }
        } else {
            assert!(scoring.is_empty(), "{case}: {scoring:?}");
        }
        let fine: Vec<usize> = events
            .iter()
            .filter(|e| e.stage == Stage::Fine)
            .map(|e| e.done)
            .collect();
        if !fine.is_empty() {
            fined += 1;
            assert_eq!(fine, [0, 1, 2], "{case}");
        }
    }
    assert!(scored > 30, "{scored} cases scored candidates");
    assert!(fined > 5, "{fined} cases ran the fine stage");
}
