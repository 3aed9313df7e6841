//! Records how llama.cpp's CPU kernels were compiled, so that `build_info()` can say so and
//! `Scorer::new` can refuse, with an error that names the fix, to run on a CPU that lacks an
//! instruction set they use (instead of the process dying of SIGILL in the first decode).
//!
//! The decision is llama-cpp-sys-2's and ggml's, read here the way they make it:
//! - `-C target-cpu=native`: llama-cpp-sys-2 turns on `GGML_NATIVE` (`-march=native`), so the
//!   kernels use what the build machine has; rustc's target features name it.
//! - otherwise `GGML_NATIVE` is off and llama-cpp-sys-2 turns on the ggml option of each x86
//!   feature rustc targets. ggml's CMake then defaults SSE4.2, AVX, AVX2, BMI2, FMA and F16C to
//!   on unless it is cross-compiling or `SOURCE_DATE_EPOCH` is set (`INS_ENB`); a `GGML_<X>`
//!   environment variable (passed through by llama-cpp-sys-2) can turn one of those off.
//!   So a plain `cargo build` needs an x86-64-v3 CPU (AVX2, FMA, F16C: Haswell, Zen or later).

/// The x86 extensions ggml has an option for, as rustc names them, with that option.
const X86_OPTIONS: &[(&str, &str)] = &[
    ("sse4.2", "GGML_SSE42"),
    ("avx", "GGML_AVX"),
    ("avx2", "GGML_AVX2"),
    ("bmi2", "GGML_BMI2"),
    ("fma", "GGML_FMA"),
    ("f16c", "GGML_F16C"),
    ("avxvnni", "GGML_AVX_VNNI"),
    ("avx512f", "GGML_AVX512"),
    ("avx512vbmi", "GGML_AVX512_VBMI"),
    ("avx512vnni", "GGML_AVX512_VNNI"),
    ("avx512bf16", "GGML_AVX512_BF16"),
];

/// The options ggml's CMake turns on by default when `GGML_NATIVE` is off (`INS_ENB`).
const GGML_DEFAULT_ON: &[&str] = &["sse4.2", "avx", "avx2", "bmi2", "fma", "f16c"];

fn main() {
    for var in ["CARGO_ENCODED_RUSTFLAGS", "SOURCE_DATE_EPOCH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for (_, option) in X86_OPTIONS {
        println!("cargo:rerun-if-env-changed={option}");
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let target_cpu = flags
        .split('\x1f')
        .find_map(|flag| flag.split("target-cpu=").nth(1))
        .unwrap_or("")
        .to_string();
    println!("cargo:rustc-env=CTXZIP_TARGET_CPU={target_cpu}");

    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let x86 = matches!(env("CARGO_CFG_TARGET_ARCH").as_str(), "x86_64" | "x86");
    let rustc_features = env("CARGO_CFG_TARGET_FEATURE");
    let rustc_has = |feature: &str| rustc_features.split(',').any(|f| f == feature);
    let cross_compiling = env("HOST") != env("TARGET");
    let ggml_defaults = target_cpu != "native"
        && !cross_compiling
        && std::env::var_os("SOURCE_DATE_EPOCH").is_none();
    let turned_off = |option: &str| {
        matches!(
            env(option).to_ascii_uppercase().as_str(),
            "OFF" | "0" | "FALSE" | "NO" | "N"
        )
    };
    let kernel_features: Vec<&str> = X86_OPTIONS
        .iter()
        .filter(|(feature, option)| {
            x86 && (rustc_has(feature)
                || ggml_defaults && GGML_DEFAULT_ON.contains(feature) && !turned_off(option))
        })
        .map(|(feature, _)| *feature)
        .collect();
    println!(
        "cargo:rustc-env=CTXZIP_KERNEL_FEATURES={}",
        kernel_features.join(",")
    );
}
