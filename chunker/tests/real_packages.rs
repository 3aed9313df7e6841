//! The coverage invariant on real code no one here wrote: packages downloaded at test time
//! through their registries' own clients (pip, cargo, npm), chunked, and checked line by line.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ctxzip_chunker::index;
use ctxzip_chunker::workspace::WalkOptions;

fn downloads() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-packages");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn untar(archive: &Path, into: &Path) -> PathBuf {
    if !into.exists() {
        let partial = into.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).unwrap();
        run(Command::new("tar")
            .arg("xzf")
            .arg(archive)
            .arg("-C")
            .arg(&partial));
        fs::rename(&partial, into).unwrap();
    }
    into.to_path_buf()
}

fn python_sdist(name: &str, version: &str) -> PathBuf {
    let dir = downloads().join(format!("pypi-{name}-{version}"));
    let archive_dir = downloads().join("pypi-archives");
    let existing = |dir: &Path| {
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy().to_lowercase();
                n.starts_with(&name.replace('-', "_")) || n.starts_with(name)
            })
    };
    if existing(&archive_dir).is_none() {
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-q",
                "-d",
            ])
            .arg(&archive_dir)
            .arg(format!("{name}=={version}")));
    }
    untar(&existing(&archive_dir).expect("sdist downloaded"), &dir)
}

fn npm_package(spec: &str) -> PathBuf {
    let dir = downloads().join(format!("npm-{}", spec.replace(['@', '/'], "_")));
    if !dir.exists() {
        let archive_dir = downloads().join("npm-archives");
        fs::create_dir_all(&archive_dir).unwrap();
        let output = Command::new("npm")
            .args(["pack", "--silent", spec])
            .current_dir(&archive_dir)
            .output()
            .expect("npm runs");
        assert!(
            output.status.success(),
            "npm pack {spec}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let file = String::from_utf8_lossy(&output.stdout)
            .trim()
            .lines()
            .last()
            .unwrap()
            .to_owned();
        untar(&archive_dir.join(file), &dir);
    }
    dir
}

fn crates(deps: &[(&str, &str)]) -> PathBuf {
    let dir = downloads().join("crates-vendor");
    if !dir.join("vendor").exists() {
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(dir.join("src/lib.rs"), "").unwrap();
        let mut manifest = String::from(
            "[package]\nname = \"probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[workspace]\n[dependencies]\n",
        );
        for (name, version) in deps {
            manifest.push_str(&format!("{name} = \"={version}\"\n"));
        }
        fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        run(Command::new("cargo")
            .args(["vendor", "--quiet", "--versioned-dirs", "vendor.partial"])
            .current_dir(&dir));
        fs::rename(dir.join("vendor.partial"), dir.join("vendor")).unwrap();
    }
    dir.join("vendor")
}

/// Chunks a package and checks every file: coverage, and that every named definition's
/// header mentions its name.
fn check_package(root: &Path, min_files: usize) {
    let options = WalkOptions {
        hidden: true,
        ..WalkOptions::default()
    };
    let ws = index::read_once(root, &options).unwrap();
    let code_files: Vec<_> = ws.files.iter().filter(|f| f.lang.has_grammar()).collect();
    assert!(
        code_files.len() >= min_files,
        "{}: only {} code files",
        root.display(),
        code_files.len()
    );
    let mut named = 0;
    for file in &ws.files {
        common::assert_tiles(&file.path, &file.text, &file.chunks);
        for chunk in &file.chunks {
            let Some(name) = chunk.name.as_deref() else {
                continue;
            };
            if !(chunk.kind.is_callable() || chunk.kind.is_container()) {
                continue;
            }
            named += 1;
            let header = &file.text[chunk.header_range.clone()];
            assert!(
                header.contains(name),
                "{}:{}: header of {} {name:?} does not mention it:\n{header}",
                file.path,
                chunk.start_line,
                chunk.kind
            );
        }
    }
    assert!(
        named > min_files,
        "{}: only {named} named chunks",
        root.display()
    );
}

#[test]
fn python_sdists() {
    check_package(&python_sdist("requests", "2.32.3"), 15);
    check_package(&python_sdist("click", "8.1.7"), 15);
}

#[test]
fn rust_crates() {
    check_package(
        &crates(&[
            ("anyhow", "1.0.86"),
            ("regex-syntax", "0.8.4"),
            ("serde_json", "1.0.120"),
        ]),
        40,
    );
}

#[test]
fn npm_packages() {
    check_package(&npm_package("zod@3.23.8"), 20);
    check_package(&npm_package("dayjs@1.11.13"), 20);
}
