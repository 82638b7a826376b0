//! The variance-discrepancy replication: its statistics on known inputs, the theory
//! simulation, and a smoke run end to end (twice, byte-identical).

use std::path::PathBuf;

use sinkrep_runner::testing::{inputs_present, smoke_twice};
use sinkrep_runner::{CsvTable, FigureStyle, Scale};
use sinkrep_variance_discrepancy::stats::{loglog_slope, ranks, spearman, Profile};
use sinkrep_variance_discrepancy::theory::{simulate, Attention};
use sinkrep_variance_discrepancy::{replication, Sizes};

#[test]
fn profile_of_exact_uniform_theory_has_slope_minus_one() {
    let v: Vec<f64> = (0..64).map(|t| 1.0 / (t + 1) as f64).collect();
    let p = Profile::of(&v);
    assert!((p.slope + 1.0).abs() < 1e-12, "{p:?}");
    assert_eq!(p.spearman, -1.0);
    assert_eq!(p.kendall, -1.0);
    assert_eq!(p.first_over_max_rest, 2.0);
    // 1 / mean_{t=1..63} 1/(t+1)
    let rest: f64 = (1..64).map(|t| 1.0 / (t + 1) as f64).sum::<f64>() / 63.0;
    assert!((p.ratio_first - 1.0 / rest).abs() < 1e-12);
}

#[test]
fn profile_detects_a_flat_or_rising_profile() {
    let flat = Profile::of(&[1.0; 16]);
    assert_eq!(flat.ratio_first, 1.0);
    assert_eq!(flat.slope, 0.0);
    assert!(
        flat.spearman.is_nan(),
        "constant variance has no rank correlation"
    );
    let rising: Vec<f64> = (0..16).map(|t| (t + 1) as f64).collect();
    let p = Profile::of(&rising);
    assert!(p.first_over_max_rest < 1.0 && p.slope > 0.0 && p.spearman == 1.0);
    // Too short to fit a decay, or a zero variance: NaN, so a check cannot pass on it.
    assert!(Profile::of(&[1.0, 0.5]).slope.is_nan());
    assert!(loglog_slope(&[1.0, 0.5, 0.0, 0.2], 1).is_nan());
}

#[test]
fn ranks_average_ties_and_spearman_is_rank_pearson() {
    assert_eq!(ranks(&[3.0, 1.0, 2.0, 1.0]), vec![4.0, 1.5, 3.0, 1.5]);
    assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 100.0, 1000.0]), 1.0);
    assert!(spearman(&[1.0, 2.0], &[f64::NAN, 1.0]).is_nan());
}

/// Guards the theory check itself: uniform averaging gives 1/(t+1) to Monte Carlo error,
/// peaked softmax decays more slowly, and the result does not depend on thread count
/// (chunks are seeded and summed in order).
#[test]
fn theory_simulation_matches_one_over_t_plus_one_and_is_seeded() {
    let v = simulate(Attention::Uniform, 16, 4000, 8, 1);
    for (t, x) in v.iter().enumerate() {
        let rel = x * (t + 1) as f64 - 1.0;
        // 32000 samples: relative s.e. of a variance ~ sqrt(2/32000) = 0.8%.
        assert!(rel.abs() < 0.05, "t={t}: Var*(t+1) = {}", 1.0 + rel);
    }
    assert_eq!(v, simulate(Attention::Uniform, 16, 4000, 8, 1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let one_thread = pool.install(|| simulate(Attention::Uniform, 16, 4000, 8, 1));
    assert_eq!(v, one_thread);
    assert_ne!(v, simulate(Attention::Uniform, 16, 4000, 8, 2));
    let peaked = Profile::of(&simulate(Attention::Softmax { scale: 2.0 }, 16, 4000, 8, 1));
    let uniform = Profile::of(&v);
    assert!(
        peaked.slope < 0.0 && peaked.slope > uniform.slope,
        "{peaked:?}"
    );
}

/// The metrics every check reads, plus the ones the README reports.
const PROMISED: &[&str] = &[
    "theory.uniform.slope",
    "theory.uniform.ratio_first",
    "theory.uniform.max_rel_dev",
    "theory.softmax_s0.5.slope",
    "theory.softmax_s1.slope",
    "theory.softmax_s2.slope",
    "random.l0.ratio_first",
    "random.l0.first_over_max_rest",
    "random.l0.slope",
    "random.l0.spearman",
    "random.l0.out_first_over_max_rest",
    "random.l1.ratio_first",
    "random.pre_sink.min_ratio_first",
    "random.tau_wo.mean",
    "random.layers_ratio_gt1",
    "natural.l0.first_over_max_rest",
    "natural.l0.spearman",
    "natural.tau_wo.mean",
    "init.l0.first_over_max_rest",
    "init.l0.first_over_max_rest.min",
    "init.l0.slope.max",
    "init.tau_wo.mean",
];

#[test]
fn smoke_run_is_reproducible_and_complete() {
    if !inputs_present(&["smollm2-135m-instruct", "gemma3-270m", "shakespeare"]) {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = smoke_twice(replication().expect("claim parses"), a.path(), b.path());
    let (rd, metrics) = (&run.dir, &run.metrics);
    for name in PROMISED {
        let v = metrics.get(*name).copied().flatten();
        assert!(
            v.is_some_and(f64::is_finite),
            "metric {name} missing or not finite: {v:?}"
        );
    }

    // Invariants of the protocol.
    let s = Sizes::at(Scale::Smoke).expect("smoke sizes");
    let m = |k: &str| metrics[k].unwrap();
    // var0 / max(rest) <= var0 / mean(rest).
    assert!(m("random.l0.first_over_max_rest") <= m("random.l0.ratio_first"));
    assert!(m("random.tau_wo.mean").abs() <= 1.0);
    let theory = CsvTable::read(&rd.join("theory_variance.csv")).unwrap();
    assert_eq!(theory.rows.len(), s.theory_len);
    // o_0 = v_0 under every attention: Var(o_0) = Var(v) = 1 up to Monte Carlo error.
    for col in ["uniform", "softmax_s0.5", "softmax_s1", "softmax_s2"] {
        let v0 = theory.column_f64(col).unwrap()[0];
        assert!((v0 - 1.0).abs() < 0.1, "{col}: Var(o_0) = {v0}");
    }
    let pos = CsvTable::read(&rd.join("model_variance_by_position.csv")).unwrap();
    let layers = CsvTable::read(&rd.join("model_layers.csv")).unwrap();
    let n_layers = layers.rows.len() / 2;
    assert_eq!(pos.rows.len(), 2 * n_layers * s.seq_len);
    // The ratio in the layer table is the one recomputed from the position table.
    let z = pos.column_f64("z_var").unwrap();
    let l0 = &z[..s.seq_len];
    let mean_rest = l0[1..].iter().sum::<f64>() / (s.seq_len - 1) as f64;
    let r = layers.column_f64("z_ratio_first").unwrap()[0];
    assert!((l0[0] / mean_rest - r).abs() <= 1e-12 * r.abs(), "{r}");
    // Gemma-3 (second model, its own folder) reads BOS + text: position 0 is the same
    // token in every sequence, so its variance across sequences is exactly 0.
    let gpos = CsvTable::read(&rd.join("gemma3-270m/model_variance_by_position.csv")).unwrap();
    let glayers = CsvTable::read(&rd.join("gemma3-270m/model_layers.csv")).unwrap();
    assert_eq!(glayers.rows.len(), 2 * 18);
    assert_eq!(gpos.rows.len(), 2 * 18 * s.seq_len);
    let gz = gpos.column_f64("z_var").unwrap();
    for (i, chunk) in gz.chunks(s.seq_len).enumerate() {
        assert_eq!(chunk[0], 0.0, "layer row {i}: Var(z_0) of the BOS");
        assert!(chunk[1..].iter().all(|&v| v > 0.0));
    }
    assert!(metrics.contains_key("gemma3-270m.random.l0.slope"));
    let init = CsvTable::read(&rd.join("init_layers.csv")).unwrap();
    assert_eq!(init.rows.len(), s.init_seeds * s.init_layers);
    // The synthetic subject: one row per seed and evaluation step; a fixed BOS has zero
    // variance across sequences, the across-channels ratio is defined.
    let syn =
        CsvTable::read(&rd.join(sinkrep_variance_discrepancy::synthetic::CURVES_CSV)).unwrap();
    assert!(!syn.rows.is_empty());
    assert_eq!(metrics["synthetic.agg_var_ratio_seq.init"], Some(0.0));
    assert!(metrics["synthetic.agg_var_ratio.init"].is_some_and(|r| r > 0.0));

    // Figures come from the run folder alone.
    let figs = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = replication()
        .unwrap()
        .figures(rd, figs.path(), &FigureStyle::svg_only())
        .expect("figures");
    // 9 figures of the primary model, theory and init; 6 of Gemma's tables; 2 of the
    // synthetic subject.
    assert_eq!(files.len(), 17, "{files:?}");
    assert!(files
        .iter()
        .any(|f| f.starts_with(figs.path().join("gemma3-270m"))));
    assert!(files.iter().all(|f| f.is_file()));
}

/// The sizes of every scale live in claim.toml and deserialise (unknown keys rejected).
#[test]
fn every_scale_has_sizes_in_the_claim_file() {
    for scale in [Scale::Smoke, Scale::Cpu, Scale::Gpu] {
        Sizes::at(scale).unwrap_or_else(|e| panic!("{scale:?}: {e:#}"));
    }
}
