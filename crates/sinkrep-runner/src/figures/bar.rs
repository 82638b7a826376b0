//! Grouped bar charts with optional error bars.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use std::path::Path;

use super::axis::*;
use super::style::DrawResult;
use super::style::*;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq)]
pub struct BarGroup {
    pub name: String,
    /// One value per category.
    pub values: Vec<f64>,
    /// Half-widths of error bars, one per category; empty for none.
    pub errors: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
pub struct BarChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub categories: &'a [String],
    pub groups: &'a [BarGroup],
}

/// Draws grouped bars (one colour per group, one cluster per category).
pub fn bar_chart(style: &FigureStyle, path_stem: &Path, chart: &BarChart) -> Result<FigureFiles> {
    render(style, path_stem, chart)
}

impl Figure for BarChart<'_> {
    fn draw<DB: DrawingBackend>(&self, c: &Canvas<'_, DB>, notes: &mut Vec<String>) -> DrawResult {
        let st = c.style;
        let n = self.categories.len();
        if n == 0 || self.groups.is_empty() {
            return Err("no bars".into());
        }
        for g in self.groups {
            if g.values.len() != n || !(g.errors.is_empty() || g.errors.len() == n) {
                return Err(format!(
                    "group `{}` has {} values / {} errors for {n} categories",
                    g.name,
                    g.values.len(),
                    g.errors.len()
                ));
            }
        }
        let err = |g: &BarGroup, i: usize| g.errors.get(i).copied().filter(|e| e.is_finite());
        let extent = self.groups.iter().flat_map(|g| {
            (0..n).flat_map(move |i| {
                let v = g.values[i];
                let e = err(g, i).unwrap_or(0.0);
                [v - e, v + e]
            })
        });
        let y = Axis::fit(extent.filter(|v| v.is_finite()), false, true);
        let bad = self
            .groups
            .iter()
            .flat_map(|g| &g.values)
            .filter(|v| !v.is_finite())
            .count();
        if bad > 0 {
            notes.push(format!("{}: {bad} non-finite bar(s) not drawn", self.title));
        }
        let names: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
        let lw = legend_width(&names, st.tick_size);
        let f = draw_axes(c, self.title, self.x_label, self.y_label, None, &y, lw)?;
        let cat_w = (f.x1 - f.x0) as f64 / n as f64;
        let bar_w = cat_w * 0.8 / self.groups.len() as f64;
        let zero = y.px(0.0, f.y1, f.y0);
        for (gi, g) in self.groups.iter().enumerate() {
            let col = colour(gi);
            for i in 0..n {
                let v = g.values[i];
                if !v.is_finite() {
                    continue;
                }
                let xa = f.x0 as f64 + cat_w * (i as f64 + 0.1) + bar_w * gi as f64;
                let (xa, xb) = (xa.round() as i32, (xa + bar_w).round() as i32);
                let py = y.px(v, f.y1, f.y0);
                c.rect((xa, py.min(zero)), (xb, py.max(zero)), col.filled())?;
                if let Some(e) = err(g, i) {
                    let xm = (xa + xb) / 2;
                    let (ya, yb) = (y.px(v - e, f.y1, f.y0), y.px(v + e, f.y1, f.y0));
                    let s = ShapeStyle::from(&BLACK_).stroke_width(2);
                    c.path(vec![(xm, ya), (xm, yb)], s)?;
                    c.path(vec![(xm - 5, ya), (xm + 5, ya)], s)?;
                    c.path(vec![(xm - 5, yb), (xm + 5, yb)], s)?;
                }
            }
        }
        c.path(
            vec![(f.x0, zero), (f.x1, zero)],
            ShapeStyle::from(&BLACK_).stroke_width(1),
        )?;
        // Category labels, thinned when they would overlap.
        let max_w = self
            .categories
            .iter()
            .map(|s| text_width(s, st.tick_size))
            .max()
            .unwrap_or(0);
        let every = ((max_w + 12) as f64 / cat_w).ceil().max(1.0) as usize;
        for (i, s) in self.categories.iter().enumerate().step_by(every) {
            let px = (f.x0 as f64 + cat_w * (i as f64 + 0.5)).round() as i32;
            c.text(
                s,
                (px, f.y1 + 10),
                st.tick_size,
                (HPos::Center, VPos::Top),
                false,
            )?;
        }
        let entries: Vec<(&str, RGBColor)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, colour(i)))
            .collect();
        draw_legend(c, &f, &entries, Some(1.0))
    }
}
