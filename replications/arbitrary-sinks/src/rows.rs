//! One row per cell (`cells.csv`) and per (cell, layer) (`per_layer.csv`): the summary of
//! a `SinkReport`, and the same rows read back for figures. The CSV schema lives here.

use anyhow::Context;
use sinkrep_analysis::SinkReport;
use sinkrep_runner::{Cell, CsvTable};
use sinkrep_stats::mean;
use std::path::Path;

use crate::plan::{layers_label, Spec};

pub const CELLS_CSV: &str = "cells.csv";
pub const PER_LAYER_CSV: &str = "per_layer.csv";
pub const ALPHA_CSV: &str = "alpha_per_head.csv";

/// The summary of one cell.
#[derive(Debug, Clone, PartialEq)]
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
}

pub const ROW_HEADER: [&str; 20] = [
    "cell",
    "group",
    "kind",
    "k",
    "report_pos",
    "mask",
    "mode",
    "amp_layers",
    "lambda",
    "sink",
    "attn_mass",
    "alpha",
    "peak_max_abs",
    "peak_layer",
    "peak_dom_ratio",
    "peak_max_abs_others",
    "super_neurons",
    "top_ffn",
    "top_ffn_value",
    "eps",
];

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

pub const LAYER_HEADER: [&str; 13] = [
    "cell",
    "group",
    "kind",
    "k",
    "report_pos",
    "layer",
    "attn_mass",
    "sink_frac",
    "alpha",
    "dom_ratio",
    "max_abs",
    "max_abs_others",
    "norm",
];

pub const ALPHA_HEADER: [&str; 8] = [
    "cell",
    "group",
    "kind",
    "k",
    "report_pos",
    "layer",
    "head",
    "alpha",
];

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
    };
    (row, layers)
}

impl Row {
    pub fn cells(&self, eps: f64) -> Vec<Cell> {
        vec![
            self.cell.into(),
            self.group.clone().into(),
            self.kind.clone().into(),
            self.k.into(),
            self.report_pos.into(),
            self.mask.clone().into(),
            self.mode.clone().into(),
            self.amp_layers.clone().into(),
            self.lambda.into(),
            self.sink.into(),
            self.attn_mass.into(),
            self.alpha.into(),
            self.peak_max_abs.into(),
            self.peak_layer.into(),
            self.peak_dom_ratio.into(),
            self.peak_max_abs_others.into(),
            self.super_neurons.into(),
            self.top_ffn.clone().into(),
            self.top_ffn_value.into(),
            eps.into(),
        ]
    }

    /// Reads `cells.csv` back.
    pub fn read_all(path: &Path) -> anyhow::Result<Vec<Row>> {
        let t = CsvTable::read(path)?;
        let s = |c: &str| -> anyhow::Result<Vec<String>> {
            Ok(t.column(c)?.into_iter().map(str::to_string).collect())
        };
        let f = |c: &str| t.column_f64(c);
        let u = |c: &str| -> anyhow::Result<Vec<usize>> {
            t.column(c)?
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    v.parse::<usize>().with_context(|| {
                        format!("{}: row {i}, column `{c}`: `{v}`", path.display())
                    })
                })
                .collect()
        };
        let (cell, group, kind, k, report_pos) = (
            u("cell")?,
            s("group")?,
            s("kind")?,
            u("k")?,
            u("report_pos")?,
        );
        let (mask, mode, amp_layers, lambda) =
            (s("mask")?, s("mode")?, s("amp_layers")?, f("lambda")?);
        let (sink, attn_mass, alpha) = (f("sink")?, f("attn_mass")?, f("alpha")?);
        let (peak_max_abs, peak_layer, peak_dom_ratio, peak_max_abs_others) = (
            f("peak_max_abs")?,
            u("peak_layer")?,
            f("peak_dom_ratio")?,
            f("peak_max_abs_others")?,
        );
        let (super_neurons, top_ffn, top_ffn_value) =
            (u("super_neurons")?, s("top_ffn")?, f("top_ffn_value")?);
        Ok((0..t.rows.len())
            .map(|i| Row {
                cell: cell[i],
                group: group[i].clone(),
                kind: kind[i].clone(),
                k: k[i],
                report_pos: report_pos[i],
                mask: mask[i].clone(),
                mode: mode[i].clone(),
                amp_layers: amp_layers[i].clone(),
                lambda: lambda[i],
                sink: sink[i],
                attn_mass: attn_mass[i],
                alpha: alpha[i],
                peak_max_abs: peak_max_abs[i],
                peak_layer: peak_layer[i],
                peak_dom_ratio: peak_dom_ratio[i],
                peak_max_abs_others: peak_max_abs_others[i],
                super_neurons: super_neurons[i],
                top_ffn: top_ffn[i].clone(),
                top_ffn_value: top_ffn_value[i],
            })
            .collect())
    }
}

impl LayerRow {
    pub fn cells(&self, row: &Row) -> Vec<Cell> {
        vec![
            row.cell.into(),
            row.group.clone().into(),
            row.kind.clone().into(),
            row.k.into(),
            row.report_pos.into(),
            self.layer.into(),
            self.attn_mass.into(),
            self.sink_frac.into(),
            self.alpha.into(),
            self.dom_ratio.into(),
            self.max_abs.into(),
            self.max_abs_others.into(),
            self.norm.into(),
        ]
    }
}

/// Per-head alpha rows of one cell (written for the baseline and mask-to-self cells).
pub fn alpha_cells(row: &Row, rep: &SinkReport) -> Vec<Vec<Cell>> {
    rep.layers
        .iter()
        .flat_map(|l| {
            l.alpha_per_head.iter().enumerate().map(move |(h, a)| {
                vec![
                    row.cell.into(),
                    row.group.clone().into(),
                    row.kind.clone().into(),
                    row.k.into(),
                    row.report_pos.into(),
                    l.layer.into(),
                    h.into(),
                    (*a).into(),
                ]
            })
        })
        .collect()
}
