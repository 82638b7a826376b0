//! Figures, drawn from the run's CSV files alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sinkrep_runner::{line_chart, CsvTable, FigureStyle, LineChart, Series};
use sinkrep_stats::{max, mean, min, MeanInterval};

use crate::VARIANTS;

/// (variant, x -> values over seeds).
type Groups = Vec<(String, BTreeMap<u64, Vec<f64>>)>;

/// For each variant: x -> the values of `col` over seeds (rows of that variant).
fn by_variant(table: &CsvTable, x: &str, col: &str) -> Result<Groups> {
    let vs = table.column("variant")?;
    let xs = table.column_f64(x)?;
    let ys = table.column_f64(col)?;
    Ok(VARIANTS
        .iter()
        .map(|(name, _)| {
            let mut m: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for i in 0..vs.len() {
                if vs[i] == *name {
                    m.entry(xs[i] as u64).or_default().push(ys[i]);
                }
            }
            (name.to_string(), m)
        })
        .filter(|(_, m)| !m.is_empty())
        .collect())
}

fn stat(m: &BTreeMap<u64, Vec<f64>>, f: impl Fn(&[f64]) -> f64) -> Vec<(f64, f64)> {
    m.iter().map(|(x, v)| (*x as f64, f(v))).collect()
}

/// Mean over seeds, with the min and max over seeds as the band.
fn banded(groups: &Groups) -> Vec<Series> {
    groups
        .iter()
        .flat_map(|(name, m)| {
            [
                Series {
                    name: format!("{name} (mean)"),
                    points: stat(m, |v| mean(v)),
                },
                Series {
                    name: format!("{name} (min over seeds)"),
                    points: stat(m, min),
                },
                Series {
                    name: format!("{name} (max over seeds)"),
                    points: stat(m, max),
                },
            ]
        })
        .collect()
}

fn means(groups: &Groups) -> Vec<Series> {
    groups
        .iter()
        .map(|(name, m)| Series {
            name: name.clone(),
            points: stat(m, |v| mean(v)),
        })
        .collect()
}

pub fn draw(run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let val = CsvTable::read(&run_dir.join("val_curves.csv"))?;
    let series = banded(&by_variant(&val, "step", "val_loss")?);
    out.extend(
        line_chart(
            style,
            &fig_dir.join("val_loss"),
            &LineChart {
                title: "Validation loss by variant (mean and range over seeds)",
                x_label: "step",
                y_label: "validation loss (nats/token)",
                series: &series,
                log_x: false,
                log_y: false,
            },
        )?
        .paths(),
    );

    // Training loss: mean over seeds, then averaged over blocks of 1/25 of the run.
    let tr = CsvTable::read(&run_dir.join("train_curves.csv"))?;
    let groups = by_variant(&tr, "step", "train_loss")?;
    let series: Vec<Series> = groups
        .iter()
        .map(|(name, m)| {
            let pts = stat(m, |v| mean(v));
            let block = (pts.len() / 25).max(1);
            Series {
                name: name.clone(),
                points: pts
                    .chunks(block)
                    .map(|c| {
                        let n = c.len() as f64;
                        (c[c.len() - 1].0, c.iter().map(|p| p.1).sum::<f64>() / n)
                    })
                    .collect(),
            }
        })
        .collect();
    out.extend(
        line_chart(
            style,
            &fig_dir.join("train_loss"),
            &LineChart {
                title: "Training loss by variant (mean over seeds, block-averaged)",
                x_label: "step",
                y_label: "training loss (nats/token)",
                series: &series,
                log_x: false,
                log_y: false,
            },
        )?
        .paths(),
    );

    let ev = CsvTable::read(&run_dir.join("eval_metrics.csv"))?;
    let charts = [
        (
            "sink_pct",
            "sink_over_training",
            "Sink_1^0.3 over training (mean over seeds)",
            "Sink_1^0.3 (%)",
            false,
        ),
        (
            "dom_ratio_max",
            "dom_ratio_over_training",
            "First token's DomRatio (max over layers) over training",
            "DomRatio",
            true,
        ),
        (
            "abs_log_out_var_ratio",
            "parity_over_training",
            "Positional variance gap |ln Var(pos 0)/Var(rest)| after W_O, mean over layers",
            "|ln ratio|",
            false,
        ),
        (
            "eff_rank",
            "eff_rank_over_training",
            "Effective rank of final hidden states over training",
            "effective rank",
            false,
        ),
    ];
    out.extend(over_training(&ev, &charts, means, fig_dir, style)?);

    // Per-position variance at the end, normalised by the mean over positions > 0 in
    // each (seed, layer), then averaged over seeds and layers.
    let vp = CsvTable::read(&run_dir.join("var_by_position.csv"))?;
    let (vs, seeds, layers, pos) = (
        vp.column("variant")?,
        vp.column_f64("seed")?,
        vp.column_f64("layer")?,
        vp.column_f64("position")?,
    );
    for (col, stem, title) in [
        (
            "out_var",
            "var_by_position_out",
            "Per-position variance after head norm/gate and W_O, end of training",
        ),
        (
            "agg_var",
            "var_by_position_agg",
            "Per-position variance of value aggregation o (before head norm/gate), end",
        ),
    ] {
        let ys = vp.column_f64(col)?;
        // (variant, seed, layer) -> values by position
        let mut prof: BTreeMap<(String, u64, u64), Vec<(u64, f64)>> = BTreeMap::new();
        for i in 0..ys.len() {
            prof.entry((vs[i].to_string(), seeds[i] as u64, layers[i] as u64))
                .or_default()
                .push((pos[i] as u64, ys[i]));
        }
        let mut acc: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
        for ((v, _, _), p) in &prof {
            let rest: Vec<f64> = p.iter().filter(|x| x.0 > 0).map(|x| x.1).collect();
            let norm = mean(&rest);
            for (t, y) in p {
                acc.entry(v.clone())
                    .or_default()
                    .entry(*t)
                    .or_default()
                    .push(y / norm);
            }
        }
        let groups: Groups = VARIANTS
            .iter()
            .filter_map(|(n, _)| acc.get(*n).map(|m| (n.to_string(), m.clone())))
            .collect();
        let series = means(&groups);
        out.extend(
            line_chart(
                style,
                &fig_dir.join(stem),
                &LineChart {
                    title,
                    x_label: "position",
                    y_label: "variance / mean variance at positions > 0",
                    series: &series,
                    log_x: false,
                    log_y: true,
                },
            )?
            .paths(),
        );
    }
    out.extend(grid_figure(run_dir, fig_dir, style)?);
    out.extend(synthetic_figures(run_dir, fig_dir, style)?);
    Ok(out)
}

/// Emergence on the synthetic subject: Sink_0, DomRatio of h_0, the top FFN activation at
/// position 0 and the validation loss over training, per variant, mean over seeds with
/// the min and max over seeds as the band.
fn synthetic_figures(run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
    let path = run_dir.join(crate::SYNTHETIC_EVAL_CSV);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let ev = CsvTable::read(&path)?;
    let charts = [
        (
            "sink_pct",
            "synthetic_sink_over_training",
            "Synthetic subject: Sink_0^0.3 over training",
            "Sink_0^0.3 (%)",
            false,
        ),
        (
            "dom_ratio_max",
            "synthetic_dom_ratio_over_training",
            "Synthetic subject: DomRatio of h_0 (max over layers) over training",
            "DomRatio",
            true,
        ),
        (
            "top_ffn_abs",
            "synthetic_top_ffn_over_training",
            "Synthetic subject: largest FFN activation at position 0 over training",
            "|mean activation| of the top channel",
            true,
        ),
        (
            "val_loss",
            "synthetic_val_loss",
            "Synthetic subject: validation loss over training",
            "val loss (nats/token)",
            false,
        ),
    ];
    over_training(&ev, &charts, banded, fig_dir, style)
}

/// One chart of an evaluation table's column over training steps.
type OverTraining<'a> = (&'a str, &'a str, &'a str, &'a str, bool);

/// Line charts of `charts` (column, file stem, title, y label, log y) over training
/// steps, one line set per variant as `reduce` makes it from the seeds.
fn over_training(
    ev: &CsvTable,
    charts: &[OverTraining],
    reduce: fn(&Groups) -> Vec<Series>,
    fig_dir: &Path,
    style: &FigureStyle,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for &(col, stem, title, y, log_y) in charts {
        let series = reduce(&by_variant(ev, "step", col)?);
        out.extend(
            line_chart(
                style,
                &fig_dir.join(stem),
                &LineChart {
                    title,
                    x_label: "step",
                    y_label: y,
                    series: &series,
                    log_x: false,
                    log_y,
                },
            )?
            .paths(),
        );
    }
    Ok(out)
}

/// The sensitivity grid: paired validation-loss difference (head-wise − baseline) along
/// training for each configuration, mean over seeds with its 95% t-interval.
fn grid_figure(run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
    let g = CsvTable::read(&run_dir.join("grid_curves.csv"))?;
    let (cfgs, steps, diffs) = (
        g.column("config")?,
        g.column_f64("step")?,
        g.column_f64("diff")?,
    );
    let mut acc: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for i in 0..cfgs.len() {
        acc.entry(cfgs[i].to_string())
            .or_default()
            .entry(steps[i] as u64)
            .or_default()
            .push(diffs[i]);
    }
    let mut series = Vec::new();
    for (cfg, m) in &acc {
        let ci = |sign: f64| -> Vec<(f64, f64)> {
            m.iter()
                .map(|(x, v)| {
                    let ci = MeanInterval::of(v);
                    (*x as f64, ci.mean + sign * ci.half)
                })
                .collect()
        };
        series.push(Series {
            name: format!("{cfg} (mean)"),
            points: stat(m, |v| mean(v)),
        });
        // Intervals for the judged configuration and the gain's start only: the two
        // the report discusses; more bands make the figure unreadable.
        if cfg == "judged" || cfg == "gain-matched" {
            series.push(Series {
                name: format!("{cfg} (95% lo)"),
                points: ci(-1.0),
            });
            series.push(Series {
                name: format!("{cfg} (95% hi)"),
                points: ci(1.0),
            });
        }
    }
    Ok(line_chart(
        style,
        &fig_dir.join("grid_paired_val_loss"),
        &LineChart {
            title: "Head-wise − baseline val loss, by configuration",
            x_label: "step",
            y_label: "paired val-loss difference (nats/token)",
            series: &series,
            log_x: false,
            log_y: false,
        },
    )?
    .paths())
}
