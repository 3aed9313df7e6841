//! Real packages fetched through their registries' own clients (pip, npm, cargo) into a
//! cache directory, for benchmarks that need realistic repositories.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The registries [`fetch`] knows, as a spec's prefix.
const REGISTRIES: [&str; 3] = ["pypi", "npm", "crates"];

/// A spec's registry and package (`pypi:requests==2.32.3` → `("pypi", "requests==2.32.3")`),
/// or an error naming the prefixes [`fetch`] knows.
pub fn split_spec(spec: &str) -> Result<(&str, &str)> {
    match spec.split_once(':') {
        Some((registry, package)) if REGISTRIES.contains(&registry) => Ok((registry, package)),
        Some((registry, _)) => bail!("unknown registry {registry:?}: use pypi:, npm: or crates:"),
        None => bail!("package {spec:?} needs a registry prefix: pypi:, npm: or crates:"),
    }
}

/// A package to fetch: `pypi:requests==2.32.3`, `npm:zod@3.23.8`, `crates:anyhow@1.0.86`.
pub fn fetch(spec: &str, cache: &Path) -> Result<PathBuf> {
    let (registry, package) = split_spec(spec)?;
    let dir = cache.join(spec.replace([':', '@', '/', '='], "_"));
    if dir.exists() {
        return Ok(dir);
    }
    let partial = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    let download = partial.join("download");
    fs::create_dir_all(&download)?;
    match registry {
        "pypi" => {
            run(Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-d",
                ])
                .arg(&download)
                .arg(package))?;
            untar_single(&download, &partial.join("src"))?;
        }
        "npm" => {
            run(Command::new("npm")
                .args(["pack", "--silent", package])
                .current_dir(&download))?;
            untar_single(&download, &partial.join("src"))?;
        }
        "crates" => {
            let (name, version) = package
                .split_once('@')
                .with_context(|| format!("crate {package:?} needs a version: name@1.2.3"))?;
            fs::create_dir_all(download.join("src"))?;
            fs::write(download.join("src/lib.rs"), "")?;
            fs::write(
                download.join("Cargo.toml"),
                format!(
                    "[package]\nname = \"fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[workspace]\n[dependencies]\n{name} = \"={version}\"\n"
                ),
            )?;
            run(Command::new("cargo")
                .args(["vendor", "--quiet", "--versioned-dirs", "vendor"])
                .current_dir(&download))?;
            fs::rename(
                download.join("vendor").join(format!("{name}-{version}")),
                partial.join("src"),
            )?;
        }
        other => unreachable!("split_spec knows no registry {other:?}"),
    }
    fs::remove_dir_all(&download)?;
    fs::rename(partial.join("src"), &dir)?;
    let _ = fs::remove_dir_all(&partial);
    Ok(dir)
}

fn run(cmd: &mut Command) -> Result<()> {
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Unpacks the one archive in `dir` into `into`, dropping its single top-level directory.
fn untar_single(dir: &Path, into: &Path) -> Result<()> {
    let archive = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("gz"))
        .with_context(|| format!("no archive downloaded into {}", dir.display()))?;
    fs::create_dir_all(into)?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("--strip-components=1")
        .arg("-C")
        .arg(into))
}
