//! The fine stage: a kept unit (a function, and by default a type, doc or top-level block)
//! is cut into blocks at per-line perplexity spikes (a long attached doc comment is one block
//! after its summary line) and an exact 0/1 knapsack keeps the blocks worth most to the query
//! within the unit's adaptive budget, scaled down where the coarse stage overdrew. Pure
//! arithmetic: the model's numbers come in, row ranges go out.

/// Line statistics of one function, from its token NLLs.
#[derive(Debug, Clone, Default)]
pub struct LineStats {
    /// Mean unconditional NLL of the line's tokens (nats); `None` for lines with no token.
    pub mean_nll: Option<f32>,
    /// Sum over the line's tokens of NLL(tok | prefix) − NLL(tok | query, prefix): how much
    /// the query made the line more predictable.
    pub gain: f32,
    pub n_tokens: usize,
    pub blank: bool,
}

/// Splits lines `0..n` into blocks: a block starts at a line whose NLL spikes above
/// `mean + k·std` of the function's lines (and is a local maximum). `first_body` is the
/// first line after the signature; lines before it form block 0.
pub fn segment(lines: &[LineStats], first_body: usize, k: f32) -> Vec<(usize, usize)> {
    let n = lines.len();
    let values: Vec<f32> = lines.iter().filter_map(|l| l.mean_nll).collect();
    let mean = values.iter().sum::<f32>() / values.len().max(1) as f32;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len().max(1) as f32;
    let threshold = mean + k * var.sqrt();
    let mut starts = vec![0];
    if first_body > 0 && first_body < n {
        starts.push(first_body);
    }
    for i in first_body.max(1)..n {
        let Some(v) = lines[i].mean_nll else { continue };
        if lines[i].blank {
            continue;
        }
        let prev = lines[..i]
            .iter()
            .rev()
            .find_map(|l| l.mean_nll)
            .unwrap_or(f32::MIN);
        let next = lines[i + 1..]
            .iter()
            .find_map(|l| l.mean_nll)
            .unwrap_or(f32::MIN);
        if v > threshold && v >= prev && v >= next && !starts.contains(&i) {
            starts.push(i);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let mut blocks = Vec::with_capacity(starts.len());
    for (j, &start) in starts.iter().enumerate() {
        let end = starts.get(j + 1).copied().unwrap_or(n);
        if start < end {
            blocks.push((start, end - 1));
        }
    }
    blocks
}

/// Splits the block of `blocks` (sorted, contiguous inclusive row ranges) that holds `row`
/// so that a block starts there; nothing changes when one already does or none holds it.
pub fn split_at_row(blocks: &mut Vec<(usize, usize)>, row: usize) {
    if let Some(k) = blocks.iter().position(|&(a, b)| a < row && row <= b) {
        let (a, b) = blocks[k];
        blocks[k] = (a, row - 1);
        blocks.insert(k + 1, (row, b));
    }
}

/// Rows at the top of a unit's header that are comments (its attached doc comment): a
/// comment marker first (`//`, `/*`, `*`, `#` but not an attribute's `#[`, `--`).
pub fn leading_comment_rows<'a>(header_rows: impl IntoIterator<Item = &'a str>) -> usize {
    header_rows
        .into_iter()
        .take_while(|row| {
            let row = row.trim_start();
            ["//", "/*", "*", "--"].iter().any(|m| row.starts_with(m))
                || (row.starts_with('#') && !row.starts_with("#[") && !row.starts_with("#!["))
        })
        .count()
}

/// The blocks of [`segment`] with a long attached doc comment split off the signature block:
/// its first row (the summary) and the declaration stay, the rest of the comment becomes a
/// block the knapsack may drop like any body block. Returns the blocks and how many of the
/// first ones are always kept: 1 (the signature block), or 2 when the comment was split
/// (summary, declaration), with the split comment right after them.
pub fn split_doc_comment(
    blocks: Vec<(usize, usize)>,
    first_body: usize,
    doc_rows: usize,
) -> (Vec<(usize, usize)>, usize) {
    let signature = usize::from(first_body > 0);
    // A summary row, at least two more rows of comment, and a declaration after them.
    if signature == 0 || doc_rows < 3 || doc_rows >= first_body {
        return (blocks, signature);
    }
    let mut split = vec![(0, 0), (doc_rows, first_body - 1), (1, doc_rows - 1)];
    split.extend(blocks.into_iter().skip(1));
    (split, 2)
}

/// The tokens each function may keep: `rates[i]` of its `tokens[i]`, scaled down just enough
/// that all of them together keep at most `target` tokens (never scaled up: what the fine
/// stage frees beyond the target is refilled with whole units). A function's share never
/// exceeds its size; below the target a scale of 0 keeps nothing but signatures.
pub fn capacities(tokens: &[usize], rates: &[f32], target: usize) -> Vec<usize> {
    let wanted: f32 = tokens.iter().zip(rates).map(|(&t, &r)| t as f32 * r).sum();
    let scale = if wanted > target as f32 {
        target as f32 / wanted
    } else {
        1.0
    };
    tokens
        .iter()
        .zip(rates)
        .map(|(&t, &r)| ((t as f32 * r * scale) as usize).min(t))
        .collect()
}

/// The adaptive share of a function's tokens to keep, from its normalised coarse score.
pub fn function_rate(base_rate: f32, beta: f32, normalized_score: f32) -> f32 {
    (base_rate * (1.0 + beta * (2.0 * normalized_score - 1.0))).clamp(0.0, 1.0)
}

/// Min-max normalisation to `[0, 1]`; all-equal inputs map to 1.
pub fn min_max(values: &[f32]) -> Vec<f32> {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    values
        .iter()
        .map(|&v| {
            if max > min {
                (v - min) / (max - min)
            } else {
                1.0
            }
        })
        .collect()
}

/// Exact 0/1 knapsack: the subset of items (weight, value) of greatest total value whose
/// weight is at most `capacity`. Returns the chosen indices in order.
pub fn knapsack(items: &[(usize, f32)], capacity: usize) -> Vec<usize> {
    let n = items.len();
    if n == 0 || capacity == 0 {
        return items
            .iter()
            .enumerate()
            .filter(|(_, (w, _))| *w == 0)
            .map(|(i, _)| i)
            .collect();
    }
    // best[i][c]: best value using the first i items with capacity c.
    let width = capacity + 1;
    let mut best = vec![0f32; (n + 1) * width];
    for (i, &(weight, value)) in items.iter().enumerate() {
        for c in 0..width {
            let skip = best[i * width + c];
            let take = if weight <= c {
                best[i * width + c - weight] + value
            } else {
                f32::NEG_INFINITY
            };
            best[(i + 1) * width + c] = skip.max(take);
        }
    }
    let mut chosen = Vec::new();
    let mut c = capacity;
    for i in (0..n).rev() {
        if best[(i + 1) * width + c] != best[i * width + c] {
            chosen.push(i);
            c -= items[i].0;
        }
    }
    chosen.reverse();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(nll: f32) -> LineStats {
        LineStats {
            mean_nll: Some(nll),
            gain: 0.0,
            n_tokens: 3,
            blank: false,
        }
    }

    #[test]
    fn a_block_is_split_where_a_row_falls_inside_it_and_only_there() {
        let mut blocks = vec![(0, 2), (3, 9), (10, 12)];
        split_at_row(&mut blocks, 6);
        assert_eq!(blocks, [(0, 2), (3, 5), (6, 9), (10, 12)]);
        // Already a block's start, or past every block: nothing changes.
        split_at_row(&mut blocks, 10);
        split_at_row(&mut blocks, 13);
        assert_eq!(blocks, [(0, 2), (3, 5), (6, 9), (10, 12)]);
    }

    #[test]
    fn doc_comment_rows_are_comments_before_the_declaration_not_attributes() {
        let rust = [
            "/// Sums.",
            "///",
            "/// More.",
            "#[inline]",
            "pub fn sum() {",
        ];
        assert_eq!(leading_comment_rows(rust), 3);
        let js = ["/**", " * Sums.", " */", "export function sum() {"];
        assert_eq!(leading_comment_rows(js), 3);
        assert_eq!(leading_comment_rows(["# note", "@cache", "def f():"]), 1);
        assert_eq!(
            leading_comment_rows(["#[derive(Debug)]", "/// late", "struct S;"]),
            0
        );
    }

    #[test]
    fn a_long_doc_comment_becomes_a_block_between_summary_and_declaration() {
        // Rows 0-4 comment, 5-6 declaration, body blocks after.
        let blocks = vec![(0, 6), (7, 9), (10, 12)];
        let (split, always) = split_doc_comment(blocks.clone(), 7, 5);
        assert_eq!(always, 2);
        assert_eq!(split, [(0, 0), (5, 6), (1, 4), (7, 9), (10, 12)]);
        // Every row is still in exactly one block.
        let mut rows: Vec<usize> = split.iter().flat_map(|&(a, b)| a..=b).collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..=12).collect::<Vec<_>>());
        // A short comment, or no declaration after it, stays in the signature block.
        assert_eq!(split_doc_comment(blocks.clone(), 7, 2), (blocks.clone(), 1));
        assert_eq!(split_doc_comment(blocks.clone(), 7, 7), (blocks, 1));
        assert_eq!(split_doc_comment(vec![(0, 3)], 0, 0), (vec![(0, 3)], 0));
    }

    #[test]
    fn capacities_scale_down_to_the_target_and_never_up() {
        let tokens = [1000, 400, 100];
        let rates = [0.6, 0.5, 0.5];
        // Shares as they are: 600 + 200 + 50 = 850 fit a target of 900.
        assert_eq!(capacities(&tokens, &rates, 900), [600, 200, 50]);
        // A target of 425 halves every share.
        let halved = capacities(&tokens, &rates, 425);
        assert_eq!(halved, [300, 100, 25]);
        assert!(halved.iter().sum::<usize>() <= 425);
        // Nothing to keep: signatures only.
        assert_eq!(capacities(&tokens, &rates, 0), [0, 0, 0]);
    }

    #[test]
    fn knapsack_is_exact() {
        // Greedy by density would take item 0 (density 6) and then only fit item 2.
        let items = [(1, 6.0), (2, 10.0), (3, 12.0)];
        assert_eq!(knapsack(&items, 5), vec![1, 2]);
        assert_eq!(knapsack(&items, 0), Vec::<usize>::new());
        assert_eq!(knapsack(&[(0, 1.0), (4, 1.0)], 0), vec![0]);
    }

    #[test]
    fn segments_at_spikes_after_the_signature() {
        let lines: Vec<_> = [1.0, 1.0, 1.1, 5.0, 1.0, 1.2, 6.0, 1.0].map(line).into();
        assert_eq!(
            segment(&lines, 1, 0.5),
            vec![(0, 0), (1, 2), (3, 5), (6, 7)]
        );
    }

    #[test]
    fn rate_is_clamped_and_centred() {
        assert_eq!(function_rate(0.5, 0.5, 0.5), 0.5);
        assert_eq!(function_rate(0.5, 0.5, 1.0), 0.75);
        assert_eq!(function_rate(0.9, 1.0, 1.0), 1.0);
        assert_eq!(min_max(&[2.0, 4.0, 3.0]), vec![0.0, 1.0, 0.5]);
    }
}
