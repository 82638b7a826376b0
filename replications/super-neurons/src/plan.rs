//! What is measured at each scale: `[scale.<s>]` of `claim.toml`.

use serde::{Deserialize, Serialize};
use sinkrep_runner::Scale;

/// How much is measured at each scale (`[scale.<s>]` of `claim.toml`). Every window has
/// `seq_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Random-token sequences of the census (Gu et al.: 100 of 64 tokens).
    pub random_seqs: usize,
    /// Natural-text windows of the census; super neurons are flagged on these.
    pub text_seqs: usize,
    /// Further natural-text windows for the ablations and the loss (never used to flag).
    pub heldout_seqs: usize,
    pub seq_len: usize,
    /// Sequences per forward pass in the census.
    pub batch: usize,
    /// Sequences per forward pass of the held-out evaluations (mean ablation averages
    /// over the other positions of one batch).
    pub heldout_batch: usize,
    /// Seeds of the synthetic subject whose census the synthetic-* checks judge
    /// (default `sinkrep_subjects::SCRATCH_SEEDS`, the other from-scratch sections' count).
    #[serde(default = "default_synthetic_seeds")]
    pub synthetic_seeds: usize,
}

fn default_synthetic_seeds() -> usize {
    sinkrep_subjects::SCRATCH_SEEDS
}

impl Sizes {
    /// The sizes at `scale`: `[scale.<scale>]` of this crate's `claim.toml`.
    pub fn at(scale: Scale) -> anyhow::Result<Sizes> {
        let sizes: Sizes = crate::claim()?.scale_params(scale)?;
        anyhow::ensure!(
            sizes.synthetic_seeds >= 2,
            "super-neurons claim.toml [scale.{scale}]: synthetic_seeds = {} must be at least 2 (its checks judge an interval over seeds)",
            sizes.synthetic_seeds
        );
        Ok(sizes)
    }
}

/// How many of the largest |mean h_0| dims count as the first token's dominant dims
/// (the paper: "one or two hidden dimensions").
pub const DOMINANT_DIMS: usize = 2;
