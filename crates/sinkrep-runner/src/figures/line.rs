//! Line charts.

use plotters::prelude::*;
use std::path::Path;

use super::axis::*;
use super::style::DrawResult;
use super::style::*;
use crate::error::Result;

/// A named line of (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Copy)]
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    pub log_x: bool,
    pub log_y: bool,
}

/// Draws a line chart to `<path_stem>.svg` (and `.png`).
pub fn line_chart(style: &FigureStyle, path_stem: &Path, chart: &LineChart) -> Result<FigureFiles> {
    render(style, path_stem, chart)
}

impl Figure for LineChart<'_> {
    fn draw<DB: DrawingBackend>(&self, c: &Canvas<'_, DB>, notes: &mut Vec<String>) -> DrawResult {
        let probe_x = Axis {
            lo: 1.0,
            hi: 1.0,
            log: self.log_x,
        };
        let probe_y = Axis {
            lo: 1.0,
            hi: 1.0,
            log: self.log_y,
        };
        let mut dropped = 0usize;
        let kept: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                let v: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| probe_x.usable(*x) && probe_y.usable(*y))
                    .collect();
                dropped += s.points.len() - v.len();
                v
            })
            .collect();
        if dropped > 0 {
            notes.push(format!(
                "{}: {dropped} point(s) not drawn (non-finite, or non-positive on a log axis)",
                self.title
            ));
        }
        let x = Axis::fit(kept.iter().flatten().map(|p| p.0), self.log_x, false);
        let y = Axis::fit(kept.iter().flatten().map(|p| p.1), self.log_y, false);
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        let lw = legend_width(&names, c.style.tick_size);
        let f = draw_axes(c, self.title, self.x_label, self.y_label, Some(&x), &y, lw)?;
        for (i, pts) in kept.iter().enumerate() {
            let col = colour(i);
            let px: Vec<(i32, i32)> = pts
                .iter()
                .map(|(a, b)| (x.px(*a, f.x0, f.x1), y.px(*b, f.y1, f.y0)))
                .collect();
            if px.len() > 1 {
                c.path(px.clone(), col.stroke_width(2))?;
            }
            if px.len() <= 60 {
                for p in px {
                    c.circle(p, 4, col.filled())?;
                }
            }
        }
        let entries: Vec<(&str, RGBColor)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, colour(i)))
            .collect();
        draw_legend(c, &f, &entries, None)
    }
}
