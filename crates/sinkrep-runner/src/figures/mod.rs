//! Figures drawn from plain data to SVG (always; byte-identical run to run) and PNG (when
//! the pinned TTF font is available).
//!
//! Axes, ticks, legends and colour bars are drawn here from primitives (lines,
//! rectangles, text) instead of with plotters' chart/mesh/legend helpers: those measure
//! text with the registered font, which would make SVG depend on the font being present.
//! Text widths are estimated from the character count, so the layout is the same for SVG
//! and PNG and for every machine.

mod axis;
mod bar;
mod heatmap;
mod histogram;
mod line;
mod style;

pub use bar::{bar_chart, BarChart, BarGroup};
pub use heatmap::{heatmap, ColourMap, Heatmap};
pub use histogram::{histogram, HistSeries, Histogram};
pub use line::{line_chart, LineChart, Series};
pub use style::{default_font_path, FigureFiles, FigureStyle};
