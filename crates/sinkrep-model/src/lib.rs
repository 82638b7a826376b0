//! sinkrep-model: instrumented decoders on tch (libtorch): the LLaMA family (`llama`) and
//! Gemma-3 (`gemma3`), behind one `Decoder` trait for analysis code.
//!
//! - `Config` from GGUF metadata or by hand (`config`);
//! - `Model` with `forward(tokens, &mut Hooks)` returning every position (`llama`);
//! - `Hooks`: probes that see named sites and reduce on the fly, and `Interventions`
//!   (mask-to-self, value-aggregation amplification, FFN ablation, head-norm switch);
//! - HF checkpoint folders read and written (`hf`);
//! - `Tokenizer` and GGUF loading re-exported from `sinkrep-gguf`.

pub mod alloc;
pub mod blas;
pub mod config;
pub mod cuda;
mod fused;
pub mod gemma3;
pub mod hf;
pub mod hooks;
pub mod interventions;
pub mod llama;
pub mod reduce;

pub use config::{AttnVariant, Config, RopePairing, RopeScaling};
pub use gemma3::{Gemma3, Gemma3Config};
pub use hooks::{Capture, Hooks, Probe, Site};
pub use interventions::{
    Ablate, AblateKind, Amplify, AmplifyMode, CenterMean, Interventions, Layers, MaskSelf,
};
pub use llama::{AttnImpl, Model, Precision};
pub use sinkrep_gguf::{tokenizer::GgufTokenizer, GgufFile};

/// Do probed projections of a bf16 model run as split-bf16 products here (a CPU with AMX,
/// `SINKREP_SPLIT_BF16` not 0)? Elsewhere they run in f32 sgemm. See `llama::Keep::Split`.
pub fn split_bf16_available() -> bool {
    fused::split_available()
}

/// Parses a device name as the CLI and the runner spell it: "cpu", "cuda" (device 0) or
/// "cuda:N"; `None` for anything else (callers say what they expected).
pub fn parse_device(name: &str) -> Option<tch::Device> {
    if name != "cpu" {
        cuda::load();
    }
    match name {
        "cpu" => Some(tch::Device::Cpu),
        "cuda" => Some(tch::Device::Cuda(0)),
        s => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(tch::Device::Cuda),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] sinkrep_gguf::GgufError),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("bad model config: {0}")]
    BadConfig(String),
    #[error("tensor `{name}`: expected shape {expected:?}, file has {found:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: {msg}", .path.display())]
    File {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("bad input: {0}")]
    BadInput(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// What analysis needs from a decoder, whatever its family: a forward pass that shows
/// the probe sites (`Site`) to the hooks and applies their interventions, the logits,
/// and the FFN down-projections (for super-neuron columns).
pub trait Decoder {
    /// `llama` or `gemma3`.
    fn family(&self) -> &'static str;
    /// Sizes shared by every family (Gemma-3's extra conventions live in its own config).
    fn config(&self) -> &Config;
    fn device(&self) -> tch::Device;
    fn precision(&self) -> Precision;
    fn set_precision(&mut self, p: Precision, snapshot: bool);
    /// Final normalised hidden states (B, T, D) of tokens (B, T), every position.
    fn forward(&self, tokens: &tch::Tensor, hooks: &mut Hooks) -> Result<tch::Tensor, ModelError>;
    fn logits(&self, hidden: &tch::Tensor) -> tch::Tensor;
    /// Layer `layer`'s FFN down-projection (D, F).
    fn down_proj(&self, layer: usize) -> &tch::Tensor;
    /// Where this family's probe sites read a different tensor than LLaMA's (empty for
    /// LLaMA), one sentence each, for reports.
    fn site_notes(&self) -> Vec<String>;
    fn attn_impl(&self) -> AttnImpl;
}

/// Loads a GGUF of any supported family (by `general.architecture`).
pub fn load_gguf(file: &GgufFile, device: tch::Device) -> Result<Box<dyn Decoder>, ModelError> {
    match file.architecture()? {
        "gemma3" => Ok(Box::new(Gemma3::from_gguf(file, device)?)),
        _ => Ok(Box::new(Model::from_gguf(file, device)?)),
    }
}

/// `draw()` run right after seeding libtorch's global generator with `seed`, with the
/// seeding and the drawing under one process-wide lock. The generator is global: on
/// parallel threads (tests, independent training runs) another thread's seeding or drawing
/// in between changes what `draw` gets (the fused-kernel tests failed ~1 run in 6 so).
/// Every seeded draw in the workspace goes through here.
pub fn with_seed<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    draw()
}

/// `randn(shape)` on the CPU from libtorch's generator seeded with `seed` ([`with_seed`]).
#[cfg(test)]
pub(crate) fn seeded_randn(shape: &[i64], seed: i64) -> tch::Tensor {
    with_seed(seed, || {
        tch::Tensor::randn(shape, (tch::Kind::Float, tch::Device::Cpu))
    })
}
