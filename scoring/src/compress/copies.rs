//! Copies of one definition in several files, shown once: a build's bundles of the same
//! source (`index.mjs`, `index.umd.js`, `types.js`), vendored or compatibility copies, and
//! type stubs beside their implementation (`.pyi`, `.d.ts`).
//!
//! Printed side by side, three bundles' `ZodObject.merge` spend three times the budget on one
//! answer, and fill three of the model's candidate slots. A unit is a copy when an earlier
//! unit of the same qualified name in another file is its twin: a stub of it (or it a stub of
//! the stub's implementation), or text sharing at least [`MIN_SHARED_TERMS`] of its terms
//! (Jaccard over the lexical terms of [`bm25::terms`]). Same-named definitions in one file
//! (overloads, impls for different types) are never copies of each other. Which unit stays:
//! a pinned one, then one of a kind of file the query asks for, then an implementation over a
//! stub, then the best BM25 score.

use std::cmp::Reverse;
use std::collections::HashMap;

use ctxzip_chunker::FileRole;
use rayon::prelude::*;

use super::{Document, Unit, bm25};

/// Share of terms two same-named definitions in different files must have in common to be
/// one definition copied. A bundler's rewrite of the same source shares most of its words
/// (renamed helpers and module wrappers aside); two different functions that happen to share
/// a name share far fewer.
pub const MIN_SHARED_TERMS: f32 = 0.7;

/// Marks `units[i].copy` for every unit that is a copy of a unit that stays (`file_roles`:
/// each document's [`FileRole`]).
pub(super) fn mark_copies(
    units: &mut [Unit],
    docs: &[Document],
    file_roles: &[FileRole],
    texts: &[&str],
) {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, unit) in units.iter().enumerate() {
        if unit.skeleton {
            continue;
        }
        let chunk = &docs[unit.doc].chunks[unit.chunk];
        if let Some(name) = chunk.qualified_name.as_deref().filter(|n| !n.is_empty()) {
            by_name.entry(name).or_default().push(i);
        }
    }
    let groups: Vec<Vec<usize>> = by_name
        .into_values()
        .filter(|group| {
            let mut in_docs = group.iter().map(|&i| units[i].doc);
            let first = in_docs.next();
            in_docs.any(|d| Some(d) != first)
        })
        .collect();
    // Groups are independent: a big tree has thousands (`new`, `fmt`), each compared
    // pairwise, so they are taken in parallel.
    let units_ref: &[Unit] = units;
    let copies: Vec<usize> = groups
        .into_par_iter()
        .flat_map_iter(|group| copies_in(group, units_ref, file_roles, texts))
        .collect();
    for i in copies {
        units[i].copy = true;
    }
}

/// The units of one group of same-named definitions (in at least two files) that are copies
/// of another that stays.
fn copies_in(
    mut group: Vec<usize>,
    units: &[Unit],
    file_roles: &[FileRole],
    texts: &[&str],
) -> Vec<usize> {
    let is_stub = |u: &Unit| file_roles[u.doc] == FileRole::Stub;
    group.sort_by_key(|&i| {
        let u = &units[i];
        (
            Reverse(u.pinned),
            Reverse(u.wanted),
            is_stub(u),
            Reverse(OrderedScore(u.bm25)),
            i,
        )
    });
    // Terms as ids, each text's a sorted set.
    let mut term_ids: HashMap<String, u32> = HashMap::new();
    let terms: Vec<Vec<u32>> = group
        .iter()
        .map(|&i| term_set(texts[i], &mut term_ids))
        .collect();
    let mut kept: Vec<usize> = Vec::new(); // positions in `group`
    let mut copies = Vec::new();
    for (pos, &i) in group.iter().enumerate() {
        // Pinned units sort first, so a pinned one stays; its pinned copies (three
        // bundles of a function the query names) are copies like any other.
        let twin = kept.iter().any(|&k| {
            let other = &units[group[k]];
            other.doc != units[i].doc
                && (is_stub(&units[i]) != is_stub(other)
                    || jaccard(&terms[pos], &terms[k]) >= MIN_SHARED_TERMS)
        });
        if twin {
            copies.push(i);
        } else {
            kept.push(pos);
        }
    }
    copies
}

/// Whether two same-named definitions' texts are one definition copied (a bundler's rewrite
/// of the same source): the test [`mark_copies`] applies to texts, for measuring answers
/// (`bench quality` counts an answer's copy as the answer, since only one is shown).
pub fn texts_are_copies(a: &str, b: &str) -> bool {
    let mut ids = HashMap::new();
    let (a, b) = (term_set(a, &mut ids), term_set(b, &mut ids));
    jaccard(&a, &b) >= MIN_SHARED_TERMS
}

/// The distinct terms of `text` as sorted ids (`ids` assigns them).
fn term_set(text: &str, ids: &mut HashMap<String, u32>) -> Vec<u32> {
    let mut set = Vec::new();
    bm25::for_each_term(text, |term| {
        let id = match ids.get(term) {
            Some(&id) => id,
            None => {
                let id = ids.len() as u32;
                ids.insert(term.to_owned(), id);
                id
            }
        };
        set.push(id);
    });
    set.sort_unstable();
    set.dedup();
    set
}

/// |a ∩ b| / |a ∪ b| of two sorted sets; 1 when both are empty.
fn jaccard(a: &[u32], b: &[u32]) -> f32 {
    let (mut i, mut j, mut common) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - common;
    if union == 0 {
        return 1.0;
    }
    common as f32 / union as f32
}

/// An `f32` ordered by `total_cmp`, for sort keys.
#[derive(PartialEq)]
struct OrderedScore(f32);

impl Eq for OrderedScore {}

impl PartialOrd for OrderedScore {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedScore {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
