//! Confinement, end to end: one table of path forms (`..`, absolute, percent-encoded,
//! `file://`, `/proc/self/root`, NUL, symlinks in and out, loops) sent to the CLI
//! (`compress --focus`), MCP (`compress_context` `focus_file` and `paths`) and the LSP
//! (`ctxzip/compress` `focus`) alike, over the real binary; then the swap race: a file
//! swapped between a regular file and a symlink to an outside file while the CLI and MCP read
//! the workspace again and again. Nothing outside the root may ever reach an answer, and every
//! outside path gets one message, whether or not anything exists there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ctxzip_lsp::client::LspClient;
use serde_json::{Value, json};

use common::mcp_client::Client;
use ctxzip_lsp::protocol::codes;

const MODEL: &str = "smollm2-135m";
const WAIT: Duration = Duration::from_secs(300);
/// In every outside file: seeing it in any answer is a leak.
const MARKER: &str = "OUTSIDE_SECRET_MARKER";
const QUERY: &str = "what does compute_total return? OUTSIDE_SECRET_MARKER leaked";

/// What a path form must come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A file inside the root (through symlinks that stay inside, too).
    Inside,
    /// Inside the root, but nothing readable there.
    Missing,
    /// Outside the root: refused with the one message, whatever is there.
    Outside,
}

/// A workspace `base/ws` beside `base/outside`, with symlinks in and out.
struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let root = base.join("ws");
    let outside = base.join("outside");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        root.join("src/app.py"),
        "def compute_total(items):\n    return sum(items)\n\n\ndef render(total):\n    return f\"total={total}\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("src/util.py"),
        "def clamp(x, lo, hi):\n    return max(lo, min(hi, x))\n",
    )
    .unwrap();
    std::fs::write(
        outside.join("secret.py"),
        format!("def leaked():\n    return \"{MARKER}\"\n"),
    )
    .unwrap();
    let link = |target: &Path, name: &str| std::os::unix::fs::symlink(target, root.join(name));
    link(Path::new("src"), "link_in").unwrap();
    link(&root.join("src"), "link_abs_in").unwrap();
    link(Path::new("../outside"), "link_out").unwrap();
    link(&outside, "link_abs_out").unwrap();
    link(Path::new("../outside/secret.py"), "link_file_out.py").unwrap();
    link(Path::new("/etc"), "link_etc").unwrap();
    link(Path::new("../outside/nope.py"), "dangling.py").unwrap();
    link(Path::new("/proc/self/root/etc"), "proc_link").unwrap();
    link(Path::new("loop_b"), "loop_a").unwrap();
    link(Path::new("loop_a"), "loop_b").unwrap();
    Fixture {
        _dir: dir,
        base,
        root,
    }
}

/// The table: at least 30 forms, each with what it must come to.
fn forms(fx: &Fixture) -> Vec<(String, Expect)> {
    use Expect::*;
    let root = fx.root.display();
    let base = fx.base.display();
    let table: Vec<(String, Expect)> = vec![
        ("src/app.py".into(), Inside),
        ("./src/app.py".into(), Inside),
        ("src//app.py".into(), Inside),
        ("src/../src/app.py".into(), Inside),
        (format!("{root}/src/app.py"), Inside),
        (format!("file://{root}/src/app.py"), Inside),
        (format!("file://{root}/src/%61pp.py"), Inside),
        ("link_in/app.py".into(), Inside),
        ("link_abs_in/app.py".into(), Inside),
        (format!("/proc/self/root{root}/src/app.py"), Inside),
        ("src/nope.py".into(), Missing),
        ("src/app.py/x".into(), Missing),
        ("%2e%2e/outside/secret.py".into(), Missing),
        ("loop_a/x.py".into(), Missing),
        ("..".into(), Outside),
        ("../outside/secret.py".into(), Outside),
        ("../outside/nope.py".into(), Outside),
        ("src/../../outside/secret.py".into(), Outside),
        ("~/../../outside/secret.py".into(), Outside),
        (format!("{base}/outside/secret.py"), Outside),
        (format!("{base}/outside/nope.py"), Outside),
        (format!("{root}/../outside/secret.py"), Outside),
        ("/etc/passwd".into(), Outside),
        ("/etc/zz_no_such_file".into(), Outside),
        (format!("file://{base}/outside/secret.py"), Outside),
        (format!("file://{root}/%2e%2e/outside/secret.py"), Outside),
        (format!("file://{root}/..%2Foutside%2Fsecret.py"), Outside),
        ("file://otherhost/etc/passwd".into(), Outside),
        ("/proc/self/root/etc/passwd".into(), Outside),
        (format!("/proc/self/root{base}/outside/secret.py"), Outside),
        ("link_out/secret.py".into(), Outside),
        ("link_out/nope.py".into(), Outside),
        ("link_abs_out/secret.py".into(), Outside),
        ("link_file_out.py".into(), Outside),
        ("link_etc/passwd".into(), Outside),
        ("link_etc/zz_no_such_file".into(), Outside),
        ("dangling.py".into(), Outside),
        ("proc_link/passwd".into(), Outside),
    ];
    assert!(table.len() >= 30);
    table
}

/// No answer may hold an outside file's text, `/etc/passwd`'s, or a symlink's target.
fn assert_no_leak(surface: &str, form: &str, fx: &Fixture, text: &str) {
    assert!(!text.contains(MARKER), "{surface} {form:?} leaked: {text}");
    assert!(
        !text.contains("root:x:0"),
        "{surface} {form:?} leaked: {text}"
    );
    let outside = fx.base.join("outside").display().to_string();
    if !form.contains(&outside) && !form.contains("outside") {
        assert!(
            !text.contains(&outside),
            "{surface} {form:?}: names the target: {text}"
        );
    }
    if !form.contains("/etc") {
        assert!(
            !text.contains("/etc"),
            "{surface} {form:?}: names the target: {text}"
        );
    }
    for word in ["symlink", "exist", "no such"] {
        assert!(
            !text.to_lowercase().contains(word),
            "{surface} {form:?}: says what is outside ({word}): {text}"
        );
    }
}

fn ctxzip(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctxzip"))
        .args(args)
        .env("CTXZIP_CACHE", common::test_cache())
        .current_dir(cwd)
        .output()
        .expect("run ctxzip")
}

fn cli_focus(fx: &Fixture, form: &str) -> Output {
    ctxzip(
        &fx.root,
        &[
            "compress", ".", "--query", QUERY, "--budget", "2000", "--ranker", "bm25", "--focus",
            form,
        ],
    )
}

#[test]
fn every_path_form_is_confined_on_the_cli() {
    let fx = fixture();
    let mut refusals = Vec::new();
    for (form, expect) in forms(&fx) {
        let out = cli_focus(&fx, &form);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stdout.contains(MARKER),
            "--focus {form:?} leaked: {stdout}"
        );
        match expect {
            Expect::Inside => {
                assert_eq!(out.status.code(), Some(0), "--focus {form:?}: {stderr}");
                assert!(
                    stdout.contains("compute_total"),
                    "--focus {form:?}: {stdout}"
                );
            }
            // Inside or out, a focus that is not a file read gets the same answer (exit 2).
            Expect::Missing | Expect::Outside => {
                assert_eq!(out.status.code(), Some(2), "--focus {form:?}: {stderr}");
                assert_no_leak("--focus", &form, &fx, &stderr);
                refusals.push((form.clone(), stderr.replace(&format!("{form:?}"), "FORM")));
            }
        }
    }
    let (first_form, first) = &refusals[0];
    for (form, message) in &refusals {
        assert_eq!(message, first, "--focus {form:?} and {first_form:?} differ");
    }
}

#[test]
fn focus_lines_count_from_one_on_the_cli() {
    let fx = fixture();
    for (form, needle) in [
        ("src/app.py:0", "from 1"),
        ("nope.py:0", "from 1"),
        ("src/app.py:99", "past the end"),
        ("nope.py", "not a file under"),
        ("src", "is a directory"),
    ] {
        let out = cli_focus(&fx, form);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--focus {form}: {stderr}");
        assert!(stderr.contains(needle), "--focus {form}: {stderr}");
    }
    let out = cli_focus(&fx, "src/app.py:5");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ctxzip mcp ROOT`, initialized, its stderr silenced (the race test calls it many times).
fn start_mcp(root: &Path) -> Client {
    let mut mcp = Client::start_with_stderr(&[root.to_str().unwrap()], root, Stdio::null());
    mcp.initialize(json!({}));
    mcp
}

#[test]
fn every_path_form_is_confined_over_mcp() {
    let fx = fixture();
    let mut mcp = start_mcp(&fx.root);
    let mut forms = forms(&fx);
    forms.push(("src/app.py\0.txt".into(), Expect::Outside));
    let mut refusals = Vec::new();
    for (form, expect) in &forms {
        for (field, arguments) in [
            (
                "focus_file",
                json!({"query": QUERY, "budget_tokens": 2000, "focus_file": form}),
            ),
            (
                "paths",
                json!({"query": QUERY, "budget_tokens": 2000, "paths": [form]}),
            ),
        ] {
            let (is_error, text) = mcp.compress_context(arguments);
            assert!(!text.contains(MARKER), "{field} {form:?} leaked: {text}");
            match expect {
                Expect::Inside => {
                    assert!(!is_error, "{field} {form:?}: {text}");
                    assert!(text.contains("compute_total"), "{field} {form:?}: {text}");
                }
                Expect::Missing => {
                    assert!(is_error, "{field} {form:?}: {text}");
                }
                Expect::Outside => {
                    assert!(is_error, "{field} {form:?}: {text}");
                    if form.contains('\0') {
                        assert!(text.contains("NUL"), "{field} {form:?}: {text}");
                        continue;
                    }
                    assert_no_leak(field, form, &fx, &text);
                    refusals.push((
                        format!("{field} {form:?}"),
                        text.replace(&format!("{form:?}"), "FORM"),
                    ));
                }
            }
        }
    }
    // One message for every outside path (per field), existing or not.
    for field in ["focus_file", "paths"] {
        let of_field: Vec<_> = refusals
            .iter()
            .filter(|(what, _)| what.starts_with(field))
            .collect();
        let (first_form, first) = of_field[0];
        for (form, message) in &of_field {
            assert_eq!(message, first, "{form} and {first_form} differ");
        }
    }
    // Lines count from 1 here too.
    let (is_error, text) =
        mcp.compress_context(json!({"query": QUERY, "focus_file": "src/app.py:0"}));
    assert!(is_error && text.contains("from 1"), "{text}");
    let (is_error, text) =
        mcp.compress_context(json!({"query": QUERY, "focus_file": "src/app.py:99"}));
    assert!(is_error && text.contains("past the end"), "{text}");
}

#[test]
fn every_path_form_is_confined_over_lsp() {
    let fx = fixture();
    let mut client = LspClient::spawn(
        Command::new(env!("CARGO_BIN_EXE_ctxzip"))
            .arg("lsp")
            .env("CTXZIP_CACHE", common::test_cache())
            .stderr(Stdio::null()),
    )
    .expect("ctxzip lsp starts");
    let root_uri = format!("file://{}", fx.root.display());
    let response = client.request(
        "initialize",
        json!({
            "processId": null,
            "rootUri": root_uri,
            "workspaceFolders": [{"uri": root_uri, "name": "ws"}],
            "capabilities": {},
            "initializationOptions": {"model": MODEL, "offline": true, "budget": 2000}
        }),
        WAIT,
    );
    assert!(response["result"].is_object(), "{response}");
    client.notify("initialized", json!({})).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let status = client.request("ctxzip/status", Value::Null, WAIT);
        if status["result"]["indexing"]["state"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "index never ready: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut forms = forms(&fx);
    forms.push((
        format!("file://{}/src/app.py%00.txt", fx.root.display()),
        Expect::Outside,
    ));
    for (form, expect) in &forms {
        // LSP speaks absolute URIs: a relative form is sent under the root, `%` kept literal.
        let uri = if form.starts_with("file://") {
            form.clone()
        } else if form.starts_with('/') {
            format!("file://{form}")
        } else {
            format!("file://{}/{}", fx.root.display(), form.replace('%', "%25"))
        };
        let response = client.request(
            "ctxzip/compress",
            json!({"query": QUERY, "focus": {"uri": uri, "position": {"line": 0, "character": 0}}}),
            WAIT,
        );
        let text = response.to_string();
        assert!(!text.contains(MARKER), "focus {form:?} leaked: {text}");
        match expect {
            Expect::Inside => {
                assert!(response["result"].is_object(), "focus {form:?}: {response}");
                assert!(text.contains("compute_total"), "focus {form:?}: {response}");
            }
            Expect::Missing | Expect::Outside => {
                let message = response["error"]["message"].as_str().unwrap_or_default();
                // A path the index places outside the folders is its own kind of refusal;
                // a URI that is no file path at all is malformed params.
                let code = if message.contains("only files under the workspace folders") {
                    assert_eq!(
                        response["error"]["data"],
                        json!({"kind": "path_outside_root", "path": uri}),
                        "focus {form:?}: {response}"
                    );
                    codes::PATH_OUTSIDE_ROOT
                } else {
                    -32602
                };
                assert_eq!(
                    response["error"]["code"],
                    json!(code),
                    "focus {form:?}: {response}"
                );
                if *expect == Expect::Outside {
                    assert!(
                        message.contains("only files under the workspace folders can be read")
                            || message.contains("not a file path"),
                        "focus {form:?}: {message}"
                    );
                    // The path as sent is echoed back; nothing beyond it may be.
                    let tail = message.rsplit(": ").next().unwrap_or_default();
                    assert_no_leak("focus", form, &fx, tail);
                }
            }
        }
    }
    let response = client.request(
        "ctxzip/compress",
        json!({"query": QUERY, "focus": {"uri": format!("file://{}/src/app.py", fx.root.display()), "position": {"line": 98, "character": 0}}}),
        WAIT,
    );
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("past the end"), "{response}");
}

/// Swaps `ws/zz_target.py` between a regular file and a symlink to the outside file as fast
/// as it can until told to stop; returns how many swaps it made.
fn swapper(fx: &Fixture, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let target = fx.root.join("zz_target.py");
    let regular = fx.root.join(".zz_regular.tmp");
    let link = fx.root.join(".zz_link.tmp");
    let outside = fx.base.join("outside/secret.py");
    std::fs::write(&target, "def target():\n    return 1\n").unwrap();
    std::thread::spawn(move || {
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            // rename(2) replaces atomically: the path is always one or the other. Each form
            // is made ready while the other is in place, then held about as long, so a walk
            // that sees one form and a read that follows are as likely to see the other.
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&outside, &link).unwrap();
            std::thread::sleep(Duration::from_micros(300));
            std::fs::rename(&link, &target).unwrap();
            std::fs::write(&regular, "def target():\n    return 1\n").unwrap();
            std::thread::sleep(Duration::from_micros(300));
            std::fs::rename(&regular, &target).unwrap();
            swaps += 2;
        }
        swaps
    })
}

/// Runs per surface; the count of runs that saw the swapped file as a regular file proves
/// the race was live (not every run read a symlink, not every run missed it).
const CLI_RUNS: usize = 60;
const MCP_CALLS: usize = 60;

#[test]
fn the_swap_race_never_leaks_through_the_cli() {
    let fx = fixture();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = swapper(&fx, Arc::clone(&stop));
    let saw_target = AtomicUsize::new(0);
    let mut leaks = Vec::new();
    for run in 0..CLI_RUNS {
        let out = if run % 2 == 0 {
            ctxzip(&fx.base, &["chunks", "ws", "--format", "json"])
        } else {
            ctxzip(
                &fx.base,
                &[
                    "compress", "ws", "-q", QUERY, "-b", "4000", "--ranker", "bm25",
                ],
            )
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.contains("def target") || stdout.contains("zz_target.py\"") {
            saw_target.fetch_add(1, Ordering::Relaxed);
        }
        if stdout.contains(MARKER) {
            leaks.push(run);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = handle.join().unwrap();
    assert!(swaps > 100, "the swapper barely ran ({swaps} swaps)");
    assert!(leaks.is_empty(), "leaked in runs {leaks:?} of {CLI_RUNS}");
    eprintln!(
        "swap race, CLI: {CLI_RUNS} runs, {swaps} swaps, {} saw the regular file, 0 leaks",
        saw_target.load(Ordering::Relaxed)
    );
}

#[test]
fn the_swap_race_never_leaks_through_mcp() {
    let fx = fixture();
    let mut mcp = start_mcp(&fx.root);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = swapper(&fx, Arc::clone(&stop));
    let mut leaks = Vec::new();
    let mut saw_target = 0;
    for call in 0..MCP_CALLS {
        let (is_error, text) = mcp.compress_context(json!({"query": QUERY, "budget_tokens": 4000}));
        assert!(!is_error, "{text}");
        saw_target += usize::from(text.contains("def target"));
        if text.contains(MARKER) {
            leaks.push(call);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = handle.join().unwrap();
    assert!(swaps > 100, "the swapper barely ran ({swaps} swaps)");
    assert!(leaks.is_empty(), "leaked in calls {leaks:?} of {MCP_CALLS}");
    eprintln!(
        "swap race, MCP: {MCP_CALLS} calls, {swaps} swaps, {saw_target} saw the regular file, 0 leaks"
    );
}
