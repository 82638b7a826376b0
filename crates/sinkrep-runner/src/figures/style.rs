//! Figure style and fonts, the files a figure writes, and rendering to SVG and PNG
//! through a pixel-coordinate canvas shared by every chart type.

use plotters::backend::{BitMapBackend, SVGBackend};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{io_err, Error, Result};

/// Font family name the TTF is registered under (and written into SVG `font-family`).
pub(super) const FAMILY: &str = "sans-serif";

/// Where `sinkrep fetch` puts the pinned DejaVu Sans.
pub fn default_font_path() -> PathBuf {
    sinkrep_inputs::Cache::default()
        .input_dir("dejavu-fonts")
        .join("DejaVuSans.ttf")
}

/// Fonts registered with plotters, by path; plotters needs `'static` bytes, so each file
/// is read and leaked once per process.
pub(super) fn registered_fonts() -> &'static Mutex<HashMap<PathBuf, bool>> {
    static FONTS: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
    FONTS.get_or_init(Default::default)
}

pub(super) fn register_font(path: &Path) -> std::result::Result<(), String> {
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
    pub(super) font: Option<PathBuf>,
    pub(super) note: Option<String>,
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

// ---------------------------------------------------------------------------------------
// Rendering to both backends.

pub(super) type DrawResult = std::result::Result<(), String>;

pub(super) trait Figure {
    fn draw<DB: DrawingBackend>(&self, c: &Canvas<'_, DB>, notes: &mut Vec<String>) -> DrawResult;
}

pub(super) fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

pub(super) fn render<F: Figure>(style: &FigureStyle, stem: &Path, fig: &F) -> Result<FigureFiles> {
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
pub(super) struct Canvas<'a, DB: DrawingBackend> {
    pub(super) area: &'a DrawingArea<DB, Shift>,
    pub(super) style: &'a FigureStyle,
}

pub(super) const BLACK_: RGBColor = RGBColor(0, 0, 0);
pub(super) const GRID: RGBColor = RGBColor(225, 225, 225);
pub(super) const NAN_GREY: RGBColor = RGBColor(190, 190, 190);
/// Okabe-Ito, colour-blind safe, in an order that keeps the first few far apart.
pub(super) const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
];

pub(super) fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Estimated width of `text` at plotters font `size` (DejaVu Sans digits are ~0.55 of
/// the size; a little generous so labels never collide).
pub(super) fn text_width(text: &str, size: f64) -> i32 {
    (text.chars().count() as f64 * size * 0.56).ceil() as i32
}

impl<DB: DrawingBackend> Canvas<'_, DB> {
    pub(super) fn text(
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

    pub(super) fn rect(&self, a: (i32, i32), b: (i32, i32), style: ShapeStyle) -> DrawResult {
        self.area
            .draw(&Rectangle::new([a, b], style))
            .map_err(|e| e.to_string())
    }

    pub(super) fn path(&self, pts: Vec<(i32, i32)>, style: ShapeStyle) -> DrawResult {
        self.area
            .draw(&PathElement::new(pts, style))
            .map_err(|e| e.to_string())
    }

    pub(super) fn circle(&self, c: (i32, i32), r: i32, style: ShapeStyle) -> DrawResult {
        self.area
            .draw(&Circle::new(c, r, style))
            .map_err(|e| e.to_string())
    }

    pub(super) fn clear(&self) -> DrawResult {
        self.area.fill(&WHITE).map_err(|e| e.to_string())
    }

    pub(super) fn title(&self, title: &str) -> DrawResult {
        self.text(
            title,
            (self.style.width as i32 / 2, 14),
            self.style.title_size,
            (HPos::Center, VPos::Top),
            false,
        )
    }
}
