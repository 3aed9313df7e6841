//! The cheap candidate stage and the lexical baseline: BM25 over identifier-split chunk
//! text, names and paths.

use std::collections::HashMap;
use std::sync::LazyLock;

use rayon::prelude::*;

/// Words too common in code or queries to say anything about relevance.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "get",
    "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "not", "of",
    "on", "or", "set", "should", "so", "that", "the", "their", "then", "there", "this", "to",
    "use", "used", "was", "we", "what", "when", "where", "which", "while", "who", "why", "will",
    "with", "you", "your", "self", "def", "fn", "let", "mut", "pub", "var", "const", "return",
    "function", "else", "elif", "true", "false", "none", "null", "nil", "new", "int", "str",
    "string", "bool", "void", "import", "end", "class", "impl", "type", "value",
];

/// [`STOP_WORDS`] as [`packed`] integers, sorted, for a binary search per term: comparing
/// strings there was a tenth of a big tree's query (a `memcmp` call per step, tens of
/// millions of terms).
static STOP_WORD_KEYS: LazyLock<Vec<u64>> = LazyLock::new(|| {
    let mut keys: Vec<u64> = STOP_WORDS.iter().filter_map(|w| packed(w)).collect();
    keys.sort_unstable();
    keys
});

/// A term of at most 8 bytes as one integer, its bytes zero-padded. Terms hold no NUL byte
/// (only letters, digits and `_`), so two terms have the same integer only when they are
/// equal.
fn packed(term: &str) -> Option<u64> {
    let bytes = term.as_bytes();
    if bytes.len() > 8 {
        return None;
    }
    let mut key = [0u8; 8];
    key[..bytes.len()].copy_from_slice(bytes);
    Some(u64::from_le_bytes(key))
}

fn is_stop_word(term: &str) -> bool {
    packed(term).is_some_and(|key| STOP_WORD_KEYS.binary_search(&key).is_ok())
}

/// Splits text into lowercase terms: identifiers are split at `_`, `-` and camelCase
/// boundaries, and kept whole as well.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_term(text, |term| out.push(term.to_owned()));
    out
}

/// The terms of [`terms`], in its order, each passed to `f` without a string of its own:
/// indexing a big tree's chunks meets tens of millions of them.
pub fn for_each_term(text: &str, mut f: impl FnMut(&str)) {
    let mut lower = String::new();
    let mut parts: Vec<(usize, usize)> = Vec::new();
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if word.is_empty() || word.len() > 64 {
            continue;
        }
        split_identifier(word, &mut parts);
        if parts.len() > 1 {
            lowercase_into(word, &mut lower);
            emit_term(&lower, &mut f);
        }
        for &(start, end) in &parts {
            lowercase_into(&word[start..end], &mut lower);
            emit_term(&lower, &mut f);
        }
    }
}

fn lowercase_into(text: &str, out: &mut String) {
    out.clear();
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
    } else {
        out.push_str(&text.to_lowercase());
    }
}

fn emit_term(term: &str, f: &mut impl FnMut(&str)) {
    if term.len() < 2 || term.chars().all(|c| c.is_ascii_digit()) || is_stop_word(term) {
        return;
    }
    f(stem(term));
}

/// A light stemmer: plural and verb suffixes, then a final `e`, so that `parses`, `parsed`,
/// `parsing` and `parse` meet.
fn stem(term: &str) -> &str {
    let mut stemmed = term;
    for suffix in ["ing", "es", "ed", "s"] {
        if term.len() > suffix.len() + 3 && term.ends_with(suffix) {
            stemmed = &term[..term.len() - suffix.len()];
            break;
        }
    }
    match stemmed.strip_suffix('e') {
        Some(shorter) if shorter.len() >= 3 => shorter,
        _ => stemmed,
    }
}

/// Byte ranges in `word` of its parts (split at `_` and camelCase boundaries), into `parts`.
fn split_identifier(word: &str, parts: &mut Vec<(usize, usize)>) {
    parts.clear();
    let mut offset = 0;
    for piece in word.split('_') {
        let base = offset;
        offset += piece.len() + 1;
        if piece.is_empty() {
            continue;
        }
        if piece.is_ascii() {
            // The same rule on bytes, without a vector per word (most code is ASCII).
            let bytes = piece.as_bytes();
            let mut start = 0;
            for at in 1..bytes.len() {
                let boundary = bytes[at].is_ascii_uppercase()
                    && (bytes[at - 1].is_ascii_lowercase()
                        || bytes[at - 1].is_ascii_digit()
                        || bytes.get(at + 1).is_some_and(u8::is_ascii_lowercase));
                if boundary && at > start {
                    parts.push((base + start, base + at));
                    start = at;
                }
            }
            parts.push((base + start, base + piece.len()));
            continue;
        }
        let chars: Vec<(usize, char)> = piece.char_indices().collect();
        let mut start = 0;
        for (i, &(at, c)) in chars.iter().enumerate() {
            let boundary = i > 0
                && c.is_uppercase()
                && (chars[i - 1].1.is_lowercase()
                    || chars[i - 1].1.is_ascii_digit()
                    || chars.get(i + 1).is_some_and(|n| n.1.is_lowercase()));
            if boundary && at > start {
                parts.push((base + start, base + at));
                start = at;
            }
        }
        parts.push((base + start, base + piece.len()));
    }
}

/// A BM25 index over a fixed set of documents, for the terms of a few texts named when it is
/// built (the query): the only terms anyone looks up.
///
/// A full index (every term of every document) cost most of a big tree's lexical query: tens
/// of millions of term occurrences hashed into a vocabulary of millions, and hundreds of MB to
/// hold it, to score a query of a few dozen terms. Here each occurrence is tokenized, counted
/// into its document's length, and hashed only when a cheap filter says it may be one of the
/// query's terms; the postings of those terms are the whole index.
pub struct Bm25 {
    /// The lookup texts' terms, numbered in the order they first occur there.
    ids: HashMap<String, u32>,
    /// Per term id: the documents holding it, with its weighted frequency there, in document
    /// order.
    postings: Vec<Vec<(u32, f32)>>,
    doc_len: Vec<f32>,
    avg_len: f32,
}

/// Which (length, first byte) pairs the lookup terms have: most of a document's terms differ
/// from every query term in one of them, and are let go without hashing.
struct TermFilter {
    bits: Box<[u64]>,
}

impl TermFilter {
    const LENGTHS: usize = 64;

    fn slot(term: &str) -> usize {
        let first = term.as_bytes().first().copied().unwrap_or(0) as usize;
        term.len().min(Self::LENGTHS - 1) * 256 + first
    }

    fn of<'t>(terms: impl IntoIterator<Item = &'t String>) -> TermFilter {
        let mut bits = vec![0u64; Self::LENGTHS * 256 / 64].into_boxed_slice();
        for term in terms {
            let slot = Self::slot(term);
            bits[slot / 64] |= 1 << (slot % 64);
        }
        TermFilter { bits }
    }

    fn may_hold(&self, term: &str) -> bool {
        let slot = Self::slot(term);
        self.bits[slot / 64] & (1 << (slot % 64)) != 0
    }
}

/// Term-frequency saturation, the default of [`Bm25::scores`]. Measured on the candidate stage
/// (`ctxzip bench quality --needles 5 --callees 3 --candidates-only --bm25-k1 K`, share of
/// targets among the 24 candidates):
/// the textbook 1.2 kept 66% of the dev set's 44 needles, 3.0 keeps 82% (callees 24% → 26%);
/// on 7 packages outside the dev set, 81% → 94% (callees 22% → 26%). Code repeats the names
/// it works with, so a chunk that says a query term five times is more likely about it than
/// one that says it once. BENCHMARKS.md, `## Quality`.
pub const DEFAULT_K1: f32 = 3.0;

/// Query-term-frequency saturation (Okapi's k3): with 1, a term the query says twice weighs
/// 1.33 times one it says once, and no term more than twice. An issue-style instruction
/// repeats the names of what it is about (`Choice` 15 times, `__init__` once); a question
/// rarely repeats anything. Share of answers among the 24 candidates
/// (`ctxzip bench quality --needles 0 --callees 0 --questions bench/questions --candidates-only
/// --bm25-k3 K`): dev instructions 74% (k3 = 0) → 81% (1), 78% (8), 81% (100); dev
/// questions 84% → 84%, 81%, 81%. BENCHMARKS.md, "Tenth session".
pub const DEFAULT_K3: f32 = 1.0;

/// Length normalization, the textbook value: a document twice the average length needs
/// about twice the matches to score as high. Right for what is printed, where a unit costs
/// its length; the read order of short queries normalizes less
/// ([`super::ReadOrder::Functions`]).
pub const DEFAULT_B: f32 = 0.75;

/// Documents tokenized by one task of [`Bm25::new`]: a big tree's chunks are tokenized in
/// parallel batches of this many.
const BATCH: usize = 2048;

/// One batch of documents: its lookup terms' occurrences and its documents' lengths.
struct Batch {
    /// (document within the batch, term id, weighted frequency), by document then term id.
    hits: Vec<(u32, u32, f32)>,
    doc_len: Vec<f32>,
}

impl Bm25 {
    /// An index of `docs` (each a list of (text, weight): weight 3 for names, 1 for bodies)
    /// that answers for the terms of `lookups`; [`Bm25::idf_terms`] and [`Bm25::scores`]
    /// treat any other term as one no document holds.
    ///
    /// Batches of documents are tokenized in parallel and merged in batch order, so the index
    /// and its scores do not depend on the number of threads.
    pub fn new<'a>(docs: impl IntoIterator<Item = Vec<(&'a str, f32)>>, lookups: &[&str]) -> Bm25 {
        Bm25::in_batches(docs.into_iter().collect(), lookups, BATCH)
    }

    fn in_batches(docs: Vec<Vec<(&str, f32)>>, lookups: &[&str], batch: usize) -> Bm25 {
        let mut ids: HashMap<String, u32> = HashMap::new();
        for text in lookups {
            for_each_term(text, |term| {
                if !ids.contains_key(term) {
                    ids.insert(term.to_owned(), ids.len() as u32);
                }
            });
        }
        let filter = TermFilter::of(ids.keys());
        let batches: Vec<Batch> = docs
            .par_chunks(batch.max(1))
            .map(|docs| Batch::of(docs, &ids, &filter))
            .collect();
        let mut postings: Vec<Vec<(u32, f32)>> = vec![Vec::new(); ids.len()];
        let mut doc_len = Vec::with_capacity(docs.len());
        for batch in batches {
            let base = doc_len.len() as u32;
            for (doc, id, tf) in batch.hits {
                postings[id as usize].push((base + doc, tf));
            }
            doc_len.extend(batch.doc_len);
        }
        let avg_len = doc_len.iter().sum::<f32>() / doc_len.len().max(1) as f32;
        Bm25 {
            ids,
            postings,
            doc_len,
            avg_len: avg_len.max(1.0),
        }
    }

    /// The distinct terms of `text` that occur in the documents, with their inverse
    /// document frequency: what the text can tell the documents apart by.
    pub fn idf_terms(&self, text: &str) -> Vec<(u32, f32)> {
        let n = self.doc_len.len() as f32;
        let mut ids: Vec<u32> = terms(text)
            .iter()
            .filter_map(|t| self.ids.get(t).copied())
            .filter(|&id| !self.postings[id as usize].is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let df = self.postings[id as usize].len() as f32;
                (id, ((n - df + 0.5) / (df + 0.5) + 1.0).ln())
            })
            .collect()
    }

    /// BM25 score of every document for `query` (terms outside the index's lookup texts
    /// count for nothing), in document order, with term-frequency saturation `k1`,
    /// query-term-frequency saturation `k3` and length normalization `b`.
    pub fn scores(&self, query: &str, k1: f32, k3: f32, b: f32) -> Vec<f32> {
        let mut said = vec![0.0f32; self.postings.len()];
        for_each_term(query, |term| {
            if let Some(&id) = self.ids.get(term) {
                said[id as usize] += 1.0;
            }
        });
        let mut scores = vec![0.0f32; self.doc_len.len()];
        for (id, idf) in self.idf_terms(query) {
            let qtf = said[id as usize];
            let weight = idf * qtf * (k3 + 1.0) / (qtf + k3);
            for &(doc, tf) in &self.postings[id as usize] {
                let len = self.doc_len[doc as usize];
                scores[doc as usize] +=
                    weight * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len / self.avg_len));
            }
        }
        scores
    }
}

impl Batch {
    fn of(docs: &[Vec<(&str, f32)>], ids: &HashMap<String, u32>, filter: &TermFilter) -> Batch {
        let mut hits = Vec::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        let mut occurrences: Vec<(u32, f32)> = Vec::new();
        for (d, fields) in docs.iter().enumerate() {
            occurrences.clear();
            let mut len = 0.0;
            for &(text, weight) in fields {
                for_each_term(text, |term| {
                    len += weight;
                    if filter.may_hold(term)
                        && let Some(&id) = ids.get(term)
                    {
                        occurrences.push((id, weight));
                    }
                });
            }
            // A stable sort: each term's weights are summed in the order they occurred.
            occurrences.sort_by_key(|&(id, _)| id);
            for &(id, weight) in &occurrences {
                match hits.last_mut() {
                    Some((doc, last, tf)) if *doc == d as u32 && *last == id => *tf += weight,
                    _ => hits.push((d as u32, id, weight)),
                }
            }
            doc_len.push(len);
        }
        Batch { hits, doc_len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stop_word_is_one_and_no_other_term_is() {
        for word in STOP_WORDS {
            assert!(is_stop_word(word), "{word}");
        }
        for term in ["ab", "functions", "retry", "sel", "selfie", "nul\u{0}", "ü"] {
            assert!(!is_stop_word(term), "{term}");
        }
    }

    #[test]
    fn ascii_and_unicode_words_split_alike() {
        // The byte path for ASCII words and the char path for the others cut at the same
        // places: a lowercase accented letter after a lowercase one moves no boundary.
        for word in [
            "parseHTTPRequest",
            "getX2Value",
            "ABCdef",
            "x",
            "iOSVersion",
            "utf8Decoder",
        ] {
            let mut ascii = Vec::new();
            split_identifier(word, &mut ascii);
            let accented = format!("{word}é");
            let mut unicode = Vec::new();
            split_identifier(&accented, &mut unicode);
            let last = unicode.len() - 1;
            unicode[last].1 -= 'é'.len_utf8();
            assert_eq!(ascii, unicode, "{word}");
        }
    }

    #[test]
    fn identifiers_split_and_stem() {
        assert_eq!(
            terms("parseHTTPRequest read_all_lines"),
            [
                "parsehttprequest",
                "pars",
                "http",
                "request",
                "read_all_lin",
                "read",
                "all",
                "lin"
            ]
        );
    }

    #[test]
    fn a_term_the_query_repeats_weighs_more_up_to_k3_plus_one() {
        let index = Bm25::new(
            vec![
                vec![("choice", 3.0)],
                vec![("init", 3.0)],
                vec![("other words", 1.0)],
                vec![("more words", 1.0)],
            ],
            &["choice init"],
        );
        let query = "choice choice choice init";
        let once = index.scores(query, DEFAULT_K1, 0.0, DEFAULT_B);
        assert!((once[0] - once[1]).abs() < 1e-6, "{once:?}");
        let repeated = index.scores(query, DEFAULT_K1, 1.0, DEFAULT_B);
        // Said three times with k3 = 1: 3 · 2 / (3 + 1) = 1.5 times.
        assert!(
            (repeated[0] / repeated[1] - 1.5).abs() < 1e-4,
            "{repeated:?}"
        );
        assert_eq!(repeated[1], once[1]);
    }

    /// Documents of a few code words each, some of them the query's.
    fn sample_docs(texts: &[String]) -> Vec<Vec<(&str, f32)>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| vec![(t.as_str(), 1.0), (WORDS[i % WORDS.len()], 3.0)])
            .collect()
    }

    const WORDS: [&str; 7] = [
        "parse",
        "config",
        "readAll",
        "http_request",
        "retry",
        "backoff",
        "token",
    ];

    fn sample_texts() -> Vec<String> {
        (0..500)
            .map(|i| {
                (0..1 + i % 9)
                    .map(|j| WORDS[(i * 7 + j * 3) % WORDS.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
                    + &format!(" term{}", i % 37)
            })
            .collect()
    }

    const QUERY: &str = "where is the http request retried with backoff? term5 unheard";

    #[test]
    fn batches_tokenized_apart_give_the_index_of_one_pass() {
        let texts = sample_texts();
        let whole = Bm25::in_batches(sample_docs(&texts), &[QUERY], usize::MAX);
        for batch in [1, 7, 64] {
            let split = Bm25::in_batches(sample_docs(&texts), &[QUERY], batch);
            assert_eq!(split.ids, whole.ids, "batch {batch}");
            assert_eq!(split.postings, whole.postings, "batch {batch}");
            assert_eq!(split.doc_len, whole.doc_len, "batch {batch}");
            assert_eq!(
                split.scores(QUERY, DEFAULT_K1, DEFAULT_K3, DEFAULT_B),
                whole.scores(QUERY, DEFAULT_K1, DEFAULT_K3, DEFAULT_B)
            );
        }
        // Term ids in the order terms first occur in the lookup texts.
        assert_eq!((whole.ids["http"], whole.ids["request"]), (0, 1));
    }

    #[test]
    fn the_query_terms_index_scores_as_an_index_of_every_term() {
        // The textbook index: every term of every document counted, then the query scored.
        let texts = sample_texts();
        let docs = sample_docs(&texts);
        let mut tf: Vec<HashMap<String, f32>> = Vec::new();
        let mut len: Vec<f32> = Vec::new();
        for fields in &docs {
            let mut counts = HashMap::new();
            let mut n = 0.0;
            for &(text, weight) in fields {
                for term in terms(text) {
                    *counts.entry(term).or_default() += weight;
                    n += weight;
                }
            }
            tf.push(counts);
            len.push(n);
        }
        let avg = len.iter().sum::<f32>() / len.len() as f32;
        let mut said: HashMap<String, f32> = HashMap::new();
        for term in terms(QUERY) {
            *said.entry(term).or_default() += 1.0;
        }
        let n = docs.len() as f32;
        let expected: Vec<f32> = (0..docs.len())
            .map(|d| {
                said.iter()
                    .map(|(term, &qtf)| {
                        let df = tf.iter().filter(|c| c.contains_key(term)).count() as f32;
                        if df == 0.0 {
                            return 0.0;
                        }
                        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                        let f = tf[d].get(term).copied().unwrap_or(0.0);
                        idf * qtf * (DEFAULT_K3 + 1.0) / (qtf + DEFAULT_K3) * f * (DEFAULT_K1 + 1.0)
                            / (f + DEFAULT_K1 * (1.0 - DEFAULT_B + DEFAULT_B * len[d] / avg))
                    })
                    .sum()
            })
            .collect();
        let index = Bm25::new(sample_docs(&texts), &[QUERY]);
        let scores = index.scores(QUERY, DEFAULT_K1, DEFAULT_K3, DEFAULT_B);
        assert!(expected.iter().any(|&s| s > 0.0));
        for (d, (got, want)) in scores.iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "doc {d}: {got} vs {want}"
            );
        }
        // "unheard" is in no document; "config" is in many but not in the lookup texts: both
        // tell nothing apart.
        assert!(index.idf_terms("unheard config").is_empty());
        assert_eq!(index.idf_terms("backoff").len(), 1);
    }

    #[test]
    fn ranks_the_matching_document_first() {
        let index = Bm25::new(
            vec![
                vec![("fn add(a: i32) { a + 1 }", 1.0), ("add", 3.0)],
                vec![
                    ("fn parse_config(path) { read(path) }", 1.0),
                    ("parse_config", 3.0),
                ],
                vec![("fn main() { run() }", 1.0), ("main", 3.0)],
            ],
            &["where is the config parsed?"],
        );
        let scores = index.scores(
            "where is the config parsed?",
            DEFAULT_K1,
            DEFAULT_K3,
            DEFAULT_B,
        );
        assert!(scores[1] > scores[0] && scores[1] > scores[2], "{scores:?}");
    }
}
