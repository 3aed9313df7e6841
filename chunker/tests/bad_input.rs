//! Bad input never panics and never costs another file: each case is reported or handled.

mod common;

use std::fs;
use std::path::Path;

use ctxzip_chunker::confine::RootDir;
use ctxzip_chunker::index;
use ctxzip_chunker::workspace::{self, WalkOptions};
use ctxzip_chunker::{ChunkKind, Lang, SourceFile, Workspace, chunk_source};

const GOOD_PY: &str = "def good():\n    return 1\n";

fn walk(root: &Path) -> Workspace {
    index::read_once(root, &WalkOptions::default()).expect("walk")
}

fn reason<'a>(ws: &'a Workspace, path: &str) -> Option<&'a str> {
    ws.skipped
        .iter()
        .find(|s| s.path == path)
        .map(|s| s.reason.as_str())
}

fn assert_good_survives(ws: &Workspace) {
    let good = ws
        .files
        .iter()
        .find(|f| f.path == "good.py")
        .expect("good.py lost");
    assert_eq!(good.chunks[0].name.as_deref(), Some("good"));
}

fn dir_with_good() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("good.py"), GOOD_PY).unwrap();
    dir
}

#[test]
fn binary_file_is_skipped_with_a_reason() {
    let dir = dir_with_good();
    fs::write(dir.path().join("blob.py"), b"\x7fELF\x00\x01\x02binary\x00").unwrap();
    let ws = walk(dir.path());
    assert_eq!(reason(&ws, "blob.py"), Some("binary file"));
    assert_good_survives(&ws);
}

#[test]
fn invalid_utf8_is_chunked_with_a_warning() {
    let dir = dir_with_good();
    fs::write(
        dir.path().join("latin1.py"),
        b"# caf\xe9\ndef f():\n    pass\n",
    )
    .unwrap();
    let ws = walk(dir.path());
    let file = ws
        .files
        .iter()
        .find(|f| f.path == "latin1.py")
        .expect("chunked");
    assert!(file.chunks.iter().any(|c| c.name.as_deref() == Some("f")));
    let warning = ws.warnings.iter().find(|w| w.path == "latin1.py").unwrap();
    assert!(
        warning.reason.contains("not valid UTF-8"),
        "{}",
        warning.reason
    );
    assert_good_survives(&ws);
}

#[test]
fn huge_single_line_file_is_skipped_by_size_then_as_minified() {
    let dir = dir_with_good();
    let line = "var a=1;".repeat(10 * 1024 * 1024 / 8);
    fs::write(dir.path().join("bundle.js"), &line).unwrap();
    let ws = walk(dir.path());
    assert!(
        reason(&ws, "bundle.js")
            .unwrap()
            .contains("larger than 1 MiB")
    );
    assert_good_survives(&ws);

    let raised = WalkOptions {
        max_file_bytes: 64 * 1024 * 1024,
        ..WalkOptions::default()
    };
    let ws = index::read_once(dir.path(), &raised).unwrap();
    assert!(reason(&ws, "bundle.js").unwrap().contains("minified"));
    assert_good_survives(&ws);
}

#[test]
fn very_deep_nesting_does_not_overflow() {
    // 20k nested brackets, and 300 nested classes (deeper than the nesting cap).
    let brackets = format!("x = {}1{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let chunks = chunk_source(Lang::Python, &brackets);
    common::assert_tiles("brackets.py", &brackets, &chunks);

    let mut classes = String::new();
    for depth in 0..300 {
        classes.push_str(&"    ".repeat(depth));
        classes.push_str(&format!("class C{depth}:\n"));
    }
    classes.push_str(&"    ".repeat(300));
    classes.push_str("def leaf(self):\n");
    classes.push_str(&"    ".repeat(301));
    classes.push_str("return 1\n");
    let chunks = chunk_source(Lang::Python, &classes);
    common::assert_tiles("classes.py", &classes, &chunks);
    assert!(
        chunks.len() <= 64,
        "nesting cap not applied: {}",
        chunks.len()
    );

    let braces = format!(
        "function f() {{ {} }}\n",
        "if (x) { ".repeat(10_000) + &"}".repeat(10_000)
    );
    let chunks = chunk_source(Lang::JavaScript, &braces);
    common::assert_tiles("braces.js", &braces, &chunks);
}

/// Shapes that were quadratic: 6,000 nested arrow functions took 50 s, 10,000 nested `mod`s
/// 8.6 s (`Node::parent` and the query cursor's partial matches cost the nesting depth per
/// definition), 13,000 nested object-literal methods 9 s (tree-sitter's query depth wraps at
/// 65,535 levels); 12,000 nested Lua table constructors make tree-sitter-lua's scanner
/// quadratic (over 10 s), which the parse budget cuts off. Each must chunk well inside 5 s.
#[test]
fn pathological_nesting_chunks_in_bounded_time() {
    fn nested(prefix: &str, open: &str, close: &str, n: usize) -> String {
        let mut text = String::from(prefix);
        for i in 0..n {
            text.push_str(&open.replace("{i}", &i.to_string()));
        }
        text.push_str("x()\n");
        text.push_str(&close.repeat(n));
        text
    }
    // (language, text, the first chunk's name, whether nesting stays one chunk)
    let cases = [
        // Definitions inside a function stay in it: one chunk.
        (
            Lang::JavaScript,
            nested("", "const f{i} = () => {\n", "};\n", 6000),
            Some("f0"),
            true,
        ),
        // Nesting past the cap stays inside the deepest kept module.
        (
            Lang::Rust,
            nested("", "mod m{i} {\n", "}\n", 10_000),
            Some("m0"),
            false,
        ),
        // 78,000 levels deep: past tree-sitter's 16-bit query depth.
        (
            Lang::JavaScript,
            nested("", "const o{i} = { k{i}: () => {\n", "} };\n", 13_000),
            Some("k0"),
            true,
        ),
        (
            Lang::Lua,
            nested("", "local t{i} = {\n", "}\n", 12_000),
            None,
            false,
        ),
    ];
    for (lang, text, first_name, one_chunk) in cases {
        let started = std::time::Instant::now();
        let chunks = chunk_source(lang, &text);
        let elapsed = started.elapsed();
        common::assert_tiles(lang.name(), &text, &chunks);
        assert!(
            elapsed < std::time::Duration::from_secs(5),
            "{} bytes of nested {} took {elapsed:?}",
            text.len(),
            lang.name()
        );
        if first_name.is_some() {
            assert_eq!(chunks[0].name.as_deref(), first_name);
        }
        if one_chunk {
            assert_eq!(chunks.len(), 1, "{:?}", &chunks[..2]);
        }
        let modules = chunks.iter().filter(|c| c.kind == ChunkKind::Module);
        assert!(modules.count() <= 48, "nesting cap not applied");
        println!(
            "{} bytes of nested {}: {elapsed:?}",
            text.len(),
            lang.name()
        );
    }
    // A parse cut off by its budget leaves nothing behind in this thread's parser.
    let after = "function after()\n  return 1\nend\n";
    let chunks = chunk_source(Lang::Lua, after);
    assert_eq!(chunks[0].name.as_deref(), Some("after"), "{chunks:?}");
}

#[test]
fn empty_and_blank_files() {
    assert!(chunk_source(Lang::Rust, "").is_empty());
    let blank = "\n\n   \n";
    let chunks = chunk_source(Lang::Rust, blank);
    common::assert_tiles("blank.rs", blank, &chunks);
    assert_eq!(chunks.len(), 1);

    let dir = dir_with_good();
    fs::write(dir.path().join("empty.py"), "").unwrap();
    let ws = walk(dir.path());
    let empty = ws
        .files
        .iter()
        .find(|f| f.path == "empty.py")
        .expect("kept");
    assert!(empty.chunks.is_empty());
}

#[test]
fn crlf_and_bom_keep_names_and_lines() {
    let text = "\u{feff}use std::fmt;\r\n\r\n/// Adds.\r\nfn add(a: i32) -> i32 {\r\n    a + 1\r\n}\r\n\r\nfn sub() {}\r\n";
    let chunks = chunk_source(Lang::Rust, text);
    common::assert_tiles("crlf.rs", text, &chunks);
    let add = chunks
        .iter()
        .find(|c| c.name.as_deref() == Some("add"))
        .unwrap();
    assert_eq!((add.start_line, add.end_line), (3, 7));
    assert_eq!(add.header_end_line, 4);
    let sub = chunks
        .iter()
        .find(|c| c.name.as_deref() == Some("sub"))
        .unwrap();
    assert_eq!(sub.start_line, 8);
    assert_eq!(chunks[0].kind, ChunkKind::Glue);
}

#[test]
fn file_deleted_during_the_walk_is_reported() {
    let dir = dir_with_good();
    let doomed = dir.path().join("doomed.py");
    fs::write(&doomed, GOOD_PY).unwrap();
    let (paths, _) = workspace::discover(dir.path(), &WalkOptions::default()).unwrap();
    assert!(paths.contains(&doomed));
    fs::remove_file(&doomed).unwrap();
    let root = RootDir::open(dir.path()).unwrap();
    let skipped = workspace::load_file(&root, &doomed, "doomed.py".into(), &WalkOptions::default())
        .expect_err("must be skipped");
    assert_eq!(skipped.reason, "deleted during the walk");
}

#[test]
fn unreadable_files_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_with_good();
    let locked = dir.path().join("locked.py");
    fs::write(&locked, GOOD_PY).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let readable_anyway = fs::read(&locked).is_ok(); // true when the tests run as root
    let ws = walk(dir.path());
    if readable_anyway {
        assert!(ws.files.iter().any(|f| f.path == "locked.py"));
    } else {
        assert_eq!(
            reason(&ws, "locked.py"),
            Some("unreadable: permission denied")
        );
    }
    assert_good_survives(&ws);

    // A directory where a file was expected cannot be read, even by root.
    let sub = dir.path().join("sub");
    fs::create_dir_all(&sub).unwrap();
    let root = RootDir::open(dir.path()).unwrap();
    let skipped = workspace::load_file(&root, &sub, "sub".into(), &WalkOptions::default())
        .expect_err("a directory is not a file");
    assert_eq!(skipped.reason, "not a regular file");
}

#[test]
fn symlink_loops_and_escapes_are_not_followed() {
    let dir = dir_with_good();
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("inner.py"), GOOD_PY).unwrap();
    std::os::unix::fs::symlink("..", sub.join("loop")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.py"), GOOD_PY).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.py"), dir.path().join("link.py"))
        .unwrap();
    std::os::unix::fs::symlink("inner.py", sub.join("alias.py")).unwrap();

    let ws = walk(dir.path());
    let paths: Vec<_> = ws.files.iter().map(|f| f.path.as_str()).collect();
    // A link inside the root is followed, and its file read once, under its real path (the
    // one index's rule, the same on every surface): the alias is no second copy.
    assert_eq!(
        paths.iter().filter(|p| **p == "sub/inner.py").count(),
        1,
        "{paths:?}"
    );
    assert!(!paths.contains(&"sub/alias.py"), "{paths:?}");
    assert!(
        !paths
            .iter()
            .any(|p| p.contains("secret") || p.starts_with("escape"))
    );
    assert!(
        reason(&ws, "escape")
            .unwrap()
            .contains("outside the workspace")
    );
    assert!(
        reason(&ws, "link.py")
            .unwrap()
            .contains("outside the workspace")
    );
    assert!(
        reason(&ws, "sub/loop").unwrap().contains("symlink loop"),
        "{:?}",
        ws.skipped
    );
    assert_good_survives(&ws);
}

#[test]
fn ignore_files_secrets_and_hidden_files() {
    let dir = dir_with_good();
    let root = dir.path();
    fs::write(root.join(".gitignore"), "build/\n").unwrap();
    fs::write(root.join(".ctxzipignore"), "*.gen.py\n").unwrap();
    fs::create_dir(root.join("build")).unwrap();
    fs::write(root.join("build/out.py"), GOOD_PY).unwrap();
    fs::write(root.join("schema.gen.py"), GOOD_PY).unwrap();
    fs::write(root.join("server.key"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    fs::write(root.join("id_rsa"), "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    fs::write(root.join(".env"), "TOKEN=x\n").unwrap();
    fs::write(root.join("Cargo.lock"), "# lock\n").unwrap();
    fs::write(root.join("notes.md"), "# Notes\n\nSome text.\n").unwrap();

    let ws = walk(root);
    let paths: Vec<_> = ws.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["good.py", "notes.md"], "skipped: {:?}", ws.skipped);
    assert!(reason(&ws, "server.key").unwrap().contains("secrets"));
    assert!(reason(&ws, "id_rsa").unwrap().contains("secrets"));
    assert_eq!(reason(&ws, "Cargo.lock"), Some("generated lock file"));

    let with_hidden = WalkOptions {
        hidden: true,
        ignore_globs: vec!["notes.md".into()],
        ..WalkOptions::default()
    };
    let ws = index::read_once(root, &with_hidden).unwrap();
    let paths: Vec<_> = ws.files.iter().map(|f| f.path.as_str()).collect();
    assert!(!paths.contains(&"notes.md"), "extra ignore glob: {paths:?}");
    assert!(
        reason(&ws, ".env").unwrap().contains("secrets"),
        "hidden .env still refused"
    );
}

#[test]
fn secret_name_rules_are_not_bypassed() {
    let dir = dir_with_good();
    let root = dir.path();
    fs::create_dir(root.join("keys")).unwrap();
    fs::write(root.join("keys/SERVER.PEM"), "key\n").unwrap();
    fs::write(root.join("id_rsa"), "key\n").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("../id_rsa", root.join("keys/deploy_key.txt")).unwrap();
    fs::write(root.join("service-account.json"), "{}\n").unwrap();
    fs::write(root.join("Service-Account-prod.json"), "{}\n").unwrap();
    fs::write(root.join("netrc.txt"), "machine m login l password p\n").unwrap();
    fs::create_dir(root.join(".git")).unwrap();
    fs::write(
        root.join(".git/config"),
        "[remote]\nurl = https://u:tok@host/r\n",
    )
    .unwrap();
    fs::write(root.join(".git/hook.py"), GOOD_PY).unwrap();

    let with_hidden = WalkOptions {
        hidden: true,
        ..WalkOptions::default()
    };
    let ws = index::read_once(root, &with_hidden).unwrap();
    let paths: Vec<_> = ws.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["good.py"], "skipped: {:?}", ws.skipped);
    for secret in [
        "keys/SERVER.PEM",
        "service-account.json",
        "Service-Account-prod.json",
        "netrc.txt",
        "id_rsa",
    ] {
        assert!(
            reason(&ws, secret).is_some_and(|r| r.contains("secrets")),
            "{secret}: {:?}",
            ws.skipped
        );
    }
    #[cfg(unix)]
    assert!(
        reason(&ws, "keys/deploy_key.txt").is_some_and(|r| r.contains("secrets")),
        "a symlink is judged by its target's name: {:?}",
        ws.skipped
    );
    // `.git/` is not walked at all: not even listed as skipped.
    assert!(ws.skipped.iter().all(|s| !s.path.starts_with(".git")));
}

#[test]
fn secrets_in_file_text_are_redacted_in_place_unless_turned_off() {
    let dir = dir_with_good();
    let root = dir.path();
    let config = "import os\n\nAWS_ACCESS_KEY_ID = \"AKIAIOSFODNN7EXAMPLE\"\nKEY = \"\"\"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\"\"\"\n\n\ndef region():\n    return os.environ.get(\"REGION\", \"eu\")\n";
    fs::write(root.join("config.py"), config).unwrap();

    let ws = walk(root);
    let file = ws.files.iter().find(|f| f.path == "config.py").unwrap();
    assert!(
        file.text.contains("[REDACTED:aws-access-key]"),
        "{}",
        file.text
    );
    assert!(
        file.text.contains("[REDACTED:private-key]"),
        "{}",
        file.text
    );
    assert!(!file.text.contains("AKIAIOSFODNN7EXAMPLE") && !file.text.contains("MIIEv"));
    let rules: Vec<_> = file.redactions.iter().map(|r| (r.rule, r.line)).collect();
    assert_eq!(rules, [("aws-access-key", 3), ("private-key", 4)]);
    let warning = ws.warnings.iter().find(|w| w.path == "config.py").unwrap();
    assert!(warning.reason.contains("2 secrets redacted"), "{warning:?}");
    assert!(warning.reason.contains("--no-redact"), "{warning:?}");

    let plain = index::read_once(
        root,
        &WalkOptions {
            redact: false,
            ..WalkOptions::default()
        },
    )
    .unwrap();
    let original = plain.files.iter().find(|f| f.path == "config.py").unwrap();
    assert_eq!(original.text, config);
    assert!(original.redactions.is_empty());
    // Redaction moves no line: the chunks span the same lines either way.
    let lines = |f: &workspace::FileChunks| -> Vec<_> {
        f.chunks
            .iter()
            .map(|c| (c.display_name().to_owned(), c.start_line, c.end_line))
            .collect()
    };
    assert_eq!(lines(file), lines(original));
    assert_eq!(file.text.lines().count(), config.lines().count());
}

#[test]
fn missing_root_is_an_error_naming_the_path() {
    let err = index::read_once(Path::new("/no/such/dir"), &WalkOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

#[test]
fn syntax_errors_still_chunk() {
    let text = "def ok():\n    return 1\n\ndef broken(:\n    x = [\n\ndef after():\n    pass\n";
    let chunks = chunk_source(Lang::Python, text);
    common::assert_tiles("broken.py", text, &chunks);
    assert!(chunks.iter().any(|c| c.name.as_deref() == Some("ok")));
}

#[test]
fn incremental_edits_match_a_fresh_parse() {
    let mut text = String::from(
        "import os\n\nclass A:\n    def f(self):\n        return 1\n\n    def g(self):\n        return 2\n\ndef h():\n    pass\n",
    );
    let mut file = SourceFile::new(Lang::Python, text.clone());
    // A deterministic sequence of edits: inserts, deletes and replacements.
    let edits: Vec<(usize, usize, &str)> = vec![
        (0, 0, "# header\n"),
        (20, 20, "\n    def new(self, x):\n        return x * 2\n"),
        (5, 9, ""),
        (30, 45, "pass\n"),
        (0, 3, "import sys\nimport re"),
    ];
    for (start, len, insert) in edits {
        let start = start.min(text.len());
        let end = (start + len).min(text.len());
        let (start, end) = (floor_char(&text, start), floor_char(&text, end));
        file.edit(start, end, insert).unwrap();
        text.replace_range(start..end, insert);
        assert_eq!(file.text(), text);
        let fresh = SourceFile::new(Lang::Python, text.clone());
        assert_eq!(
            file.chunks(),
            fresh.chunks(),
            "after edit at {start}..{end}"
        );
        common::assert_tiles("edited.py", &text, file.chunks());
    }
    let err = file.edit(10, 5, "x").unwrap_err();
    assert!(err.to_string().contains("resend the whole file"));
}

fn floor_char(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
