//! Shared build script for every crate whose binaries, tests or benches link libtorch.
//!
//! Two link problems (see ../shared/tech-notes.md, verified on these machines):
//! 1. rustc links with `--as-needed`, which drops `libtorch_cuda.so`, so CUDA is never
//!    seen even on a GPU machine. `--no-as-needed -ltorch` keeps it (libtorch.so
//!    depends on libtorch_cuda.so in the CUDA wheel).
//! 2. The binary has no RUNPATH, so it would only start with LD_LIBRARY_PATH set.
//!    An rpath to the libtorch directory fixes that.
//!
//! `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys and reaches only crates that depend on
//! `torch-sys` directly, so each such crate lists it in `[dependencies]`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib) => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
            // The libtorch version, from the torch package whose lib/ we link
            // (`torch/version.py` next to `torch/lib`), e.g. "2.13.0+cu130".
            let version_py = std::path::Path::new(&lib).join("../version.py");
            println!("cargo:rerun-if-changed={}", version_py.display());
            let version = std::fs::read_to_string(&version_py)
                .ok()
                .and_then(|py| {
                    py.lines()
                        .find(|l| l.starts_with("__version__"))
                        .and_then(|l| l.split('\'').nth(1).map(str::to_string))
                })
                .unwrap_or_else(|| "unknown".into());
            println!("cargo:rustc-env=SINKREP_LIBTORCH_VERSION={version}");
        }
        Err(_) => {
            println!(
                "cargo:warning=DEP_TCH_LIBTORCH_LIB not set: add torch-sys as a direct dependency"
            );
            println!("cargo:rustc-env=SINKREP_LIBTORCH_VERSION=unknown");
        }
    }
}
