//! Real servers that the remote-scorer tests start on 127.0.0.1: llama-cpp-python's
//! OpenAI-compatible server over the test model, and the fault server of
//! `tests/data/remote/fault_server.py`. Also compiled into the binary's end-to-end tests
//! (`#[path]`), so both crates start servers one way.
//!
//! llama-cpp-python builds llama.cpp from source on install (minutes), so it is installed
//! once into a virtual environment under the cache directory, beside the models the tests
//! pull, and reused while its version stays [`LLAMA_CPP_PYTHON`].

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The llama-cpp-python release the live tests run.
pub const LLAMA_CPP_PYTHON: &str = "0.3.36";

/// The name the test servers serve their model under.
pub const SERVED_MODEL: &str = "smollm2";

/// Window of the live server: the local test scorer's, so both cut chunks alike.
pub const SERVER_N_CTX: usize = 2048;

/// The fault server's script (from the scoring crate's tests or the workspace root's).
pub fn fault_script() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["tests/data/remote", "scoring/tests/data/remote"]
        .iter()
        .map(|dir| manifest.join(dir).join("fault_server.py"))
        .find(|path| path.is_file())
        .expect("tests/data/remote/fault_server.py of the scoring crate")
}

/// The Python of the virtual environment holding llama-cpp-python's server, installed on
/// first use (`CMAKE_BUILD_PARALLEL_LEVEL` and `CMAKE_ARGS` from the environment apply).
pub fn llama_cpp_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let cache = ctxzip_scoring::models::cache_root().expect("a cache directory");
        let venv = cache
            .join("test-venvs")
            .join(format!("llama-cpp-python-{LLAMA_CPP_PYTHON}"));
        let python = venv.join("bin").join("python");
        let installed = |python: &Path| {
            Command::new(python)
                .args(["-c", "import llama_cpp.server"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if installed(&python) {
            return python;
        }
        eprintln!(
            "installing llama-cpp-python {LLAMA_CPP_PYTHON} into {} (builds llama.cpp: minutes)",
            venv.display()
        );
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "python3 -m venv {} failed", venv.display());
        let mut pip = Command::new(venv.join("bin").join("pip"));
        pip.args([
            "install",
            "--quiet",
            &format!("llama-cpp-python[server]=={LLAMA_CPP_PYTHON}"),
        ]);
        // The multimodal helper library is not needed to serve a text model.
        if std::env::var_os("CMAKE_ARGS").is_none() {
            pip.env("CMAKE_ARGS", "-DLLAVA_BUILD=OFF");
        }
        let status = pip.status().expect("pip runs");
        assert!(
            status.success() && installed(&python),
            "pip install llama-cpp-python[server]=={LLAMA_CPP_PYTHON} failed (needs a C++ compiler and cmake: scripts/setup installs them)"
        );
        python
    })
}

/// A server process on 127.0.0.1, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// The API base, e.g. `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// llama-cpp-python's server over `gguf`, served as [`SERVED_MODEL`], with the logits of
    /// every prompt token kept (`--logits_all`: the legacy `echo` + `logprobs` answer needs
    /// them) and a window of [`SERVER_N_CTX`].
    pub fn llama_cpp(gguf: &Path) -> Server {
        let python = llama_cpp_python();
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(gguf)
            .args([
                "--model_alias",
                SERVED_MODEL,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--n_ctx",
                &SERVER_N_CTX.to_string(),
                "--logits_all",
                "true",
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                "--verbose",
                "false",
            ])
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("llama-cpp-python's server starts");
        let mut server = Server {
            child: Some(child),
            port,
            base_url: format!("http://127.0.0.1:{port}/v1"),
            dir,
        };
        server.wait_listening(Duration::from_secs(180));
        server
    }

    /// The fault server with `args` (see its docstring); `stats` are written beside it.
    pub fn fault(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let stats = dir.path().join("stats.json");
        let child = Command::new("python3")
            .arg(fault_script())
            .arg(&port_file)
            .args(args)
            .arg("--stats")
            .arg(&stats)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the fault server");
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse::<u16>().expect("a port number");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the fault server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Server {
            child: Some(child),
            port,
            base_url: format!("http://127.0.0.1:{port}/v1"),
            dir,
        }
    }

    /// The fault server's counters: `requests`, `completions`, `faults`, `max_in_flight`.
    pub fn stats(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join("stats.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// Kills the server now (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_listening(&mut self, limit: Duration) {
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > limit {
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                panic!(
                    "the server on port {} did not start ({exited:?}):\n{log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
