//! CSV artifacts: cells of mixed type for tables whose columns are only known at run
//! time, and rows of `#[derive(Serialize)]` structs whose field names are the header.

use serde::Serialize;
use std::fmt;

/// One CSV cell. Floats are written with Rust's `Display`, the shortest text that parses
/// back to the same value (`NaN`, `inf`, `-inf` for non-finite values).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    F64(f64),
    F32(f32),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Text(String),
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::F64(v) => write!(f, "{v}"),
            Cell::F32(v) => write!(f, "{v}"),
            Cell::Int(v) => write!(f, "{v}"),
            Cell::UInt(v) => write!(f, "{v}"),
            Cell::Bool(v) => write!(f, "{v}"),
            Cell::Text(v) => f.write_str(v),
        }
    }
}

macro_rules! cell_from {
    ($($t:ty => $v:ident as $c:ty),* $(,)?) => {$(
        impl From<$t> for Cell {
            fn from(x: $t) -> Cell { Cell::$v(x as $c) }
        }
    )*};
}
cell_from!(f64 => F64 as f64, f32 => F32 as f32, i64 => Int as i64, i32 => Int as i64,
    u64 => UInt as u64, u32 => UInt as u64, usize => UInt as u64);

impl From<bool> for Cell {
    fn from(x: bool) -> Cell {
        Cell::Bool(x)
    }
}
impl From<&str> for Cell {
    fn from(x: &str) -> Cell {
        Cell::Text(x.to_string())
    }
}
impl From<String> for Cell {
    fn from(x: String) -> Cell {
        Cell::Text(x)
    }
}
impl From<&String> for Cell {
    fn from(x: &String) -> Cell {
        Cell::Text(x.clone())
    }
}

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new())
}

/// Encodes `header` and then one record per row; every row must have as many cells as
/// the header. Errors are messages for [`crate::Error::Csv`].
pub(crate) fn encode_cells<R, C>(header: &[&str], rows: R) -> Result<Vec<u8>, String>
where
    R: IntoIterator,
    R::Item: IntoIterator<Item = C>,
    C: Into<Cell>,
{
    let mut w = writer();
    w.write_record(header).map_err(|e| e.to_string())?;
    for (i, row) in rows.into_iter().enumerate() {
        let cells: Vec<String> = row.into_iter().map(|c| c.into().to_string()).collect();
        if cells.len() != header.len() {
            return Err(format!(
                "row {i} has {} cells, the header has {}",
                cells.len(),
                header.len()
            ));
        }
        w.write_record(&cells).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

/// Encodes rows of a flat `#[derive(Serialize)]` struct (scalars, strings, `Option`s):
/// the header is the field names (`#[serde(rename)]` applies), in declaration order.
/// Floats are written as the shortest text that parses back to the same value
/// (`NaN`, `inf`, `-inf` for non-finite ones); `None` is an empty cell. A table
/// without rows still gets its header, taken from `T::default()`.
pub(crate) fn encode_rows<T, R>(rows: R) -> Result<Vec<u8>, String>
where
    T: Serialize + Default,
    R: IntoIterator<Item = T>,
{
    let mut w = writer();
    let mut any = false;
    for (i, row) in rows.into_iter().enumerate() {
        w.serialize(&row).map_err(|e| format!("row {i}: {e}"))?;
        any = true;
    }
    if !any {
        // The csv writer emits the header with the first record: encode a default row
        // and keep only its first line.
        let mut probe = writer();
        probe.serialize(T::default()).map_err(|e| e.to_string())?;
        let bytes = probe.into_inner().map_err(|e| e.to_string())?;
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| p + 1);
        return Ok(bytes[..end].to_vec());
    }
    w.into_inner().map_err(|e| e.to_string())
}
