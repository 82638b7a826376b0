//! The head-wise RMSNorm replication: the steps-to-target helper, and a smoke run end to
//! end (twice, byte-identical artifacts).

use std::path::PathBuf;

use sinkrep_headwise_rmsnorm::{replication, steps_to_target, Sizes, VARIANTS};
use sinkrep_runner::testing::{inputs_present, smoke_twice};
use sinkrep_runner::{CsvTable, FigureStyle, Scale};

#[test]
fn steps_to_target_interpolates_and_reports_never() {
    let c = [(0.0, 5.0), (10.0, 3.0), (20.0, 2.0)];
    assert_eq!(steps_to_target(&c, 5.0), 0.0);
    assert_eq!(steps_to_target(&c, 4.0), 5.0);
    assert_eq!(steps_to_target(&c, 2.5), 15.0);
    assert_eq!(steps_to_target(&c, 2.0), 20.0);
    assert!(steps_to_target(&c, 1.0).is_nan());
}

#[test]
fn smoke_run_is_reproducible_and_complete() {
    if !inputs_present(&["shakespeare"]) {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = smoke_twice(replication().expect("claim parses"), a.path(), b.path());
    let (rd, metrics) = (&run.dir, &run.metrics);
    let mut promised: Vec<String> = vec![
        "paired.val_loss.headwise_minus_baseline".into(),
        "paired.val_loss.headwise_minus_baseline.ci95_hi".into(),
        "paired.val_loss.gated_minus_baseline".into(),
        "paired.abs_log_out_var_ratio.headwise_minus_baseline".into(),
        "ratio.dom_ratio_max.headwise_over_baseline".into(),
        "ratio.eff_rank.headwise_over_baseline".into(),
        "target_val_loss".into(),
        "steps_to_target.baseline".into(),
    ];
    for (v, _) in VARIANTS {
        for q in [
            "val_loss",
            "val_loss.sd",
            "train_loss",
            "sink_pct",
            "attn_mass_mean",
            "dom_ratio_max",
            "dom_ratio_mean",
            "dom_ratio_last",
            "agg_var_ratio_mean",
            "out_var_ratio_mean",
            "abs_log_out_var_ratio",
            "eff_rank",
        ] {
            promised.push(format!("final.{v}.{q}"));
        }
    }
    for name in &promised {
        let v = metrics.get(name.as_str()).copied().flatten();
        assert!(
            v.is_some_and(f64::is_finite),
            "metric {name} missing or not finite: {v:?}"
        );
    }
    // Present (possibly null: the target may not be reached, the sink may not form).
    for (v, _) in VARIANTS {
        for k in [
            format!("speedup.{v}"),
            format!("emergence.{v}.sink_step"),
            format!("emergence.{v}.massive_step"),
        ] {
            assert!(metrics.contains_key(k.as_str()), "metric {k} missing");
        }
    }
    assert_eq!(run.verdicts.total, 0, "no check is judged at smoke scale");

    // Invariants of the protocol.
    let s = Sizes::at(Scale::Smoke);
    let m = |k: &str| metrics[k].unwrap();
    // The baseline reaches its own final mean loss at the last step at the latest.
    assert!(m("steps_to_target.baseline") <= s.steps as f64);
    // The paired mean difference is the difference of the means.
    let d = m("final.headwise.val_loss") - m("final.baseline.val_loss");
    assert!((d - m("paired.val_loss.headwise_minus_baseline")).abs() < 1e-12);
    let val = CsvTable::read(&rd.join("val_curves.csv")).unwrap();
    let n_evals = s.steps / s.eval_every + 1;
    assert_eq!(val.rows.len(), VARIANTS.len() * s.seeds * n_evals);
    let ev = CsvTable::read(&rd.join("eval_metrics.csv")).unwrap();
    assert_eq!(ev.rows.len(), VARIANTS.len() * s.seeds * n_evals);
    // Baseline and head-wise start from identical shared weights (the gain is ones), so
    // their step-0 validation losses agree exactly.
    let vs = val.column("variant").unwrap();
    let steps = val.column_f64("step").unwrap();
    let losses = val.column_f64("val_loss").unwrap();
    let at0 = |v: &str| -> Vec<f64> {
        (0..vs.len())
            .filter(|&i| vs[i] == v && steps[i] == 0.0)
            .map(|i| losses[i])
            .collect()
    };
    assert_eq!(at0("baseline").len(), s.seeds);
    // Dividing o by its RMS changes the function, so only closeness holds, not equality.
    for (b, h) in at0("baseline").iter().zip(at0("headwise")) {
        assert!((b - h).abs() < 0.5, "step-0 losses {b} vs {h}");
    }
    let pos = CsvTable::read(&rd.join("var_by_position.csv")).unwrap();
    assert_eq!(
        pos.rows.len(),
        VARIANTS.len() * s.seeds * s.n_layers * s.seq_len
    );
    // No checkpoint is left behind in the run folder.
    let ck = rd.join("train/baseline/seed0/checkpoints");
    assert!(!ck.exists(), "{} left behind", ck.display());

    // Figures come from the run folder alone.
    let figs = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = replication()
        .unwrap()
        .figures(rd, figs.path(), &FigureStyle::svg_only())
        .expect("figures");
    assert_eq!(files.len(), 8, "{files:?}");
    assert!(files.iter().all(|f| f.is_file()));
}

/// Every scale's training config is valid for every variant, including the gpu scale no
/// CPU test trains: a bad size there would otherwise surface only on a GPU machine.
#[test]
fn every_scale_has_a_valid_training_config() {
    for scale in Scale::ALL {
        let s = Sizes::at(scale);
        for (name, v) in VARIANTS {
            let cfg = s.train_config(v, 0, "cuda");
            cfg.validate()
                .unwrap_or_else(|e| panic!("{scale:?} {name}: {e}"));
            assert_eq!(cfg.model.d_model % cfg.model.n_heads, 0);
        }
    }
    assert_eq!(
        Sizes::at(Scale::Gpu).precision,
        sinkrep_model::Precision::Bf16
    );
}
