//! Sink metrics and the per-layer sink report, reduced during the forward pass.
//!
//! Definitions follow the paper (arXiv 2605.06611) and the works it builds on: alpha_k (Gu et al., ICLR 2025), Sink_k^eps,
//! DomRatio, massive activations (Sun et al. 2024), effective rank.

pub mod metrics;
pub mod pinned;
pub mod probe;
pub mod report;
pub mod rng;

pub use metrics::{dom_ratio, effective_rank, kendall_tau};
pub use probe::{to_vec, Moments, SinkProbe};
pub use report::{
    analyze, down_proj_sparsity, AnalyzeOptions, ColumnMetric, ColumnReport, LayerReport,
    SinkReport, SuperNeuron, VarianceKind, SUPER_NEURON_ABS, SUPER_NEURON_MEDIAN_RATIO,
};
pub use rng::random_tokens;

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Model(#[from] sinkrep_model::ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A request the analysis cannot serve (sequences of unequal length, a position past
    /// the sequence, an unknown device name, too few text windows).
    #[error("bad analysis input: {0}")]
    BadInput(String),
    /// A pinned input could not be fetched or verified.
    #[error(transparent)]
    Inputs(#[from] sinkrep_inputs::InputsError),
    /// A file (a pinned text, its folder) could not be read.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The model's tokenizer could not be built or could not encode a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
