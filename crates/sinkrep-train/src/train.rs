//! The training loop: fresh start or resume, logs, NaN/Inf guard, evaluation hook.
//!
//! A run lives in one folder:
//!
//! ```text
//! <run>/config.json      the TrainConfig (written last at start: marks the run as begun)
//! <run>/run.json         manifest: libtorch version, threads, device, data fingerprint,
//!                        every document's name, sha256 and token count, tokenizer sha256
//! <run>/tokenizer.json   the BPE artifact (BPE runs only)
//! <run>/train_log.csv    step,tokens,train_loss,lr,grad_norm      (bit-reproducible)
//! <run>/val_log.csv      step,tokens,val_loss                     (bit-reproducible)
//! <run>/timing.csv       step,elapsed_s,step_s,tokens_per_s       (wall clock)
//! <run>/checkpoints/step-NNNNNNN/   see `checkpoint`
//! <run>/outcome.json     written when the run completes: losses and output sha256s
//! ```
//!
//! Step `s` (1-based) is the `s`-th optimizer update; it trains on sampler batch `s` with
//! learning rate `LrSchedule::at(s)`. Its log row holds the loss of that batch before the
//! update and the gradient norm before clipping. Evaluation (validation loss on fixed
//! windows, then `on_eval`) happens at step 0 (initial weights), every `eval_every` steps
//! and at the last step.

use crate::checkpoint::{self, Checkpoint, CheckpointState};
use crate::config::TrainConfig;
use crate::data::{Sampler, TokenData, TokenizerKind, EVAL_SEED, STREAM_EVAL, STREAM_TRAIN};
use crate::optim::{AdamW, LrSchedule};
use crate::{io_err, Result, TrainError};
use serde::{Deserialize, Serialize};
use sinkrep_model::{AttnImpl, Hooks, Model};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

pub const CONFIG_FILE: &str = "config.json";
pub const RUN_FILE: &str = "run.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TRAIN_CSV: &str = "train_log.csv";
pub const VAL_CSV: &str = "val_log.csv";
pub const TIMING_CSV: &str = "timing.csv";
pub const OUTCOME_FILE: &str = "outcome.json";

const TRAIN_HEADER: &str = "step,tokens,train_loss,lr,grad_norm\n";
const VAL_HEADER: &str = "step,tokens,val_loss\n";
const TIMING_HEADER: &str = "step,elapsed_s,step_s,tokens_per_s\n";

/// One training step's log row. Losses and norms are f32 values held in f64 (exact), so
/// they survive the JSON round trip of a checkpoint bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    /// Training tokens consumed up to and including this step.
    pub tokens: u64,
    /// Mean cross-entropy (nats/token) of this step's batch, before the update.
    pub train_loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValRecord {
    pub step: usize,
    pub tokens: u64,
    /// Mean cross-entropy (nats/token) over the fixed validation windows.
    pub val_loss: f64,
}

fn train_row(r: &StepRecord) -> String {
    format!(
        "{},{},{},{},{}\n",
        r.step, r.tokens, r.train_loss as f32, r.lr, r.grad_norm as f32
    )
}

fn val_row(r: &ValRecord) -> String {
    format!("{},{},{}\n", r.step, r.tokens, r.val_loss)
}

/// Reads a `train_log.csv` as [`train`] writes it (and `scripts/peers/train_ddp.py`, whose
/// Python `csv` ends lines with CRLF): the exact header, steps rising strictly, every
/// value finite. A file that does not end with a line break was cut short.
pub fn read_train_log(path: &Path) -> Result<Vec<StepRecord>> {
    read_log(path, TRAIN_HEADER, |f| {
        Ok(StepRecord {
            step: field(f[0], "step")?,
            tokens: field(f[1], "tokens")?,
            train_loss: finite(f[2], "train_loss")?,
            lr: finite(f[3], "lr")?,
            grad_norm: finite(f[4], "grad_norm")?,
        })
    })
}

/// Reads a `val_log.csv` (see [`read_train_log`]).
pub fn read_val_log(path: &Path) -> Result<Vec<ValRecord>> {
    read_log(path, VAL_HEADER, |f| {
        Ok(ValRecord {
            step: field(f[0], "step")?,
            tokens: field(f[1], "tokens")?,
            val_loss: finite(f[2], "val_loss")?,
        })
    })
}

fn field<T: std::str::FromStr>(text: &str, name: &str) -> std::result::Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name} `{text}` is not a valid number"))
}

fn finite(text: &str, name: &str) -> std::result::Result<f64, String> {
    let v: f64 = field(text, name)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{name} is {text} (not finite)"))
    }
}

/// The rows of a log with `header` (which ends with a line break), steps (the first
/// column) rising strictly. Errors name the file and the line.
fn read_log<T>(
    path: &Path,
    header: &str,
    row: impl Fn(&[&str]) -> std::result::Result<T, String>,
) -> Result<Vec<T>> {
    let bad = |msg: String| TrainError::BadFile {
        path: path.to_path_buf(),
        msg,
    };
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    if !text.ends_with('\n') {
        return Err(bad(
            "does not end with a line break (truncated?)".to_string()
        ));
    }
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
    let want = header.trim_end();
    let got = lines.next().unwrap_or("");
    if got != want {
        return Err(bad(format!("header `{got}`, expected `{want}`")));
    }
    let n = want.split(',').count();
    let (mut out, mut prev) = (Vec::new(), None);
    for (i, line) in lines.enumerate() {
        let at = |msg: String| bad(format!("line {}: {msg}", i + 2));
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != n {
            return Err(at(format!("{} fields, expected {n}", f.len())));
        }
        let step: usize = field(f[0], "step").map_err(at)?;
        if let Some(p) = prev.filter(|&p| step <= p) {
            return Err(at(format!("step {step} after step {p}")));
        }
        prev = Some(step);
        out.push(row(&f).map_err(at)?);
    }
    if out.is_empty() {
        return Err(bad("no rows after the header".to_string()));
    }
    Ok(out)
}

/// Called at every evaluation step with the step and the model (under `no_grad`).
pub type OnEval<'a> = &'a mut dyn FnMut(usize, &Model) -> anyhow::Result<()>;

/// How to run (nothing here changes the numbers).
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Draw a progress bar (loss, tokens/s) on stderr; it stays hidden when stderr is
    /// not a terminal. Off by default: a library does not print unless asked.
    pub progress: bool,
    /// Return after this step as if the process were killed there (no extra checkpoint,
    /// `completed: false`): to train in pieces, and to test resume.
    pub stop_after: Option<usize>,
    /// Runs at every evaluation step after the validation loss is logged and any
    /// checkpoint of that step is written. An error stops training. After a resume it
    /// runs only for steps after the checkpoint.
    pub on_eval: Option<OnEval<'a>>,
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("progress", &self.progress)
            .field("stop_after", &self.stop_after)
            .field("on_eval", &self.on_eval.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub out_dir: PathBuf,
    /// Optimizer updates done so far.
    pub steps_done: usize,
    /// Did the run reach `config.steps`?
    pub completed: bool,
    /// Loss of the last step's batch.
    pub final_train_loss: Option<f64>,
    /// Latest validation loss.
    pub final_val_loss: Option<f64>,
    pub train_log: Vec<StepRecord>,
    pub val_log: Vec<ValRecord>,
    /// Checkpoint folders on disk, oldest first.
    pub checkpoints: Vec<PathBuf>,
    pub train_csv: PathBuf,
    pub val_csv: PathBuf,
    pub timing_csv: PathBuf,
    /// Training throughput of this call (excluding evaluation and checkpoints).
    pub tokens_per_s: f64,
    /// Mean wall time of one training step in this call, seconds.
    pub step_time_s: f64,
    /// libtorch intra-op threads used by this call.
    pub torch_threads: usize,
    /// Mean wall time per step of each phase in this call (they add up to
    /// `step_time_s`). On a GPU, work still queued when a phase ends is counted in a
    /// later one.
    pub phase_time_s: PhaseTimes,
}

/// Where a training step's wall time goes: the batch (sampling and copying to the
/// device), forward and loss (up to reading the loss back), backward, and the optimizer
/// (gradient norm, clipping, the AdamW update).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PhaseTimes {
    pub data_s: f64,
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
}

impl PhaseTimes {
    fn add(&mut self, o: &PhaseTimes) {
        self.data_s += o.data_s;
        self.forward_s += o.forward_s;
        self.backward_s += o.backward_s;
        self.optimizer_s += o.optimizer_s;
    }

    fn per_step(&self, n: usize) -> PhaseTimes {
        let n = n.max(1) as f64;
        PhaseTimes {
            data_s: self.data_s / n,
            forward_s: self.forward_s / n,
            backward_s: self.backward_s / n,
            optimizer_s: self.optimizer_s / n,
        }
    }
}

/// Trains `cfg` on `data` in `out_dir`. A new folder starts a run; a folder holding a
/// run with the same config continues it (see `resume`), so rerunning a killed job is
/// safe; a different config is an error.
pub fn train(
    cfg: &TrainConfig,
    data: &TokenData,
    out_dir: &Path,
    opts: RunOptions<'_>,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    check_data(cfg, data)?;
    apply_threads(cfg);
    let cfg_path = out_dir.join(CONFIG_FILE);
    if cfg_path.exists() {
        let saved = read_config(&cfg_path)?;
        if saved != *cfg {
            return Err(TrainError::ConfigMismatch {
                dir: out_dir.to_path_buf(),
                what: config_diff(&saved, cfg),
            });
        }
        return resume(out_dir, data, opts);
    }
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    if let Some((json, _)) = data.tokenizer.artifact() {
        sinkrep_inputs::write_atomic(&out_dir.join(TOKENIZER_FILE), json.as_bytes())?;
    }
    let manifest = run_manifest(cfg, data);
    write_json(&out_dir.join(RUN_FILE), &manifest)?;
    write_json(&cfg_path, cfg)?;
    Session::fresh(cfg.clone(), data, out_dir)?.run(opts)
}

/// Continues the run in `out_dir` from its latest checkpoint (from the start if it was
/// stopped before its first one). `data` must be the data it was started with
/// (checked by fingerprint). On CPU the result is bit-identical to an uninterrupted run.
pub fn resume(out_dir: &Path, data: &TokenData, opts: RunOptions<'_>) -> Result<TrainOutcome> {
    let cfg = read_config(&out_dir.join(CONFIG_FILE))?;
    cfg.validate()?;
    check_data(&cfg, data)?;
    apply_threads(&cfg);
    let run_path = out_dir.join(RUN_FILE);
    let run: serde_json::Value = read_json(&run_path)?;
    if run["data"]["fingerprint"].as_str() != Some(data.fingerprint.as_str()) {
        return Err(TrainError::BadFile {
            path: run_path,
            msg: format!(
                "the run was trained on data {}, not the data given ({})",
                run["data"]["fingerprint"], data.fingerprint
            ),
        });
    }
    checkpoint::remove_partial(out_dir)?;
    let session = match Checkpoint::latest(out_dir)? {
        None => Session::fresh(cfg, data, out_dir)?,
        Some(ckpt) => Session::from_checkpoint(cfg, data, out_dir, &ckpt)?,
    };
    session.run(opts)
}

fn apply_threads(cfg: &TrainConfig) {
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads as i32);
    }
}

fn check_data(cfg: &TrainConfig, data: &TokenData) -> Result<()> {
    let matches = match (cfg.tokenizer, data.tokenizer.kind()) {
        (TokenizerKind::Bytes, TokenizerKind::Bytes) => true,
        (TokenizerKind::Ids, TokenizerKind::Ids) => cfg.task == data.task,
        (TokenizerKind::Bpe { vocab: want }, TokenizerKind::Bpe { vocab: got }) => got <= want,
        _ => false,
    };
    if !matches {
        return Err(TrainError::BadConfig(format!(
            "config wants tokenizer {:?} (task {:?}), data was made with {:?} (task {:?})",
            cfg.tokenizer,
            cfg.task,
            data.tokenizer.kind(),
            data.task
        )));
    }
    if data.vocab_size() > cfg.model.vocab_size {
        return Err(TrainError::BadConfig(format!(
            "data has {} token ids, the model's vocab_size is {}",
            data.vocab_size(),
            cfg.model.vocab_size
        )));
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::BadFile {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|e| TrainError::Data(e.to_string()))?;
    json.push(b'\n');
    Ok(sinkrep_inputs::write_atomic(path, &json)?)
}

fn read_config(path: &Path) -> Result<TrainConfig> {
    read_json(path)
}

/// Names the top-level config fields that differ.
fn config_diff(a: &TrainConfig, b: &TrainConfig) -> String {
    let (va, vb) = (serde_json::to_value(a), serde_json::to_value(b));
    let (Ok(serde_json::Value::Object(ma)), Ok(serde_json::Value::Object(mb))) = (va, vb) else {
        return "unknown difference".into();
    };
    let fields: Vec<&str> = ma
        .iter()
        .filter(|(k, v)| mb.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    format!("differs in: {}", fields.join(", "))
}

fn run_manifest(cfg: &TrainConfig, data: &TokenData) -> serde_json::Value {
    let docs = |d: &[crate::data::TokenDoc]| {
        d.iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name, "sha256": d.source_sha256, "tokens": d.tokens.len()
                })
            })
            .collect::<Vec<_>>()
    };
    // A synthetic corpus is its parameters: tens of thousands of generated sequences
    // are summarised, not listed.
    let (train_docs, val_docs) = match data.task {
        Some(_) => (
            serde_json::json!({"sequences": data.train.len()}),
            serde_json::json!({"sequences": data.val.len()}),
        ),
        None => (docs(&data.train).into(), docs(&data.val).into()),
    };
    serde_json::json!({
        "crate": concat!("sinkrep-train ", env!("CARGO_PKG_VERSION")),
        "libtorch": env!("SINKREP_LIBTORCH_VERSION"),
        "torch_threads": tch::get_num_threads(),
        "device": cfg.device,
        "cuda_available": tch::Cuda::is_available(),
        "seed": cfg.seed,
        "data": {
            "fingerprint": data.fingerprint,
            "tokenizer": data.tokenizer.kind(),
            "tokenizer_sha256": data.tokenizer.artifact().map(|(_, sha)| sha),
            "n_train_tokens": data.n_train_tokens(),
            "n_val_tokens": data.n_val_tokens(),
            "task": data.task,
            "train_docs": train_docs,
            "val_docs": val_docs,
        },
    })
}

/// The initial model: weights drawn on the CPU from `tch::manual_seed(seed)`, then
/// copied to the device, so a seed gives the same weights everywhere. Baseline and
/// head-wise RMSNorm models of one seed share every common weight (the head-norm gain is
/// initialised to ones and draws nothing); the gated variant draws its gate first, so
/// its other weights differ.
pub fn init_model(cfg: &TrainConfig) -> Result<Model> {
    let device = cfg.device()?;
    let mut model = Model::seeded(&cfg.model, cfg.seed as i64, device)?;
    model.attn_impl = AttnImpl::Fused;
    model.set_precision(cfg.precision, false);
    Ok(model)
}

struct Session<'d> {
    cfg: TrainConfig,
    data: &'d TokenData,
    dir: PathBuf,
    device: Device,
    model: Model,
    opt: AdamW,
    sched: LrSchedule,
    train_sampler: Sampler<'d>,
    eval_sampler: Sampler<'d>,
    /// Updates done.
    step: usize,
    train_log: Vec<StepRecord>,
    val_log: Vec<ValRecord>,
    /// Wall time of earlier sessions of this run.
    elapsed_before: f64,
}

impl<'d> Session<'d> {
    fn new(cfg: TrainConfig, data: &'d TokenData, dir: &Path, model: Model) -> Result<Self> {
        let opt = AdamW::new(
            &model.vs,
            cfg.beta1,
            cfg.beta2,
            cfg.adam_eps,
            cfg.weight_decay,
            cfg.decay_gains,
        );
        let train_sampler = Sampler::new(
            &data.train,
            cfg.seed,
            STREAM_TRAIN,
            cfg.batch_size,
            cfg.seq_len,
        )?;
        let eval_sampler = Sampler::new(
            &data.val,
            EVAL_SEED,
            STREAM_EVAL,
            cfg.batch_size,
            cfg.seq_len,
        )?;
        Ok(Session {
            sched: LrSchedule {
                lr: cfg.lr,
                min_lr: cfg.min_lr,
                warmup: cfg.warmup_steps,
                steps: cfg.steps,
            },
            device: cfg.device()?,
            cfg,
            data,
            dir: dir.to_path_buf(),
            model,
            opt,
            train_sampler,
            eval_sampler,
            step: 0,
            train_log: Vec::new(),
            val_log: Vec::new(),
            elapsed_before: 0.0,
        })
    }

    fn fresh(cfg: TrainConfig, data: &'d TokenData, dir: &Path) -> Result<Self> {
        let model = init_model(&cfg)?;
        let s = Session::new(cfg, data, dir, model)?;
        s.rewrite_logs(None)?;
        Ok(s)
    }

    fn from_checkpoint(
        cfg: TrainConfig,
        data: &'d TokenData,
        dir: &Path,
        ckpt: &Checkpoint,
    ) -> Result<Self> {
        let state = ckpt.read_state()?;
        if state.config != cfg {
            return Err(TrainError::BadFile {
                path: ckpt.dir.join(checkpoint::STATE_FILE),
                msg: format!(
                    "checkpoint config differs from {CONFIG_FILE}: {}",
                    config_diff(&state.config, &cfg)
                ),
            });
        }
        if state.data_fingerprint != data.fingerprint {
            return Err(TrainError::BadFile {
                path: ckpt.dir.join(checkpoint::STATE_FILE),
                msg: "checkpoint was trained on other data (fingerprint differs)".into(),
            });
        }
        let mut zero = cfg.clone();
        zero.model.zero_init = true;
        let mut model = Model::new(&zero.model, cfg.device()?)?;
        model.config.zero_init = false;
        model.attn_impl = AttnImpl::Fused;
        model.set_precision(cfg.precision, false);
        checkpoint::load_weights(&model, &ckpt.model_path())?;
        let mut s = Session::new(cfg, data, dir, model)?;
        let optim_path = ckpt.dir.join(checkpoint::OPTIM_FILE);
        s.opt
            .load_state(checkpoint::read_tensors(&optim_path)?, state.optimizer_t)
            .map_err(|e| TrainError::BadFile {
                path: optim_path,
                msg: e.to_string(),
            })?;
        s.step = state.step;
        s.train_log = state.train_log;
        s.val_log = state.val_log;
        s.elapsed_before = state.elapsed_s;
        s.rewrite_logs(Some(state.step))?;
        Ok(s)
    }

    /// Rewrites the CSV logs to hold exactly the records in memory (dropping rows a
    /// killed run wrote after its last checkpoint); keeps timing rows up to `upto`.
    fn rewrite_logs(&self, upto: Option<usize>) -> Result<()> {
        let mut train = String::from(TRAIN_HEADER);
        self.train_log.iter().for_each(|r| train += &train_row(r));
        let mut val = String::from(VAL_HEADER);
        self.val_log.iter().for_each(|r| val += &val_row(r));
        sinkrep_inputs::write_atomic(&self.dir.join(TRAIN_CSV), train.as_bytes())?;
        sinkrep_inputs::write_atomic(&self.dir.join(VAL_CSV), val.as_bytes())?;
        let timing_path = self.dir.join(TIMING_CSV);
        let mut timing = String::from(TIMING_HEADER);
        if let (Some(upto), Ok(old)) = (upto, fs::read_to_string(&timing_path)) {
            for line in old.lines().skip(1) {
                let step = line.split(',').next().and_then(|s| s.parse::<usize>().ok());
                if step.is_some_and(|s| s <= upto) {
                    timing += line;
                    timing.push('\n');
                }
            }
        }
        sinkrep_inputs::write_atomic(&timing_path, timing.as_bytes())?;
        Ok(())
    }

    fn latest_checkpoint(&self) -> Option<PathBuf> {
        Checkpoint::latest(&self.dir).ok().flatten().map(|c| c.dir)
    }

    fn non_finite(&self, step: usize, what: &'static str, value: f64) -> TrainError {
        TrainError::NonFinite {
            step,
            what,
            value,
            last_checkpoint: self.latest_checkpoint(),
        }
    }

    /// Mean loss over the fixed validation windows.
    fn val_loss(&self) -> Result<f64> {
        tch::no_grad(|| {
            let mut sum = 0.0;
            for i in 0..self.cfg.eval_batches {
                let (x, y) = self.eval_sampler.batch(i as u64, self.device);
                sum += self
                    .model
                    .loss(&x, &y, &mut Hooks::new())?
                    .double_value(&[]);
            }
            Ok(sum / self.cfg.eval_batches as f64)
        })
    }

    fn evaluate(&mut self, step: usize, val_file: &mut fs::File) -> Result<()> {
        let val_loss = self.val_loss()?;
        if !val_loss.is_finite() {
            return Err(self.non_finite(step, "validation loss", val_loss));
        }
        let rec = ValRecord {
            step,
            tokens: (step * self.cfg.tokens_per_step()) as u64,
            val_loss,
        };
        append(val_file, &self.dir.join(VAL_CSV), &val_row(&rec))?;
        self.val_log.push(rec);
        Ok(())
    }

    fn checkpoint(&self, step: usize, elapsed_s: f64) -> Result<()> {
        if !self.opt.params_finite() {
            return Err(self.non_finite(step, "weight after the update", f64::NAN));
        }
        let state = CheckpointState {
            format: checkpoint::FORMAT,
            step,
            optimizer_t: self.opt.t,
            config: self.cfg.clone(),
            data_fingerprint: self.data.fingerprint.clone(),
            tokenizer_sha256: self
                .data
                .tokenizer
                .artifact()
                .map(|(_, sha)| sha.to_string()),
            train_log: self.train_log.clone(),
            val_log: self.val_log.clone(),
            elapsed_s,
            torch_threads: tch::get_num_threads().max(0) as usize,
            files: BTreeMap::new(),
        };
        checkpoint::save(&self.dir, &self.model, &self.opt, state)?;
        if self.cfg.keep_checkpoints > 0 {
            let all = Checkpoint::list(&self.dir)?;
            let excess = all.len().saturating_sub(self.cfg.keep_checkpoints);
            for old in &all[..excess] {
                fs::remove_dir_all(&old.dir).map_err(io_err(&old.dir))?;
            }
        }
        Ok(())
    }

    fn hook(&self, step: usize, opts: &mut RunOptions<'_>) -> Result<()> {
        if let Some(f) = opts.on_eval.as_mut() {
            tch::no_grad(|| f(step, &self.model))
                .map_err(|error| TrainError::Callback { step, error })?;
        }
        Ok(())
    }

    fn run(mut self, mut opts: RunOptions<'_>) -> Result<TrainOutcome> {
        let open = |name: &str| {
            let path = self.dir.join(name);
            fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))
        };
        let (mut train_file, mut val_file, mut timing_file) =
            (open(TRAIN_CSV)?, open(VAL_CSV)?, open(TIMING_CSV)?);
        let start = Instant::now();
        if self.step == 0 {
            self.evaluate(0, &mut val_file)?;
            self.hook(0, &mut opts)?;
        }
        let pb = progress_bar(opts.progress, self.cfg.steps, self.step);
        let tps = self.cfg.tokens_per_step();
        let (mut train_secs, mut steps_run) = (0.0f64, 0usize);
        let mut phases = PhaseTimes::default();
        let mut completed = self.step >= self.cfg.steps;
        while self.step < self.cfg.steps {
            let step = self.step + 1;
            let t0 = Instant::now();
            let lr = self.sched.at(step);
            let (x, y) = self.train_sampler.batch(step as u64, self.device);
            let t_data = Instant::now();
            let loss = self.model.loss(&x, &y, &mut Hooks::new())?;
            let loss_v = loss.double_value(&[]);
            if !loss_v.is_finite() {
                return Err(self.non_finite(step, "training loss", loss_v));
            }
            let t_forward = Instant::now();
            self.opt.zero_grad();
            loss.backward();
            let t_backward = Instant::now();
            let grad_norm = self.opt.grad_norm();
            if !grad_norm.is_finite() {
                return Err(self.non_finite(step, "gradient norm", grad_norm));
            }
            if self.cfg.grad_clip > 0.0 && grad_norm > self.cfg.grad_clip {
                // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6).
                self.opt
                    .scale_grads(self.cfg.grad_clip / (grad_norm + 1e-6));
            }
            self.opt.step(lr);
            self.step = step;
            let step_s = t0.elapsed().as_secs_f64();
            phases.add(&PhaseTimes {
                data_s: (t_data - t0).as_secs_f64(),
                forward_s: (t_forward - t_data).as_secs_f64(),
                backward_s: (t_backward - t_forward).as_secs_f64(),
                optimizer_s: step_s - (t_backward - t0).as_secs_f64(),
            });
            train_secs += step_s;
            steps_run += 1;

            let rec = StepRecord {
                step,
                tokens: (step * tps) as u64,
                train_loss: loss_v,
                lr,
                grad_norm,
            };
            append(&mut train_file, &self.dir.join(TRAIN_CSV), &train_row(&rec))?;
            self.train_log.push(rec);
            let elapsed = self.elapsed_before + start.elapsed().as_secs_f64();
            let rate = (steps_run * tps) as f64 / train_secs.max(1e-9);
            append(
                &mut timing_file,
                &self.dir.join(TIMING_CSV),
                &format!("{step},{elapsed:.3},{step_s:.4},{rate:.0}\n"),
            )?;
            pb.set_position(step as u64);
            pb.set_message(format!("loss {:.4} | {rate:.0} tok/s", loss_v));

            let eval = self.cfg.is_eval_step(step);
            if eval {
                self.evaluate(step, &mut val_file)?;
            }
            if self.cfg.is_ckpt_step(step) {
                self.checkpoint(step, elapsed)?;
            }
            if eval {
                self.hook(step, &mut opts)?;
            }
            completed = step == self.cfg.steps;
            if opts.stop_after == Some(step) {
                break;
            }
        }
        pb.finish_and_clear();
        let outcome = TrainOutcome {
            out_dir: self.dir.clone(),
            steps_done: self.step,
            completed,
            final_train_loss: self.train_log.last().map(|r| r.train_loss),
            final_val_loss: self.val_log.last().map(|r| r.val_loss),
            checkpoints: Checkpoint::list(&self.dir)?
                .into_iter()
                .map(|c| c.dir)
                .collect(),
            train_csv: self.dir.join(TRAIN_CSV),
            val_csv: self.dir.join(VAL_CSV),
            timing_csv: self.dir.join(TIMING_CSV),
            tokens_per_s: (steps_run * tps) as f64 / train_secs.max(1e-9),
            step_time_s: train_secs / steps_run.max(1) as f64,
            phase_time_s: phases.per_step(steps_run),
            torch_threads: tch::get_num_threads().max(0) as usize,
            train_log: self.train_log,
            val_log: self.val_log,
        };
        if completed {
            write_outcome(&outcome)?;
        }
        Ok(outcome)
    }
}

fn append(file: &mut fs::File, path: &Path, line: &str) -> Result<()> {
    file.write_all(line.as_bytes()).map_err(io_err(path))
}

fn progress_bar(show: bool, steps: usize, pos: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(steps as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps | {msg} | {elapsed_precise} < {eta_precise}",
    ) {
        pb.set_style(style);
    }
    pb.set_position(pos as u64);
    pb
}

/// `outcome.json`: final losses and the sha256 of every output that is reproducible.
fn write_outcome(o: &TrainOutcome) -> Result<()> {
    let mut outputs = BTreeMap::new();
    for p in [&o.train_csv, &o.val_csv] {
        outputs.insert(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sinkrep_inputs::sha256_file(p)?,
        );
    }
    if let Some(last) = o.checkpoints.last() {
        for f in [checkpoint::MODEL_FILE, checkpoint::OPTIM_FILE] {
            let p = last.join(f);
            let rel = p.strip_prefix(&o.out_dir).unwrap_or(&p);
            outputs.insert(rel.display().to_string(), sinkrep_inputs::sha256_file(&p)?);
        }
    }
    let json = serde_json::json!({
        "steps_done": o.steps_done,
        "final_train_loss": o.final_train_loss,
        "final_val_loss": o.final_val_loss,
        "tokens_per_s": o.tokens_per_s,
        "step_time_s": o.step_time_s,
        "torch_threads": o.torch_threads,
        "outputs_sha256": outputs,
    });
    write_json(&o.out_dir.join(OUTCOME_FILE), &json)
}
