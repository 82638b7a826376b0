//! sinkrep-model: an instrumented LLaMA-family decoder on tch (libtorch).
//!
//! - `Config` from GGUF metadata or by hand (`config`);
//! - `Model` with `forward(tokens, &mut Hooks)` returning every position (`llama`);
//! - `Hooks`: probes that see named sites and reduce on the fly, and `Interventions`
//!   (mask-to-self, value-aggregation amplification, FFN ablation, head-norm switch);
//! - `Tokenizer` and GGUF loading re-exported from `sinkrep-gguf`.

pub mod alloc;
pub mod config;
pub mod hooks;
pub mod interventions;
pub mod llama;

pub use config::{AttnVariant, Config, RopePairing};
pub use hooks::{Capture, Hooks, Probe, Site};
pub use interventions::{
    Ablate, AblateKind, Amplify, AmplifyMode, CenterMean, Interventions, Layers, MaskSelf,
};
pub use llama::{AttnImpl, Model, Precision};
pub use sinkrep_gguf::{tokenizer::GgufTokenizer, GgufFile};

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
    #[error("bad input: {0}")]
    BadInput(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
