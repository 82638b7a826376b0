//! The shared libtorch link set-up (build/link-torch.rs), then the fused CPU kernels of
//! csrc/fused.cpp (and csrc/cuda_load.cpp, the late loading of libtorch_cuda) compiled
//! against the headers of the libtorch torch-sys links: the `include/` folder next to its
//! `lib/` (the torch wheel's layout, and a libtorch zip's).
#[path = "../../build/link-torch.rs"]
mod link_torch;

fn main() {
    link_torch::main();
    println!("cargo:rerun-if-changed=csrc/fused.cpp");
    println!("cargo:rerun-if-changed=csrc/cuda_load.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("DEP_TCH_LIBTORCH_LIB: sinkrep-model depends on torch-sys directly");
    let root = std::path::Path::new(&lib).join("..");
    let include = root.join("include");
    // torch wheels since 2.7 and current libtorch zips use the C++11 ABI.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag("-O3")
        // Same bits from every clone of a kernel: no fused multiply-adds.
        .flag("-ffp-contract=off")
        .flag("-fno-math-errno")
        // Lets the clamps and selects vectorise; results are unchanged (no NaN traps are used).
        .flag("-fno-trapping-math")
        // 64-byte vector types in the baseline clone: their ABI note does not apply to
        // inline helpers.
        .flag("-Wno-psabi")
        .file("csrc/fused.cpp")
        .file("csrc/cuda_load.cpp")
        .compile("sinkrep_fused");
    // dlopen (csrc/cuda_load.cpp) lives in libc since glibc 2.34; older glibc has it in libdl.
    println!("cargo:rustc-link-lib=dl");
}
