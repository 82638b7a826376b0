//! Judging a claim's checks against the metrics a run recorded.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::claim::{Claim, Op, Scale};

/// Metrics as stored in `metrics.json`: `None` is a non-finite value (written as `null`).
pub type Metrics = BTreeMap<String, Option<f64>>;

/// A claim's overall verdict at one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Every check holds.
    #[serde(rename = "holds")]
    Holds,
    /// Some checks hold, some do not.
    #[serde(rename = "partly")]
    Partly,
    /// No check holds.
    #[serde(rename = "does not hold at this scale")]
    DoesNotHold,
    /// The claim has no check at this scale.
    #[serde(rename = "not judged at this scale")]
    NotJudged,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Partly => "partly",
            Verdict::DoesNotHold => "does not hold at this scale",
            Verdict::NotJudged => "not judged at this scale",
        }
    }

    pub fn from_counts(passed: usize, total: usize) -> Verdict {
        if total == 0 {
            Verdict::NotJudged
        } else if passed == total {
            Verdict::Holds
        } else if passed == 0 {
            Verdict::DoesNotHold
        } else {
            Verdict::Partly
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check, judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub metric: String,
    pub op: Op,
    pub threshold: f64,
    /// The measured value; `None` when not recorded or not finite (see `note`).
    pub value: Option<f64>,
    pub holds: bool,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Contents of `verdicts.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdicts {
    pub id: String,
    pub claim_version: u32,
    pub scale: Scale,
    pub verdict: Verdict,
    pub passed: usize,
    pub total: usize,
    pub checks: Vec<CheckResult>,
}

/// Judges every check of `claim` that applies at `scale`. A metric that is missing or
/// non-finite makes its check "does not hold", with a note saying why.
pub fn evaluate(claim: &Claim, scale: Scale, metrics: &Metrics) -> Verdicts {
    let checks: Vec<CheckResult> = claim
        .checks_at(scale)
        .map(|c| {
            let (value, note) = match metrics.get(&c.metric) {
                None => (None, Some("metric not recorded by the run".to_string())),
                Some(None) => (
                    None,
                    Some("value is not finite (NaN or infinite)".to_string()),
                ),
                Some(Some(v)) if !v.is_finite() => (
                    None,
                    Some("value is not finite (NaN or infinite)".to_string()),
                ),
                Some(Some(v)) => (Some(*v), None),
            };
            CheckResult {
                id: c.id.clone(),
                metric: c.metric.clone(),
                op: c.op,
                threshold: c.threshold,
                value,
                holds: value.is_some_and(|v| c.op.holds(v, c.threshold)),
                description: c.description.clone(),
                note,
            }
        })
        .collect();
    let passed = checks.iter().filter(|c| c.holds).count();
    Verdicts {
        id: claim.id.clone(),
        claim_version: claim.version,
        scale,
        verdict: Verdict::from_counts(passed, checks.len()),
        passed,
        total: checks.len(),
        checks,
    }
}
