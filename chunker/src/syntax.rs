//! Chunking a parsed file: definitions from the language's query, nested into containers,
//! widened over their attached comments and attributes, then laid out on rows so that
//! every row belongs to exactly one chunk.

use std::collections::HashMap;

use streaming_iterator::StreamingIterator;
use tree_sitter::{Node, QueryCursor, Tree};

use crate::chunk::{Chunk, ChunkKind};
use crate::lang::{CompiledQuery, Lang, LangSpec};
use crate::lines::LineIndex;
use crate::pieces::{Piece, PieceList};

/// Definitions nested deeper than this stay inside their parent's chunk; it bounds recursion
/// on pathological input.
const MAX_DEPTH: usize = 48;

/// Partial query matches tree-sitter keeps alive at once. It keeps one for every enclosing
/// node whose pattern could still match a later child (another declarator, another pair of
/// an object literal) and checks each of them at every node below, so on deeply nested code
/// matching is quadratic: 6000 nested arrow functions (173 KB) took 7 s in the query alone.
/// Past the limit tree-sitter drops the match that started earliest, which can only lose a
/// definition after code nested deeper than the limit. Real code stays far below it: on
/// 9,317 files (the crates.io sources, Python's standard library and npm's packages on a
/// development machine) a limit of 8 changed the chunks of 3 files and 64 of none.
const MAX_IN_PROGRESS_MATCHES: u32 = 64;

/// Query matches start no deeper in the tree than this. tree-sitter stores a partial
/// match's start depth in 16 bits: past 65,535 levels it wraps, the match is never dropped,
/// and matching turns quadratic (13,000 nested `const o = { k: () => {` lines, 78,000 levels:
/// 9 s). Patterns span a few levels, so every match stays below the wrap. A definition that
/// deep is nested far past [`MAX_DEPTH`] containers anyway, or inside a function.
const MAX_QUERY_START_DEPTH: u32 = 60_000;

struct Def {
    end: usize,
    first_row: usize,
    last_row: usize,
    kind: ChunkKind,
    name: Option<String>,
    /// What a definition outside its container belongs to (a Go method's receiver type).
    scope: Option<String>,
    body_start: Option<usize>,
    children: Vec<usize>,
}

pub fn chunk_tree(lang: Lang, text: &str, tree: &Tree, index: &LineIndex) -> Vec<Chunk> {
    let mut list = PieceList::new(text, index);
    if index.n_rows() == 0 {
        return Vec::new();
    }
    let spec = lang.spec();
    let (defs, roots) = match lang.chunk_query() {
        Some(query) => collect_defs(spec, query, text, tree, index),
        None => (Vec::new(), Vec::new()),
    };
    let mut layout = Layout {
        defs: &defs,
        spec,
        list: &mut list,
    };
    layout.container(None, &roots, 0, index.n_rows() - 1, None);
    list.finish(lang)
}

/// One query match on a definition node.
struct Found<'tree> {
    node: Node<'tree>,
    kind: ChunkKind,
    name: Option<String>,
    scope: Option<String>,
    pattern: usize,
    /// Where the definition starts once widened over its attached comments and attributes;
    /// set by [`locate_defs`].
    start: usize,
}

fn collect_defs(
    spec: &LangSpec,
    compiled: &CompiledQuery,
    text: &str,
    tree: &Tree,
    index: &LineIndex,
) -> (Vec<Def>, Vec<usize>) {
    let mut found: Vec<Found> = Vec::new();
    let mut cursor = QueryCursor::new();
    cursor.set_match_limit(MAX_IN_PROGRESS_MATCHES);
    cursor.set_max_start_depth(Some(MAX_QUERY_START_DEPTH));
    let mut matches = cursor.matches(&compiled.query, tree.root_node(), text.as_bytes());
    while let Some(m) = matches.next() {
        let mut definition = None;
        let mut name = None;
        let mut scope = None;
        for capture in m.captures() {
            if Some(capture.index) == compiled.name_capture {
                name = capture.node.utf8_text(text.as_bytes()).ok().map(clean_name);
            } else if Some(capture.index) == compiled.scope_capture {
                scope = capture.node.utf8_text(text.as_bytes()).ok().map(clean_name);
            } else if let Some(kind) = compiled.definition_kinds[capture.index as usize] {
                definition = Some((capture.node, kind));
            }
        }
        if let Some((node, kind)) = definition {
            found.push(Found {
                node,
                kind,
                name,
                scope,
                pattern: m.pattern_index,
                start: node.start_byte(),
            });
        }
    }
    locate_defs(spec, text, tree, &mut found);
    // Outer definitions first; where two patterns match one node, the earlier pattern wins.
    found.sort_by_key(|f| {
        let node = f.node;
        (
            node.start_byte(),
            std::cmp::Reverse(node.end_byte()),
            f.pattern,
        )
    });
    found.dedup_by_key(|f| (f.node.start_byte(), f.node.end_byte()));

    let mut defs: Vec<Def> = Vec::with_capacity(found.len());
    let mut roots = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for Found {
        node,
        mut kind,
        name,
        scope,
        start,
        ..
    } in found
    {
        // Some grammars end a node after the whitespace that follows it (Scala's indentation
        // syntax ends `def f =\n  expr` at the next definition's first token).
        let end = start
            .max(node.start_byte() + text[node.start_byte()..node.end_byte()].trim_end().len());
        while let Some(&top) = stack.last() {
            if defs[top].end <= node.start_byte() {
                stack.pop();
            } else {
                break;
            }
        }
        if let Some(&parent) = stack.last() {
            let parent_kind = defs[parent].kind;
            // Code nested in a function stays in it; so does anything absurdly deep.
            if parent_kind.is_callable() || stack.len() >= MAX_DEPTH || end > defs[parent].end {
                continue;
            }
            if kind == ChunkKind::Function && parent_kind != ChunkKind::Module {
                kind = ChunkKind::Method;
            }
        } else if kind == ChunkKind::Method && scope.is_none() {
            // A method outside any recognised container (e.g. inside an object literal).
            kind = ChunkKind::Function;
        }
        let first_row = index.row_of(start);
        let last_row = index.row_of(end.saturating_sub(1).max(start));
        let id = defs.len();
        defs.push(Def {
            end,
            first_row,
            last_row,
            kind,
            name,
            scope,
            body_start: body_start(node),
            children: Vec::new(),
        });
        match stack.last() {
            Some(&parent) => defs[parent].children.push(id),
            None => roots.push(id),
        }
        stack.push(id);
    }
    (defs, roots)
}

/// Widens each found definition to the wrappers around it (`decorated_definition`,
/// `export_statement`) and back over the comments and attributes directly above it.
///
/// One walk of the tree with a cursor, which knows each node's ancestors and the siblings
/// before it as it goes. `Node::parent` and `Node::prev_sibling` would be simpler, but
/// tree-sitter answers them by searching down from the root, so each costs the node's
/// depth: on 10k nested `mod`s or 6k nested arrow functions they made chunking quadratic
/// (8.6 s and 50 s for files of about 140 KB).
fn locate_defs<'tree>(spec: &LangSpec, text: &str, tree: &'tree Tree, found: &mut [Found<'tree>]) {
    if found.is_empty() {
        return;
    }
    let mut by_node: HashMap<usize, Vec<usize>> = HashMap::with_capacity(found.len());
    for (i, f) in found.iter().enumerate() {
        by_node.entry(f.node.id()).or_default().push(i);
    }
    // Start bytes of the definitions, sorted: a subtree without one is not entered.
    let mut starts: Vec<usize> = found.iter().map(|f| f.node.start_byte()).collect();
    starts.sort_unstable();
    let holds_def = |node: Node| {
        let first = starts.partition_point(|&s| s < node.start_byte());
        starts.get(first).is_some_and(|&s| s <= node.end_byte())
    };

    // One entry per level from the root down to the cursor's node: the node, and the run
    // of attachable siblings (comments, attributes) directly before it.
    let mut levels: Vec<Level> = vec![Level {
        node: tree.root_node(),
        attached_before: Vec::new(),
    }];
    let mut cursor = tree.walk();
    loop {
        let node = cursor.node();
        if let Some(ids) = by_node.get(&node.id()) {
            // Wrappers around the definition belong to it.
            let mut level = levels.len() - 1;
            while level > 0 && spec.wrapper_kinds.contains(&levels[level - 1].node.kind()) {
                level -= 1;
            }
            let widened = levels[level].node;
            let start = attached_start(widened, &levels[level].attached_before, text);
            for &i in ids {
                found[i].node = widened;
                found[i].start = start;
            }
        }
        if holds_def(node) && cursor.goto_first_child() {
            levels.push(Level {
                node: cursor.node(),
                attached_before: Vec::new(),
            });
            continue;
        }
        // Next sibling, or the next sibling of the nearest ancestor that has one.
        loop {
            if cursor.goto_next_sibling() {
                let Some(level) = levels.last_mut() else {
                    return;
                };
                if spec.attached_kinds.contains(&level.node.kind()) {
                    level.attached_before.push(level.node);
                } else {
                    level.attached_before.clear();
                }
                level.node = cursor.node();
                break;
            }
            if !cursor.goto_parent() {
                return;
            }
            levels.pop();
        }
    }
}

struct Level<'tree> {
    node: Node<'tree>,
    attached_before: Vec<Node<'tree>>,
}

/// Extends a definition backwards over the comments, attributes and decorators directly
/// above it (no blank line in between); `attached_before` are the attachable siblings
/// directly before `node`, in file order.
fn attached_start(node: Node, attached_before: &[Node], text: &str) -> usize {
    let mut start = node.start_byte();
    for prev in attached_before.iter().rev() {
        let gap = &text[prev.end_byte().min(start)..start];
        if gap.bytes().filter(|&b| b == b'\n').count() > 1 {
            break;
        }
        // A trailing comment on the previous item's line belongs to that item. (Only the
        // whitespace before it is read: a minified line would make a scan to its start
        // quadratic.)
        let before = text[..prev.start_byte()]
            .chars()
            .rev()
            .find(|&c| c == '\n' || !c.is_whitespace());
        if before.is_some_and(|c| c != '\n') {
            break;
        }
        start = prev.start_byte();
    }
    start
}

fn body_start(node: Node) -> Option<usize> {
    let mut def = node;
    // Widened wrappers (decorators, export) hold the definition as their last named child.
    for _ in 0..4 {
        if let Some(body) = def.child_by_field_name("body") {
            return Some(body.start_byte());
        }
        let mut cursor = def.walk();
        let block = def.named_children(&mut cursor).find(|child| {
            let kind = child.kind();
            kind.ends_with("block")
                || kind.ends_with("body")
                || kind == "declaration_list"
                || kind == "field_declaration_list"
                || kind == "compound_statement"
                || kind == "enumerator_list"
                || kind == "interface_type"
                || kind == "accessor_list"
        });
        if let Some(block) = block {
            return Some(block.start_byte());
        }
        // `typedef struct { ... } name;` holds the body in its type.
        if let Some(body) = def
            .child_by_field_name("type")
            .and_then(|ty| ty.child_by_field_name("body"))
        {
            return Some(body.start_byte());
        }
        match def.named_child(def.named_child_count().checked_sub(1)? as u32) {
            Some(last) if last.id() != def.id() && ends_definition(def, last) => def = last,
            _ => return None,
        }
    }
    None
}

/// Whether `last` ends `def`, but for a closing `;` (`template <...> class X { ... };`).
fn ends_definition(def: Node, last: Node) -> bool {
    if last.end_byte() == def.end_byte() {
        return true;
    }
    // `def`'s children rather than `last.next_sibling()`, which costs the node's depth.
    let mut cursor = def.walk();
    let mut children = def.children(&mut cursor);
    children.by_ref().find(|child| child.id() == last.id());
    children
        .next()
        .is_some_and(|next| next.kind() == ";" && next.end_byte() == def.end_byte())
}

fn clean_name(raw: &str) -> String {
    let name = raw.split('<').next().unwrap_or(raw).trim();
    let name: String = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        raw.trim().to_owned()
    } else {
        name
    }
}

struct Layout<'a, 'b> {
    defs: &'a [Def],
    spec: &'static LangSpec,
    list: &'a mut PieceList<'b>,
}

impl Layout<'_, '_> {
    /// Lays out rows `first..=last`, owned by `owner` (None for the file), whose members are
    /// `children`; `outer` qualifies the owner's name.
    fn container(
        &mut self,
        owner: Option<usize>,
        children: &[usize],
        first: usize,
        last: usize,
        outer: Option<&str>,
    ) {
        let own_name = owner.map(|id| self.qualified(id, outer));
        let members_qualifier = own_name.as_deref().or(outer);
        let mut cursor = first;
        let mut header_done = owner.is_none();
        for &child_id in children {
            let child = &self.defs[child_id];
            // A container keeps at least its first row as its header.
            let floor = if header_done { cursor } else { cursor + 1 };
            let child_first = child.first_row.max(floor);
            let child_last = child.last_row.min(last);
            if child_first > child_last {
                continue;
            }
            if let (false, Some(id)) = (header_done, owner) {
                self.push_def(id, first, child_first - 1, outer);
                header_done = true;
            } else {
                self.list
                    .gap(cursor, child_first, members_qualifier, owner.is_none());
            }
            self.def(child_id, child_first, child_last, members_qualifier);
            cursor = child_last + 1;
        }
        match owner {
            Some(id) if !header_done => self.push_def(id, first, last, outer),
            _ => self
                .list
                .gap(cursor, last + 1, members_qualifier, owner.is_none()),
        }
    }

    fn def(&mut self, id: usize, first: usize, last: usize, outer: Option<&str>) {
        let def = &self.defs[id];
        if def.kind.is_container() && !def.children.is_empty() {
            self.container(Some(id), &def.children, first, last, outer);
        } else {
            self.push_def(id, first, last, outer);
        }
    }

    fn push_def(&mut self, id: usize, first: usize, last: usize, outer: Option<&str>) {
        let def = &self.defs[id];
        self.list.push(Piece {
            first_row: first,
            last_row: last,
            kind: def.kind,
            name: def.name.clone(),
            qualified_name: Some(self.qualified(id, outer)),
            body_start: def.body_start,
        });
    }

    fn qualified(&self, id: usize, qualifier: Option<&str>) -> String {
        let def = &self.defs[id];
        let name = def.name.as_deref().unwrap_or("_");
        let name = match &def.scope {
            Some(scope) => format!("{scope}{}{name}", self.spec.qualifier),
            None => name.to_owned(),
        };
        match qualifier {
            Some(q) => format!("{q}{}{name}", self.spec.qualifier),
            None => name,
        }
    }
}
