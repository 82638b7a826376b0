//! One integration-test binary (every binary that links libtorch costs link time).

mod cli;
mod foundation;
mod model;

use std::path::PathBuf;

/// The pinned SmolLM2 GGUF, if it has been fetched (`just fetch`); tests that need it
/// print a visible skip message otherwise. CI fetches it first, so they run there.
pub fn pinned_model() -> Option<PathBuf> {
    let m = sinkrep_inputs::Manifest::pinned();
    let input = m.get("smollm2-135m-instruct").ok()?;
    let cache = sinkrep_inputs::Cache::default();
    if !cache.is_ready(input) {
        // Straight to stderr so the harness's output capture does not hide it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: pinned model not fetched (run `just fetch`)"
        );
        return None;
    }
    Some(cache.member_path(input, &input.members[0]))
}
