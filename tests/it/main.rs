//! One integration-test binary (every binary that links libtorch costs link time).

mod cli;
mod foundation;
mod model;

use std::path::PathBuf;

/// The pinned SmolLM2 GGUF, if it has been fetched (`just fetch`); tests that need it
/// print a visible skip message otherwise. CI fetches it first, so they run there.
pub fn pinned_model() -> Option<PathBuf> {
    let path = sinkrep_analysis::pinned::model_path_if_present();
    if path.is_none() {
        // Straight to stderr so the harness's output capture does not hide it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: pinned model not fetched (run `just fetch`)"
        );
    }
    path
}
