//! The training configuration: everything that determines a run's numbers.

use crate::data::TokenizerKind;
use crate::synthetic::SyntheticTask;
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use sinkrep_model::{AttnVariant, Config, Precision, RopePairing, RopeScaling};
use tch::Device;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The architecture, including the attention variant (`model.attn_variant`): the one
    /// field that differs between the runs of a variant comparison.
    pub model: Config,
    pub tokenizer: TokenizerKind,
    /// The synthetic task the run trains on (with `tokenizer` = `ids`); absent for the
    /// text corpus, and from saved configs then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<SyntheticTask>,
    pub batch_size: usize,
    /// Tokens per training window (T); each window holds T+1 tokens (inputs + targets).
    pub seq_len: usize,
    /// Optimizer updates in the whole run.
    pub steps: usize,
    /// Peak learning rate, reached after `warmup_steps`, then cosine decay to `min_lr`.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay (matrices only unless `decay_gains`; see `optim`).
    pub weight_decay: f64,
    /// Weight decay on every variable, normalisation gains included. Absent from saved
    /// configs when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub decay_gains: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip: f64,
    /// Validation loss (and the `on_eval` hook) every this many steps, at step 0 and at
    /// the last step; 0: only at step 0 and the last step.
    pub eval_every: usize,
    /// Validation batches (of `batch_size` windows each) per evaluation.
    pub eval_batches: usize,
    /// Checkpoint every this many steps and at the last step; 0: only at the last step.
    pub ckpt_every: usize,
    /// Keep at most this many checkpoints, deleting the oldest; 0 keeps all.
    pub keep_checkpoints: usize,
    /// Seeds the model's initial weights (libtorch) and the data order (`rng`).
    pub seed: u64,
    /// "cpu", "cuda" or "cuda:N". Weights are initialised on the CPU and copied, so a
    /// seed gives the same initial weights on every device.
    pub device: String,
    /// libtorch intra-op threads, set (process-wide) when the run starts; 0 leaves the
    /// process setting alone. CPU results are bit-reproducible for a fixed thread count,
    /// but 1 and 2 threads give different bits (reductions split differently), so pin
    /// this when runs must match across machines.
    #[serde(default)]
    pub threads: usize,
    /// Matmul precision: f32, or bf16 the way autocast runs it (bf16 linear layers, f32
    /// weights, optimizer state, norms, softmax and loss). Absent from saved configs when
    /// f32, so configs written before this field existed read back unchanged.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl TrainConfig {
    /// The project's small model: d_model 128, 4 layers, 4 heads of 32, SwiGLU 384, byte
    /// vocabulary, tied embeddings, context = `seq_len` = 128, batch 16.
    pub fn small(variant: AttnVariant) -> TrainConfig {
        let seq_len = 128;
        TrainConfig {
            model: Config {
                vocab_size: 256,
                d_model: 128,
                n_layers: 4,
                n_heads: 4,
                n_kv_heads: 4,
                head_dim: 32,
                d_ff: 384,
                rms_eps: 1e-5,
                rope_base: 10_000.0,
                rope_pairing: RopePairing::HalfSplit,
                rope_scaling: RopeScaling::None,
                tied_embeddings: true,
                max_seq_len: seq_len,
                attn_variant: variant,
                head_norm_init: 1.0,
                zero_init: false,
            },
            tokenizer: TokenizerKind::Bytes,
            task: None,
            batch_size: 16,
            seq_len,
            steps: 2000,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 100,
            weight_decay: 0.1,
            decay_gains: false,
            beta1: 0.9,
            beta2: 0.95,
            adam_eps: 1e-8,
            grad_clip: 1.0,
            eval_every: 100,
            eval_batches: 8,
            ckpt_every: 500,
            keep_checkpoints: 0,
            seed: 0,
            device: "cpu".into(),
            threads: 0,
            precision: Precision::F32,
        }
    }

    pub fn variant(&self) -> AttnVariant {
        self.model.attn_variant
    }

    pub fn with_variant(mut self, variant: AttnVariant) -> TrainConfig {
        self.model.attn_variant = variant;
        self
    }

    /// Tokens consumed per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.seq_len
    }

    pub fn device(&self) -> Result<Device> {
        parse_device(&self.device)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::BadConfig(m));
        self.model.validate()?;
        self.device()?;
        if self.batch_size == 0 || self.seq_len == 0 || self.steps == 0 {
            return bad("batch_size, seq_len and steps must be > 0".into());
        }
        if self.seq_len > self.model.max_seq_len {
            return bad(format!(
                "seq_len {} exceeds the model's max_seq_len {}",
                self.seq_len, self.model.max_seq_len
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be finite and > 0, got {}", self.lr));
        }
        if !(self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return bad(format!("min_lr {} must be in [0, lr]", self.min_lr));
        }
        if self.warmup_steps > self.steps {
            return bad(format!(
                "warmup_steps {} exceeds steps {}",
                self.warmup_steps, self.steps
            ));
        }
        let unit = 0.0..1.0;
        if !unit.contains(&self.beta1) || !unit.contains(&self.beta2) {
            return bad("beta1 and beta2 must be in [0, 1)".into());
        }
        // Written positively so NaN fails too.
        let ok = self.adam_eps > 0.0 && self.weight_decay >= 0.0 && self.grad_clip >= 0.0;
        if !ok {
            return bad("adam_eps must be > 0; weight_decay and grad_clip >= 0".into());
        }
        if self.eval_batches == 0 {
            return bad("eval_batches must be > 0".into());
        }
        match (&self.task, self.tokenizer) {
            (Some(task), TokenizerKind::Ids) => {
                task.validate()?;
                if task.model_vocab() > self.model.vocab_size {
                    return bad(format!(
                        "the synthetic task needs vocab_size {} (its tokens and BOS), the model has {}",
                        task.model_vocab(),
                        self.model.vocab_size
                    ));
                }
            }
            (None, TokenizerKind::Ids) => {
                return bad("tokenizer `ids` needs a synthetic `task`".into());
            }
            (Some(_), _) => return bad("a synthetic `task` needs tokenizer `ids`".into()),
            (None, _) => {}
        }
        if let TokenizerKind::Bpe { vocab } = self.tokenizer {
            if vocab > self.model.vocab_size {
                return bad(format!(
                    "BPE vocab {vocab} exceeds the model's vocab_size {}",
                    self.model.vocab_size
                ));
            }
        }
        Ok(())
    }

    /// Is this an evaluation step (validation loss and `on_eval`)?
    pub fn is_eval_step(&self, step: usize) -> bool {
        step == 0
            || step == self.steps
            || (self.eval_every > 0 && step.is_multiple_of(self.eval_every))
    }

    pub fn is_ckpt_step(&self, step: usize) -> bool {
        step == self.steps || (self.ckpt_every > 0 && step.is_multiple_of(self.ckpt_every))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// "cpu", "cuda" (device 0) or "cuda:N".
pub fn parse_device(s: &str) -> Result<Device> {
    sinkrep_model::parse_device(s)
        .ok_or_else(|| TrainError::BadConfig(format!("device `{s}`: expected cpu, cuda or cuda:N")))
}
