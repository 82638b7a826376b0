//! Figures from a run's CSVs alone: attention to k per layer before/after mask-to-self,
//! per-head heatmaps, attention received and Sink_k against lambda (per mode, per layer
//! choice), and the peak max-abs of h_k against lambda.

use std::path::{Path, PathBuf};

use sinkrep_runner::{
    bar_chart, heatmap, line_chart, BarChart, BarGroup, ColourMap, CsvTable, FigureStyle, Heatmap,
    LineChart, Series,
};

use sinkrep_stats::mean;
use sinkrep_subjects::Subject;

use crate::plan::{layers_label, Mode, PRIMARY_LAYERS};
use crate::rows::{Row, ALPHA_CSV, CELLS_CSV, PER_LAYER_CSV};

/// Sorted distinct values.
fn distinct<T: PartialOrd + Clone>(v: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    out
}

/// The (kind, k) cells of a group.
fn cells_of(rows: &[Row], group: &str) -> Vec<(String, usize)> {
    distinct(
        rows.iter()
            .filter(|r| r.group == group)
            .map(|r| (r.kind.clone(), r.k)),
    )
}

/// Mean of `f` over `cells` at each lambda of the (mode, layers) amplification, with
/// lambda = 1 taken from the baseline cells.
fn lambda_curve(
    rows: &[Row],
    cells: &[(String, usize)],
    mode: &str,
    layers: &str,
    f: impl Fn(&Row) -> f64,
) -> Vec<(f64, f64)> {
    let in_cells = |r: &Row| cells.iter().any(|(kd, k)| *kd == r.kind && *k == r.k);
    let amp =
        |r: &Row| in_cells(r) && r.report_pos == r.k && r.mode == mode && r.amp_layers == layers;
    let lambdas = distinct(rows.iter().filter(|r| amp(r)).map(|r| r.lambda));
    if lambdas.is_empty() {
        return Vec::new();
    }
    let base = mean(
        rows.iter()
            .filter(|r| r.group == "baseline" && in_cells(r) && r.report_pos == r.k)
            .map(&f),
    );
    std::iter::once((1.0, base))
        .chain(lambdas.into_iter().map(|l| {
            (
                l,
                mean(rows.iter().filter(|r| amp(r) && r.lambda == l).map(&f)),
            )
        }))
        .collect()
}

/// Per-layer table read back: (group, kind, k, report_pos, layer) -> attention mass.
struct LayerTable {
    group: Vec<String>,
    kind: Vec<String>,
    k: Vec<f64>,
    report_pos: Vec<f64>,
    layer: Vec<f64>,
    attn_mass: Vec<f64>,
}

impl LayerTable {
    fn read(path: &Path) -> anyhow::Result<LayerTable> {
        let t = CsvTable::read(path)?;
        let s = |c: &str| -> anyhow::Result<Vec<String>> {
            Ok(t.column(c)?.into_iter().map(str::to_string).collect())
        };
        Ok(LayerTable {
            group: s("group")?,
            kind: s("kind")?,
            k: t.column_f64("k")?,
            report_pos: t.column_f64("report_pos")?,
            layer: t.column_f64("layer")?,
            attn_mass: t.column_f64("attn_mass")?,
        })
    }

    /// Mean attention mass per layer over the rows `keep` selects (by index).
    fn by_layer(&self, keep: impl Fn(usize) -> bool) -> Vec<(f64, f64)> {
        let layers = distinct(self.layer.iter().copied());
        layers
            .into_iter()
            .map(|l| {
                let v = (0..self.layer.len())
                    .filter(|&i| self.layer[i] == l && keep(i))
                    .map(|i| self.attn_mass[i]);
                (l, mean(v))
            })
            .collect()
    }
}

pub fn draw(run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(fig_dir).map_err(|e| anyhow::anyhow!("{}: {e}", fig_dir.display()))?;
    let rows = Row::read_all(&run_dir.join(CELLS_CSV))?;
    let lt = LayerTable::read(&run_dir.join(PER_LAYER_CSV))?;
    let mut files = Vec::new();
    let positions = distinct(rows.iter().filter(|r| r.group == "mask-all").map(|r| r.k));
    let pos_f: Vec<f64> = positions.iter().map(|&k| k as f64).collect();
    let mask_groups = distinct(
        rows.iter()
            .filter(|r| r.group.starts_with("mask-first"))
            .map(|r| (r.group.clone(), r.mask.clone())),
    );

    // 1. Attention received per layer, before and after mask-to-self, per input kind.
    for kind in distinct(rows.iter().map(|r| r.kind.clone())) {
        let at_k = |g: &str| {
            lt.by_layer(|i| {
                lt.group[i] == g
                    && lt.kind[i] == kind
                    && lt.report_pos[i] == lt.k[i]
                    && pos_f.contains(&lt.k[i])
            })
        };
        let mut series = vec![
            Series {
                name: "k, no intervention".into(),
                points: at_k("baseline"),
            },
            Series {
                name: "k, mask-to-self in all layers".into(),
                points: at_k("mask-all"),
            },
        ];
        for (g, mask) in &mask_groups {
            series.push(Series {
                name: format!("k, mask-to-self in layers {mask}"),
                points: at_k(g),
            });
        }
        series.push(Series {
            name: "position 0, no intervention".into(),
            points: lt.by_layer(|i| {
                lt.group[i] == "baseline" && lt.kind[i] == kind && lt.report_pos[i] == 0.0
            }),
        });
        series.push(Series {
            name: "position 0, k masked to self (all layers)".into(),
            points: lt.by_layer(|i| {
                lt.group[i] == "mask-all" && lt.kind[i] == kind && lt.report_pos[i] == 0.0
            }),
        });
        let title = format!(
            "Attention received per layer, {kind} input (mean over k = {})",
            positions
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let f = line_chart(
            style,
            &fig_dir.join(format!("mask_self_by_layer_{kind}")),
            &LineChart {
                title: &title,
                x_label: "layer",
                y_label: "mean attention from queries i > pos",
                series: &series,
                log_x: false,
                log_y: false,
            },
        )?;
        files.extend(f.paths());
    }

    // 2. Per-head alpha_k before / after mask-to-self (all layers), both kinds.
    let at = CsvTable::read(&run_dir.join(ALPHA_CSV))?;
    let (ag, ak, ap, al, ah, aa) = (
        at.column("group")?,
        at.column_f64("k")?,
        at.column_f64("report_pos")?,
        at.column_f64("layer")?,
        at.column_f64("head")?,
        at.column_f64("alpha")?,
    );
    let n_layers = distinct(al.iter().copied()).len();
    let n_heads = distinct(ah.iter().copied()).len();
    for (group, name, title) in [
        (
            "baseline",
            "alpha_heads_before",
            "alpha_k per head, no intervention (mean over k and inputs)",
        ),
        (
            "mask-all",
            "alpha_heads_mask_self",
            "alpha_k per head, k masked to self in all layers",
        ),
    ] {
        let mut sum = vec![vec![0.0; n_heads]; n_layers];
        let mut cnt = vec![vec![0usize; n_heads]; n_layers];
        for i in 0..ag.len() {
            if ag[i] == group && ap[i] == ak[i] && pos_f.contains(&ak[i]) {
                let (l, h) = (al[i] as usize, ah[i] as usize);
                if l < n_layers && h < n_heads {
                    sum[l][h] += aa[i];
                    cnt[l][h] += 1;
                }
            }
        }
        let matrix: Vec<Vec<f64>> = sum
            .iter()
            .zip(&cnt)
            .map(|(s, c)| {
                s.iter()
                    .zip(c)
                    .map(|(s, &c)| if c == 0 { f64::NAN } else { s / c as f64 })
                    .collect()
            })
            .collect();
        let f = heatmap(
            style,
            &fig_dir.join(name),
            &Heatmap {
                title,
                x_label: "head",
                y_label: "layer",
                matrix: &matrix,
                x_ticks: &[],
                y_ticks: &[],
                legend: "alpha_k",
                colours: ColourMap::Viridis,
                range: Some((0.0, 1.0)),
                log: false,
            },
        )?;
        files.extend(f.paths());
    }

    // 3. Sink_k and attention received against lambda.
    let primary = layers_label(&PRIMARY_LAYERS);
    let cells1 = cells_of(&rows, "amp-primary");
    let cells2 = cells_of(&rows, "amp-modes");
    let mask_level = mean(
        rows.iter()
            .filter(|r| r.group == "mask-all" && r.report_pos == r.k)
            .map(|r| r.sink),
    );
    let mut series: Vec<Series> = [Mode::CenteredPositions, Mode::Plain]
        .into_iter()
        .map(|m| Series {
            name: format!("{} (layers {primary})", m.as_str()),
            points: lambda_curve(&rows, &cells1, m.as_str(), &primary, |r| r.sink),
        })
        .collect();
    if let (Some(first), Some(last)) = (
        series[0].points.first().map(|p| p.0),
        series[0].points.last().map(|p| p.0),
    ) {
        series.push(Series {
            name: "mask-to-self, all layers (reference)".into(),
            points: vec![(first, mask_level), (last, mask_level)],
        });
    }
    let f = line_chart(
        style,
        &fig_dir.join("amp_sink_vs_lambda"),
        &LineChart {
            title: "Sink_k^0.3 vs lambda, all positions k (lambda = 1: no intervention)",
            x_label: "lambda",
            y_label: "Sink_k^0.3 (%)",
            series: &series,
            log_x: true,
            log_y: false,
        },
    )?;
    files.extend(f.paths());

    for (name, y_label, title, metric) in [
        (
            "amp_modes_attention_vs_lambda",
            "mean attention to k from queries i > k",
            "Attention received by k vs lambda, per mode (layers 0+1)",
            (|r: &Row| r.attn_mass) as fn(&Row) -> f64,
        ),
        (
            "amp_modes_sink_vs_lambda",
            "Sink_k^0.3 (%)",
            "Sink_k^0.3 vs lambda, per mode (layers 0+1)",
            (|r: &Row| r.sink) as fn(&Row) -> f64,
        ),
    ] {
        let series: Vec<Series> = Mode::ALL
            .into_iter()
            .map(|m| Series {
                name: m.as_str().to_string(),
                points: lambda_curve(&rows, &cells2, m.as_str(), &primary, metric),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        let f = line_chart(
            style,
            &fig_dir.join(name),
            &LineChart {
                title,
                x_label: "lambda",
                y_label,
                series: &series,
                log_x: true,
                log_y: false,
            },
        )?;
        files.extend(f.paths());
    }

    // 4. Layer choices: attention received vs lambda (centred), and centred vs plain at
    //    the largest lambda.
    let layer_sets = {
        let mut v = vec![primary.clone()];
        v.extend(
            distinct(
                rows.iter()
                    .filter(|r| r.group == "amp-layers")
                    .map(|r| r.amp_layers.clone()),
            )
            .into_iter()
            .filter(|l| *l != primary),
        );
        v
    };
    let series: Vec<Series> = layer_sets
        .iter()
        .map(|l| Series {
            name: format!("centered-positions, layers {l}"),
            points: lambda_curve(&rows, &cells2, Mode::CenteredPositions.as_str(), l, |r| {
                r.attn_mass
            }),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    let f = line_chart(
        style,
        &fig_dir.join("amp_layers_attention_vs_lambda"),
        &LineChart {
            title: "Attention received by k vs lambda, per layer choice (centred, positions mean)",
            x_label: "lambda",
            y_label: "mean attention to k from queries i > k",
            series: &series,
            log_x: true,
            log_y: false,
        },
    )?;
    files.extend(f.paths());
    let lmax = rows
        .iter()
        .filter(|r| r.mode != "-")
        .map(|r| r.lambda)
        .fold(f64::NAN, f64::max);
    let at_lmax = |mode: &str, layers: &str| {
        mean(
            rows.iter()
                .filter(|r| {
                    cells2.iter().any(|(kd, k)| *kd == r.kind && *k == r.k)
                        && r.report_pos == r.k
                        && r.mode == mode
                        && r.amp_layers == layers
                        && r.lambda == lmax
                })
                .map(|r| r.sink),
        )
    };
    let groups: Vec<BarGroup> = [Mode::CenteredPositions, Mode::Plain]
        .into_iter()
        .map(|m| BarGroup {
            name: format!("{} at lambda = {lmax}", m.as_str()),
            values: layer_sets.iter().map(|l| at_lmax(m.as_str(), l)).collect(),
            errors: Vec::new(),
        })
        .collect();
    let f = bar_chart(
        style,
        &fig_dir.join("amp_layers_centered_vs_plain"),
        &BarChart {
            title: "Sink_k^0.3 at the largest lambda, per layer choice",
            x_label: "amplified layers",
            y_label: "Sink_k^0.3 (%)",
            categories: &layer_sets,
            groups: &groups,
        },
    )?;
    files.extend(f.paths());

    // 5. Peak max-abs of h_k against lambda, with the last position and the natural sink.
    let mut series = Vec::new();
    for m in Mode::ALL {
        let cells = if matches!(m, Mode::CenteredPositions | Mode::Plain) {
            &cells1
        } else {
            &cells2
        };
        series.push(Series {
            name: format!("{}, k in the sequence", m.as_str()),
            points: lambda_curve(&rows, cells, m.as_str(), &primary, |r| r.peak_max_abs),
        });
    }
    let last_cells = cells_of(&rows, "amp-last");
    for m in [Mode::CenteredPositions, Mode::Plain] {
        series.push(Series {
            name: format!("{}, k = T-1", m.as_str()),
            points: lambda_curve(&rows, &last_cells, m.as_str(), &primary, |r| r.peak_max_abs),
        });
    }
    series.retain(|s| !s.points.is_empty());
    let natural = mean(
        rows.iter()
            .filter(|r| r.group == "baseline" && r.report_pos == 0)
            .map(|r| r.peak_max_abs),
    );
    let masked = mean(
        rows.iter()
            .filter(|r| r.group == "mask-all" && r.report_pos == r.k)
            .map(|r| r.peak_max_abs),
    );
    if let Some(xmax) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .reduce(f64::max)
    {
        series.push(Series {
            name: "position 0, no intervention (reference)".into(),
            points: vec![(1.0, natural), (xmax, natural)],
        });
        series.push(Series {
            name: "k masked to self, all layers (reference)".into(),
            points: vec![(1.0, masked), (xmax, masked)],
        });
    }
    let f = line_chart(
        style,
        &fig_dir.join("max_abs_vs_lambda"),
        &LineChart {
            title: "Peak max |h_k| over layers vs lambda (layers 0+1 amplified)",
            x_label: "lambda",
            y_label: "max over layers of mean max_j |h_k,j|",
            series: &series,
            log_x: true,
            log_y: true,
        },
    )?;
    files.extend(f.paths());
    // 6. From scratch: Sink_k per condition on each trained subject.
    for subject in [Subject::Corpus, Subject::Synthetic] {
        files.extend(from_scratch_figure(run_dir, fig_dir, style, subject)?);
    }
    Ok(files)
}

/// Sink_k per intervention on one trained subject (first seed), if its table exists.
fn from_scratch_figure(
    run_dir: &Path,
    fig_dir: &Path,
    style: &FigureStyle,
    subject: Subject,
) -> anyhow::Result<Vec<PathBuf>> {
    let (stem, title) = match subject {
        Subject::Corpus => (
            "from_scratch_sink_k",
            "From scratch (text corpus): Sink_k^0.3 per intervention (mean over k)",
        ),
        Subject::Synthetic => (
            "synthetic_sink_k",
            "Synthetic subject (Bigram-Backcopy): Sink_k^0.3 per intervention (mean over k)",
        ),
    };
    let scratch = run_dir.join(crate::scratch::cells_csv(subject));
    if scratch.is_file() {
        let t = CsvTable::read(&scratch)?;
        let (input, cond, sink) = (
            t.column("input")?,
            t.column("condition")?,
            t.column_f64("sink_k")?,
        );
        let categories: Vec<String> = crate::scratch::CONDITIONS.map(String::from).to_vec();
        let groups: Vec<BarGroup> = distinct(input.iter().cloned())
            .into_iter()
            .map(|inp| BarGroup {
                values: categories
                    .iter()
                    .map(|c| {
                        mean(
                            (0..input.len())
                                .filter(|&i| input[i] == inp && cond[i] == *c)
                                .map(|i| sink[i]),
                        )
                    })
                    .collect(),
                errors: vec![],
                name: inp.to_string(),
            })
            .collect();
        let f = bar_chart(
            style,
            &fig_dir.join(stem),
            &BarChart {
                title,
                x_label: "condition",
                y_label: "Sink_k^0.3 (%)",
                categories: &categories,
                groups: &groups,
            },
        )?;
        return Ok(f.paths());
    }
    Ok(Vec::new())
}
