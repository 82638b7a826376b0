//! Support for the replication crates' own tests: the "run smoke twice, compare bytes,
//! read the metrics" block every one of them needs. Test-only by intent (it panics with
//! the reason instead of returning errors), but compiled normally so that other crates'
//! tests can use it.

use crate::{
    compare_checksums, read_metrics, read_verdicts, run_dir, run_replications, Metrics, Registry,
    Replication, RunOptions, RunStatus, RunSummary, Scale, Verdicts,
};
use std::path::{Path, PathBuf};

/// One replication's smoke run, as the first of two identical runs left it.
#[derive(Debug)]
pub struct SmokeRun {
    /// The run folder (`<a>/smoke/<id>`).
    pub dir: PathBuf,
    pub metrics: Metrics,
    pub verdicts: Verdicts,
    pub summary: RunSummary,
}

/// The run options the tests use: smoke scale, seed 0, CPU, no git state in the
/// manifest (so two runs of one tree are comparable byte for byte).
pub fn smoke_options(out: &Path) -> RunOptions {
    RunOptions {
        scale: Scale::Smoke,
        seed: 0,
        out: out.to_path_buf(),
        device_name: "cpu".into(),
        env: serde_json::json!({"git_rev": null, "git_dirty": null}),
        progress: false,
        jobs: 1,
    }
}

/// Runs `rep` at smoke scale into `a` with one job and then into `b` with two parallel
/// jobs, and asserts that both runs finished, wrote byte-identical artifacts (so results
/// do not depend on how many runs train at once), recorded a finite value for every
/// metric a check judged at smoke scale names, and recorded every metric that a check
/// at any scale or a `[tolerance.metrics]` key names (see [`unrecorded_names`]).
/// Returns the first run. The caller pins the libtorch thread count first (results are
/// bit-identical only for a fixed count).
pub fn smoke_twice(rep: Box<dyn Replication>, a: &Path, b: &Path) -> SmokeRun {
    let id = rep.claim().id.clone();
    let reg = Registry::new(vec![rep]).expect("registry");
    let ids = [id.clone()];
    let mut summaries: Vec<RunSummary> = [a, b]
        .iter()
        .zip([1, 2])
        .map(|(out, jobs)| {
            let opts = RunOptions {
                jobs,
                ..smoke_options(out)
            };
            let mut s = run_replications(&reg, &ids, &opts).expect("smoke run");
            let s = s.remove(0);
            assert!(
                matches!(s.status, RunStatus::Finished { .. }),
                "{id}: {:?}",
                s.status
            );
            s
        })
        .collect();
    let cmp = compare_checksums(a, b).expect("compare checksums");
    assert!(cmp.identical(), "{id}: two smoke runs differ:\n{cmp}");
    let dir = run_dir(a, Scale::Smoke, &id);
    let metrics = read_metrics(&dir).expect("metrics.json");
    let verdicts = read_verdicts(&dir).expect("verdicts.json");
    let claim = reg.get(&id).expect("registered").claim();
    let judged: Vec<_> = claim.checks_at(Scale::Smoke).collect();
    assert_eq!(verdicts.total, judged.len(), "{id}: verdict count");
    for c in judged {
        let v = metrics.get(&c.metric).copied();
        // The primary model (and a check of no model) must measure every check. Another
        // model may lack the quantity (no layer before the sink, say): recorded as NaN,
        // the check does not hold, with a note.
        let primary = c
            .model
            .as_ref()
            .is_none_or(|m| crate::claim::is_primary_model(&claim.models, m));
        assert!(
            if primary {
                v.flatten().is_some_and(f64::is_finite)
            } else {
                v.is_some()
            },
            "{id}: check {} names metric {} which is missing{}: {v:?}",
            c.id,
            c.metric,
            if primary { " or not finite" } else { "" }
        );
    }
    let unrecorded = unrecorded_names(claim, &metrics);
    assert!(
        unrecorded.is_empty(),
        "{id}: the claim file names metrics the smoke run does not record (a typo, or a \
         metric the code no longer writes): {unrecorded:?}"
    );
    SmokeRun {
        dir,
        metrics,
        verdicts,
        summary: summaries.remove(0),
    }
}

/// The metric names in `claim` (every check's metric, at every scale, and every
/// `[tolerance.metrics]` key) that `recorded`, a smoke run's metrics, does not account
/// for. A name is accounted for when the smoke run recorded it, or recorded a name that
/// differs from it only in its numbers ([`number_pattern`]): which layers, seeds or
/// first-n choices exist is what the scale decides (`amp_layers.l0_1_2.*` at cpu scale,
/// `amp_layers.l0_1.*` at smoke), while the words of a name do not depend on it.
pub fn unrecorded_names(claim: &crate::Claim, recorded: &Metrics) -> Vec<String> {
    let patterns: std::collections::BTreeSet<String> =
        recorded.keys().map(|k| number_pattern(k)).collect();
    claim
        .checks
        .iter()
        .map(|c| &c.metric)
        .chain(claim.tolerance.metrics.keys())
        .filter(|name| !recorded.contains_key(*name) && !patterns.contains(&number_pattern(name)))
        .cloned()
        .collect()
}

/// `name` with every run of digits, and every list of them joined by `_` or `,`,
/// replaced by `#`: `amp_layers.l0_1_2.tau` and `amp_layers.l3.tau` both become
/// `amp_layers.l#.tau`, `mask_self_first12.sink_k.min` becomes `mask_self_first#.sink_k.min`.
pub fn number_pattern(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        out.push('#');
        loop {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            // A separator continues the list only when a digit follows it.
            let mut ahead = chars.clone();
            match (ahead.next(), ahead.next()) {
                (Some('_' | ','), Some(d)) if d.is_ascii_digit() => {
                    chars.next();
                }
                _ => break,
            }
        }
    }
    out
}

/// Whether every pinned input in `ids` is fetched; prints a "skipped" line naming the
/// missing ones when not (tests return early on false: real-input tests are skipped,
/// not failed, on a machine without the inputs).
pub fn inputs_present(ids: &[&str]) -> bool {
    let missing: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| sinkrep_inputs::present(id).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: pinned input(s) {} not fetched (run `just fetch`)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

#[cfg(test)]
mod tests {
    use super::{number_pattern, unrecorded_names};
    use crate::{Claim, Metrics};

    /// A check judged only at cpu scale and tolerance keys for layer lists the smoke run
    /// does not have are accounted for by their number patterns; a misspelt name is not.
    #[test]
    fn claim_names_are_checked_against_the_smoke_metrics() {
        let claim = Claim::parse(
            r#"
id = "x"
version = 1
title = "t"
claim = "c"
statement = "s"
scales = ["smoke", "cpu"]
[[check]]
id = "a"
metric = "amp.l0_1.tau"
op = ">"
threshold = 0.0
description = "d"
scales = ["cpu"]
[[check]]
id = "b"
metric = "paired.loss.final"
op = "<"
threshold = 0.0
description = "d"
[tolerance]
default_abs = 0.0
default_rel = 0.0
[tolerance.metrics]
"amp.l0_1_2.tau" = { abs = 0.1 }
"paired.los.final" = { abs = 0.1 }
[[changelog]]
version = 1
date = "2026-12-02"
change = "first"
"#,
            "x/claim.toml",
        )
        .unwrap();
        let recorded: Metrics = [("amp.l3.tau", Some(0.5)), ("paired.loss.final", None)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(unrecorded_names(&claim, &recorded), ["paired.los.final"]);
    }

    #[test]
    fn number_pattern_folds_numbers_and_number_lists() {
        assert_eq!(number_pattern("amp_layers.l0_1_2.tau"), "amp_layers.l#.tau");
        assert_eq!(number_pattern("amp_layers.l3.tau"), "amp_layers.l#.tau");
        assert_eq!(
            number_pattern("mask_self_first12.sink_k.min"),
            "mask_self_first#.sink_k.min"
        );
        assert_eq!(number_pattern("x.seed17"), "x.seed#");
        // Words keep their separators: only digits and the separators between them fold.
        assert_eq!(
            number_pattern("paired.val_loss.early.headwise_minus_baseline"),
            "paired.val_loss.early.headwise_minus_baseline"
        );
        assert_eq!(number_pattern("l2_norm"), "l#_norm");
    }
}
