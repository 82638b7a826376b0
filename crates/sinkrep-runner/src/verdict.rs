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

/// What a check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    #[serde(rename = "holds")]
    Holds,
    #[serde(rename = "does not hold")]
    DoesNotHold,
    /// An interval check whose 95% interval straddles the threshold: the data cannot
    /// tell at this scale.
    #[serde(rename = "undecided")]
    Undecided,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Holds => "holds",
            Outcome::DoesNotHold => "does not hold",
            Outcome::Undecided => "undecided",
        }
    }
}

impl fmt::Display for Outcome {
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
    /// Absent in verdicts written before interval checks: then `holds` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// For interval checks: the 95% interval judged, `[lo, hi]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The pretrained model the check judges (claims on several models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl CheckResult {
    pub fn outcome(&self) -> Outcome {
        self.outcome.unwrap_or(if self.holds {
            Outcome::Holds
        } else {
            Outcome::DoesNotHold
        })
    }
}

/// Judges an interval against `op threshold`: holds when every point of `[lo, hi]`
/// satisfies it, does not hold when no point does, undecided otherwise.
pub fn judge_interval(op: Op, threshold: f64, lo: f64, hi: f64) -> Outcome {
    let (all, none) = match op {
        Op::Lt => (hi < threshold, lo >= threshold),
        Op::Le => (hi <= threshold, lo > threshold),
        Op::Gt => (lo > threshold, hi <= threshold),
        Op::Ge => (lo >= threshold, hi < threshold),
    };
    if all {
        Outcome::Holds
    } else if none {
        Outcome::DoesNotHold
    } else {
        Outcome::Undecided
    }
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
    /// Interval checks whose interval straddles the threshold (counted in `total`, not
    /// in `passed`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undecided: usize,
    pub checks: Vec<CheckResult>,
    /// For a claim on several pretrained models: the verdict of each model's checks
    /// alone, in the claim's model order (checks of no model are left out of these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_model: Vec<ModelVerdict>,
}

/// The verdict of one pretrained model's checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVerdict {
    pub model: String,
    pub verdict: Verdict,
    pub passed: usize,
    pub total: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Judges every check of `claim` that applies at `scale`. A metric that is missing or
/// non-finite makes its check "does not hold", with a note saying why. An interval
/// check (`interval = true`) judges `<metric>.ci95_lo ..= <metric>.ci95_hi`.
pub fn evaluate(claim: &Claim, scale: Scale, metrics: &Metrics) -> Verdicts {
    // A point check's notes keep their old wording (verdicts.json bytes); an interval
    // bound's note names the bound.
    let finite = |name: &str, bound: bool| -> Result<f64, String> {
        match metrics.get(name) {
            Some(Some(v)) if v.is_finite() => Ok(*v),
            None if bound => Err(format!("metric `{name}` not recorded by the run")),
            None => Err("metric not recorded by the run".into()),
            _ if bound => Err(format!("`{name}` is not finite (NaN or infinite)")),
            _ => Err("value is not finite (NaN or infinite)".into()),
        }
    };
    let checks: Vec<CheckResult> = claim
        .checks_at(scale)
        .map(|c| {
            let value = finite(&c.metric, false);
            let (outcome, interval, note) = if c.interval {
                let lo = finite(&format!("{}.ci95_lo", c.metric), true);
                let hi = finite(&format!("{}.ci95_hi", c.metric), true);
                match (value.clone(), lo, hi) {
                    (Ok(_), Ok(lo), Ok(hi)) => (
                        judge_interval(c.op, c.threshold, lo, hi),
                        Some([lo, hi]),
                        None,
                    ),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        (Outcome::DoesNotHold, None, Some(e))
                    }
                }
            } else {
                match &value {
                    Ok(v) if c.op.holds(*v, c.threshold) => (Outcome::Holds, None, None),
                    Ok(_) => (Outcome::DoesNotHold, None, None),
                    Err(e) => (Outcome::DoesNotHold, None, Some(e.clone())),
                }
            };
            CheckResult {
                id: c.id.clone(),
                metric: c.metric.clone(),
                op: c.op,
                threshold: c.threshold,
                value: value.ok(),
                holds: outcome == Outcome::Holds,
                outcome: c.interval.then_some(outcome),
                interval,
                description: c.description.clone(),
                note,
                model: c.model.clone(),
            }
        })
        .collect();
    let passed = checks.iter().filter(|c| c.holds).count();
    let undecided = checks
        .iter()
        .filter(|c| c.outcome() == Outcome::Undecided)
        .count();
    let by_model = claim
        .models
        .iter()
        .filter_map(|m| {
            let mine: Vec<&CheckResult> = checks
                .iter()
                .filter(|c| c.model.as_deref() == Some(m.as_str()))
                .collect();
            let passed = mine.iter().filter(|c| c.holds).count();
            (!mine.is_empty()).then(|| ModelVerdict {
                model: m.clone(),
                verdict: Verdict::from_counts(passed, mine.len()),
                passed,
                total: mine.len(),
            })
        })
        .collect();
    Verdicts {
        id: claim.id.clone(),
        claim_version: claim.version,
        scale,
        verdict: Verdict::from_counts(passed, checks.len()),
        passed,
        total: checks.len(),
        undecided,
        checks,
        by_model,
    }
}
