//! arbitrary-sinks end to end at smoke scale on the pinned model: reproducible bytes,
//! the promised metrics, the protocol's invariants, figures from the CSVs alone.

use sinkrep_arbitrary_sinks::metrics::compute;
use sinkrep_arbitrary_sinks::plan::{Plan, SEQ_LEN};
use sinkrep_arbitrary_sinks::replication;
use sinkrep_runner::testing::{inputs_present, smoke_twice};
use sinkrep_runner::{model_dir, model_metric, CsvTable, FigureStyle, Scale};
use sinkrep_subjects::Subject;

/// The metric names a scale's plan records for every pinned model of the claim
/// (computed on no cells: every value NaN), the primary's plain, another's prefixed.
fn metric_names(scale: Scale) -> Vec<String> {
    let models = sinkrep_arbitrary_sinks::claim().unwrap().models;
    let names: Vec<String> = compute(&[], &[], &Plan::at(scale).unwrap())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    models
        .iter()
        .flat_map(|m| names.iter().map(|n| model_metric(&models, m, n)))
        .collect()
}

/// A tolerance for a metric no scale records is a typo.
#[test]
fn claim_tolerances_name_recorded_metrics() {
    let rep = replication().expect("claim parses");
    let all: Vec<String> = Scale::ALL.into_iter().flat_map(metric_names).collect();
    for name in rep.claim().tolerance.metrics.keys() {
        assert!(all.contains(name), "tolerance names unknown metric {name}");
    }
    for c in &rep.claim().checks {
        assert!(
            all.contains(&c.metric),
            "check names unknown metric {}",
            c.metric
        );
    }
}

/// Guards the cpu-scale budget (~5 min on 2 cores): the grid is counted in sequence
/// forwards, ~0.2 s each on this machine.
#[test]
fn cpu_plan_fits_the_budget_and_every_scale_keeps_the_protocol() {
    let cpu = Plan::at(Scale::Cpu).unwrap();
    let forwards: usize = cpu.specs().len() * cpu.n_seqs;
    assert!(
        forwards <= 1100,
        "cpu grid has {forwards} sequence forwards"
    );
    for scale in Scale::ALL {
        let p = Plan::at(scale).unwrap();
        assert_eq!(p.seq_len, SEQ_LEN);
        assert!(p.positions.iter().all(|&k| k > 0 && k < p.last_pos()));
        assert!(p
            .secondary_positions
            .iter()
            .all(|k| p.positions.contains(k)));
        assert!(p.secondary_lambdas.iter().all(|l| p.lambdas.contains(l)));
        assert_eq!(
            p.secondary_lambdas.iter().copied().fold(f64::NAN, f64::max),
            p.max_lambda(),
            "secondary sweeps must reach the largest lambda"
        );
    }
}

#[test]
fn smoke_run_is_reproducible_and_keeps_its_invariants() {
    if !inputs_present(&["smollm2-135m-instruct", "gemma3-270m"]) {
        return;
    }
    // One intra-op thread: on the 2 shared cores libtorch's worker threads spin when
    // other processes hold a core, which made this test 10x slower. Both runs below use
    // the same setting, so the byte comparison is unaffected.
    tch::set_num_threads(1);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = smoke_twice(replication().expect("claim parses"), a.path(), b.path());
    let (rd, metrics) = (&run.dir, &run.metrics);
    // Five checks, each judged on both pinned models.
    let models = sinkrep_arbitrary_sinks::claim().unwrap().models;
    assert_eq!(models.len(), 2);
    assert_eq!(run.verdicts.total, 5 * models.len());
    assert_eq!(run.verdicts.by_model.len(), models.len());
    // The smoke run records exactly the names its plan promises.
    let mut promised: Vec<String> = metric_names(Scale::Smoke);
    // The from-scratch metrics are seed families (mean, spread, interval, each seed).
    let seeds = 0..sinkrep_subjects::SCRATCH_SEEDS as u64;
    let subjects = [Subject::Corpus, Subject::Synthetic];
    for base in subjects
        .into_iter()
        .flat_map(sinkrep_arbitrary_sinks::scratch::metric_names)
    {
        for part in ["", ".sd", ".ci95_lo", ".ci95_hi", ".n"] {
            promised.push(format!("{base}{part}"));
        }
        promised.extend(seeds.clone().map(|s| format!("{base}.seed{s}")));
    }
    let recorded: Vec<&String> = metrics.keys().collect();
    assert_eq!(recorded.len(), promised.len());
    assert!(promised.iter().all(|p| metrics.contains_key(p)));
    for name in [
        "mask_self.peak_max_abs_k.mean",
        "mask_self_first2.persistence",
        "mask_self.attn_mass_k_plus_0.mean",
        "mask_self.attn_mass_k.mean",
        "amp_modes.random_direction.sink_k_at_max_lambda.mean",
        "amp_modes.centered_batch.sink_k_at_max_lambda.mean",
        "amp_modes.centered_channels.sink_k_at_max_lambda.mean",
        "last_pos.centered_positions.peak_max_abs_at_max_lambda.mean",
        "last_pos.plain.alpha_at_max_lambda.mean",
    ] {
        assert!(
            metrics
                .get(name)
                .is_some_and(|v| v.is_some_and(f64::is_finite)),
            "{name} missing or not finite"
        );
    }

    // The protocol's invariants hold on every model's tables.
    for m in &models {
        let dir = model_dir(&models, m, rd);
        // Mask-to-self at k in every layer: A[k, k] = 1, so alpha_k (mean over queries
        // i >= k) is at least 1 / (T - k) in every layer and head.
        let alpha = CsvTable::read(&dir.join("alpha_per_head.csv")).unwrap();
        let (g, k, p, v) = (
            alpha.column("group").unwrap(),
            alpha.column_f64("k").unwrap(),
            alpha.column_f64("report_pos").unwrap(),
            alpha.column_f64("alpha").unwrap(),
        );
        let mut masked = 0;
        for i in 0..g.len() {
            if g[i] == "mask-all" && p[i] == k[i] {
                masked += 1;
                let floor = 1.0 / (SEQ_LEN as f64 - k[i]);
                assert!(v[i] >= floor - 1e-6, "alpha {} < {floor} at row {i}", v[i]);
            }
        }
        assert!(masked > 0, "no mask-to-self rows");

        // The last position receives attention only from itself: its attention mass is
        // undefined (NaN), and amplifying it changes its own state.
        let cells = CsvTable::read(&dir.join("cells.csv")).unwrap();
        let (rp, mass) = (
            cells.column_f64("report_pos").unwrap(),
            cells.column_f64("attn_mass").unwrap(),
        );
        for i in 0..rp.len() {
            assert_eq!(
                rp[i] == (SEQ_LEN - 1) as f64,
                mass[i].is_nan(),
                "row {i}: attention mass {} at position {}",
                mass[i],
                rp[i]
            );
        }
    }
    let base = metrics["last_pos.baseline.peak_max_abs.mean"].unwrap();
    let amped = metrics["last_pos.centered_positions.peak_max_abs_at_max_lambda.mean"].unwrap();
    assert!(base != amped, "amplifying T-1 left its state unchanged");

    // Figures come from the CSVs alone.
    let figs = tempfile::tempdir().unwrap();
    let files = replication()
        .unwrap()
        .figures(rd, figs.path(), &FigureStyle::svg_only())
        .expect("figures");
    assert!(files.len() >= 9, "{files:?}");
    for f in &files {
        assert!(
            f.is_file() && std::fs::metadata(f).unwrap().len() > 0,
            "{f:?}"
        );
    }
}
