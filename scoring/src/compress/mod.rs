//! The LongCodeZip pipeline over a workspace: cheap candidates (BM25 and structure, with code
//! preferred over tests, docs and other kinds of files the query does not ask for: [`roles`];
//! a definition copied into several files shown once: `copies.rs`), the coarse
//! conditional-perplexity ranking on a bounded window of the query ([`window`]), the callees
//! of the best-ranked chunks (found by name, no model cost) ahead of the lexical tail, a token
//! budget that is never exceeded (counted in the request's tokenizer: [`BudgetCounter`]), the
//! fine block-level pruning of kept functions, and assembly in file order.
//!
//! Model work per query is bounded: only candidates are scored, each truncated to
//! `max_chunk_tokens`; the scorer reuses KV states and caches across calls.

pub mod assemble;
pub mod bm25;
mod copies;
mod counts;
pub mod fine;
mod no_model;
pub mod progress;
mod request;
pub mod roles;
mod tokenizer;
pub mod window;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ctxzip_chunker::chunk::content_hash;
use ctxzip_chunker::lines::LineIndex;
use ctxzip_chunker::{Chunk, ChunkKind, FileRole, Lang};
use serde::{Deserialize, Serialize};

pub use assemble::Format;
use assemble::{FileRuns, assemble, merge_runs};
use bm25::Bm25;
pub use copies::texts_are_copies;
use counts::TokenCounts;
use fine::LineStats;
pub use no_model::NoModel;
pub use progress::{Progress, ProgressSink, Stage};
pub use request::{CompressError, CompressRequest};
pub use tokenizer::{BudgetCounter, BudgetTokenizer, TokenizerFileError, TokenizerSpec};
pub use window::QueryWeights;

use crate::engine::{CancelFlag, ChunkInput, ScoreOptions, ScoreOutput};
use crate::model::ScoringModel;

/// LongCodeZip as published: one sequence at a time, nothing reused or cached.
const NO_REUSE: ScoreOptions = ScoreOptions {
    max_packed_seqs: 1,
    reuse_kv_states: false,
    reuse_prefix: false,
    use_cache: false,
    deadline: None,
    max_tokens: None,
};

/// One file as the pipeline sees it.
#[derive(Clone, Copy)]
pub struct Document<'a> {
    /// Relative to the workspace root; shown in headers and results.
    pub path: &'a str,
    pub lang: Lang,
    pub text: &'a str,
    pub chunks: &'a [Chunk],
    /// Secrets the reader replaced in `text` (counted in [`Stats::redacted`]).
    pub redacted: usize,
}

impl<'a> From<&'a ctxzip_chunker::FileChunks> for Document<'a> {
    fn from(file: &'a ctxzip_chunker::FileChunks) -> Self {
        Document {
            path: &file.path,
            lang: file.lang,
            text: &file.text,
            chunks: &file.chunks,
            redacted: file.redactions.len(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// At most this many tokens, in [`CompressOptions::tokenizer`].
    Tokens(usize),
    /// This fraction of the workspace's tokens (0 < r ≤ 1).
    Rate(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Ranker {
    /// Conditional perplexity under the model (ctxzip).
    Model,
    /// The model's ranking fused with BM25's by reciprocal rank (the default).
    // `1/(60 + rank)` summed: each signal corrects the other's outliers. The default: on
    // questions over whole repositories the model alone answered fewer than BM25 with file
    // roles (dev 54% vs 63% at 2000 tokens), fused as many on the dev set and more on the
    // held-out one (71% vs 58%), at the same model cost (BENCHMARKS.md, `## Questions and
    // instructions over whole repositories`).
    Fused,
    /// BM25 alone, whole chunks: the lexical baseline, no model work; with the budget in a
    /// tokenizer other than the model's, no model is loaded at all.
    Bm25,
}

impl Ranker {
    /// The ranker's name, as every surface spells it.
    pub fn name(self) -> &'static str {
        match self {
            Ranker::Model => "model",
            Ranker::Fused => "fused",
            Ranker::Bm25 => "bm25",
        }
    }
}

impl std::str::FromStr for Ranker {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "model" => Ok(Ranker::Model),
            "fused" => Ok(Ranker::Fused),
            "bm25" => Ok(Ranker::Bm25),
            other => Err(format!(
                "unknown ranker {other:?}: use model, fused or bm25"
            )),
        }
    }
}

/// What joining a kept run can save at most, in tokens (an elision marker and its line
/// breaks): the refill renders any unit within this of fitting rather than ruling it out.
const REFILL_JOIN_SLACK_TOKENS: usize = 16;

/// Units rendered alone to find the smallest answer when none fits the budget.
const SMALLEST_RENDERED: usize = 64;

/// The budget of a request that names none, on every surface (CLI, LSP, MCP).
pub const DEFAULT_BUDGET_TOKENS: usize = 2000;

/// The model-token budget of a request that names none, on every surface: unbounded, a
/// first query in a fresh process reads 7-9k model tokens (2-2.5 minutes on 2 cores, portable
/// build). Cached results are free, so repeated and similar queries still score every
/// candidate. What 6000 costs in answers: BENCHMARKS.md, "A model-token budget per query".
pub const DEFAULT_MAX_MODEL_TOKENS: usize = 6000;

#[derive(Clone, Debug)]
pub struct Focus {
    pub path: String,
    /// 1-based.
    pub line: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct CompressOptions {
    pub budget: Budget,
    /// What the budget (and the reported token counts) count in; the model's own work
    /// counts in the model's tokenizer whatever this is.
    pub tokenizer: BudgetTokenizer,
    pub format: Format,
    pub focus: Option<Focus>,
    /// Prune kept functions to blocks.
    pub fine: bool,
    pub ranker: Ranker,
    /// Chunks the model scores per query, at most (pinned chunks come on top).
    pub max_candidates: usize,
    /// Chunk text scored by the model is cut to about this many tokens.
    pub max_chunk_tokens: usize,
    /// Share of a kept function's tokens the fine stage keeps on average (R_fine).
    pub fine_rate: f32,
    /// The fine stage reads at most about `max_fine_tokens / fine_rate` tokens of the best
    /// functions (its model cost, twice: with and without the query); larger budgets keep
    /// the rest whole. 750 keeps the dev set's recall of 1000 at fewer model tokens; 500
    /// already lost needles (`bench quality --max-fine-tokens`, BENCHMARKS.md `## Quality`).
    pub max_fine_tokens: usize,
    /// How much the coarse score moves a function's share (β).
    pub beta: f32,
    /// Block boundaries at lines whose NLL exceeds mean + k·std.
    pub spike_k: f32,
    /// BM25's term-frequency saturation in the candidate stage (and the BM25 ranker).
    pub bm25_k1: f32,
    /// BM25's query-term-frequency saturation (Okapi's k3): a term the query says often
    /// counts up to (k3 + 1) times one it says once; 0 counts each once.
    pub bm25_k3: f32,
    /// The model reads at most this many tokens of the query (the most informative
    /// sentences of a longer one, [`window::query_window`]); the lexical stages read it all.
    /// 0 reads every query whole.
    pub max_query_tokens: usize,
    /// How each query token's evidence counts in a candidate's score
    /// ([`window::QueryWeights`]).
    pub query_weights: QueryWeights,
    /// Frame what the model reads: each candidate led by its file's path, and the query by
    /// [`QUESTION_FRAME`] (whose tokens weigh 0), so that the model reads the query as a
    /// question about the code above it rather than as more of the file.
    pub framed: bool,
    /// Weight of chunks in files that are not code (tests, docs, stubs, examples,
    /// changelogs, data; see [`FileRole`]) in the candidate stage and BM25's order, relative
    /// to code, unless the query asks for that kind of file ([`roles::wanted_roles`]).
    /// 1.0 ranks every kind of file alike. On the dev set's questions over whole package
    /// roots BM25 answered 49% at 2000 tokens with 1.0 and 63% with 0.3; 0.1 gave the same
    /// cells as 0.3 (BENCHMARKS.md, `## Questions and instructions over whole repositories`).
    pub other_roles_weight: f32,
    /// Select container headers and closing punctuation on their own ([`is_skeleton`]), as
    /// ctxzip did before; off, they are printed only when the whole workspace fits. For
    /// measuring what leaving them out returns to the budget.
    pub keep_skeletons: bool,
    /// Show every copy of a definition (build bundles, vendored copies, type stubs beside
    /// their implementation) rather than one (`compress/copies.rs`). For measuring what
    /// showing one returns to the budget.
    pub keep_copies: bool,
    /// The model reads the kinds of files the query asks for (code, unless its first line
    /// names tests, docs, ...; [`roles::wanted_roles`]) before any other: the candidate pool
    /// is filled with them first, and candidates of other kinds rank after them and their
    /// callees. Off, the pool is BM25's best of every kind (role-weighted) and the model's
    /// score alone orders it.
    pub code_first: bool,
    /// After the model's candidates, rank the definitions that this many of the best of them
    /// call (callees found by name), ahead of the chunks only BM25 ranked; 0 turns it off,
    /// `usize::MAX` (the default) takes every candidate the model ranked.
    pub callers: usize,
    /// The callees of this many of the best-ranked chunks come right after their caller,
    /// ahead of the rest of the ranking: an instruction's answer is often a function and the
    /// helpers it calls.
    pub callees_follow: usize,
    /// The fine stage prunes kept units of every kind (types, docs, top-level code), not only
    /// functions: a class whose docstring is 1,300 tokens otherwise takes two thirds of a
    /// 2000-token budget. With [`CompressOptions::fine_docs`] (alone it lost questions to
    /// types whose doc comments it had to keep whole; BENCHMARKS.md, "Ninth session" and
    /// "Tenth session").
    pub fine_every_kind: bool,
    /// The fine stage may drop the rows of a long attached doc comment after its first
    /// ([`fine::split_doc_comment`]); otherwise the comment is part of the signature block
    /// it always keeps (a `from_reader` with 100 lines of doc comment kept 900 tokens whole).
    pub fine_docs: bool,
    /// Which text the coarse stage conditions on which ([`Conditioning`]).
    pub conditioning: Conditioning,
    /// Which chunks the model reads, and in which order ([`ReadOrder`]);
    /// [`ReadOrder::Questions`] by default.
    pub read_order: ReadOrder,
    /// LongCodeZip as published: every chunk scored whole, no reuse, one pass per line in
    /// the fine stage. For benchmarks.
    pub faithful: bool,
    /// A latency budget for the model's work, from the start of the call: candidates are
    /// scored in the candidate stage's order ([`ReadOrder`]; the pinned ones, which rank first
    /// whatever their score, last) until it passes, the rest keep their BM25 order behind
    /// them, and functions the fine stage did not reach stay whole. Results already cached are used whatever the time, so
    /// asking again refines the answer.
    pub deadline: Option<Duration>,
    /// A budget for the model's work, in tokens decoded per request (sent, with a remote
    /// scorer); cached results cost nothing. The fine stage's share (both of its passes over
    /// what it may read, and the query) is set aside first: by measurement it answers more
    /// per model token than the coarse stage (BENCHMARKS.md, "What each model stage adds").
    /// The coarse stage scores candidates in the candidate stage's order with the rest (the
    /// pinned ones last); those it does not reach keep their BM25 order behind the scored
    /// ones, as under a deadline. Default [`DEFAULT_MAX_MODEL_TOKENS`]; `None`: no bound.
    pub max_model_tokens: Option<usize>,
}

/// How the coarse stage asks the model whether a candidate bears on the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Conditioning {
    /// LongCodeZip's coarse score: how much the candidate lowers the query's NLL, on a window
    /// of at most [`CompressOptions::max_query_tokens`] of the query, decoded after every
    /// candidate.
    QueryGivenChunk,
    /// How much the query lowers the candidate's NLL (mean per candidate token): the query,
    /// up to [`MAX_PREFIX_QUERY_TOKENS`] of it, is decoded once as a prefix the candidates
    /// share; each candidate's NLL without it does not depend on the query and is cached
    /// across queries. The fine stage reads the same prefix. Measured on dev instructions:
    /// no better than the default, for more model work (BENCHMARKS.md, "Ninth session").
    ChunkGivenQuery,
    /// [`Conditioning::ChunkGivenQuery`] for a query longer than the window
    /// ([`CompressOptions::max_query_tokens`]), else [`Conditioning::QueryGivenChunk`].
    ByLength,
}

/// Which chunks the model reads (the pool of [`CompressOptions::max_candidates`]) and in
/// which order (under a model-token budget or a deadline it reads only the first): the
/// candidate stage's ranking, which only decides what the model sees. What is printed,
/// the fusion with BM25 and the BM25 ranker keep BM25's own scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ReadOrder {
    /// BM25's order (role-weighted, [`bm25::DEFAULT_B`]), every kind of chunk alike.
    Bm25,
    /// Functions and methods that say much of the query first: BM25 with length
    /// normalization [`READ_ORDER_B`] and every other definition or top-level code at
    /// [`NON_CALLABLE_READ_WEIGHT`] of its score. The model reads a head of at most
    /// [`CompressOptions::max_chunk_tokens`] whatever a chunk's length, so a long function
    /// that says the query's words often need not be marked down for its length as it is
    /// for the output, where it costs all of it; and the answers to a question about how
    /// code behaves are functions (81 of the 82 answers among the dev questions' first 12
    /// reads), while classes, structs and top-level code took 24% of those reads.
    /// Dev questions with an answer within the first 12 reads: 62 of 81 → 65 (BENCHMARKS.md,
    /// "Twenty-first session"). A class, struct or impl the query names as code is pinned,
    /// and its members (in its file) are read as if their score were [`FAVOURED_WEIGHT`]
    /// times as high: a question about `click.Choice` is answered by `Choice.convert`
    /// (BENCHMARKS.md, "Twenty-third session").
    Functions,
    /// [`ReadOrder::Functions`] for a query the model reads whole (up to
    /// [`CompressOptions::max_query_tokens`]: a question, but also a doc comment or a short
    /// function), [`ReadOrder::Bm25`] for a longer one (an instruction, which names the code
    /// it is about; the functions-first order reached no more of the dev and held-out
    /// instructions' answers). It answered 63 of the 81 dev questions under the default
    /// budget against 60 but lost a needle and two callee goal tasks: a doc comment and a
    /// function without its body are short queries too (BENCHMARKS.md, "Twenty-first
    /// session").
    ByLength,
    /// [`ReadOrder::Functions`] for a question the model reads whole: a query of at most
    /// [`CompressOptions::max_query_tokens`] that asks in words ([`roles::asks_question`]);
    /// [`ReadOrder::Bm25`] for an instruction, a doc comment or code. The default.
    Questions,
}

/// BM25's length normalization in [`ReadOrder::Functions`].
pub const READ_ORDER_B: f32 = 0.5;

/// What the chunks a request points at weigh in the candidate stage against the rest: the
/// focus file's other chunks ([`CompressOptions::focus`]), and in a question's read order the
/// members of a class the question names.
const FAVOURED_WEIGHT: f32 = 1.5;

/// What a chunk that is not a function or a method (a class, struct or impl header with its
/// fields, top-level code) weighs in [`ReadOrder::Functions`], relative to one that is.
pub const NON_CALLABLE_READ_WEIGHT: f32 = 0.5;

/// The most of a query the model reads as the candidates' shared prefix
/// ([`Conditioning::ChunkGivenQuery`]).
pub const MAX_PREFIX_QUERY_TOKENS: usize = 1024;

/// What leads the query when the model reads it framed ([`CompressOptions::framed`]).
pub const QUESTION_FRAME: &str = "A question about the code above: ";

impl CompressOptions {
    /// Names the limit that can leave candidates unscored, for the message that says it did:
    /// `deadline` and `tokens(max)` are the caller's spellings of [`CompressOptions::deadline`]
    /// and [`CompressOptions::max_model_tokens`]; with both set, either may have stopped it.
    pub fn model_limit_name(&self, deadline: &str, tokens: impl Fn(usize) -> String) -> String {
        match (self.deadline, self.max_model_tokens) {
            (None, Some(max)) => tokens(max),
            (Some(_), Some(max)) => format!("{deadline} or {}", tokens(max)),
            (_, None) => deadline.to_owned(),
        }
    }
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            budget: Budget::Tokens(DEFAULT_BUDGET_TOKENS),
            tokenizer: BudgetTokenizer::Model,
            format: Format::Text,
            focus: None,
            fine: true,
            ranker: Ranker::Fused,
            max_candidates: 24,
            max_chunk_tokens: 192,
            fine_rate: 0.5,
            max_fine_tokens: 750,
            beta: 0.5,
            spike_k: 0.5,
            bm25_k1: bm25::DEFAULT_K1,
            bm25_k3: bm25::DEFAULT_K3,
            max_query_tokens: 64,
            query_weights: QueryWeights::Uniform,
            framed: false,
            other_roles_weight: 0.3,
            code_first: true,
            keep_skeletons: false,
            keep_copies: false,
            callers: usize::MAX,
            callees_follow: 0,
            conditioning: Conditioning::QueryGivenChunk,
            read_order: ReadOrder::Questions,
            fine_every_kind: true,
            fine_docs: true,
            faithful: false,
            deadline: None,
            max_model_tokens: Some(DEFAULT_MAX_MODEL_TOKENS),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct SelectedChunk {
    pub path: String,
    pub start_line: u32,
    pub end_line: u32,
    pub name: Option<String>,
    /// function, method, header, glue, ... (lower case).
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub kind: ChunkKind,
    pub score: f32,
    /// Tokens of this chunk in the output (after fine pruning).
    pub tokens: usize,
    /// Line runs kept (1-based, inclusive); one run when the chunk is whole.
    pub kept_lines: Vec<[u32; 2]>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Stats {
    /// Tokens of every chunk: exact up to 1 MiB of chunk text and for a rate budget; beyond,
    /// the chunks no stage counted are estimated from their bytes (`compress/counts.rs`).
    pub original_tokens: usize,
    pub compressed_tokens: usize,
    pub ratio: f64,
    pub elapsed_ms: f64,
    /// Tokens the model processed for this query.
    pub model_tokens: usize,
    pub budget_tokens: usize,
    pub candidates: usize,
    /// Candidates and functions the model did not reach before the deadline, or within
    /// the model-token budget.
    pub deadline_skipped: usize,
    pub files: usize,
    pub chunks: usize,
    /// Secrets replaced with `[REDACTED:<rule>]` in the files read (all, not just those
    /// selected).
    pub redacted: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Compressed {
    pub context: String,
    pub chunks: Vec<SelectedChunk>,
    pub stats: Stats,
}

/// A unit of selection: one chunk of one document.
struct Unit {
    doc: usize,
    chunk: usize,
    bm25: f32,
    score: f32,
    pinned: bool,
    /// The unit's file is of a kind the query asks for (code, or a kind it names).
    wanted: bool,
    /// Nothing but a container's opening line or closing punctuation ([`is_skeleton`]).
    skeleton: bool,
    /// A copy of a definition another unit shows ([`copies`]).
    copy: bool,
    /// Where the candidate stage places the unit ([`ReadOrder`]); BM25's score unless the
    /// read order says otherwise.
    read_key: f32,
}

/// Compresses `docs` for `query` within the budget. Blocking: call from a worker thread.
pub fn compress(
    scorer: &dyn ScoringModel,
    docs: &[Document],
    query: &str,
    options: &CompressOptions,
    cancel: &CancelFlag,
) -> Result<Compressed, CompressError> {
    compress_with_progress(scorer, docs, query, options, cancel, None)
}

/// [`compress`], reporting each stage to `progress` as it goes ([`progress`]); the same
/// answer, and with `None` the same work.
pub fn compress_with_progress(
    scorer: &dyn ScoringModel,
    docs: &[Document],
    query: &str,
    options: &CompressOptions,
    cancel: &CancelFlag,
    progress: Option<ProgressSink>,
) -> Result<Compressed, CompressError> {
    compress_counting(
        scorer,
        docs,
        query,
        options,
        cancel,
        progress,
        Counting::Lazy,
    )
}

/// When the units' tokens are counted ([`TokenCounts`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Counting {
    /// Only where a stage needs a count its floor cannot settle.
    Lazy,
    /// Every unit first: what the lazy way must match.
    #[cfg_attr(not(test), allow(dead_code))]
    All,
}

fn compress_counting(
    scorer: &dyn ScoringModel,
    docs: &[Document],
    query: &str,
    options: &CompressOptions,
    cancel: &CancelFlag,
    progress: Option<ProgressSink>,
    counting: Counting,
) -> Result<Compressed, CompressError> {
    let started = Instant::now();
    let deadline = options.deadline.map(|d| started + d);
    let decoded_before = scorer.stats().tokens_decoded;
    let reporter = Reporter {
        sink: progress,
        scorer,
        decoded_before,
    };
    let query = query.trim();
    if query.is_empty() {
        return Err(CompressError::EmptyQuery);
    }
    match options.budget {
        Budget::Tokens(0) => return Err(CompressError::BadBudget { budget: 0 }),
        Budget::Rate(rate) if !(rate > 0.0 && rate <= 1.0) => {
            return Err(CompressError::BadRate { rate });
        }
        _ => {}
    }

    reporter.report(|_| Progress::start(Stage::Candidates));
    // Everything the budget counts (units, headers, the output) counts here.
    let counter = BudgetCounter::new(scorer, options.tokenizer);
    // The BM25 ranker has no candidates to order, and reads nothing with the model.
    let (mut units, texts, index) = lexical_units(
        docs,
        query,
        options,
        options.ranker != Ranker::Bm25 && functions_first(scorer, query, options),
    )?;
    let counts = TokenCounts::new(counter, &texts);
    // A workspace that fits the budget whole needs no ranking and no pruning. Each unit is at
    // least one token: when even that does not fit, the workspace is not counted whole here
    // (a rate is a share of the whole, so it is).
    let n_docs = units.iter().map(|u| u.doc).collect::<HashSet<_>>().len();
    let might_fit_whole =
        matches!(options.budget, Budget::Tokens(n) if units.len() * 4 + n_docs * 16 <= n);
    let exact_total =
        (counting == Counting::All || might_fit_whole || matches!(options.budget, Budget::Rate(_)))
            .then(|| counts.count_all());
    let budget = match (options.budget, exact_total) {
        (Budget::Tokens(n), _) => n,
        (Budget::Rate(r), Some(total)) => ((total as f64 * r).floor() as usize).max(1),
        (Budget::Rate(_), None) => unreachable!("a rate counts the whole workspace"),
    };
    let everything_fits = might_fit_whole
        && exact_total.is_some_and(|total| total + units.len() * 3 + n_docs * 16 <= budget);
    let ranker = if everything_fits {
        Ranker::Bm25
    } else {
        options.ranker
    };
    // What the model reads of the query, and how: only a ranker that uses the model counts
    // the query in its tokens (a BM25 request may have no model behind it: [`NoModel`]).
    let model_reads = ranker != Ranker::Bm25;
    // LongCodeZip as published reads the whole query.
    let max_query_tokens = if options.faithful {
        0
    } else {
        options.max_query_tokens
    };
    let count_batch = |texts: &[&str]| scorer.count_tokens_batch(texts);
    let conditioning = match options.conditioning {
        _ if options.faithful => Conditioning::QueryGivenChunk,
        Conditioning::ByLength
            if model_reads
                && max_query_tokens > 0
                && count_batch(&[query])[0] > max_query_tokens =>
        {
            Conditioning::ChunkGivenQuery
        }
        Conditioning::ByLength => Conditioning::QueryGivenChunk,
        other => other,
    };
    let model_query = match conditioning {
        _ if !model_reads => Cow::Borrowed(""),
        Conditioning::ChunkGivenQuery => {
            window::query_window(query, MAX_PREFIX_QUERY_TOKENS, &index, count_batch)
        }
        _ => window::query_window(query, max_query_tokens, &index, count_batch),
    };
    let framed = options.framed && !options.faithful && model_reads;
    let model_query: String = if framed {
        format!("{QUESTION_FRAME}{model_query}")
    } else {
        model_query.into_owned()
    };
    let model_query: &str = &model_query;
    // The fine stage reads the top functions, up to `fine_tokens`, and keeps about
    // `fine_rate` of them; the coarse stage may over-select by what that saves.
    let fine = options.fine && ranker != Ranker::Bm25;
    let rate = options.fine_rate.clamp(0.05, 1.0);
    let fine_tokens = if fine {
        (budget.min(options.max_fine_tokens) as f32 / rate) as usize
    } else {
        0
    };
    // A model-token budget: the fine stage's two passes (and the query before the second)
    // are set aside; the coarse stage has the rest.
    let coarse_model_tokens = options.max_model_tokens.map(|max| {
        let fine_share = if fine {
            2 * fine_tokens + count_batch(&[model_query])[0]
        } else {
            0
        };
        max.saturating_sub(fine_share)
    });
    let mut skipped = 0;
    let candidates: Vec<usize> = match ranker {
        Ranker::Bm25 => {
            for unit in &mut units {
                unit.score = unit.bm25 + if unit.pinned { 1e6 } else { 0.0 };
            }
            Vec::new()
        }
        Ranker::Model | Ranker::Fused => {
            let candidates = pick_candidates(&units, options);
            // Heads are cut in the model's tokens: a budget in another tokenizer counts
            // the candidates again (remembered, like the budget's counts).
            let model_tokens: Vec<usize> = if counter.is_model() {
                candidates.iter().map(|&i| counts.get(i)).collect()
            } else {
                let candidate_texts: Vec<&str> = candidates.iter().map(|&i| texts[i]).collect();
                scorer.count_tokens_batch(&candidate_texts)
            };
            let inputs: Vec<ChunkInput> = candidates
                .iter()
                .zip(&model_tokens)
                .map(|(&i, &n_model_tokens)| {
                    let text = texts[i];
                    let text = if options.faithful {
                        text
                    } else {
                        head_for_tokens(text, n_model_tokens, options.max_chunk_tokens)
                    };
                    let text: Cow<str> = if framed {
                        Cow::Owned(format!("{}\n{text}", docs[units[i].doc].path))
                    } else {
                        Cow::Borrowed(text)
                    };
                    ChunkInput {
                        hash: content_hash(text.as_bytes()),
                        text: text.into_owned(),
                    }
                })
                .collect();
            let score_options = if options.faithful {
                NO_REUSE
            } else {
                ScoreOptions {
                    deadline,
                    max_tokens: coarse_model_tokens,
                    ..scorer.default_options()
                }
            };
            // Each candidate's score, and whether the deadline skipped it: skipped ones keep
            // score −∞ and follow the scored ones in BM25 order, still ahead of the units
            // that were never candidates.
            let scores: Vec<(f32, bool)> = if conditioning == Conditioning::ChunkGivenQuery {
                score_given_query(
                    scorer,
                    model_query,
                    &inputs,
                    score_options,
                    cancel,
                    &reporter,
                )?
                .into_iter()
                .map(|score| (score.unwrap_or(f32::NEG_INFINITY), score.is_none()))
                .collect()
            } else {
                let output = score_candidates(
                    scorer,
                    model_query,
                    &inputs,
                    score_options,
                    cancel,
                    &reporter,
                )?;
                let mut weights = window::token_weights(
                    model_query,
                    &output.query_tokens,
                    &index,
                    if options.faithful {
                        QueryWeights::Uniform
                    } else {
                        options.query_weights
                    },
                );
                if framed {
                    for (w, t) in weights.iter_mut().zip(&output.query_tokens) {
                        if t.end <= QUESTION_FRAME.len() {
                            *w = 0.0;
                        }
                    }
                }
                output
                    .scores
                    .iter()
                    .map(|score| {
                        let value = if score.skipped {
                            score.score
                        } else {
                            window::weighted_gain(&output.query_tokens, &score.query_nlls, &weights)
                        };
                        (value, score.skipped)
                    })
                    .collect()
            };
            for (&i, &(score, was_skipped)) in candidates.iter().zip(&scores) {
                units[i].score = score;
                skipped += usize::from(was_skipped);
            }
            if ranker == Ranker::Fused {
                fuse_with_bm25(&mut units, &candidates);
            }
            candidates
        }
    };

    // Order: pinned first, then by score; units the model did not see follow by BM25. With
    // `code_first`, scored units of unwanted kinds of files follow the wanted ones.
    let code_first = options.code_first && ranker != Ranker::Bm25;
    let mut order: Vec<usize> = (0..units.len()).collect();
    let scored: HashSet<usize> = candidates.iter().copied().collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| {
            let u = &units[i];
            let scored = scored.contains(&i) || ranker == Ranker::Bm25;
            (u.pinned, scored && (u.wanted || !code_first), scored)
        };
        key(b)
            .cmp(&key(a))
            .then(units[b].score.total_cmp(&units[a].score))
            .then(units[b].bm25.total_cmp(&units[a].bm25))
            .then(a.cmp(&b))
    });

    if options.callers > 0 && !options.faithful && ranker != Ranker::Bm25 {
        let n_scored = order
            .iter()
            .take_while(|&&i| {
                units[i].pinned || scored.contains(&i) && (units[i].wanted || !code_first)
            })
            .count();
        order = with_callees(
            order,
            n_scored,
            options.callers,
            options.callees_follow,
            &units,
            docs,
            &texts,
        );
    }

    // A container's opening line or a closing brace alone says nothing, and a copy says what
    // its twin says: such units are only printed when the whole workspace fits.
    if !everything_fits {
        order.retain(|&i| !units[i].skeleton && !units[i].copy);
    }

    let mut rank = vec![0; units.len()];
    for (position, &i) in order.iter().enumerate() {
        rank[i] = position;
    }

    // Coarse: whole units, in order, within the coarse budget.
    let header_memo: Vec<std::cell::OnceCell<usize>> =
        docs.iter().map(|_| std::cell::OnceCell::new()).collect();
    let header_tokens = |doc: usize| {
        *header_memo[doc]
            .get_or_init(|| counter.count(&format!("==> {} <==\n", docs[doc].path)) + 3)
    };
    let path_memo: Vec<std::cell::OnceCell<usize>> =
        docs.iter().map(|_| std::cell::OnceCell::new()).collect();
    let path_tokens = |doc: usize| *path_memo[doc].get_or_init(|| counter.count(docs[doc].path));
    // At most `path_tokens`, without counting (the refill's first bound for a unit of a file
    // not shown yet).
    let path_floor_memo: Vec<std::cell::OnceCell<usize>> =
        docs.iter().map(|_| std::cell::OnceCell::new()).collect();
    let path_floor =
        |doc: usize| *path_floor_memo[doc].get_or_init(|| counter.min_tokens(docs[doc].path));
    let coarse_budget = budget + (fine_tokens as f32 * (1.0 - rate)) as usize;
    let mut kept: Vec<usize> = Vec::new();
    let mut files_seen: HashSet<usize> = HashSet::new();
    let mut used = 0;
    for &i in &order {
        // A unit costs at least one token and 3 of framing: once that does not fit, nothing
        // does. A unit whose floor does not fit is not counted.
        if used + 4 > coarse_budget {
            break;
        }
        if used + counts.floor(i) + 3 > coarse_budget {
            continue;
        }
        let unit = &units[i];
        let overhead = if files_seen.contains(&unit.doc) {
            3
        } else {
            header_tokens(unit.doc)
        };
        let tokens = counts.get(i);
        if used + tokens + overhead <= coarse_budget {
            used += tokens + overhead;
            files_seen.insert(unit.doc);
            kept.push(i);
        }
    }

    // Fine: prune kept functions to their most useful blocks.
    // Pruning pays only when the whole functions the coarse stage kept overflow the budget.
    let runs = if fine && used > budget {
        let (runs, pruned) = fine_stage(
            scorer,
            counter,
            docs,
            &units,
            &kept,
            &counts,
            model_query,
            fine_tokens,
            used - budget,
            options,
            deadline,
            cancel,
            &reporter,
        )?;
        skipped += pruned;
        runs
    } else {
        KeptRows::new()
    };

    reporter.report(|model_tokens| Progress {
        model_tokens,
        ..Progress::start(Stage::Assembly)
    });
    // Refill what the fine stage freed with more whole units, then make the budget exact.
    let mut result = Selection {
        counter,
        docs,
        units: &units,
        format: options.format,
        runs,
        kept,
    };
    // Make the budget exact: drop the lowest-ranked units while over it, then refill what
    // the fine stage and the drops freed with whole units that still fit.
    let mut tokens = result.count();
    while tokens > budget && !result.kept.is_empty() {
        let worst = result
            .kept
            .iter()
            .enumerate()
            .max_by_key(|(_, i)| rank[**i])
            .map(|(pos, _)| pos)
            .unwrap_or(0);
        result.kept.remove(worst);
        tokens = result.count();
    }
    for &i in &order {
        // A cheap bound before rendering: a unit costs about its own tokens, but one next to
        // a kept run replaces that run's elision marker instead of adding its own, so it may
        // add a few tokens less; only the rendered count decides near the budget.
        if tokens + counts.floor(i) > budget + REFILL_JOIN_SLACK_TOKENS || result.kept.contains(&i)
        {
            continue;
        }
        // A unit of a file not shown yet brings its file's frame, path included: its path's
        // tokens, then its section rendered alone, are bounds as cheap to count as the unit
        // (sections are concatenated, and a seam between two moves a token or two, well
        // within the slack). On a big tree most units that pass the bound above are
        // one-liners of files not shown: their floors and the path's floor come first, so
        // that most are passed over without counting anything (counting each unit was a
        // fifth of a repeat query on `~/.cargo/registry/src`).
        let new_file = counting == Counting::Lazy
            && !result.kept.iter().any(|&k| units[k].doc == units[i].doc);
        let limit = budget + REFILL_JOIN_SLACK_TOKENS;
        let fits = if new_file {
            // The path's count before the unit's: counted once per file, it passes over
            // every later unit of a file whose frame no longer fits.
            let doc = units[i].doc;
            tokens + counts.floor(i) + path_floor(doc) <= limit
                && tokens + counts.floor(i) + path_tokens(doc) <= limit
                && tokens + counts.get(i) + path_tokens(doc) <= limit
                && tokens + result.count_alone(i) <= limit
        } else {
            tokens + counts.get(i) <= limit
        };
        if !fits {
            continue;
        }
        result.kept.push(i);
        let with = result.count();
        if with <= budget {
            tokens = with;
        } else {
            result.kept.pop();
        }
    }
    if result.kept.is_empty() {
        // The smallest answer there is: one whole unit (skeletons are never printed alone)
        // rendered in the requested format. The estimate ranks the candidates; the few
        // smallest are rendered, since headers differ by format and path.
        let candidates = smallest_units(&units, &counts, header_tokens);
        result.runs = KeptRows::new();
        let smallest = candidates
            .into_iter()
            .map(|i| {
                result.kept = vec![i];
                result.count()
            })
            .min()
            .unwrap_or(0);
        return Err(CompressError::BudgetTooSmall { budget, smallest });
    }

    let context = result.render();
    let compressed_tokens = counter.count(&context);
    // Exact for a workspace small enough to count whole in well under a second.
    let original_tokens = exact_total.unwrap_or_else(|| {
        if counts.total_bytes() <= counts::EXACT_TOTAL_BYTES {
            counts.count_all()
        } else {
            counts.estimate_total()
        }
    });
    debug_assert!(compressed_tokens <= budget);
    let chunks = result.selected(&rank);
    let n_files = chunks.iter().map(|c| &c.path).collect::<HashSet<_>>().len();
    Ok(Compressed {
        context,
        stats: Stats {
            original_tokens,
            compressed_tokens,
            ratio: original_tokens as f64 / compressed_tokens.max(1) as f64,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
            // The scorer's own count: cache hits cost nothing, recomputation is counted.
            model_tokens: (scorer.stats().tokens_decoded - decoded_before) as usize,
            budget_tokens: budget,
            candidates: candidates.len(),
            deadline_skipped: skipped,
            files: n_files,
            chunks: chunks.len(),
            redacted: docs.iter().map(|d| d.redacted).sum(),
        },
        chunks,
    })
}

/// Hands a request's events to its sink, if it has one; without one nothing is computed.
struct Reporter<'a> {
    sink: Option<ProgressSink<'a>>,
    scorer: &'a dyn ScoringModel,
    decoded_before: u64,
}

impl Reporter<'_> {
    fn listening(&self) -> bool {
        self.sink.is_some()
    }

    /// Tokens the model decoded since the request began.
    fn model_tokens(&self) -> usize {
        self.scorer
            .stats()
            .tokens_decoded
            .saturating_sub(self.decoded_before) as usize
    }

    /// What a model-token budget of `max` has left now (`None`: no budget).
    fn model_tokens_left(&self, max: Option<usize>) -> Option<usize> {
        max.map(|max| max.saturating_sub(self.model_tokens()))
    }

    /// Sends the event `event` builds from the model tokens so far.
    fn report(&self, event: impl FnOnce(usize) -> Progress) {
        if let Some(sink) = self.sink {
            sink(&event(self.model_tokens()));
        }
    }
}

/// Reports while the model scores: about this many reports per request.
const SCORING_REPORTS: usize = 8;

/// Scores the candidates; with a listener, in slices so that each slice's end can be
/// reported (done/total, tokens, time left). Slicing changes no score: each candidate is
/// scored on its own against the same query, and cached results are served in every slice.
/// With the disk cache on, the query's own NLLs are decoded once (the first slice caches
/// them); without it, each later slice decodes the query again (at most 7 × the query
/// window, 64 tokens by default). A slice is at least as large as what the backend scores
/// at once ([`ScoringModel::chunks_in_flight`]), so none runs emptier.
fn score_candidates(
    scorer: &dyn ScoringModel,
    query: &str,
    inputs: &[ChunkInput],
    options: ScoreOptions,
    cancel: &CancelFlag,
    reporter: &Reporter,
) -> Result<ScoreOutput, CompressError> {
    if !reporter.listening() || inputs.is_empty() {
        return Ok(scorer.score_chunks_with(query, inputs, options, cancel)?);
    }
    let total = inputs.len();
    let slice = total
        .div_ceil(SCORING_REPORTS)
        .max(scorer.chunks_in_flight())
        .max(1);
    // What is left to decode, roughly: each remaining candidate and the query after it.
    let n_query_tokens = scorer.count_tokens(query);
    let texts: Vec<&str> = inputs.iter().map(|c| c.text.as_str()).collect();
    let costs: Vec<usize> = scorer
        .count_tokens_batch(&texts)
        .into_iter()
        .map(|n| n + n_query_tokens)
        .collect();
    let started = Instant::now();
    let decoded_before = reporter.model_tokens();
    reporter.report(|model_tokens| Progress {
        total,
        model_tokens,
        ..Progress::start(Stage::Scoring)
    });
    let report = |done: usize| {
        reporter.report(|model_tokens| Progress {
            stage: Stage::Scoring,
            done,
            total,
            model_tokens,
            eta: progress::eta(
                model_tokens.saturating_sub(decoded_before),
                started.elapsed(),
                costs[done..].iter().sum(),
            ),
        })
    };
    let (first, rest) = inputs.split_at(slice.min(total));
    let mut all = scorer.score_chunks_with(query, first, options, cancel)?;
    let mut done = first.len();
    report(done);
    for part in rest.chunks(slice) {
        // A token allowance is the call's: each slice has what the earlier ones left, and
        // once one skipped a candidate the later ones start nothing (as one call would not).
        let stopped = all.scores.iter().any(|s| s.skipped);
        let options = ScoreOptions {
            max_tokens: options.max_tokens.map(|max| {
                if stopped {
                    0
                } else {
                    max.saturating_sub(all.model_tokens)
                }
            }),
            ..options
        };
        let output = scorer.score_chunks_with(query, part, options, cancel)?;
        all.scores.extend(output.scores);
        all.model_tokens += output.model_tokens;
        done += part.len();
        report(done);
    }
    Ok(all)
}

/// [`Conditioning::ChunkGivenQuery`]: each candidate's mean gain per token, NLL without the
/// query minus NLL after it (`query` decoded once, as the prefix every candidate shares);
/// `None` for a candidate the deadline skipped. A candidate's first token is left out: without
/// a prefix nothing may predict it.
fn score_given_query(
    scorer: &dyn ScoringModel,
    query: &str,
    inputs: &[ChunkInput],
    options: ScoreOptions,
    cancel: &CancelFlag,
    reporter: &Reporter,
) -> Result<Vec<Option<f32>>, CompressError> {
    let texts: Vec<&str> = inputs.iter().map(|c| c.text.as_str()).collect();
    let total = 2;
    reporter.report(|model_tokens| Progress {
        total,
        model_tokens,
        ..Progress::start(Stage::Scoring)
    });
    // A token allowance is split between the two passes: a candidate counts only if both
    // read it.
    let before = reporter.model_tokens();
    let alone_options = ScoreOptions {
        max_tokens: options.max_tokens.map(|max| max / 2),
        ..options
    };
    let alone = scorer.token_nlls_batch_with(None, &texts, alone_options, cancel)?;
    let options = ScoreOptions {
        max_tokens: options
            .max_tokens
            .map(|max| max.saturating_sub(reporter.model_tokens().saturating_sub(before))),
        ..options
    };
    reporter.report(|model_tokens| Progress {
        done: 1,
        total,
        model_tokens,
        ..Progress::start(Stage::Scoring)
    });
    let given =
        scorer.token_nlls_batch_with(Some(&format!("{query}\n\n")), &texts, options, cancel)?;
    reporter.report(|model_tokens| Progress {
        done: total,
        total,
        model_tokens,
        ..Progress::start(Stage::Scoring)
    });
    Ok(alone
        .iter()
        .zip(&given)
        .map(|(a, g)| {
            if a.skipped || g.skipped {
                return None;
            }
            let n = a.tokens.len().min(g.tokens.len());
            if n < 2 {
                return Some(0.0);
            }
            let gain: f32 = (1..n).map(|t| a.tokens[t].nll - g.tokens[t].nll).sum();
            Some(gain / (n - 1) as f32)
        })
        .collect())
}

/// The [`SMALLEST_RENDERED`] units (skeletons aside) costing the fewest tokens with their
/// file's header, fewest first, ties in unit order: what a stable sort of every unit by that
/// cost puts first, counting only the units whose floor could be among them.
fn smallest_units(
    units: &[Unit],
    counts: &TokenCounts,
    header_tokens: impl Fn(usize) -> usize,
) -> Vec<usize> {
    let mut by_floor: Vec<(usize, usize)> = (0..units.len())
        .filter(|&i| !units[i].skeleton)
        .map(|i| (counts.floor(i) + header_tokens(units[i].doc), i))
        .collect();
    by_floor.sort_unstable();
    // (cost, unit), sorted.
    let mut best: Vec<(usize, usize)> = Vec::with_capacity(SMALLEST_RENDERED + 1);
    for (floor, i) in by_floor {
        if best.len() == SMALLEST_RENDERED && best.last().is_some_and(|&(cost, _)| floor > cost) {
            break;
        }
        let entry = (counts.get(i) + header_tokens(units[i].doc), i);
        best.insert(best.partition_point(|&e| e < entry), entry);
        best.truncate(SMALLEST_RENDERED);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// A name defined more often than this (`new`, `get`, `__init__`) says too little: a callee
/// of that name is none in particular, and a query that writes it as code names none either
/// (pinning every definition of it once filled the pool with 50 constructors for an
/// instruction that wrote `Choice.__init__`; BENCHMARKS.md, "Tenth session").
const MAX_DEFINITIONS_PER_NAME: usize = 3;

/// `order` with the definitions called by its `callers` best chunks moved up: the callees of
/// the first `follow` chunks right after their caller, the others' just after the first
/// `n_scored` entries (the chunks the model ranked), best caller first.
fn with_callees(
    order: Vec<usize>,
    n_scored: usize,
    callers: usize,
    follow: usize,
    units: &[Unit],
    docs: &[Document],
    texts: &[&str],
) -> Vec<usize> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, unit) in units.iter().enumerate() {
        let chunk = &docs[unit.doc].chunks[unit.chunk];
        if (chunk.kind.is_callable() || chunk.kind.is_container())
            && let Some(name) = chunk.name.as_deref()
        {
            by_name.entry(name).or_default().push(i);
        }
    }
    let callees_of = |caller: usize| {
        let caller_doc = units[caller].doc;
        let mut callees = Vec::new();
        for name in called_names(texts[caller]) {
            let Some(defs) = by_name.get(name) else {
                continue;
            };
            let same_file: Vec<usize> = defs
                .iter()
                .copied()
                .filter(|&d| units[d].doc == caller_doc)
                .collect();
            if !same_file.is_empty() {
                callees.extend(same_file);
            } else if defs.len() <= MAX_DEFINITIONS_PER_NAME {
                callees.extend(defs);
            }
        }
        callees
    };
    let ranked = &order[..n_scored];
    // Units already placed, each once: where it is first reached.
    let mut placed: HashSet<usize> = HashSet::new();
    let mut result = Vec::with_capacity(order.len());
    let mut later: Vec<usize> = Vec::new();
    for (position, &caller) in ranked.iter().enumerate() {
        if placed.insert(caller) {
            result.push(caller);
        }
        if position >= callers {
            continue;
        }
        if position < follow {
            let callees = callees_of(caller);
            result.extend(callees.into_iter().filter(|&d| placed.insert(d)));
        } else {
            later.extend(callees_of(caller));
        }
    }
    // Ranked units not yet placed are placed by now: only the others move up.
    result.extend(later.into_iter().filter(|&d| placed.insert(d)));
    result.extend(order[n_scored..].iter().filter(|&&i| placed.insert(i)));
    result
}

/// Names followed by `(` in code (calls, constructors, macros without `!`), in order of first
/// appearance, keywords left out.
fn called_names(text: &str) -> Vec<&str> {
    const KEYWORDS: &[&str] = &[
        "if", "for", "while", "switch", "match", "return", "catch", "fn", "function", "def",
        "sizeof", "typeof", "elif", "except", "with", "assert", "print", "super", "await", "yield",
        "not", "and", "or", "in", "new", "lambda", "self", "this",
    ];
    let bytes = text.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let mut j = i;
            // A Rust turbofish between name and arguments: `cast::<T>(`.
            if text[j..].starts_with("::<") {
                let mut depth = 0;
                for (k, c) in text[j + 2..].char_indices() {
                    match c {
                        '<' => depth += 1,
                        '>' => depth -= 1,
                        '(' | ')' | '{' | '}' | ';' | '\n' => break,
                        _ => {}
                    }
                    if depth == 0 {
                        j += 2 + k + 1;
                        break;
                    }
                }
            }
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            let name = &text[start..i];
            if bytes.get(j) == Some(&b'(') && !KEYWORDS.contains(&name) && !names.contains(&name) {
                let before = text[..start].trim_end();
                let definition = ["fn", "def", "function"]
                    .iter()
                    .any(|k| before.ends_with(k));
                if !definition {
                    names.push(name);
                }
            }
        } else if b.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Replaces the candidates' model scores with the reciprocal-rank fusion of their model and
/// BM25 ranks (among the candidates). Candidates a deadline skipped (score −∞) take the model
/// ranks after the scored ones in BM25's order, so that among themselves they stay in it.
fn fuse_with_bm25(units: &mut [Unit], candidates: &[usize]) {
    const K: f32 = 60.0;
    let rank_by = |key: &dyn Fn(&Unit) -> f32| {
        let mut order = candidates.to_vec();
        order.sort_by(|&a, &b| {
            key(&units[b])
                .total_cmp(&key(&units[a]))
                .then(units[b].bm25.total_cmp(&units[a].bm25))
                .then(a.cmp(&b))
        });
        let mut rank = HashMap::new();
        for (r, i) in order.into_iter().enumerate() {
            rank.insert(i, r as f32);
        }
        rank
    };
    let by_model = rank_by(&|u| u.score);
    let by_bm25 = rank_by(&|u| u.bm25);
    for &i in candidates {
        units[i].score = 1.0 / (K + by_model[&i]) + 1.0 / (K + by_bm25[&i]);
    }
}

/// Every chunk with content as a unit, with its BM25 score and structural pin; their texts;
/// and the BM25 index over them. Tokens are counted later, where needed ([`TokenCounts`]).
fn lexical_units<'d>(
    docs: &[Document<'d>],
    query: &str,
    options: &CompressOptions,
    functions_first: bool,
) -> Result<(Vec<Unit>, Vec<&'d str>, Bm25), CompressError> {
    // Units: every chunk with content.
    let mut units = Vec::new();
    let mut texts = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        for (c, chunk) in doc.chunks.iter().enumerate() {
            let text = chunk.text(doc.text);
            if text.trim().is_empty() {
                continue;
            }
            texts.push(text);
            units.push(Unit {
                doc: d,
                chunk: c,
                bm25: 0.0,
                score: f32::NEG_INFINITY,
                pinned: false,
                wanted: true,
                skeleton: !options.keep_skeletons && is_skeleton(chunk, text),
                copy: false,
                read_key: 0.0,
            });
        }
    }
    if units.is_empty() {
        return Err(CompressError::EmptyWorkspace);
    }
    // Candidates: BM25 over text, names and paths, plus structure.
    // Only the query's terms are looked up (its window and its words are cut from it; the
    // frame's words are weighed with them).
    let index = Bm25::new(
        units.iter().zip(&texts).map(|(u, text)| {
            let doc = &docs[u.doc];
            let chunk = &doc.chunks[u.chunk];
            vec![
                (*text, 1.0),
                (chunk.qualified_name.as_deref().unwrap_or(""), 3.0),
                (doc.path, 2.0),
            ]
        }),
        &[query, QUESTION_FRAME],
    );
    let wanted = roles::wanted_roles(query);
    // Each file's role once (a big tree has tens of chunks per file).
    let file_roles: Vec<FileRole> = docs.iter().map(|d| FileRole::of(d.path, d.lang)).collect();
    let (k1, k3) = (options.bm25_k1, options.bm25_k3);
    let scores = index.scores(query, k1, k3, bm25::DEFAULT_B);
    let read_scores = functions_first.then(|| index.scores(query, k1, k3, READ_ORDER_B));
    for (u, unit) in units.iter_mut().enumerate() {
        let doc = &docs[unit.doc];
        let chunk = &doc.chunks[unit.chunk];
        let name = chunk.qualified_name.as_deref();
        unit.wanted = wanted.contains(&file_roles[unit.doc].for_chunk(doc.lang, name));
        let role_weight = if unit.wanted {
            1.0
        } else {
            options.other_roles_weight
        };
        unit.bm25 = scores[u] * role_weight;
        unit.read_key = match &read_scores {
            Some(read) if chunk.kind.is_callable() || chunk.kind == ChunkKind::Text => {
                read[u] * role_weight
            }
            Some(read) => read[u] * role_weight * NON_CALLABLE_READ_WEIGHT,
            None => unit.bm25,
        };
    }
    pin_structural(
        &mut units,
        docs,
        query,
        options.focus.as_ref(),
        functions_first,
    );
    if !options.keep_copies {
        copies::mark_copies(&mut units, docs, &file_roles, &texts);
    }
    Ok((units, texts, index))
}

/// The candidate stage's order over a workspace (no model work): every chunk with content as
/// (document index, chunk index), the pinned ones first, then in the order [`compress`] offers
/// them to the model. For measuring what the candidate stage loses.
pub struct CandidateOrder {
    pub chunks: Vec<(usize, usize)>,
    n_pinned: usize,
    functions_first: bool,
}

impl CandidateOrder {
    /// Whether the query was read in [`ReadOrder::Functions`]'s order.
    pub fn functions_first(&self) -> bool {
        self.functions_first
    }

    /// How many chunks the query pins (they lead the order).
    pub fn n_pinned(&self) -> usize {
        self.n_pinned
    }

    /// The chunks the model scores with a pool of `max_candidates`, when the workspace does
    /// not fit the budget.
    pub fn pool(&self, max_candidates: usize) -> &[(usize, usize)] {
        &self.chunks[..pool_len(max_candidates, self.n_pinned).min(self.chunks.len())]
    }

    /// The chunks that reach the top of the ranking when a model-token budget or a deadline
    /// lets the model read only `reads` candidates of a pool of `max_candidates`: the pinned
    /// ones (first whatever the model says; it reads them last) and the first `reads` others.
    pub fn reached(&self, reads: usize, max_candidates: usize) -> &[(usize, usize)] {
        let n = (self.n_pinned + reads).min(self.pool(max_candidates).len());
        &self.chunks[..n]
    }
}

/// The candidate stage alone for `query`; see [`CandidateOrder`].
pub fn candidate_chunks(
    scorer: &dyn ScoringModel,
    docs: &[Document],
    query: &str,
    options: &CompressOptions,
) -> Result<CandidateOrder, CompressError> {
    let query = query.trim();
    if query.is_empty() {
        return Err(CompressError::EmptyQuery);
    }
    let functions_first = functions_first(scorer, query, options);
    let (units, _, _) = lexical_units(docs, query, options, functions_first)?;
    Ok(CandidateOrder {
        functions_first,
        chunks: candidate_order(&units, options.code_first)
            .into_iter()
            .map(|i| (units[i].doc, units[i].chunk))
            .collect(),
        n_pinned: units.iter().filter(|u| u.pinned).count(),
    })
}

/// Whether the candidate stage reads `query` in [`ReadOrder::Functions`]:
/// [`ReadOrder::ByLength`] and [`ReadOrder::Questions`] count the query in the model's tokens.
fn functions_first(scorer: &dyn ScoringModel, query: &str, options: &CompressOptions) -> bool {
    let read_whole = || {
        options.max_query_tokens == 0
            || scorer.count_tokens_batch(&[query])[0] <= options.max_query_tokens
    };
    match options.read_order {
        _ if options.faithful => false,
        ReadOrder::Bm25 => false,
        ReadOrder::Functions => true,
        ReadOrder::ByLength => read_whole(),
        ReadOrder::Questions => roles::asks_question(query) && read_whole(),
    }
}

/// The identifiers the query writes as code, each as its path (`click.Choice` →
/// `["click", "Choice"]`, `Value::as_str` → `["Value", "as_str"]`): words joined by `.` or
/// `::` in which some part has a capital or an underscore, the last part at least 3 long.
fn code_mentions(query: &str) -> Vec<Vec<&str>> {
    let mut mentions = Vec::new();
    for word in query.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == ':')) {
        let parts: Vec<&str> = word
            .split(['.', ':'])
            .filter(|part| !part.is_empty())
            .collect();
        let Some(last) = parts.last() else { continue };
        let code_like = parts
            .iter()
            .any(|p| p.chars().any(|c| c.is_uppercase() || c == '_'));
        if last.chars().count() >= 3 && code_like && !mentions.contains(&parts) {
            mentions.push(parts);
        }
    }
    mentions
}

/// Whether the qualified name (`Foo.bar`, `Foo::bar`) ends with the parts of `path`.
fn ends_with_path(qualified: &str, path: &[&str]) -> bool {
    let mut names = qualified.rsplit(['.', ':']).filter(|p| !p.is_empty());
    path.iter().rev().all(|&part| names.next() == Some(part))
}

/// Pins the chunk at the focus position and the definitions the query names as code. A path
/// is matched by its longest tail that some definition's qualified name ends with
/// (`click.Choice` finds `Choice`, `Choice.__init__` that one constructor); a tail that more
/// than [`MAX_DEFINITIONS_PER_NAME`] definitions end with pins nothing.
fn pin_structural(
    units: &mut [Unit],
    docs: &[Document],
    query: &str,
    focus: Option<&Focus>,
    functions_first: bool,
) {
    let mentions = code_mentions(query);
    // The definitions and their qualified names, gathered once (a big tree has 10^5 units).
    let definitions: Vec<(usize, &str)> = if mentions.is_empty() {
        Vec::new()
    } else {
        units
            .iter()
            .enumerate()
            .filter_map(|(i, unit)| {
                let chunk = &docs[unit.doc].chunks[unit.chunk];
                (chunk.kind.is_callable() || chunk.kind.is_container())
                    .then(|| chunk.qualified_name.as_deref().or(chunk.name.as_deref()))
                    .flatten()
                    .map(|name| (i, name))
            })
            .collect()
    };
    let mut pins: Vec<usize> = Vec::new();
    for path in mentions {
        for start in 0..path.len() {
            let tail = &path[start..];
            let matches: Vec<usize> = definitions
                .iter()
                .filter(|(_, name)| ends_with_path(name, tail))
                .map(|&(i, _)| i)
                .collect();
            if matches.is_empty() {
                continue;
            }
            if matches.len() <= MAX_DEFINITIONS_PER_NAME {
                pins.extend(matches);
            }
            break;
        }
    }
    for &i in &pins {
        units[i].pinned = true;
    }
    if functions_first {
        read_members_first(units, docs, &pins);
    }
    if let Some(focus) = focus {
        for unit in units.iter_mut() {
            let doc = &docs[unit.doc];
            let chunk = &doc.chunks[unit.chunk];
            if focus.path != doc.path {
                continue;
            }
            match focus.line {
                Some(line) if chunk.start_line <= line && line <= chunk.end_line => {
                    unit.pinned = true;
                }
                _ => {
                    unit.bm25 *= FAVOURED_WEIGHT;
                    unit.read_key *= FAVOURED_WEIGHT;
                }
            }
        }
    }
}

/// The read order of a question that names a class, struct or impl (`click.Choice`, "a
/// Session"): the members of the pinned container (`Choice.convert`, `Session.request`, in
/// its file) are where its behaviour lives, so the model reads them earlier, as it does the
/// focus file's chunks. Only the read order: BM25's own scores (what the fusion and the BM25
/// ranker use) are untouched.
fn read_members_first(units: &mut [Unit], docs: &[Document], pins: &[usize]) {
    let containers: Vec<(usize, &str)> = pins
        .iter()
        .filter_map(|&i| {
            let chunk = &docs[units[i].doc].chunks[units[i].chunk];
            let name = chunk.qualified_name.as_deref().or(chunk.name.as_deref())?;
            chunk.kind.is_container().then_some((units[i].doc, name))
        })
        .collect();
    if containers.is_empty() {
        return;
    }
    for unit in units.iter_mut().filter(|u| !u.pinned) {
        let Some(name) = docs[unit.doc].chunks[unit.chunk].qualified_name.as_deref() else {
            continue;
        };
        let member = containers.iter().any(|&(doc, container)| {
            doc == unit.doc
                && name
                    .strip_prefix(container)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("::"))
        });
        if member {
            unit.read_key *= FAVOURED_WEIGHT;
        }
    }
}

/// The units the model scores, in the order it should reach them (it matters under a
/// deadline): pinned first, then by the read order's key ([`ReadOrder`]). Every unit when the
/// workspace is small enough (or for the faithful configuration); otherwise the pinned ones
/// and the best others, up to `max_candidates` in all.
fn pick_candidates(units: &[Unit], options: &CompressOptions) -> Vec<usize> {
    let mut order = candidate_order(units, options.code_first && !options.faithful);
    if !options.faithful {
        let n_pinned = units.iter().filter(|u| u.pinned).count();
        order.truncate(pool_len(options.max_candidates, n_pinned));
        order = pinned_last(order, units);
    }
    order
}

/// The pool in the order the model reads it: pinned units rank first whatever their score,
/// so the model reads them last, and a model-token budget or a deadline goes first to the
/// candidates whose place its score decides. A dev instruction that names ten functions spent
/// most of the default budget's coarse share on them before (BENCHMARKS.md, "Pinned
/// candidates read last").
fn pinned_last(order: Vec<usize>, units: &[Unit]) -> Vec<usize> {
    let (pinned, mut rest): (Vec<usize>, Vec<usize>) =
        order.into_iter().partition(|&i| units[i].pinned);
    rest.extend(pinned);
    rest
}

/// Every unit but skeletons, pinned first, then (with `code_first`) the kinds of files the
/// query asks for, then by the read order's key (BM25's score, or [`ReadOrder::Functions`]'s).
fn candidate_order(units: &[Unit], code_first: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..units.len())
        .filter(|&i| !units[i].skeleton && !units[i].copy)
        .collect();
    let wanted = |u: &Unit| code_first && u.wanted;
    order.sort_by(|&a, &b| {
        (units[b].pinned.cmp(&units[a].pinned))
            .then(wanted(&units[b]).cmp(&wanted(&units[a])))
            .then(units[b].read_key.total_cmp(&units[a].read_key))
            .then(a.cmp(&b))
    });
    order
}

/// Pinned chunks are always scored, even beyond `max_candidates`.
fn pool_len(max_candidates: usize, n_pinned: usize) -> usize {
    max_candidates.max(n_pinned)
}

/// A chunk with nothing to read on its own: a container's header whose members are chunks of
/// their own (`impl Foo {`, `class Foo:`), or glue of closing punctuation (`}`, `});`).
/// Printed alone it is a skeleton of elision markers. A doc comment on the header is
/// something to read.
pub fn is_skeleton(chunk: &Chunk, text: &str) -> bool {
    let header_rows = if chunk.kind.is_container() {
        (chunk.header_end_line.max(chunk.start_line) - chunk.start_line + 1) as usize
    } else if chunk.kind == ChunkKind::Glue {
        0
    } else {
        return false;
    };
    !text.lines().enumerate().any(|(row, line)| {
        let line = line.trim();
        if row < header_rows {
            ["//", "/*", "*", "#", "\"\"\"", "--"]
                .iter()
                .any(|p| line.starts_with(p))
                && !line.starts_with("#[")
        } else {
            !(line.is_empty() || line == "end" || line.chars().all(|c| "{}()[];,".contains(c)))
        }
    })
}

/// The head of `text` holding about `max_tokens` of its `n_tokens`, cut at a line end.
fn head_for_tokens(text: &str, n_tokens: usize, max_tokens: usize) -> &str {
    if n_tokens <= max_tokens {
        return text;
    }
    // A byte estimate, moved back to a character boundary: code may be any UTF-8.
    let target = text.floor_char_boundary(text.len() * max_tokens / n_tokens.max(1));
    match text[..target].rfind('\n') {
        Some(end) if end > 0 => &text[..=end],
        _ => &text[..target],
    }
}

/// Kept rows (0-based, inclusive runs) of each pruned unit.
type KeptRows = HashMap<usize, Vec<(usize, usize)>>;

/// Under a model-token budget the fine stage reads the head of a function only if it can
/// read at least this many of its tokens.
const MIN_PARTIAL_READ_TOKENS: usize = 64;

/// Tokens an elided gap's marker line (`// ...`) adds, about.
const ELIDED_MARKER_TOKENS: usize = 4;

/// The instant `share` of the way from `from` to `deadline` (the deadline itself once past).
fn share_of(from: Instant, deadline: Instant, share: f64) -> Instant {
    from + deadline.saturating_duration_since(from).mul_f64(share)
}

/// Prunes the kept functions; also returns how many the deadline left whole.
#[allow(clippy::too_many_arguments)]
fn fine_stage(
    scorer: &dyn ScoringModel,
    counter: BudgetCounter,
    docs: &[Document],
    units: &[Unit],
    kept: &[usize],
    counts: &TokenCounts,
    query: &str,
    fine_tokens: usize,
    over: usize,
    options: &CompressOptions,
    deadline: Option<Instant>,
    cancel: &CancelFlag,
    reporter: &Reporter,
) -> Result<(KeptRows, usize), CompressError> {
    // Kept functions of 5+ lines, best first, until `fine_tokens` is read; the rest stay whole.
    let mut eligible: Vec<usize> = Vec::new();
    let mut read = 0;
    for &i in kept {
        let chunk = &docs[units[i].doc].chunks[units[i].chunk];
        if (chunk.kind.is_callable() || options.fine_every_kind && !options.faithful)
            && chunk.n_lines() >= 5
            && read < fine_tokens
        {
            read += counts.get(i);
            eligible.push(i);
        }
    }
    let mut runs = HashMap::new();
    if eligible.is_empty() {
        return Ok((runs, 0));
    }
    let fn_texts: Vec<&str> = eligible.iter().map(|&i| counts.text(i)).collect();
    // Two passes over the functions: without the query, then with it.
    let fine_started = Instant::now();
    let decoded_before = reporter.model_tokens();
    let pass_tokens: usize = eligible.iter().map(|&i| counts.get(i)).sum();
    let report_pass = |done: usize| {
        reporter.report(|model_tokens| Progress {
            stage: Stage::Fine,
            done,
            total: 2,
            model_tokens,
            eta: progress::eta(
                model_tokens.saturating_sub(decoded_before),
                fine_started.elapsed(),
                pass_tokens * (2 - done),
            ),
        })
    };
    report_pass(0);
    // What the model-token budget has left for this stage, and what of each function it
    // reads: whole functions in order while both passes (and the query before the second)
    // fit, then the head of the next one; its unread rows are elided (a function left whole
    // would take the budget from the units after it).
    let left_for_fine = reporter.model_tokens_left(options.max_model_tokens);
    let read_texts: Vec<&str> = match left_for_fine {
        Some(left) if !options.faithful => {
            let prefix_tokens = scorer.count_tokens(&format!("{query}\n\n"));
            let per_pass = left.saturating_sub(prefix_tokens) / 2;
            let model_tokens = scorer.count_tokens_batch(&fn_texts);
            let mut read = 0;
            fn_texts
                .iter()
                .zip(model_tokens)
                .map(|(&text, n)| {
                    let room = per_pass.saturating_sub(read);
                    if n <= room {
                        read += n;
                        text
                    } else if room >= MIN_PARTIAL_READ_TOKENS {
                        read = per_pass;
                        // A head cut by bytes holds about as many tokens: leave a margin.
                        head_for_tokens(text, n, room * 9 / 10)
                    } else {
                        // Past the allowance: the passes skip it.
                        read = per_pass;
                        text
                    }
                })
                .collect()
        }
        _ => fn_texts.clone(),
    };
    let (unconditional, cond_options) = if options.faithful {
        // One pass per line, as LongCodeZip computes line perplexity.
        let mut per_line = Vec::new();
        for text in &fn_texts {
            let mut tokens = Vec::new();
            let mut offset = 0;
            for line in text.split_inclusive('\n') {
                if !line.trim().is_empty() {
                    let nlls = scorer.token_nlls_batch_with(None, &[line], NO_REUSE, cancel)?;
                    for mut t in nlls[0].tokens.iter().copied() {
                        t.start += offset;
                        t.end += offset;
                        tokens.push(t);
                    }
                }
                offset += line.len();
            }
            per_line.push(crate::TokenNlls {
                tokens,
                first_token_scored: true,
                truncated: false,
                skipped: false,
            });
        }
        (per_line, NO_REUSE)
    } else {
        let left = left_for_fine;
        let with_deadline = ScoreOptions {
            deadline,
            max_tokens: left,
            ..scorer.default_options()
        };
        // Under a deadline the first pass has half the time left, and half the tokens under
        // a token budget: a function is pruned only when both passes read it.
        let first = ScoreOptions {
            deadline: deadline.map(|d| share_of(Instant::now(), d, 0.5)),
            max_tokens: left.map(|left| left / 2),
            ..with_deadline
        };
        let uncond = scorer.token_nlls_batch_with(None, &read_texts, first, cancel)?;
        // The second pass has what the first left.
        let second = ScoreOptions {
            max_tokens: reporter.model_tokens_left(options.max_model_tokens),
            ..with_deadline
        };
        (uncond, second)
    };
    report_pass(1);
    // The second pass reads the functions the first reached: a function is pruned by both.
    let reached: Vec<usize> = (0..fn_texts.len())
        .filter(|&j| !unconditional[j].skipped)
        .collect();
    let reached_texts: Vec<&str> = reached.iter().map(|&j| read_texts[j]).collect();
    let mut reached_nlls = if reached.is_empty() {
        Vec::new()
    } else {
        scorer.token_nlls_batch_with(
            Some(&format!("{query}\n\n")),
            &reached_texts,
            cond_options,
            cancel,
        )?
    }
    .into_iter();
    let mut conditional: Vec<crate::TokenNlls> = (0..fn_texts.len())
        .map(|_| crate::TokenNlls {
            tokens: Vec::new(),
            first_token_scored: false,
            truncated: false,
            skipped: true,
        })
        .collect();
    for &j in &reached {
        conditional[j] = reached_nlls.next().expect("one result per text");
    }
    report_pass(2);

    // Kept units the model did not score (callees, BM25's tail) count as the weakest.
    let floor = eligible
        .iter()
        .map(|&i| units[i].score)
        .filter(|s| s.is_finite())
        .fold(f32::INFINITY, f32::min);
    let coarse: Vec<f32> = eligible
        .iter()
        .map(|&i| {
            let s = units[i].score;
            if s.is_finite() { s } else { floor.min(0.0) }
        })
        .collect();
    let normalized = fine::min_max(&coarse);
    // The coarse stage kept `over` tokens more than the budget, counting on the fine stage to
    // free them: each function keeps its adaptive share, scaled down where those shares
    // would not free enough (else the budget pass would drop the lowest-ranked units whole,
    // an instruction's second and third answers first). An elided gap adds a marker line.
    let sizes: Vec<usize> = eligible.iter().map(|&i| counts.get(i)).collect();
    let rates: Vec<f32> = normalized
        .iter()
        .map(|&n| fine::function_rate(options.fine_rate, options.beta, n))
        .collect();
    let markers = ELIDED_MARKER_TOKENS * eligible.len();
    let target = sizes.iter().sum::<usize>().saturating_sub(over + markers);
    let capacities = fine::capacities(&sizes, &rates, target);
    let mut skipped = 0;
    for (j, &i) in eligible.iter().enumerate() {
        if unconditional[j].skipped || conditional[j].skipped {
            // The deadline came first: the function stays whole (the budget pass trims).
            skipped += 1;
            continue;
        }
        let doc = &docs[units[i].doc];
        let chunk = &doc.chunks[units[i].chunk];
        let text = fn_texts[j];
        let index = LineIndex::new(text);
        let n = index.n_rows();
        let mut lines = vec![LineStats::default(); n];
        for (r, line) in lines.iter_mut().enumerate() {
            line.blank = index.rows_text(text, r, r).trim().is_empty();
        }
        let mut sums = vec![0f32; n];
        for t in &unconditional[j].tokens {
            let r = index.row_of(t.start);
            sums[r] += t.nll;
            lines[r].n_tokens += 1;
        }
        for (r, line) in lines.iter_mut().enumerate() {
            if line.n_tokens > 0 {
                line.mean_nll = Some(sums[r] / line.n_tokens as f32);
            }
        }
        let uncond_by_start: HashMap<usize, f32> = unconditional[j]
            .tokens
            .iter()
            .map(|t| (t.start, t.nll))
            .collect();
        for t in &conditional[j].tokens {
            if let Some(u) = uncond_by_start.get(&t.start) {
                lines[index.row_of(t.start)].gain += u - t.nll;
            }
        }
        let first_body = (chunk.header_end_line.saturating_sub(chunk.start_line) + 1) as usize;
        let first_body = first_body.min(n);
        let mut blocks = fine::segment(&lines, first_body, options.spike_k);
        if read_texts[j].len() < text.len() {
            // Rows the budget left unread are a block of their own, worth nothing.
            let first_unread = index.row_of(read_texts[j].len());
            fine::split_at_row(&mut blocks, first_unread.max(first_body));
        }
        let doc_rows = if options.fine_docs && !options.faithful {
            fine::leading_comment_rows((0..first_body).map(|r| index.rows_text(text, r, r)))
        } else {
            0
        };
        let (blocks, signature) = fine::split_doc_comment(blocks, first_body, doc_rows);
        let block_texts: Vec<&str> = blocks
            .iter()
            .map(|&(a, b)| index.rows_text(text, a, b))
            .collect();
        // The knapsack's capacity is a share of the unit's budget tokens: blocks weigh the same.
        let block_tokens = counter.count_batch(&block_texts);
        let gains: Vec<f32> = blocks
            .iter()
            .map(|&(a, b)| {
                let n_tok: usize = lines[a..=b].iter().map(|l| l.n_tokens).sum();
                lines[a..=b].iter().map(|l| l.gain).sum::<f32>() / n_tok.max(1) as f32
            })
            .collect();
        let block_value = fine::min_max(&gains);
        let capacity = capacities[j];
        // The signature block (a long doc comment's summary and the declaration) is always
        // kept; the knapsack fills the rest.
        let sig_tokens: usize = block_tokens[..signature].iter().sum();
        let items: Vec<(usize, f32)> = (signature..blocks.len())
            .map(|b| {
                (
                    block_tokens[b],
                    block_value[b] * block_tokens[b] as f32 + 1e-3,
                )
            })
            .collect();
        let chosen = fine::knapsack(&items, capacity.saturating_sub(sig_tokens));
        let base = (chunk.start_line - 1) as usize;
        let mut kept_rows: Vec<(usize, usize)> = blocks[..signature]
            .iter()
            .map(|&(a, b)| (base + a, base + b))
            .collect();
        kept_rows.extend(chosen.iter().map(|&c| {
            let (a, b) = blocks[signature + c];
            (base + a, base + b)
        }));
        runs.insert(i, merge_runs(kept_rows));
    }
    Ok((runs, skipped))
}

/// The kept units and their pruned rows, rendered and counted on demand.
struct Selection<'a> {
    counter: BudgetCounter<'a>,
    docs: &'a [Document<'a>],
    units: &'a [Unit],
    format: Format,
    runs: HashMap<usize, Vec<(usize, usize)>>,
    kept: Vec<usize>,
}

impl Selection<'_> {
    fn unit_rows(&self, i: usize) -> Vec<(usize, usize)> {
        self.runs.get(&i).cloned().unwrap_or_else(|| {
            let chunk = &self.docs[self.units[i].doc].chunks[self.units[i].chunk];
            vec![(
                (chunk.start_line - 1) as usize,
                (chunk.end_line - 1) as usize,
            )]
        })
    }

    fn render(&self) -> String {
        type Rows = Vec<(usize, usize)>;
        let mut by_doc: BTreeMap<&str, (usize, Rows)> = BTreeMap::new();
        for &i in &self.kept {
            let doc = &self.docs[self.units[i].doc];
            let entry = by_doc
                .entry(doc.path)
                .or_insert((self.units[i].doc, Vec::new()));
            entry.1.extend(self.unit_rows(i));
        }
        let files: Vec<FileRuns> = by_doc
            .into_values()
            .map(|(d, rows)| FileRuns {
                path: self.docs[d].path,
                lang: self.docs[d].lang,
                text: self.docs[d].text,
                runs: merge_runs(rows),
            })
            .collect();
        assemble(self.format, &files)
    }

    fn count(&self) -> usize {
        self.counter.count(&self.render())
    }

    /// Tokens of unit `i`'s file section with nothing else of the file.
    fn count_alone(&self, i: usize) -> usize {
        let doc = &self.docs[self.units[i].doc];
        let alone = FileRuns {
            path: doc.path,
            lang: doc.lang,
            text: doc.text,
            runs: self.unit_rows(i),
        };
        self.counter.count(&assemble(self.format, &[alone]))
    }

    fn selected(&self, rank: &[usize]) -> Vec<SelectedChunk> {
        let mut kept = self.kept.clone();
        kept.sort_by_key(|&i| rank[i]);
        kept.iter()
            .map(|&i| {
                let unit = &self.units[i];
                let doc = &self.docs[unit.doc];
                let chunk = &doc.chunks[unit.chunk];
                let rows = self.unit_rows(i);
                let index = LineIndex::new(doc.text);
                let kept_text: String = rows
                    .iter()
                    .map(|&(a, b)| index.rows_text(doc.text, a, b))
                    .collect();
                SelectedChunk {
                    path: doc.path.to_owned(),
                    start_line: chunk.start_line,
                    end_line: chunk.end_line,
                    name: chunk.qualified_name.clone().or_else(|| chunk.name.clone()),
                    kind: chunk.kind,
                    score: if unit.score.is_finite() {
                        unit.score
                    } else {
                        unit.bm25
                    },
                    tokens: self.counter.count(&kept_text),
                    kept_lines: rows
                        .iter()
                        .map(|&(a, b)| [a as u32 + 1, b as u32 + 1])
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{
        CompressOptions, Document, Ranker, ReadOrder, Unit, called_names, candidate_chunks,
        fuse_with_bm25, pick_candidates, share_of, with_callees,
    };
    use crate::overlap::OverlapModel;
    use ctxzip_chunker::{Chunk, Lang, chunk_source};
    use std::time::{Duration, Instant};

    #[test]
    fn a_share_of_a_deadline_is_that_part_of_the_time_left_and_a_past_one_stays_past() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        assert_eq!(share_of(now, deadline, 0.6), now + Duration::from_secs(6));
        assert_eq!(share_of(now, deadline, 1.0), deadline);
        let past = now - Duration::from_secs(1);
        assert_eq!(share_of(now, past, 0.6), now);
    }

    #[test]
    fn the_model_reads_the_pinned_candidates_after_the_others() {
        // Pinned units rank first whatever the model says: a model-token budget or a deadline
        // goes first to the candidates whose place its score decides.
        let units: Vec<Unit> = (0..30)
            .map(|i| Unit {
                doc: 0,
                chunk: i,
                bm25: i as f32,
                score: f32::NEG_INFINITY,
                pinned: i % 10 == 0,
                wanted: true,
                skeleton: false,
                copy: false,
                read_key: i as f32,
            })
            .collect();
        let options = CompressOptions {
            max_candidates: 8,
            ..CompressOptions::default()
        };
        // The pool is the same: the three pinned ones and BM25's best five others.
        assert_eq!(
            pick_candidates(&units, &options),
            [29, 28, 27, 26, 25, 20, 10, 0]
        );
        // LongCodeZip as published scores every chunk, whatever the order.
        let faithful = CompressOptions {
            faithful: true,
            ..options
        };
        let all = pick_candidates(&units, &faithful);
        assert_eq!(all.len(), 30);
        assert_eq!(all[..4], [20, 10, 0, 29]);
    }

    /// A Python file as the core reads it, with the chunks of `text`.
    fn python_doc<'a>(path: &'a str, text: &'a str, chunks: &'a [Chunk]) -> Document<'a> {
        Document {
            path,
            lang: Lang::Python,
            text,
            chunks,
            redacted: 0,
        }
    }

    #[test]
    fn a_question_reads_the_function_that_says_its_words_before_the_class_that_names_them() {
        // BM25 ranks the class first: its name says "retry" and its docstring says both
        // words. The function that computes the backoff says them as often in a longer body.
        let source = r#"class RetryPolicy:
    """Retry policy: retry count and retry backoff."""

    retries = 3
    backoff = 0.5


def next_delay(policy, attempt, now, jitter):
    """The retry backoff before the next retry of a request."""
    delay = policy.backoff * (2 ** attempt)
    spread = jitter.uniform(0, delay / 10)
    deadline = now + min(delay + spread, 60)
    return deadline
"#;
        let chunks = chunk_source(Lang::Python, source);
        let docs = [python_doc("retry.py", source, &chunks)];
        let model = OverlapModel::new();
        let first = |query: &str, read_order| {
            let options = CompressOptions {
                read_order,
                ..CompressOptions::default()
            };
            let order = candidate_chunks(&model, &docs, query, &options).unwrap();
            let (_, c) = order.chunks[0];
            chunks[c].name.clone().unwrap()
        };
        let question = "How is the retry backoff computed?";
        assert_eq!(first(question, ReadOrder::Bm25), "RetryPolicy");
        assert_eq!(first(question, ReadOrder::Functions), "next_delay");
        assert_eq!(first(question, ReadOrder::ByLength), "next_delay");
        assert_eq!(first(question, ReadOrder::Questions), "next_delay");
        // A doc comment of the same words is not a question: BM25's order.
        let doc = "The computed retry backoff.";
        assert_eq!(first(doc, ReadOrder::Questions), "RetryPolicy");
        assert_eq!(first(doc, ReadOrder::ByLength), "next_delay");
        // A query longer than the model's window (an instruction) keeps BM25's order; words
        // no chunk holds change no score.
        let instruction = format!("{question}{}", " Please be thorough.".repeat(30));
        assert_eq!(first(&instruction, ReadOrder::ByLength), "RetryPolicy");
        assert_eq!(first(&instruction, ReadOrder::Questions), "RetryPolicy");
        assert_eq!(first(&instruction, ReadOrder::Functions), "next_delay");
    }

    #[test]
    fn a_question_that_names_a_class_reads_its_methods_first() {
        // BM25 ranks the helper first: its name and docstring say the question's words. The
        // question names the class, whose method does the work.
        let source = r#"class Choice:
    """A parameter with a fixed set of choices."""

    def convert(self, value):
        """Check the value against the choices."""
        if value in self.choices:
            return value
        self.fail(value)


def ensure_choice(value, choices, strict):
    """Check a choice value: check that the value is allowed."""
    if strict and value not in choices:
        raise ValueError(value)
    return value
"#;
        let chunks = chunk_source(Lang::Python, source);
        let docs = [python_doc("types.py", source, &chunks)];
        let model = OverlapModel::new();
        let read = |query: &str| {
            let order = candidate_chunks(&model, &docs, query, &CompressOptions::default());
            let order = order.unwrap();
            assert!(order.chunks.len() >= 3);
            order.chunks[..3]
                .iter()
                .map(|&(_, c)| chunks[c].qualified_name.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        // The class is pinned (named); its method is read before the helper.
        assert_eq!(
            read("How does Choice check a value?"),
            ["Choice", "Choice.convert", "ensure_choice"]
        );
        // The same words with the class not named as code: nothing is pinned, and the
        // helper's words put it first.
        let unnamed = read("How does a choice check a value?");
        assert_eq!(unnamed[0], "ensure_choice");
    }

    #[test]
    fn candidates_a_deadline_skipped_keep_bm25s_order_in_the_fusion() {
        // BM25 ranks the units against their index order; the model scored two of them.
        let n = 24;
        let mut units: Vec<Unit> = (0..n)
            .map(|i| Unit {
                doc: 0,
                chunk: i,
                bm25: i as f32,
                score: f32::NEG_INFINITY,
                pinned: false,
                wanted: true,
                skeleton: false,
                copy: false,
                read_key: i as f32,
            })
            .collect();
        units[3].score = 2.0;
        units[20].score = 1.0;
        let candidates: Vec<usize> = (0..n).collect();
        fuse_with_bm25(&mut units, &candidates);
        let mut skipped: Vec<usize> = (0..n).filter(|&i| i != 3 && i != 20).collect();
        skipped.sort_by(|&a, &b| units[b].score.total_cmp(&units[a].score));
        let by_bm25: Vec<usize> = (0..n).rev().filter(|&i| i != 3 && i != 20).collect();
        assert_eq!(skipped, by_bm25);
    }

    #[test]
    fn callees_of_the_ranked_chunks_come_right_after_them() {
        let a = "def main():\n    return helper(load())\n\n\ndef unrelated():\n    return 1\n";
        let b = "def helper(x):\n    return x\n\n\ndef load():\n    return 2\n\n\ndef other():\n    return 3\n";
        let (ca, cb) = (chunk_source(Lang::Python, a), chunk_source(Lang::Python, b));
        let docs = [python_doc("a.py", a, &ca), python_doc("b.py", b, &cb)];
        let mut units = Vec::new();
        let mut texts = Vec::new();
        for (d, doc) in docs.iter().enumerate() {
            for (c, chunk) in doc.chunks.iter().enumerate() {
                texts.push(chunk.text(doc.text));
                units.push(Unit {
                    doc: d,
                    chunk: c,
                    bm25: 0.0,
                    score: 0.0,
                    pinned: false,
                    wanted: true,
                    skeleton: false,
                    copy: false,
                    read_key: 0.0,
                });
            }
        }
        let name = |i: usize| {
            docs[units[i].doc].chunks[units[i].chunk]
                .name
                .clone()
                .unwrap_or_default()
        };
        let index = |n: &str| (0..units.len()).find(|&i| name(i) == n).unwrap();
        // The model ranked `main` first; BM25's tail holds the rest in this order.
        let order = vec![
            index("main"),
            index("other"),
            index("unrelated"),
            index("load"),
            index("helper"),
        ];
        let ranked = |n_scored, callers, follow| -> Vec<String> {
            with_callees(
                order.clone(),
                n_scored,
                callers,
                follow,
                &units,
                &docs,
                &texts,
            )
            .into_iter()
            .map(name)
            .collect()
        };
        assert_eq!(
            ranked(1, usize::MAX, 0),
            ["main", "helper", "load", "other", "unrelated"]
        );
        // With `other` ranked too, the callees wait behind it, unless they follow `main`.
        assert_eq!(
            ranked(2, usize::MAX, 0),
            ["main", "other", "helper", "load", "unrelated"]
        );
        assert_eq!(
            ranked(2, usize::MAX, 1),
            ["main", "helper", "load", "other", "unrelated"]
        );
        // No callers, no change.
        assert_eq!(
            with_callees(order.clone(), 1, 0, 0, &units, &docs, &texts),
            order
        );
    }

    #[test]
    fn a_head_is_cut_at_a_character_boundary() {
        // 4-byte characters and no newline before the estimate: the cut lands inside one.
        let text = "('𞸅', '𞸟'), ('𞸡', '𞸢'), ('𞸤', '𞸤')\n".repeat(3);
        for max_tokens in 1..40 {
            let head = super::head_for_tokens(&text, 60, max_tokens);
            assert!(
                text.starts_with(head) && head.len() < text.len(),
                "{max_tokens}"
            );
        }
    }

    #[test]
    fn called_names_are_calls_not_definitions_or_keywords() {
        let rust = "fn parse(input: &str) -> Result<Ast> {\n    if ready(x) { let t = lex (input)?; }\n    Ok(build(t, self.peek()))\n}";
        assert_eq!(called_names(rust), ["ready", "lex", "Ok", "build", "peek"]);
        let python = "def handle(self, request):\n    while pending():\n        self.send(prepare(request))\n";
        assert_eq!(called_names(python), ["pending", "send", "prepare"]);
        let js = "proto.route = function route(path) {\n  var layer = new Layer(path, {}, fn);\n  return route2(layer);\n};";
        assert_eq!(called_names(js), ["Layer", "route2"]);
        let turbofish = "let e = e.cast::<ErrorImpl<E>>().by_ref(); parse::<u8>(s); x::<T>;";
        assert_eq!(called_names(turbofish), ["cast", "by_ref", "parse"]);
    }

    #[test]
    fn the_limit_named_is_the_one_set_in_the_callers_spelling() {
        let name = |deadline: Option<u64>, max_model_tokens: Option<usize>| {
            let options = CompressOptions {
                deadline: deadline.map(Duration::from_millis),
                max_model_tokens,
                ..CompressOptions::default()
            };
            options.model_limit_name("--deadline-ms", |max| format!("--max-model-tokens {max}"))
        };
        assert_eq!(name(None, Some(6000)), "--max-model-tokens 6000");
        assert_eq!(
            name(Some(500), Some(800)),
            "--deadline-ms or --max-model-tokens 800"
        );
        assert_eq!(name(Some(500), None), "--deadline-ms");
    }

    /// A new field of `CompressOptions` does not compile here until it is sorted into the
    /// options users set (then it is a field of `CompressRequest`, resolved in
    /// `CompressRequest::resolve`, and every surface offers it) or tuning.
    #[test]
    fn user_options_name_every_field_a_user_sets() {
        let CompressOptions {
            budget: _,           // "budget" and "rate"
            tokenizer: _,        // "tokenizer"
            format: _,           // "format"
            focus: _,            // "focus"
            fine: _,             // "no_fine"
            ranker: _,           // "ranker"
            max_candidates: _,   // "candidates"
            deadline: _,         // "deadline_ms"
            max_model_tokens: _, // "max_model_tokens"
            max_chunk_tokens: _,
            fine_rate: _,
            max_fine_tokens: _,
            beta: _,
            spike_k: _,
            bm25_k1: _,
            bm25_k3: _,
            max_query_tokens: _,
            query_weights: _,
            framed: _,
            other_roles_weight: _,
            keep_skeletons: _,
            keep_copies: _,
            code_first: _,
            callers: _,
            callees_follow: _,
            conditioning: _,
            read_order: _,
            fine_every_kind: _,
            fine_docs: _,
            faithful: _,
        } = CompressOptions::default();
        for name in ["model", "fused", "bm25"] {
            assert!(name.parse::<Ranker>().is_ok(), "{name}");
        }
        assert!("lexical".parse::<Ranker>().is_err());
    }
}
