//! Shared build script for every crate whose binaries, tests or benches link libtorch.
//!
//! Two link questions (verified on these machines; README, "GPU / device bundle"):
//! 1. CUDA. rustc links with `--as-needed`, which drops `libtorch_cuda.so`; the CUDA
//!    wheel's libtorch.so exists only to NEED it. By default the binaries link
//!    libtorch_cpu and c10 only, and `sinkrep_model::cuda::load` opens libtorch_cuda.so
//!    at run time when an NVIDIA driver is present: a process on a machine without a GPU
//!    then never maps cuBLAS, cuDNN and the CUDA runtime (0.15 s of start-up, ~390 MB).
//!    `SINKREP_LINK_TORCH_CUDA=1` (the device bundle, scripts/device/bundle.sh) links it
//!    at build time as before: `--no-as-needed -ltorch`.
//! 2. The binary has no RUNPATH, so it would only start with LD_LIBRARY_PATH set.
//!    An rpath to the libtorch directory fixes that (and is where the late `dlopen` of
//!    libtorch_cuda.so looks).
//!
//! `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys and reaches only crates that depend on
//! `torch-sys` directly, so each such crate lists it in `[dependencies]`.
//!
//! `SINKREP_EXTRA_RPATH` (colon-separated) puts more folders in the RUNPATH, searched
//! before the build's own libtorch: the device bundle (scripts/device/bundle.sh) names
//! `$ORIGIN` and the device image's torch/lib there.
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=SINKREP_EXTRA_RPATH");
    println!("cargo:rerun-if-env-changed=SINKREP_LINK_TORCH_CUDA");
    println!("cargo:rustc-env=SINKREP_TCH_VERSION={}", tch_version());
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib) => {
            let extra = std::env::var("SINKREP_EXTRA_RPATH").unwrap_or_default();
            for dir in extra.split(':').filter(|d| !d.is_empty()) {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            }
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
            if std::env::var("SINKREP_LINK_TORCH_CUDA").is_ok_and(|v| v == "1") {
                println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
                println!("cargo:rustc-link-arg=-ltorch");
            }
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

/// The tch version Cargo.lock resolved (0.26.0 normally, 0.24.0 in the device bundle):
/// the lock file is the nearest one above this crate, and is final when build scripts run.
fn tch_version() -> String {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lock = std::path::Path::new(&manifest)
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|p| p.is_file());
    let Some(lock) = lock else {
        return "unknown".into();
    };
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"tch\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = ")) {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "unknown".into()
}
