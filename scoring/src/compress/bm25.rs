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

/// A BM25 index over a fixed set of documents.
pub struct Bm25 {
    /// Each document's (term id, weighted frequency), sorted by id: a map per document cost
    /// several times the memory on a tree of 450k chunks.
    docs: Vec<Box<[(u32, f32)]>>,
    doc_len: Vec<f32>,
    avg_len: f32,
    vocab: HashMap<String, u32>,
    doc_freq: Vec<u32>,
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
const B: f32 = 0.75;

/// Documents tokenized by one task of [`Bm25::new`]: a big tree's chunks are tokenized in
/// parallel batches of this many.
const BATCH: usize = 2048;

/// Batches tokenized before their terms are merged into the index's vocabulary.
const GROUP: usize = 32;

/// One batch of documents, its terms numbered in the order they first occur in it.
struct Batch {
    /// Local term id → term.
    terms: Vec<String>,
    /// Each document's (local term id, weighted frequency), summed in occurrence order.
    docs: Vec<Box<[(u32, f32)]>>,
    doc_len: Vec<f32>,
}

impl Batch {
    fn of(docs: &[Vec<(&str, f32)>]) -> Batch {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut terms: Vec<String> = Vec::new();
        let mut out_docs = Vec::with_capacity(docs.len());
        let mut doc_len = Vec::with_capacity(docs.len());
        let mut occurrences: Vec<(u32, f32)> = Vec::new();
        for fields in docs {
            occurrences.clear();
            let mut len = 0.0;
            for &(text, weight) in fields {
                for_each_term(text, |term| {
                    let id = match vocab.get(term) {
                        Some(&id) => id,
                        None => {
                            let id = terms.len() as u32;
                            vocab.insert(term.to_owned(), id);
                            terms.push(term.to_owned());
                            id
                        }
                    };
                    occurrences.push((id, weight));
                    len += weight;
                });
            }
            // A stable sort: each term's weights are summed in the order they occurred.
            occurrences.sort_by_key(|&(id, _)| id);
            let mut counts: Vec<(u32, f32)> = Vec::new();
            for &(id, weight) in &occurrences {
                match counts.last_mut() {
                    Some(last) if last.0 == id => last.1 += weight,
                    _ => counts.push((id, weight)),
                }
            }
            out_docs.push(counts.into_boxed_slice());
            doc_len.push(len);
        }
        Batch {
            terms,
            docs: out_docs,
            doc_len,
        }
    }
}

impl Bm25 {
    /// Each document is a list of (text, weight): weight 3 for names, 1 for bodies.
    ///
    /// Batches of documents are tokenized in parallel, each numbering its own terms; merged
    /// in batch order, every term gets the id one pass in document order would give it, so
    /// the index and its scores do not depend on the number of threads.
    pub fn new<'a>(docs: impl IntoIterator<Item = Vec<(&'a str, f32)>>) -> Bm25 {
        Bm25::in_batches(docs.into_iter().collect(), BATCH)
    }

    fn in_batches(docs: Vec<Vec<(&str, f32)>>, batch: usize) -> Bm25 {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut out_docs: Vec<Box<[(u32, f32)]>> = Vec::with_capacity(docs.len());
        let mut doc_len = Vec::with_capacity(docs.len());
        // Groups of batches: every batch's own vocabulary alive at once would cost more
        // memory than it saves time.
        for docs in docs.chunks(batch.saturating_mul(GROUP)) {
            let batches: Vec<Batch> = docs.par_chunks(batch).map(Batch::of).collect();
            let mut ids: Vec<Vec<u32>> = Vec::with_capacity(batches.len());
            let mut group_docs = Vec::with_capacity(batches.len());
            for batch in batches {
                ids.push(
                    batch
                        .terms
                        .into_iter()
                        .map(|term| {
                            let next = vocab.len() as u32;
                            *vocab.entry(term).or_insert(next)
                        })
                        .collect(),
                );
                group_docs.push(batch.docs);
                doc_len.extend(batch.doc_len);
            }
            group_docs.par_iter_mut().zip(&ids).for_each(|(docs, ids)| {
                for counts in docs {
                    for (id, _) in counts.iter_mut() {
                        *id = ids[*id as usize];
                    }
                    counts.sort_unstable_by_key(|&(id, _)| id);
                }
            });
            out_docs.extend(group_docs.into_iter().flatten());
        }
        let mut doc_freq = vec![0u32; vocab.len()];
        for doc in &out_docs {
            for &(id, _) in doc.iter() {
                doc_freq[id as usize] += 1;
            }
        }
        let avg_len = doc_len.iter().sum::<f32>() / doc_len.len().max(1) as f32;
        Bm25 {
            docs: out_docs,
            doc_len,
            avg_len: avg_len.max(1.0),
            vocab,
            doc_freq,
        }
    }

    /// The distinct terms of `text` that occur in the documents, with their inverse
    /// document frequency: what the text can tell the documents apart by.
    pub fn idf_terms(&self, text: &str) -> Vec<(u32, f32)> {
        let n = self.docs.len() as f32;
        let mut ids: Vec<u32> = terms(text)
            .iter()
            .filter_map(|t| self.vocab.get(t).copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let df = self.doc_freq[id as usize] as f32;
                (id, ((n - df + 0.5) / (df + 0.5) + 1.0).ln())
            })
            .collect()
    }

    /// BM25 score of every document for `query`, in document order, with term-frequency
    /// saturation `k1` and query-term-frequency saturation `k3`.
    pub fn scores(&self, query: &str, k1: f32, k3: f32) -> Vec<f32> {
        let mut said: HashMap<u32, f32> = HashMap::new();
        for_each_term(query, |term| {
            if let Some(&id) = self.vocab.get(term) {
                *said.entry(id).or_default() += 1.0;
            }
        });
        let idf: Vec<(u32, f32)> = self
            .idf_terms(query)
            .into_iter()
            .map(|(id, idf)| {
                let qtf = said.get(&id).copied().unwrap_or(1.0);
                (id, idf * qtf * (k3 + 1.0) / (qtf + k3))
            })
            .collect();
        self.docs
            .iter()
            .zip(&self.doc_len)
            .map(|(doc, &len)| {
                idf.iter()
                    .map(|&(id, idf)| {
                        let tf = doc
                            .binary_search_by_key(&id, |&(term, _)| term)
                            .map_or(0.0, |at| doc[at].1);
                        idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - B + B * len / self.avg_len))
                    })
                    .sum()
            })
            .collect()
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
        let index = Bm25::new(vec![
            vec![("choice", 3.0)],
            vec![("init", 3.0)],
            vec![("other words", 1.0)],
            vec![("more words", 1.0)],
        ]);
        let query = "choice choice choice init";
        let once = index.scores(query, DEFAULT_K1, 0.0);
        assert!((once[0] - once[1]).abs() < 1e-6, "{once:?}");
        let repeated = index.scores(query, DEFAULT_K1, 1.0);
        // Said three times with k3 = 1: 3 · 2 / (3 + 1) = 1.5 times.
        assert!(
            (repeated[0] / repeated[1] - 1.5).abs() < 1e-4,
            "{repeated:?}"
        );
        assert_eq!(repeated[1], once[1]);
    }

    #[test]
    fn batches_tokenized_apart_give_the_index_of_one_pass() {
        let words = [
            "parse",
            "config",
            "readAll",
            "http_request",
            "retry",
            "backoff",
            "token",
        ];
        let texts: Vec<String> = (0..500)
            .map(|i| {
                (0..1 + i % 9)
                    .map(|j| words[(i * 7 + j * 3) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
                    + &format!(" term{}", i % 37)
            })
            .collect();
        let docs = || {
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| vec![(t.as_str(), 1.0), (words[i % words.len()], 3.0)])
                .collect::<Vec<_>>()
        };
        let whole = Bm25::in_batches(docs(), usize::MAX);
        for batch in [1, 7, 64] {
            let split = Bm25::in_batches(docs(), batch);
            assert_eq!(split.vocab, whole.vocab, "batch {batch}");
            assert_eq!(split.docs, whole.docs, "batch {batch}");
            assert_eq!(split.doc_len, whole.doc_len, "batch {batch}");
            assert_eq!(split.doc_freq, whole.doc_freq, "batch {batch}");
            let query = "where is the http request retried with backoff? term5";
            assert_eq!(
                split.scores(query, DEFAULT_K1, DEFAULT_K3),
                whole.scores(query, DEFAULT_K1, DEFAULT_K3)
            );
        }
        // Term ids in the order terms first occur across the documents.
        assert_eq!((whole.vocab["pars"], whole.vocab["term0"]), (0, 1));
    }

    #[test]
    fn ranks_the_matching_document_first() {
        let index = Bm25::new(vec![
            vec![("fn add(a: i32) { a + 1 }", 1.0), ("add", 3.0)],
            vec![
                ("fn parse_config(path) { read(path) }", 1.0),
                ("parse_config", 3.0),
            ],
            vec![("fn main() { run() }", 1.0), ("main", 3.0)],
        ]);
        let scores = index.scores("where is the config parsed?", DEFAULT_K1, DEFAULT_K3);
        assert!(scores[1] > scores[0] && scores[1] > scores[2], "{scores:?}");
    }
}
