//! Measures what keeping the one workspace index current costs when nothing says what
//! changed: the LSP's check before each compress (`Index::reload_changed`, a `stat` per
//! indexed file) and MCP's before each call (`Index::refresh`, the walk plus a `stat` per
//! file), on an unchanged tree.
//!
//! `cargo run --release --example index_stamps -p ctxzip-chunker -- DIR [ROUNDS]`

use std::path::PathBuf;
use std::time::Instant;

use ctxzip_chunker::index::Index;
use ctxzip_chunker::workspace::{self, WalkOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: index_stamps DIR [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(5).max(1);
    let index = Index::new(WalkOptions::default());
    let root = match index.add_root(&dir) {
        Ok(root) => root,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let first = match index.refresh(&root) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}: {} files, {} chunks; first index {build_ms:.0} ms",
        dir.display(),
        first.files,
        first.chunks
    );
    println!();
    println!("| check | rounds | median ms | max ms | files read again |");
    println!("|---|---|---|---|---|");
    let run = |what: &str, check: &dyn Fn() -> usize| {
        let mut times_ms = Vec::with_capacity(rounds);
        let mut read_again = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            read_again = check();
            times_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        times_ms.sort_by(f64::total_cmp);
        println!(
            "| {what} | {rounds} | {:.1} | {:.1} | {read_again} |",
            times_ms[times_ms.len() / 2],
            times_ms[times_ms.len() - 1]
        );
    };
    // Files written within 2 s of their read are read again until their time settles.
    std::thread::sleep(std::time::Duration::from_secs(2));
    run("LSP: stamps (`reload_changed`), nothing changed", &|| {
        index.reload_changed(None)
    });
    run("MCP: walk + stamps (`refresh`), nothing changed", &|| {
        index.refresh(&root).map_or(0, |r| r.rechunked)
    });
    // What the walk alone costs, for comparison: the rest of `refresh` is its stamps.
    run("the walk alone (`workspace::discover`)", &|| {
        workspace::discover(&root.path, &WalkOptions::default()).map_or(0, |_| 0)
    });
}
