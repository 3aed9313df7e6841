//! Measures the secret rules on a real tree: what the detection costs per byte (it runs on
//! every file the walk reads) and what it flags, for reading by eye (false positives in
//! real code).
//!
//! `cargo run --example scan_secrets -p ctxzip-chunker -- DIR [--show N]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ctxzip_chunker::secrets;
use ctxzip_chunker::workspace::{self, WalkOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next().map(PathBuf::from) else {
        eprintln!("usage: scan_secrets DIR [--show N]");
        std::process::exit(2);
    };
    let show: usize = match (args.next().as_deref(), args.next()) {
        (Some("--show"), Some(n)) => n.parse().unwrap_or(20),
        _ => 20,
    };
    let options = WalkOptions {
        hidden: true,
        ..WalkOptions::default()
    };
    let (paths, _) = match workspace::discover(&root, &options) {
        Ok(found) => found,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    let (mut n_files, mut n_bytes) = (0usize, 0usize);
    let mut spent = Duration::ZERO;
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    let mut shown = 0;
    for path in &paths {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        if bytes.len() as u64 > options.max_file_bytes {
            continue;
        }
        let Ok((text, _)) = workspace::decode(bytes) else {
            continue;
        };
        n_files += 1;
        n_bytes += text.len();
        let started = Instant::now();
        let found = secrets::find(&text);
        spent += started.elapsed();
        for (range, rule) in found {
            *by_rule.entry(rule).or_default() += 1;
            if shown < show {
                shown += 1;
                let line = text[..range.start].matches('\n').count() + 1;
                let value: String = text[range].chars().take(60).collect();
                println!(
                    "{}:{line}: {rule}: {value:?}",
                    workspace::relative(&root, path)
                );
            }
        }
    }
    println!(
        "{n_files} files, {:.1} MB: secrets::find {:.0} ms ({:.0} MB/s); matches by rule: {by_rule:?}",
        n_bytes as f64 / 1e6,
        spent.as_secs_f64() * 1000.0,
        n_bytes as f64 / 1e6 / spent.as_secs_f64().max(1e-9)
    );
}
