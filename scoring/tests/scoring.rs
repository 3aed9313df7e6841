//! Real-model tests of the scorer: relevance, agreement between modes, determinism, caches,
//! token accounting and bad requests.

mod common;

use common::{chunk, scorer};
use ctxzip_scoring::{CancelFlag, ChunkInput, Error, ScoreOptions};

const PARSE_CONFIG: &str = r#"/// Reads the TOML config file at `path` into `Settings`.
pub fn load_config(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)?;
    let settings: Settings = toml::from_str(&text)?;
    Ok(settings)
}"#;

const SHA256_FILE: &str = r#"/// The sha256 checksum of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = File::open(path)?;
    io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}"#;

const SORT_USERS: &str = r#"/// Sorts users by age, oldest first.
pub fn sort_users_by_age(users: &mut [User]) {
    users.sort_by(|a, b| b.age.cmp(&a.age));
}"#;

const RENDER_TABLE: &str = r#"function renderTable(rows) {
  const body = rows.map(r => `<tr><td>${r.name}</td><td>${r.price}</td></tr>`).join("");
  return `<table><tbody>${body}</tbody></table>`;
}"#;

fn fixtures() -> Vec<ChunkInput> {
    [PARSE_CONFIG, SHA256_FILE, SORT_USERS, RENDER_TABLE]
        .iter()
        .map(|t| chunk(t))
        .collect()
}

/// The fixtures behind a first line of their own, so that no other test has cached them.
fn fixtures_tagged(tag: &str) -> Vec<ChunkInput> {
    fixtures()
        .into_iter()
        .map(|c| chunk(&format!("// {tag}\n{}", c.text)))
        .collect()
}

fn plain(max_packed_seqs: usize) -> ScoreOptions {
    ScoreOptions {
        max_packed_seqs,
        reuse_kv_states: false,
        reuse_prefix: false,
        use_cache: false,
        deadline: None,
        max_tokens: None,
    }
}

#[test]
fn the_relevant_chunk_scores_highest() {
    let cases = [
        ("load the settings from the TOML config file", 0),
        ("compute the sha256 checksum of a file as hex", 1),
        ("sort the users by age so the oldest come first", 2),
        ("render the rows as an HTML table", 3),
    ];
    let chunks = fixtures();
    for (query, relevant) in cases {
        let out = scorer()
            .score_chunks_with(query, &chunks, plain(1), &CancelFlag::new())
            .unwrap();
        let best = out
            .scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
            .map(|(i, _)| i);
        assert_eq!(best, Some(relevant), "query {query:?}: {:?}", out.scores);
    }
}

#[test]
fn packed_and_sequential_scoring_agree() {
    let chunks = fixtures();
    let query = "compute the sha256 checksum of a file as hex";
    let cancel = CancelFlag::new();
    let sequential = scorer()
        .score_chunks_with(query, &chunks, plain(1), &cancel)
        .unwrap();
    let packed = scorer()
        .score_chunks_with(query, &chunks, plain(8), &cancel)
        .unwrap();
    for (s, p) in sequential.scores.iter().zip(&packed.scores) {
        assert!((s.nll - p.nll).abs() < 0.05, "{s:?} vs {p:?}");
    }
    assert_eq!(sequential.model_tokens, packed.model_tokens);
}

#[test]
fn scores_are_deterministic() {
    let chunks = fixtures();
    let query = "sort the users by age so the oldest come first";
    let cancel = CancelFlag::new();
    let a = scorer()
        .score_chunks_with(query, &chunks, plain(1), &cancel)
        .unwrap();
    let b = scorer()
        .score_chunks_with(query, &chunks, plain(1), &cancel)
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn restored_kv_states_give_the_fresh_scores_for_fewer_tokens() {
    let chunks = fixtures_tagged("kv-state test");
    let query = "load the settings from the TOML config file";
    let cancel = CancelFlag::new();
    let reuse = ScoreOptions {
        max_packed_seqs: 1,
        reuse_kv_states: true,
        reuse_prefix: true,
        use_cache: false,
        deadline: None,
        max_tokens: None,
    };
    let fresh = scorer()
        .score_chunks_with(query, &chunks, plain(1), &cancel)
        .unwrap();
    let cold = scorer()
        .score_chunks_with(query, &chunks, reuse, &cancel)
        .unwrap();
    let warm = scorer()
        .score_chunks_with(query, &chunks, reuse, &cancel)
        .unwrap();
    assert!(cold.scores.iter().all(|s| !s.kv_state_hit));
    assert!(warm.scores.iter().all(|s| s.kv_state_hit));
    for (f, w) in fresh.scores.iter().zip(&warm.scores) {
        assert!((f.nll - w.nll).abs() < 0.05, "{f:?} vs {w:?}");
    }
    let chunk_tokens: usize = warm.scores.iter().map(|s| s.n_tokens).sum();
    assert_eq!(
        cold.model_tokens - warm.model_tokens,
        chunk_tokens + bos_len() * chunks.len()
    );
}

#[test]
fn a_repeated_query_decodes_only_the_chunks_that_changed() {
    let mut chunks = fixtures_tagged("result-cache test");
    let query = "compute the sha256 checksum of a file as hex";
    let cancel = CancelFlag::new();
    let cached = ScoreOptions {
        use_cache: true,
        ..plain(1)
    };
    let fresh = scorer()
        .score_chunks_with(query, &chunks, plain(1), &cancel)
        .unwrap();
    let first = scorer()
        .score_chunks_with(query, &chunks, cached, &cancel)
        .unwrap();
    assert!(first.scores.iter().all(|s| !s.cache_hit));
    assert_eq!(&first, &fresh);
    let again = scorer()
        .score_chunks_with(query, &chunks, cached, &cancel)
        .unwrap();
    assert!(again.scores.iter().all(|s| s.cache_hit));
    assert_eq!(again.model_tokens, 0);
    for (f, a) in fresh.scores.iter().zip(&again.scores) {
        assert_eq!((f.score, f.nll, f.n_tokens), (a.score, a.nll, a.n_tokens));
    }

    // An edit makes that one chunk decode again; the others stay cached.
    chunks[2] = chunk(&format!("{}\n// sorted in place", chunks[2].text));
    let edited = scorer()
        .score_chunks_with(query, &chunks, cached, &cancel)
        .unwrap();
    let hits: Vec<bool> = edited.scores.iter().map(|s| s.cache_hit).collect();
    assert_eq!(hits, [true, true, false, true]);
    let n_sep = scorer().count_tokens("\n\n");
    let n_query = scorer().count_tokens(query);
    assert_eq!(
        edited.model_tokens,
        bos_len() + edited.scores[2].n_tokens + n_sep + n_query - 1
    );

    // Another query shares nothing with the first.
    let other = scorer()
        .score_chunks_with("sort the users by age", &chunks, cached, &cancel)
        .unwrap();
    assert!(other.scores.iter().all(|s| !s.cache_hit));
}

#[test]
fn past_the_deadline_only_cached_results_are_served() {
    let chunks = fixtures_tagged("deadline test");
    let query = "sort the users by age so the oldest come first";
    let cancel = CancelFlag::new();
    let cached = ScoreOptions {
        use_cache: true,
        reuse_kv_states: true,
        ..plain(1)
    };
    let full = scorer()
        .score_chunks_with(query, &chunks[..2], cached, &cancel)
        .unwrap();
    let late = ScoreOptions {
        deadline: Some(std::time::Instant::now()),
        ..cached
    };
    let out = scorer()
        .score_chunks_with(query, &chunks, late, &cancel)
        .unwrap();
    assert_eq!(out.model_tokens, 0);
    assert_eq!(out.scores.len(), chunks.len());
    for (s, f) in out.scores[..2].iter().zip(&full.scores) {
        assert!(s.cache_hit && !s.skipped);
        assert_eq!(s.score, f.score);
    }
    for s in &out.scores[2..] {
        assert!(s.skipped && !s.cache_hit, "{s:?}");
        assert_eq!(s.score, f32::NEG_INFINITY);
    }

    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let nlls = scorer()
        .token_nlls_batch_with(Some("// late\n"), &texts, late, &cancel)
        .unwrap();
    assert!(nlls.iter().all(|n| n.skipped && n.tokens.is_empty()));
}

fn bos_len() -> usize {
    usize::from(scorer().adds_bos())
}

#[test]
fn decoded_tokens_match_the_tokenizer() {
    let chunks = fixtures();
    let query = "render the rows as an HTML table";
    let out = scorer()
        .score_chunks_with(query, &chunks, plain(1), &CancelFlag::new())
        .unwrap();
    let n_query = scorer().count_tokens(query);
    let n_sep = scorer().count_tokens("\n\n");
    assert_eq!(out.n_query_tokens, n_query);
    let bos = bos_len();
    let mut expected = bos + n_sep + n_query - 1;
    for (c, s) in chunks.iter().zip(&out.scores) {
        assert_eq!(s.n_tokens, scorer().count_tokens(&c.text));
        expected += bos + s.n_tokens + n_sep + n_query - 1;
    }
    assert_eq!(out.model_tokens, expected);
    assert_eq!(
        scorer().count_tokens_batch(&[PARSE_CONFIG, ""]),
        vec![scorer().tokenize(PARSE_CONFIG).len(), 0]
    );
    let tokens = scorer().tokenize(SHA256_FILE);
    assert_eq!(scorer().detokenize(&tokens), SHA256_FILE);
}

#[test]
fn token_nlls_cover_the_text_and_prefix_reuse_agrees() {
    let prefix = "// Find where the config file is parsed.\n";
    let texts = [PARSE_CONFIG, SORT_USERS, RENDER_TABLE];
    let cancel = CancelFlag::new();
    let shared = ScoreOptions {
        max_packed_seqs: 1,
        reuse_kv_states: false,
        reuse_prefix: true,
        use_cache: false,
        deadline: None,
        max_tokens: None,
    };
    let with_reuse = scorer()
        .token_nlls_batch_with(Some(prefix), &texts, shared, &cancel)
        .unwrap();
    let without = scorer()
        .token_nlls_batch_with(Some(prefix), &texts, plain(1), &cancel)
        .unwrap();
    for ((text, a), b) in texts.iter().zip(&with_reuse).zip(&without) {
        assert_eq!(a.tokens.len(), scorer().count_tokens(text));
        assert!(a.first_token_scored && !a.truncated);
        let rebuilt: String = a.tokens.iter().map(|t| &text[t.start..t.end]).collect();
        assert_eq!(&rebuilt, text);
        for (x, y) in a.tokens.iter().zip(&b.tokens) {
            assert!((x.nll - y.nll).abs() < 0.05, "{x:?} vs {y:?}");
        }
    }
    // The prefix helps predict the text it talks about.
    let alone = scorer().token_nlls(None, PARSE_CONFIG).unwrap();
    let mean = |t: &ctxzip_scoring::TokenNlls| {
        t.tokens.iter().skip(1).map(|t| t.nll).sum::<f32>() / (t.tokens.len() - 1) as f32
    };
    assert!(mean(&with_reuse[0]) < mean(&alone) + 0.5);
}

#[test]
fn cached_unconditional_nlls_equal_fresh_ones() {
    let text = "fn cached_nlls_fixture() -> u32 { 42 }";
    let before = scorer().stats();
    let fresh = scorer().token_nlls(None, text).unwrap();
    let cached = scorer().token_nlls(None, text).unwrap();
    let after = scorer().stats();
    assert_eq!(fresh, cached);
    assert!(scorer().disk_cache_enabled());
    assert!(
        after.disk_hits > before.disk_hits,
        "{before:?} -> {after:?}"
    );
    // And a second scorer over the same cache file reads them back from disk.
    let second = ctxzip_scoring::Scorer::new(common::config()).unwrap();
    let from_disk = second.token_nlls(None, text).unwrap();
    assert_eq!(second.stats().disk_hits, 1);
    assert_eq!(from_disk, fresh);
}

#[test]
fn bad_requests_fail_clearly() {
    let chunks = fixtures();
    let cancel = CancelFlag::new();
    let err = scorer().score_chunks("  ", &chunks, &cancel).unwrap_err();
    assert!(matches!(err, Error::EmptyQuery), "{err}");
    let long_query = "explain the parser ".repeat(1000);
    let err = scorer()
        .score_chunks(&long_query, &chunks, &cancel)
        .unwrap_err();
    assert!(matches!(err, Error::QueryTooLong { .. }), "{err}");
    assert!(err.to_string().contains("context"), "{err}");
    let cancelled = CancelFlag::new();
    cancelled.cancel();
    let err = scorer()
        .score_chunks("sort users", &chunks, &cancelled)
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
}

#[test]
fn long_chunks_are_truncated_not_fatal() {
    let long = format!("fn big() {{\n{}}}\n", "    let x = 1;\n".repeat(2000));
    let out = scorer()
        .score_chunks("where is big defined", &[chunk(&long)], &CancelFlag::new())
        .unwrap();
    assert!(out.scores[0].truncated);
    assert!(out.scores[0].n_tokens < scorer().count_tokens(&long));
    let nlls = scorer().token_nlls(None, &long).unwrap();
    assert!(nlls.truncated);
}

#[tokio::test]
async fn async_calls_work_from_a_runtime() {
    let out = scorer()
        .score_chunks_async(
            "sort the users by age".to_string(),
            fixtures(),
            CancelFlag::new(),
        )
        .await
        .unwrap();
    assert_eq!(out.scores.len(), 4);
}

/// The floor the pipeline rules chunks out by ([`ScoringModel::min_tokens`]) is never above
/// the real count, on real code (this repository's sources, whole and cut into lines and
/// runs of lines) and on texts made of the vocabulary's longest pieces; and it is a floor
/// worth having (a good share of the count), or the pipeline would count everything.
#[test]
fn the_token_floor_is_at_most_the_count_and_near_it_on_code() {
    use ctxzip_scoring::ScoringModel;
    let scorer = scorer();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut texts: Vec<String> = Vec::new();
    for dir in [
        "chunker/src",
        "scoring/src",
        "scoring/src/compress",
        "chunker/queries/rust",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).expect("source dir") {
            let path = entry.expect("dir entry").path();
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source file");
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            texts.extend(lines.iter().map(|l| l.to_string()));
            texts.extend(lines.chunks(7).map(|run| run.concat()));
            texts.push(text);
        }
    }
    for extreme in [
        " ".repeat(300),
        format!("\n{}", " ".repeat(200)),
        "#".repeat(500),
        "-".repeat(333) + "\n" + &"=".repeat(77),
        "<tool_call></tool_call><|im_start|>".into(),
        "Ñiño façade Québec 東京 日本語 ünïcödé_idént".into(),
        "a.b.c.d.e.f.g.h 1 2 3 44 555 6666 x_y_z".into(),
    ] {
        texts.push(extreme);
    }
    let (mut floors, mut counts) = (0, 0);
    for text in &texts {
        let (floor, count) = (scorer.min_tokens(text), scorer.count_tokens(text));
        assert!(floor <= count, "floor {floor} > count {count} of {text:?}");
        floors += floor;
        counts += count;
    }
    assert!(floors * 3 > counts, "floors {floors} of {counts} tokens");
}
