//! Axes, ticks, frames and legends, drawn from primitives so that the layout does not
//! depend on the font (module docs of `figures`).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::style::DrawResult;
use super::style::*;
use crate::table::fmt_num;

/// A continuous axis mapping data values to pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Axis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) log: bool,
}

impl Axis {
    pub(super) fn t(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }
    /// Fraction 0..1 of the way from `lo` to `hi`.
    pub(super) fn frac(&self, v: f64) -> f64 {
        let (a, b) = (self.t(self.lo), self.t(self.hi));
        (self.t(v) - a) / (b - a)
    }
    pub(super) fn px(&self, v: f64, p0: i32, p1: i32) -> i32 {
        (p0 as f64 + self.frac(v) * (p1 - p0) as f64).round() as i32
    }
    pub(super) fn usable(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }

    /// Axis covering `values` (already filtered to usable ones) with 4% padding.
    pub(super) fn fit(values: impl Iterator<Item = f64>, log: bool, include_zero: bool) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if log {
            if !lo.is_finite() {
                return Axis {
                    lo: 1.0,
                    hi: 10.0,
                    log,
                };
            }
            let (a, b) = (lo.log10(), hi.log10());
            let (a, b) = if b - a < 1e-12 {
                (a - 0.3, b + 0.3)
            } else {
                (a, b)
            };
            let pad = (b - a) * 0.04;
            return Axis {
                lo: 10f64.powf(a - pad),
                hi: 10f64.powf(b + pad),
                log,
            };
        }
        if !lo.is_finite() {
            return Axis {
                lo: 0.0,
                hi: 1.0,
                log,
            };
        }
        if include_zero {
            lo = lo.min(0.0);
            hi = hi.max(0.0);
        }
        if hi - lo < 1e-300 {
            let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            return Axis {
                lo: lo - d,
                hi: hi + d,
                log,
            };
        }
        let pad = (hi - lo) * 0.04;
        Axis {
            lo: if include_zero && lo == 0.0 {
                0.0
            } else {
                lo - pad
            },
            hi: if include_zero && hi == 0.0 {
                0.0
            } else {
                hi + pad
            },
            log,
        }
    }

    /// Tick values and labels: 1-2-5 steps (about `target` ticks) on linear axes;
    /// decades (with 2 and 5 when the axis spans less than two) on log axes.
    pub(super) fn ticks(&self, target: usize) -> Vec<(f64, String)> {
        if self.log {
            let (a, b) = (self.lo.log10(), self.hi.log10());
            let in_range = |v: f64| v >= self.lo * (1.0 - 1e-9) && v <= self.hi * (1.0 + 1e-9);
            let (k0, k1) = (a.floor() as i32, b.ceil() as i32);
            let decades = (k0..=k1).filter(|k| in_range(10f64.powi(*k))).count();
            let with = |mults: &[f64], step: usize| -> Vec<(f64, String)> {
                (k0..=k1)
                    .step_by(step)
                    .flat_map(|k| mults.iter().map(move |m| m * 10f64.powi(k)))
                    .filter(|v| in_range(*v))
                    .map(|v| (v, fmt_num(v, 3)))
                    .collect()
            };
            // Enough decades: label decades (every `step`-th); otherwise add 2 and 5,
            // and for less than a decade every integer multiple.
            if decades >= 3 {
                return with(&[1.0], decades.div_ceil(target.max(1)).max(1));
            }
            let ticks = with(&[1.0, 2.0, 5.0], 1);
            if ticks.len() >= 3 {
                return ticks;
            }
            return with(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 1);
        }
        let span = self.hi - self.lo;
        let raw = span / target.max(1) as f64;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag);
        let decimals = (-(step.log10().floor()) as i64).max(0) as usize;
        let first = (self.lo / step).ceil() as i64;
        let last = (self.hi / step).floor() as i64;
        (first..=last)
            .map(|i| {
                let v = i as f64 * step;
                let label = if v.abs() < step * 1e-9 {
                    "0".to_string()
                } else if v.abs() >= 1e6 || (v.abs() < 1e-4) {
                    fmt_num(v, 3)
                } else {
                    format!("{v:.decimals$}")
                };
                (v, label)
            })
            .collect()
    }
}

/// The plot rectangle in pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    pub(super) x0: i32,
    pub(super) y0: i32,
    pub(super) x1: i32,
    pub(super) y1: i32,
}

impl Frame {
    /// The plot rectangle of a figure in `st`: room for the title above, y tick labels
    /// `ytw` pixels wide and the y label on the left, x ticks and label below, and a
    /// panel of `right` pixels (legend, colour bar) on the right.
    pub(super) fn layout(st: &FigureStyle, ytw: i32, right: i32) -> Frame {
        let (w, h) = (st.width as i32, st.height as i32);
        Frame {
            x0: 20 + st.label_size as i32 + 12 + ytw + 10,
            y0: 14 + st.title_size as i32 + 20,
            x1: w - 30 - right,
            y1: h - (14 + st.tick_size as i32 + 16 + st.label_size as i32 + 8),
        }
    }
}

/// The outline of the rectangle (x0, y0)-(x1, y1).
pub(super) fn outline<DB: DrawingBackend>(
    c: &Canvas<'_, DB>,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    style: ShapeStyle,
) -> DrawResult {
    c.path(
        vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)],
        style,
    )
}

/// A tick mark below the frame at `px`, with its label under it.
pub(super) fn x_tick<DB: DrawingBackend>(
    c: &Canvas<'_, DB>,
    f: &Frame,
    px: i32,
    label: &str,
    style: ShapeStyle,
) -> DrawResult {
    c.path(vec![(px, f.y1), (px, f.y1 + 6)], style)?;
    let size = c.style.tick_size;
    c.text(
        label,
        (px, f.y1 + 10),
        size,
        (HPos::Center, VPos::Top),
        false,
    )
}

/// A tick mark left of the frame at `py`, with its label left of it.
pub(super) fn y_tick<DB: DrawingBackend>(
    c: &Canvas<'_, DB>,
    f: &Frame,
    py: i32,
    label: &str,
    style: ShapeStyle,
) -> DrawResult {
    c.path(vec![(f.x0 - 6, py), (f.x0, py)], style)?;
    let size = c.style.tick_size;
    c.text(
        label,
        (f.x0 - 10, py),
        size,
        (HPos::Right, VPos::Center),
        false,
    )
}

/// The x label centred under the frame and the y label rotated on the left.
pub(super) fn axis_labels<DB: DrawingBackend>(
    c: &Canvas<'_, DB>,
    f: &Frame,
    x_label: &str,
    y_label: &str,
) -> DrawResult {
    let st = c.style;
    let h = st.height as i32;
    c.text(
        x_label,
        ((f.x0 + f.x1) / 2, h - 10),
        st.label_size,
        (HPos::Center, VPos::Bottom),
        false,
    )?;
    c.text(
        y_label,
        (20, (f.y0 + f.y1) / 2),
        st.label_size,
        (HPos::Center, VPos::Top),
        true,
    )
}

/// Lays out title, axes and an optional right-hand panel of `right` pixels; draws grid,
/// ticks, tick labels and axis labels; returns the plot frame.
pub(super) fn draw_axes<DB: DrawingBackend>(
    c: &Canvas<'_, DB>,
    title: &str,
    x_label: &str,
    y_label: &str,
    x: Option<&Axis>,
    y: &Axis,
    right: i32,
) -> std::result::Result<Frame, String> {
    let st = c.style;
    let yt = y.ticks(6);
    let ytw = yt
        .iter()
        .map(|t| text_width(&t.1, st.tick_size))
        .max()
        .unwrap_or(0);
    let f = Frame::layout(st, ytw, right);
    c.clear()?;
    c.title(title)?;
    let grid = ShapeStyle::from(&GRID).stroke_width(1);
    let axis = ShapeStyle::from(&BLACK_).stroke_width(1);
    for (v, label) in &yt {
        let py = y.px(*v, f.y1, f.y0);
        c.path(vec![(f.x0, py), (f.x1, py)], grid)?;
        y_tick(c, &f, py, label, axis)?;
    }
    if let Some(x) = x {
        let target = ((f.x1 - f.x0) / 110).clamp(2, 10) as usize;
        for (v, label) in x.ticks(target) {
            let px = x.px(v, f.x0, f.x1);
            c.path(vec![(px, f.y0), (px, f.y1)], grid)?;
            x_tick(c, &f, px, &label, axis)?;
        }
    }
    outline(c, (f.x0, f.y0), (f.x1, f.y1), axis)?;
    axis_labels(c, &f, x_label, y_label)?;
    Ok(f)
}

/// Width of a legend panel for these names (0 when there is nothing to name).
pub(super) fn legend_width(names: &[&str], size: f64) -> i32 {
    if names.iter().all(|n| n.is_empty()) {
        return 0;
    }
    names.iter().map(|n| text_width(n, size)).max().unwrap_or(0) + 60
}

/// Legend to the right of the frame: a swatch per entry, a line (`fill: None`) or a box
/// filled with the colour at opacity `fill` and outlined, as the data is drawn.
pub(super) fn draw_legend<DB: DrawingBackend>(
    c: &Canvas<'_, DB>,
    f: &Frame,
    entries: &[(&str, RGBColor)],
    fill: Option<f64>,
) -> DrawResult {
    if entries.iter().all(|e| e.0.is_empty()) {
        return Ok(());
    }
    let size = c.style.tick_size;
    let row = (size * 1.3) as i32;
    let x = f.x1 + 16;
    for (i, (name, col)) in entries.iter().enumerate() {
        let y = f.y0 + 8 + i as i32 * row + row / 2;
        if let Some(alpha) = fill {
            c.rect((x, y - 8), (x + 24, y + 8), col.mix(alpha).filled())?;
            c.rect((x, y - 8), (x + 24, y + 8), col.stroke_width(2))?;
        } else {
            c.path(vec![(x, y), (x + 24, y)], col.stroke_width(3))?;
        }
        c.text(name, (x + 32, y), size, (HPos::Left, VPos::Center), false)?;
    }
    Ok(())
}
