//! The query the model reads: a long instruction cut to its most informative sentences.
//!
//! The model decodes the query after every candidate and once more before the functions the
//! fine stage prunes, so its cost grows with the query's length; an agent's task description
//! of a thousand tokens would cost fifty times a question's. The lexical stages read the whole
//! query; the model reads at most `max_tokens` of it: the sentences (and lines) that cover the
//! most of the query's distinguishing terms per token, greedily (each term counts once, by
//! its inverse document frequency in the workspace), put back in their original order.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use super::bm25::{self, Bm25};
use crate::engine::TokenNll;

/// Pieces longer than this many bytes are cut at a space, so one run-on line cannot take the
/// whole window.
const MAX_PIECE_BYTES: usize = 320;

/// `query` itself when it holds at most `max_tokens` tokens (`count` counts a batch of texts),
/// else its most informative pieces within `max_tokens`.
pub fn query_window<'q>(
    query: &'q str,
    max_tokens: usize,
    index: &Bm25,
    count: impl Fn(&[&str]) -> Vec<usize>,
) -> Cow<'q, str> {
    if max_tokens == 0 || count(&[query])[0] <= max_tokens {
        return Cow::Borrowed(query);
    }
    let pieces = pieces(query);
    let texts: Vec<&str> = pieces.iter().map(|p| p.text).collect();
    let tokens = count(&texts);
    let terms: Vec<Vec<(u32, f32)>> = texts.iter().map(|t| index.idf_terms(t)).collect();

    // Lazy greedy: a piece's gain per token only falls as terms get covered, so a stale
    // heap entry that still tops the heap after an update is the true best.
    let mut heap: BinaryHeap<Candidate> = (0..pieces.len())
        .filter(|&i| tokens[i] > 0 && tokens[i] <= max_tokens)
        .map(|i| Candidate {
            density: terms[i].iter().map(|t| t.1).sum::<f32>() / tokens[i] as f32,
            piece: i,
        })
        .collect();
    let mut covered: HashSet<u32> = HashSet::new();
    let mut chosen: Vec<usize> = Vec::new();
    let mut used = 0;
    while let Some(top) = heap.pop() {
        let i = top.piece;
        if used + tokens[i] > max_tokens {
            continue;
        }
        let gain: f32 = terms[i]
            .iter()
            .filter(|(id, _)| !covered.contains(id))
            .map(|t| t.1)
            .sum();
        let density = gain / tokens[i] as f32;
        if density <= 0.0 {
            continue;
        }
        if heap.peek().is_some_and(|next| next.density > density) {
            heap.push(Candidate { density, piece: i });
            continue;
        }
        covered.extend(terms[i].iter().map(|t| t.0));
        chosen.push(i);
        used += tokens[i];
    }
    if chosen.is_empty() {
        // Nothing the workspace knows: the query's head.
        for (i, &n) in tokens.iter().enumerate() {
            if n > 0 && used + n <= max_tokens {
                chosen.push(i);
                used += n;
            }
        }
    }
    chosen.sort_unstable();
    let mut window = String::new();
    let mut last_line = None;
    for i in chosen {
        if !window.is_empty() {
            window.push(if last_line == Some(pieces[i].line) {
                ' '
            } else {
                '\n'
            });
        }
        window.push_str(pieces[i].text);
        last_line = Some(pieces[i].line);
    }
    Cow::Owned(window)
}

struct Piece<'q> {
    text: &'q str,
    line: usize,
}

/// Sentences of each line (cut after `.`, `?` or `!` and a space), long ones cut at spaces.
fn pieces(query: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    for (line_no, line) in query.lines().enumerate() {
        let mut rest = line.trim();
        while !rest.is_empty() {
            let sentence_end = rest
                .match_indices(['.', '?', '!'])
                .map(|(i, _)| i + 1)
                .find(|&end| rest[end..].starts_with(' '))
                .unwrap_or(rest.len());
            let mut end = sentence_end.min(rest.len());
            if end > MAX_PIECE_BYTES {
                let cut = rest.floor_char_boundary(MAX_PIECE_BYTES);
                // At a space, else between words: the index knows the query's words whole.
                end = rest[..cut]
                    .rfind(' ')
                    .or_else(|| rest[..cut].rfind(|c: char| !(c.is_alphanumeric() || c == '_')))
                    .filter(|&s| s > 0)
                    .unwrap_or(cut);
            }
            let piece = rest[..end].trim();
            if !piece.is_empty() {
                out.push(Piece {
                    text: piece,
                    line: line_no,
                });
            }
            rest = rest[end..].trim_start();
        }
    }
    out
}

struct Candidate {
    density: f32,
    piece: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    /// Denser first; among equals, the earlier piece.
    fn cmp(&self, other: &Self) -> Ordering {
        self.density
            .total_cmp(&other.density)
            .then(other.piece.cmp(&self.piece))
    }
}

/// How the model's evidence on each query token counts in a chunk's score. Uniform is the
/// default; counting content words only was measured and not kept (fused ranking: +1 dev
/// question at 2000 tokens, −6 points at 1000, −4 on held-out questions; BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryWeights {
    /// Every token alike: LongCodeZip's mean over the query.
    Uniform,
    /// Only tokens of words that say something (no stop words, punctuation or spaces).
    Content,
    /// Tokens of content words weighted by their word's inverse document frequency in the
    /// workspace; a word no chunk contains gets the mean weight of those that do.
    Idf,
}

/// The weight of each of the query's tokens (`tokens` carry byte ranges into `query`) under
/// `how`; all ones when no token would count.
pub fn token_weights(
    query: &str,
    tokens: &[TokenNll],
    index: &Bm25,
    how: QueryWeights,
) -> Vec<f32> {
    if how == QueryWeights::Uniform {
        return vec![1.0; tokens.len()];
    }
    // Each word of the query (an identifier run) with its weight.
    let mut words: Vec<(usize, usize, Option<f32>)> = Vec::new();
    let mut start = None;
    for (i, c) in query.char_indices().chain([(query.len(), ' ')]) {
        let word_char = c.is_alphanumeric() || c == '_';
        match (start, word_char) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                let word = &query[s..i];
                let weight = if bm25::terms(word).is_empty() {
                    Some(0.0)
                } else if how == QueryWeights::Content {
                    Some(1.0)
                } else {
                    index.idf_terms(word).iter().map(|t| t.1).reduce(f32::max)
                };
                words.push((s, i, weight));
                start = None;
            }
            _ => {}
        }
    }
    let known: Vec<f32> = words
        .iter()
        .filter_map(|w| w.2)
        .filter(|&w| w > 0.0)
        .collect();
    let unknown = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f32>() / known.len() as f32
    };
    let weights: Vec<f32> = tokens
        .iter()
        .map(|t| {
            words
                .iter()
                .find(|w| w.0 < t.end.max(t.start + 1) && t.start < w.1)
                .map_or(0.0, |w| w.2.unwrap_or(unknown))
        })
        .collect();
    if weights.iter().all(|&w| w <= 0.0) {
        return vec![1.0; tokens.len()];
    }
    weights
}

/// `Σ w·(NLL(t) − NLL(t | c)) / Σ w` over the query's tokens: the weighted mean of what the
/// chunk tells the model about each token.
pub fn weighted_gain(tokens: &[TokenNll], given_chunk: &[f32], weights: &[f32]) -> f32 {
    let (mut gain, mut total) = (0.0f32, 0.0f32);
    for ((t, &c), &w) in tokens.iter().zip(given_chunk).zip(weights) {
        gain += w * (t.nll - c);
        total += w;
    }
    if total > 0.0 { gain / total } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::{QueryWeights, pieces, query_window, token_weights, weighted_gain};
    use crate::compress::bm25::Bm25;
    use crate::engine::TokenNll;

    /// Tokens of `query` split at spaces (the space going with the next word, as BPE does),
    /// each with NLL 1.
    fn tokens(query: &str) -> Vec<TokenNll> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, _) in query.match_indices(' ').chain([(query.len(), "")]) {
            if i > start {
                out.push(TokenNll {
                    start,
                    end: i,
                    nll: 1.0,
                });
            }
            start = i;
        }
        out
    }

    #[test]
    fn content_weights_leave_out_stop_words_and_idf_favours_rare_words() {
        let query = "how is the config parsed";
        let index = Bm25::new(
            vec![
                vec![("fn parse_config(path) { read(path) }", 1.0)],
                vec![("fn parse_args() { read(args) }", 1.0)],
            ],
            &[query],
        );
        let t = tokens(query);
        assert_eq!(t.len(), 5);
        let content = token_weights(query, &t, &index, QueryWeights::Content);
        assert_eq!(content, [0.0, 0.0, 0.0, 1.0, 1.0]);
        let idf = token_weights(query, &t, &index, QueryWeights::Idf);
        // "config" is in one chunk, "parsed" (stem "pars") in both: rarer weighs more.
        assert!(idf[3] > idf[4] && idf[4] > 0.0 && idf[0] == 0.0, "{idf:?}");
        assert_eq!(
            token_weights(query, &t, &index, QueryWeights::Uniform),
            [1.0; 5]
        );
        // Only stop words: every token counts rather than none.
        let q = "how is it";
        assert_eq!(
            token_weights(q, &tokens(q), &index, QueryWeights::Content),
            [1.0; 3]
        );
    }

    #[test]
    fn the_weighted_gain_is_the_mean_gain_of_the_weighted_tokens() {
        let t = tokens("a b c");
        let given_chunk = [0.5, 1.0, 0.0];
        assert!((weighted_gain(&t, &given_chunk, &[1.0; 3]) - 0.5).abs() < 1e-6);
        assert!((weighted_gain(&t, &given_chunk, &[0.0, 1.0, 1.0]) - 0.5).abs() < 1e-6);
        assert!((weighted_gain(&t, &given_chunk, &[1.0, 0.0, 0.0]) - 0.5).abs() < 1e-6);
        assert!((weighted_gain(&t, &given_chunk, &[0.0, 0.0, 1.0]) - 1.0).abs() < 1e-6);
    }

    fn words(texts: &[&str]) -> Vec<usize> {
        texts.iter().map(|t| t.split_whitespace().count()).collect()
    }

    #[test]
    fn a_short_query_is_read_whole() {
        let query = "Where is the config parsed?";
        let index = Bm25::new(vec![vec![("fn parse_config() {}", 1.0)]], &[query]);
        assert_eq!(query_window(query, 16, &index, words), query);
    }

    #[test]
    fn a_long_query_keeps_the_sentences_that_name_the_workspace() {
        let query = "Hello team, thanks for the great work on this project. \
                     I have been using it for a while now and it is lovely. \
                     The retry backoff never stops after the request fails.\n\
                     Also parse_config reads the wrong file.\n\
                     Anyway, have a nice weekend and all the best to everyone.";
        let index = Bm25::new(
            vec![
                vec![("fn parse_config(path) { read_file(path) }", 1.0)],
                vec![("fn retry_request(n) { backoff(n) }", 1.0)],
                vec![("fn main() { run() }", 1.0)],
            ],
            &[query],
        );
        let window = query_window(query, 20, &index, words);
        assert_eq!(
            window,
            "The retry backoff never stops after the request fails.\nAlso parse_config reads the wrong file."
        );
    }

    #[test]
    fn run_on_lines_are_cut_into_pieces() {
        let line = "word ".repeat(200);
        let cut = pieces(&line);
        assert!(cut.len() > 1);
        assert!(cut.iter().all(|p| p.text.len() <= super::MAX_PIECE_BYTES));
    }

    #[test]
    fn a_line_without_spaces_is_cut_between_words() {
        let line = "parse_config,".repeat(60);
        let cut = pieces(&line);
        assert!(cut.len() > 1);
        for piece in &cut {
            assert!(piece.text.len() <= super::MAX_PIECE_BYTES);
            assert!(
                piece
                    .text
                    .split(',')
                    .all(|w| w.is_empty() || w == "parse_config"),
                "{}",
                piece.text
            );
        }
    }
}
