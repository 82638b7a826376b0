//! Heatmaps with a colour bar (viridis or diverging).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use std::path::Path;

use super::axis::*;
use super::style::DrawResult;
use super::style::*;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColourMap {
    /// Sequential (viridis), for magnitudes.
    Viridis,
    /// Blue-white-red, symmetric around zero, for signed differences.
    Diverging,
}

#[derive(Debug, Clone, Copy)]
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// Rows top to bottom (row 0 at the top), columns left to right.
    pub matrix: &'a [Vec<f64>],
    /// Column / row tick labels; empty means indices 0, 1, ...
    pub x_ticks: &'a [String],
    pub y_ticks: &'a [String],
    /// Label of the colour scale.
    pub legend: &'a str,
    pub colours: ColourMap,
    /// Colour range; `None` is the data's range (symmetric for `Diverging`).
    pub range: Option<(f64, f64)>,
    /// Colour by log10 of the value (non-positive values drawn grey).
    pub log: bool,
}

/// Draws a heatmap with a colour-scale legend.
pub fn heatmap(style: &FigureStyle, path_stem: &Path, chart: &Heatmap) -> Result<FigureFiles> {
    render(style, path_stem, chart)
}

fn viridis(t: f64) -> RGBColor {
    const V: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    interpolate(&V, t)
}

fn diverging(t: f64) -> RGBColor {
    const D: [(u8, u8, u8); 5] = [
        (33, 102, 172),
        (146, 197, 222),
        (247, 247, 247),
        (244, 165, 130),
        (178, 24, 43),
    ];
    interpolate(&D, t)
}

fn interpolate(stops: &[(u8, u8, u8)], t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (t.floor() as usize).min(stops.len() - 2);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (stops[i], stops[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// At most ~`max` evenly spaced indices of `0..n`, on a 1-2-5 stride.
fn index_ticks(n: usize, max: usize) -> Vec<usize> {
    let raw = n.div_ceil(max.max(1)).max(1);
    let mut stride = 1;
    'outer: for mag in [1, 10, 100, 1000, 10_000, 100_000] {
        for m in [1, 2, 5] {
            if m * mag >= raw {
                stride = m * mag;
                break 'outer;
            }
        }
    }
    (0..n).step_by(stride).collect()
}

impl Figure for Heatmap<'_> {
    fn draw<DB: DrawingBackend>(&self, c: &Canvas<'_, DB>, notes: &mut Vec<String>) -> DrawResult {
        let st = c.style;
        let nrows = self.matrix.len();
        let ncols = self.matrix.iter().map(Vec::len).max().unwrap_or(0);
        if nrows == 0 || ncols == 0 {
            return Err("empty matrix".into());
        }
        let value = |v: f64| -> Option<f64> {
            if !v.is_finite() || (self.log && v <= 0.0) {
                None
            } else if self.log {
                Some(v.log10())
            } else {
                Some(v)
            }
        };
        let vals: Vec<f64> = self
            .matrix
            .iter()
            .flatten()
            .filter_map(|v| value(*v))
            .collect();
        let hidden = nrows * ncols - vals.len();
        if hidden > 0 {
            notes.push(format!(
                "{}: {hidden} cell(s) drawn grey (missing, non-finite, or non-positive with log colours)",
                self.title
            ));
        }
        let (mut lo, mut hi) = match self.range {
            Some((a, b)) => (value(a).unwrap_or(a), value(b).unwrap_or(b)),
            None => vals
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(*v), b.max(*v))
                }),
        };
        if !lo.is_finite() || !hi.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if self.colours == ColourMap::Diverging && self.range.is_none() {
            let m = lo.abs().max(hi.abs());
            (lo, hi) = (-m, m);
        }
        if hi - lo < 1e-300 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let cmap = |v: f64| match self.colours {
            ColourMap::Viridis => viridis((v - lo) / (hi - lo)),
            ColourMap::Diverging => diverging((v - lo) / (hi - lo)),
        };

        // Layout: y tick labels, matrix, colour bar with its ticks and label.
        let w = st.width as i32;
        let label = |ticks: &[String], i: usize| ticks.get(i).cloned().unwrap_or(i.to_string());
        let yt = index_ticks(nrows, 16);
        let ytw = yt
            .iter()
            .map(|i| text_width(&label(self.y_ticks, *i), st.tick_size))
            .max()
            .unwrap_or(0);
        let bar_axis = Axis { lo, hi, log: false };
        let bar_ticks = bar_axis.ticks(6);
        let btw = bar_ticks
            .iter()
            .map(|t| text_width(&t.1, st.tick_size))
            .max()
            .unwrap_or(0);
        let right = 30 + 10 + btw + 12 + st.label_size as i32 + 10;
        let f = Frame::layout(st, ytw, right);
        c.clear()?;
        c.title(self.title)?;
        let cx = |j: usize| f.x0 + ((f.x1 - f.x0) as f64 * j as f64 / ncols as f64).round() as i32;
        let cy = |i: usize| f.y0 + ((f.y1 - f.y0) as f64 * i as f64 / nrows as f64).round() as i32;
        for (i, row) in self.matrix.iter().enumerate() {
            for j in 0..ncols {
                let col = row
                    .get(j)
                    .and_then(|v| value(*v))
                    .map(cmap)
                    .unwrap_or(NAN_GREY);
                c.rect((cx(j), cy(i)), (cx(j + 1), cy(i + 1)), col.filled())?;
            }
        }
        let axis = ShapeStyle::from(&BLACK_).stroke_width(1);
        outline(c, (f.x0, f.y0), (f.x1, f.y1), axis)?;
        for i in yt {
            let py = (cy(i) + cy(i + 1)) / 2;
            y_tick(c, &f, py, &label(self.y_ticks, i), axis)?;
        }
        let max_xl = (0..ncols)
            .map(|j| text_width(&label(self.x_ticks, j), st.tick_size))
            .max()
            .unwrap_or(0)
            .max(1);
        let fit = ((f.x1 - f.x0) / (max_xl + 16)).max(1) as usize;
        for j in index_ticks(ncols, fit.min(20)) {
            let px = (cx(j) + cx(j + 1)) / 2;
            x_tick(c, &f, px, &label(self.x_ticks, j), axis)?;
        }
        axis_labels(c, &f, self.x_label, self.y_label)?;

        // Colour bar.
        let (bx0, bx1) = (f.x1 + 30, f.x1 + 60);
        let steps = 128;
        for k in 0..steps {
            let ya = f.y1 - ((f.y1 - f.y0) as f64 * k as f64 / steps as f64).round() as i32;
            let yb = f.y1 - ((f.y1 - f.y0) as f64 * (k + 1) as f64 / steps as f64).round() as i32;
            let v = lo + (hi - lo) * (k as f64 + 0.5) / steps as f64;
            c.rect((bx0, yb), (bx1, ya), cmap(v).filled())?;
        }
        outline(c, (bx0, f.y0), (bx1, f.y1), axis)?;
        for (v, s) in bar_ticks {
            let py = bar_axis.px(v, f.y1, f.y0);
            c.path(vec![(bx1, py), (bx1 + 6, py)], axis)?;
            c.text(
                &s,
                (bx1 + 10, py),
                st.tick_size,
                (HPos::Left, VPos::Center),
                false,
            )?;
        }
        let legend = if self.log {
            format!("log10 {}", self.legend)
        } else {
            self.legend.to_string()
        };
        c.text(
            &legend,
            (w - 14 - st.label_size as i32, (f.y0 + f.y1) / 2),
            st.label_size,
            (HPos::Center, VPos::Top),
            true,
        )
    }
}
