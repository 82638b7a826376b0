//! Claim 2 of "The Structural Origin of Attention Sink" (arXiv 2605.06611): a few FFN
//! channels ("super neurons") fire enormously on the first token; their down-projection
//! columns are channel-sparse, so the first token's residual stream gets a few massive
//! dimensions (dimension disparity), and that makes it the attention sink.
//!
//! Measured on the pinned SmolLM2-135M-Instruct; see README.md for the protocol and
//! claim.toml for the checks. `study` holds the measurements on any `Model`, so the same
//! census can be repeated on models trained from scratch (README, "From scratch").

mod figures;
pub mod probe;
mod scratch;
pub mod study;
pub mod weights;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sinkrep_analysis::{kendall_tau, SUPER_NEURON_ABS, SUPER_NEURON_MEDIAN_RATIO};
use sinkrep_analysis::{pinned, random_tokens, SinkReport, SuperNeuron};
use sinkrep_model::Model;
use sinkrep_runner::{Cell, Claim, FigureStyle, RunContext, Scale, Study};
use sinkrep_stats::{max, mean, median, min, SINK_EPS};
use std::path::{Path, PathBuf};
use study::{Condition, EarlyCarriers, Eval};
use weights::DownProjLayer;

/// The study `super-neurons`.
pub struct SuperNeurons;

sinkrep_runner::replication!(SuperNeurons);

/// How much is measured at each scale (`[scale.<s>]` of `claim.toml`). Every window has
/// `seq_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Random-token sequences of the census (Gu et al.: 100 of 64 tokens).
    pub random_seqs: usize,
    /// Natural-text windows of the census; super neurons are flagged on these.
    pub text_seqs: usize,
    /// Further natural-text windows for the ablations and the loss (never used to flag).
    pub heldout_seqs: usize,
    pub seq_len: usize,
    /// Sequences per forward pass in the census.
    pub batch: usize,
    /// Sequences per forward pass of the held-out evaluations (mean ablation averages
    /// over the other positions of one batch).
    pub heldout_batch: usize,
}

impl Sizes {
    /// The sizes at `scale`: `[scale.<scale>]` of this crate's `claim.toml`.
    pub fn at(scale: Scale) -> anyhow::Result<Sizes> {
        Ok(claim()?.scale_params(scale)?)
    }
}

/// How many of the largest |mean h_0| dims count as the first token's dominant dims
/// (the paper: "one or two hidden dimensions").
pub const DOMINANT_DIMS: usize = 2;

impl Study for SuperNeurons {
    fn run(&self, claim: &Claim, ctx: &mut RunContext) -> anyhow::Result<()> {
        run(ctx, &claim.scale_params(ctx.scale())?)
    }
    fn figures(
        &self,
        run_dir: &Path,
        fig_dir: &Path,
        style: &FigureStyle,
    ) -> anyhow::Result<Vec<PathBuf>> {
        figures::figures(run_dir, fig_dir, style)
    }
}

/// A super neuron of one census, with what this replication adds to the analysis crate's
/// `SuperNeuron`.
#[derive(Debug, Clone)]
struct SnRow {
    input: &'static str,
    sn: SuperNeuron,
    /// The `DOMINANT_DIMS` largest |mean h_0| dims after the neuron's layer.
    dominant: Vec<usize>,
    feeds_dominant: bool,
    in_other_input: bool,
    datafree_spike: bool,
    /// Rank of the neuron's column max |W_down| in its layer (1 = largest).
    datafree_rank: usize,
    /// Sum of squares of the neuron's down-projection column.
    col_energy: f64,
}

fn dominant_dims(report: &SinkReport, layer: usize) -> Vec<usize> {
    report.layers[layer]
        .massive_dims
        .iter()
        .take(DOMINANT_DIMS)
        .map(|d| d.channel)
        .collect()
}

fn sn_rows(
    model: &Model,
    input: &'static str,
    report: &SinkReport,
    other: &SinkReport,
    down: &[DownProjLayer],
) -> Vec<SnRow> {
    report
        .super_neurons
        .iter()
        .map(|sn| {
            let dominant = dominant_dims(report, sn.layer);
            let feeds_dominant = sn
                .feeds
                .first()
                .is_some_and(|f| dominant.contains(&f.channel));
            let col = sinkrep_analysis::to_vec(
                &model.blocks[sn.layer]
                    .mlp
                    .down_proj()
                    .select(1, sn.channel as i64),
            );
            SnRow {
                input,
                sn: sn.clone(),
                dominant,
                feeds_dominant,
                in_other_input: other
                    .super_neurons
                    .iter()
                    .any(|o| (o.layer, o.channel) == (sn.layer, sn.channel)),
                datafree_spike: down[sn.layer].spike_cols.contains(&sn.channel),
                datafree_rank: down[sn.layer].col_rank(sn.channel),
                col_energy: col.iter().map(|x| x * x).sum(),
            }
        })
        .collect()
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(";")
}

fn run(ctx: &mut RunContext, sizes: &Sizes) -> anyhow::Result<()> {
    let sizes = *sizes;
    let device = pinned::device(ctx.device_name())?;
    let seed = ctx.seed();
    ctx.config("sizes", sizes)?;
    ctx.config("sink_pos", 0)?;
    ctx.config("sink_eps", SINK_EPS)?;
    ctx.config(
        "super_neuron_rule",
        format!(
            "sinkrep_analysis: |mean activation at position 0| > {SUPER_NEURON_ABS} and > {SUPER_NEURON_MEDIAN_RATIO} x the layer's median |activation|, flagged on the natural-text census"
        ),
    )?;
    ctx.config("fire_abs", SUPER_NEURON_ABS)?;
    ctx.config("dominant_dims", DOMINANT_DIMS)?;
    ctx.config("datafree_spike_factor", weights::SPIKE_FACTOR)?;
    ctx.config("carrier_share", study::CARRIER_SHARE)?;
    ctx.config("carrier_max", study::CARRIER_MAX)?;
    ctx.config("ablation_positions", [0])?;
    ctx.config(
        "inputs",
        "random: sinkrep_analysis::random_tokens(seed); text: pinned::text_windows(seed), the first text_seqs for the census, the rest held out",
    )?;

    let (model, tok, model_path) = ctx.stage("load", |_| pinned::load(device))?;
    ctx.input(&model_path)?;
    ctx.config(
        "model",
        model_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    )?;
    for f in pinned::text_files().context("pinned texts")? {
        ctx.input(&f)?;
    }

    let random = random_tokens(
        sizes.random_seqs,
        sizes.seq_len,
        model.config.vocab_size,
        seed,
    );
    let mut text = pinned::text_windows(
        &tok,
        sizes.text_seqs + sizes.heldout_seqs,
        sizes.seq_len,
        seed,
    )?;
    let heldout = text.split_off(sizes.text_seqs);

    // 1. Sink census (Gu et al.) on random tokens and on natural text.
    let rand_rep = ctx.stage("census-random", |ctx| {
        let pb = ctx.progress(random.len() as u64, "census, random tokens");
        let r = study::census(&model, &random, sizes.batch, &mut |d| {
            pb.set_position(d as u64)
        });
        pb.finish_and_clear();
        r
    })?;
    let text_rep = ctx.stage("census-text", |ctx| {
        let pb = ctx.progress(text.len() as u64, "census, natural text");
        let r = study::census(&model, &text, sizes.batch, &mut |d| {
            pb.set_position(d as u64)
        });
        pb.finish_and_clear();
        r
    })?;
    ctx.write_json("census_text.json", &text_rep)?;
    ctx.write_json("census_random.json", &rand_rep)?;
    write_census(ctx, &[("text", &text_rep), ("random", &rand_rep)])?;

    // 2. Data-free: spikes in the down-projections.
    let down = ctx.stage("down-proj-scan", |_| weights::scan_down_proj(&model));
    write_down_proj(ctx, &down)?;

    // 3. Super neurons of both censuses; natural text is the primary set.
    let mut rows = sn_rows(&model, "text", &text_rep, &rand_rep, &down);
    rows.extend(sn_rows(&model, "random", &rand_rep, &text_rep, &down));
    let sn: Vec<(usize, usize)> = text_rep
        .super_neurons
        .iter()
        .map(|s| (s.layer, s.channel))
        .collect();
    let mut watch: Vec<(usize, usize)> = rows.iter().map(|r| (r.sn.layer, r.sn.channel)).collect();
    watch.sort_unstable();
    watch.dedup();
    let mut sn_layers: Vec<usize> = sn.iter().map(|s| s.0).collect();
    sn_layers.sort_unstable();
    sn_layers.dedup();
    let shares: Vec<(usize, Vec<(f64, f64)>)> = ctx.stage("column-shares", |_| {
        sn_layers
            .iter()
            .map(|&l| (l, weights::column_shares(&model, l)))
            .collect()
    });

    // 4. Held-out windows: baseline (amplification, specificity, loss), early carriers,
    //    then every ablation.
    let n_layers = model.config.n_layers;
    let base = ctx.stage("heldout-baseline", |ctx| {
        let pb = ctx.progress(heldout.len() as u64, "held-out baseline");
        let r = study::evaluate(
            &model,
            &heldout,
            sizes.heldout_batch,
            &Default::default(),
            &watch,
            true,
            &mut |d| pb.inc(d as u64),
        );
        pb.finish_and_clear();
        r
    })?;
    let first_sn = sn_layers.first().copied();
    let early = first_sn.and_then(|l| study::early_carriers(&model, &base, l));
    let early_targets: Vec<(usize, usize)> = early
        .as_ref()
        .map(|e| e.carriers.iter().map(|c| (c.layer, c.channel)).collect())
        .unwrap_or_default();
    let conds = study::conditions(&sn, &early_targets);
    ctx.config(
        "conditions",
        conds.iter().map(Condition::key).collect::<Vec<_>>(),
    )?;
    let evals: Vec<(Condition, Eval)> = ctx.stage("ablations", |ctx| {
        let pb = ctx.progress((conds.len() * heldout.len()) as u64, "ablations");
        let r = conds
            .iter()
            .map(|c| {
                study::evaluate(
                    &model,
                    &heldout,
                    sizes.heldout_batch,
                    &c.interventions(),
                    &[],
                    false,
                    &mut |d| pb.inc(d as u64),
                )
                .map(|e| (c.clone(), e))
            })
            .collect::<anyhow::Result<Vec<_>>>();
        pb.finish_and_clear();
        r
    })?;

    // 5. Tables and metrics.
    write_super_neurons(ctx, &rows, &base)?;
    write_shares(ctx, &shares, &sn)?;
    write_first_token(ctx, &base)?;
    write_carriers(ctx, early.as_ref())?;
    write_ablations(ctx, &base, &evals, first_sn, n_layers)?;
    census_metrics(ctx, "", &text_rep, &rand_rep)?;
    sn_metrics(ctx, &rows, &base, &shares, &down, &sn)?;
    amplification_metrics(ctx, &base, first_sn)?;
    carrier_metrics(ctx, early.as_ref())?;
    ablation_metrics(ctx, &base, &evals, first_sn, n_layers)?;

    // 6. From scratch: the same census on the harness's small pre-trained model.
    scratch::run(ctx, &sizes)?;
    Ok(())
}

fn write_census(ctx: &mut RunContext, reports: &[(&str, &SinkReport)]) -> anyhow::Result<()> {
    write_census_to(ctx, "", reports)
}

/// `write_census` into `{prefix}census_layers.csv` and `{prefix}alpha_per_head.csv`.
fn write_census_to(
    ctx: &mut RunContext,
    prefix: &str,
    reports: &[(&str, &SinkReport)],
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut heads = Vec::new();
    for (input, r) in reports {
        for l in &r.layers {
            let dim = |i: usize| l.massive_dims.get(i);
            let top = l.top_ffn_channels.first();
            rows.push(vec![
                Cell::from(*input),
                Cell::from(l.layer),
                Cell::from(l.attn_mass),
                Cell::from(l.sink_frac),
                Cell::from(l.dom_ratio),
                Cell::from(l.max_abs_sink),
                Cell::from(l.max_abs_others),
                Cell::from(l.norm_sink),
                Cell::from(l.norm_others),
                Cell::from(l.mid_norm_sink),
                Cell::from(l.mid_norm_others),
                Cell::from(dim(0).map_or(-1, |d| d.channel as i64)),
                Cell::from(dim(0).map_or(f64::NAN, |d| d.value)),
                Cell::from(dim(1).map_or(-1, |d| d.channel as i64)),
                Cell::from(dim(1).map_or(f64::NAN, |d| d.value)),
                Cell::from(l.ffn_median_abs),
                Cell::from(top.map_or(-1, |c| c.channel as i64)),
                Cell::from(top.map_or(f64::NAN, |c| c.value)),
            ]);
            for (h, a) in l.alpha_per_head.iter().enumerate() {
                heads.push(vec![
                    Cell::from(*input),
                    Cell::from(l.layer),
                    Cell::from(h),
                    Cell::from(*a),
                ]);
            }
        }
    }
    ctx.write_csv(
        &format!("{prefix}census_layers.csv"),
        &[
            "input",
            "layer",
            "attn_mass",
            "sink_frac",
            "dom_ratio",
            "max_abs_first",
            "max_abs_rest",
            "norm_first",
            "norm_rest",
            "mid_norm_first",
            "mid_norm_rest",
            "dim1",
            "dim1_value",
            "dim2",
            "dim2_value",
            "ffn_median_abs",
            "top_ffn_channel",
            "top_ffn_value",
        ],
        rows,
    )?;
    ctx.write_csv(
        &format!("{prefix}alpha_per_head.csv"),
        &["input", "layer", "head", "alpha0"],
        heads,
    )?;
    Ok(())
}

fn write_down_proj(ctx: &mut RunContext, down: &[DownProjLayer]) -> anyhow::Result<()> {
    ctx.write_csv(
        "down_proj_layers.csv",
        &[
            "layer",
            "max_abs",
            "max_row",
            "max_col",
            "col_max_median",
            "col_spike",
            "row_max_median",
            "row_spike",
            "spike_cols",
            "spike_rows",
        ],
        down.iter().map(|d| {
            vec![
                Cell::from(d.layer),
                Cell::from(d.max_abs),
                Cell::from(d.max_row),
                Cell::from(d.max_col),
                Cell::from(d.col_max_median),
                Cell::from(d.col_spike),
                Cell::from(d.row_max_median),
                Cell::from(d.row_spike),
                Cell::from(join(&d.spike_cols)),
                Cell::from(join(&d.spike_rows)),
            ]
        }),
    )?;
    Ok(())
}

fn write_super_neurons(ctx: &mut RunContext, rows: &[SnRow], base: &Eval) -> anyhow::Result<()> {
    let watch = |l: usize, c: usize| {
        base.first
            .watch
            .iter()
            .find(|w| (w.layer, w.channel) == (l, c))
    };
    ctx.write_csv(
        "super_neurons.csv",
        &[
            "input",
            "layer",
            "channel",
            "activation",
            "ratio_to_median",
            "max_abs_elsewhere",
            "feed1",
            "feed1_weight",
            "feed2",
            "feed2_weight",
            "top1_share",
            "top2_share",
            "dominant_dims",
            "feeds_dominant",
            "flagged_in_other_input",
            "datafree_spike",
            "datafree_col_rank",
            "heldout_mean_abs_first",
            "heldout_mean_abs_rest",
            "heldout_fire_rate_rest",
            "heldout_max_abs_rest",
            "heldout_last_fire_pos",
        ],
        rows.iter().map(|r| {
            let s = &r.sn;
            let w = watch(s.layer, s.channel);
            let feed = |i: usize| s.feeds.get(i);
            vec![
                Cell::from(r.input),
                Cell::from(s.layer),
                Cell::from(s.channel),
                Cell::from(s.activation),
                Cell::from(s.ratio_to_median),
                Cell::from(s.max_abs_elsewhere),
                Cell::from(feed(0).map_or(-1, |f| f.channel as i64)),
                Cell::from(feed(0).map_or(f64::NAN, |f| f.value)),
                Cell::from(feed(1).map_or(-1, |f| f.channel as i64)),
                Cell::from(feed(1).map_or(f64::NAN, |f| f.value)),
                Cell::from(s.top1_energy_share),
                Cell::from(s.top2_energy_share),
                Cell::from(join(&r.dominant)),
                Cell::from(r.feeds_dominant),
                Cell::from(r.in_other_input),
                Cell::from(r.datafree_spike),
                Cell::from(r.datafree_rank),
                Cell::from(w.map_or(f64::NAN, |w| w.mean_abs_first())),
                Cell::from(w.map_or(f64::NAN, |w| w.mean_abs_rest())),
                Cell::from(w.map_or(f64::NAN, |w| w.fire_rate_rest())),
                Cell::from(w.map_or(f64::NAN, |w| w.max_abs_rest)),
                Cell::from(w.map_or(-1, |w| w.last_fire_pos as i64)),
            ]
        }),
    )?;
    Ok(())
}

fn write_shares(
    ctx: &mut RunContext,
    shares: &[(usize, Vec<(f64, f64)>)],
    sn: &[(usize, usize)],
) -> anyhow::Result<()> {
    let rows = shares.iter().flat_map(|(l, v)| {
        v.iter().enumerate().map(move |(c, (t1, t2))| {
            vec![
                Cell::from(*l),
                Cell::from(c),
                Cell::from(*t1),
                Cell::from(*t2),
                Cell::from(sn.contains(&(*l, c))),
            ]
        })
    });
    ctx.write_csv(
        "down_proj_shares.csv",
        &[
            "layer",
            "channel",
            "top1_share",
            "top2_share",
            "super_neuron",
        ],
        rows,
    )?;
    Ok(())
}

fn write_first_token(ctx: &mut RunContext, base: &Eval) -> anyhow::Result<()> {
    let f = &base.first;
    let embed = f.embed.means();
    let mut prev = embed.norm_first;
    let mut rows = Vec::new();
    for l in 0..f.post.len() {
        let (m, p) = (f.mid[l].means(), f.post[l].means());
        rows.push(vec![
            Cell::from(l),
            Cell::from(m.norm_first),
            Cell::from(m.norm_rest),
            Cell::from(p.norm_first),
            Cell::from(p.norm_rest),
            Cell::from(m.var_first),
            Cell::from(m.var_rest),
            Cell::from(p.var_first),
            Cell::from(p.var_rest),
            Cell::from(p.max_abs_first),
            Cell::from(p.max_abs_rest),
            Cell::from(p.norm_first / m.norm_first),
            Cell::from(p.norm_rest / m.norm_rest),
            Cell::from(p.var_first / m.var_first),
            Cell::from(p.var_rest / m.var_rest),
            Cell::from(p.norm_first / prev),
        ]);
        prev = p.norm_first;
    }
    ctx.write_csv(
        "first_token_by_layer.csv",
        &[
            "layer",
            "mid_norm_first",
            "mid_norm_rest",
            "post_norm_first",
            "post_norm_rest",
            "mid_var_first",
            "mid_var_rest",
            "post_var_first",
            "post_var_rest",
            "post_max_abs_first",
            "post_max_abs_rest",
            "ffn_norm_gain_first",
            "ffn_norm_gain_rest",
            "ffn_var_gain_first",
            "ffn_var_gain_rest",
            "norm_jump_first",
        ],
        rows,
    )?;
    ctx.metric("embed_norm_first", embed.norm_first)?;
    ctx.metric("embed_norm_rest", embed.norm_rest)?;
    Ok(())
}

fn write_carriers(ctx: &mut RunContext, early: Option<&EarlyCarriers>) -> anyhow::Result<()> {
    let rows = early.into_iter().flat_map(|e| {
        e.carriers.iter().map(move |c| {
            vec![
                Cell::from(e.dim),
                Cell::from(c.layer),
                Cell::from(c.channel),
                Cell::from(c.activation),
                Cell::from(c.weight),
                Cell::from(c.contribution),
                Cell::from(c.cum_share),
            ]
        })
    });
    ctx.write_csv(
        "early_carriers.csv",
        &[
            "dim",
            "layer",
            "channel",
            "activation",
            "weight",
            "contribution",
            "cum_share",
        ],
        rows,
    )?;
    Ok(())
}

/// Layer sets relative to the first super-neuron layer L. DomRatio is read after a
/// layer, the sink of a layer from its input (the previous layer's output): super
/// neurons can change DomRatio from layer L on and the sink from layer L+1 on.
struct Spans {
    dom_early: Vec<usize>,
    dom_late: Vec<usize>,
    sink_early: Vec<usize>,
    sink_late: Vec<usize>,
}

fn spans(first_sn: Option<usize>, n_layers: usize) -> Spans {
    let l = first_sn.unwrap_or(n_layers);
    Spans {
        dom_early: (0..l.min(n_layers)).collect(),
        dom_late: (l..n_layers).collect(),
        sink_early: (0..(l + 1).min(n_layers)).collect(),
        sink_late: (l + 1..n_layers).collect(),
    }
}

fn write_ablations(
    ctx: &mut RunContext,
    base: &Eval,
    evals: &[(Condition, Eval)],
    first_sn: Option<usize>,
    n_layers: usize,
) -> anyhow::Result<()> {
    let sp = spans(first_sn, n_layers);
    let all: Vec<(String, String, &str, String, &Eval)> = std::iter::once((
        "baseline".to_string(),
        "baseline".to_string(),
        "none",
        String::new(),
        base,
    ))
    .chain(evals.iter().map(|(c, e)| {
        let targets: Vec<String> = c
            .targets
            .iter()
            .map(|(l, ch)| format!("{l}:{ch}"))
            .collect();
        (c.key(), c.name.clone(), c.kind_name(), join(&targets), e)
    }))
    .collect();
    let mut summary = Vec::new();
    let mut layers = Vec::new();
    for (key, name, kind, targets, e) in &all {
        summary.push(vec![
            Cell::from(key),
            Cell::from(name),
            Cell::from(*kind),
            Cell::from(targets),
            Cell::from(e.sink_metric),
            Cell::from(e.sink_over(sp.sink_early.iter().copied())),
            Cell::from(e.sink_over(sp.sink_late.iter().copied())),
            Cell::from(e.dom_ratio_over(sp.dom_early.iter().copied())),
            Cell::from(e.dom_ratio_over(sp.dom_late.iter().copied())),
            Cell::from(e.layers.last().map_or(f64::NAN, |l| l.dom_ratio)),
            Cell::from(e.loss),
            Cell::from(e.loss - base.loss),
        ]);
        for l in &e.layers {
            layers.push(vec![
                Cell::from(key),
                Cell::from(l.layer),
                Cell::from(l.sink_frac),
                Cell::from(l.attn_mass),
                Cell::from(l.dom_ratio),
                Cell::from(l.max_abs_first),
                Cell::from(l.max_abs_rest),
            ]);
        }
    }
    ctx.write_csv(
        "ablation.csv",
        &[
            "condition",
            "ablated",
            "kind",
            "targets",
            "sink",
            "sink_early",
            "sink_late",
            "dom_ratio_early",
            "dom_ratio_late",
            "dom_ratio_final",
            "loss",
            "dloss",
        ],
        summary,
    )?;
    ctx.write_csv(
        "ablation_layers.csv",
        &[
            "condition",
            "layer",
            "sink_frac",
            "attn_mass",
            "dom_ratio",
            "max_abs_first",
            "max_abs_rest",
        ],
        layers,
    )?;
    Ok(())
}

/// Kendall's tau between the DomRatio of h_0 entering layer l (after layer l-1) and the
/// share of heads of layer l that sink on position 0, over l = 1..L-1.
fn dom_sink_tau(r: &SinkReport) -> f64 {
    let n = r.layers.len().saturating_sub(1);
    let dom: Vec<f64> = r.layers.iter().take(n).map(|l| l.dom_ratio).collect();
    let sink: Vec<f64> = r.layers.iter().skip(1).map(|l| l.sink_frac).collect();
    kendall_tau(&dom, &sink)
}

/// The census metrics of both inputs, each name prefixed with `prefix`.
fn census_metrics(
    ctx: &mut RunContext,
    prefix: &str,
    text: &SinkReport,
    rand: &SinkReport,
) -> anyhow::Result<()> {
    for (name, r) in [("text", text), ("random", rand)] {
        ctx.metric(&format!("{prefix}sink_{name}"), r.sink_metric.value)?;
        ctx.metric(
            &format!("{prefix}tau_dom_ratio_sink_{name}"),
            dom_sink_tau(r),
        )?;
        let (peak, dom) =
            weights::argmax(&r.layers.iter().map(|l| l.dom_ratio).collect::<Vec<_>>());
        ctx.metric(&format!("{prefix}dom_ratio_peak_{name}"), dom)?;
        ctx.metric(&format!("{prefix}dom_ratio_peak_layer_{name}"), peak as f64)?;
        let (l, m) = weights::argmax(&r.layers.iter().map(|l| l.max_abs_sink).collect::<Vec<_>>());
        ctx.metric(&format!("{prefix}max_abs_first_peak_{name}"), m)?;
        ctx.metric(
            &format!("{prefix}max_abs_rest_at_peak_{name}"),
            r.layers.get(l).map_or(f64::NAN, |x| x.max_abs_others),
        )?;
    }
    Ok(())
}

fn sn_metrics(
    ctx: &mut RunContext,
    rows: &[SnRow],
    base: &Eval,
    shares: &[(usize, Vec<(f64, f64)>)],
    down: &[DownProjLayer],
    sn: &[(usize, usize)],
) -> anyhow::Result<()> {
    let text: Vec<&SnRow> = rows.iter().filter(|r| r.input == "text").collect();
    let n = text.len() as f64;
    ctx.metric("n_super_neurons", n)?;
    ctx.metric(
        "n_super_neurons_random",
        rows.iter().filter(|r| r.input == "random").count() as f64,
    )?;
    ctx.metric(
        "n_super_neurons_both",
        text.iter().filter(|r| r.in_other_input).count() as f64,
    )?;
    let mut layers: Vec<usize> = text.iter().map(|r| r.sn.layer).collect();
    layers.dedup();
    ctx.metric("n_super_neuron_layers", layers.len() as f64)?;
    ctx.metric(
        "first_super_neuron_layer",
        layers.first().map_or(f64::NAN, |&l| l as f64),
    )?;
    let strongest = text
        .iter()
        .max_by(|a, b| a.sn.activation.abs().total_cmp(&b.sn.activation.abs()));
    ctx.metric(
        "sn_strongest_activation",
        strongest.map_or(f64::NAN, |r| r.sn.activation),
    )?;
    ctx.metric(
        "sn_strongest_ratio_to_median",
        strongest.map_or(f64::NAN, |r| r.sn.ratio_to_median),
    )?;
    // Channel sparsity of the down-projection columns.
    let top2: Vec<f64> = text.iter().map(|r| r.sn.top2_energy_share).collect();
    ctx.metric("sn_top2_share_min", min(&top2))?;
    ctx.metric("sn_top2_share_median", median(&top2))?;
    // Weighted by the energy each neuron writes at position 0: a^2 x |column|^2.
    let w: Vec<f64> = text
        .iter()
        .map(|r| r.sn.activation.powi(2) * r.col_energy)
        .collect();
    let wsum: f64 = w.iter().sum();
    ctx.metric(
        "sn_top2_share_weighted",
        w.iter().zip(&top2).map(|(w, s)| w * s).sum::<f64>() / wsum,
    )?;
    let ordinary: Vec<f64> = shares
        .iter()
        .flat_map(|(l, v)| {
            v.iter()
                .enumerate()
                .filter(move |(c, _)| !sn.contains(&(*l, *c)))
                .map(|(_, s)| s.1)
        })
        .collect();
    let mut sorted = ordinary.clone();
    sorted.sort_by(f64::total_cmp);
    ctx.metric("ordinary_top2_share_median", median(&ordinary))?;
    ctx.metric(
        "ordinary_top2_share_p99",
        sorted
            .get(((sorted.len() as f64 * 0.99) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN),
    )?;
    // Their dims are the first token's dominant dims.
    ctx.metric(
        "sn_feeds_dominant_frac",
        text.iter().filter(|r| r.feeds_dominant).count() as f64 / n,
    )?;
    // Specificity on the held-out windows: firing (|a| > 100) at positions 1..T.
    let rates: Vec<f64> = text
        .iter()
        .filter_map(|r| {
            base.first
                .watch
                .iter()
                .find(|w| (w.layer, w.channel) == (r.sn.layer, r.sn.channel))
                .map(|w| w.fire_rate_rest())
        })
        .collect();
    ctx.metric("sn_fire_rate_rest_max", max(&rates))?;
    let last = text
        .iter()
        .filter_map(|r| {
            base.first
                .watch
                .iter()
                .find(|w| (w.layer, w.channel) == (r.sn.layer, r.sn.channel))
                .map(|w| w.last_fire_pos)
        })
        .max();
    ctx.metric("sn_fire_last_position", last.map_or(f64::NAN, |p| p as f64))?;
    ctx.metric("sn_fire_rate_rest_mean", mean(&rates))?;
    // Data-free agreement.
    let spikes: Vec<(usize, usize)> = down
        .iter()
        .flat_map(|d| d.spike_cols.iter().map(move |&c| (d.layer, c)))
        .collect();
    ctx.metric("datafree_spike_cols", spikes.len() as f64)?;
    ctx.metric(
        "datafree_recall",
        text.iter().filter(|r| r.datafree_spike).count() as f64 / n,
    )?;
    let any_sn = |lc: &(usize, usize)| rows.iter().any(|r| (r.sn.layer, r.sn.channel) == *lc);
    ctx.metric(
        "datafree_precision",
        spikes.iter().filter(|s| any_sn(s)).count() as f64 / spikes.len() as f64,
    )?;
    ctx.metric(
        "datafree_rank_median",
        median(
            &text
                .iter()
                .map(|r| r.datafree_rank as f64)
                .collect::<Vec<_>>(),
        ),
    )?;
    // Layers whose largest row max (output dim) is a dim the super neurons feed most.
    let fed: Vec<usize> = text
        .iter()
        .filter_map(|r| r.sn.feeds.first().map(|f| f.channel))
        .collect();
    ctx.metric(
        "datafree_row_argmax_is_fed_dim_frac",
        down.iter().filter(|d| fed.contains(&d.max_row)).count() as f64 / down.len() as f64,
    )?;
    ctx.metric(
        "datafree_argmax_is_sn_frac",
        layers
            .iter()
            .filter(|&&l| sn.contains(&(l, down[l].max_col)))
            .count() as f64
            / layers.len() as f64,
    )?;
    Ok(())
}

fn amplification_metrics(
    ctx: &mut RunContext,
    base: &Eval,
    first_sn: Option<usize>,
) -> anyhow::Result<()> {
    let f = &base.first;
    // The layer where the first token's norm jumps most (post over the previous post;
    // layer 0 against the embedding), and the runner-up.
    let mut prev = f.embed.means().norm_first;
    let mut jumps: Vec<(usize, f64)> = Vec::new();
    for (l, p) in f.post.iter().enumerate() {
        let now = p.means().norm_first;
        jumps.push((l, now / prev));
        prev = now;
    }
    jumps.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (i, name) in ["norm_jump", "norm_jump2"].iter().enumerate() {
        let j = jumps.get(i).copied().unwrap_or((0, f64::NAN));
        ctx.metric(&format!("{name}_layer"), j.0 as f64)?;
        ctx.metric(&format!("{name}_factor"), j.1)?;
    }
    let (m, p) = match first_sn {
        Some(l) => (f.mid[l].means(), f.post[l].means()),
        None => {
            let nan = probe::ResidMeans {
                norm_first: f64::NAN,
                norm_rest: f64::NAN,
                var_first: f64::NAN,
                var_rest: f64::NAN,
                max_abs_first: f64::NAN,
                max_abs_rest: f64::NAN,
            };
            (nan, nan)
        }
    };
    ctx.metric("amp_norm_gain_first", p.norm_first / m.norm_first)?;
    ctx.metric("amp_norm_gain_rest", p.norm_rest / m.norm_rest)?;
    ctx.metric("amp_var_gain_first", p.var_first / m.var_first)?;
    ctx.metric("amp_var_gain_rest", p.var_rest / m.var_rest)?;
    ctx.metric(
        "amp_var_gain_first_over_rest",
        (p.var_first / m.var_first) / (p.var_rest / m.var_rest),
    )?;
    Ok(())
}

fn carrier_metrics(ctx: &mut RunContext, early: Option<&EarlyCarriers>) -> anyhow::Result<()> {
    let nan = f64::NAN;
    ctx.metric("early_dim", early.map_or(nan, |e| e.dim as f64))?;
    ctx.metric(
        "early_peak_layer",
        early.map_or(nan, |e| e.peak_layer as f64),
    )?;
    ctx.metric("early_peak_value", early.map_or(nan, |e| e.peak_value))?;
    ctx.metric(
        "n_early_carriers",
        early.map_or(nan, |e| e.carriers.len() as f64),
    )?;
    ctx.metric(
        "early_carriers_share",
        early
            .and_then(|e| e.carriers.last())
            .map_or(nan, |c| c.cum_share),
    )?;
    Ok(())
}

fn ablation_metrics(
    ctx: &mut RunContext,
    base: &Eval,
    evals: &[(Condition, Eval)],
    first_sn: Option<usize>,
    n_layers: usize,
) -> anyhow::Result<()> {
    let sp = spans(first_sn, n_layers);
    let dom = |e: &Eval| e.dom_ratio_over(sp.dom_late.iter().copied());
    let dom_early = |e: &Eval| e.dom_ratio_over(sp.dom_early.iter().copied());
    let sink_late = |e: &Eval| e.sink_over(sp.sink_late.iter().copied());
    let sink_early = |e: &Eval| e.sink_over(sp.sink_early.iter().copied());
    ctx.metric("heldout_sink", base.sink_metric)?;
    ctx.metric("heldout_sink_early", sink_early(base))?;
    ctx.metric("heldout_sink_late", sink_late(base))?;
    ctx.metric("heldout_dom_ratio_early", dom_early(base))?;
    ctx.metric("heldout_dom_ratio_late", dom(base))?;
    ctx.metric("heldout_loss", base.loss)?;
    for (c, e) in evals {
        let p = format!("ablate.{}.{}", c.name, c.kind_name());
        ctx.metric(&format!("{p}.sink"), e.sink_metric)?;
        ctx.metric(&format!("{p}.sink_early"), sink_early(e))?;
        ctx.metric(&format!("{p}.sink_late"), sink_late(e))?;
        ctx.metric(&format!("{p}.dom_ratio_early"), dom_early(e))?;
        ctx.metric(&format!("{p}.dom_ratio_late"), dom(e))?;
        ctx.metric(&format!("{p}.dloss"), e.loss - base.loss)?;
    }
    // The checked ratios: every super neuron mean-ablated at position 0, and the follow-up
    // with the early carriers too.
    let find = |name: &str| {
        evals
            .iter()
            .find(|(c, _)| c.name == name && c.kind == sinkrep_model::AblateKind::Mean)
            .map(|(_, e)| e)
    };
    for (name, metric) in [
        ("sn-all", "sn_all"),
        ("early+sn-all", "early_sn_all"),
        ("early", "early"),
    ] {
        let e = find(name);
        ctx.metric(
            &format!("{metric}_mean_dom_ratio_ratio"),
            e.map_or(f64::NAN, |e| dom(e) / dom(base)),
        )?;
        ctx.metric(
            &format!("{metric}_mean_sink_late_ratio"),
            e.map_or(f64::NAN, |e| sink_late(e) / sink_late(base)),
        )?;
        ctx.metric(
            &format!("{metric}_mean_sink_ratio"),
            e.map_or(f64::NAN, |e| e.sink_metric / base.sink_metric),
        )?;
        ctx.metric(
            &format!("{metric}_mean_sink_early_ratio"),
            e.map_or(f64::NAN, |e| sink_early(e) / sink_early(base)),
        )?;
        ctx.metric(
            &format!("{metric}_mean_dom_ratio_early_ratio"),
            e.map_or(f64::NAN, |e| dom_early(e) / dom_early(base)),
        )?;
    }
    Ok(())
}
