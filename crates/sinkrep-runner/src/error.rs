//! The crate's error type. Every variant that concerns a file names it.

use std::io;
use std::path::{Path, PathBuf};

use crate::claim::{ClaimError, Scale};
use crate::runner::RunSummary;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {msg}")]
    Csv { path: PathBuf, msg: String },
    #[error(transparent)]
    Inputs(#[from] sinkrep_inputs::InputsError),
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error("duplicate replication id `{id}` (claims {first} and {second})")]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error("unknown replication `{id}`; registered: {known}")]
    UnknownReplication { id: String, known: String },
    #[error("replication `{id}` does not declare scale `{scale}` (its claim lists: {declared})")]
    ScaleNotDeclared {
        id: String,
        scale: Scale,
        declared: String,
    },
    #[error("invalid artifact name `{name}`: {why}")]
    ArtifactName { name: String, why: &'static str },
    #[error("metric `{name}`: {why}")]
    Metric { name: String, why: String },
    #[error("config key `{key}`: {why}")]
    Config { key: String, why: String },
    #[error("{path}: incomplete run (no manifest.json); rerun `sinkrep run`")]
    IncompleteRun { path: PathBuf },
    #[error("{path}: cannot draw figure: {msg}")]
    Figure { path: PathBuf, msg: String },
    #[error("{}", failed_message(.failed, .summaries.len()))]
    ReplicationsFailed {
        /// (id, error chain) of each replication that failed.
        failed: Vec<(String, String)>,
        /// One summary per selected replication, failed ones included, for the table.
        summaries: Vec<RunSummary>,
    },
    #[error("{}", failed_message(.failed, *.total))]
    FiguresFailed {
        failed: Vec<(String, String)>,
        total: usize,
    },
}

fn failed_message(failed: &[(String, String)], total: usize) -> String {
    let mut s = format!("{} of {} replications failed:", failed.len(), total);
    for (id, msg) in failed {
        s.push_str(&format!("\n  {id}: {msg}"));
    }
    s
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn json_err(path: &Path) -> impl FnOnce(serde_json::Error) -> Error + '_ {
    move |source| Error::Json {
        path: path.to_path_buf(),
        source,
    }
}
