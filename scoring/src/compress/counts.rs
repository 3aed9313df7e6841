//! The units' token counts, counted when a stage first needs one: a big tree's chunks are
//! mostly never counted.
//!
//! Counting every chunk with the model's tokenizer before ranking cost most of a query on a
//! tree of 450k chunks (`~/.cargo/registry/src`: 115 of 260 s, BENCHMARKS.md
//! `## Reliability`), and the budget only ever takes the few chunks that fit. The stages walk
//! the ranked order and ask for [`TokenCounts::floor`] first, a lower bound from a scan of
//! the text ([`ScoringModel::min_tokens`]); only a chunk whose floor still fits is counted.
//! What is chosen is therefore what counting everything first would choose (the test below
//! and `tests/pipeline.rs` hold it to that).

use std::cell::OnceCell;

use super::tokenizer::BudgetCounter;

/// Workspaces with at most this many bytes of chunk text are counted whole once the
/// selection is made, so that [`super::Stats::original_tokens`] is exact for them (about
/// 300k tokens: well under a second of tokenizing); larger ones get an estimate.
pub const EXACT_TOTAL_BYTES: usize = 1 << 20;

/// Bytes per token of the chunks no stage counted, for the estimate of a large workspace's
/// total: 86,483,765 tokens (SmolLM2's tokenizer) of the chunk text in
/// `~/.cargo/registry/src` (BENCHMARKS.md `## Reliability`).
pub const ESTIMATE_BYTES_PER_TOKEN: f64 = 2.6;

/// Token counts of `texts` (one per unit), each counted at most once.
pub struct TokenCounts<'a> {
    counter: BudgetCounter<'a>,
    texts: &'a [&'a str],
    counts: Vec<OnceCell<usize>>,
}

impl<'a> TokenCounts<'a> {
    pub fn new(counter: BudgetCounter<'a>, texts: &'a [&'a str]) -> Self {
        TokenCounts {
            counter,
            texts,
            counts: (0..texts.len()).map(|_| OnceCell::new()).collect(),
        }
    }

    /// The text of unit `i`.
    pub fn text(&self, i: usize) -> &'a str {
        self.texts[i]
    }

    /// The tokens of unit `i`, counted now if no stage has yet.
    pub fn get(&self, i: usize) -> usize {
        *self.counts[i].get_or_init(|| self.counter.count_batch(&[self.texts[i]])[0])
    }

    /// At most the tokens of unit `i`, without counting: its count when known, else its
    /// text's floor. Every unit has text, so every unit costs at least one token.
    pub fn floor(&self, i: usize) -> usize {
        match self.counts[i].get() {
            Some(&n) => n,
            None => self.counter.min_tokens(self.texts[i]).max(1),
        }
    }

    /// Counts every unit not counted yet (one batch, remembered by the scorer across
    /// queries) and returns the total.
    pub fn count_all(&self) -> usize {
        let todo: Vec<usize> = (0..self.texts.len())
            .filter(|&i| self.counts[i].get().is_none())
            .collect();
        let texts: Vec<&str> = todo.iter().map(|&i| self.texts[i]).collect();
        for (i, n) in todo.into_iter().zip(self.counter.count_batch(&texts)) {
            let _ = self.counts[i].set(n);
        }
        self.counts.iter().filter_map(OnceCell::get).sum()
    }

    /// Bytes of all the units' text.
    pub fn total_bytes(&self) -> usize {
        self.texts.iter().map(|t| t.len()).sum()
    }

    /// The total: counts where known, the rest estimated from their bytes at
    /// [`ESTIMATE_BYTES_PER_TOKEN`].
    pub fn estimate_total(&self) -> usize {
        let (mut known, mut unknown_bytes) = (0, 0);
        for (cell, text) in self.counts.iter().zip(self.texts) {
            match cell.get() {
                Some(&n) => known += n,
                None => unknown_bytes += text.len(),
            }
        }
        known + (unknown_bytes as f64 / ESTIMATE_BYTES_PER_TOKEN).round() as usize
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ctxzip_chunker::{Chunk, Lang, chunk_source};

    use super::super::{
        Budget, CompressError, CompressOptions, Compressed, Counting, Document, Format, Ranker,
        compress_counting,
    };
    use crate::engine::{
        CancelFlag, ChunkInput, ScoreOptions, ScoreOutput, ScorerStats, TokenNlls,
    };
    use crate::error::Result;
    use crate::model::{ModelDescription, ScoringModel};
    use crate::overlap::OverlapModel;

    /// The overlap model, keeping a tally of the texts it is asked to count in batches (the
    /// units' counts).
    struct Tally {
        model: OverlapModel,
        counted: AtomicUsize,
    }

    impl ScoringModel for Tally {
        fn model_id(&self) -> Option<&str> {
            self.model.model_id()
        }
        fn description(&self) -> ModelDescription {
            self.model.description()
        }
        fn default_options(&self) -> ScoreOptions {
            self.model.default_options()
        }
        fn stats(&self) -> ScorerStats {
            self.model.stats()
        }
        fn count_tokens(&self, text: &str) -> usize {
            self.model.count_tokens(text)
        }
        fn count_tokens_batch(&self, texts: &[&str]) -> Vec<usize> {
            self.counted.fetch_add(texts.len(), Ordering::Relaxed);
            // Not the memo: each query's counting is what is tallied.
            texts.iter().map(|t| self.model.count_tokens(t)).collect()
        }
        fn min_tokens(&self, text: &str) -> usize {
            self.model.min_tokens(text)
        }
        fn score_chunks_with(
            &self,
            query: &str,
            chunks: &[ChunkInput],
            options: ScoreOptions,
            cancel: &CancelFlag,
        ) -> Result<ScoreOutput> {
            self.model.score_chunks_with(query, chunks, options, cancel)
        }
        fn token_nlls_batch_with(
            &self,
            prefix: Option<&str>,
            texts: &[&str],
            options: ScoreOptions,
            cancel: &CancelFlag,
        ) -> Result<Vec<TokenNlls>> {
            self.model
                .token_nlls_batch_with(prefix, texts, options, cancel)
        }
    }

    /// The generated files as the pipeline's documents.
    fn documents(files: &[(String, String, Vec<Chunk>)]) -> Vec<Document<'_>> {
        files
            .iter()
            .map(|(path, text, chunks)| Document {
                path,
                lang: Lang::Python,
                text,
                chunks,
                redacted: 0,
            })
            .collect()
    }

    /// xorshift64*: the same cases on every run, a failing one named by its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }
        fn word(&mut self) -> &'static str {
            const WORDS: &[&str] = &[
                "invoice", "total", "tax", "parse", "config", "token", "retry", "socket", "ledger",
                "balance", "render", "cache", "index", "query", "budget", "stream",
            ];
            WORDS[self.range(0, WORDS.len() - 1)]
        }
    }

    /// Python files of one-line constants and functions of 1 to 30 lines: the sizes a big
    /// tree mixes, so that the floors rule some units out and leave others to count.
    fn workspace(rng: &mut Rng) -> Vec<(String, String, Vec<Chunk>)> {
        (0..rng.range(8, 30))
            .map(|f| {
                let mut text = String::new();
                for n in 0..rng.range(1, 6) {
                    if rng.range(0, 2) == 0 {
                        text += &format!("{}_{n} = {}\n\n\n", rng.word().to_uppercase(), n * 7);
                        continue;
                    }
                    text += &format!("def {}_{}_{n}(x):\n", rng.word(), rng.word());
                    for line in 0..rng.range(1, 30) {
                        text += &format!("    x = {}_{line}(x, {})\n", rng.word(), rng.word());
                    }
                    text += "    return x\n\n\n";
                }
                let chunks = chunk_source(Lang::Python, &text);
                (format!("pkg/m{f}.py"), text, chunks)
            })
            .collect()
    }

    /// The result as data, without the time it took.
    fn comparable(result: std::result::Result<Compressed, CompressError>) -> String {
        match result {
            Ok(mut result) => {
                result.stats.elapsed_ms = 0.0;
                serde_json::to_string_pretty(&result).expect("serializable")
            }
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn counting_only_what_can_still_fit_chooses_what_counting_everything_chooses() {
        let formats = [Format::Text, Format::Markdown, Format::Json, Format::Xml];
        let rankers = [Ranker::Bm25, Ranker::Fused, Ranker::Model];
        for seed in 1..=120u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let files = workspace(&mut rng);
            let docs = documents(&files);
            let options = CompressOptions {
                budget: if rng.range(0, 9) == 0 {
                    Budget::Rate(rng.range(1, 100) as f64 / 100.0)
                } else {
                    Budget::Tokens(rng.range(1, 1500))
                },
                format: formats[rng.range(0, 3)],
                ranker: rankers[rng.range(0, 2)],
                fine: rng.range(0, 1) == 0,
                ..CompressOptions::default()
            };
            let query = format!("{} {} {}", rng.word(), rng.word(), rng.word());
            let run = |counting| {
                let model = Tally {
                    model: OverlapModel::new(),
                    counted: AtomicUsize::new(0),
                };
                let result = compress_counting(
                    &model,
                    &docs,
                    &query,
                    &options,
                    &CancelFlag::new(),
                    None,
                    counting,
                );
                (comparable(result), model.counted.load(Ordering::Relaxed))
            };
            let (lazy, n_lazy) = run(Counting::Lazy);
            let (all, n_all) = run(Counting::All);
            assert_eq!(lazy, all, "seed {seed}, {options:?}");
            // Small workspaces are counted whole for their total, once the choice is made.
            assert_eq!(n_lazy, n_all, "seed {seed}");
        }
    }

    #[test]
    fn most_of_a_big_workspace_is_not_counted_and_its_total_is_estimated() {
        let mut rng = Rng(7);
        let mut files = Vec::new();
        while files
            .iter()
            .map(|f: &(String, String, Vec<Chunk>)| f.1.len())
            .sum::<usize>()
            <= super::EXACT_TOTAL_BYTES
        {
            let more = workspace(&mut rng);
            let n = files.len();
            files.extend(
                more.into_iter()
                    .enumerate()
                    .map(|(f, (_, text, chunks))| (format!("pkg/m{}.py", n + f), text, chunks)),
            );
        }
        let docs = documents(&files);
        let n_units: usize = files.iter().map(|f| f.2.len()).sum();
        let options = CompressOptions {
            ranker: Ranker::Bm25,
            ..CompressOptions::default()
        };
        let model = Tally {
            model: OverlapModel::new(),
            counted: AtomicUsize::new(0),
        };
        let cancel = CancelFlag::new();
        let run = |counting| {
            compress_counting(
                &model,
                &docs,
                "retry the socket",
                &options,
                &cancel,
                None,
                counting,
            )
            .expect("an answer")
        };
        let lazy = run(Counting::Lazy);
        let n_lazy = model.counted.swap(0, Ordering::Relaxed);
        let all = run(Counting::All);
        assert_eq!(lazy.context, all.context);
        assert!(n_lazy * 2 < n_units, "counted {n_lazy} of {n_units} units");
        // The estimate's ratio is measured on real code and a real tokenizer; on this
        // generated code and the overlap model it is still the right size.
        let (estimate, exact) = (lazy.stats.original_tokens, all.stats.original_tokens);
        assert!(
            estimate > exact / 2 && estimate < exact * 2,
            "estimated {estimate}, exactly {exact}"
        );
    }
}
