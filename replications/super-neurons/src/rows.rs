//! The run's tables: one writer per CSV/JSON artifact, from the census, the
//! down-projection scan, the super neurons and the held-out evaluations.

use sinkrep_analysis::{SinkReport, SuperNeuron};
use sinkrep_model::Model;
use sinkrep_runner::{Cell, RunContext};

use crate::plan::DOMINANT_DIMS;
use crate::study::{Condition, EarlyCarriers, Eval};
use crate::weights::DownProjLayer;

/// A super neuron of one census, with what this replication adds to the analysis crate's
/// `SuperNeuron`.
#[derive(Debug, Clone)]
pub(crate) struct SnRow {
    pub(crate) input: &'static str,
    pub(crate) sn: SuperNeuron,
    /// The `DOMINANT_DIMS` largest |mean h_0| dims after the neuron's layer.
    pub(crate) dominant: Vec<usize>,
    pub(crate) feeds_dominant: bool,
    pub(crate) in_other_input: bool,
    pub(crate) datafree_spike: bool,
    /// Rank of the neuron's column max |W_down| in its layer (1 = largest).
    pub(crate) datafree_rank: usize,
    /// Sum of squares of the neuron's down-projection column.
    pub(crate) col_energy: f64,
}

pub(crate) fn dominant_dims(report: &SinkReport, layer: usize) -> Vec<usize> {
    report.layers[layer]
        .massive_dims
        .iter()
        .take(DOMINANT_DIMS)
        .map(|d| d.channel)
        .collect()
}

pub(crate) fn sn_rows(
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

pub(crate) fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(";")
}

pub(crate) fn write_census(
    ctx: &mut RunContext,
    reports: &[(&str, &SinkReport)],
) -> anyhow::Result<()> {
    write_census_to(ctx, "", reports)
}

/// `write_census` into `{prefix}census_layers.csv` and `{prefix}alpha_per_head.csv`.
pub(crate) fn write_census_to(
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

pub(crate) fn write_down_proj(ctx: &mut RunContext, down: &[DownProjLayer]) -> anyhow::Result<()> {
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

pub(crate) fn write_super_neurons(
    ctx: &mut RunContext,
    rows: &[SnRow],
    base: &Eval,
) -> anyhow::Result<()> {
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

pub(crate) fn write_shares(
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

pub(crate) fn write_first_token(ctx: &mut RunContext, base: &Eval) -> anyhow::Result<()> {
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

pub(crate) fn write_carriers(
    ctx: &mut RunContext,
    early: Option<&EarlyCarriers>,
) -> anyhow::Result<()> {
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
pub(crate) struct Spans {
    pub(crate) dom_early: Vec<usize>,
    pub(crate) dom_late: Vec<usize>,
    pub(crate) sink_early: Vec<usize>,
    pub(crate) sink_late: Vec<usize>,
}

pub(crate) fn spans(first_sn: Option<usize>, n_layers: usize) -> Spans {
    let l = first_sn.unwrap_or(n_layers);
    Spans {
        dom_early: (0..l.min(n_layers)).collect(),
        dom_late: (l..n_layers).collect(),
        sink_early: (0..(l + 1).min(n_layers)).collect(),
        sink_late: (l + 1..n_layers).collect(),
    }
}

pub(crate) fn write_ablations(
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
