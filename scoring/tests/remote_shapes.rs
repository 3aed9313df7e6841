//! The remote backend's wire shapes against recorded answers: vLLM's `prompt_logprobs`, the
//! OpenAI legacy `echo` form (llama-cpp-python's server), a llama.cpp `llama-server` answer
//! without prompt log-probabilities, and the error shapes. The vLLM answers were written from
//! vLLM's documented response types (`PromptLogprobs = list[dict[int, Logprob] | None]`), as
//! vLLM cannot run on these machines; the live test against a real server is still to come.

use ctxzip_scoring::remote::{
    CompletionRequest, LogprobForm, ModelList, RemoteError, RemoteFlags, RemoteSettings,
    error_from_status, last_nlls, prompt_nlls, resolve_settings,
};
use serde_json::json;

/// The prompt of the recorded answers: `[BOS] def tax( "\n\n" tax`, i.e. a chunk, the
/// separator and a one-token query.
const PROMPT: [i32; 6] = [0, 2131, 1270, 11, 198, 1270];
const EXPECTED: [f32; 5] = [9.140625, 6.03125, 0.5078125, 3.0, 0.25];

fn data(name: &str) -> String {
    let path = format!("{}/tests/data/remote/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn vllm_prompt_logprobs_give_each_prompt_tokens_nll() {
    let nlls = prompt_nlls(&data("vllm_prompt_logprobs.json"), &PROMPT).unwrap();
    // Position 2 also lists the top token `(`: the prompt's own token is the one read.
    assert_eq!(nlls, EXPECTED);
    // The query is the last token: its NLL given the chunk.
    assert_eq!(last_nlls(&nlls, 1).unwrap(), [0.25]);
    assert!(matches!(
        last_nlls(&nlls, 9),
        Err(RemoteError::Mismatch { .. })
    ));
}

#[test]
fn echo_logprobs_give_the_same_nlls() {
    let nlls = prompt_nlls(&data("echo_logprobs.json"), &PROMPT).unwrap();
    assert_eq!(nlls, EXPECTED);
}

#[test]
fn a_server_without_prompt_logprobs_is_refused_with_the_servers_that_work() {
    let err = prompt_nlls(&data("llama_server_no_logprobs.json"), &PROMPT).unwrap_err();
    assert_eq!(err, RemoteError::NoPromptLogprobs);
    let message = err.to_string();
    assert!(message.contains("vllm serve"), "{message}");
    assert!(message.contains("llama_cpp.server"), "{message}");
}

#[test]
fn an_answer_for_other_tokens_is_a_mismatch_not_a_score() {
    let mut other = PROMPT;
    other[3] = 12;
    let err = prompt_nlls(&data("vllm_prompt_logprobs.json"), &other).unwrap_err();
    assert!(matches!(err, RemoteError::Mismatch { .. }), "{err}");
    let longer = [PROMPT.as_slice(), &[7, 8]].concat();
    let err = prompt_nlls(&data("vllm_prompt_logprobs.json"), &longer).unwrap_err();
    assert!(matches!(err, RemoteError::Mismatch { .. }), "{err}");
    let err = prompt_nlls("<html>bad gateway</html>", &PROMPT).unwrap_err();
    assert!(matches!(err, RemoteError::Malformed { .. }), "{err}");
}

#[test]
fn requests_ask_for_prompt_logprobs_in_either_form() {
    let request = CompletionRequest::new("m", PROMPT.to_vec(), LogprobForm::PromptLogprobs);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"model": "m", "prompt": PROMPT, "max_tokens": 1, "temperature": 0.0,
               "prompt_logprobs": 0})
    );
    let request = CompletionRequest::new("m", PROMPT.to_vec(), LogprobForm::Echo);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"model": "m", "prompt": PROMPT, "max_tokens": 1, "temperature": 0.0,
               "echo": true, "logprobs": 0})
    );
}

#[test]
fn errors_name_the_fix() {
    for body in [
        data("vllm_unknown_model.json"),
        data("openai_error_unknown_model.json"),
    ] {
        let err = error_from_status(404, &body, "smollm2");
        assert!(matches!(err, RemoteError::UnknownModel { .. }), "{err}");
        assert!(err.to_string().contains("--scorer-model"), "{err}");
    }
    let err = error_from_status(401, "{}", "m");
    assert!(err.to_string().contains("CTXZIP_SCORER_API_KEY"), "{err}");
    let err = error_from_status(500, "upstream crashed", "m");
    assert_eq!(
        err,
        RemoteError::Server {
            status: 500,
            message: "upstream crashed".into()
        }
    );
    let models: ModelList = serde_json::from_str(&data("vllm_models.json")).unwrap();
    models.check("HuggingFaceTB/SmolLM2-135M").unwrap();
    let err = models.check("smollm2").unwrap_err();
    assert!(
        err.to_string().contains("HuggingFaceTB/SmolLM2-135M"),
        "{err}"
    );
}

#[test]
fn settings_check_the_url_and_the_model() {
    let s = RemoteSettings::new(" http://gpu-box:8000/v1/ ", "m", Some("k".into())).unwrap();
    assert_eq!(s.completions_url(), "http://gpu-box:8000/v1/completions");
    assert_eq!(s.api_key.as_deref(), Some("k"));
    for url in ["gpu-box:8000", "http://", "ftp://x/v1"] {
        let err = RemoteSettings::new(url, "m", None).unwrap_err();
        assert!(err.to_string().contains("--scorer-url"), "{err}");
    }
    let err = RemoteSettings::new("http://x/v1", " ", None).unwrap_err();
    assert!(err.to_string().contains("--scorer-model"), "{err}");
}

#[test]
fn flags_win_over_the_config_file_and_no_url_means_local() {
    let table: toml::Table = r#"
        model = "smollm2-135m"
        scorer_url = "http://from-config:8000/v1"
        scorer_model = "config-model"
        scorer_max_in_flight = 4
        scorer_timeout_s = 30
    "#
    .parse()
    .unwrap();
    let from_config = resolve_settings(&RemoteFlags::default(), Some(&table))
        .unwrap()
        .unwrap();
    assert_eq!(from_config.base_url, "http://from-config:8000/v1");
    assert_eq!(from_config.model, "config-model");
    assert_eq!(from_config.max_in_flight, 4);
    assert_eq!(from_config.request_timeout.as_secs(), 30);
    let flags = RemoteFlags {
        url: Some("https://gpu-box/v1".into()),
        model: Some("flag-model".into()),
        max_in_flight: Some(32),
        timeout_s: None,
    };
    let from_flags = resolve_settings(&flags, Some(&table)).unwrap().unwrap();
    assert_eq!(
        (from_flags.base_url.as_str(), from_flags.model.as_str()),
        ("https://gpu-box/v1", "flag-model")
    );
    assert_eq!(from_flags.max_in_flight, 32);
    assert_eq!(
        resolve_settings(&RemoteFlags::default(), None).unwrap(),
        None
    );

    let bad: toml::Table =
        "scorer_url = \"http://x/v1\"\nscorer_model = \"m\"\nscorer_max_in_flight = 0"
            .parse()
            .unwrap();
    let err = resolve_settings(&RemoteFlags::default(), Some(&bad)).unwrap_err();
    assert!(err.to_string().contains("scorer_max_in_flight"), "{err}");
    let no_model: toml::Table = "scorer_url = \"http://x/v1\"".parse().unwrap();
    let err = resolve_settings(&RemoteFlags::default(), Some(&no_model)).unwrap_err();
    assert!(err.to_string().contains("scorer_model"), "{err}");
}
