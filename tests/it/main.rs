//! One integration-test binary (every binary that links libtorch costs link time).

mod cli;
mod foundation;
mod from_runs;
mod hf;
mod model;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `sinkrep` binary this test build made.
pub fn sinkrep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sinkrep"))
        .args(args)
        .output()
        .expect("run sinkrep")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The pinned SmolLM2 GGUF, if it has been fetched (`just fetch`); tests that need it
/// print a visible skip message otherwise. CI fetches it first, so they run there.
pub fn pinned_model() -> Option<PathBuf> {
    or_skip(
        sinkrep_analysis::pinned::model_path_if_present(),
        "pinned model",
    )
}

/// The pinned Gemma-3 GGUF, if it has been fetched (`just fetch`), like `pinned_model`.
pub fn gemma_model() -> Option<PathBuf> {
    or_skip(
        sinkrep_analysis::pinned::gemma_path_if_present(),
        "pinned Gemma-3 model",
    )
}

fn or_skip(path: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    if path.is_none() {
        // Straight to stderr so the harness's output capture does not hide it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {what} not fetched (run `just fetch`)"
        );
    }
    path
}
