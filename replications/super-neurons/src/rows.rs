//! The run's tables: one writer per CSV/JSON artifact, from the census, the
//! down-projection scan, the super neurons and the held-out evaluations.

use serde::Serialize;
use sinkrep_analysis::{SinkReport, SuperNeuron};
use sinkrep_model::Decoder;
use sinkrep_runner::RunContext;

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
    model: &dyn Decoder,
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
            let col =
                sinkrep_analysis::to_vec(&model.down_proj(sn.layer).select(1, sn.channel as i64));
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
            rows.push(CensusRow {
                input,
                layer: l.layer,
                attn_mass: l.attn_mass,
                sink_frac: l.sink_frac,
                dom_ratio: l.dom_ratio,
                max_abs_first: l.max_abs_sink,
                max_abs_rest: l.max_abs_others,
                norm_first: l.norm_sink,
                norm_rest: l.norm_others,
                mid_norm_first: l.mid_norm_sink,
                mid_norm_rest: l.mid_norm_others,
                dim1: channel_or_none(dim(0).map(|d| d.channel)),
                dim1_value: dim(0).map_or(f64::NAN, |d| d.value),
                dim2: channel_or_none(dim(1).map(|d| d.channel)),
                dim2_value: dim(1).map_or(f64::NAN, |d| d.value),
                ffn_median_abs: l.ffn_median_abs,
                top_ffn_channel: channel_or_none(top.map(|c| c.channel)),
                top_ffn_value: top.map_or(f64::NAN, |c| c.value),
            });
            for (head, &alpha0) in l.alpha_per_head.iter().enumerate() {
                heads.push(HeadRow {
                    input,
                    layer: l.layer,
                    head,
                    alpha0,
                });
            }
        }
    }
    ctx.write_rows(&format!("{prefix}census_layers.csv"), rows)?;
    ctx.write_rows(&format!("{prefix}alpha_per_head.csv"), heads)?;
    Ok(())
}

/// A channel index, or -1 where there is none (the tables' convention).
fn channel_or_none(c: Option<usize>) -> i64 {
    c.map_or(-1, |c| c as i64)
}

#[derive(Serialize, Default)]
struct CensusRow<'a> {
    input: &'a str,
    layer: usize,
    attn_mass: f64,
    sink_frac: f64,
    dom_ratio: f64,
    max_abs_first: f64,
    max_abs_rest: f64,
    norm_first: f64,
    norm_rest: f64,
    mid_norm_first: f64,
    mid_norm_rest: f64,
    dim1: i64,
    dim1_value: f64,
    dim2: i64,
    dim2_value: f64,
    ffn_median_abs: f64,
    top_ffn_channel: i64,
    top_ffn_value: f64,
}

#[derive(Serialize, Default)]
struct HeadRow<'a> {
    input: &'a str,
    layer: usize,
    head: usize,
    alpha0: f64,
}

pub(crate) fn write_down_proj(ctx: &mut RunContext, down: &[DownProjLayer]) -> anyhow::Result<()> {
    ctx.write_rows(
        "down_proj_layers.csv",
        down.iter().map(|d| DownProjRow {
            layer: d.layer,
            max_abs: d.max_abs,
            max_row: d.max_row,
            max_col: d.max_col,
            col_max_median: d.col_max_median,
            col_spike: d.col_spike,
            row_max_median: d.row_max_median,
            row_spike: d.row_spike,
            spike_cols: join(&d.spike_cols),
            spike_rows: join(&d.spike_rows),
        }),
    )?;
    Ok(())
}

#[derive(Serialize, Default)]
struct DownProjRow {
    layer: usize,
    max_abs: f64,
    max_row: usize,
    max_col: usize,
    col_max_median: f64,
    col_spike: f64,
    row_max_median: f64,
    row_spike: f64,
    spike_cols: String,
    spike_rows: String,
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
    ctx.write_rows(
        "super_neurons.csv",
        rows.iter().map(|r| {
            let s = &r.sn;
            let w = watch(s.layer, s.channel);
            let feed = |i: usize| s.feeds.get(i);
            SuperNeuronRow {
                input: r.input,
                layer: s.layer,
                channel: s.channel,
                activation: s.activation,
                ratio_to_median: s.ratio_to_median,
                max_abs_elsewhere: s.max_abs_elsewhere,
                feed1: channel_or_none(feed(0).map(|f| f.channel)),
                feed1_weight: feed(0).map_or(f64::NAN, |f| f.value),
                feed2: channel_or_none(feed(1).map(|f| f.channel)),
                feed2_weight: feed(1).map_or(f64::NAN, |f| f.value),
                top1_share: s.top1_energy_share,
                top2_share: s.top2_energy_share,
                dominant_dims: join(&r.dominant),
                feeds_dominant: r.feeds_dominant,
                flagged_in_other_input: r.in_other_input,
                datafree_spike: r.datafree_spike,
                datafree_col_rank: r.datafree_rank,
                heldout_mean_abs_first: w.map_or(f64::NAN, |w| w.mean_abs_first()),
                heldout_mean_abs_rest: w.map_or(f64::NAN, |w| w.mean_abs_rest()),
                heldout_fire_rate_rest: w.map_or(f64::NAN, |w| w.fire_rate_rest()),
                heldout_max_abs_rest: w.map_or(f64::NAN, |w| w.max_abs_rest),
                heldout_last_fire_pos: channel_or_none(w.map(|w| w.last_fire_pos)),
            }
        }),
    )?;
    Ok(())
}

#[derive(Serialize, Default)]
struct SuperNeuronRow {
    input: &'static str,
    layer: usize,
    channel: usize,
    activation: f64,
    ratio_to_median: f64,
    max_abs_elsewhere: f64,
    feed1: i64,
    feed1_weight: f64,
    feed2: i64,
    feed2_weight: f64,
    top1_share: f64,
    top2_share: f64,
    dominant_dims: String,
    feeds_dominant: bool,
    flagged_in_other_input: bool,
    datafree_spike: bool,
    datafree_col_rank: usize,
    heldout_mean_abs_first: f64,
    heldout_mean_abs_rest: f64,
    heldout_fire_rate_rest: f64,
    heldout_max_abs_rest: f64,
    heldout_last_fire_pos: i64,
}

pub(crate) fn write_shares(
    ctx: &mut RunContext,
    shares: &[(usize, Vec<(f64, f64)>)],
    sn: &[(usize, usize)],
) -> anyhow::Result<()> {
    let rows = shares.iter().flat_map(|(l, v)| {
        v.iter()
            .enumerate()
            .map(move |(c, &(top1_share, top2_share))| ShareRow {
                layer: *l,
                channel: c,
                top1_share,
                top2_share,
                super_neuron: sn.contains(&(*l, c)),
            })
    });
    ctx.write_rows("down_proj_shares.csv", rows)?;
    Ok(())
}

#[derive(Serialize, Default)]
struct ShareRow {
    layer: usize,
    channel: usize,
    top1_share: f64,
    top2_share: f64,
    super_neuron: bool,
}

pub(crate) fn write_first_token(ctx: &mut RunContext, base: &Eval) -> anyhow::Result<()> {
    let f = &base.first;
    let embed = f.embed.means();
    let mut prev = embed.norm_first;
    let mut rows = Vec::new();
    for layer in 0..f.post.len() {
        let (m, p) = (f.mid[layer].means(), f.post[layer].means());
        rows.push(FirstTokenRow {
            layer,
            mid_norm_first: m.norm_first,
            mid_norm_rest: m.norm_rest,
            post_norm_first: p.norm_first,
            post_norm_rest: p.norm_rest,
            mid_var_first: m.var_first,
            mid_var_rest: m.var_rest,
            post_var_first: p.var_first,
            post_var_rest: p.var_rest,
            post_max_abs_first: p.max_abs_first,
            post_max_abs_rest: p.max_abs_rest,
            ffn_norm_gain_first: p.norm_first / m.norm_first,
            ffn_norm_gain_rest: p.norm_rest / m.norm_rest,
            ffn_var_gain_first: p.var_first / m.var_first,
            ffn_var_gain_rest: p.var_rest / m.var_rest,
            norm_jump_first: p.norm_first / prev,
        });
        prev = p.norm_first;
    }
    ctx.write_rows("first_token_by_layer.csv", rows)?;
    ctx.metric("embed_norm_first", embed.norm_first)?;
    ctx.metric("embed_norm_rest", embed.norm_rest)?;
    Ok(())
}

#[derive(Serialize, Default)]
struct FirstTokenRow {
    layer: usize,
    mid_norm_first: f64,
    mid_norm_rest: f64,
    post_norm_first: f64,
    post_norm_rest: f64,
    mid_var_first: f64,
    mid_var_rest: f64,
    post_var_first: f64,
    post_var_rest: f64,
    post_max_abs_first: f64,
    post_max_abs_rest: f64,
    ffn_norm_gain_first: f64,
    ffn_norm_gain_rest: f64,
    ffn_var_gain_first: f64,
    ffn_var_gain_rest: f64,
    norm_jump_first: f64,
}

pub(crate) fn write_carriers(
    ctx: &mut RunContext,
    early: Option<&EarlyCarriers>,
) -> anyhow::Result<()> {
    let rows = early.into_iter().flat_map(|e| {
        e.carriers.iter().map(move |c| CarrierRow {
            dim: e.dim,
            layer: c.layer,
            channel: c.channel,
            activation: c.activation,
            weight: c.weight,
            contribution: c.contribution,
            cum_share: c.cum_share,
        })
    });
    ctx.write_rows("early_carriers.csv", rows)?;
    Ok(())
}

#[derive(Serialize, Default)]
struct CarrierRow {
    dim: usize,
    layer: usize,
    channel: usize,
    activation: f64,
    weight: f64,
    contribution: f64,
    cum_share: f64,
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

/// An evaluation's sink and DomRatio over the spans of [`Spans`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanStats {
    pub(crate) sink: f64,
    pub(crate) sink_early: f64,
    pub(crate) sink_late: f64,
    pub(crate) dom_ratio_early: f64,
    pub(crate) dom_ratio_late: f64,
}

impl SpanStats {
    /// The statistics with the names their metrics and columns use.
    pub(crate) fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("sink", self.sink),
            ("sink_early", self.sink_early),
            ("sink_late", self.sink_late),
            ("dom_ratio_early", self.dom_ratio_early),
            ("dom_ratio_late", self.dom_ratio_late),
        ]
    }
}

impl Spans {
    pub(crate) fn stats(&self, e: &Eval) -> SpanStats {
        SpanStats {
            sink: e.sink_metric,
            sink_early: e.sink_over(self.sink_early.iter().copied()),
            sink_late: e.sink_over(self.sink_late.iter().copied()),
            dom_ratio_early: e.dom_ratio_over(self.dom_early.iter().copied()),
            dom_ratio_late: e.dom_ratio_over(self.dom_late.iter().copied()),
        }
    }
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
        let st = sp.stats(e);
        summary.push(AblationRow {
            condition: key,
            ablated: name,
            kind,
            targets,
            sink: st.sink,
            sink_early: st.sink_early,
            sink_late: st.sink_late,
            dom_ratio_early: st.dom_ratio_early,
            dom_ratio_late: st.dom_ratio_late,
            dom_ratio_final: e.layers.last().map_or(f64::NAN, |l| l.dom_ratio),
            loss: e.loss,
            dloss: e.loss - base.loss,
        });
        layers.extend(e.layers.iter().map(|l| AblationLayerRow {
            condition: key,
            layer: l.layer,
            sink_frac: l.sink_frac,
            attn_mass: l.attn_mass,
            dom_ratio: l.dom_ratio,
            max_abs_first: l.max_abs_first,
            max_abs_rest: l.max_abs_rest,
        }));
    }
    ctx.write_rows("ablation.csv", summary)?;
    ctx.write_rows("ablation_layers.csv", layers)?;
    Ok(())
}

#[derive(Serialize, Default)]
struct AblationRow<'a> {
    condition: &'a str,
    ablated: &'a str,
    kind: &'a str,
    targets: &'a str,
    sink: f64,
    sink_early: f64,
    sink_late: f64,
    dom_ratio_early: f64,
    dom_ratio_late: f64,
    dom_ratio_final: f64,
    loss: f64,
    dloss: f64,
}

#[derive(Serialize, Default)]
struct AblationLayerRow<'a> {
    condition: &'a str,
    layer: usize,
    sink_frac: f64,
    attn_mass: f64,
    dom_ratio: f64,
    max_abs_first: f64,
    max_abs_rest: f64,
}
