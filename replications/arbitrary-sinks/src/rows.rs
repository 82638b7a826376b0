//! One row per cell (`cells.csv`) and per (cell, layer) (`per_layer.csv`): the summary of
//! a `SinkReport`, and the same rows read back for figures. The CSV schema lives here.

use serde::{Deserialize, Serialize};
use sinkrep_analysis::SinkReport;
use sinkrep_stats::mean;
use std::path::Path;

use crate::plan::{layers_label, Spec};

pub const CELLS_CSV: &str = "cells.csv";
pub const PER_LAYER_CSV: &str = "per_layer.csv";
pub const ALPHA_CSV: &str = "alpha_per_head.csv";

/// The summary of one cell: one row of `cells.csv`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Row {
    pub cell: usize,
    pub group: String,
    pub kind: String,
    pub k: usize,
    pub report_pos: usize,
    /// `-`, `all`, or the masked layers (`0+1`).
    pub mask: String,
    /// `-` or the amplification mode.
    pub mode: String,
    /// `-` or the amplified layers (`0+1`).
    pub amp_layers: String,
    /// 1 when there is no amplification.
    pub lambda: f64,
    /// Sink_{report_pos}^eps in percent over (sequence, layer, head) triples.
    pub sink: f64,
    /// Mean over layers of the attention mass on report_pos from queries i > report_pos
    /// (NaN at the last position, where there are none).
    pub attn_mass: f64,
    /// Mean over layers and heads of alpha_{report_pos} (queries i >= report_pos; at the
    /// last position this is its attention to itself).
    pub alpha: f64,
    /// Max over layers of the mean over sequences of max_j |h_j| at report_pos.
    pub peak_max_abs: f64,
    pub peak_layer: usize,
    /// Max over layers of DomRatio at report_pos.
    pub peak_dom_ratio: f64,
    /// Max over layers of max |h| at the other positions (the natural sink's massive
    /// activations live there when report_pos != 0).
    pub peak_max_abs_others: f64,
    /// Super neurons at report_pos by the analysis crate's criterion.
    pub super_neurons: usize,
    /// The FFN channel with the largest |mean activation| at report_pos over all layers
    /// (`l11c1229`), and that activation.
    pub top_ffn: String,
    pub top_ffn_value: f64,
    /// The eps of Sink_k^eps.
    pub eps: f64,
}

/// One layer of one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    pub layer: usize,
    pub attn_mass: f64,
    pub sink_frac: f64,
    pub alpha: f64,
    pub dom_ratio: f64,
    pub max_abs: f64,
    pub max_abs_others: f64,
    pub norm: f64,
}

/// One row of `per_layer.csv`: a layer of a cell, with the cell's key.
#[derive(Debug, Serialize, Default)]
pub struct PerLayerCsv<'a> {
    cell: usize,
    group: &'a str,
    kind: &'a str,
    k: usize,
    report_pos: usize,
    layer: usize,
    attn_mass: f64,
    sink_frac: f64,
    alpha: f64,
    dom_ratio: f64,
    max_abs: f64,
    max_abs_others: f64,
    norm: f64,
}

/// One row of `alpha_per_head.csv` (owned: rows are kept until the tables are written).
#[derive(Debug, Clone, Serialize, Default)]
pub struct AlphaRow {
    cell: usize,
    group: String,
    kind: String,
    k: usize,
    report_pos: usize,
    layer: usize,
    head: usize,
    alpha: f64,
}

/// Summarises one report. `last` is the last position (T-1): no query attends to it, so
/// its attention mass is undefined (NaN) rather than the report's 0.
pub fn summarize(cell: usize, spec: &Spec, rep: &SinkReport, last: usize) -> (Row, Vec<LayerRow>) {
    let undefined_mass = rep.sink_pos >= last;
    let layers: Vec<LayerRow> = rep
        .layers
        .iter()
        .map(|l| LayerRow {
            layer: l.layer,
            attn_mass: if undefined_mass {
                f64::NAN
            } else {
                l.attn_mass
            },
            sink_frac: l.sink_frac,
            alpha: mean(l.alpha_per_head.iter().copied()),
            dom_ratio: l.dom_ratio,
            max_abs: l.max_abs_sink,
            max_abs_others: l.max_abs_others,
            norm: l.norm_sink,
        })
        .collect();
    let (peak_layer, peak_max_abs) =
        layers
            .iter()
            .map(|l| (l.layer, l.max_abs))
            .fold(
                (0, f64::NEG_INFINITY),
                |best, x| {
                    if x.1 > best.1 {
                        x
                    } else {
                        best
                    }
                },
            );
    let (top_ffn, top_ffn_value) = rep
        .layers
        .iter()
        .filter_map(|l| l.top_ffn_channels.first().map(|c| (l.layer, c)))
        .fold((String::from("-"), 0.0f64), |best, (layer, c)| {
            if c.value.abs() > best.1.abs() {
                (format!("l{layer}c{}", c.channel), c.value)
            } else {
                best
            }
        });
    let (mode, amp_layers, lambda) = match &spec.amp {
        Some(a) => (
            a.mode.as_str().to_string(),
            layers_label(&a.layers),
            a.lambda,
        ),
        None => ("-".to_string(), "-".to_string(), 1.0),
    };
    let row = Row {
        cell,
        group: spec.group.name(),
        kind: spec.kind.as_str().to_string(),
        k: spec.k,
        report_pos: spec.report_pos,
        mask: spec.mask_label(),
        mode,
        amp_layers,
        lambda,
        sink: rep.sink_metric.value,
        attn_mass: mean(layers.iter().map(|l| l.attn_mass)),
        alpha: mean(layers.iter().map(|l| l.alpha)),
        peak_max_abs,
        peak_layer,
        peak_dom_ratio: layers.iter().map(|l| l.dom_ratio).fold(f64::NAN, f64::max),
        peak_max_abs_others: layers
            .iter()
            .map(|l| l.max_abs_others)
            .fold(f64::NAN, f64::max),
        super_neurons: rep
            .super_neurons
            .iter()
            .filter(|s| s.activation.is_finite())
            .count(),
        top_ffn,
        top_ffn_value,
        eps: rep.eps,
    };
    (row, layers)
}

impl Row {
    /// Reads `cells.csv` back.
    pub fn read_all(path: &Path) -> anyhow::Result<Vec<Row>> {
        Ok(sinkrep_runner::read_rows(path)?)
    }
}

impl LayerRow {
    /// This layer as a `per_layer.csv` row of cell `row`.
    pub fn csv<'a>(&self, row: &'a Row) -> PerLayerCsv<'a> {
        PerLayerCsv {
            cell: row.cell,
            group: &row.group,
            kind: &row.kind,
            k: row.k,
            report_pos: row.report_pos,
            layer: self.layer,
            attn_mass: self.attn_mass,
            sink_frac: self.sink_frac,
            alpha: self.alpha,
            dom_ratio: self.dom_ratio,
            max_abs: self.max_abs,
            max_abs_others: self.max_abs_others,
            norm: self.norm,
        }
    }
}

/// Per-head alpha rows of one cell (written for the baseline and mask-to-self cells).
pub fn alpha_rows(row: &Row, rep: &SinkReport) -> Vec<AlphaRow> {
    rep.layers
        .iter()
        .flat_map(|l| {
            l.alpha_per_head
                .iter()
                .enumerate()
                .map(move |(head, &alpha)| AlphaRow {
                    cell: row.cell,
                    group: row.group.clone(),
                    kind: row.kind.clone(),
                    k: row.k,
                    report_pos: row.report_pos,
                    layer: l.layer,
                    head,
                    alpha,
                })
        })
        .collect()
}
