//! `sinkrep verify`: compares a run's metrics and verdicts with the committed baselines
//! (`<baselines>/<scale>/<id>/{metrics,verdicts}.json`) within the claim's tolerances.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use crate::claim::{Claim, Scale, Tol};
use crate::error::{io_err, Result};
use crate::manifest::{check_integrity, read_json, Manifest, MANIFEST, METRICS, VERDICTS};
use crate::registry::Registry;
use crate::runner::run_dir;
use crate::table::{fmt_num, TextTable};
use crate::verdict::{Metrics, Verdicts};

/// One side of a metric comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// The metric is not in this side's `metrics.json`.
    Missing,
    /// Recorded as `null` (NaN or infinite).
    NonFinite,
    Finite(f64),
}

impl Value {
    fn of(m: &Metrics, name: &str) -> Value {
        match m.get(name) {
            None => Value::Missing,
            Some(None) => Value::NonFinite,
            Some(Some(v)) => Value::Finite(*v),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Missing => f.write_str("missing"),
            Value::NonFinite => f.write_str("null"),
            Value::Finite(v) => f.write_str(&fmt_num(*v, 6)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftStatus {
    Ok,
    /// Outside tolerance, or finite on one side and `null` on the other.
    Drift,
    /// Present on one side only.
    Missing,
}

impl fmt::Display for DriftStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriftStatus::Ok => "ok",
            DriftStatus::Drift => "DRIFT",
            DriftStatus::Missing => "MISSING",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    pub id: String,
    pub metric: String,
    pub baseline: Value,
    pub now: Value,
    /// `now - baseline` when both are finite.
    pub difference: Option<f64>,
    pub tolerance: Tol,
    pub status: DriftStatus,
}

/// A check (or the overall verdict, `check == "verdict"`) whose outcome changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange {
    pub id: String,
    pub check: String,
    pub baseline: String,
    pub now: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyOutcome {
    pub scale: Scale,
    /// Replications whose metrics were compared.
    pub compared: Vec<String>,
    pub rows: Vec<DriftRow>,
    pub verdict_changes: Vec<VerdictChange>,
    /// Problems that are failures by themselves: no run, incomplete run, no baseline,
    /// a run whose files no longer match its manifest, a protocol version mismatch.
    pub problems: Vec<String>,
    /// With `update`: one line per baseline file rewritten.
    pub updated: Vec<String>,
    pub update: bool,
}

impl VerifyOutcome {
    pub fn drifted(&self) -> impl Iterator<Item = &DriftRow> {
        self.rows.iter().filter(|r| r.status != DriftStatus::Ok)
    }

    /// Whether verify succeeds: without `update`, nothing drifted, no verdict changed
    /// and there were no problems; with `update`, only problems the update could not
    /// fix (a missing or broken run) fail.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && (self.update || (self.drifted().next().is_none() && self.verdict_changes.is_empty()))
    }

    /// The drift table (`all`: every metric; otherwise only those not ok), verdict
    /// changes, problems, updates and a one-line summary.
    pub fn render(&self, all: bool) -> String {
        let mut out = String::new();
        let mut t = TextTable::new(&[
            "id",
            "metric",
            "baseline",
            "now",
            "difference",
            "tolerance",
            "rule",
            "status",
        ]);
        for r in self
            .rows
            .iter()
            .filter(|r| all || r.status != DriftStatus::Ok)
        {
            t.row(vec![
                r.id.clone(),
                r.metric.clone(),
                r.baseline.to_string(),
                r.now.to_string(),
                r.difference
                    .map(|d| fmt_num(d, 3))
                    .unwrap_or_else(|| "-".into()),
                if r.tolerance.gated() {
                    format!(
                        "abs {} | rel {}",
                        fmt_num(r.tolerance.abs, 3),
                        fmt_num(r.tolerance.rel, 3)
                    )
                } else {
                    "-".into()
                },
                r.tolerance.rule.to_string(),
                r.status.to_string(),
            ]);
        }
        if !t.is_empty() {
            out.push_str(&t.render());
        }
        if !self.verdict_changes.is_empty() {
            out.push_str("\nverdict changes:\n");
            let mut t = TextTable::new(&["id", "check", "baseline", "now"]);
            for c in &self.verdict_changes {
                t.row(vec![
                    c.id.clone(),
                    c.check.clone(),
                    c.baseline.clone(),
                    c.now.clone(),
                ]);
            }
            out.push_str(&t.render());
        }
        if !self.problems.is_empty() {
            out.push_str("\nproblems:\n");
            for p in &self.problems {
                out.push_str(&format!("  {p}\n"));
            }
        }
        if !self.updated.is_empty() {
            out.push_str("\nbaselines updated:\n");
            for u in &self.updated {
                out.push_str(&format!("  {u}\n"));
            }
        }
        let drift = self.drifted().count();
        out.push_str(&format!(
            "\nverify {}: {} replication(s), {} metric(s) ({} of them shown, not gated), {} drifted, {} verdict change(s), {} problem(s){}: {}\n",
            self.scale,
            self.compared.len(),
            self.rows.len(),
            self.rows.iter().filter(|r| !r.tolerance.gated()).count(),
            drift,
            self.verdict_changes.len(),
            self.problems.len(),
            if self.update { ", baselines updated" } else { "" },
            if self.passed() { "PASS" } else { "FAIL" }
        ));
        out
    }
}

impl fmt::Display for VerifyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(true))
    }
}

/// Compares metric maps within the claim's tolerances, in sorted metric order.
pub fn compare_metrics(claim: &Claim, baseline: &Metrics, now: &Metrics) -> Vec<DriftRow> {
    let names: BTreeSet<&String> = baseline.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .map(|name| {
            let tol = claim.tolerance.for_metric_in(name, baseline, now);
            let (b, n) = (Value::of(baseline, name), Value::of(now, name));
            let (difference, status) = match (b, n) {
                (Value::Missing, _) | (_, Value::Missing) => (None, DriftStatus::Missing),
                _ if tol.drifted_regardless() => (
                    match (b, n) {
                        (Value::Finite(b), Value::Finite(n)) => Some(n - b),
                        _ => None,
                    },
                    DriftStatus::Drift,
                ),
                (Value::Finite(b), Value::Finite(n)) => (
                    Some(n - b),
                    if !tol.gated() || tol.within(b, n) {
                        DriftStatus::Ok
                    } else {
                        DriftStatus::Drift
                    },
                ),
                (Value::NonFinite, Value::NonFinite) => (None, DriftStatus::Ok),
                _ if !tol.gated() => (None, DriftStatus::Ok),
                _ => (None, DriftStatus::Drift),
            };
            DriftRow {
                id: claim.id.clone(),
                metric: name.clone(),
                baseline: b,
                now: n,
                difference,
                tolerance: tol,
                status,
            }
        })
        .collect()
}

fn verdict_changes(baseline: &Verdicts, now: &Verdicts) -> Vec<VerdictChange> {
    let mut out = Vec::new();
    let word = |c: &crate::verdict::CheckResult| c.outcome().to_string();
    for c in &now.checks {
        match baseline.checks.iter().find(|b| b.id == c.id) {
            Some(b) if b.outcome() == c.outcome() => {}
            Some(b) => out.push(VerdictChange {
                id: now.id.clone(),
                check: c.id.clone(),
                baseline: word(b),
                now: word(c),
            }),
            None => out.push(VerdictChange {
                id: now.id.clone(),
                check: c.id.clone(),
                baseline: "absent".into(),
                now: word(c),
            }),
        }
    }
    for b in &baseline.checks {
        if !now.checks.iter().any(|c| c.id == b.id) {
            out.push(VerdictChange {
                id: now.id.clone(),
                check: b.id.clone(),
                baseline: word(b),
                now: "absent".into(),
            });
        }
    }
    if baseline.verdict != now.verdict {
        out.push(VerdictChange {
            id: now.id.clone(),
            check: "verdict".into(),
            baseline: baseline.verdict.to_string(),
            now: now.verdict.to_string(),
        });
    }
    out
}

/// Compares every registered replication that declares `scale` and has a run under
/// `runs_dir` or a baseline under `baseline_dir`. With `update`, the run's
/// `metrics.json` and `verdicts.json` are copied (atomically) over the baselines that
/// differ, and `updated` says what changed. I/O failures are errors; drift is reported
/// in the outcome (check [`VerifyOutcome::passed`]).
pub fn verify(
    registry: &Registry,
    scale: Scale,
    runs_dir: &Path,
    baseline_dir: &Path,
    update: bool,
) -> Result<VerifyOutcome> {
    let mut out = VerifyOutcome {
        scale,
        compared: Vec::new(),
        rows: Vec::new(),
        verdict_changes: Vec::new(),
        problems: Vec::new(),
        updated: Vec::new(),
        update,
    };
    for rep in registry.iter() {
        let claim = rep.claim();
        if !claim.supports(scale) {
            continue;
        }
        let rdir = run_dir(runs_dir, scale, &claim.id);
        let bdir = run_dir(baseline_dir, scale, &claim.id);
        let has_base = bdir.join(METRICS).is_file();
        if !rdir.exists() && !has_base {
            continue;
        }
        if !rdir.join(MANIFEST).is_file() {
            out.problems.push(format!(
                "{}: no finished run at {} (run `sinkrep run {} --scale {scale}`)",
                claim.id,
                rdir.display(),
                claim.id
            ));
            continue;
        }
        let manifest = Manifest::load(&rdir)?;
        let broken = check_integrity(&rdir)?;
        if !broken.is_empty() {
            for b in broken {
                out.problems.push(format!(
                    "{}: run does not match its manifest: {b}",
                    claim.id
                ));
            }
            continue;
        }
        if manifest.claim_version != claim.version {
            out.problems.push(format!(
                "{}: the run was made with claim version {}, the claim is now version {}; rerun it",
                claim.id, manifest.claim_version, claim.version
            ));
            continue;
        }
        let now_metrics: Metrics = read_json(&rdir.join(METRICS))?;
        let now_verdicts: Verdicts = read_json(&rdir.join(VERDICTS))?;
        out.compared.push(claim.id.clone());

        let (base_metrics, base_verdicts): (Metrics, Option<Verdicts>) = if has_base {
            let bv = bdir.join(VERDICTS);
            (
                read_json(&bdir.join(METRICS))?,
                if bv.is_file() {
                    Some(read_json(&bv)?)
                } else {
                    None
                },
            )
        } else {
            (Metrics::new(), None)
        };
        let mut fixable = false;
        if !has_base {
            fixable = true;
            if !update {
                out.problems.push(format!(
                    "{}: no baseline at {}; review the run and use `sinkrep verify --update`",
                    claim.id,
                    bdir.display()
                ));
            }
        } else {
            match &base_verdicts {
                None => {
                    fixable = true;
                    if !update {
                        out.problems.push(format!(
                            "{}: baseline {} is missing",
                            claim.id,
                            bdir.join(VERDICTS).display()
                        ));
                    }
                }
                Some(bv) if bv.claim_version != claim.version => {
                    fixable = true;
                    if !update {
                        out.problems.push(format!(
                            "{}: baseline is for claim version {}, the claim is now version {} \
                             (protocol changed); review and use `sinkrep verify --update`",
                            claim.id, bv.claim_version, claim.version
                        ));
                    }
                }
                Some(bv) => out
                    .verdict_changes
                    .extend(verdict_changes(bv, &now_verdicts)),
            }
            out.rows
                .extend(compare_metrics(claim, &base_metrics, &now_metrics));
        }

        if update {
            let rows: Vec<&DriftRow> = out.rows.iter().filter(|r| r.id == claim.id).collect();
            let differ = rows.iter().filter(|r| r.baseline != r.now).count();
            let beyond = rows.iter().filter(|r| r.status != DriftStatus::Ok).count();
            let flips = out
                .verdict_changes
                .iter()
                .filter(|c| c.id == claim.id)
                .count();
            for name in [METRICS, VERDICTS] {
                let src = rdir.join(name);
                let dst = bdir.join(name);
                let bytes = std::fs::read(&src).map_err(io_err(&src))?;
                let old = std::fs::read(&dst).ok();
                if old.as_deref() == Some(&bytes[..]) {
                    continue;
                }
                sinkrep_inputs::write_atomic(&dst, &bytes)?;
                let what = match (old.is_some(), name == METRICS) {
                    (false, _) => "created".to_string(),
                    (true, true) => format!(
                        "updated: {differ} metric(s) changed, {beyond} beyond tolerance or missing"
                    ),
                    (true, false) if fixable => "updated (claim version changed)".to_string(),
                    (true, false) => format!("updated: {flips} verdict change(s)"),
                };
                out.updated.push(format!("{}: {what}", dst.display()));
            }
        }
    }

    // Baselines of replications that are no longer registered are stale.
    let sdir = baseline_dir.join(scale.as_str());
    if sdir.is_dir() {
        let mut stale = Vec::new();
        for e in std::fs::read_dir(&sdir).map_err(io_err(&sdir))? {
            let e = e.map_err(io_err(&sdir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && registry.get(&name).is_err() {
                stale.push(name);
            }
        }
        stale.sort();
        for name in stale {
            out.problems.push(format!(
                "{}: baseline for a replication that is not registered",
                sdir.join(name).display()
            ));
        }
    }
    Ok(out)
}
