//! Figures, drawn from the run's CSV files alone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sinkrep_runner::{
    bar_chart, line_chart, BarChart, BarGroup, CsvTable, FigureStyle, LineChart, Series,
};

/// The row indices of one layer's rows: (layer, rows).
type LayerRows = (usize, Vec<usize>);

/// Rows of a CSV grouped by a key column (in order of first appearance) and by layer.
struct Grouped {
    /// (key, layers in order of first appearance).
    groups: Vec<(String, Vec<LayerRows>)>,
    table: CsvTable,
}

impl Grouped {
    fn read(path: &Path, key: &str) -> Result<Grouped> {
        let table = CsvTable::read(path)?;
        let keys = table.column(key)?;
        let layers = table.column_f64("layer")?;
        let mut groups: Vec<(String, Vec<LayerRows>)> = Vec::new();
        for (i, (k, l)) in keys.iter().zip(&layers).enumerate() {
            let l = *l as usize;
            let g = match groups.iter().position(|g| g.0 == *k) {
                Some(g) => g,
                None => {
                    groups.push((k.to_string(), Vec::new()));
                    groups.len() - 1
                }
            };
            let ls = &mut groups[g].1;
            match ls.iter().position(|x| x.0 == l) {
                Some(j) => ls[j].1.push(i),
                None => ls.push((l, vec![i])),
            }
        }
        Ok(Grouped { groups, table })
    }

    /// Column `col` for the rows of (key, layer), in file order.
    fn values(&self, col: &str, rows: &[usize]) -> Result<Vec<f64>> {
        let all = self.table.column_f64(col)?;
        Ok(rows.iter().map(|&i| all[i]).collect())
    }

    fn group(&self, key: &str) -> Option<&[LayerRows]> {
        self.groups
            .iter()
            .find(|g| g.0 == key)
            .map(|g| g.1.as_slice())
    }
}

/// v[t] / mean(v[1..]): position 0 then reads as the ratio the checks use.
fn normalised(v: &[f64]) -> Vec<f64> {
    if v.len() < 2 {
        return v.to_vec();
    }
    let m = v[1..].iter().sum::<f64>() / (v.len() - 1) as f64;
    v.iter().map(|x| x / m).collect()
}

/// The i.i.d.-uniform prediction 1/(t+1), normalised the same way.
fn theory_series(len: usize) -> Series {
    let e: Vec<f64> = (0..len).map(|t| 1.0 / (t + 1) as f64).collect();
    Series {
        name: "uniform i.i.d. theory, 1/(t+1)".into(),
        points: normalised(&e)
            .into_iter()
            .enumerate()
            .map(|(t, y)| ((t + 1) as f64, y))
            .collect(),
    }
}

fn by_position(name: String, v: &[f64]) -> Series {
    Series {
        name,
        points: v
            .iter()
            .enumerate()
            .map(|(t, y)| ((t + 1) as f64, *y))
            .collect(),
    }
}

/// A few layers to show: the first four, the middle and the last.
fn shown_layers(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [0, 1, 2, 3, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter(|&l| l < n)
        .collect();
    v.dedup();
    v
}

fn variance_figure(
    style: &FigureStyle,
    stem: &Path,
    title: &str,
    groups: &Grouped,
    key: &str,
    all_layers: bool,
) -> Result<Vec<PathBuf>> {
    let Some(layers) = groups.group(key) else {
        return Ok(Vec::new());
    };
    let chosen: Vec<usize> = if all_layers {
        layers.iter().map(|l| l.0).collect()
    } else {
        shown_layers(layers.len())
    };
    let mut series = Vec::new();
    let mut len = 0;
    for (layer, rows) in layers.iter().filter(|l| chosen.contains(&l.0)) {
        let v = groups.values("z_var", rows)?;
        len = v.len();
        series.push(by_position(format!("layer {layer}"), &normalised(&v)));
    }
    series.push(theory_series(len));
    let f = line_chart(
        style,
        stem,
        &LineChart {
            title,
            x_label: "position t + 1",
            y_label: "Var(z_t) / mean over t >= 1",
            series: &series,
            log_x: true,
            log_y: true,
        },
    )?;
    Ok(f.paths())
}

/// One line per key of `col` against layer (plus an optional constant reference line).
fn by_layer_figure(
    style: &FigureStyle,
    stem: &Path,
    chart: (&str, &str),
    groups: &Grouped,
    col: &str,
    reference: Option<(&str, f64)>,
    log_y: bool,
) -> Result<Vec<PathBuf>> {
    let mut series = Vec::new();
    let mut max_layer = 0;
    for (key, layers) in &groups.groups {
        let mut points = Vec::new();
        for (layer, rows) in layers {
            points.push((*layer as f64, groups.values(col, rows)?[0]));
            max_layer = max_layer.max(*layer);
        }
        // Keys of the random-init table are seeds.
        let name = if key.chars().all(|c| c.is_ascii_digit()) {
            format!("seed {key}")
        } else {
            key.clone()
        };
        series.push(Series { name, points });
    }
    if let Some((name, y)) = reference {
        series.push(Series {
            name: name.into(),
            points: vec![(0.0, y), (max_layer as f64, y)],
        });
    }
    let f = line_chart(
        style,
        stem,
        &LineChart {
            title: chart.0,
            x_label: "layer",
            y_label: chart.1,
            series: &series,
            log_x: false,
            log_y,
        },
    )?;
    Ok(f.paths())
}

fn theory_figure(style: &FigureStyle, run_dir: &Path, fig_dir: &Path) -> Result<Vec<PathBuf>> {
    let t = CsvTable::read(&run_dir.join("theory_variance.csv"))?;
    let pos = t.column_f64("position")?;
    let mut series = Vec::new();
    for col in t.header.iter().filter(|h| *h != "position") {
        let name = match col.as_str() {
            "uniform" => "uniform attention".to_string(),
            "uniform_expected" => "Var(v)/(t+1)".to_string(),
            c => match c.strip_prefix("softmax_s") {
                Some(s) => format!("softmax, logits N(0, {s}^2)"),
                None => c.to_string(),
            },
        };
        let v = t.column_f64(col)?;
        series.push(Series {
            name,
            points: pos.iter().map(|p| p + 1.0).zip(v).collect(),
        });
    }
    let f = line_chart(
        style,
        &fig_dir.join("theory_variance"),
        &LineChart {
            title: "Causal aggregation of i.i.d. values (Var(v) = 1)",
            x_label: "position t + 1",
            y_label: "Var(o_t)",
            series: &series,
            log_x: true,
            log_y: true,
        },
    )?;
    Ok(f.paths())
}

fn tau_figure(style: &FigureStyle, stem: &Path, groups: &Grouped) -> Result<Vec<PathBuf>> {
    let Some(first) = groups.groups.first() else {
        return Ok(Vec::new());
    };
    let categories: Vec<String> = first.1.iter().map(|l| l.0.to_string()).collect();
    let mut bars = Vec::new();
    for (key, layers) in &groups.groups {
        let mut values = Vec::new();
        for (_, rows) in layers {
            values.push(groups.values("tau_wo", rows)?[0]);
        }
        bars.push(BarGroup {
            name: key.clone(),
            values,
            errors: Vec::new(),
        });
    }
    let f = bar_chart(
        style,
        stem,
        &BarChart {
            title: "Does W_O keep the per-position variance order? (Kendall tau)",
            x_label: "layer",
            y_label: "tau(Var z_t, Var attn_out_t)",
            categories: &categories,
            groups: &bars,
        },
    )?;
    Ok(f.paths())
}

/// The figures of one pretrained model's tables (`model_*.csv` in `run_dir`).
fn model_figures(
    run_dir: &Path,
    fig_dir: &Path,
    style: &FigureStyle,
    who: &str,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let pos = Grouped::read(&run_dir.join("model_variance_by_position.csv"), "input")?;
    let layers = Grouped::read(&run_dir.join("model_layers.csv"), "input")?;
    for (key, what) in [("random", "random tokens"), ("natural", "natural text")] {
        files.extend(variance_figure(
            style,
            &fig_dir.join(format!("variance_by_position_{key}")),
            &format!("{who} value-aggregation variance, {what}"),
            &pos,
            key,
            false,
        )?);
    }
    files.extend(by_layer_figure(
        style,
        &fig_dir.join("ratio_by_layer"),
        (
            &format!("{who}: Var(z_0) / mean Var(z_t), t >= 1"),
            "variance ratio, position 0 / rest",
        ),
        &layers,
        "z_ratio_first",
        Some(("1 (no discrepancy)", 1.0)),
        true,
    )?);
    files.extend(by_layer_figure(
        style,
        &fig_dir.join("slope_by_layer"),
        (
            &format!("{who}: decay of Var(z_t) with position (t >= 1)"),
            "log-log slope vs t + 1",
        ),
        &layers,
        "z_slope",
        Some(("-1 (uniform theory)", -1.0)),
        false,
    )?);
    files.extend(by_layer_figure(
        style,
        &fig_dir.join("attn_mass_by_layer"),
        (
            &format!("{who}: attention on position 0 (where the sink forms)"),
            "mean attention from queries t > 0",
        ),
        &layers,
        "attn_mass",
        Some(("eps = 0.3", sinkrep_stats::SINK_EPS)),
        false,
    )?);
    files.extend(tau_figure(
        style,
        &fig_dir.join("tau_wo_by_layer"),
        &layers,
    )?);

    Ok(files)
}

pub(crate) fn draw(run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
    let mut files = theory_figure(style, run_dir, fig_dir).context("theory figure")?;
    // Each pinned model's tables: the primary's in the run folder, another's in a
    // folder of its name (`RunContext::for_model`).
    let claim = crate::claim()?;
    for alias in &claim.models {
        let who = sinkrep_analysis::pinned::pinned_model(alias)?.short;
        let run = sinkrep_runner::model_dir(&claim.models, alias, run_dir);
        let fig = sinkrep_runner::model_dir(&claim.models, alias, fig_dir);
        files.extend(
            model_figures(&run, &fig, style, who).with_context(|| format!("{alias} figures"))?,
        );
    }

    let ipos = Grouped::read(&run_dir.join("init_variance_by_position.csv"), "seed")?;
    let ilayers = Grouped::read(&run_dir.join("init_layers.csv"), "seed")?;
    if let Some((seed, _)) = ipos.groups.first() {
        files.extend(variance_figure(
            style,
            &fig_dir.join("init_variance_by_position"),
            &format!("Randomly initialised model (seed {seed}), random tokens"),
            &ipos,
            seed,
            true,
        )?);
    }
    files.extend(by_layer_figure(
        style,
        &fig_dir.join("init_ratio_by_layer"),
        (
            "Randomly initialised models: Var(z_0) / mean Var(z_t), t >= 1",
            "variance ratio, position 0 / rest",
        ),
        &ilayers,
        "z_ratio_first",
        Some(("1 (no discrepancy)", 1.0)),
        true,
    )?);
    files.extend(synthetic_figures(run_dir, fig_dir, style)?);
    Ok(files)
}

/// The synthetic subject along training, one line per seed: the variance ratio of
/// position 0 and Sink_0^0.3 (two figures with a shared step axis).
fn synthetic_figures(run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
    let path = run_dir.join(crate::synthetic::CURVES_CSV);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let t = CsvTable::read(&path)?;
    let (seeds, steps) = (t.column("seed")?, t.column_f64("step")?);
    let mut keys: Vec<&str> = seeds.to_vec();
    keys.dedup();
    let mut files = Vec::new();
    let charts = [
        (
            "synthetic_var_ratio_over_training",
            "Synthetic subject: Var(o_0) / mean Var(o_t), t >= 1, across channels, over training",
            "variance ratio (mean over layers)",
            "agg_var_ratio_channels",
            true,
        ),
        (
            "synthetic_sink_over_training",
            "Synthetic subject: Sink_0^0.3 over training",
            "Sink_0^0.3 (%)",
            "sink_pct",
            false,
        ),
    ];
    for (stem, title, y_label, col, log_y) in charts {
        let ys = t.column_f64(col)?;
        let series: Vec<Series> = keys
            .iter()
            .map(|k| Series {
                name: format!("seed {k}"),
                points: (0..ys.len())
                    .filter(|&i| seeds[i] == *k)
                    .map(|i| (steps[i], ys[i]))
                    .collect(),
            })
            .collect();
        let f = line_chart(
            style,
            &fig_dir.join(stem),
            &LineChart {
                title,
                x_label: "training step",
                y_label,
                series: &series,
                log_x: false,
                log_y,
            },
        )?;
        files.extend(f.paths());
    }
    Ok(files)
}
