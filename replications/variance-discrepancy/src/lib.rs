//! Claim 1 of "The Structural Origin of Attention Sink" (arXiv 2605.06611): under a causal
//! mask the first token's value-aggregation output is never averaged, so its variance is
//! an outlier and later positions' variance falls with position; W_O preserves the order.
//!
//! Three measurements (README.md has the protocol and the reasoning behind each check):
//! 1. theory: i.i.d. values, uniform and random-softmax causal attention (pure Rust);
//! 2. the pinned SmolLM2-135M on random tokens and on natural text, every layer;
//! 3. randomly initialised LLaMA-style models, several seeds (the effect before training).

mod figures;
pub mod stats;
pub mod synthetic;
pub mod theory;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sinkrep_analysis::{analyze, kendall_tau, pinned, random_tokens, AnalyzeOptions, SinkReport};
use sinkrep_model::{AttnVariant, Config, Decoder, Model, RopePairing, RopeScaling};
use sinkrep_runner::{Cell, Claim, FigureStyle, RunContext, Scale, Study};

use crate::stats::Profile;
use crate::theory::Attention;
use sinkrep_stats::{finite_mean, finite_median, max, min, SINK_EPS};

/// Logit scales s of the random-softmax theory check (logits ~ N(0, s^2)).
pub const SOFTMAX_SCALES: [f64; 3] = [0.5, 1.0, 2.0];

/// The study: theory simulation, pinned model, randomly initialised models.
pub struct VarianceDiscrepancy;

sinkrep_runner::replication!(VarianceDiscrepancy);

/// Sizes of one scale (`[scale.<s>]` of `claim.toml`); everything else is the same at
/// every scale.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Theory: trials, positions and channels of the simulated values.
    pub theory_trials: usize,
    pub theory_len: usize,
    pub theory_channels: usize,
    /// Pinned model: random-token and natural-text sequences, their length, batch.
    pub n_random: usize,
    pub n_natural: usize,
    pub seq_len: usize,
    pub batch: usize,
    /// Randomly initialised models: how many seeds, sequences per model.
    pub init_seeds: usize,
    pub init_seqs: usize,
    pub init_seq_len: usize,
    pub init_d_model: usize,
    pub init_layers: usize,
    pub init_heads: usize,
    pub init_d_ff: usize,
    pub init_vocab: usize,
}

impl Sizes {
    /// The sizes at `scale`: `[scale.<scale>]` of this crate's `claim.toml`.
    pub fn at(scale: Scale) -> Result<Sizes> {
        Ok(claim()?.scale_params(scale)?)
    }

    /// The LLaMA-style config of the randomly initialised models (head_dim = d/heads,
    /// no GQA, untied output, SmolLM2's eps and RoPE base).
    pub fn init_config(&self) -> Config {
        Config {
            vocab_size: self.init_vocab,
            d_model: self.init_d_model,
            n_layers: self.init_layers,
            n_heads: self.init_heads,
            n_kv_heads: self.init_heads,
            head_dim: self.init_d_model / self.init_heads,
            d_ff: self.init_d_ff,
            rms_eps: 1e-5,
            rope_base: 10_000.0,
            rope_pairing: RopePairing::HalfSplit,
            rope_scaling: RopeScaling::None,
            tied_embeddings: false,
            max_seq_len: self.init_seq_len,
            attn_variant: AttnVariant::Baseline,
            head_norm_init: 1.0,
            zero_init: false,
        }
    }
}

/// Statistics of one layer: the per-position variance of the value-aggregation output z
/// and of the attention output after W_O, and where the layer's attention goes.
#[derive(Debug, Clone)]
pub struct LayerStats {
    pub layer: usize,
    pub z_var: Vec<f64>,
    pub out_var: Vec<f64>,
    pub z: Profile,
    pub out: Profile,
    /// Kendall tau between z_var and out_var over all positions: does W_O keep the order?
    pub tau_wo: f64,
    pub attn_mass: f64,
    pub sink_frac: f64,
}

/// Per-layer statistics of a report built with `with_attn_out` over >= 2 sequences.
pub fn layer_stats(report: &SinkReport) -> Result<Vec<LayerStats>> {
    if report.n_sequences < 2 {
        bail!(
            "variance across sequences needs at least 2 sequences, got {}",
            report.n_sequences
        );
    }
    report
        .layers
        .iter()
        .map(|l| {
            if l.attn_out_var_by_pos.len() != l.agg_var_by_pos.len() {
                bail!(
                    "layer {}: no attention-output variance (the report was built without with_attn_out)",
                    l.layer
                );
            }
            Ok(LayerStats {
                layer: l.layer,
                z: Profile::of(&l.agg_var_by_pos),
                out: Profile::of(&l.attn_out_var_by_pos),
                tau_wo: kendall_tau(&l.agg_var_by_pos, &l.attn_out_var_by_pos),
                z_var: l.agg_var_by_pos.clone(),
                out_var: l.attn_out_var_by_pos.clone(),
                attn_mass: l.attn_mass,
                sink_frac: l.sink_frac,
            })
        })
        .collect()
}

/// The first layer whose attention mass on position 0 exceeds [`SINK_EPS`].
pub fn first_sink_layer(layers: &[LayerStats]) -> Option<usize> {
    layers
        .iter()
        .find(|l| l.attn_mass > SINK_EPS)
        .map(|l| l.layer)
}

/// The key column of the per-layer tables: its name (`input` or `seed`) and value.
#[derive(Debug, Clone, Copy, Default)]
struct Key<K> {
    name: &'static str,
    value: K,
}

/// One row of `*_layers.csv`. Serialised by hand only because the key column's name
/// varies; each column name stands next to its value.
#[derive(Default)]
struct LayerRow<K> {
    key: Key<K>,
    layer: usize,
    attn_mass: f64,
    sink_frac: f64,
    z: Profile,
    out: Profile,
    tau_wo: f64,
}

impl<K: Copy> LayerRow<K> {
    fn new(key: Key<K>, l: &LayerStats) -> LayerRow<K> {
        LayerRow {
            key,
            layer: l.layer,
            attn_mass: l.attn_mass,
            sink_frac: l.sink_frac,
            z: l.z,
            out: l.out,
            tau_wo: l.tau_wo,
        }
    }
}

impl<K: Serialize> Serialize for LayerRow<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (z, out) = (&self.z, &self.out);
        let mut st = s.serialize_struct("LayerRow", 15)?;
        st.serialize_field(self.key.name, &self.key.value)?;
        st.serialize_field("layer", &self.layer)?;
        st.serialize_field("attn_mass", &self.attn_mass)?;
        st.serialize_field("sink_frac", &self.sink_frac)?;
        st.serialize_field("z_ratio_first", &z.ratio_first)?;
        st.serialize_field("z_first_over_max_rest", &z.first_over_max_rest)?;
        st.serialize_field("z_slope", &z.slope)?;
        st.serialize_field("z_spearman", &z.spearman)?;
        st.serialize_field("z_kendall", &z.kendall)?;
        st.serialize_field("out_ratio_first", &out.ratio_first)?;
        st.serialize_field("out_first_over_max_rest", &out.first_over_max_rest)?;
        st.serialize_field("out_slope", &out.slope)?;
        st.serialize_field("out_spearman", &out.spearman)?;
        st.serialize_field("out_kendall", &out.kendall)?;
        st.serialize_field("tau_wo", &self.tau_wo)?;
        st.end()
    }
}

/// One row of `*_variance_by_position.csv` (key column as in [`LayerRow`]).
#[derive(Default)]
struct PositionRow<K> {
    key: Key<K>,
    layer: usize,
    position: usize,
    z_var: f64,
    out_var: f64,
}

impl<K: Serialize> Serialize for PositionRow<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("PositionRow", 5)?;
        st.serialize_field(self.key.name, &self.key.value)?;
        st.serialize_field("layer", &self.layer)?;
        st.serialize_field("position", &self.position)?;
        st.serialize_field("z_var", &self.z_var)?;
        st.serialize_field("out_var", &self.out_var)?;
        st.end()
    }
}

/// Writes `{stem}_layers.csv` and `{stem}_variance_by_position.csv` for layer
/// statistics grouped by a key (input kind or seed).
fn write_layer_tables<K: Serialize + Copy + Default>(
    ctx: &mut RunContext,
    stem: &str,
    key_name: &'static str,
    groups: &[(K, Vec<LayerStats>)],
) -> Result<()> {
    let key = |value: K| Key {
        name: key_name,
        value,
    };
    ctx.write_rows(
        &format!("{stem}_layers.csv"),
        groups
            .iter()
            .flat_map(|(k, ls)| ls.iter().map(move |l| LayerRow::new(key(*k), l))),
    )?;
    ctx.write_rows(
        &format!("{stem}_variance_by_position.csv"),
        groups.iter().flat_map(|(k, ls)| {
            ls.iter().flat_map(move |l| {
                (0..l.z_var.len()).map(move |t| PositionRow {
                    key: key(*k),
                    layer: l.layer,
                    position: t,
                    z_var: l.z_var[t],
                    out_var: l.out_var[t],
                })
            })
        }),
    )?;
    Ok(())
}

/// Runs `analyze` over `seqs` with the attention output reduced too, and a progress bar.
fn measure(
    ctx: &RunContext,
    model: &dyn Decoder,
    seqs: &[Vec<i64>],
    batch: usize,
    what: &str,
) -> Result<Vec<LayerStats>> {
    let opts = AnalyzeOptions {
        batch,
        with_attn_out: true,
        ..AnalyzeOptions::default()
    };
    let pb = ctx.progress(seqs.len() as u64, what);
    let report = analyze(model, seqs, &opts, &mut |done| pb.set_position(done as u64))
        .with_context(|| format!("analysing {what}"))?;
    pb.finish_and_clear();
    layer_stats(&report)
}

/// Metrics of the pinned model on one kind of input, under `p.`.
fn model_metrics(ctx: &mut RunContext, p: &str, layers: &[LayerStats]) -> Result<()> {
    let l0 = layers.first().context("the model has no layers")?;
    let m = |ctx: &mut RunContext, name: &str, v: f64| ctx.metric(&format!("{p}.{name}"), v);
    m(ctx, "l0.ratio_first", l0.z.ratio_first)?;
    m(ctx, "l0.first_over_max_rest", l0.z.first_over_max_rest)?;
    m(ctx, "l0.slope", l0.z.slope)?;
    m(ctx, "l0.spearman", l0.z.spearman)?;
    m(ctx, "l0.kendall", l0.z.kendall)?;
    m(ctx, "l0.out_ratio_first", l0.out.ratio_first)?;
    m(
        ctx,
        "l0.out_first_over_max_rest",
        l0.out.first_over_max_rest,
    )?;
    m(ctx, "l0.tau_wo", l0.tau_wo)?;
    for l in layers.iter().take(3).skip(1) {
        m(ctx, &format!("l{}.ratio_first", l.layer), l.z.ratio_first)?;
    }
    let sink = first_sink_layer(layers);
    let split = sink.unwrap_or(layers.len());
    let (pre, post) = layers.split_at(split);
    m(ctx, "first_sink_layer", sink.map_or(f64::NAN, |s| s as f64))?;
    m(ctx, "pre_sink.layers", pre.len() as f64)?;
    let pre_ratios: Vec<f64> = pre.iter().map(|l| l.z.ratio_first).collect();
    m(ctx, "pre_sink.min_ratio_first", min(&pre_ratios))?;
    m(
        ctx,
        "post_sink.median_ratio_first",
        finite_median(post.iter().map(|l| l.z.ratio_first)),
    )?;
    let count = |f: &dyn Fn(&LayerStats) -> bool| layers.iter().filter(|l| f(l)).count() as f64;
    m(ctx, "layers_ratio_gt1", count(&|l| l.z.ratio_first > 1.0))?;
    m(
        ctx,
        "layers_first_highest",
        count(&|l| l.z.first_over_max_rest > 1.0),
    )?;
    m(ctx, "layers_decay", count(&|l| l.z.spearman < 0.0))?;
    m(ctx, "layers_tau_wo_positive", count(&|l| l.tau_wo > 0.0))?;
    m(
        ctx,
        "slope.median",
        finite_median(layers.iter().map(|l| l.z.slope)),
    )?;
    m(
        ctx,
        "tau_wo.mean",
        finite_mean(layers.iter().map(|l| l.tau_wo)),
    )?;
    let taus: Vec<f64> = layers.iter().map(|l| l.tau_wo).collect();
    m(ctx, "tau_wo.min", min(&taus))?;
    m(
        ctx,
        "tau_wo.pre_sink_mean",
        finite_mean(pre.iter().map(|l| l.tau_wo)),
    )?;
    Ok(())
}

fn run_theory(ctx: &mut RunContext, s: &Sizes) -> Result<()> {
    let seed = ctx.seed();
    let (len, trials, ch) = (s.theory_len, s.theory_trials, s.theory_channels);
    let uniform = theory::simulate(Attention::Uniform, len, trials, ch, seed);
    let softmax: Vec<Vec<f64>> = SOFTMAX_SCALES
        .iter()
        .enumerate()
        .map(|(i, &scale)| {
            // A distinct stream per attention kind.
            let seed = seed ^ (0xA076_1D64_78BD_642F_u64.wrapping_mul(i as u64 + 1));
            theory::simulate(Attention::Softmax { scale }, len, trials, ch, seed)
        })
        .collect();
    let mut head = vec!["position".to_string(), "uniform".to_string()];
    head.extend(SOFTMAX_SCALES.iter().map(|s| format!("softmax_s{s}")));
    head.push("uniform_expected".to_string());
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    ctx.write_csv(
        "theory_variance.csv",
        &head,
        (0..len).map(|t| {
            let mut row = vec![Cell::from(t), Cell::from(uniform[t])];
            row.extend(softmax.iter().map(|v| Cell::from(v[t])));
            row.push(Cell::from(1.0 / (t + 1) as f64));
            row
        }),
    )?;
    let u = Profile::of(&uniform);
    ctx.metric("theory.uniform.slope", u.slope)?;
    ctx.metric("theory.uniform.ratio_first", u.ratio_first)?;
    ctx.metric("theory.uniform.ratio_first_expected", {
        let rest: f64 = (1..len).map(|t| 1.0 / (t + 1) as f64).sum::<f64>() / (len - 1) as f64;
        1.0 / rest
    })?;
    // Var(o_t) (t+1) / Var(v) is 1 at every t in theory; its worst deviation is the
    // Monte Carlo error.
    ctx.metric(
        "theory.uniform.max_rel_dev",
        uniform
            .iter()
            .enumerate()
            .map(|(t, v)| (v * (t + 1) as f64 - 1.0).abs())
            .fold(0.0, f64::max),
    )?;
    for (scale, v) in SOFTMAX_SCALES.iter().zip(&softmax) {
        let p = Profile::of(v);
        ctx.metric(&format!("theory.softmax_s{scale}.slope"), p.slope)?;
        ctx.metric(
            &format!("theory.softmax_s{scale}.ratio_first"),
            p.ratio_first,
        )?;
    }
    Ok(())
}

/// Registers the pinned texts (what `pinned::text_windows` reads) as inputs.
fn register_texts(ctx: &mut RunContext) -> Result<()> {
    for f in pinned::text_files()? {
        ctx.input(&f)?;
    }
    Ok(())
}

/// The pretrained-model section for pinned model `alias`, inside its
/// [`RunContext::for_model`] scope. A BOS-adding model (Gemma-3) reads BOS + text, as it
/// was trained, so its position 0 is the BOS.
fn run_model(ctx: &mut RunContext, s: &Sizes, alias: &str) -> Result<()> {
    let device = pinned::device(ctx.device_name())?;
    let (model, tok, path) =
        ctx.stage("load pinned model", |_| pinned::load_pinned(alias, device))?;
    ctx.input(&path)?;
    register_texts(ctx)?;
    ctx.config("model", pinned::pinned_model(alias)?.name)?;
    ctx.config("model_layers", model.config().n_layers)?;
    ctx.config("bos_prefix", pinned::bos_prefix(&tok))?;
    let seed = ctx.seed();
    let vocab = model.config().vocab_size;
    let random = pinned::model_sequences(&tok, s.n_random, s.seq_len, seed, Some(vocab))?;
    let natural = ctx.stage("cut natural-text windows", |_| {
        pinned::model_sequences(&tok, s.n_natural, s.seq_len, seed, None)
    })?;
    let mut by_input = Vec::new();
    for (name, seqs) in [("random", &random), ("natural", &natural)] {
        let what = format!("{name} sequences");
        let layers = ctx.stage(&format!("pinned model, {what}"), |ctx| {
            measure(ctx, &*model, seqs, s.batch, &what)
        })?;
        model_metrics(ctx, name, &layers)?;
        by_input.push((name, layers));
    }
    write_layer_tables(ctx, "model", "input", &by_input)?;
    Ok(())
}

fn run_init(ctx: &mut RunContext, s: &Sizes) -> Result<()> {
    let device = pinned::device(ctx.device_name())?;
    let cfg = s.init_config();
    ctx.config("init_model", &cfg)?;
    ctx.config(
        "init_weights",
        "N(0, min(0.02, 1/sqrt(fan_in))), embeddings N(0, 0.02), norms 1 (sinkrep-model)",
    )?;
    let seeds = ctx.seeds(s.init_seeds);
    let mut all = Vec::new();
    for &seed in &seeds {
        // Drawn on the CPU and copied: the same weights for a seed on every device.
        let model = Model::seeded(&cfg, seed as i64, device)?;
        let seqs = random_tokens(s.init_seqs, s.init_seq_len, cfg.vocab_size, seed);
        let layers = measure(
            ctx,
            &model,
            &seqs,
            s.batch,
            &format!("random-init seed {seed}"),
        )?;
        all.push((seed, layers));
    }
    let per_seed = |f: &dyn Fn(&[LayerStats]) -> f64| -> Vec<(u64, f64)> {
        all.iter().map(|(s, ls)| (*s, f(ls))).collect()
    };
    let fmr = per_seed(&|ls| ls[0].z.first_over_max_rest);
    let slope = per_seed(&|ls| ls[0].z.slope);
    ctx.metric_samples("init.l0.first_over_max_rest", &fmr)?;
    ctx.metric_samples("init.l0.slope", &slope)?;
    ctx.metric_samples("init.l0.ratio_first", &per_seed(&|ls| ls[0].z.ratio_first))?;
    ctx.metric_samples("init.l0.spearman", &per_seed(&|ls| ls[0].z.spearman))?;
    ctx.metric_samples("init.l0.attn_mass", &per_seed(&|ls| ls[0].attn_mass))?;
    ctx.metric_samples(
        "init.layers_ratio_gt1",
        &per_seed(&|ls| ls.iter().filter(|l| l.z.ratio_first > 1.0).count() as f64),
    )?;
    ctx.metric_samples(
        "init.tau_wo.mean",
        &per_seed(&|ls| finite_mean(ls.iter().map(|l| l.tau_wo))),
    )?;
    let vals = |v: &[(u64, f64)]| v.iter().map(|x| x.1).collect::<Vec<f64>>();
    ctx.metric("init.l0.first_over_max_rest.min", min(&vals(&fmr)))?;
    ctx.metric("init.l0.slope.max", max(&vals(&slope)))?;
    write_layer_tables(ctx, "init", "seed", &all)?;
    Ok(())
}

impl Study for VarianceDiscrepancy {
    fn run(&self, claim: &Claim, ctx: &mut RunContext) -> Result<()> {
        let s: Sizes = claim.scale_params(ctx.scale())?;
        ctx.config("sizes", &s)?;
        ctx.config("softmax_logit_scales", SOFTMAX_SCALES)?;
        ctx.config("sink_eps", SINK_EPS)?;
        ctx.config(
            "variance",
            "across sequences per (position, channel), population, mean over channels",
        )?;
        ctx.config(
            "slope_fit",
            "least squares of ln var on ln(t+1), positions 1..T-1",
        )?;
        ctx.stage("theory simulation", |ctx| run_theory(ctx, &s))?;
        for alias in &claim.models {
            ctx.for_model(&claim.models, alias, |ctx| run_model(ctx, &s, alias))?;
        }
        ctx.stage("random-init models", |ctx| run_init(ctx, &s))?;
        // The synthetic subject: variance discrepancy vs the sink along training.
        synthetic::run(ctx)?;
        Ok(())
    }

    fn figures(&self, run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
        figures::draw(run_dir, fig_dir, style)
    }
}
