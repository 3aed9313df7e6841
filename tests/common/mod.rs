//! Shared by the integration tests that run the `ctxzip` binary.

// Each test crate compiles this module and uses a part of it.
#[allow(dead_code)]
pub mod lsp;
#[allow(dead_code)]
pub mod mcp_client;

/// A score cache of this test process's own (for `CTXZIP_CACHE`): results cached by earlier
/// runs would turn "the model did work" assertions into cache hits.
pub fn test_cache() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ctxzip-test-cache-{}.sqlite", std::process::id()))
}
