//! Models the replications train from scratch ("subjects"), trained once per invocation
//! and in parallel, and the measurement every replication takes of them along training.
//!
//! A subject is one `TrainConfig` trained on the pinned corpus. [`obtain`] trains the
//! configs it has not trained yet in this invocation, one run per job and each job on
//! one libtorch intra-op thread: a run's numbers depend only on its config, never on how
//! many runs train at once or on `--threads`. Runs are keyed by the sha256 of their
//! canonical config and the measurement's identity, kept in memory for the process and
//! on disk under `<out>/<scale>/.shared/subjects/<hash>/` (the runner empties `.shared`
//! when an invocation starts, so nothing outlives the code that made it).
//!
//! The protocol sizes (model, data, optimisation) of each scale's subject are claim 4's
//! judged configuration: `replications/headwise-rmsnorm/claim.toml`, `[scale.<s>.subject]`.

pub mod imported;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sinkrep_analysis::{analyze, effective_rank, pinned, AnalyzeOptions, SinkReport};
use sinkrep_model::{AttnVariant, Config, Hooks, Model, Precision, RopePairing, RopeScaling};
use sinkrep_runner::{Claim, RunContext, Scale};
use sinkrep_stats::{mean, ratio_at, SINK_EPS};
use sinkrep_train::data::{EVAL_SEED, STREAM_EVAL};
use sinkrep_train::{
    train, Corpus, RunOptions, Sampler, SyntheticTask, TokenData, TokenizerKind, TrainConfig,
};
use tch::Tensor;

/// Claim 4's claim file: its `[scale.<s>.subject]` tables are the subjects' sizes.
const PROTOCOL_CLAIM: &str = include_str!("../../../replications/headwise-rmsnorm/claim.toml");
const PROTOCOL_ORIGIN: &str = "replications/headwise-rmsnorm/claim.toml";

/// The validation windows the sink metrics are measured on are batch `ANALYSIS_STEP` of
/// the fixed validation sampler: a step the validation loss (steps 0..eval_batches)
/// never draws.
pub const ANALYSIS_STEP: u64 = 1_000_000;
/// Bumped whenever [`measure`] changes what it computes: part of every subject's key.
const MEASURE_VERSION: u32 = 3;

/// How the head-wise RMSNorm gain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GainInit {
    /// 1, RMSNorm's usual start.
    One,
    /// The RMS of a value vector at initialisation: the block's normalised input has unit
    /// RMS per coordinate and W_V is N(0, s^2) with s = min(0.02, 1/sqrt(d_model)), so
    /// each coordinate of v (and of position 0's un-averaged aggregation o_0 = v_0) has
    /// RMS s sqrt(d_model). Later positions average several values and are smaller.
    Matched,
}

/// The training protocol of one scale's subjects (`[scale.<s>.subject]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectSizes {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    /// Absent: byte tokens (vocab 256); else a byte-level BPE of this many tokens.
    #[serde(default)]
    pub bpe_vocab: Option<usize>,
    pub seq_len: usize,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    /// Weight decay on normalisation gains too (see `TrainConfig::decay_gains`).
    pub decay_gains: bool,
    pub gain_init: GainInit,
    pub eval_every: usize,
    pub eval_batches: usize,
    /// Validation windows (of seq_len tokens) the sink metrics are measured on.
    pub analysis_windows: usize,
    /// f32 on the CPU scales; bf16 autocast-style at gpu scale.
    pub precision: Precision,
    /// A synthetic task instead of the text corpus (`bpe_vocab` must then be absent):
    /// the synthetic subject (see `sinkrep_train::synthetic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<SyntheticTask>,
}

impl SubjectSizes {
    /// This scale's subject sizes, from claim 4's claim file.
    pub fn at(scale: Scale) -> Result<SubjectSizes> {
        Subject::Corpus.sizes(scale)
    }

    pub fn tokenizer(&self) -> TokenizerKind {
        match (self.task, self.bpe_vocab) {
            (Some(_), _) => TokenizerKind::Ids,
            (None, None) => TokenizerKind::Bytes,
            (None, Some(vocab)) => TokenizerKind::Bpe { vocab },
        }
    }

    /// The model vocabulary: the task's ids and BOS, the BPE's, or 256 bytes.
    pub fn vocab_size(&self) -> usize {
        match (self.task, self.bpe_vocab) {
            (Some(t), _) => t.model_vocab(),
            (None, v) => v.unwrap_or(256),
        }
    }

    /// The initial head-norm gain these sizes give.
    pub fn head_norm_init(&self) -> f64 {
        match self.gain_init {
            GainInit::One => 1.0,
            GainInit::Matched => {
                0.02f64.min(1.0 / (self.d_model as f64).sqrt()) * (self.d_model as f64).sqrt()
            }
        }
    }

    /// The training config of one (variant, seed). Everything but the variant and the
    /// seed is shared, so a seed's data order is identical across variants; knobs a
    /// variant does not have (the head-norm gain) are left at their defaults so that
    /// equal runs get equal keys.
    pub fn train_config(&self, variant: AttnVariant, seed: u64, device: &str) -> TrainConfig {
        let base = TrainConfig::small(variant);
        let headwise = matches!(variant, AttnVariant::HeadwiseRmsnorm { .. });
        TrainConfig {
            model: Config {
                vocab_size: self.vocab_size(),
                d_model: self.d_model,
                n_layers: self.n_layers,
                n_heads: self.n_heads,
                n_kv_heads: self.n_heads,
                head_dim: self.d_model / self.n_heads,
                d_ff: self.d_ff,
                rms_eps: 1e-5,
                rope_base: 10_000.0,
                rope_pairing: RopePairing::HalfSplit,
                rope_scaling: RopeScaling::None,
                tied_embeddings: true,
                max_seq_len: self.seq_len,
                attn_variant: variant,
                head_norm_init: if headwise { self.head_norm_init() } else { 1.0 },
                zero_init: false,
            },
            tokenizer: self.tokenizer(),
            task: self.task,
            batch_size: self.batch,
            seq_len: self.seq_len,
            steps: self.steps,
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup,
            weight_decay: self.weight_decay,
            decay_gains: self.decay_gains,
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            // One checkpoint, at the end: the subject's final weights.
            ckpt_every: 0,
            keep_checkpoints: 1,
            seed,
            device: device.to_string(),
            // Every run trains on one intra-op thread (runs go in parallel instead).
            threads: 1,
            precision: self.precision,
            ..base
        }
    }
}

/// The two from-scratch subjects every replication measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// Claim 4's judged configuration on the pinned text corpus: at the CPU scales it
    /// forms no sink.
    Corpus,
    /// A small model trained on a synthetic task (`[scale.<s>.synthetic.subject]` of
    /// claim 4's file) that forms a sink on position 0 within a few CPU-minutes.
    Synthetic,
}

impl Subject {
    /// The prefix of this subject's metrics and files in the replications (`scratch` for
    /// the corpus subject, as before the synthetic one existed).
    pub fn prefix(self) -> &'static str {
        match self {
            Subject::Corpus => "scratch",
            Subject::Synthetic => "synthetic",
        }
    }

    /// This subject's sizes at `scale`, from claim 4's claim file.
    pub fn sizes(self, scale: Scale) -> Result<SubjectSizes> {
        // The other keys of the table are headwise-rmsnorm's (it reads them strictly).
        #[derive(Deserialize)]
        struct Synthetic {
            subject: SubjectSizes,
        }
        #[derive(Deserialize)]
        struct Protocol {
            subject: SubjectSizes,
            synthetic: Synthetic,
        }
        let p: Protocol = Claim::parse(PROTOCOL_CLAIM, PROTOCOL_ORIGIN)?.scale_params(scale)?;
        let sizes = match self {
            Subject::Corpus => p.subject,
            Subject::Synthetic => p.synthetic.subject,
        };
        anyhow::ensure!(
            sizes.task.is_some() == (self == Subject::Synthetic),
            "{PROTOCOL_ORIGIN}: the synthetic subject (and only it) has a `task`"
        );
        Ok(sizes)
    }
}

/// Sink and parity measurements of one model at one evaluation step.
#[derive(Debug, Clone)]
pub struct EvalPoint {
    pub step: usize,
    /// Sink_1^0.3 in percent (share of (sequence, layer, head) with alpha_0 > 0.3).
    pub sink_pct: f64,
    /// Mean attention on position 0, mean over layers and in the last layer.
    pub attn_mass_mean: f64,
    pub attn_mass_last: f64,
    pub attn_mass_max: f64,
    /// DomRatio of the first token's residual stream after each layer: mean, max over
    /// layers, last layer.
    pub dom_ratio_mean: f64,
    pub dom_ratio_max: f64,
    pub dom_ratio_last: f64,
    /// Var(pos 0) / mean Var(pos > 0) of the value-aggregation output o (before any
    /// head norm or gate), mean over layers.
    pub agg_var_ratio_mean: f64,
    /// The same ratio of the attention output after the head norm / gate and W_O.
    pub out_var_ratio_mean: f64,
    /// Var(pos 0) / mean Var(pos > 0) of o with the variance taken across the channels of
    /// each position's vector in one sequence (mean over layers and over the first
    /// [`CHANNEL_VAR_WINDOWS`] windows). Unlike the across-sequences ratio it is defined
    /// when position 0 holds the same token in every sequence (a BOS, whose variance
    /// across sequences is 0): it asks whether o_0 = v_0, never averaged, is spread wider
    /// than the averaged outputs.
    pub agg_var_ratio_channels: f64,
    /// The same across-channels ratio of the attention output after the head norm /
    /// gate and W_O (mean over layers and windows), and the mean of |ln| of it: the
    /// parity gap where position 0 holds a fixed token, whose across-sequences ratio is
    /// 0 (and its |ln| infinite) in every variant.
    pub out_var_ratio_channels: f64,
    pub abs_log_out_var_ratio_channels: f64,
    /// Mean over layers of |ln out_var_ratio|: 0 is perfect parity.
    pub abs_log_out_var_ratio: f64,
    /// Effective rank of the final (normalised) hidden states, (windows x T) x d_model.
    pub eff_rank: f64,
    /// The largest FFN activation at position 0: |mean activation| of each layer's
    /// strongest channel there, max over layers, and that channel's ratio to its layer's
    /// median |activation|.
    pub top_ffn_abs: f64,
    pub top_ffn_ratio: f64,
    /// Residual peak: max over layers of max|h_0| / (mean over other positions of
    /// max|h_t|).
    pub max_abs_ratio: f64,
    /// The full report, kept for the last step only.
    pub report: Option<SinkReport>,
}

/// Windows whose across-channels variance ratio `measure` averages.
pub const CHANNEL_VAR_WINDOWS: usize = 4;

/// Measures one model on the analysis windows.
pub fn measure(model: &Model, windows: &[Vec<i64>], step: usize) -> Result<EvalPoint> {
    let opts = AnalyzeOptions {
        sink_pos: 0,
        eps: SINK_EPS,
        batch: windows.len(),
        with_attn_out: true,
        ..AnalyzeOptions::default()
    };
    let report = analyze(model, windows, &opts, &mut |_| {}).context("analysing the model")?;
    let ls = &report.layers;
    let last = ls.last().context("the model has no layers")?;
    let out_ratios: Vec<f64> = ls
        .iter()
        .map(|l| ratio_at(&l.attn_out_var_by_pos, 0))
        .collect();
    let eff_rank = final_hidden_eff_rank(model, windows)?;
    let top = ls
        .iter()
        .filter_map(|l| l.top_ffn_channels.first())
        .max_by(|a, b| a.value.abs().total_cmp(&b.value.abs()));
    let one = AnalyzeOptions {
        batch: 1,
        ..opts.clone()
    };
    let (mut agg_ch, mut out_ch, mut gap_ch) = (Vec::new(), Vec::new(), Vec::new());
    for w in windows.iter().take(CHANNEL_VAR_WINDOWS) {
        let r = analyze(model, std::slice::from_ref(w), &one, &mut |_| {})
            .context("analysing one window")?;
        agg_ch.push(mean(r.layers.iter().map(|l| l.agg_var_ratio)));
        let out: Vec<f64> = r
            .layers
            .iter()
            .map(|l| ratio_at(&l.attn_out_var_by_pos, 0))
            .collect();
        out_ch.push(mean(out.iter().copied()));
        gap_ch.push(mean(out.iter().map(|x| x.ln().abs())));
    }
    Ok(EvalPoint {
        agg_var_ratio_channels: mean(agg_ch.iter().copied()),
        out_var_ratio_channels: mean(out_ch.iter().copied()),
        abs_log_out_var_ratio_channels: mean(gap_ch.iter().copied()),
        top_ffn_abs: top.map_or(f64::NAN, |c| c.value.abs()),
        top_ffn_ratio: top.map_or(f64::NAN, |c| c.ratio_to_median),
        max_abs_ratio: ls
            .iter()
            .map(|l| l.max_abs_sink / l.max_abs_others)
            .fold(f64::NAN, f64::max),
        step,
        sink_pct: report.sink_metric.value,
        attn_mass_mean: mean(ls.iter().map(|l| l.attn_mass)),
        attn_mass_last: last.attn_mass,
        attn_mass_max: ls.iter().map(|l| l.attn_mass).fold(f64::NAN, f64::max),
        dom_ratio_mean: mean(ls.iter().map(|l| l.dom_ratio)),
        dom_ratio_max: ls.iter().map(|l| l.dom_ratio).fold(f64::NAN, f64::max),
        dom_ratio_last: last.dom_ratio,
        agg_var_ratio_mean: mean(ls.iter().map(|l| l.agg_var_ratio)),
        out_var_ratio_mean: mean(out_ratios.iter().copied()),
        abs_log_out_var_ratio: mean(out_ratios.iter().map(|r| r.ln().abs())),
        eff_rank,
        report: Some(report),
    })
}

/// exp(entropy) of the singular values of the (windows x T, d_model) matrix of final
/// normalised hidden states.
pub fn final_hidden_eff_rank(model: &Model, windows: &[Vec<i64>]) -> Result<f64> {
    let t = windows.first().map_or(0, Vec::len) as i64;
    let flat: Vec<i64> = windows.iter().flatten().copied().collect();
    let sv: Vec<f64> = tch::no_grad(|| -> Result<Vec<f64>> {
        let tokens = Tensor::from_slice(&flat)
            .view([windows.len() as i64, t])
            .to_device(model.device());
        let h = model.forward(&tokens, &mut Hooks::new())?;
        let d = h.size()[2];
        let m = h
            .reshape([-1, d])
            .to_kind(tch::Kind::Double)
            .to_device(tch::Device::Cpu);
        // Singular values as sqrt of the eigenvalues of the Gram matrix M^T M (d x d,
        // f64): tch cannot pass driver=None to linalg_svdvals, and a driver is CUDA-only.
        let sv = m
            .tr()
            .matmul(&m)
            .f_linalg_eigvalsh("L")?
            .clamp_min(0.0)
            .sqrt();
        Ok(Vec::<f64>::try_from(&sv)?)
    })?;
    Ok(effective_rank(&sv))
}

/// The fixed validation windows the sink metrics use: the first `seq_len` tokens of each
/// window of batch [`ANALYSIS_STEP`] of the validation sampler (independent of the seed).
pub fn analysis_windows(data: &TokenData, n: usize, seq_len: usize) -> Result<Vec<Vec<i64>>> {
    let sampler = Sampler::new(&data.val, EVAL_SEED, STREAM_EVAL, n, seq_len)?;
    let ids = sampler.batch_ids(ANALYSIS_STEP);
    Ok(ids
        .chunks(seq_len + 1)
        .map(|w| w[..seq_len].to_vec())
        .collect())
}

/// What one training run measured, however it was trained: its loss curves and the sink
/// metrics along training (the subjects trained here, or runs imported from elsewhere,
/// see [`imported`]).
#[derive(Debug)]
pub struct Measured {
    pub tokens_per_step: usize,
    /// (step, loss of that step's batch).
    pub train: Vec<(usize, f64)>,
    /// (step, validation loss) at every evaluation step.
    pub val: Vec<(usize, f64)>,
    /// [`measure`] at every evaluation step (of an imported run: at every checkpoint);
    /// the last one keeps its report.
    pub evals: Vec<EvalPoint>,
}

impl Measured {
    pub fn final_val(&self) -> f64 {
        self.val.last().map_or(f64::NAN, |v| v.1)
    }
    /// Mean training loss over the last 10% of steps (one batch's loss is noisy).
    pub fn final_train(&self) -> f64 {
        let n = (self.train.len() / 10).max(1);
        mean(
            self.train[self.train.len().saturating_sub(n)..]
                .iter()
                .map(|x| x.1),
        )
    }
    pub fn last_eval(&self) -> Option<&EvalPoint> {
        self.evals.last()
    }
    /// Validation loss at `step` (an evaluation step), NaN if not evaluated there.
    pub fn val_at(&self, step: usize) -> f64 {
        self.val
            .iter()
            .find(|v| v.0 == step)
            .map_or(f64::NAN, |v| v.1)
    }
}

/// One finished training run of a subject, with its measurements along training.
#[derive(Debug)]
pub struct Trained {
    pub config: TrainConfig,
    /// sha256 key of the run (config, data, windows, measurement version).
    pub key: String,
    pub measured: Arc<Measured>,
    /// The final checkpoint folder (weights and state), for [`Trained::load`].
    pub checkpoint: PathBuf,
}

impl std::ops::Deref for Trained {
    type Target = Measured;
    fn deref(&self) -> &Measured {
        &self.measured
    }
}

impl Trained {
    /// The final model, with explicit attention (ready for probes), on `device`.
    pub fn load(&self, device: tch::Device) -> Result<Model> {
        let (mut model, _) = sinkrep_train::load_model(&self.checkpoint, device)
            .with_context(|| format!("loading {}", self.checkpoint.display()))?;
        model.set_precision(self.config.precision, true);
        Ok(model)
    }
    /// The final weights file (its sha256 goes into manifests).
    pub fn weights_file(&self) -> PathBuf {
        self.checkpoint.join(sinkrep_train::checkpoint::MODEL_FILE)
    }
}

/// The key of a run: sha256 over its canonical config, the data fingerprint, the
/// analysis windows and the measurement version.
pub fn run_key(cfg: &TrainConfig, data: &TokenData, windows: &[Vec<i64>]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(cfg)?);
    h.update(data.fingerprint.as_bytes());
    h.update(serde_json::to_vec(windows)?);
    h.update(MEASURE_VERSION.to_le_bytes());
    Ok(h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect())
}

type Cache = Mutex<HashMap<PathBuf, Arc<Trained>>>;

/// Finished runs of this process, by run folder (which holds the key).
fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The runs of `configs`, in order: each one trained now unless this invocation already
/// trained it (same key, same shared folder). New runs train in parallel on
/// `ctx.jobs()` threads, each single-threaded.
pub fn obtain(
    ctx: &RunContext,
    data: &TokenData,
    windows: &[Vec<i64>],
    configs: &[TrainConfig],
    label: &str,
) -> Result<Vec<Arc<Trained>>> {
    let root = ctx.shared_dir().join("subjects");
    let mut dirs = Vec::with_capacity(configs.len());
    for cfg in configs {
        dirs.push(root.join(run_key(cfg, data, windows)?));
    }
    let lookup = |dir: &Path| -> Option<Arc<Trained>> {
        let c = cache().lock().unwrap_or_else(|e| e.into_inner());
        c.get(dir).filter(|t| t.checkpoint.is_dir()).cloned()
    };
    // Configs to train now, once each (a list may name one config twice).
    let mut todo: Vec<usize> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        if lookup(dir).is_none() && !todo.iter().any(|&j| dirs[j] == *dir) {
            todo.push(i);
        }
    }
    if !todo.is_empty() {
        let total: u64 = todo.iter().map(|&i| configs[i].steps as u64).sum();
        let pb = ctx.progress(total, &format!("{label}: {} run(s)", todo.len()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.jobs().min(todo.len()).max(1))
            .build()
            .context("starting the training thread pool")?;
        let prev_threads = tch::get_num_threads();
        let results: Vec<Result<Trained>> = pool.install(|| {
            use rayon::prelude::*;
            todo.par_iter()
                .map(|&i| {
                    let r =
                        train_subject(&configs[i], data, windows, &dirs[i], &|n| pb.inc(n as u64));
                    r.with_context(|| {
                        format!(
                            "training {:?} seed {}",
                            configs[i].model.attn_variant, configs[i].seed
                        )
                    })
                })
                .collect()
        });
        // Training set the calling thread's libtorch pool only in the workers, but MKL's
        // count is process-wide: restore it for whatever runs next on this thread.
        tch::set_num_threads(prev_threads);
        pb.finish_and_clear();
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        for (&i, r) in todo.iter().zip(results) {
            c.insert(dirs[i].clone(), Arc::new(r?));
        }
    }
    dirs.iter()
        .map(|d| lookup(d).context("a trained subject vanished from the shared folder"))
        .collect()
}

/// Trains one run in `dir` on this thread with one intra-op thread, measuring at every
/// evaluation step, and keeps only its final checkpoint. A folder left by a killed run
/// is started again. `on_steps` hears of the steps done at every evaluation.
pub fn train_subject(
    cfg: &TrainConfig,
    data: &TokenData,
    windows: &[Vec<i64>],
    dir: &Path,
    on_steps: &(dyn Fn(usize) + Sync),
) -> Result<Trained> {
    // libtorch's OpenMP thread count is per thread: set it in this worker.
    tch::set_num_threads(1);
    if dir.exists() {
        // Left by a killed invocation of this same code: start again.
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut evals = Vec::new();
    let mut last_step = 0;
    let mut on_eval = |step: usize, model: &Model| -> anyhow::Result<()> {
        let mut p = measure(model, windows, step)?;
        if step != cfg.steps {
            p.report = None;
        }
        evals.push(p);
        on_steps(step - last_step);
        last_step = step;
        Ok(())
    };
    let out = train(
        cfg,
        data,
        dir,
        RunOptions {
            progress: false,
            stop_after: None,
            on_eval: Some(&mut on_eval),
        },
    )?;
    anyhow::ensure!(out.completed, "training did not finish");
    let checkpoint = out
        .checkpoints
        .last()
        .cloned()
        .context("training left no final checkpoint")?;
    Ok(Trained {
        key: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        measured: Arc::new(Measured {
            tokens_per_step: cfg.tokens_per_step(),
            train: out
                .train_log
                .iter()
                .map(|r| (r.step, r.train_loss))
                .collect(),
            val: out.val_log.iter().map(|r| (r.step, r.val_loss)).collect(),
            evals,
        }),
        checkpoint,
        config: cfg.clone(),
    })
}

/// The subject's data: the synthetic task's sequences when `sizes` has a task (generated,
/// nothing to fetch), else the pinned corpus tokenised for `sizes`, with the corpus files
/// registered as inputs.
pub fn corpus(ctx: &mut RunContext, sizes: &SubjectSizes) -> Result<TokenData> {
    if let Some(task) = sizes.task {
        anyhow::ensure!(
            sizes.bpe_vocab.is_none(),
            "a synthetic subject has no BPE vocabulary (bpe_vocab must be absent)"
        );
        let seq_len = sizes.seq_len;
        return ctx.stage("generate synthetic task", |_| {
            Ok(TokenData::synthetic(&task, seq_len)?)
        });
    }
    for f in pinned::text_files()? {
        ctx.input(&f)?;
    }
    let kind = sizes.tokenizer();
    ctx.stage("tokenize corpus", |_| {
        Ok(TokenData::build(&Corpus::shakespeare()?, kind)?)
    })
}

/// The baseline subject of this scale for another claim's "from scratch" section.
#[derive(Debug)]
pub struct FromScratch {
    pub model: Model,
    pub config: TrainConfig,
    pub seed: u64,
    /// The validation windows sinks are measured on (`analysis_windows`).
    pub windows: Vec<Vec<i64>>,
    pub final_val_loss: f64,
    /// The run's losses and measurements along training.
    pub measured: Arc<Measured>,
}

/// This scale's baseline `subject` for seeds `ctx.seeds(n)` (trained now unless this
/// invocation already trained it, e.g. for claim 4), with the corpus and each model's
/// weights registered as inputs and the training config recorded as
/// `<prefix>_train_config`.
pub fn from_scratch_stage(
    ctx: &mut RunContext,
    subject: Subject,
    n: usize,
) -> Result<Vec<FromScratch>> {
    let sizes = subject.sizes(ctx.scale())?;
    let prefix = subject.prefix();
    let device = ctx.device_name().to_string();
    let dev = pinned::device(&device)?;
    let data = corpus(ctx, &sizes)?;
    let windows = analysis_windows(&data, sizes.analysis_windows, sizes.seq_len)?;
    let seeds = ctx.seeds(n);
    let configs: Vec<TrainConfig> = seeds
        .iter()
        .map(|&s| sizes.train_config(AttnVariant::Baseline, s, &device))
        .collect();
    let runs = ctx.stage(&format!("{prefix}-train"), |ctx| {
        obtain(ctx, &data, &windows, &configs, &format!("{prefix} subject"))
    })?;
    ctx.config(&format!("{prefix}_train_config"), &configs[0])?;
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        ctx.input(r.weights_file())?;
        out.push(FromScratch {
            model: r.load(dev)?,
            seed: r.config.seed,
            config: r.config.clone(),
            windows: windows.clone(),
            final_val_loss: r.final_val(),
            measured: r.measured.clone(),
        });
    }
    Ok(out)
}

/// Massive dims have emerged when the first token's DomRatio (max over layers) exceeds
/// this. A Gaussian vector of d = 128 has max|h|/mean|h| of about 3.5; 10 is well clear.
pub const MASSIVE_DOM_RATIO: f64 = 10.0;

/// The first evaluation step at which `f` holds; NaN if never.
pub fn first_step(evals: &[EvalPoint], f: impl Fn(&EvalPoint) -> bool) -> f64 {
    evals
        .iter()
        .find(|e| f(e))
        .map_or(f64::NAN, |e| e.step as f64)
}

/// The first evaluation step with a sink on position 0: Sink_0^0.3 >= 30% (Gu et al.'s
/// threshold for a model "having" a sink); NaN if none.
pub fn sink_step(evals: &[EvalPoint]) -> f64 {
    first_step(evals, |e| e.sink_pct >= 100.0 * SINK_EPS)
}

/// Trains (or reuses) `subject`'s baseline for `SCRATCH_SEEDS` seeds and runs `f` once
/// per model as a per-seed measurement (`RunContext::per_seed`: every metric `f` records
/// becomes a seed family). `f` is told whether its model is the first seed's, whose
/// tables a section writes.
pub fn per_scratch_seed(
    ctx: &mut RunContext,
    subject: Subject,
    f: impl FnMut(&mut RunContext, &FromScratch, bool) -> Result<()>,
) -> Result<()> {
    per_scratch_seeds(ctx, subject, SCRATCH_SEEDS, f)
}

/// [`per_scratch_seed`] over `n` seeds (the first `n` of the replication's seeds), for a
/// section whose judged interval needs more than `SCRATCH_SEEDS`.
pub fn per_scratch_seeds(
    ctx: &mut RunContext,
    subject: Subject,
    n: usize,
    mut f: impl FnMut(&mut RunContext, &FromScratch, bool) -> Result<()>,
) -> Result<()> {
    let subjects = from_scratch_stage(ctx, subject, n)?;
    let seeds: Vec<u64> = subjects.iter().map(|s| s.seed).collect();
    ctx.per_seed(&seeds, |ctx, i| f(ctx, &subjects[i], i == 0))
}

/// How many seeds of the baseline subject other claims' "from scratch" sections analyse:
/// their metrics are means over these seeds, so drift checks get a seed spread.
pub const SCRATCH_SEEDS: usize = 3;
