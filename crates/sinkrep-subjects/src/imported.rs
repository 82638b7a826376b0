//! Training runs made elsewhere, read and measured like the subjects trained here: the
//! layout `sinkrep train` writes, which `scripts/peers/train_ddp.py` (or any engine) can
//! write too.
//!
//! ```text
//! <run>/train_log.csv          step,tokens,train_loss,lr,grad_norm
//! <run>/val_log.csv            step,tokens,val_loss
//! <run>/checkpoints/step-N/    HF folders (train_ddp.py) or sinkrep-train checkpoints
//! <run>/hf/                    the final weights, an HF folder
//! ```
//!
//! [`ImportedRun::read`] checks everything that can be checked without loading a model
//! (logs, folders, configs, that no weight file is cut short), so a caller can refuse a
//! broken import before it writes anything; [`measure_all`] then loads each model and
//! takes the same [`measure`] as the subjects get at their evaluation steps.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use sinkrep_model::{hf, Config, Model, Precision};
use sinkrep_train::checkpoint::{CheckpointState, MODEL_FILE, STATE_FILE};
use sinkrep_train::train::{TRAIN_CSV, VAL_CSV};
use sinkrep_train::{read_train_log, read_val_log, Checkpoint, StepRecord, ValRecord};

use crate::{measure, Measured};

/// The folder of a run that holds its final weights as an HF folder.
pub const FINAL_HF_DIR: &str = "hf";

/// Where one model of an imported run lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// An HF checkpoint folder (`config.json`, safetensors).
    Hf(PathBuf),
    /// A `sinkrep train` checkpoint folder (`model.safetensors`, `state.json`).
    Checkpoint(PathBuf),
}

impl Weights {
    pub fn dir(&self) -> &Path {
        match self {
            Weights::Hf(d) | Weights::Checkpoint(d) => d,
        }
    }

    /// The model's config, after checking that no weight file is cut short.
    fn config(&self) -> Result<Config> {
        match self {
            Weights::Hf(dir) => {
                hf::check_weight_files(dir)?;
                Ok(hf::HfConfig::read(dir)?
                    .to_config()
                    .with_context(|| format!("{}", dir.join(hf::CONFIG_FILE).display()))?)
            }
            Weights::Checkpoint(dir) => {
                hf::check_safetensors(&dir.join(MODEL_FILE))?;
                let path = dir.join(STATE_FILE);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let state: CheckpointState = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a checkpoint state", path.display()))?;
                Ok(state.config.model)
            }
        }
    }

    fn load(&self, device: tch::Device) -> Result<Model> {
        let dir = self.dir();
        let ctx = || format!("loading {}", dir.display());
        match self {
            Weights::Hf(_) => Model::from_hf_dir(dir, device).with_context(ctx),
            Weights::Checkpoint(_) => sinkrep_train::load_model(dir, device)
                .map(|m| m.0)
                .with_context(ctx),
        }
    }
}

/// One model of an imported run and the step it was saved at.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelAt {
    pub step: usize,
    pub weights: Weights,
}

/// A training run made elsewhere, read and checked (nothing loaded yet).
#[derive(Debug, Clone)]
pub struct ImportedRun {
    pub dir: PathBuf,
    pub train: Vec<StepRecord>,
    pub val: Vec<ValRecord>,
    pub tokens_per_step: usize,
    /// The models measured, by step: every checkpoint before the last step, then the
    /// final `hf/` folder (the last step).
    pub models: Vec<ModelAt>,
    /// The model's config (every model of the run has it).
    pub config: Config,
    /// Every file the import reads: the two logs and the files of every model folder.
    pub files: Vec<PathBuf>,
}

impl ImportedRun {
    /// Reads and checks the run in `dir`. Errors are one line naming the file.
    pub fn read(dir: &Path) -> Result<ImportedRun> {
        ensure!(dir.is_dir(), "{}: no such run folder", dir.display());
        let train = read_train_log(&dir.join(TRAIN_CSV))?;
        let val = read_val_log(&dir.join(VAL_CSV))?;
        let last = train.last().map_or(0, |r| r.step);
        let val_last = val.last().map_or(0, |r| r.step);
        ensure!(
            val_last == last,
            "{}: the validation log ends at step {val_last}, the training log at step {last} (an unfinished or truncated run?)",
            dir.display()
        );
        let tokens_per_step = tokens_per_step(dir, &train, &val)?;

        let final_dir = dir.join(FINAL_HF_DIR);
        ensure!(
            hf::is_hf_dir(&final_dir),
            "{}: no final HF folder (config.json); did the run finish?",
            final_dir.display()
        );
        let mut models = Vec::new();
        for c in Checkpoint::list(dir)? {
            ensure!(
                c.step <= last,
                "{}: a checkpoint past the logs' last step {last}",
                c.dir.display()
            );
            let weights = if hf::is_hf_dir(&c.dir) {
                Weights::Hf(c.dir)
            } else if c.dir.join(STATE_FILE).is_file() {
                Weights::Checkpoint(c.dir)
            } else {
                bail!(
                    "{}: neither an HF folder (config.json) nor a sinkrep checkpoint (state.json)",
                    c.dir.display()
                );
            };
            // The last step is measured on hf/, the run's final weights.
            if c.step < last {
                models.push(ModelAt {
                    step: c.step,
                    weights,
                });
            }
        }
        models.push(ModelAt {
            step: last,
            weights: Weights::Hf(final_dir.clone()),
        });

        let config = models[models.len() - 1].model_config()?;
        for m in &models[..models.len() - 1] {
            let c = m.model_config()?;
            ensure!(
                c == config,
                "{}: another model than {} ({c:?} vs {config:?})",
                m.weights.dir().display(),
                final_dir.display()
            );
        }
        let mut files = vec![dir.join(TRAIN_CSV), dir.join(VAL_CSV)];
        for m in &models {
            files.extend(files_in(m.weights.dir())?);
        }
        Ok(ImportedRun {
            dir: dir.to_path_buf(),
            train,
            val,
            tokens_per_step,
            models,
            config,
            files,
        })
    }

    /// The run's last step (of both logs and of `hf/`).
    pub fn last_step(&self) -> usize {
        self.val.last().map_or(0, |r| r.step)
    }

    /// Whether the validation log has a loss at `step`.
    pub fn has_val_at(&self, step: usize) -> bool {
        self.val.iter().any(|r| r.step == step)
    }

    /// Loads every model of the run (on this thread) and measures it on `windows`, at
    /// `precision`; the last measurement keeps its report.
    pub fn measure(
        &self,
        windows: &[Vec<i64>],
        precision: Precision,
        device: tch::Device,
    ) -> Result<Measured> {
        let mut evals = Vec::with_capacity(self.models.len());
        for (i, m) in self.models.iter().enumerate() {
            let mut model = m.weights.load(device)?;
            model.set_precision(precision, true);
            let mut p = measure(&model, windows, m.step)
                .with_context(|| format!("measuring {}", m.weights.dir().display()))?;
            if i + 1 < self.models.len() {
                p.report = None;
            }
            evals.push(p);
        }
        Ok(Measured {
            tokens_per_step: self.tokens_per_step,
            train: self.train.iter().map(|r| (r.step, r.train_loss)).collect(),
            val: self.val.iter().map(|r| (r.step, r.val_loss)).collect(),
            evals,
        })
    }
}

impl ModelAt {
    /// The config with the fields that are training metadata, not the model, cleared
    /// (HF folders written by other engines do not record the head-norm gain's start).
    fn model_config(&self) -> Result<Config> {
        let mut c = self.weights.config()?;
        c.head_norm_init = 1.0;
        c.zero_init = false;
        Ok(c)
    }
}

/// Tokens per optimizer step, from the logs: every row's tokens must be step times it.
fn tokens_per_step(dir: &Path, train: &[StepRecord], val: &[ValRecord]) -> Result<usize> {
    let first = &train[0];
    ensure!(
        first.step > 0 && first.tokens.is_multiple_of(first.step as u64),
        "{}: step {} has {} tokens, not a whole number per step",
        dir.join(TRAIN_CSV).display(),
        first.step,
        first.tokens
    );
    let per = first.tokens / first.step as u64;
    let rows = train
        .iter()
        .map(|r| (r.step, r.tokens, TRAIN_CSV))
        .chain(val.iter().map(|r| (r.step, r.tokens, VAL_CSV)));
    for (step, tokens, file) in rows {
        ensure!(
            tokens == step as u64 * per,
            "{}: step {step} has {tokens} tokens, expected {} ({per} per step)",
            dir.join(file).display(),
            step as u64 * per
        );
    }
    Ok(per as usize)
}

/// The files of a model folder, sorted.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Measures every run (see [`ImportedRun::measure`]), `jobs` runs at once, each on one
/// libtorch intra-op thread as the subjects train, so no number depends on `jobs`.
pub fn measure_all(
    runs: &[&ImportedRun],
    windows: &[Vec<i64>],
    precision: Precision,
    device: tch::Device,
    jobs: usize,
) -> Result<Vec<Measured>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.min(runs.len()).max(1))
        .build()
        .context("starting the measurement thread pool")?;
    let prev_threads = tch::get_num_threads();
    let out: Result<Vec<Measured>> = pool.install(|| {
        use rayon::prelude::*;
        runs.par_iter()
            .map(|r| {
                tch::set_num_threads(1);
                r.measure(windows, precision, device)
            })
            .collect()
    });
    // MKL's thread count is process-wide: restore it (as `obtain` does).
    tch::set_num_threads(prev_threads);
    out
}
