//! Reading a finished run's files back (for figures and the report).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{read_json, METRICS, VERDICTS};
use crate::verdict::{Metrics, Verdicts};

/// A CSV artifact read back as strings, with typed column access.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvTable {
    pub path: PathBuf,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl CsvTable {
    pub fn read(path: &Path) -> Result<CsvTable> {
        let err = |msg: String| Error::Csv {
            path: path.to_path_buf(),
            msg,
        };
        let mut r = csv::Reader::from_path(path).map_err(|e| err(e.to_string()))?;
        let header = r
            .headers()
            .map_err(|e| err(e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut rows = Vec::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| err(e.to_string()))?;
            rows.push(rec.iter().map(str::to_string).collect());
        }
        Ok(CsvTable {
            path: path.to_path_buf(),
            header,
            rows,
        })
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| Error::Csv {
                path: self.path.clone(),
                msg: format!("no column `{name}` (columns: {})", self.header.join(", ")),
            })
    }

    pub fn column(&self, name: &str) -> Result<Vec<&str>> {
        let i = self.index(name)?;
        Ok(self.rows.iter().map(|r| r[i].as_str()).collect())
    }

    /// A column parsed as f64 (`NaN`, `inf`, `-inf` accepted, as written by the runner).
    pub fn column_f64(&self, name: &str) -> Result<Vec<f64>> {
        let i = self.index(name)?;
        self.rows
            .iter()
            .enumerate()
            .map(|(k, r)| {
                r[i].parse::<f64>().map_err(|_| Error::Csv {
                    path: self.path.clone(),
                    msg: format!("row {k}, column `{name}`: `{}` is not a number", r[i]),
                })
            })
            .collect()
    }
}

/// `metrics.json` of a run folder.
/// Reads a CSV artifact written by [`crate::RunContext::write_rows`] back into its row
/// struct (columns matched by name; `NaN`, `inf`, `-inf` parse as floats).
pub fn read_rows<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let err = |msg: String| Error::Csv {
        path: path.to_path_buf(),
        msg,
    };
    let mut r = csv::Reader::from_path(path).map_err(|e| err(e.to_string()))?;
    r.deserialize()
        .enumerate()
        .map(|(i, row)| row.map_err(|e| err(format!("row {i}: {e}"))))
        .collect()
}

pub fn read_metrics(run_dir: &Path) -> Result<Metrics> {
    read_json(&run_dir.join(METRICS))
}

/// `verdicts.json` of a run folder.
pub fn read_verdicts(run_dir: &Path) -> Result<Verdicts> {
    read_json(&run_dir.join(VERDICTS))
}
