//! `manifest.json`: the record of one run (inputs, outputs, config, environment, timings),
//! and comparisons of manifests across runs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::claim::Scale;
use crate::error::{io_err, json_err, Error, Result};
use crate::verdict::Verdict;

/// File name of the manifest; written last, so its presence marks a finished run.
pub const MANIFEST: &str = "manifest.json";
pub const METRICS: &str = "metrics.json";
pub const VERDICTS: &str = "verdicts.json";
/// Bumped when the manifest's layout changes incompatibly.
pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub name: String,
    pub seconds: f64,
}

/// Wall-clock times. They live only here, never in artifacts, and are not part of the
/// outputs checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub stages: Vec<StageTiming>,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub id: String,
    pub claim_version: u32,
    pub scale: Scale,
    pub seed: u64,
    /// Seeds derived with `RunContext::seeds` (empty when the run used only `seed`).
    pub seeds: Vec<u64>,
    pub device: String,
    /// Resolved configuration recorded with `RunContext::config`.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Environment as filled by the binary (versions, git revision and dirty flag,
    /// threads, ...).
    pub env: serde_json::Value,
    pub runner_version: String,
    /// Inputs by the path they were opened with.
    pub inputs: BTreeMap<String, FileRecord>,
    /// Every artifact of the run (manifest excluded), by name relative to the run folder.
    pub artifacts: BTreeMap<String, FileRecord>,
    /// sha256 over the sorted (name, sha256, size) of every artifact: one value that is
    /// equal for two runs exactly when all their outputs are byte-identical.
    pub outputs_sha256: String,
    pub verdict: Verdict,
    pub checks_passed: usize,
    pub checks_total: usize,
    pub timing: Timing,
}

impl Manifest {
    /// Reads `<run_dir>/manifest.json`; a folder without one is an incomplete run.
    pub fn load(run_dir: &Path) -> Result<Manifest> {
        let path = run_dir.join(MANIFEST);
        if !path.is_file() {
            return Err(Error::IncompleteRun {
                path: run_dir.to_path_buf(),
            });
        }
        read_json(&path)
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(json_err(path))
}

/// The digest stored as `outputs_sha256`.
pub fn outputs_digest(artifacts: &BTreeMap<String, FileRecord>) -> String {
    let mut text = String::new();
    for (name, r) in artifacts {
        text.push_str(&format!("{name}\t{}\t{}\n", r.sha256, r.size));
    }
    sinkrep_inputs::sha256_bytes(text.as_bytes())
}

/// Re-hashes every artifact a manifest lists; returns one line per file that is missing
/// or differs (empty when the run folder is intact).
pub fn check_integrity(run_dir: &Path) -> Result<Vec<String>> {
    let m = Manifest::load(run_dir)?;
    let mut problems = Vec::new();
    for (name, rec) in &m.artifacts {
        let path = run_dir.join(name);
        match std::fs::metadata(&path) {
            Err(_) => problems.push(format!(
                "{}: listed in the manifest but missing",
                path.display()
            )),
            Ok(md) if md.len() != rec.size => problems.push(format!(
                "{}: size {} differs from the manifest's {}",
                path.display(),
                md.len(),
                rec.size
            )),
            Ok(_) => {
                let sha = sinkrep_inputs::sha256_file(&path)?;
                if sha != rec.sha256 {
                    problems.push(format!(
                        "{}: sha256 {sha} differs from the manifest's {}",
                        path.display(),
                        rec.sha256
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// Result of comparing the artifact checksums of two runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumComparison {
    /// Run folders (`<scale>/<id>`) compared.
    pub runs: Vec<String>,
    /// Artifacts compared, over all runs.
    pub artifacts: usize,
    /// One line per difference.
    pub differences: Vec<String>,
}

impl ChecksumComparison {
    pub fn identical(&self) -> bool {
        self.differences.is_empty() && !self.runs.is_empty()
    }
}

impl fmt::Display for ChecksumComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.runs.is_empty() {
            return writeln!(f, "no finished runs to compare");
        }
        if self.differences.is_empty() {
            return writeln!(
                f,
                "{} artifacts in {} runs: every checksum reproduced",
                self.artifacts,
                self.runs.len()
            );
        }
        writeln!(
            f,
            "{} difference(s) over {} runs:",
            self.differences.len(),
            self.runs.len()
        )?;
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// Finished runs below `dir`: `dir` itself when it holds a manifest, else every
/// `<dir>/<scale>/<id>/manifest.json`, keyed by `<scale>/<id>`.
fn finished_runs(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    if dir.join(MANIFEST).is_file() {
        out.insert(".".to_string(), dir.to_path_buf());
        return Ok(out);
    }
    for scale in Scale::ALL {
        let sdir = dir.join(scale.as_str());
        if !sdir.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(&sdir).map_err(io_err(&sdir))? {
            let e = e.map_err(io_err(&sdir))?;
            let p = e.path();
            if p.join(MANIFEST).is_file() {
                out.insert(format!("{}/{}", scale, e.file_name().to_string_lossy()), p);
            }
        }
    }
    Ok(out)
}

/// Compares the artifact checksums of two runs: `a` and `b` are either run folders
/// (`<out>/<scale>/<id>`) or output roots (`<out>`). Timings, environment and inputs
/// are not compared: only what the run produced.
pub fn compare_checksums(a: &Path, b: &Path) -> Result<ChecksumComparison> {
    let ra = finished_runs(a)?;
    let rb = finished_runs(b)?;
    let mut cmp = ChecksumComparison {
        runs: Vec::new(),
        artifacts: 0,
        differences: Vec::new(),
    };
    for key in ra.keys().chain(rb.keys().filter(|k| !ra.contains_key(*k))) {
        let (Some(da), Some(db)) = (ra.get(key), rb.get(key)) else {
            let (has, lacks) = if ra.contains_key(key) { (a, b) } else { (b, a) };
            cmp.differences.push(format!(
                "{key}: finished in {} but not in {}",
                has.display(),
                lacks.display()
            ));
            continue;
        };
        cmp.runs.push(key.clone());
        let ma = Manifest::load(da)?;
        let mb = Manifest::load(db)?;
        for name in ma.artifacts.keys().chain(
            mb.artifacts
                .keys()
                .filter(|k| !ma.artifacts.contains_key(*k)),
        ) {
            cmp.artifacts += 1;
            match (ma.artifacts.get(name), mb.artifacts.get(name)) {
                (Some(x), Some(y)) if x == y => {}
                (Some(x), Some(y)) => cmp.differences.push(format!(
                    "{key}/{name}: sha256 {} ({} bytes) vs {} ({} bytes)",
                    x.sha256, x.size, y.sha256, y.size
                )),
                (Some(_), None) => cmp
                    .differences
                    .push(format!("{key}/{name}: only in {}", a.display())),
                _ => cmp
                    .differences
                    .push(format!("{key}/{name}: only in {}", b.display())),
            }
        }
    }
    Ok(cmp)
}

/// (model name, ISA features of interest) from /proc/cpuinfo; "unknown" elsewhere.
pub fn cpu_info() -> (String, Vec<String>) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = flags.split_whitespace().collect();
    let isa = ["amx_bf16", "avx512_bf16", "avx512f", "avx2"]
        .into_iter()
        .filter(|f| have.contains(f))
        .map(String::from)
        .collect();
    (field("model name").unwrap_or_else(|| "unknown".into()), isa)
}
