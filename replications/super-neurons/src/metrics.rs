//! The metrics of a run (names in the README; the checks use some of them).

use sinkrep_analysis::{kendall_tau, SinkReport};
use sinkrep_runner::RunContext;
use sinkrep_stats::{max, mean, median, min};

use crate::rows::*;
use crate::study::{Condition, EarlyCarriers, Eval};
use crate::weights::DownProjLayer;
use crate::{probe, weights};

/// Kendall's tau between the DomRatio of h_0 entering layer l (after layer l-1) and the
/// share of heads of layer l that sink on position 0, over l = 1..L-1.
pub(crate) fn dom_sink_tau(r: &SinkReport) -> f64 {
    let n = r.layers.len().saturating_sub(1);
    let dom: Vec<f64> = r.layers.iter().take(n).map(|l| l.dom_ratio).collect();
    let sink: Vec<f64> = r.layers.iter().skip(1).map(|l| l.sink_frac).collect();
    kendall_tau(&dom, &sink)
}

/// The census metrics of both inputs, each name prefixed with `prefix`.
pub(crate) fn census_metrics(
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

pub(crate) fn sn_metrics(
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

pub(crate) fn amplification_metrics(
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

pub(crate) fn carrier_metrics(
    ctx: &mut RunContext,
    early: Option<&EarlyCarriers>,
) -> anyhow::Result<()> {
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

pub(crate) fn ablation_metrics(
    ctx: &mut RunContext,
    base: &Eval,
    evals: &[(Condition, Eval)],
    first_sn: Option<usize>,
    n_layers: usize,
) -> anyhow::Result<()> {
    let sp = spans(first_sn, n_layers);
    let base_stats = sp.stats(base);
    for (name, v) in base_stats.named() {
        ctx.metric(&format!("heldout_{name}"), v)?;
    }
    ctx.metric("heldout_loss", base.loss)?;
    for (c, e) in evals {
        let p = format!("ablate.{}.{}", c.name, c.kind_name());
        for (name, v) in sp.stats(e).named() {
            ctx.metric(&format!("{p}.{name}"), v)?;
        }
        ctx.metric(&format!("{p}.dloss"), e.loss - base.loss)?;
    }
    // The conditions every model has unless there is nothing to ablate (no super neuron;
    // no layer before the first one, as on Gemma-3, whose is layer 0): NaN then, so the
    // metric names (and the claim file's tolerances, which apply to every model) are the
    // same for every model.
    for (name, kinds) in [
        ("sn-all", &["zero", "mean"][..]),
        ("early", &["mean"][..]),
        ("early+sn-all", &["mean"][..]),
    ] {
        for kind in kinds {
            if evals
                .iter()
                .any(|(c, _)| c.name == name && c.kind_name() == *kind)
            {
                continue;
            }
            let p = format!("ablate.{name}.{kind}");
            for (stat, _) in base_stats.named() {
                ctx.metric(&format!("{p}.{stat}"), f64::NAN)?;
            }
            ctx.metric(&format!("{p}.dloss"), f64::NAN)?;
        }
    }
    // The checked ratios: every super neuron mean-ablated at position 0, and the follow-up
    // with the early carriers too.
    let find = |name: &str| {
        evals
            .iter()
            .find(|(c, _)| c.name == name && c.kind == sinkrep_model::AblateKind::Mean)
            .map(|(_, e)| sp.stats(e))
    };
    for (name, metric) in [
        ("sn-all", "sn_all"),
        ("early+sn-all", "early_sn_all"),
        ("early", "early"),
    ] {
        let ablated = find(name);
        for (i, (stat, base_value)) in base_stats.named().into_iter().enumerate() {
            // DomRatio after the super-neuron layers is the headline: plain `dom_ratio`.
            let stat = if stat == "dom_ratio_late" {
                "dom_ratio"
            } else {
                stat
            };
            ctx.metric(
                &format!("{metric}_mean_{stat}_ratio"),
                ablated.map_or(f64::NAN, |a| a.named()[i].1 / base_value),
            )?;
        }
    }
    Ok(())
}
