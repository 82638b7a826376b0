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
/// do not depend on how many runs train at once), and recorded a finite value for every
/// metric a check judged at smoke scale names. Returns the first run. The caller pins the
/// libtorch thread count first (results are bit-identical only for a fixed count).
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
        let v = metrics.get(&c.metric).copied().flatten();
        assert!(
            v.is_some_and(f64::is_finite),
            "{id}: check {} names metric {} which is missing or not finite: {v:?}",
            c.id,
            c.metric
        );
    }
    SmokeRun {
        dir,
        metrics,
        verdicts,
        summary: summaries.remove(0),
    }
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
