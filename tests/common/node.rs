//! Node.js tools for the editor-client tests: running a command with its output kept for the
//! failure message, and `npm ci` only when a lock file changed since the last install.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs `program args` in `dir`; panics with its whole output when it fails. `needs` says
/// what the step needs (programs, network), for when it fails or cannot start.
pub fn run(dir: &Path, program: &str, args: &[&str], envs: &[(&str, &str)], needs: &str) -> String {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e} ({needs})"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`{program} {}` failed in {} ({}; {needs}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        dir.display(),
        output.status
    );
    eprintln!(
        "`{program} {}`: {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    stdout.into_owned()
}

/// The lock file a finished `npm ci` was run on, kept beside what it installed: a changed
/// lock, or an install cut short (no copy written), installs again.
const INSTALLED_LOCK: &str = "node_modules/.ctxzip-installed-lock.json";

/// `npm ci` of the package in `package_dir` into `install_dir` (the same folder, or one
/// under target/ that the package's package.json and lock file are copied to), only when
/// the lock file differs from the one last installed there: `npm ci` deletes and reinstalls
/// everything, which costs more than most tests. `npm` is the command that runs npm.
pub fn npm_ci(
    package_dir: &Path,
    install_dir: &Path,
    npm: &[&str],
    envs: &[(&str, &str)],
    needs: &str,
) {
    let lock = std::fs::read(package_dir.join("package-lock.json"))
        .unwrap_or_else(|e| panic!("read {}/package-lock.json: {e}", package_dir.display()));
    if std::fs::read(install_dir.join(INSTALLED_LOCK))
        .ok()
        .as_ref()
        == Some(&lock)
    {
        return;
    }
    if install_dir != package_dir {
        std::fs::create_dir_all(install_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", install_dir.display()));
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(package_dir.join(file), install_dir.join(file))
                .unwrap_or_else(|e| panic!("copy {file} to {}: {e}", install_dir.display()));
        }
    }
    let (program, first) = npm.split_first().expect("an npm command");
    let mut args = first.to_vec();
    args.extend(["ci", "--no-audit", "--no-fund"]);
    run(install_dir, program, &args, envs, needs);
    std::fs::write(install_dir.join(INSTALLED_LOCK), &lock)
        .unwrap_or_else(|e| panic!("write {}/{INSTALLED_LOCK}: {e}", install_dir.display()));
}
