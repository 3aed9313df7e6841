//! Shared setup: one scorer per test binary over the test model, pulled if missing.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

pub mod scratch;
pub mod servers;

use ctxzip_scoring::models;
use ctxzip_scoring::{ChunkInput, ResolvedModel, Scorer, ScorerConfig};

/// `CTXZIP_TEST_MODEL` (a catalog name or a .gguf path), else the small catalog model.
pub fn test_model() -> &'static ResolvedModel {
    static MODEL: OnceLock<ResolvedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let spec = std::env::var("CTXZIP_TEST_MODEL").unwrap_or_else(|_| "smollm2-135m".into());
        models::resolve(Some(&spec), false).expect("the test model resolves (pulled if missing)")
    })
}

/// A scratch directory that lives as long as the test binary ([`scratch::process_dir`]).
pub fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch::process_dir("scoring"))
}

/// `CTXZIP_TEST_GPU_LAYERS=N` runs these tests with N layers offloaded (scripts/test-vulkan
/// sets it, for a GPU build); then a scorer that finds no GPU fails the tests instead of
/// passing them on the CPU.
pub fn gpu_layers() -> u32 {
    std::env::var("CTXZIP_TEST_GPU_LAYERS").map_or(0, |n| {
        n.parse()
            .expect("CTXZIP_TEST_GPU_LAYERS is a number of layers")
    })
}

pub fn config() -> ScorerConfig {
    let mut config = ScorerConfig::new(test_model());
    config.n_ctx_tokens = 2048;
    config.disk_cache_path = Some(scratch_dir().join("cache.sqlite"));
    config.gpu_layers = gpu_layers();
    config
}

/// One loaded scorer shared by the tests of a binary.
pub fn scorer() -> &'static Scorer {
    static SCORER: OnceLock<Scorer> = OnceLock::new();
    SCORER.get_or_init(|| {
        let scorer = Scorer::new(config()).expect("the test model loads");
        let placement = scorer.placement();
        if gpu_layers() > 0 {
            assert!(
                placement.gpu.is_some() && placement.gpu_layers > 0,
                "CTXZIP_TEST_GPU_LAYERS is set but nothing was offloaded: {placement}"
            );
        }
        scorer
    })
}

pub fn chunk(text: &str) -> ChunkInput {
    ChunkInput {
        hash: blake3_u64(text),
        text: text.to_string(),
    }
}

fn blake3_u64(text: &str) -> u64 {
    // FNV-1a: any content hash will do for tests.
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A GGUF header naming `architecture`, with no tensors.
pub fn header_only(architecture: &str) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
    let key = b"general.architecture";
    out.extend_from_slice(&(key.len() as u64).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(architecture.len() as u64).to_le_bytes());
    out.extend_from_slice(architecture.as_bytes());
    out
}
