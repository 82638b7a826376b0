//! Model configuration: read from GGUF metadata (`llama.*` keys) or built by hand for
//! models trained from scratch. Conventions that silently change numbers are explicit
//! fields: RoPE pairing and frequency scaling, eps, whether a BOS is added, the attention
//! variant.

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

/// RoPE frequency scaling: the two LLaMA scalings HF transformers implements for
/// `LlamaForCausalLM` (`modeling_rope_utils.py`). Both only change the inverse
/// frequencies; neither scales attention (HF's `attention_factor` is 1 for both).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum RopeScaling {
    /// Plain RoPE: inv_freq_i = base^(-2i/d).
    #[default]
    None,
    /// Positions divided by `factor` (HF `linear`): inv_freq / factor.
    Linear { factor: f64 },
    /// Llama 3.1's scaling (HF `llama3`, `_compute_llama3_parameters`): with
    /// wavelen = 2π / inv_freq, wavelengths above original_max / low_freq_factor get
    /// inv_freq / factor, those below original_max / high_freq_factor are unchanged, and
    /// in between (1 - s) inv_freq / factor + s inv_freq with
    /// s = (original_max / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    pub fn is_none(&self) -> bool {
        *self == RopeScaling::None
    }

    /// HF's name for the type (`rope_type`).
    pub fn hf_type(&self) -> &'static str {
        match self {
            RopeScaling::None => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Llama3 { .. } => "llama3",
        }
    }

    /// Factors that make the formulas meaningful: finite and > 0, low < high, a
    /// non-zero original context.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "rope scaling {}: {name} {v} must be finite and > 0",
                    self.hf_type()
                ))
            }
        };
        match *self {
            RopeScaling::None => Ok(()),
            RopeScaling::Linear { factor } => positive("factor", factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("factor", factor)?;
                positive("low_freq_factor", low_freq_factor)?;
                positive("high_freq_factor", high_freq_factor)?;
                if low_freq_factor >= high_freq_factor {
                    return Err(format!(
                        "rope scaling llama3: low_freq_factor {low_freq_factor} must be < \
                         high_freq_factor {high_freq_factor}"
                    ));
                }
                if original_max_position_embeddings == 0 {
                    return Err(
                        "rope scaling llama3: original_max_position_embeddings must be > 0".into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// The scaled inverse frequency, in f64 (the identity for `None`).
    pub fn apply(&self, inv_freq: f64) -> f64 {
        match *self {
            RopeScaling::None => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f64;
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
                if wavelen < high_freq_wavelen {
                    inv_freq
                } else if wavelen > low_freq_wavelen {
                    inv_freq / factor
                } else {
                    let s =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - s) * inv_freq / factor + s * inv_freq
                }
            }
        }
    }
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
    /// RoPE frequency scaling (HF `rope_scaling`). Absent from saved configs when none.
    #[serde(default, skip_serializing_if = "RopeScaling::is_none")]
    pub rope_scaling: RopeScaling,
    /// Output projection tied to the token embedding (GGUF: no `output.weight`).
    pub tied_embeddings: bool,
    pub max_seq_len: usize,
    pub attn_variant: AttnVariant,
    /// Initial value of every head-wise RMSNorm gain (ignored by other variants). 1 is
    /// RMSNorm's usual start; a smaller value starts the normalised output at the scale
    /// of the baseline's value aggregation. Absent from saved configs when 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub head_norm_init: f64,
    /// Set while loading a checkpoint, whose tensors replace every weight before use:
    /// linear and embedding weights are left unset (llama) or zero (gemma3) instead of
    /// drawn at random.
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

/// sinkrep reads no RoPE scaling from GGUF: refuses a file that carries one rather than
/// computing it unscaled. llama.cpp writes `{arch}.rope.scaling.type` (none, linear, yarn,
/// ...) with `rope.scaling.factor` (older files: `rope.scale_linear`), and for Llama 3.1's
/// `llama3` scaling no key at all but a `rope_freqs.weight` tensor of per-pair divisors.
pub(crate) fn refuse_gguf_rope_scaling(file: &GgufFile, arch: &str) -> Result<(), ModelError> {
    let refuse = |what: String| {
        Err(ModelError::Unsupported(format!(
            "GGUF RoPE scaling ({what}); sinkrep reads RoPE scaling only from HF config.json"
        )))
    };
    let k = |s: &str| format!("{arch}.{s}");
    if let Some(t) = file.get_str_opt(&k("rope.scaling.type"))? {
        if t != "none" {
            return refuse(format!("{} = {t}", k("rope.scaling.type")));
        }
    }
    for key in [k("rope.scaling.factor"), k("rope.scale_linear")] {
        // llama.cpp reads 0 (and 1) as no scaling.
        if let Some(f) = file.get_f32_opt(&key)? {
            if f != 0.0 && f != 1.0 {
                return refuse(format!("{key} = {f}"));
            }
        }
    }
    if file.tensor_info("rope_freqs.weight").is_ok() {
        return refuse("tensor rope_freqs.weight, Llama 3.1's llama3 scaling".into());
    }
    Ok(())
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
        refuse_gguf_rope_scaling(file, &arch)?;
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
            rope_scaling: RopeScaling::None,
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
        self.rope_scaling
            .validate()
            .map_err(ModelError::BadConfig)?;
        if !(self.head_norm_init.is_finite() && self.head_norm_init > 0.0) {
            return bad(format!(
                "head_norm_init {} must be finite and > 0",
                self.head_norm_init
            ));
        }
        Ok(())
    }

    /// RoPE's inverse frequencies, one per rotated pair: base^(-2i/d) in f64, then the
    /// frequency scaling, rounded once to f32. With no scaling this is bit for bit the
    /// table every model had before scaling existed.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        (0..self.head_dim / 2)
            .map(|i| {
                let inv = 1.0 / self.rope_base.powf(2.0 * i as f64 / self.head_dim as f64);
                self.rope_scaling.apply(inv) as f32
            })
            .collect()
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
