//! The replication end to end at smoke scale on the pinned SmolLM2 and Gemma-3 (skipped,
//! with a message, when a model is not in the cache): two runs give byte-identical artifacts,
//! the promised metrics exist and are finite, the tables agree with each other, the
//! figures draw, and this crate's own census reduction agrees with `sinkrep analyze`'s.

use sinkrep_analysis::pinned;
use sinkrep_model::Decoder;
use sinkrep_runner::testing::{inputs_present, smoke_twice};
use sinkrep_runner::{CsvTable, FigureStyle, Scale};
use sinkrep_super_neurons::{replication, study, Sizes};

/// Metrics the README and the report rely on; each must be recorded and finite.
const PROMISED: &[&str] = &[
    "n_super_neurons",
    "n_super_neurons_random",
    "first_super_neuron_layer",
    "sn_strongest_activation",
    "sn_fire_rate_rest_max",
    "sn_top2_share_min",
    "sn_top2_share_median",
    "sn_top2_share_weighted",
    "ordinary_top2_share_median",
    "sn_feeds_dominant_frac",
    "amp_var_gain_first_over_rest",
    "amp_norm_gain_first",
    "norm_jump_layer",
    "sink_text",
    "sink_random",
    "tau_dom_ratio_sink_text",
    "heldout_sink",
    "heldout_loss",
    "sn_all_mean_dom_ratio_ratio",
    "sn_all_mean_sink_late_ratio",
    "datafree_recall",
    "datafree_argmax_is_sn_frac",
];

/// One libtorch thread: on the shared 2-core machines this suite runs on, OpenMP threads
/// of concurrent jobs thrash (a smoke run took 131 s with 2 threads under load, 24 s with
/// one) and the artifacts were byte-identical either way.
fn one_thread() {
    tch::set_num_threads(1);
}

#[test]
fn smoke_runs_reproducibly_with_consistent_tables() {
    if !inputs_present(&["smollm2-135m-instruct", "gemma3-270m"]) {
        return;
    }
    one_thread();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = smoke_twice(replication().expect("claim parses"), a.path(), b.path());
    let (dir, m) = (&run.dir, &run.metrics);
    for name in PROMISED {
        let v = m.get(*name).copied().flatten();
        assert!(
            v.is_some_and(f64::is_finite),
            "metric {name} missing or not finite: {v:?}"
        );
    }

    // The tables agree with the metrics and with the model's shape.
    let sn = CsvTable::read(&dir.join("super_neurons.csv")).unwrap();
    let n_text = sn
        .column("input")
        .unwrap()
        .iter()
        .filter(|i| **i == "text")
        .count();
    assert_eq!(Some(Some(n_text as f64)), m.get("n_super_neurons").copied());
    let heads = CsvTable::read(&dir.join("alpha_per_head.csv")).unwrap();
    assert_eq!(
        heads.rows.len(),
        2 * 30 * 9,
        "2 inputs x 30 layers x 9 heads"
    );
    // Gemma-3-270M's tables, in the folder of its name: 18 layers x 4 heads.
    let gemma = CsvTable::read(&dir.join("gemma3-270m/alpha_per_head.csv")).unwrap();
    assert_eq!(
        gemma.rows.len(),
        2 * 18 * 4,
        "2 inputs x 18 layers x 4 heads"
    );
    for a in heads.column_f64("alpha0").unwrap() {
        assert!(
            (0.0..=1.0).contains(&a),
            "alpha_0 = {a} is not a probability"
        );
    }
    // Shares are energy fractions, top-2 at least top-1.
    let shares = CsvTable::read(&dir.join("down_proj_shares.csv")).unwrap();
    let t1 = shares.column_f64("top1_share").unwrap();
    let t2 = shares.column_f64("top2_share").unwrap();
    assert!(t1
        .iter()
        .zip(&t2)
        .all(|(a, b)| 0.0 < *a && a <= b && *b <= 1.0 + 1e-12));
    // The ablation table has the baseline first, with zero loss change.
    let abl = CsvTable::read(&dir.join("ablation.csv")).unwrap();
    assert_eq!(abl.column("condition").unwrap()[0], "baseline");
    assert_eq!(abl.column_f64("dloss").unwrap()[0], 0.0);

    let figs = tempfile::tempdir().unwrap();
    let files = replication()
        .unwrap()
        .figures(dir, figs.path(), &FigureStyle::svg_only())
        .expect("figures");
    assert!(files.len() >= 10, "{files:?}");
    assert!(files.iter().all(|f| f.is_file()));
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(figs.path().join("gemma3-270m"))),
        "Gemma-3's figures go to their own folder: {files:?}"
    );
}

/// Guards this crate's re-reduction of `SinkProbe` (used under ablation) against the
/// analysis crate's report on the same windows: Sink_0^0.3 and DomRatio per layer, on
/// each pinned model.
#[test]
fn evaluate_matches_the_census_without_interventions() {
    if !inputs_present(&["smollm2-135m-instruct", "gemma3-270m"]) {
        return;
    }
    one_thread();
    for alias in ["smollm2-135m", "gemma3-270m"] {
        let (model, tok, _) = pinned::load_pinned(alias, tch::Device::Cpu).unwrap();
        let model: &dyn Decoder = &*model;
        let vocab = model.config().vocab_size;
        let seqs = pinned::model_sequences(&tok, 2, 16, 5, Some(vocab)).unwrap();
        let report = study::census(model, &seqs, 2, &mut |_| {}).unwrap();
        let eval =
            study::evaluate(model, &seqs, 2, &Default::default(), &[], true, &mut |_| {}).unwrap();
        assert_eq!(eval.sink_metric, report.sink_metric.value, "{alias}");
        for (e, r) in eval.layers.iter().zip(&report.layers) {
            assert_eq!(e.sink_frac, r.sink_frac, "{alias} layer {}", e.layer);
            assert!(
                (e.dom_ratio - r.dom_ratio).abs() <= 1e-9 * r.dom_ratio,
                "{alias} layer {}",
                e.layer
            );
            assert_eq!(e.attn_mass, r.attn_mass, "{alias} layer {}", e.layer);
        }
        assert!(eval.loss.is_finite() && eval.loss > 0.0, "{alias}");
        assert_eq!(eval.loss_tokens, 2 * 15);
        // Bad input is an error, not a panic.
        assert!(study::evaluate(
            model,
            &[vec![1]],
            1,
            &Default::default(),
            &[],
            false,
            &mut |_| {}
        )
        .is_err());
    }
}

/// The sizes of every scale live in claim.toml and deserialise (unknown keys rejected).
#[test]
fn every_scale_has_sizes_in_the_claim_file() {
    for scale in [Scale::Smoke, Scale::Cpu, Scale::Gpu] {
        Sizes::at(scale).unwrap_or_else(|e| panic!("{scale:?}: {e:#}"));
    }
}
