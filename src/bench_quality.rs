//! `ctxzip bench quality`: recall of ctxzip against BM25 (and LongCodeZip as published) on
//! tasks built from real packages fetched at run time.
//!
//! - needle (RepoQA style): a documented function loses its doc comment, which becomes the
//!   query; success when the function's signature is in the output.
//! - callee: a function is removed and its signature + doc is the query; success is the
//!   share of the package functions it called whose signatures are in the output.
//! - question and instruction (`--questions DIR`): written by people, the way a developer asks
//!   (a question in plain words) or an agent is told (an issue-style task of 300–1500 tokens),
//!   over whole package roots with their docs and tests, each with the definitions that
//!   answer it (`bench/questions/*.toml`). A question is answered when any one of its answers
//!   is in the output; an instruction scores the share of its answers found.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ctxzip_chunker::index;
use ctxzip_chunker::workspace::{FileChunks, WalkOptions};
use ctxzip_chunker::{Chunk, ChunkKind, Lang, chunk_source};
use ctxzip_scoring::compress::{
    self, Budget, CompressOptions, Compressed, Conditioning, Document, QueryWeights, Ranker,
    ReadOrder,
};
use ctxzip_scoring::{CancelFlag, ScoringModel};
use serde::Deserialize;

use crate::compress_cmd::ModelArgs;
use crate::registry;

pub const DEV_SET: &[&str] = &[
    "pypi:requests==2.32.3",
    "pypi:flask==3.0.3",
    "pypi:click==8.1.7",
    "pypi:attrs==24.2.0",
    "crates:anyhow@1.0.86",
    "crates:serde_json@1.0.120",
    "crates:regex-syntax@0.8.4",
    "npm:express@4.21.1",
    "npm:zod@3.23.8",
    "npm:dayjs@1.11.13",
];

#[derive(Args)]
pub struct QualityArgs {
    /// Packages (pypi:NAME==V, npm:NAME@V, crates:NAME@V); default: the dev set.
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Needle tasks per package.
    #[arg(long, default_value_t = 2)]
    pub needles: usize,
    /// Callee tasks per package.
    #[arg(long, default_value_t = 1)]
    pub callees: usize,
    /// Token budgets to evaluate.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    pub budgets: Vec<usize>,
    /// Also evaluate at this compression rate (0.2 = 5x); 0: the token budgets only (a rate
    /// counts every token of the tree: 10-70 s per task on a whole package root).
    #[arg(long, default_value_t = 0.2)]
    pub rate: f64,
    /// Tasks also run in the LongCodeZip-faithful configuration (slow).
    #[arg(long, default_value_t = 2)]
    pub faithful_tasks: usize,
    /// Chunks the model scores per query (default: compress's default).
    #[arg(long)]
    pub max_candidates: Option<usize>,
    /// Tokens of each candidate the model reads (default: compress's default).
    #[arg(long)]
    pub max_chunk_tokens: Option<usize>,
    /// Tokens the fine stage keeps at most, i.e. reads about twice (default: compress's
    /// default).
    #[arg(long)]
    pub max_fine_tokens: Option<usize>,
    /// Only measure the candidate stage (which targets reach the model); no model scoring.
    #[arg(long)]
    pub candidates_only: bool,
    /// BM25's term-frequency saturation (default: compress's default).
    #[arg(long)]
    pub bm25_k1: Option<f32>,
    /// BM25's query-term-frequency saturation, Okapi's k3 (default: compress's default).
    #[arg(long)]
    pub bm25_k3: Option<f32>,
    /// Also run ctxzip under this latency budget (`--deadline-ms` of compress), on a scorer
    /// of its own with no caches and no KV states, so every query is a cold one.
    #[arg(long, value_name = "MS")]
    pub deadline_ms: Option<u64>,
    /// Also run ctxzip under each of these model-token budgets (`--max-model-tokens` of
    /// compress), on the same cold scorer as `--deadline-ms`: a row `ctxzip@Ntok` each.
    #[arg(long, value_name = "TOKENS", value_delimiter = ',')]
    pub max_model_tokens: Vec<usize>,
    /// Question and instruction tasks: every `*.toml` file in this folder (see
    /// `bench/questions`). Their packages are fetched as needed (`--packages` filters them).
    #[arg(long, value_name = "DIR")]
    pub questions: Option<PathBuf>,
    /// Query tokens the model reads at most (default: compress's default; 0: all).
    #[arg(long)]
    pub max_query_tokens: Option<usize>,
    /// Weight of chunks in files that are not code, unless the query asks for them (default:
    /// compress's default).
    #[arg(long)]
    pub other_roles_weight: Option<f32>,
    /// Rank the model's candidates from unwanted kinds of files after the wanted ones
    /// (default: compress's default).
    #[arg(long)]
    pub code_first: Option<bool>,
    /// Run the fine stage in the model's rows (default: compress's default); false compares
    /// rankings alone, at no fine-stage model cost.
    #[arg(long)]
    pub fine: Option<bool>,
    /// How the model's evidence on each query token counts: uniform (LongCodeZip's mean),
    /// content (content words only), idf (content words by rarity in the workspace)
    /// (default: compress's default).
    #[arg(long, value_parser = parse_query_weights)]
    pub query_weights: Option<QueryWeights>,
    /// Frame what the model reads: paths before candidates, the query as a question
    /// (default: compress's default).
    #[arg(long)]
    pub framed: Option<bool>,
    /// The callees of this many of the best-ranked chunks right after their caller
    /// (`CompressOptions::callees_follow`).
    #[arg(long)]
    pub callees_follow: Option<usize>,
    /// What the coarse stage conditions on what: query-given-chunk (LongCodeZip's),
    /// chunk-given-query (the query decoded once, as a shared prefix), by-length (the second
    /// for queries longer than the window) (default: compress's default).
    #[arg(long, value_enum)]
    pub conditioning: Option<Conditioning>,
    /// Which chunks the model reads and in which order: bm25, functions (functions that say
    /// much of the query first), by-length (functions for a query the model reads whole)
    /// (`CompressOptions::read_order`; default: compress's default).
    #[arg(long, value_enum)]
    pub read_order: Option<ReadOrder>,
    /// The fine stage prunes kept units of every kind, not only functions
    /// (`CompressOptions::fine_every_kind`; default: compress's default).
    #[arg(long)]
    pub fine_every_kind: Option<bool>,
    /// The fine stage may drop a long doc comment's rows after its first
    /// (`CompressOptions::fine_docs`; default: compress's default).
    #[arg(long)]
    pub fine_docs: Option<bool>,
    /// Run only the tasks with these numbers (as listed on stderr; default: all).
    #[arg(long, value_delimiter = ',')]
    pub task_ids: Vec<usize>,
    /// Print each method's selection (path, name, score) for every task on stderr.
    #[arg(long)]
    pub show_selection: bool,
    /// Run only these methods (rows of the report; default: all).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Keep model scores in this cache file across runs (default: a fresh cache per run, so
    /// that the model-token columns count all the work). For exploring variants only.
    #[arg(long, value_name = "FILE")]
    pub score_cache: Option<PathBuf>,
    /// Where fetched packages are kept.
    #[arg(long, default_value = "target/bench-quality")]
    pub cache: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A configuration the bench runs on every task: the run's options, adjusted.
struct Method {
    name: &'static str,
    /// LongCodeZip as published: run on the smallest tasks only, at the first budget.
    faithful: bool,
    adjust: fn(&mut CompressOptions),
}

/// ctxzip, then variants on the same (cached) model scores: without the fine stage, without
/// the coarse stage's model ranking (BM25's order with roles, pins first and their callees;
/// the fine stage on, or off too: what each model stage adds over BM25), without callees,
/// with the callees of the 8 best candidates only, without code first, with skeletons, with
/// every copy of a definition, the model's order alone; the BM25 baseline with every kind of
/// file alike and every copy (as `--ranker bm25` ranked before file roles and copies) and with
/// the run's role weights; LongCodeZip as published.
const METHODS: [Method; 14] = [
    Method {
        name: "ctxzip",
        faithful: false,
        adjust: |_| {},
    },
    Method {
        name: "ctxzip-nofine",
        faithful: false,
        adjust: |o| o.fine = false,
    },
    Method {
        name: "ctxzip-nocoarse",
        faithful: false,
        adjust: |o| o.max_candidates = 0,
    },
    Method {
        name: "ctxzip-nomodel",
        faithful: false,
        adjust: |o| {
            o.max_candidates = 0;
            o.fine = false;
        },
    },
    Method {
        name: "ctxzip-calls",
        faithful: false,
        adjust: |o| o.callers = 0,
    },
    Method {
        name: "ctxzip-8callers",
        faithful: false,
        adjust: |o| o.callers = 8,
    },
    Method {
        name: "ctxzip-codefirst",
        faithful: false,
        adjust: |o| o.code_first = false,
    },
    Method {
        name: "ctxzip+skeletons",
        faithful: false,
        adjust: |o| o.keep_skeletons = true,
    },
    Method {
        name: "ctxzip+copies",
        faithful: false,
        adjust: |o| o.keep_copies = true,
    },
    Method {
        name: "ctxzip-model",
        faithful: false,
        adjust: |o| o.ranker = Ranker::Model,
    },
    Method {
        name: "bm25",
        faithful: false,
        adjust: |o| {
            o.ranker = Ranker::Bm25;
            o.fine = false;
            o.callers = 0;
            o.other_roles_weight = 1.0;
            o.code_first = false;
            o.keep_copies = true;
        },
    },
    Method {
        name: "bm25+roles",
        faithful: false,
        adjust: |o| {
            o.ranker = Ranker::Bm25;
            o.fine = false;
            o.callers = 0;
        },
    },
    Method {
        name: "bm25+roles+skeletons",
        faithful: false,
        adjust: |o| {
            o.ranker = Ranker::Bm25;
            o.fine = false;
            o.callers = 0;
            o.keep_skeletons = true;
        },
    },
    Method {
        name: "longcodezip",
        faithful: true,
        adjust: |o| {
            o.faithful = true;
            o.callers = 0;
            o.ranker = Ranker::Model;
            o.code_first = false;
        },
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TaskKind {
    Needle,
    Callee,
    Question,
    Instruction,
}

const TASK_KINDS: [TaskKind; 4] = [
    TaskKind::Needle,
    TaskKind::Callee,
    TaskKind::Question,
    TaskKind::Instruction,
];

struct Task {
    package: String,
    kind: TaskKind,
    query: String,
    /// Files of the package with the task's edit applied.
    files: Vec<FileChunks>,
    /// Each target definition, by the (path, signature line) places that count as it.
    targets: Vec<Target>,
    /// Any one target found answers the task (questions); otherwise recall is the share
    /// found.
    any_target: bool,
}

/// A definition a task looks for: where it is, or any of the places that count as it (one
/// name assigned twice in a file, as JavaScript does with `proto.tz` and `dayjs.tz`; its
/// copies in other files, such as a build's bundles, of which compress shows one).
type Target = Vec<(String, u32)>;

/// (method, task kind, budget label) -> tally.
type Tallies = BTreeMap<(String, TaskKind, String), Tally>;

#[derive(Default, Clone)]
struct Tally {
    n: usize,
    recall: f64,
    model_tokens: usize,
    wall_ms: f64,
    /// Output tokens spent on chunks with nothing to read alone ([`compress::is_skeleton`]).
    skeleton_tokens: usize,
}

impl Tally {
    fn add(&mut self, recall: f64, result: &Compressed, wall_ms: f64) {
        self.n += 1;
        self.recall += recall;
        self.model_tokens += result.stats.model_tokens;
        self.wall_ms += wall_ms;
    }
    fn cell(&self) -> String {
        if self.n == 0 {
            return "-".into();
        }
        format!("{:.0}%", 100.0 * self.recall / self.n as f64)
    }
    fn cost(&self) -> String {
        if self.n == 0 {
            return "-".into();
        }
        let skeletons = if self.skeleton_tokens > 0 {
            format!(
                ", {:.1} output tok on skeletons",
                self.skeleton_tokens as f64 / self.n as f64
            )
        } else {
            String::new()
        };
        format!(
            "{:.0} tok, {:.1} s{skeletons}",
            self.model_tokens as f64 / self.n as f64,
            self.wall_ms / 1000.0 / self.n as f64
        )
    }
}

pub fn run(args: QualityArgs) -> Result<()> {
    if let Some(unknown) = args
        .methods
        .iter()
        .find(|name| !METHODS.iter().any(|m| m.name == name.as_str()))
    {
        let known: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        bail!(
            "no method {unknown:?}: --methods takes a comma-separated list of {}",
            known.join(", ")
        );
    }
    if !(0.0..=1.0).contains(&args.rate) {
        bail!(
            "--rate {} is not in [0, 1]: e.g. --rate 0.2 (5x), or 0 for the token budgets only",
            args.rate
        );
    }
    if args.budgets.is_empty() && args.rate == 0.0 {
        bail!("nothing to evaluate: give --budgets or a --rate above 0");
    }
    let packages: Vec<String> = if args.packages.is_empty() {
        DEV_SET.iter().map(|s| s.to_string()).collect()
    } else {
        args.packages.clone()
    };
    let mut tasks = Vec::new();
    for spec in packages.iter().filter(|_| args.needles + args.callees > 0) {
        let root = registry::fetch(spec, &args.cache)?;
        let ws = index::read_once(&root, &WalkOptions::default())?;
        let before = tasks.len();
        tasks.extend(needle_tasks(spec, &ws.files, args.needles));
        tasks.extend(callee_tasks(spec, &ws.files, args.callees));
        eprintln!(
            "{spec}: {} files, {} tasks",
            ws.files.len(),
            tasks.len() - before
        );
    }
    if let Some(dir) = &args.questions {
        tasks.extend(question_tasks(dir, &args.packages, &args.cache)?);
    }
    for (t, task) in tasks.iter().enumerate() {
        let query: String = task.query.chars().take(100).collect();
        eprintln!(
            "task [{t}] {} {:?} targets {:?}: {query:?}",
            task.package, task.kind, task.targets
        );
    }
    // A cache of this run's own: cached results of an earlier run would hide model work.
    let cache_dir = tempfile::tempdir()?;
    let cache_path = args
        .score_cache
        .clone()
        .unwrap_or_else(|| cache_dir.path().join("cache.sqlite"));
    let scorer = args.model.start_model_with(|config| {
        config.disk_cache_path = Some(cache_path);
    })?;
    let defaults = CompressOptions::default();
    let base = CompressOptions {
        max_candidates: args.max_candidates.unwrap_or(defaults.max_candidates),
        max_chunk_tokens: args.max_chunk_tokens.unwrap_or(defaults.max_chunk_tokens),
        bm25_k1: args.bm25_k1.unwrap_or(defaults.bm25_k1),
        bm25_k3: args.bm25_k3.unwrap_or(defaults.bm25_k3),
        max_fine_tokens: args.max_fine_tokens.unwrap_or(defaults.max_fine_tokens),
        max_query_tokens: args.max_query_tokens.unwrap_or(defaults.max_query_tokens),
        other_roles_weight: args
            .other_roles_weight
            .unwrap_or(defaults.other_roles_weight),
        code_first: args.code_first.unwrap_or(defaults.code_first),
        fine: args.fine.unwrap_or(defaults.fine),
        query_weights: args.query_weights.unwrap_or(defaults.query_weights),
        framed: args.framed.unwrap_or(defaults.framed),
        callees_follow: args.callees_follow.unwrap_or(defaults.callees_follow),
        conditioning: args.conditioning.unwrap_or(defaults.conditioning),
        read_order: args.read_order.unwrap_or(defaults.read_order),
        fine_every_kind: args.fine_every_kind.unwrap_or(defaults.fine_every_kind),
        fine_docs: args.fine_docs.unwrap_or(defaults.fine_docs),
        ..defaults.clone()
    };
    print_candidate_recall(&*scorer, &tasks, &base)?;
    if args.candidates_only {
        return Ok(());
    }
    // Rows run on a scorer with no caches, so that every query is a first one: a deadline
    // or a model-token budget binds hardest there.
    let cold_rows: Vec<(String, CompressOptions)> = args
        .deadline_ms
        .map(|ms| {
            let options = CompressOptions {
                deadline: Some(Duration::from_millis(ms)),
                ..base.clone()
            };
            (format!("ctxzip@{ms}ms"), options)
        })
        .into_iter()
        .chain(args.max_model_tokens.iter().map(|&n| {
            let options = CompressOptions {
                max_model_tokens: Some(n),
                ..base.clone()
            };
            (format!("ctxzip@{n}tok"), options)
        }))
        .collect();
    let cold_scorer = if cold_rows.is_empty() {
        None
    } else {
        Some(args.model.start_model_with(|config| {
            config.disk_cache_path = None;
            config.kv_state_cache_bytes = 0;
        })?)
    };
    let selected = |m: &Method| args.methods.is_empty() || args.methods.iter().any(|n| n == m.name);
    let mut rows: Vec<String> = METHODS
        .iter()
        .filter(|m| !m.faithful && selected(m))
        .map(|m| m.name.to_string())
        .collect();
    for (k, (name, _)) in cold_rows.iter().enumerate() {
        rows.insert((1 + k).min(rows.len()), name.clone());
    }
    let cancel = CancelFlag::new();
    let budgets: Vec<(String, Budget)> = args
        .budgets
        .iter()
        .map(|&b| (format!("{b} tokens"), Budget::Tokens(b)))
        .chain(
            (args.rate > 0.0)
                .then(|| (format!("{:.0}x", 1.0 / args.rate), Budget::Rate(args.rate))),
        )
        .collect();
    let mut tallies = Tallies::default();
    let mut faithful_pair: BTreeMap<String, Tally> = BTreeMap::new();
    // LongCodeZip as published scores every chunk: run it on the smallest workspaces only.
    let mut by_size: Vec<usize> = (0..tasks.len()).collect();
    by_size.sort_by_key(|&t| tasks[t].files.iter().map(|f| f.text.len()).sum::<usize>());
    let faithful_set: Vec<usize> = by_size.into_iter().take(args.faithful_tasks).collect();
    for (t, task) in tasks.iter().enumerate() {
        if !args.task_ids.is_empty() && !args.task_ids.contains(&t) {
            continue;
        }
        let in_faithful = faithful_set.contains(&t);
        let docs: Vec<Document> = task.files.iter().map(Document::from).collect();
        for (label, budget) in &budgets {
            let mut runs: Vec<(&str, &dyn ScoringModel, CompressOptions)> = Vec::new();
            for m in METHODS.iter().filter(|m| selected(m)) {
                if m.faithful && (!in_faithful || label != &budgets[0].0) {
                    continue;
                }
                let mut options = CompressOptions {
                    budget: *budget,
                    ..base.clone()
                };
                (m.adjust)(&mut options);
                runs.push((m.name, &*scorer, options));
            }
            if let Some(cold_scorer) = &cold_scorer {
                for (name, options) in &cold_rows {
                    let options = CompressOptions {
                        budget: *budget,
                        ..options.clone()
                    };
                    runs.push((name, &**cold_scorer, options));
                }
            }
            for (method, scorer, options) in runs {
                let started = Instant::now();
                let result = match compress::compress(scorer, &docs, &task.query, &options, &cancel)
                {
                    Ok(result) => result,
                    Err(err) => {
                        eprintln!("  {} {:?} {method} {label}: {err}", task.package, task.kind);
                        continue;
                    }
                };
                let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
                let recall = recall(task, &result);
                eprintln!(
                    "  [{t}] {} {:?} {method:<11} {label:<11} recall {recall:.2} model_tokens {} {:.1}s",
                    task.package,
                    task.kind,
                    result.stats.model_tokens,
                    wall_ms / 1000.0
                );
                if args.show_selection {
                    for c in &result.chunks {
                        eprintln!(
                            "      {:.3} {}:{}-{} {} {} tok",
                            c.score,
                            c.path,
                            c.start_line,
                            c.end_line,
                            c.name.as_deref().unwrap_or("-"),
                            c.tokens
                        );
                    }
                }
                let tally = tallies
                    .entry((method.to_string(), task.kind, label.clone()))
                    .or_default();
                tally.add(recall, &result, wall_ms);
                tally.skeleton_tokens += skeleton_tokens(task, &result);
                if in_faithful
                    && label == &budgets[0].0
                    && matches!(method, "ctxzip" | "longcodezip")
                {
                    faithful_pair
                        .entry(method.to_string())
                        .or_default()
                        .add(recall, &result, wall_ms);
                }
            }
        }
    }
    let counts: Vec<String> = TASK_KINDS
        .iter()
        .map(|kind| (kind, tasks.iter().filter(|t| t.kind == *kind).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{n} {}", format!("{kind:?}").to_lowercase()))
        .collect();
    let header = format!(
        "Model: {} ({}); {} tasks ({}); {} candidates of up to {} tokens; the fine stage keeps up to {} tokens; the model reads up to {} query tokens; other kinds of files weigh {} (code first: {}); query tokens weigh {:?}; framed prompt: {}; callees follow the best {}; conditioning {:?}; read order {:?}; the fine stage prunes every kind: {}; doc comments: {}; BM25 k3 {}.",
        args.model
            .model
            .as_deref()
            .unwrap_or(ctxzip_scoring::DEFAULT_MODEL),
        {
            let d = scorer.description();
            format!("{}; {}", d.location, d.build)
        },
        tasks.len(),
        counts.join(", "),
        base.max_candidates,
        base.max_chunk_tokens,
        base.max_fine_tokens,
        base.max_query_tokens,
        base.other_roles_weight,
        base.code_first,
        base.query_weights,
        base.framed,
        base.callees_follow,
        base.conditioning,
        base.read_order,
        base.fine_every_kind,
        base.fine_docs,
        base.bm25_k3,
    );
    print_report(&header, &budgets, &rows, &(tallies, faithful_pair));
    Ok(())
}

fn parse_query_weights(s: &str) -> Result<QueryWeights, String> {
    match s {
        "uniform" => Ok(QueryWeights::Uniform),
        "content" => Ok(QueryWeights::Content),
        "idf" => Ok(QueryWeights::Idf),
        _ => Err(format!("{s:?} is not one of uniform, content, idf")),
    }
}

fn print_report(
    header: &str,
    budgets: &[(String, Budget)],
    rows: &[String],
    (tallies, faithful_pair): &(Tallies, BTreeMap<String, Tally>),
) {
    println!("{header}\n");
    println!(
        "| task | method | {} | cost per query (at {}) |",
        budgets
            .iter()
            .map(|b| b.0.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        budgets[0].0
    );
    println!("|---|---|{}---|", "---|".repeat(budgets.len()));
    for kind in TASK_KINDS {
        if !tallies.keys().any(|(_, k, _)| *k == kind) {
            continue;
        }
        for method in rows {
            let cells: Vec<String> = budgets
                .iter()
                .map(|(label, _)| {
                    tallies
                        .get(&(method.to_string(), kind, label.clone()))
                        .map_or("-".into(), Tally::cell)
                })
                .collect();
            let cost = tallies
                .get(&(method.to_string(), kind, budgets[0].0.clone()))
                .map_or("-".into(), Tally::cost);
            println!("| {kind:?} | {method} | {} | {cost} |", cells.join(" | "));
        }
    }
    if let (Some(ours), Some(theirs)) = (
        faithful_pair.get("ctxzip"),
        faithful_pair.get("longcodezip"),
    ) {
        println!();
        println!(
            "LongCodeZip-faithful vs ctxzip on the first {} tasks at {}:\n",
            ours.n, budgets[0].0
        );
        println!("| method | recall | model tokens per query | wall s per query |");
        println!("|---|---|---|---|");
        for (name, t) in [("ctxzip", ours), ("longcodezip (faithful)", theirs)] {
            println!(
                "| {name} | {} | {:.0} | {:.1} |",
                t.cell(),
                t.model_tokens as f64 / t.n as f64,
                t.wall_ms / 1000.0 / t.n as f64
            );
        }
        println!(
            "\nRatios: {:.1}x fewer model tokens, {:.1}x less wall time.",
            theirs.model_tokens as f64 / ours.model_tokens.max(1) as f64,
            theirs.wall_ms / ours.wall_ms.max(1.0)
        );
    }
}

/// What the candidate stage loses: the share of targets whose chunk is among the chunks the
/// model scores, per task kind, for the default pool size and larger ones.
fn print_candidate_recall(
    scorer: &dyn ScoringModel,
    tasks: &[Task],
    base: &CompressOptions,
) -> Result<()> {
    let default = CompressOptions::default().max_candidates;
    // Half the pool is about what the default model-token budget reads cold (~11 heads).
    let sizes = [default / 2, default, default * 2, default * 4];
    // (kind, pool size) -> (sum of per-task recall, tasks)
    let mut cells: BTreeMap<(TaskKind, usize), (f64, usize)> = BTreeMap::new();
    for (t, task) in tasks.iter().enumerate() {
        let docs: Vec<Document> = task.files.iter().map(Document::from).collect();
        let candidates = compress::candidate_chunks(scorer, &docs, &task.query, base)?;
        let position = |path: &str, line: u32| {
            candidates.chunks.iter().position(|&(d, c)| {
                let chunk = &docs[d].chunks[c];
                docs[d].path == path && chunk.start_line <= line && line <= chunk.end_line
            })
        };
        // A pool smaller than the default: the default pool, of which the model reads only
        // `size` (as under a model-token budget) besides the pinned ones.
        let in_pool = |p: usize, size: usize| {
            if size < default {
                p < candidates.reached(size, default).len()
            } else {
                p < candidates.pool(size).len()
            }
        };
        let missed: Vec<String> = task
            .targets
            .iter()
            .filter_map(|places| {
                let (path, line) = &places[0];
                match places.iter().filter_map(|(p, l)| position(p, *l)).min() {
                    Some(p) if in_pool(p, default) => None,
                    Some(p) => Some(format!("{path}:{line} at {}", p + 1)),
                    None => Some(format!("{path}:{line} not a candidate")),
                }
            })
            .collect();
        let first = task
            .targets
            .iter()
            .filter_map(|places| places.iter().filter_map(|(p, l)| position(p, *l)).min())
            .min();
        eprintln!(
            "candidate stage: task [{t}] first target at {} ({} pinned, {} order)",
            first.map_or("none".to_string(), |p| (p + 1).to_string()),
            candidates.n_pinned(),
            if candidates.functions_first() {
                "functions-first"
            } else {
                "bm25"
            }
        );
        if !missed.is_empty() {
            eprintln!(
                "candidate stage: task [{t}] {} {:?} misses {}",
                task.package,
                task.kind,
                missed.join(", ")
            );
        }
        for size in sizes {
            let share = share_found(task, |path, line| {
                position(path, line).is_some_and(|p| in_pool(p, size))
            });
            let cell = cells.entry((task.kind, size)).or_default();
            cell.0 += share;
            cell.1 += 1;
        }
    }
    println!("Candidate stage: share of targets among the chunks that reach the model\n");
    println!(
        "| task | tasks | {} |",
        sizes
            .iter()
            .map(|&n| match n.cmp(&default) {
                std::cmp::Ordering::Less => format!("{n} read, and the pinned"),
                std::cmp::Ordering::Equal => format!("{n} candidates (default)"),
                std::cmp::Ordering::Greater => format!("{n} candidates"),
            })
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(sizes.len()));
    for kind in TASK_KINDS {
        let row: Vec<String> = sizes
            .iter()
            .filter_map(|size| cells.get(&(kind, *size)))
            .map(|(sum, n)| format!("{:.0}%", 100.0 * sum / (*n).max(1) as f64))
            .collect();
        let n = cells.get(&(kind, default)).map_or(0, |c| c.1);
        if n > 0 {
            println!("| {kind:?} | {n} | {} |", row.join(" | "));
        }
    }
    println!();
    Ok(())
}

/// Output tokens of the selected chunks that are skeletons.
fn skeleton_tokens(task: &Task, result: &Compressed) -> usize {
    result
        .chunks
        .iter()
        .filter(|selected| {
            task.files
                .iter()
                .filter(|f| f.path == selected.path)
                .flat_map(|f| f.chunks.iter().map(move |c| (f, c)))
                .any(|(f, c)| {
                    c.start_line == selected.start_line && compress::is_skeleton(c, c.text(&f.text))
                })
        })
        .map(|selected| selected.tokens)
        .sum()
}

/// Share of targets whose signature line is in the output.
fn recall(task: &Task, result: &Compressed) -> f64 {
    share_found(task, |path, line| {
        result
            .chunks
            .iter()
            .any(|c| c.path == path && c.kept_lines.iter().any(|&[a, b]| a <= line && line <= b))
    })
}

/// Share of the task's targets (path, signature line) that `found` accepts.
fn share_found(task: &Task, found: impl Fn(&str, u32) -> bool) -> f64 {
    let n = task
        .targets
        .iter()
        .filter(|places| places.iter().any(|(p, l)| found(p, *l)))
        .count();
    if task.any_target {
        f64::from(u8::from(n > 0))
    } else {
        n as f64 / task.targets.len().max(1) as f64
    }
}

fn is_test_path(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p.contains("test")
        || p.contains("spec")
        || p.contains("bench")
        || p.contains("example")
        || p.contains("/docs/")
}

/// Deterministic pseudo-random order, so tasks do not all come from the first file.
fn shuffle_key(text: &str) -> u64 {
    ctxzip_chunker::chunk::content_hash(text.as_bytes())
}

/// Lines (0-based, in the file) of a definition's doc comment, and the doc text.
fn doc_of(file: &FileChunks, chunk: &Chunk) -> Option<(Vec<usize>, String)> {
    let lines: Vec<&str> = file.text.lines().collect();
    let first = (chunk.start_line - 1) as usize;
    let header_end = (chunk.header_end_line.max(chunk.start_line) - 1) as usize;
    let mut rows = Vec::new();
    let mut text = Vec::new();
    if file.lang == Lang::Python {
        // The docstring: the first statement of the body.
        let mut r = header_end + 1;
        while r < lines.len() && lines[r].trim().is_empty() {
            r += 1;
        }
        let start = lines.get(r)?.trim_start();
        let quote = ["\"\"\"", "'''", "r\"\"\""]
            .into_iter()
            .find(|q| start.starts_with(q))?;
        let quote = quote.trim_start_matches('r');
        let mut end = r;
        let rest = &start[start.find(quote)? + 3..];
        if !rest.contains(quote) {
            end += 1;
            while end < lines.len() && !lines[end].contains(quote) {
                end += 1;
            }
        }
        if end >= lines.len() || end as u32 + 1 > chunk.end_line - 1 {
            return None;
        }
        for (row, line) in lines.iter().enumerate().take(end + 1).skip(r) {
            rows.push(row);
            text.push(
                line.trim()
                    .trim_matches(|c| c == '"' || c == '\'' || c == 'r')
                    .to_string(),
            );
        }
    } else {
        for (row, line) in lines.iter().enumerate().take(header_end).skip(first) {
            let line = line.trim_start();
            if line.starts_with("//") || line.starts_with("/*") || line.starts_with('*') {
                rows.push(row);
                text.push(
                    line.trim_start_matches(['/', '*', '!', ' '])
                        .trim()
                        .to_string(),
                );
            }
        }
    }
    let doc = text
        .join(" ")
        .split_whitespace()
        .take(80)
        .collect::<Vec<_>>()
        .join(" ");
    let words = doc
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    (words >= 6 && !rows.is_empty()).then_some((rows, doc))
}

/// The signature line of `chunk`'s definition in the edited `file`: the callable with the
/// same name that starts nearest to where it started.
fn signature_after_edit(file: &FileChunks, chunk: &Chunk) -> Option<u32> {
    let target = file
        .chunks
        .iter()
        .filter(|k| k.name == chunk.name && k.kind.is_callable())
        .min_by_key(|k| k.start_line.abs_diff(chunk.start_line))?;
    Some(target.header_end_line.max(target.start_line))
}

/// The package with `rows` of file `f` removed, re-chunked.
fn without_rows(files: &[FileChunks], f: usize, rows: &[usize]) -> Vec<FileChunks> {
    let mut out = files.to_vec();
    let file = &mut out[f];
    let kept: String = file
        .text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(i, _)| !rows.contains(i))
        .map(|(_, l)| l)
        .collect();
    file.chunks = chunk_source(file.lang, &kept);
    file.text = kept;
    out
}

/// Callable chunks a task may be built on: outside tests, 6+ lines, a name unique in the
/// package (so that the target is unambiguous), in a deterministic shuffled order.
fn candidates(files: &[FileChunks]) -> Vec<(usize, usize)> {
    let mut name_count: HashMap<&str, usize> = HashMap::new();
    for file in files {
        for chunk in &file.chunks {
            if let Some(name) = chunk.name.as_deref() {
                *name_count.entry(name).or_default() += 1;
            }
        }
    }
    let mut found: Vec<(usize, usize)> = Vec::new();
    for (f, file) in files.iter().enumerate() {
        if !file.lang.has_grammar() || is_test_path(&file.path) {
            continue;
        }
        for (c, chunk) in file.chunks.iter().enumerate() {
            if chunk.kind.is_callable()
                && chunk.n_lines() >= 6
                && chunk.name.as_deref().is_some_and(|n| n.len() >= 4)
            {
                found.push((f, c));
            }
        }
    }
    found.sort_by_key(|&(f, c)| {
        shuffle_key(&format!(
            "{}:{}",
            files[f].path, files[f].chunks[c].start_line
        ))
    });
    found
}

fn needle_tasks(package: &str, files: &[FileChunks], n: usize) -> Vec<Task> {
    let mut tasks = Vec::new();
    for (f, c) in candidates(files) {
        if tasks.len() >= n {
            break;
        }
        let file = &files[f];
        let chunk = &file.chunks[c];
        let Some((rows, doc)) = doc_of(file, chunk) else {
            continue;
        };
        let edited = without_rows(files, f, &rows);
        let Some(signature_line) = signature_after_edit(&edited[f], chunk) else {
            continue;
        };
        tasks.push(Task {
            package: package.to_string(),
            kind: TaskKind::Needle,
            query: doc,
            targets: vec![vec![(file.path.clone(), signature_line)]],
            any_target: false,
            files: edited,
        });
    }
    tasks
}

fn callee_tasks(package: &str, files: &[FileChunks], n: usize) -> Vec<Task> {
    // Package functions by name, when the name is unique.
    let mut by_name: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (f, file) in files.iter().enumerate() {
        if !file.lang.has_grammar() || is_test_path(&file.path) {
            continue;
        }
        for (c, chunk) in file.chunks.iter().enumerate() {
            if matches!(chunk.kind, ChunkKind::Function | ChunkKind::Method)
                && let Some(name) = chunk.name.as_deref()
                && name.len() >= 5
            {
                by_name.entry(name).or_default().push((f, c));
            }
        }
    }
    let mut tasks = Vec::new();
    for (f, c) in candidates(files) {
        if tasks.len() >= n {
            break;
        }
        let file = &files[f];
        let chunk = &file.chunks[c];
        let body = &file.text[chunk.header_range.end..chunk.byte_range.end];
        let mut callees: Vec<(usize, usize)> = by_name
            .iter()
            .filter(|(name, defs)| {
                defs.len() == 1
                    && Some(**name) != chunk.name.as_deref()
                    && body.contains(&format!("{name}("))
            })
            .map(|(_, defs)| defs[0])
            .collect();
        callees.sort();
        if callees.len() < 2 {
            continue;
        }
        let mut query = file.text[chunk.header_range.clone()].to_string();
        if let Some((_, doc)) = doc_of(file, chunk)
            && file.lang == Lang::Python
        {
            query.push_str(&format!("    \"\"\"{doc}\"\"\"\n"));
        }
        let rows: Vec<usize> = ((chunk.start_line - 1) as usize..chunk.end_line as usize).collect();
        let edited = without_rows(files, f, &rows);
        let targets = callees
            .iter()
            .filter_map(|&(cf, cc)| {
                let line = signature_after_edit(&edited[cf], &files[cf].chunks[cc])?;
                Some(vec![(files[cf].path.clone(), line)])
            })
            .collect::<Vec<_>>();
        if targets.len() < 2 {
            continue;
        }
        tasks.push(Task {
            package: package.to_string(),
            kind: TaskKind::Callee,
            query,
            targets,
            any_target: false,
            files: edited,
        });
    }
    tasks
}

/// One task of a `bench/questions/*.toml` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionSpec {
    package: String,
    /// Folder of the package that ctxzip is pointed at; "" for the whole root.
    #[serde(default)]
    root: String,
    kind: String,
    query: String,
    /// `path::name`: a definition in a file under the root (qualified names match by suffix).
    answers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionFile {
    task: Vec<QuestionSpec>,
}

/// The task specs of every `*.toml` file in `dir`, for the packages in `only` (all when
/// empty), with their kinds; nothing fetched.
fn question_specs(dir: &Path, only: &[String]) -> Result<Vec<(TaskKind, QuestionSpec)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the questions folder {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut specs = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let parsed: QuestionFile =
            toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
        for spec in parsed.task {
            if !only.is_empty() && !only.contains(&spec.package) {
                continue;
            }
            let kind = match spec.kind.as_str() {
                "question" => TaskKind::Question,
                "instruction" => TaskKind::Instruction,
                other => bail!(
                    "{}: task kind {other:?}: use \"question\" or \"instruction\"",
                    file.display()
                ),
            };
            specs.push((kind, spec));
        }
    }
    Ok(specs)
}

/// The question and instruction tasks of every `*.toml` file in `dir`, for the packages in
/// `only` (all when empty), over each package's root folder as fetched.
fn question_tasks(dir: &Path, only: &[String], cache: &Path) -> Result<Vec<Task>> {
    // Each (package, root) is chunked once.
    let mut roots: BTreeMap<(String, String), Vec<FileChunks>> = BTreeMap::new();
    let mut tasks = Vec::new();
    for (kind, spec) in question_specs(dir, only)? {
        let key = (spec.package.clone(), spec.root.clone());
        if !roots.contains_key(&key) {
            let fetched = registry::fetch(&spec.package, cache)?;
            let ws = index::read_once(&fetched.join(&spec.root), &WalkOptions::default())?;
            eprintln!(
                "{} ({}): {} files",
                spec.package,
                if spec.root.is_empty() {
                    "root"
                } else {
                    &spec.root
                },
                ws.files.len()
            );
            roots.insert(key.clone(), ws.files);
        }
        let files = &roots[&key];
        let mut targets = Vec::new();
        for answer in &spec.answers {
            targets.push(find_definition(files, answer).with_context(|| {
                format!("{}: answer {answer:?} of {:?}", spec.package, spec.query)
            })?);
        }
        tasks.push(Task {
            package: spec.package,
            kind,
            query: spec.query,
            files: files.clone(),
            targets,
            any_target: kind == TaskKind::Question,
        });
    }
    Ok(tasks)
}

/// The (path, signature line) of `path::name`: the definitions in that file whose qualified
/// name is `name` or ends with it after a `.` or `::` (a type rather than its `impl`s), and
/// their copies in other files ([`compress::texts_are_copies`]).
fn find_definition(files: &[FileChunks], answer: &str) -> Result<Target> {
    let (path, name) = answer
        .split_once("::")
        .context("an answer is written path::name")?;
    let file = files
        .iter()
        .find(|f| f.path == path)
        .with_context(|| format!("no file {path} under the root"))?;
    let matches = |chunk: &Chunk| {
        let qualified = chunk.display_name();
        qualified == name
            || qualified.ends_with(&format!(".{name}"))
            || qualified.ends_with(&format!("::{name}"))
    };
    let mut found: Vec<&Chunk> = file
        .chunks
        .iter()
        .filter(|c| c.kind != ChunkKind::Glue && c.kind != ChunkKind::Text && matches(c))
        .collect();
    // A type and its `impl` blocks share a name: the type is the definition.
    if found.iter().any(|c| c.kind != ChunkKind::Impl) {
        found.retain(|c| c.kind != ChunkKind::Impl);
    }
    if found.is_empty() {
        bail!("no definition {name} in {path}");
    }
    let place = |path: &str, c: &Chunk| (path.to_string(), c.header_end_line.max(c.start_line));
    let mut places: Target = found.iter().map(|c| place(path, c)).collect();
    // compress shows one copy of a definition copied into several files (a build's bundles):
    // whichever it shows is the answer.
    for c in &found {
        let Some(qualified) = c.qualified_name.as_deref() else {
            continue;
        };
        let text = c.text(&file.text);
        for other in files.iter().filter(|f| f.path != path) {
            places.extend(
                other
                    .chunks
                    .iter()
                    .filter(|o| o.qualified_name.as_deref() == Some(qualified))
                    .filter(|o| compress::texts_are_copies(text, o.text(&other.text)))
                    .map(|o| place(&other.path, o)),
            );
        }
    }
    Ok(places)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{TaskKind, question_specs};
    use crate::registry;

    /// Every task set in `bench/` reads, and each task is what its kind says: a question of
    /// one to a few sentences, an instruction of an issue's length (the issue asks for
    /// 300-1500 tokens: 200 words at least), answers written `path::name` for a package
    /// with its registry.
    #[test]
    fn every_bench_task_set_reads_and_its_tasks_are_well_formed() {
        let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
        let mut sets = 0;
        for dir in std::fs::read_dir(&bench).unwrap().flatten() {
            let specs = question_specs(&dir.path(), &[]).unwrap();
            assert!(!specs.is_empty(), "{}: no tasks", dir.path().display());
            sets += 1;
            for (kind, spec) in specs {
                let words = spec.query.split_whitespace().count();
                let start: String = spec.query.chars().take(40).collect();
                let what = format!("{} {start:?}", spec.package);
                match kind {
                    TaskKind::Question => assert!((5..=120).contains(&words), "{what}: {words}"),
                    _ => assert!((200..=1500).contains(&words), "{what}: {words} words"),
                }
                registry::split_spec(&spec.package).unwrap();
                assert!(!spec.answers.is_empty(), "{what}");
                for answer in &spec.answers {
                    let (path, name) = answer.split_once("::").unwrap_or(("", ""));
                    assert!(!path.is_empty() && !name.is_empty(), "{what}: {answer}");
                }
            }
        }
        assert!(sets >= 3, "bench/questions, bench/holdout and bench/fresh");
    }
}
