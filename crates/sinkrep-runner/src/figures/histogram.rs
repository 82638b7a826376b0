//! Histograms of one or more series on shared bins.

use plotters::prelude::*;
use std::path::Path;

use super::axis::*;
use super::style::DrawResult;
use super::style::*;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq)]
pub struct HistSeries {
    pub name: String,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Histogram<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [HistSeries],
    pub bins: usize,
    /// Log-spaced bins over the positive values.
    pub log_x: bool,
    pub log_y: bool,
}

/// Draws overlaid histograms with shared bins.
pub fn histogram(style: &FigureStyle, path_stem: &Path, chart: &Histogram) -> Result<FigureFiles> {
    render(style, path_stem, chart)
}

impl Figure for Histogram<'_> {
    fn draw<DB: DrawingBackend>(&self, c: &Canvas<'_, DB>, notes: &mut Vec<String>) -> DrawResult {
        let bins = self.bins.max(1);
        let xa = Axis {
            lo: 1.0,
            hi: 1.0,
            log: self.log_x,
        };
        let mut dropped = 0;
        let kept: Vec<Vec<f64>> = self
            .series
            .iter()
            .map(|s| {
                let v: Vec<f64> = s.values.iter().copied().filter(|v| xa.usable(*v)).collect();
                dropped += s.values.len() - v.len();
                v
            })
            .collect();
        if dropped > 0 {
            notes.push(format!(
                "{}: {dropped} value(s) not counted (non-finite, or non-positive with log bins)",
                self.title
            ));
        }
        let (lo, hi) = kept
            .iter()
            .flatten()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        let (lo, hi) = if !lo.is_finite() {
            (1.0, 2.0)
        } else if hi - lo < 1e-300 {
            if self.log_x {
                (lo / 2.0, hi * 2.0)
            } else {
                (lo - 0.5, hi + 0.5)
            }
        } else {
            (lo, hi)
        };
        let range = Axis {
            lo,
            hi,
            log: self.log_x,
        };
        let edge = |k: usize| {
            let t = k as f64 / bins as f64;
            if self.log_x {
                10f64.powf(lo.log10() + t * (hi.log10() - lo.log10()))
            } else {
                lo + t * (hi - lo)
            }
        };
        let counts: Vec<Vec<u64>> = kept
            .iter()
            .map(|vals| {
                let mut c = vec![0u64; bins];
                for v in vals {
                    let k = ((range.frac(*v) * bins as f64).floor() as usize).min(bins - 1);
                    c[k] += 1;
                }
                c
            })
            .collect();
        let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
        let x = Axis {
            lo,
            hi,
            log: self.log_x,
        };
        let y = if self.log_y {
            Axis {
                lo: 0.7,
                hi: max * 1.5,
                log: true,
            }
        } else {
            Axis {
                lo: 0.0,
                hi: max * 1.05,
                log: false,
            }
        };
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        let lw = legend_width(&names, c.style.tick_size);
        let f = draw_axes(c, self.title, self.x_label, self.y_label, Some(&x), &y, lw)?;
        let base = f.y1;
        for (si, cs) in counts.iter().enumerate() {
            let col = colour(si);
            let mut outline = vec![(x.px(edge(0), f.x0, f.x1), base)];
            for (k, n) in cs.iter().enumerate() {
                let (xa, xb) = (x.px(edge(k), f.x0, f.x1), x.px(edge(k + 1), f.x0, f.x1));
                let py = if *n == 0 {
                    base
                } else {
                    y.px(*n as f64, f.y1, f.y0)
                };
                if *n > 0 {
                    c.rect((xa, py), (xb, base), col.mix(0.3).filled())?;
                }
                outline.push((xa, py));
                outline.push((xb, py));
            }
            outline.push((x.px(edge(bins), f.x0, f.x1), base));
            c.path(outline, col.stroke_width(2))?;
        }
        let entries: Vec<(&str, RGBColor)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, colour(i)))
            .collect();
        draw_legend(c, &f, &entries, Some(0.3))
    }
}
