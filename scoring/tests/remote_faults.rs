//! The remote scorer's faults against a real HTTP server on 127.0.0.1 that fails on purpose
//! (`tests/data/remote/fault_server.py`): 500s, 429 with and without `Retry-After`, answers
//! slower than the request timeout or a deadline, no prompt log-probabilities, and the bound
//! on requests in flight. Each failure is an error that names the fix, and nothing from a
//! failed or cut-short call is cached. The tokenizer is the test model's GGUF; no weights run.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::servers::{SERVED_MODEL, Server};
use ctxzip_scoring::cache::ScoreCache;
use ctxzip_scoring::remote::{RemoteError, RemoteModel, RemoteModelConfig, RemoteSettings};
use ctxzip_scoring::{CancelFlag, ChunkInput, Error, ScoringModel};

/// Completions requests of the start-up probe against an echo-form server: the
/// `prompt_logprobs` form first (answered without them), then the `echo` form.
const PROBE_REQUESTS: &str = "2";

fn config(server: &Server, cache: Option<PathBuf>) -> RemoteModelConfig {
    let settings = RemoteSettings::new(&server.base_url, SERVED_MODEL, None).unwrap();
    let mut config = RemoteModelConfig::new(settings, common::test_model());
    config.disk_cache_path = cache;
    config
}

fn connect(server: &Server) -> RemoteModel {
    RemoteModel::new(config(server, None)).expect("the fault server passes the probe")
}

fn chunks(n: usize) -> Vec<ChunkInput> {
    (0..n)
        .map(|i| common::chunk(&format!("def step_{i}(x):\n    return x * {i} + 1\n")))
        .collect()
}

fn score(model: &RemoteModel, chunks: &[ChunkInput]) -> ctxzip_scoring::Result<usize> {
    model
        .score_chunks_with(
            "how is each step computed",
            chunks,
            model.default_options(),
            &CancelFlag::new(),
        )
        .map(|out| out.scores.len())
}

#[test]
fn a_server_that_keeps_failing_with_500_is_retried_then_named() {
    let server = Server::fault(&["--fault", "status-500", "--after", PROBE_REQUESTS]);
    let model = connect(&server);
    let err = score(&model, &chunks(3)).unwrap_err();
    assert!(
        matches!(err, Error::Remote(RemoteError::Server { status: 500, .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains("CUDA out of memory"), "{message}");
    assert!(message.contains("server's log"), "{message}");
    let (_, retries) = model.request_counts();
    assert_eq!(
        retries,
        u64::from(ctxzip_scoring::remote::client::MAX_ATTEMPTS - 1)
    );
    assert_eq!(
        server.stats()["faults"],
        ctxzip_scoring::remote::client::MAX_ATTEMPTS,
        "{}",
        server.stats()
    );
}

#[test]
fn a_429_is_retried_after_the_time_its_retry_after_names() {
    let server = Server::fault(&[
        "--fault",
        "status-429",
        "--after",
        PROBE_REQUESTS,
        "--times",
        "2",
        "--retry-after",
        "1",
    ]);
    let model = connect(&server);
    let started = Instant::now();
    assert_eq!(score(&model, &chunks(2)).unwrap(), 2);
    // Two waits of the server's second, not the client's 250 and 500 ms backoff.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.stats()["faults"], 2);
}

#[test]
fn a_server_that_keeps_answering_429_ends_in_an_error_naming_the_fix() {
    let server = Server::fault(&["--fault", "status-429", "--after", PROBE_REQUESTS]);
    let model = connect(&server);
    let err = score(&model, &chunks(1)).unwrap_err();
    assert!(
        matches!(err, Error::Remote(RemoteError::RateLimited { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("--scorer-max-in-flight"), "{err}");
}

#[test]
fn an_answer_slower_than_the_request_timeout_fails_naming_the_setting() {
    let server = Server::fault(&["--fault", "slow", "--delay", "3", "--after", PROBE_REQUESTS]);
    let mut config = config(&server, None);
    config.settings.request_timeout = Duration::from_secs(1);
    let model = RemoteModel::new(config).unwrap();
    let started = Instant::now();
    let err = score(&model, &chunks(1)).unwrap_err();
    assert!(
        matches!(err, Error::Remote(RemoteError::TimedOut { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("--scorer-timeout-s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "not retried");
}

#[test]
fn a_deadline_drops_requests_in_flight_and_caches_nothing_of_them() {
    let server = Server::fault(&["--fault", "slow", "--delay", "1", "--after", PROBE_REQUESTS]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.sqlite");
    let mut config = config(&server, Some(cache.clone()));
    config.settings.max_in_flight = 2;
    let model = RemoteModel::new(config).unwrap();
    let query = "how is each step computed";
    let chunks = chunks(6);
    let started = Instant::now();
    let options = ctxzip_scoring::ScoreOptions {
        deadline: Some(started + Duration::from_millis(1500)),
        ..model.default_options()
    };
    // The query's own request (1 s) always runs; the chunks' are cut at the deadline.
    let out = model
        .score_chunks_with(query, &chunks, options, &CancelFlag::new())
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1900), "{elapsed:?}");
    assert!(out.scores.iter().all(|s| s.skipped), "{:?}", out.scores);
    let id = model.model_id().unwrap().to_string();
    drop(model);
    let cache = ScoreCache::open(&cache, 1 << 20, &id);
    for chunk in &chunks {
        assert_eq!(
            cache.get(
                ScoreCache::score_key(query, &chunk.text),
                out.n_query_tokens
            ),
            None,
            "a skipped chunk was cached"
        );
    }
}

#[test]
fn a_token_allowance_sends_a_prefix_of_the_chunks_and_skips_the_rest() {
    let server = Server::fault(&["--fault", "slow", "--delay", "0", "--after", PROBE_REQUESTS]);
    let model = connect(&server);
    let query = "how is each step computed";
    let chunks = chunks(6);
    let all = model
        .score_chunks_with(query, &chunks, model.default_options(), &CancelFlag::new())
        .unwrap();
    assert!(all.scores.iter().all(|s| !s.skipped));
    // A fresh model (nothing cached) with half the tokens the whole call sent.
    let model = connect(&server);
    let allowance = all.model_tokens / 2;
    let options = ctxzip_scoring::ScoreOptions {
        max_tokens: Some(allowance),
        ..model.default_options()
    };
    let out = model
        .score_chunks_with(query, &chunks, options, &CancelFlag::new())
        .unwrap();
    assert!(
        out.model_tokens <= allowance,
        "{} > {allowance}",
        out.model_tokens
    );
    let skipped: Vec<bool> = out.scores.iter().map(|s| s.skipped).collect();
    let reached = skipped.iter().take_while(|s| !**s).count();
    assert!(reached > 0 && reached < chunks.len(), "{skipped:?}");
    assert!(
        skipped[reached..].iter().all(|s| *s),
        "in order: {skipped:?}"
    );
    for (got, want) in out.scores.iter().zip(&all.scores).take(reached) {
        assert_eq!(got.query_nlls, want.query_nlls);
    }
}

#[test]
fn requests_in_flight_never_exceed_the_bound() {
    let server = Server::fault(&[
        "--fault",
        "slow",
        "--delay",
        "0.3",
        "--after",
        PROBE_REQUESTS,
    ]);
    let mut config = config(&server, None);
    config.settings.max_in_flight = 3;
    let model = RemoteModel::new(config).unwrap();
    let started = Instant::now();
    assert_eq!(score(&model, &chunks(12)).unwrap(), 12);
    assert_eq!(server.stats()["max_in_flight"], 3, "{}", server.stats());
    // 1 query request, then 12 chunks 3 at a time: 5 rounds of 0.3 s, not 13.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_server_without_prompt_logprobs_is_refused_at_start_up_with_the_servers_that_work() {
    let server = Server::fault(&["--fault", "no-logprobs"]);
    let err = RemoteModel::new(config(&server, None))
        .err()
        .expect("refused");
    assert!(
        matches!(err, Error::Remote(RemoteError::NoPromptLogprobs)),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("vllm serve"), "{message}");
    assert!(message.contains("llama_cpp.server"), "{message}");
}

#[test]
fn log_probabilities_that_cannot_be_the_prompts_are_refused_at_start_up() {
    // What llama-cpp-python's echo answers look like: each token's log-probability read from
    // the logits after it, so a counting sequence looks all but impossible.
    let server = Server::fault(&["--fault", "late-logprobs"]);
    let err = RemoteModel::new(config(&server, None))
        .err()
        .expect("refused");
    assert!(
        matches!(err, Error::Remote(RemoteError::ImplausibleLogprobs { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("one token late"), "{message}");
    assert!(message.contains("vllm serve"), "{message}");
}

#[test]
fn a_model_the_server_does_not_list_is_refused_at_start_up() {
    let server = Server::fault(&[]);
    let settings = RemoteSettings::new(&server.base_url, "no-such-model", None).unwrap();
    let err = RemoteModel::new(RemoteModelConfig::new(settings, common::test_model()))
        .err()
        .expect("refused");
    assert!(
        matches!(err, Error::Remote(RemoteError::UnknownModel { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("--scorer-model"), "{message}");
    assert!(message.contains(SERVED_MODEL), "{message}");
}

#[test]
fn nothing_listening_is_an_error_that_says_to_start_the_server() {
    let url = format!("http://127.0.0.1:{}/v1", common::servers::free_port());
    let settings = RemoteSettings::new(&url, SERVED_MODEL, None).unwrap();
    let err = RemoteModel::new(RemoteModelConfig::new(settings, common::test_model()))
        .err()
        .expect("refused");
    assert!(
        matches!(err, Error::Remote(RemoteError::Unreachable { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("start the server"), "{message}");
}

#[test]
fn cancelling_drops_the_requests_in_flight() {
    let server = Server::fault(&["--fault", "slow", "--delay", "1", "--after", PROBE_REQUESTS]);
    let model = connect(&server);
    let cancel = CancelFlag::new();
    let started = Instant::now();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            // After the query's own request (1 s), while the chunks' are in flight.
            std::thread::sleep(Duration::from_millis(1300));
            cancel.cancel();
        })
    };
    let result = model.score_chunks_with(
        "how is each step computed",
        &chunks(4),
        model.default_options(),
        &cancel,
    );
    canceller.join().unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    // The chunks' requests would have ended at 2 s.
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
}
