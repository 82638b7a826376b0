//! Model configuration: read from GGUF metadata (`llama.*` keys) or built by hand for
//! models trained from scratch. Conventions that silently change numbers are explicit
//! fields: RoPE pairing, eps, whether a BOS is added, the attention variant.

use crate::ModelError;
use serde::{Deserialize, Serialize};
use sinkrep_gguf::GgufFile;

/// Which coordinates RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RopePairing {
    /// Pairs (2i, 2i+1). llama.cpp's converter permutes the Q/K rows of HF checkpoints so
    /// that GGUF LLaMA weights need this pairing (ggml "normal" RoPE, mode 0).
    Adjacent,
    /// Pairs (i, i + d/2), the HF `rotate_half` convention.
    HalfSplit,
}

/// What sits between value aggregation and the output projection W_O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum AttnVariant {
    /// Plain attention: o goes straight into W_O.
    Baseline,
    /// The paper's head-wise RMSNorm: o_hat = o / RMS(o) * g for each head's o (size
    /// d_head); g has size d_head and is shared across heads when `shared`, else one
    /// gain vector per head.
    HeadwiseRmsnorm { shared: bool },
    /// Qwen's gated attention (elementwise sigmoid gate after SDPA, "G1"):
    /// o' = o * sigmoid(x W_gate), with x the block's normalised input.
    Gated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f64,
    /// RoPE base frequency (`llama.rope.freq_base`).
    pub rope_base: f64,
    pub rope_pairing: RopePairing,
    /// Output projection tied to the token embedding (GGUF: no `output.weight`).
    pub tied_embeddings: bool,
    pub max_seq_len: usize,
    pub attn_variant: AttnVariant,
    /// Initial value of every head-wise RMSNorm gain (ignored by other variants). 1 is
    /// RMSNorm's usual start; a smaller value starts the normalised output at the scale
    /// of the baseline's value aggregation. Absent from saved configs when 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub head_norm_init: f64,
    /// Initialise weights to zero instead of randomly (set while loading a checkpoint).
    #[serde(skip)]
    pub zero_init: bool,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// GGUF stores these as f32; take the shortest decimal that round-trips (1e-5, not
/// 9.99999974e-6), which is the value the checkpoint's authors wrote.
fn f32_to_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

impl Config {
    /// Reads a LLaMA-family config from GGUF metadata. The RoPE pairing is `Adjacent`,
    /// which is what llama.cpp's converter makes the Q/K weights need.
    pub fn from_gguf(file: &GgufFile) -> Result<Config, ModelError> {
        let arch = file.architecture()?.to_string();
        if !matches!(arch.as_str(), "llama" | "mistral" | "smollm") {
            return Err(ModelError::Unsupported(format!(
                "architecture `{arch}` (supported: llama-family)"
            )));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let d_model = file.get_u32(&k("embedding_length"))? as usize;
        let n_heads = file.get_u32(&k("attention.head_count"))? as usize;
        let n_kv_heads = file
            .get_u32_opt(&k("attention.head_count_kv"))?
            .map(|v| v as usize)
            .unwrap_or(n_heads);
        let head_dim = match file.get_u32_opt(&k("attention.key_length"))? {
            Some(v) => v as usize,
            None if n_heads > 0 => d_model / n_heads,
            None => 0,
        };
        let embd = file.tensor_info("token_embd.weight")?;
        let vocab_size = embd.shape.first().copied().unwrap_or(0);
        let cfg = Config {
            vocab_size,
            d_model,
            n_layers: file.get_u32(&k("block_count"))? as usize,
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff: file.get_u32(&k("feed_forward_length"))? as usize,
            rms_eps: f32_to_f64(
                file.get_f32_opt(&k("attention.layer_norm_rms_epsilon"))?
                    .unwrap_or(1e-5),
            ),
            rope_base: f32_to_f64(file.get_f32_opt(&k("rope.freq_base"))?.unwrap_or(10_000.0)),
            rope_pairing: RopePairing::Adjacent,
            tied_embeddings: file.tensor_info("output.weight").is_err(),
            max_seq_len: file
                .get_u32_opt(&k("context_length"))?
                .map(|v| v as usize)
                .unwrap_or(2048),
            attn_variant: AttnVariant::Baseline,
            head_norm_init: 1.0,
            zero_init: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::BadConfig(m));
        if self.vocab_size == 0 || self.d_model == 0 || self.n_layers == 0 || self.d_ff == 0 {
            return bad(format!("zero size in {self:?}"));
        }
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return bad(format!(
                "{} query heads are not a multiple of {} kv heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if self.rms_eps <= 0.0 || self.rope_base <= 1.0 {
            return bad("rms_eps must be > 0 and rope_base > 1".into());
        }
        if !(self.head_norm_init.is_finite() && self.head_norm_init > 0.0) {
            return bad(format!(
                "head_norm_init {} must be finite and > 0",
                self.head_norm_init
            ));
        }
        Ok(())
    }

    /// Query heads per KV head (grouped-query attention).
    pub fn n_rep(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Parameter count (embedding counted once when tied).
    pub fn n_params(&self) -> usize {
        let attn = self.d_model * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads);
        let gate = match self.attn_variant {
            AttnVariant::Gated => self.d_model * self.n_heads * self.head_dim,
            AttnVariant::HeadwiseRmsnorm { shared: true } => self.head_dim,
            AttnVariant::HeadwiseRmsnorm { shared: false } => self.head_dim * self.n_heads,
            AttnVariant::Baseline => 0,
        };
        let mlp = 3 * self.d_model * self.d_ff;
        let per_layer = attn + gate + mlp + 2 * self.d_model;
        let emb = self.vocab_size * self.d_model;
        let out = if self.tied_embeddings { 0 } else { emb };
        emb + out + self.n_layers * per_layer + self.d_model
    }
}
