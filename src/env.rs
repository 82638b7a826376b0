//! `sinkrep env`: what this binary runs on.

use anyhow::Result;
use serde::Serialize;
use std::process::Command;

/// libtorch version, read at build time from the headers torch-sys compiled against
/// (see build/link-torch.rs).
pub const LIBTORCH_VERSION: &str = env!("SINKREP_LIBTORCH_VERSION");

#[derive(Serialize)]
pub struct EnvInfo {
    pub sinkrep_version: &'static str,
    pub git_revision: String,
    pub git_dirty: Option<bool>,
    pub libtorch_version: &'static str,
    pub tch_version: &'static str,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cuda_device_name: Option<String>,
    pub threads: i32,
    /// `model name` of /proc/cpuinfo: absolute speeds and low bits differ between CPUs.
    pub cpu_model: String,
    /// The ISA features that change kernels (and so low bits and speed): amx_bf16,
    /// avx512_bf16, avx512f, avx2, present or not.
    pub cpu_isa: Vec<String>,
    pub cache_root: String,
    pub inputs_dir: String,
    pub venv_dir: String,
}

pub use sinkrep_inputs::python;

/// Git revision and dirty flag of the source tree this binary was built from, if it is
/// still there.
pub fn git_state() -> (String, Option<bool>) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let rev = Command::new("git")
        .args(["-C", dir, "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dirty = Command::new("git")
        .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| !o.stdout.is_empty());
    (rev.unwrap_or_else(|| "unknown".into()), dirty)
}

fn cuda_device_name() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i", "0"])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// (model name, ISA features of interest) from /proc/cpuinfo; "unknown" elsewhere.
pub fn cpu_info() -> (String, Vec<String>) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = flags.split_whitespace().collect();
    let isa = ["amx_bf16", "avx512_bf16", "avx512f", "avx2"]
        .into_iter()
        .filter(|f| have.contains(f))
        .map(String::from)
        .collect();
    (field("model name").unwrap_or_else(|| "unknown".into()), isa)
}

pub fn collect() -> EnvInfo {
    let (cpu_model, cpu_isa) = cpu_info();
    let cache = sinkrep_inputs::Cache::default();
    let (git_revision, git_dirty) = git_state();
    let cuda_available = tch::Cuda::is_available();
    EnvInfo {
        sinkrep_version: env!("CARGO_PKG_VERSION"),
        git_revision,
        git_dirty,
        libtorch_version: LIBTORCH_VERSION,
        tch_version: "0.26.0",
        cuda_available,
        cuda_device_count: tch::Cuda::device_count(),
        cuda_device_name: if cuda_available {
            cuda_device_name()
        } else {
            None
        },
        threads: tch::get_num_threads(),
        cpu_model,
        cpu_isa,
        cache_root: cache.root.display().to_string(),
        inputs_dir: cache.inputs_dir().display().to_string(),
        venv_dir: cache.venv_dir(torch_base_version()).display().to_string(),
    }
}

pub fn print(json: bool) -> Result<()> {
    let info = collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let dirty = match info.git_dirty {
        Some(true) => " (dirty)",
        _ => "",
    };
    println!("sinkrep   {}", info.sinkrep_version);
    println!("git       {}{dirty}", info.git_revision);
    println!(
        "libtorch  {} (tch {})",
        info.libtorch_version, info.tch_version
    );
    match &info.cuda_device_name {
        Some(name) => println!(
            "cuda      yes, {} device(s), {name}",
            info.cuda_device_count
        ),
        None if info.cuda_available => {
            println!("cuda      yes, {} device(s)", info.cuda_device_count)
        }
        None => println!("cuda      no"),
    }
    println!("threads   {}", info.threads);
    println!("cpu       {} ({})", info.cpu_model, info.cpu_isa.join(", "));
    println!("cache     {}", info.cache_root);
    println!("inputs    {}", info.inputs_dir);
    println!("venv      {}", info.venv_dir);
    Ok(())
}

/// "2.13.0" of "2.13.0+cu130": the key of the venv folder.
pub fn torch_base_version() -> &'static str {
    LIBTORCH_VERSION
        .split('+')
        .next()
        .unwrap_or(LIBTORCH_VERSION)
}
