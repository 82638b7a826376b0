//! The head-wise RMSNorm replication: the steps-to-target helper, the protocol's sizes at
//! every scale, and a smoke run end to end (twice, with one and with two parallel jobs:
//! byte-identical artifacts).

use std::path::PathBuf;

use sinkrep_headwise_rmsnorm::{design, replication, steps_to_target, Sizes, PHASES, VARIANTS};
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
    let s = Sizes::at(Scale::Smoke).unwrap();
    let mut promised: Vec<String> = vec![
        "paired.abs_log_out_var_ratio.headwise_minus_baseline".into(),
        "ratio.dom_ratio_max.headwise_over_baseline.ci95_hi".into(),
        "ratio.eff_rank.headwise_over_baseline".into(),
    ];
    for p in PHASES {
        for other in ["headwise", "headwise_perhead", "gated"] {
            promised.push(format!("paired.val_loss.{p}.{other}_minus_baseline"));
            promised.push(format!(
                "paired.val_loss.{p}.{other}_minus_baseline.ci95_lo"
            ));
            promised.push(format!(
                "paired.val_loss.{p}.{other}_minus_baseline.ci95_hi"
            ));
        }
        for g in &s.grid {
            promised.push(format!(
                "grid.{}.paired.val_loss.{p}.headwise_minus_baseline",
                g.name
            ));
        }
    }
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
    // Present (possibly null: a target may not be reached, the sink may not form).
    for (v, _) in &VARIANTS[1..] {
        for k in [
            format!("speedup.geomean.{v}"),
            format!("speedup.final_target.{v}.unreached"),
        ] {
            assert!(metrics.contains_key(k.as_str()), "metric {k} missing");
        }
    }
    for (v, _) in VARIANTS {
        let k = format!("emergence.{v}.sink_step");
        assert!(metrics.contains_key(k.as_str()), "metric {k} missing");
    }
    assert_eq!(run.verdicts.total, 0, "no check is judged at smoke scale");

    // Invariants of the protocol.
    let m = |k: &str| metrics[k].unwrap();
    let sub = &s.subject;
    // The paired mean difference is the difference of the means.
    let d = m("final.headwise.val_loss") - m("final.baseline.val_loss");
    assert!((d - m("paired.val_loss.final.headwise_minus_baseline")).abs() < 1e-12);
    // The interval brackets the mean.
    let name = "paired.val_loss.final.headwise_minus_baseline";
    assert!(m(&format!("{name}.ci95_lo")) <= m(name) && m(name) <= m(&format!("{name}.ci95_hi")));
    let val = CsvTable::read(&rd.join("val_curves.csv")).unwrap();
    let n_evals = sub.steps / sub.eval_every + 1;
    assert_eq!(val.rows.len(), VARIANTS.len() * s.seeds * n_evals);
    let ev = CsvTable::read(&rd.join("eval_metrics.csv")).unwrap();
    assert_eq!(ev.rows.len(), VARIANTS.len() * s.seeds * n_evals);
    let grid = CsvTable::read(&rd.join("grid_curves.csv")).unwrap();
    assert_eq!(
        grid.rows.len(),
        (s.seeds + s.grid.len() * s.grid_seeds) * n_evals
    );
    // Baseline and head-wise start from identical shared weights (the gain draws
    // nothing), so their step-0 validation losses are close; dividing o by its RMS
    // changes the function, so only closeness holds, not equality.
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
    for (b, h) in at0("baseline").iter().zip(at0("headwise")) {
        assert!((b - h).abs() < 0.5, "step-0 losses {b} vs {h}");
    }
    let pos = CsvTable::read(&rd.join("var_by_position.csv")).unwrap();
    assert_eq!(
        pos.rows.len(),
        VARIANTS.len() * s.seeds * sub.n_layers * sub.seq_len
    );

    // The synthetic section: every variant and seed at every evaluation step, and the
    // metrics its checks judge.
    let syn = &s.synthetic;
    let evals = syn.subject.steps / syn.subject.eval_every + 1;
    let se = CsvTable::read(&rd.join(sinkrep_headwise_rmsnorm::SYNTHETIC_EVAL_CSV)).unwrap();
    assert_eq!(
        se.rows.len(),
        sinkrep_headwise_rmsnorm::SYNTHETIC_VARIANTS.len() * syn.seeds * evals
    );
    for name in [
        "synthetic.final.baseline.sink_pct",
        "synthetic.paired.attn_mass_max.headwise_minus_baseline",
        "synthetic.ratio.max_abs_ratio.headwise_over_baseline",
        "synthetic.speedup.geomean.headwise",
        "synthetic.emergence.gated.sink30_step",
    ] {
        assert!(metrics.contains_key(name), "{name}");
    }

    // Figures come from the run folder alone.
    let figs = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = replication()
        .unwrap()
        .figures(rd, figs.path(), &FigureStyle::svg_only())
        .expect("figures");
    // 9 of the corpus subject, 4 of the synthetic one.
    assert_eq!(files.len(), 13, "{files:?}");
    assert!(files.iter().all(|f| f.is_file()));
}

/// Every scale's protocol parses and validates, and every run it plans has a valid
/// training config, including the gpu scale no CPU test trains: a bad size there would
/// otherwise surface only on a GPU machine.
#[test]
fn every_scale_has_a_valid_protocol() {
    for scale in Scale::ALL {
        let s = Sizes::at(scale).unwrap_or_else(|e| panic!("{scale:?}: {e:#}"));
        let seeds: Vec<u64> = (0..s.seeds as u64).collect();
        let plan = design(&s, &seeds, "cuda");
        assert_eq!(
            plan.len(),
            VARIANTS.len() * s.seeds + 2 * s.grid.len() * s.grid_seeds
        );
        for (cfg_name, v, cfg) in &plan {
            cfg.validate()
                .unwrap_or_else(|e| panic!("{scale:?} {cfg_name} {v}: {e}"));
            assert_eq!(cfg.threads, 1, "every run trains on one intra-op thread");
        }
    }
    assert_eq!(
        Sizes::at(Scale::Gpu).unwrap().subject.precision,
        sinkrep_model::Precision::Bf16
    );
}

/// The head-norm gain's matched initial value is the RMS of a value vector at init.
#[test]
fn matched_gain_is_the_value_scale() {
    let s = Sizes::at(Scale::Cpu).unwrap();
    let mut sub = s.subject.clone();
    sub.gain_init = sinkrep_headwise_rmsnorm::GainInit::Matched;
    let d = sub.d_model as f64;
    let expect = 0.02f64.min(1.0 / d.sqrt()) * d.sqrt();
    assert_eq!(sub.head_norm_init(), expect);
    let cfg = sub.train_config(sinkrep_model::AttnVariant::Baseline, 0, "cpu");
    assert_eq!(
        cfg.model.head_norm_init, 1.0,
        "the baseline has no head norm: its key must not depend on the gain"
    );
}
