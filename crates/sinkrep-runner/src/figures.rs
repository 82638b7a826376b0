//! Figures drawn from plain data to SVG (always; byte-identical run to run) and PNG (when
//! the pinned TTF font is available).
//!
//! Axes, ticks, legends and colour bars are drawn here from primitives (lines,
//! rectangles, text) instead of with plotters' chart/mesh/legend helpers: those measure
//! text with the registered font, which would make SVG depend on the font being present.
//! Text widths are estimated from the character count, so the layout is the same for SVG
//! and PNG and for every machine.

use plotters::backend::{BitMapBackend, SVGBackend};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::claim::Scale;
use crate::error::{io_err, Error, Result};
use crate::manifest::{Manifest, MANIFEST};
use crate::registry::Registry;
use crate::runner::run_dir;
use crate::table::fmt_num;

/// Font family name the TTF is registered under (and written into SVG `font-family`).
const FAMILY: &str = "sans-serif";

/// Where `sinkrep fetch` puts the pinned DejaVu Sans.
pub fn default_font_path() -> PathBuf {
    sinkrep_inputs::Cache::default()
        .input_dir("dejavu-fonts")
        .join("DejaVuSans.ttf")
}

/// Fonts registered with plotters, by path; plotters needs `'static` bytes, so each file
/// is read and leaked once per process.
fn registered_fonts() -> &'static Mutex<HashMap<PathBuf, bool>> {
    static FONTS: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
    FONTS.get_or_init(Default::default)
}

fn register_font(path: &Path) -> std::result::Result<(), String> {
    let mut reg = registered_fonts()
        .lock()
        .map_err(|_| "font registry poisoned".to_string())?;
    if reg.get(path).copied() == Some(true) {
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a valid TrueType/OpenType font", path.display()))?;
    reg.insert(path.to_path_buf(), true);
    Ok(())
}

/// Size and font of figures. PNGs are written only when the font could be registered.
#[derive(Debug, Clone)]
pub struct FigureStyle {
    pub width: u32,
    pub height: u32,
    /// Font sizes in plotters units (SVG `font-size` is this / 1.24; glyphs in PNG are
    /// about 0.86 of it per em). Tick labels at 20 are ~16 px.
    pub title_size: f64,
    pub label_size: f64,
    pub tick_size: f64,
    font: Option<PathBuf>,
    note: Option<String>,
}

impl FigureStyle {
    /// 1000x650 figures; PNG too when `font_path` is a readable TTF, else SVG only and
    /// [`FigureStyle::note`] says why.
    pub fn new(font_path: Option<&Path>) -> FigureStyle {
        let (font, note) = match font_path {
            None => (
                None,
                Some("PNG skipped: no font given; SVG only".to_string()),
            ),
            Some(p) if !p.is_file() => (
                None,
                Some(format!(
                    "PNG skipped: font {} not found (run `sinkrep fetch`); SVG only",
                    p.display()
                )),
            ),
            Some(p) => match register_font(p) {
                Ok(()) => (Some(p.to_path_buf()), None),
                Err(e) => (None, Some(format!("PNG skipped: {e}; SVG only"))),
            },
        };
        FigureStyle {
            width: 1000,
            height: 650,
            title_size: 28.0,
            label_size: 23.0,
            tick_size: 20.0,
            font,
            note,
        }
    }

    /// [`FigureStyle::new`] with the pinned DejaVu Sans from the input cache.
    pub fn with_default_font() -> FigureStyle {
        FigureStyle::new(Some(&default_font_path()))
    }

    /// SVG only, without a note (tests, or when PNGs are not wanted).
    pub fn svg_only() -> FigureStyle {
        let mut s = FigureStyle::new(None);
        s.note = None;
        s
    }

    pub fn png_enabled(&self) -> bool {
        self.font.is_some()
    }

    /// Why PNGs are not written, if they are not.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

/// The files one figure produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureFiles {
    pub svg: PathBuf,
    pub png: Option<PathBuf>,
    /// Data the figure could not show (non-finite values, non-positive values on a log
    /// axis), and PNG skipped.
    pub notes: Vec<String>,
}

impl FigureFiles {
    pub fn paths(&self) -> Vec<PathBuf> {
        std::iter::once(self.svg.clone())
            .chain(self.png.clone())
            .collect()
    }
}

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

/// Draws a line chart to `<path_stem>.svg` (and `.png`).
pub fn line_chart(style: &FigureStyle, path_stem: &Path, chart: &LineChart) -> Result<FigureFiles> {
    render(style, path_stem, chart)
}

/// Draws a heatmap with a colour-scale legend.
pub fn heatmap(style: &FigureStyle, path_stem: &Path, chart: &Heatmap) -> Result<FigureFiles> {
    render(style, path_stem, chart)
}

/// Draws grouped bars (one colour per group, one cluster per category).
pub fn bar_chart(style: &FigureStyle, path_stem: &Path, chart: &BarChart) -> Result<FigureFiles> {
    render(style, path_stem, chart)
}

/// Draws overlaid histograms with shared bins.
pub fn histogram(style: &FigureStyle, path_stem: &Path, chart: &Histogram) -> Result<FigureFiles> {
    render(style, path_stem, chart)
}

// ---------------------------------------------------------------------------------------
// Rendering to both backends.

type DrawResult = std::result::Result<(), String>;

trait Figure {
    fn draw<DB: DrawingBackend>(&self, c: &Canvas<'_, DB>, notes: &mut Vec<String>) -> DrawResult;
}

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn render<F: Figure>(style: &FigureStyle, stem: &Path, fig: &F) -> Result<FigureFiles> {
    let size = (style.width, style.height);
    let svg_path = with_ext(stem, "svg");
    let fail = |path: &Path, msg: String| Error::Figure {
        path: path.to_path_buf(),
        msg,
    };
    let mut notes = Vec::new();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let c = Canvas { area: &root, style };
        fig.draw(&c, &mut notes).map_err(|m| fail(&svg_path, m))?;
        root.present().map_err(|e| fail(&svg_path, e.to_string()))?;
    }
    sinkrep_inputs::write_atomic(&svg_path, svg.as_bytes())?;

    let png = if style.png_enabled() {
        let png_path = with_ext(stem, "png");
        let name = png_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The bitmap backend writes the file itself, so draw to a temporary name in the
        // same folder (ending in .png: the encoder goes by extension) and rename.
        let tmp = png_path.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
        let drawn = (|| {
            let root = BitMapBackend::new(&tmp, size).into_drawing_area();
            let c = Canvas { area: &root, style };
            let mut ignored = Vec::new();
            fig.draw(&c, &mut ignored)?;
            root.present().map_err(|e| e.to_string())
        })();
        let res = drawn
            .map_err(|m| fail(&png_path, m))
            .and_then(|()| std::fs::rename(&tmp, &png_path).map_err(io_err(&png_path)));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Some(png_path)
    } else {
        if let Some(n) = style.note() {
            notes.push(n.to_string());
        }
        None
    };
    Ok(FigureFiles {
        svg: svg_path,
        png,
        notes,
    })
}

/// Pixel-coordinate drawing on either backend, with errors as strings.
struct Canvas<'a, DB: DrawingBackend> {
    area: &'a DrawingArea<DB, Shift>,
    style: &'a FigureStyle,
}

const BLACK_: RGBColor = RGBColor(0, 0, 0);
const GRID: RGBColor = RGBColor(225, 225, 225);
const NAN_GREY: RGBColor = RGBColor(190, 190, 190);
/// Okabe-Ito, colour-blind safe, in an order that keeps the first few far apart.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Estimated width of `text` at plotters font `size` (DejaVu Sans digits are ~0.55 of
/// the size; a little generous so labels never collide).
fn text_width(text: &str, size: f64) -> i32 {
    (text.chars().count() as f64 * size * 0.56).ceil() as i32
}

impl<DB: DrawingBackend> Canvas<'_, DB> {
    fn text(
        &self,
        s: &str,
        pos: (i32, i32),
        size: f64,
        anchor: (HPos, VPos),
        rot: bool,
    ) -> DrawResult {
        let mut st = TextStyle::from((FAMILY, size).into_font())
            .color(&BLACK_)
            .pos(Pos::new(anchor.0, anchor.1));
        if rot {
            st = st.transform(FontTransform::Rotate270);
        }
        self.area.draw_text(s, &st, pos).map_err(|e| e.to_string())
    }

    fn rect(&self, a: (i32, i32), b: (i32, i32), style: ShapeStyle) -> DrawResult {
        self.area
            .draw(&Rectangle::new([a, b], style))
            .map_err(|e| e.to_string())
    }

    fn path(&self, pts: Vec<(i32, i32)>, style: ShapeStyle) -> DrawResult {
        self.area
            .draw(&PathElement::new(pts, style))
            .map_err(|e| e.to_string())
    }

    fn circle(&self, c: (i32, i32), r: i32, style: ShapeStyle) -> DrawResult {
        self.area
            .draw(&Circle::new(c, r, style))
            .map_err(|e| e.to_string())
    }

    fn clear(&self) -> DrawResult {
        self.area.fill(&WHITE).map_err(|e| e.to_string())
    }

    fn title(&self, title: &str) -> DrawResult {
        self.text(
            title,
            (self.style.width as i32 / 2, 14),
            self.style.title_size,
            (HPos::Center, VPos::Top),
            false,
        )
    }
}

/// A continuous axis mapping data values to pixels.
#[derive(Debug, Clone, Copy)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn t(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }
    /// Fraction 0..1 of the way from `lo` to `hi`.
    fn frac(&self, v: f64) -> f64 {
        let (a, b) = (self.t(self.lo), self.t(self.hi));
        (self.t(v) - a) / (b - a)
    }
    fn px(&self, v: f64, p0: i32, p1: i32) -> i32 {
        (p0 as f64 + self.frac(v) * (p1 - p0) as f64).round() as i32
    }
    fn usable(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }

    /// Axis covering `values` (already filtered to usable ones) with 4% padding.
    fn fit(values: impl Iterator<Item = f64>, log: bool, include_zero: bool) -> Axis {
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
    fn ticks(&self, target: usize) -> Vec<(f64, String)> {
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
struct Frame {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

/// Lays out title, axes and an optional right-hand panel of `right` pixels; draws grid,
/// ticks, tick labels and axis labels; returns the plot frame.
fn draw_axes<DB: DrawingBackend>(
    c: &Canvas<'_, DB>,
    title: &str,
    x_label: &str,
    y_label: &str,
    x: Option<&Axis>,
    y: &Axis,
    right: i32,
) -> std::result::Result<Frame, String> {
    let st = c.style;
    let (w, h) = (st.width as i32, st.height as i32);
    let yt = y.ticks(6);
    let ytw = yt
        .iter()
        .map(|t| text_width(&t.1, st.tick_size))
        .max()
        .unwrap_or(0);
    let f = Frame {
        x0: 20 + st.label_size as i32 + 12 + ytw + 10,
        y0: 14 + st.title_size as i32 + 20,
        x1: w - 30 - right,
        y1: h - (14 + st.tick_size as i32 + 16 + st.label_size as i32 + 8),
    };
    c.clear()?;
    c.title(title)?;
    let grid = ShapeStyle::from(&GRID).stroke_width(1);
    let axis = ShapeStyle::from(&BLACK_).stroke_width(1);
    for (v, label) in &yt {
        let py = y.px(*v, f.y1, f.y0);
        c.path(vec![(f.x0, py), (f.x1, py)], grid)?;
        c.path(vec![(f.x0 - 6, py), (f.x0, py)], axis)?;
        c.text(
            label,
            (f.x0 - 10, py),
            st.tick_size,
            (HPos::Right, VPos::Center),
            false,
        )?;
    }
    if let Some(x) = x {
        let target = ((f.x1 - f.x0) / 110).clamp(2, 10) as usize;
        for (v, label) in x.ticks(target) {
            let px = x.px(v, f.x0, f.x1);
            c.path(vec![(px, f.y0), (px, f.y1)], grid)?;
            c.path(vec![(px, f.y1), (px, f.y1 + 6)], axis)?;
            c.text(
                &label,
                (px, f.y1 + 10),
                st.tick_size,
                (HPos::Center, VPos::Top),
                false,
            )?;
        }
    }
    c.path(
        vec![
            (f.x0, f.y0),
            (f.x1, f.y0),
            (f.x1, f.y1),
            (f.x0, f.y1),
            (f.x0, f.y0),
        ],
        axis,
    )?;
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
    )?;
    Ok(f)
}

/// Width of a legend panel for these names (0 when there is nothing to name).
fn legend_width(names: &[&str], size: f64) -> i32 {
    if names.iter().all(|n| n.is_empty()) {
        return 0;
    }
    names.iter().map(|n| text_width(n, size)).max().unwrap_or(0) + 60
}

/// Legend to the right of the frame: a swatch per entry, a line (`fill: None`) or a box
/// filled with the colour at opacity `fill` and outlined, as the data is drawn.
fn draw_legend<DB: DrawingBackend>(
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
        let (w, h) = (st.width as i32, st.height as i32);
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
        let f = Frame {
            x0: 20 + st.label_size as i32 + 12 + ytw + 10,
            y0: 14 + st.title_size as i32 + 20,
            x1: w - 30 - right,
            y1: h - (14 + st.tick_size as i32 + 16 + st.label_size as i32 + 8),
        };
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
        c.path(
            vec![
                (f.x0, f.y0),
                (f.x1, f.y0),
                (f.x1, f.y1),
                (f.x0, f.y1),
                (f.x0, f.y0),
            ],
            axis,
        )?;
        for i in yt {
            let py = (cy(i) + cy(i + 1)) / 2;
            c.path(vec![(f.x0 - 6, py), (f.x0, py)], axis)?;
            let s = label(self.y_ticks, i);
            c.text(
                &s,
                (f.x0 - 10, py),
                st.tick_size,
                (HPos::Right, VPos::Center),
                false,
            )?;
        }
        let max_xl = (0..ncols)
            .map(|j| text_width(&label(self.x_ticks, j), st.tick_size))
            .max()
            .unwrap_or(0)
            .max(1);
        let fit = ((f.x1 - f.x0) / (max_xl + 16)).max(1) as usize;
        for j in index_ticks(ncols, fit.min(20)) {
            let px = (cx(j) + cx(j + 1)) / 2;
            c.path(vec![(px, f.y1), (px, f.y1 + 6)], axis)?;
            let s = label(self.x_ticks, j);
            c.text(
                &s,
                (px, f.y1 + 10),
                st.tick_size,
                (HPos::Center, VPos::Top),
                false,
            )?;
        }
        c.text(
            self.x_label,
            ((f.x0 + f.x1) / 2, h - 10),
            st.label_size,
            (HPos::Center, VPos::Bottom),
            false,
        )?;
        c.text(
            self.y_label,
            (20, (f.y0 + f.y1) / 2),
            st.label_size,
            (HPos::Center, VPos::Top),
            true,
        )?;

        // Colour bar.
        let (bx0, bx1) = (f.x1 + 30, f.x1 + 60);
        let steps = 128;
        for k in 0..steps {
            let ya = f.y1 - ((f.y1 - f.y0) as f64 * k as f64 / steps as f64).round() as i32;
            let yb = f.y1 - ((f.y1 - f.y0) as f64 * (k + 1) as f64 / steps as f64).round() as i32;
            let v = lo + (hi - lo) * (k as f64 + 0.5) / steps as f64;
            c.rect((bx0, yb), (bx1, ya), cmap(v).filled())?;
        }
        c.path(
            vec![
                (bx0, f.y0),
                (bx1, f.y0),
                (bx1, f.y1),
                (bx0, f.y1),
                (bx0, f.y0),
            ],
            axis,
        )?;
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

/// What `sinkrep figures` did for one replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiguresSummary {
    pub id: String,
    pub files: Vec<PathBuf>,
    /// Why nothing was drawn (no finished run at this scale).
    pub skipped: Option<String>,
}

/// `sinkrep figures`: for every replication with a finished run at `scale` under
/// `runs_dir`, empties `<figures_dir>/<id>/` of old `.svg`/`.png` files and calls its
/// `figures`. Replications without a finished run are skipped; one that fails is
/// reported and the others still draw ([`Error::FiguresFailed`]).
pub fn make_figures(
    registry: &Registry,
    runs_dir: &Path,
    scale: Scale,
    figures_dir: &Path,
    style: &FigureStyle,
) -> Result<Vec<FiguresSummary>> {
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for rep in registry.iter() {
        let id = rep.claim().id.clone();
        let rdir = run_dir(runs_dir, scale, &id);
        if !rdir.join(MANIFEST).is_file() {
            out.push(FiguresSummary {
                id,
                files: Vec::new(),
                skipped: Some(format!("no finished run at {}", rdir.display())),
            });
            continue;
        }
        let fdir = figures_dir.join(&id);
        let res = (|| -> anyhow::Result<Vec<PathBuf>> {
            Manifest::load(&rdir)?;
            if fdir.is_dir() {
                for e in std::fs::read_dir(&fdir).map_err(io_err(&fdir))? {
                    let p = e.map_err(io_err(&fdir))?.path();
                    if p.extension().is_some_and(|x| x == "svg" || x == "png") {
                        std::fs::remove_file(&p).map_err(io_err(&p))?;
                    }
                }
            }
            std::fs::create_dir_all(&fdir).map_err(io_err(&fdir))?;
            rep.figures(&rdir, &fdir, style)
        })();
        match res {
            Ok(mut files) => {
                files.sort();
                out.push(FiguresSummary {
                    id,
                    files,
                    skipped: None,
                });
            }
            Err(e) => failed.push((id, format!("{e:#}"))),
        }
    }
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(Error::FiguresFailed {
            total: registry.len(),
            failed,
        })
    }
}
