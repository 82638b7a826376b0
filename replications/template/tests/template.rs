//! The template replication end to end at smoke scale: proof that a crate written by
//! following replications/README.md builds, runs twice byte-identically, records every
//! metric its claim file names, and draws its figures from the run folder alone.

use sinkrep_runner::testing::smoke_twice;
use sinkrep_runner::{FigureStyle, Scale};
use sinkrep_template::{claim, replication, Sizes};

#[test]
fn template_runs_at_smoke_and_draws_from_its_run_folder() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = smoke_twice(replication().expect("claim parses"), a.path(), b.path());
    assert_eq!(run.verdicts.total, 1, "one check is judged at smoke scale");
    let ratio = run.metrics["var_ratio_first_over_rest"].expect("finite");
    assert!(ratio > 2.0, "{ratio}");
    let figs = tempfile::tempdir().unwrap();
    let files = replication()
        .unwrap()
        .figures(&run.dir, figs.path(), &FigureStyle::svg_only())
        .expect("figures");
    assert!(
        !files.is_empty() && files.iter().all(|f| f.is_file()),
        "{files:?}"
    );
}

#[test]
fn every_scale_has_sizes_in_the_claim_file() {
    let c = claim().expect("claim parses");
    assert_eq!(c.origin, "replications/template/claim.toml");
    for scale in [Scale::Smoke, Scale::Cpu, Scale::Gpu] {
        Sizes::at(scale).unwrap_or_else(|e| panic!("{scale:?}: {e:#}"));
    }
}
