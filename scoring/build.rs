//! Records the `-C target-cpu` rustc was given, so `build_info()` can say whether llama.cpp
//! was built for this CPU: llama-cpp-sys-2's build script turns on `GGML_NATIVE` exactly when
//! the same flag says `native`.

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let target_cpu = flags
        .split('\x1f')
        .find_map(|flag| flag.split("target-cpu=").nth(1))
        .unwrap_or("");
    println!("cargo:rustc-env=CTXZIP_TARGET_CPU={target_cpu}");
}
