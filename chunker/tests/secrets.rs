//! The secret rules measured on a corpus: `tests/secrets/positive/<rule>.<n>.<ext>` holds
//! secrets of one rule each (generated to match the format, or a provider's documented
//! example key; none is real), `tests/secrets/negative/` real-looking code and docs that
//! merely mention passwords, tokens and keys. Recall must be 100% and false positives 0;
//! the test prints both for BENCHMARKS.md.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use ctxzip_chunker::secrets;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/secrets")
        .join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_positive_is_found_and_redacted_in_place() {
    let files = corpus("positive");
    let mut missed = Vec::new();
    let mut rules_covered = BTreeSet::new();
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let rule = name.split('.').next().unwrap();
        let text = fs::read_to_string(path).unwrap();
        let (redacted, found) = secrets::redact(text.clone());
        let rules: BTreeSet<&str> = found.iter().map(|r| r.rule).collect();
        if !rules.contains(rule) {
            missed.push(format!("{name}: expected {rule}, found {rules:?}"));
            continue;
        }
        rules_covered.insert(rule.to_owned());
        // Nothing is left to find, the marker names the rule, and no line moved.
        assert!(secrets::find(&redacted).is_empty(), "{name}: {redacted}");
        assert!(redacted.contains(&format!("[REDACTED:{rule}]")), "{name}");
        assert_eq!(redacted.lines().count(), text.lines().count(), "{name}");
    }
    let recall = (files.len() - missed.len()) as f64 / files.len() as f64;
    println!(
        "secrets recall: {} of {} positives ({:.0}%)",
        files.len() - missed.len(),
        files.len(),
        recall * 100.0
    );
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
    // Every rule has at least one positive.
    let all: BTreeSet<String> = secrets::rule_ids().into_iter().map(String::from).collect();
    assert_eq!(rules_covered, all);
}

#[test]
fn no_negative_is_flagged() {
    let files = corpus("negative");
    let mut flagged = Vec::new();
    let mut n_lines = 0;
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        n_lines += text.lines().count();
        for (range, rule) in secrets::find(&text) {
            flagged.push(format!(
                "{}: {rule}: {:?}",
                path.file_name().unwrap().to_string_lossy(),
                &text[range]
            ));
        }
    }
    println!(
        "secrets false positives: {} in {} negative files ({n_lines} lines)",
        flagged.len(),
        files.len()
    );
    assert!(
        flagged.is_empty(),
        "false positives:\n{}",
        flagged.join("\n")
    );
}

#[test]
fn the_gate_tells_secrets_from_words_and_expressions() {
    for value in [
        "changeme",
        "password123",
        "get_password",
        "self.password",
        "hunter22",
        "your_api_key_here",
        "${DB_PASSWORD}",
        "django.contrib.auth.password_validation",
    ] {
        assert!(!secrets::looks_random(value), "{value}");
    }
    for value in [
        "Tr0ub4dor&3x",
        "8567e54ea50b231d2fa4bce26ac752d1",
        "q8F!zR2#vLp9",
        "wJalrXUtnFEMIK7MDENGbPxRfiCY",
    ] {
        assert!(secrets::looks_random(value), "{value}");
    }
}

#[test]
fn hostile_text_is_scanned_in_bounded_time() {
    // 1 MiB (the walk's file cap) of what the rules look for, with nothing that completes a
    // match: unterminated key headers, assignments without a value, token prefixes.
    for unit in [
        "-----BEGIN PRIVATE KEY-----\n",
        "password = \"",
        "api_key: ",
        "AKIA",
        "eyJhbGciOi.",
        "xoxb-12345-",
    ] {
        let text = unit.repeat((1 << 20) / unit.len());
        let started = std::time::Instant::now();
        let found = secrets::find(&text);
        let elapsed = started.elapsed();
        assert!(found.is_empty(), "{unit:?}: {found:?}");
        assert!(elapsed.as_secs_f64() < 2.0, "{unit:?}: {elapsed:?}");
    }
}
