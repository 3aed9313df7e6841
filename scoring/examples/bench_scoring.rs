//! The scoring benchmark without the CLI (`ctxzip bench scoring` runs the same code):
//!
//! `cargo run --release -p ctxzip-scoring --example bench_scoring -- [--write FILE] [CHUNKS]
//! [THREADS] [MODEL...]`

use ctxzip_scoring::{bench, models};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let write = match args.iter().position(|a| a == "--write") {
        Some(i) if i + 1 < args.len() => {
            let path = args.remove(i + 1);
            args.remove(i);
            Some(std::path::PathBuf::from(path))
        }
        _ => None,
    };
    let n_chunks = args.first().and_then(|a| a.parse().ok()).unwrap_or(16);
    let n_threads = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(ctxzip_scoring::engine::default_threads);
    let specs: Vec<&str> = if args.len() > 2 {
        args[2..].iter().map(String::as_str).collect()
    } else {
        models::CATALOG.iter().map(|m| m.name).collect()
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let chunks = bench::code_chunks(&dir, n_chunks, 40)?;
    let mut reports = Vec::new();
    for spec in specs {
        let model = models::resolve(Some(spec), false)?;
        eprintln!("benchmarking {} ...", model.name);
        reports.push(bench::run_model(&model, &chunks, n_threads)?);
    }
    let table = bench::markdown(&reports);
    print!("{table}");
    if let Some(path) = write {
        let command = format!(
            "cargo run --release -p ctxzip-scoring --example bench_scoring -- {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        );
        bench::write_section(&path, &format!("Measured by `{command}`.\n\n{table}"))?;
    }
    Ok(())
}
