//! `sinkrep env`: what this binary runs on.

use anyhow::{Context, Result};
use serde::Serialize;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use crate::analyze::DeviceArg;

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
    /// How libtorch_cuda came into the process, or why not (`sinkrep_model::cuda`).
    pub cuda_library: String,
    pub cuda_device_count: i64,
    pub cuda_device_name: Option<String>,
    pub cudnn_available: bool,
    pub threads: i32,
    /// MKL's reproducibility mode (`MKL_CBWR`; `analyze`, `intervene`, `export` and `env`
    /// set `AUTO,STRICT` unless told otherwise, `sinkrep_model::blas`; `run` leaves it).
    pub mkl_cbwr: Option<String>,
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
/// still there. A device bundle is built from a copy of the sources and runs where they
/// are not, so its build records them (`SINKREP_BUILD_GIT_REV`, `SINKREP_BUILD_GIT_DIRTY`).
pub fn git_state() -> (String, Option<bool>) {
    if let Some(rev) = option_env!("SINKREP_BUILD_GIT_REV") {
        let dirty = option_env!("SINKREP_BUILD_GIT_DIRTY").map(|d| d == "true");
        return (rev.to_string(), dirty);
    }
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

pub use sinkrep_runner::cpu_info;

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
        tch_version: env!("SINKREP_TCH_VERSION"),
        cuda_available,
        cuda_library: sinkrep_model::cuda::load().describe(),
        cuda_device_count: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cuda_device_name: if cuda_available {
            cuda_device_name()
        } else {
            None
        },
        threads: tch::get_num_threads(),
        mkl_cbwr: std::env::var("MKL_CBWR").ok(),
        cpu_model,
        cpu_isa,
        cache_root: cache.root.display().to_string(),
        inputs_dir: cache.inputs_dir().display().to_string(),
        venv_dir: cache.venv_dir(torch_base_version()).display().to_string(),
    }
}

/// `sinkrep env` options.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Emit JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also measure the matmul rate on --device, f32 and bf16 (n x n products, n = 8192
    /// on CUDA, 1024 on CPU; best and median of 7 samples of 8 products after 3
    /// warm-ups), and on CUDA the error of an f32 product against f64, which shows
    /// whether TF32 is on.
    #[arg(long)]
    pub matmul_peak: bool,
    /// Device for --matmul-peak.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Matrix size for --matmul-peak (default 8192 on CUDA, 1024 on CPU).
    #[arg(long, value_name = "N", requires = "matmul_peak", value_parser = clap::value_parser!(i64).range(1..=65536))]
    pub matmul_n: Option<i64>,
}

/// One measured matmul rate.
#[derive(Debug, Serialize)]
pub struct MatmulPeak {
    pub device: String,
    pub dtype: &'static str,
    pub n: i64,
    pub gflops_best: f64,
    pub gflops_median: f64,
}

/// What `--matmul-peak` reports.
#[derive(Debug, Serialize)]
pub struct MatmulReport {
    pub rates: Vec<MatmulPeak>,
    /// CUDA only: max |C_f32 - C_f64| / max |C_f64| of a 1024^3 product of the same
    /// f32 inputs. About 1e-6 in f32; about 1e-3 when TF32 rounds the inputs.
    pub f32_rel_error_vs_f64: Option<f64>,
}

impl MatmulReport {
    /// TF32 rounds inputs to a 10-bit mantissa (relative error ~1e-3); plain f32 stays
    /// near 1e-6, so 1e-4 separates the two.
    pub fn tf32_suspected(&self) -> Option<bool> {
        self.f32_rel_error_vs_f64.map(|e| e > 1e-4)
    }
}

#[derive(Serialize)]
struct EnvJson {
    #[serde(flatten)]
    info: EnvInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    matmul_peak: Option<MatmulReport>,
}

fn device_label(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

fn sync(d: Device) {
    if let Device::Cuda(i) = d {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Rate of n x n x n products of `kind` on `device` (2 n^3 flops each), in GFLOP/s.
fn matmul_rate(device: Device, kind: Kind, n: i64) -> Result<MatmulPeak> {
    let a = Tensor::f_randn([n, n], (kind, device))?;
    let b = Tensor::f_randn([n, n], (kind, device))?;
    for _ in 0..3 {
        let _ = a.f_mm(&b)?;
    }
    sync(device);
    let mut rates = Vec::with_capacity(7);
    for _ in 0..7 {
        let t0 = Instant::now();
        for _ in 0..8 {
            let _ = a.f_mm(&b)?;
        }
        sync(device);
        rates.push(2.0 * (n as f64).powi(3) * 8.0 / t0.elapsed().as_secs_f64() / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    Ok(MatmulPeak {
        device: device_label(device),
        dtype: match kind {
            Kind::BFloat16 => "bf16",
            _ => "f32",
        },
        n,
        gflops_best: rates[6],
        gflops_median: rates[3],
    })
}

/// The matmul rates of `device` for n x n products (`n`: 8192 on CUDA, 1024 on CPU when
/// None) and, on CUDA, the f32-vs-f64 error (see `MatmulReport`).
pub fn matmul_peak(device: Device, n: Option<i64>) -> Result<MatmulReport> {
    let n = n.unwrap_or(if device.is_cuda() { 8192 } else { 1024 });
    let mut rates = Vec::new();
    for kind in [Kind::Float, Kind::BFloat16] {
        rates.push(
            matmul_rate(device, kind, n)
                .with_context(|| format!("{kind:?} matmul on {}", device_label(device)))?,
        );
    }
    let f32_rel_error_vs_f64 = if device.is_cuda() {
        let a = Tensor::f_randn([1024, 1024], (Kind::Float, device))?;
        let b = Tensor::f_randn([1024, 1024], (Kind::Float, device))?;
        let exact = a.to_kind(Kind::Double).f_mm(&b.to_kind(Kind::Double))?;
        let err = (a.f_mm(&b)?.to_kind(Kind::Double) - &exact)
            .abs()
            .max()
            .double_value(&[]);
        Some(err / exact.abs().max().double_value(&[]))
    } else {
        None
    };
    Ok(MatmulReport {
        rates,
        f32_rel_error_vs_f64,
    })
}

pub fn print(a: &EnvArgs) -> Result<()> {
    let info = collect();
    let peak = if a.matmul_peak {
        Some(matmul_peak(a.device.resolve()?, a.matmul_n)?)
    } else {
        None
    };
    if a.json {
        let out = EnvJson {
            info,
            matmul_peak: peak,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
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
        None => println!("cuda      no ({})", info.cuda_library),
    }
    if info.cuda_available {
        println!(
            "cudnn     {}",
            if info.cudnn_available { "yes" } else { "no" }
        );
    }
    println!(
        "threads   {} (MKL_CBWR {})",
        info.threads,
        info.mkl_cbwr.as_deref().unwrap_or("unset")
    );
    println!("cpu       {} ({})", info.cpu_model, info.cpu_isa.join(", "));
    println!("cache     {}", info.cache_root);
    println!("inputs    {}", info.inputs_dir);
    println!("venv      {}", info.venv_dir);
    if let Some(p) = &peak {
        for r in &p.rates {
            println!(
                "matmul    {} {} n={}: {:.1} GFLOP/s best, {:.1} median",
                r.device, r.dtype, r.n, r.gflops_best, r.gflops_median
            );
        }
        if let (Some(e), Some(tf32)) = (p.f32_rel_error_vs_f64, p.tf32_suspected()) {
            let what = if tf32 {
                "TF32 ON: f32 products are rounded"
            } else {
                "TF32 off"
            };
            println!("f32 err   {e:.1e} relative to f64 ({what})");
        }
    }
    Ok(())
}

/// "2.13.0" of "2.13.0+cu130": the key of the venv folder.
pub fn torch_base_version() -> &'static str {
    LIBTORCH_VERSION
        .split('+')
        .next()
        .unwrap_or(LIBTORCH_VERSION)
}
