//! The replication runner of sinkrep: claim files, the registry of replications, the run
//! context they write through, run manifests and verdicts, drift checks against committed
//! baselines, figures, and the report. Pure Rust: it knows nothing about tch; the binary
//! passes in the device name and the environment it resolved.
//!
//! Layout of a run: `<out>/<scale>/<id>/` holds the replication's artifacts,
//! `metrics.json`, `verdicts.json` and, written last, `manifest.json`.

pub mod claim;
pub mod context;
pub mod csv_out;
pub mod data;
pub mod error;
pub mod figures;
pub mod files;
pub mod json;
pub mod manifest;
pub mod registry;
pub mod report;
pub mod runner;
pub mod table;
pub mod testing;
pub mod timing;
pub mod verdict;
pub mod verify;

pub use claim::{
    is_primary_model, model_check_id, model_dir, model_metric, Check, Claim, ClaimError, Op, Scale,
    Tol, TolRule, Tolerance,
};
pub use context::RunContext;
pub use csv_out::Cell;
pub use data::{read_metrics, read_rows, read_verdicts, CsvTable};
pub use error::{Error, Result};
pub use figures::{
    bar_chart, default_font_path, heatmap, histogram, line_chart, BarChart, BarGroup, ColourMap,
    FigureFiles, FigureStyle, Heatmap, HistSeries, Histogram, LineChart, Series,
};
pub use manifest::{
    check_integrity, compare_checksums, cpu_info, ChecksumComparison, FileRecord, Manifest,
    MANIFEST, METRICS, VERDICTS,
};
pub use registry::{claim_origin, Embedded, Registry, Replication, Study};
pub use report::{render_report, write_report};
pub use runner::{
    git_state, make_figures, run_dir, run_replications, run_replications_with, summary_table,
    FiguresSummary, RunEvent, RunOptions, RunStatus, RunSummary,
};
pub use verdict::{evaluate, CheckResult, Metrics, ModelVerdict, Outcome, Verdict, Verdicts};
pub use verify::{verify, DriftRow, DriftStatus, VerdictChange, VerifyOutcome};
