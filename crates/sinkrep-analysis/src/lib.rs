//! Sink metrics and the per-layer sink report, reduced during the forward pass.
//!
//! Definitions follow ../../shared/paper.md: alpha_k (Gu et al., ICLR 2025), Sink_k^eps,
//! DomRatio, massive activations (Sun et al. 2024), effective rank.

pub mod metrics;
pub mod pinned;
pub mod probe;
pub mod report;
pub mod rng;

pub use metrics::{dom_ratio, effective_rank, kendall_tau};
pub use probe::{Moments, SinkProbe};
pub use report::{
    analyze, down_proj_sparsity, AnalyzeOptions, ColumnMetric, ColumnReport, LayerReport,
    SinkReport, SuperNeuron, VarianceKind, SUPER_NEURON_ABS, SUPER_NEURON_MEDIAN_RATIO,
};
pub use rng::{random_tokens, SplitMix64};

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Model(#[from] sinkrep_model::ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error("bad analysis input: {0}")]
    BadInput(String),
}
