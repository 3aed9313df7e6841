//! Real servers that the remote-scorer tests start on 127.0.0.1: llama-cpp-python's
//! OpenAI-compatible server over the test model (which ctxzip must refuse, see
//! `ctxzip_scoring::remote`), the reference server of `tests/data/remote/reference_server.py`
//! (llama.cpp through llama-cpp-python's library, answering as vLLM does), and the fault
//! server of `tests/data/remote/fault_server.py`. Also compiled into the binary's end-to-end tests
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

/// A file of the scoring crate's `tests/data/remote/` (from its tests or the workspace
/// root's).
pub fn data_file(name: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["tests/data/remote", "scoring/tests/data/remote"]
        .iter()
        .map(|dir| manifest.join(dir).join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} in the scoring crate's tests/data/remote"))
}

/// The Python of the virtual environment holding llama-cpp-python's server, installed on
/// first use (`CMAKE_BUILD_PARALLEL_LEVEL` and `CMAKE_ARGS` from the environment apply).
pub fn llama_cpp_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let cache = ctxzip_scoring::models::cache_root().expect("a cache directory");
        let venv = cache
            .join("test-venvs")
            .join(format!("llama-cpp-python-{LLAMA_CPP_PYTHON}-portable"));
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
        // Built here, not taken from pip's wheel cache, which may hold a build made with
        // other flags.
        pip.args([
            "install",
            "--quiet",
            "--no-cache-dir",
            &format!("llama-cpp-python[server]=={LLAMA_CPP_PYTHON}"),
        ]);
        // The multimodal helper library is not needed to serve a text model. A native build
        // (the default) compiles llama.cpp's AMX kernels on a CPU that has AMX, and in this
        // version they crash the server on its first matrix product (SIGSEGV in
        // `ggml_backend_amx_mul_mat`, seen on a Xeon with AMX): the portable kernels, as
        // ctxzip's own tests use, score the same.
        if std::env::var_os("CMAKE_ARGS").is_none() {
            pip.env("CMAKE_ARGS", "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF");
        }
        // Every core unless told otherwise (a make build runs one job by default).
        if std::env::var_os("CMAKE_BUILD_PARALLEL_LEVEL").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            pip.env("CMAKE_BUILD_PARALLEL_LEVEL", cores.to_string());
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
        let mut command = Command::new("python3");
        command.arg(data_file("fault_server.py"));
        Server::with_port_file(command, args, Duration::from_secs(30))
    }

    /// The reference server (`tests/data/remote/reference_server.py`): llama.cpp through
    /// llama-cpp-python's library over `gguf`, answering with vLLM's `prompt_logprobs`, as
    /// [`SERVED_MODEL`] with a window of [`SERVER_N_CTX`].
    pub fn reference(gguf: &Path) -> Server {
        let mut command = Command::new(llama_cpp_python());
        command.arg(data_file("reference_server.py"));
        let n_ctx = SERVER_N_CTX.to_string();
        let model = gguf.to_str().expect("a UTF-8 model path");
        let args = ["--model", model, "--alias", SERVED_MODEL, "--n-ctx", &n_ctx];
        Server::with_port_file(command, &args, Duration::from_secs(180))
    }

    /// Starts `command PORT_FILE args --stats FILE` and waits for the port it writes.
    fn with_port_file(mut command: Command, args: &[&str], limit: Duration) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut child = command
            .arg(&port_file)
            .args(args)
            .arg("--stats")
            .arg(dir.path().join("stats.json"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 runs");
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse::<u16>().expect("a port number");
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                panic!("the server did not start ({exited:?}):\n{log}");
            }
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
