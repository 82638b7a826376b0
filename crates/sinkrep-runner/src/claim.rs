//! Claim files (`claim.toml`): what a replication asserts, how it is judged, and how much
//! its numbers may drift. Parsed strictly (unknown fields are errors) and validated with
//! errors that name the file and the field.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A claim file that cannot be read, parsed or validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {msg}")]
pub struct ClaimError {
    /// Where the text came from (a path, or the crate-relative name of an embedded file).
    pub origin: String,
    pub msg: String,
}

/// How big a run is: `smoke` (seconds, CI), `cpu` (minutes on a laptop), `gpu` (full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    Smoke,
    Cpu,
    Gpu,
}

impl Scale {
    pub const ALL: [Scale; 3] = [Scale::Smoke, Scale::Cpu, Scale::Gpu];

    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Smoke => "smoke",
            Scale::Cpu => "cpu",
            Scale::Gpu => "gpu",
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scale::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| format!("unknown scale `{s}` (expected smoke, cpu or gpu)"))
    }
}

/// Direction of a check: the measured value must be `op` the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// Whether `value op threshold`. NaN never holds (every comparison with NaN is false).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            ">" => Ok(Op::Gt),
            ">=" => Ok(Op::Ge),
            "<" => Ok(Op::Lt),
            "<=" => Ok(Op::Le),
            _ => Err(format!("`{s}` is not one of `>`, `>=`, `<`, `<=`")),
        }
    }
}

/// One pass/fail test derived from the paper's statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub id: String,
    pub metric: String,
    pub op: Op,
    pub threshold: f64,
    pub description: String,
    /// Scales at which this check is judged; empty means every scale of the claim.
    pub scales: Vec<Scale>,
    /// Judge the 95% interval `<metric>.ci95_lo ..= <metric>.ci95_hi` (recorded by
    /// `RunContext::metric_samples`) instead of the point value: the check holds when
    /// the whole interval is on the threshold's side, does not hold when the whole
    /// interval is on the other side, and is *undecided* when it straddles.
    pub interval: bool,
    /// The pretrained model this check judges, for a check written once with
    /// `per_model = true` and expanded to every model of the claim's `models` (see
    /// [`Claim::parse`]); `None` for a check of no particular model.
    pub model: Option<String>,
}

impl Check {
    pub fn applies_at(&self, scale: Scale) -> bool {
        self.scales.is_empty() || self.scales.contains(&scale)
    }
}

/// Tolerance of one metric: `|now - baseline| <= max(abs, rel * |baseline|)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
    /// Where `abs` came from (printed by `sinkrep verify`).
    pub rule: TolRule,
}

/// The rule a tolerance came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum TolRule {
    /// The claim file's `default_abs` / `default_rel`.
    Default,
    /// The claim file's `[tolerance.metrics]` entry for this metric.
    Override,
    /// `seed_spread_k` times the standard error of the difference between the two seed
    /// means (baseline and now; `sd` is the larger of the two sides' sd).
    SeedSpread { k: f64, sd: f64, n: f64 },
    /// A part of a seed family that is shown but not judged: one seed's value, the sd,
    /// the count of seeds that never reached a target, or an aggregate that is `null`
    /// because some (not all) of its seeds are (see [`Tolerance::for_metric_in`]).
    NotGated(&'static str),
    /// A seed mean whose share of finite seeds moved beyond `k` standard errors of the
    /// difference (e.g. most seeds stopped reaching a target): a drift whatever the values.
    FiniteSeeds { k: f64, baseline: f64, now: f64 },
}

impl fmt::Display for TolRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TolRule::Default => f.write_str("claim default"),
            TolRule::Override => f.write_str("claim override"),
            TolRule::SeedSpread { k, sd, n } => {
                write!(
                    f,
                    "seed spread {k}xSE (sd {}, n {n})",
                    crate::table::fmt_num(*sd, 3)
                )
            }
            TolRule::NotGated(why) => write!(f, "not gated: {why}"),
            TolRule::FiniteSeeds { k, baseline, now } => write!(
                f,
                "finite seeds {}% -> {}% (beyond {k}xSE)",
                crate::table::fmt_num(100.0 * baseline, 3),
                crate::table::fmt_num(100.0 * now, 3)
            ),
        }
    }
}

impl Tol {
    /// Whether the metric is judged at all (a seed family's per-seed values, sd and
    /// unreached counts are not).
    pub fn gated(&self) -> bool {
        !matches!(self.rule, TolRule::NotGated(_))
    }

    /// Whether the metric drifted whatever its two values (a seed mean whose share of
    /// finite seeds moved too far, [`TolRule::FiniteSeeds`]).
    pub fn drifted_regardless(&self) -> bool {
        matches!(self.rule, TolRule::FiniteSeeds { .. })
    }

    /// Whether `now` is within tolerance of `baseline` (both finite).
    pub fn within(&self, baseline: f64, now: f64) -> bool {
        let diff = (now - baseline).abs();
        diff <= self.abs || diff <= self.rel * baseline.abs()
    }
}

impl fmt::Display for Tol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "abs {} / rel {}", self.abs, self.rel)
    }
}

/// Per-metric override; a field left out falls back to the claim's default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricTolerance {
    pub abs: Option<f64>,
    pub rel: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub default_abs: f64,
    pub default_rel: f64,
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricTolerance>,
    /// Metrics of models trained from scratch: a seed mean may move by this many standard
    /// errors of the difference between the baseline's and the run's seed means (see
    /// [`Tolerance::for_metric_in`]). Absent: every metric uses the static tolerances.
    #[serde(default)]
    pub seed_spread_k: Option<f64>,
    /// The claim's non-primary models (set by [`Claim::parse`]): an override of metric
    /// `<name>` also covers their copies `m.<name>`.
    #[serde(skip)]
    pub other_models: Vec<String>,
}

/// The metric family a name belongs to when it was recorded by
/// `RunContext::metric_samples`: `(base, part)` with part one of `mean`, `sd`,
/// `ci95_lo`, `ci95_hi`, `n` or `seed`, or `unreached` (the count of its seeds that never
/// reached a target, which some replications record beside the family).
pub fn sample_family(name: &str) -> (&str, &'static str) {
    if let Some((base, last)) = name.rsplit_once('.') {
        let part = match last {
            "sd" => Some("sd"),
            "ci95_lo" => Some("ci95_lo"),
            "ci95_hi" => Some("ci95_hi"),
            "n" => Some("n"),
            "unreached" => Some("unreached"),
            s if s.len() > 4
                && s.starts_with("seed")
                && s[4..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some("seed")
            }
            _ => None,
        };
        if let Some(part) = part {
            return (base, part);
        }
    }
    (name, "mean")
}

impl Tolerance {
    /// The static tolerance of a metric: its override in the claim file, else the
    /// claim's defaults.
    pub fn for_metric(&self, metric: &str) -> Tol {
        let o = self.metrics.get(metric).or_else(|| {
            self.other_models
                .iter()
                .find_map(|m| metric.strip_prefix(m.as_str())?.strip_prefix('.'))
                .and_then(|name| self.metrics.get(name))
        });
        Tol {
            abs: o.and_then(|o| o.abs).unwrap_or(self.default_abs),
            rel: o.and_then(|o| o.rel).unwrap_or(self.default_rel),
            rule: if o.is_some() {
                TolRule::Override
            } else {
                TolRule::Default
            },
        }
    }

    /// The tolerance of `metric` given the baseline's metrics and the run's (`now`).
    ///
    /// With `seed_spread_k = k`, a metric of a seed family (recorded over seeds, so one of
    /// the two sides has `<base>.n`) is judged as a comparison of two sets of seeds. A
    /// model trained from scratch amplifies last-bit differences (another CPU, another
    /// libtorch) into another run of the same seed, sometimes into another outcome (a sink
    /// that forms or not), so another machine redraws every seed: only the seed mean and
    /// its interval are results. Hence:
    /// - mean: k times the standard error of the difference of the two means,
    ///   sqrt(sd_b^2/n_b + sd_now^2/n_now) (sd_now taken as sd_b when the run has none);
    ///   and, where some seeds are `null` (never reached a target), the share of finite
    ///   seeds may move by k standard errors of the difference of two proportions, else
    ///   the mean drifts whatever its values (so 10 of 10 seeds reaching a target and 1
    ///   of 10, or none and most, are a drift even when both means are `null`);
    /// - `ci95_lo`/`ci95_hi`: that times (1 + t/sqrt(2(n-1))), the half-width's own
    ///   sampling error on top;
    /// - one seed's value, `sd` and `unreached`: shown, not gated (a per-seed or spread
    ///   tolerance that a redraw always passes would only pretend to check);
    /// - an aggregate that is `null` on one side while that side has both finite and
    ///   `null` seeds (some seeds never reached a target): shown, not gated (its share
    ///   of finite seeds is judged on the mean's row, above); with every seed `null`, or
    ///   none, it is a drift like any other;
    /// - `n`: exact.
    ///
    /// Metrics without a seed family keep their static tolerance.
    pub fn for_metric_in(
        &self,
        metric: &str,
        baseline: &crate::verdict::Metrics,
        now: &crate::verdict::Metrics,
    ) -> Tol {
        let stat = self.for_metric(metric);
        let Some(k) = self.seed_spread_k else {
            return stat;
        };
        let (base, part) = sample_family(metric);
        let n_key = format!("{base}.n");
        if part == "n" || !(baseline.contains_key(&n_key) || now.contains_key(&n_key)) {
            return stat;
        }
        let not_gated = |why| Tol {
            rule: TolRule::NotGated(why),
            ..stat
        };
        match part {
            "seed" => return not_gated("one seed's value (another machine redraws the run)"),
            "sd" => return not_gated("the spread over seeds"),
            "unreached" => return not_gated("a count over seeds"),
            _ => {}
        }
        let finite = |m: &crate::verdict::Metrics, suffix: &str| {
            m.get(&format!("{base}.{suffix}"))
                .copied()
                .flatten()
                .filter(|v| v.is_finite())
        };
        let is_null = |m: &crate::verdict::Metrics| matches!(m.get(metric), Some(None));
        // (finite seeds, seeds) of the family on one side.
        let seeds = |m: &crate::verdict::Metrics| {
            let prefix = format!("{base}.");
            m.range(prefix.clone()..)
                .take_while(|(name, _)| name.starts_with(&prefix))
                .filter(|(name, _)| {
                    !name[prefix.len()..].contains('.') && sample_family(name).1 == "seed"
                })
                .fold((0usize, 0usize), |(f, n), (_, v)| {
                    (f + usize::from(v.is_some_and(f64::is_finite)), n + 1)
                })
        };
        let (sb, sn) = (seeds(baseline), seeds(now));
        if part == "mean" && sb.1 >= 2 && sn.1 >= 2 && (sb.0 < sb.1 || sn.0 < sn.1) {
            // The share of seeds that reached a finite value, judged like a seed mean of
            // 0/1 indicators (sample variance p(1-p) n/(n-1)).
            let share = |(f, n): (usize, usize)| {
                let (f, n) = (f as f64, n as f64);
                let p = f / n;
                (p, p * (1.0 - p) / (n - 1.0))
            };
            let ((pb, vb), (pn, vn)) = (share(sb), share(sn));
            let vn = if vn > 0.0 { vn } else { vb };
            if (pn - pb).abs() > k * (vb + vn).sqrt() + 1e-12 {
                return Tol {
                    rule: TolRule::FiniteSeeds {
                        k,
                        baseline: pb,
                        now: pn,
                    },
                    ..stat
                };
            }
        }
        let mixed = |(f, n): (usize, usize)| f > 0 && f < n;
        if (is_null(baseline) && mixed(sb)) || (is_null(now) && mixed(sn)) {
            return not_gated("null because some of its seeds are");
        }
        let (Some(sd_b), Some(n_b)) = (finite(baseline, "sd"), finite(baseline, "n")) else {
            return stat;
        };
        if n_b < 2.0 {
            return stat;
        }
        let sd_now = finite(now, "sd");
        let var_now = match (sd_now, finite(now, "n")) {
            (Some(sd), Some(n)) if n >= 2.0 => sd * sd / n,
            _ => sd_b * sd_b / n_b,
        };
        let se = (sd_b * sd_b / n_b + var_now).sqrt();
        let t = sinkrep_stats::t975(n_b as usize);
        let spread = k * match part {
            "ci95_lo" | "ci95_hi" => se * (1.0 + t / (2.0 * (n_b - 1.0)).sqrt()),
            _ => se,
        };
        if spread <= stat.abs {
            return stat;
        }
        let sd = sd_now.map_or(sd_b, |s| s.max(sd_b));
        Tol {
            abs: spread,
            rel: stat.rel,
            rule: TolRule::SeedSpread { k, sd, n: n_b },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogEntry {
    pub version: u32,
    pub date: String,
    pub change: String,
}

/// A validated claim file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claim {
    pub id: String,
    pub version: u32,
    pub title: String,
    /// One line, for `sinkrep list`.
    pub claim: String,
    /// The paper's statement, as the paper makes it.
    pub statement: String,
    pub scales: Vec<Scale>,
    /// The pinned pretrained models the claim's model sections run on, primary first
    /// (`smollm2-135m`, `gemma3-270m`; empty for a claim on no pretrained model). The
    /// primary model's metrics keep their plain names; another model `m`'s are named
    /// `m.<name>` (see [`model_metric`]).
    pub models: Vec<String>,
    pub checks: Vec<Check>,
    pub tolerance: Tolerance,
    pub changelog: Vec<ChangelogEntry>,
    /// Per-scale protocol sizes (`[scale.cpu]` tables), read by the replication into
    /// its own sizes struct with [`Claim::scale_params`]: the numbers that decide the
    /// results live in the claim file, under its version and changelog.
    pub scale_params: BTreeMap<String, toml::Table>,
    /// Where the claim was read from (for error messages).
    #[serde(skip)]
    pub origin: String,
}

// The on-disk form, before validation: strings where we want our own error messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaim {
    id: String,
    version: i64,
    title: String,
    claim: String,
    statement: String,
    scales: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    check: Vec<RawCheck>,
    tolerance: Tolerance,
    #[serde(default)]
    changelog: Vec<ChangelogEntry>,
    #[serde(default)]
    scale: BTreeMap<String, toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    id: String,
    metric: String,
    op: String,
    threshold: f64,
    description: String,
    #[serde(default)]
    scales: Vec<String>,
    #[serde(default)]
    interval: bool,
    #[serde(default)]
    per_model: bool,
}

/// Whether `model` is the primary (first) model of a claim's `models`, whose metrics,
/// checks and artifacts keep their plain names.
pub fn is_primary_model(models: &[String], model: &str) -> bool {
    models.first().is_some_and(|m| m == model)
}

/// The name model `model` records metric `name` under: the plain name for the primary
/// model, else `<model>.<name>`.
pub fn model_metric(models: &[String], model: &str, name: &str) -> String {
    if is_primary_model(models, model) {
        name.to_string()
    } else {
        format!("{model}.{name}")
    }
}

/// The id of a `per_model` check `id` judged on `model`: `id` for the primary model,
/// else `<id>-<model>`.
pub fn model_check_id(models: &[String], model: &str, id: &str) -> String {
    if is_primary_model(models, model) {
        id.to_string()
    } else {
        format!("{id}-{model}")
    }
}

/// The folder under `dir` (a run folder, or a figure folder) that holds model `model`'s
/// tables or figures: `dir` itself for the primary (first) model of `models`, else
/// `dir/<model>`, where [`crate::RunContext::for_model`] puts its artifacts.
pub fn model_dir(models: &[String], model: &str, dir: &std::path::Path) -> std::path::PathBuf {
    if is_primary_model(models, model) {
        dir.to_path_buf()
    } else {
        dir.join(model)
    }
}

/// Replication ids become folder names: lowercase ASCII letters, digits, `-`, `_`.
pub fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

impl Claim {
    /// Parses and validates a claim file's text. `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Claim, ClaimError> {
        let err = |msg: String| ClaimError {
            origin: origin.to_string(),
            msg,
        };
        let raw: RawClaim = toml::from_str(text).map_err(|e| {
            // toml's message already names the field and shows the line.
            err(format!("invalid claim file: {}", e.to_string().trim_end()))
        })?;

        let scales = parse_scales(&raw.scales).map_err(|m| err(format!("field `scales`: {m}")))?;
        let mut checks = Vec::with_capacity(raw.check.len());
        for (i, c) in raw.check.into_iter().enumerate() {
            let at = format!("check[{i}] (id `{}`)", c.id);
            let op =
                c.op.parse::<Op>()
                    .map_err(|m| err(format!("field `{at}.op`: {m}")))?;
            let check_scales =
                parse_scales(&c.scales).map_err(|m| err(format!("field `{at}.scales`: {m}")))?;
            let check = Check {
                id: c.id,
                metric: c.metric,
                op,
                threshold: c.threshold,
                description: c.description,
                scales: check_scales,
                interval: c.interval,
                model: None,
            };
            if !c.per_model {
                checks.push(check);
                continue;
            }
            if raw.models.is_empty() {
                return Err(err(format!(
                    "field `{at}.per_model`: the claim lists no `models`"
                )));
            }
            // One check per model, with the same threshold: the primary model's keeps
            // its id and metric, another model's are suffixed / prefixed with its name.
            for (k, m) in raw.models.iter().enumerate() {
                let mut c = check.clone();
                c.model = Some(m.clone());
                if k > 0 {
                    c.id = model_check_id(&raw.models, m, &check.id);
                    c.metric = model_metric(&raw.models, m, &check.metric);
                    c.description = format!("{m}: {}", check.description);
                }
                checks.push(c);
            }
        }
        // A tolerance override of a metric applies to every model's copy.
        let mut tolerance = raw.tolerance;
        tolerance.other_models = raw.models.iter().skip(1).cloned().collect();
        let version = u32::try_from(raw.version).map_err(|_| {
            err(format!(
                "field `version`: {} is not a positive integer",
                raw.version
            ))
        })?;
        let claim = Claim {
            id: raw.id,
            version,
            title: raw.title,
            claim: raw.claim,
            statement: raw.statement,
            scales,
            models: raw.models,
            checks,
            tolerance,
            changelog: raw.changelog,
            scale_params: raw.scale,
            origin: origin.to_string(),
        };
        claim.validate()?;
        Ok(claim)
    }

    /// Reads and parses a claim file from disk.
    pub fn load(path: &Path) -> Result<Claim, ClaimError> {
        let text = std::fs::read_to_string(path).map_err(|e| ClaimError {
            origin: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Claim::parse(&text, &path.display().to_string())
    }

    /// Checks the rules a parsed claim must follow (the registry calls this again).
    pub fn validate(&self) -> Result<(), ClaimError> {
        let fail = |field: &str, msg: String| {
            Err(ClaimError {
                origin: self.origin.clone(),
                msg: format!("field `{field}`: {msg}"),
            })
        };
        if !is_valid_id(&self.id) {
            return fail(
                "id",
                format!(
                    "`{}` must be lowercase ASCII letters, digits, `-` or `_` (it names folders)",
                    self.id
                ),
            );
        }
        if self.version == 0 {
            return fail("version", "must be 1 or more".into());
        }
        for (field, value) in [
            ("title", &self.title),
            ("claim", &self.claim),
            ("statement", &self.statement),
        ] {
            if value.trim().is_empty() {
                return fail(field, "must not be empty".into());
            }
        }
        if self.claim.contains('\n') {
            return fail(
                "claim",
                "must be one line (the statement goes in `statement`)".into(),
            );
        }
        if self.scales.is_empty() {
            return fail("scales", "must list at least one of smoke, cpu, gpu".into());
        }
        if self.checks.is_empty() {
            return fail("check", "a claim needs at least one [[check]]".into());
        }
        let mut models = BTreeSet::new();
        for m in &self.models {
            if !is_valid_id(m) || !models.insert(m.as_str()) {
                return fail(
                    "models",
                    format!("`{m}` must be a unique model name of lowercase ASCII letters, digits, `-` or `_`"),
                );
            }
        }
        let mut ids = BTreeSet::new();
        for (i, c) in self.checks.iter().enumerate() {
            let at = format!("check[{i}] (id `{}`)", c.id);
            if !is_valid_id(&c.id) {
                return fail(
                    &format!("{at}.id"),
                    "must be lowercase ASCII letters, digits, `-` or `_`".into(),
                );
            }
            if !ids.insert(c.id.as_str()) {
                return fail(
                    &format!("{at}.id"),
                    format!("duplicate check id `{}`", c.id),
                );
            }
            if c.metric.trim().is_empty() || c.metric.chars().any(char::is_whitespace) {
                return fail(
                    &format!("{at}.metric"),
                    format!("`{}` must be a non-empty name without spaces", c.metric),
                );
            }
            if !c.threshold.is_finite() {
                return fail(&format!("{at}.threshold"), "must be a finite number".into());
            }
            if c.description.trim().is_empty() {
                return fail(&format!("{at}.description"), "must not be empty".into());
            }
            if let Some(s) = c.scales.iter().find(|s| !self.scales.contains(s)) {
                return fail(
                    &format!("{at}.scales"),
                    format!("`{s}` is not one of the claim's scales"),
                );
            }
        }
        let t = &self.tolerance;
        for (field, v) in [
            ("tolerance.default_abs".to_string(), Some(t.default_abs)),
            ("tolerance.default_rel".to_string(), Some(t.default_rel)),
        ]
        .into_iter()
        .chain(t.metrics.iter().flat_map(|(m, o)| {
            [
                (format!("tolerance.metrics.{m}.abs"), o.abs),
                (format!("tolerance.metrics.{m}.rel"), o.rel),
            ]
        })) {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return fail(&field, format!("{v} must be a finite number >= 0"));
                }
            }
        }
        if self.changelog.is_empty() {
            return fail(
                "changelog",
                "at least one [[changelog]] entry is required (version 1's)".into(),
            );
        }
        let mut versions = BTreeSet::new();
        for (i, e) in self.changelog.iter().enumerate() {
            if !versions.insert(e.version) {
                return fail(
                    &format!("changelog[{i}].version"),
                    format!("version {} appears twice", e.version),
                );
            }
            if !is_date(&e.date) {
                return fail(
                    &format!("changelog[{i}].date"),
                    format!("`{}` is not a YYYY-MM-DD date", e.date),
                );
            }
            if e.change.trim().is_empty() {
                return fail(
                    &format!("changelog[{i}].change"),
                    "must not be empty".into(),
                );
            }
        }
        if let Some(s) = self
            .scale_params
            .keys()
            .find(|s| !self.scales.iter().any(|c| c.as_str() == s.as_str()))
        {
            return fail(
                &format!("scale.{s}"),
                "is not one of the claim's scales".into(),
            );
        }
        if let Some(k) = self.tolerance.seed_spread_k {
            if !(k.is_finite() && k > 0.0) {
                return fail("tolerance.seed_spread_k", format!("{k} must be > 0"));
            }
        }
        let latest = versions.last().copied().unwrap_or(0);
        if latest != self.version {
            return fail(
                "version",
                format!(
                    "{} does not match the highest changelog version {latest}; \
                     a protocol change bumps `version` and adds a [[changelog]] line",
                    self.version
                ),
            );
        }
        Ok(())
    }

    /// The `[scale.<scale>]` table deserialised into `T` (unknown keys are errors when
    /// `T` denies them); an error names the claim file and the scale.
    pub fn scale_params<T: serde::de::DeserializeOwned>(
        &self,
        scale: Scale,
    ) -> Result<T, ClaimError> {
        let table = self
            .scale_params
            .get(scale.as_str())
            .ok_or_else(|| ClaimError {
                origin: self.origin.clone(),
                msg: format!("no [scale.{scale}] table of protocol sizes"),
            })?;
        toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ClaimError {
                origin: self.origin.clone(),
                msg: format!("[scale.{scale}]: {}", e.to_string().trim_end()),
            })
    }

    /// The checks judged at `scale`, in file order.
    pub fn checks_at(&self, scale: Scale) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(move |c| c.applies_at(scale))
    }

    pub fn supports(&self, scale: Scale) -> bool {
        self.scales.contains(&scale)
    }

    /// "smoke, cpu, gpu" (for tables and messages).
    pub fn scales_list(&self) -> String {
        self.scales
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn parse_scales(raw: &[String]) -> Result<Vec<Scale>, String> {
    let mut out = Vec::with_capacity(raw.len());
    for s in raw {
        let sc: Scale = s.parse()?;
        if out.contains(&sc) {
            return Err(format!("scale `{s}` listed twice"));
        }
        out.push(sc);
    }
    Ok(out)
}
