//! Figures from the run's CSV files alone.

use anyhow::Context;
use sinkrep_runner::{
    bar_chart, heatmap, histogram, line_chart, model_dir, BarChart, BarGroup, ColourMap, CsvTable,
    FigureStyle, Heatmap, HistSeries, Histogram, LineChart, Series,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn read(run_dir: &Path, name: &str) -> anyhow::Result<CsvTable> {
    Ok(CsvTable::read(&run_dir.join(name))?)
}

/// Rows of `t` whose `column` equals `value`, as a table of their own.
fn filter(t: &CsvTable, column: &str, value: &str) -> anyhow::Result<CsvTable> {
    let col = t.column(column)?;
    let rows = t
        .rows
        .iter()
        .zip(col)
        .filter(|(_, c)| *c == value)
        .map(|(r, _)| r.clone())
        .collect();
    Ok(CsvTable {
        path: t.path.clone(),
        header: t.header.clone(),
        rows,
    })
}

fn series(t: &CsvTable, x: &str, y: &str, name: &str) -> anyhow::Result<Series> {
    let xs = t.column_f64(x)?;
    let ys = t.column_f64(y)?;
    Ok(Series {
        name: name.to_string(),
        points: xs.into_iter().zip(ys).collect(),
    })
}

/// Category labels short enough to all show under the bars.
fn short_name(ablated: &str) -> String {
    match ablated {
        "baseline" => "none".into(),
        "sn-all" => "SN".into(),
        "early+sn-all" => "E+SN".into(),
        s => s
            .strip_prefix("sn-l")
            .map_or_else(|| s.to_string(), |l| format!("L{l}")),
    }
}

/// The figures of every pinned model's tables: the primary's from the run folder into
/// `fig_dir`, another's from the folder of its name (`RunContext::for_model`) into
/// `fig_dir/<alias>`.
pub fn figures(
    run_dir: &Path,
    fig_dir: &Path,
    style: &FigureStyle,
) -> anyhow::Result<Vec<PathBuf>> {
    let claim = crate::claim()?;
    let mut out = Vec::new();
    for alias in &claim.models {
        let who = sinkrep_analysis::pinned::pinned_model(alias)?.short;
        let (run, fig) = (
            model_dir(&claim.models, alias, run_dir),
            model_dir(&claim.models, alias, fig_dir),
        );
        out.extend(
            model_figures(&run, &fig, style, who).with_context(|| format!("{alias} figures"))?,
        );
    }
    Ok(out)
}

/// One pretrained model's figures; titles name the model (`who`).
fn model_figures(
    run_dir: &Path,
    fig_dir: &Path,
    style: &FigureStyle,
    who: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();

    // alpha_0 per layer and head.
    let heads = read(run_dir, "alpha_per_head.csv")?;
    for (input, title) in [
        ("text", "Attention received by position 0 (natural text)"),
        ("random", "Attention received by position 0 (random tokens)"),
    ] {
        let t = filter(&heads, "input", input)?;
        let layer = t.column_f64("layer")?;
        let head = t.column_f64("head")?;
        let alpha = t.column_f64("alpha0")?;
        let nl = layer.iter().fold(0.0f64, |m, x| m.max(*x)) as usize + 1;
        let nh = head.iter().fold(0.0f64, |m, x| m.max(*x)) as usize + 1;
        let mut m = vec![vec![f64::NAN; nh]; nl];
        for ((l, h), a) in layer.iter().zip(&head).zip(&alpha) {
            m[*l as usize][*h as usize] = *a;
        }
        let f = heatmap(
            style,
            &fig_dir.join(format!("alpha0_{input}")),
            &Heatmap {
                title: &format!("{who}: {title}"),
                x_label: "head",
                y_label: "layer",
                matrix: &m,
                x_ticks: &[],
                y_ticks: &[],
                legend: "alpha_0",
                colours: ColourMap::Viridis,
                range: Some((0.0, 1.0)),
                log: false,
            },
        )?;
        out.extend(f.paths());
    }

    // Max-abs of the residual stream by layer, first token against the rest.
    let census = read(run_dir, "census_layers.csv")?;
    let mut s = Vec::new();
    for (input, label) in [("text", "natural text"), ("random", "random tokens")] {
        let t = filter(&census, "input", input)?;
        s.push(series(
            &t,
            "layer",
            "max_abs_first",
            &format!("position 0, {label}"),
        )?);
        s.push(series(
            &t,
            "layer",
            "max_abs_rest",
            &format!("other positions, {label}"),
        )?);
    }
    let f = line_chart(
        style,
        &fig_dir.join("max_abs_by_layer"),
        &LineChart {
            title: &format!("{who}: largest |h_j| of the residual stream after each layer"),
            x_label: "layer",
            y_label: "max_j |h_j| (mean over sequences)",
            series: &s,
            log_x: false,
            log_y: true,
        },
    )?;
    out.extend(f.paths());

    // Top-2 energy share of every down-projection column of the super-neuron layers.
    let shares = read(run_dir, "down_proj_shares.csv")?;
    let top2 = shares.column_f64("top2_share")?;
    let is_sn = shares.column("super_neuron")?;
    let (mut sn, mut ord) = (Vec::new(), Vec::new());
    for (v, flag) in top2.into_iter().zip(is_sn) {
        if flag == "true" {
            sn.push(v);
        } else {
            ord.push(v);
        }
    }
    let f = histogram(
        style,
        &fig_dir.join("top2_share_hist"),
        &Histogram {
            title: &format!("{who} down-projection columns: energy share of the top 2 hidden dims"),
            x_label: "top-2 energy share",
            y_label: "channels",
            series: &[
                HistSeries {
                    name: "ordinary channels (super-neuron layers)".into(),
                    values: ord,
                },
                HistSeries {
                    name: "super neurons".into(),
                    values: sn,
                },
            ],
            bins: 40,
            log_x: false,
            log_y: true,
        },
    )?;
    out.extend(f.paths());

    // FFN amplification of the first token.
    let first = read(run_dir, "first_token_by_layer.csv")?;
    let s = [
        series(&first, "layer", "ffn_norm_gain_first", "position 0")?,
        series(
            &first,
            "layer",
            "ffn_norm_gain_rest",
            "other positions (mean)",
        )?,
    ];
    let f = line_chart(
        style,
        &fig_dir.join("ffn_norm_gain"),
        &LineChart {
            title: &format!(
                "{who}: FFN gain of the residual norm, ||h after FFN|| / ||h before FFN||"
            ),
            x_label: "layer",
            y_label: "norm gain (held-out text)",
            series: &s,
            log_x: false,
            log_y: true,
        },
    )?;
    out.extend(f.paths());

    // Data-free spikes in W_down.
    let down = read(run_dir, "down_proj_layers.csv")?;
    let s = [
        series(
            &down,
            "layer",
            "col_spike",
            "largest column max / median column max",
        )?,
        series(
            &down,
            "layer",
            "row_spike",
            "largest row max / median row max",
        )?,
    ];
    let f = line_chart(
        style,
        &fig_dir.join("down_proj_spikes"),
        &LineChart {
            title: &format!("{who}: spikes in |W_down| maxima (data-free)"),
            x_label: "layer",
            y_label: "spike ratio",
            series: &s,
            log_x: false,
            log_y: true,
        },
    )?;
    out.extend(f.paths());

    // Ablations: per layer (mean ablation and the baseline), and the summary bars.
    let abl = read(run_dir, "ablation_layers.csv")?;
    let conds = abl.column("condition")?;
    // The per-layer super-neuron conditions overlap these curves (layer 11 alone equals
    // all super neurons before layer 28; layers 28-29 alone equal the baseline before
    // them), so they are left to the tables.
    let shown = ["baseline", "sn-all/mean", "early/mean", "early+sn-all/mean"];
    let mut keys: Vec<String> = Vec::new();
    for c in conds {
        if shown.contains(&c) && !keys.iter().any(|k| k == c) {
            keys.push(c.to_string());
        }
    }
    let mut dom = Vec::new();
    let mut sink = Vec::new();
    for k in &keys {
        let t = filter(&abl, "condition", k)?;
        dom.push(series(&t, "layer", "dom_ratio", k)?);
        let mut s = series(&t, "layer", "sink_frac", k)?;
        for p in &mut s.points {
            p.1 *= 100.0;
        }
        sink.push(s);
    }
    for (stem, title, y, s, log_y) in [
        (
            "ablation_dom_ratio",
            "DomRatio of h_0 after each layer under mean ablation at position 0",
            "DomRatio(h_0)",
            &dom,
            true,
        ),
        (
            "ablation_sink_by_layer",
            "Heads sinking on position 0 (alpha_0 > 0.3), mean ablations",
            "heads with alpha_0 > 0.3 (%)",
            &sink,
            false,
        ),
    ] {
        let f = line_chart(
            style,
            &fig_dir.join(stem),
            &LineChart {
                title: &format!("{who}: {title}"),
                x_label: "layer",
                y_label: y,
                series: s,
                log_x: false,
                log_y,
            },
        )?;
        out.extend(f.paths());
    }
    let summary = read(run_dir, "ablation.csv")?;
    let mut by_name: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    let names_col = summary.column("ablated")?;
    let kinds = summary.column("kind")?;
    let sinks = summary.column_f64("sink")?;
    let dloss = summary.column_f64("dloss")?;
    for i in 0..summary.rows.len() {
        let name = short_name(names_col[i]);
        if !names.contains(&name) {
            names.push(name.clone());
        }
        let e = by_name.entry(format!("{name}|{}", kinds[i])).or_default();
        *e = (sinks[i], dloss[i]);
    }
    let group = |kind: &str, pick: fn(&(f64, f64)) -> f64| BarGroup {
        name: match kind {
            "none" => "no ablation".to_string(),
            k => format!("{k} ablation"),
        },
        values: names
            .iter()
            .map(|n| {
                by_name
                    .get(&format!("{n}|{kind}"))
                    .or_else(|| by_name.get(&format!("{n}|none")))
                    .map_or(f64::NAN, pick)
            })
            .collect(),
        errors: vec![],
    };
    for (stem, title, y, pick) in [
        (
            "ablation_sink",
            "Sink_0^0.3 on held-out text under ablation at position 0",
            "Sink_0^0.3 (%)",
            (|v: &(f64, f64)| v.0) as fn(&(f64, f64)) -> f64,
        ),
        (
            "ablation_dloss",
            "Change of the language-model loss under ablation at position 0",
            "loss - baseline loss (nats/token)",
            |v: &(f64, f64)| v.1,
        ),
    ] {
        let f = bar_chart(
            style,
            &fig_dir.join(stem),
            &BarChart {
                title: &format!("{who}: {title}"),
                x_label: "ablated at position 0 (Ln: layer n's super neurons; SN: all; E: early carriers)",
                y_label: y,
                categories: &names,
                groups: &[group("zero", pick), group("mean", pick)],
            },
        )?;
        out.extend(f.paths());
    }
    Ok(out)
}
