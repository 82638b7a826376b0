//! The runner end to end with a pure-Rust toy replication: claims, runs, manifests,
//! verdicts, drift checks, figures and the report.

use std::path::{Path, PathBuf};

use sinkrep_runner::*;
use sinkrep_stats::SplitMix64;

const CLAIM: &str = include_str!("data/claim.toml");
const README: &str = include_str!("data/README.md");

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    /// Writes an artifact, then fails.
    FailMidway,
    Panic,
    /// Records the ratio as NaN.
    NanRatio,
}

struct Toy {
    claim: Claim,
    mode: Mode,
}

impl Toy {
    fn new(mode: Mode) -> Toy {
        Toy::with_id("toy-variance", mode)
    }
    fn with_id(id: &str, mode: Mode) -> Toy {
        let text = CLAIM.replace("id = \"toy-variance\"", &format!("id = \"{id}\""));
        Toy {
            claim: Claim::parse(&text, "tests/data/claim.toml").expect("sample claim parses"),
            mode,
        }
    }
}

impl Replication for Toy {
    fn claim(&self) -> &Claim {
        &self.claim
    }
    fn readme(&self) -> &str {
        README
    }
    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()> {
        let (batch, len) = (256usize, 32usize);
        ctx.config("batch", batch)?;
        ctx.config("len", len)?;
        ctx.config("distribution", "uniform(-1, 1)")?;
        let seeds = ctx.seeds(2);
        let mut rng = SplitMix64::new(ctx.seed());
        let var = ctx.stage("simulate", |ctx| {
            let pb = ctx.progress(batch as u64, "sequences");
            let mut sum = vec![0.0; len];
            let mut sum2 = vec![0.0; len];
            for _ in 0..batch {
                let mut acc = 0.0;
                for t in 0..len {
                    acc += rng.next_f64() * 2.0 - 1.0;
                    let o = acc / (t + 1) as f64;
                    sum[t] += o;
                    sum2[t] += o * o;
                }
                pb.inc(1);
            }
            pb.finish_and_clear();
            (0..len)
                .map(|t| {
                    let m = sum[t] / batch as f64;
                    sum2[t] / batch as f64 - m * m
                })
                .collect::<Vec<f64>>()
        });
        ctx.write_csv(
            "variance_by_position.csv",
            &["position", "variance"],
            var.iter()
                .enumerate()
                .map(|(t, v)| vec![Cell::from(t), Cell::from(*v)]),
        )?;
        if self.mode == Mode::FailMidway {
            anyhow::bail!("simulated failure after the first artifact");
        }
        if self.mode == Mode::Panic {
            panic!("simulated panic in a replication");
        }
        ctx.write_json(
            "series/summary.json",
            &serde_json::json!({"z": 1, "a": [1.5, f64::NAN]}),
        )?;
        let rest = var[1..].iter().sum::<f64>() / (len - 1) as f64;
        let ratio = if self.mode == Mode::NanRatio {
            f64::NAN
        } else {
            var[0] / rest
        };
        ctx.metric("var_ratio_first_over_rest", ratio)?;
        // Least squares of ln var on ln(t+1).
        let xs: Vec<f64> = (0..len).map(|t| ((t + 1) as f64).ln()).collect();
        let ys: Vec<f64> = var.iter().map(|v| v.ln()).collect();
        let (mx, my) = (
            xs.iter().sum::<f64>() / len as f64,
            ys.iter().sum::<f64>() / len as f64,
        );
        let slope = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| (x - mx) * (y - my))
            .sum::<f64>()
            / xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
        ctx.metric("log_slope", slope)?;
        ctx.metric_samples(
            "var0",
            &seeds
                .iter()
                .map(|s| (*s, var[0] + *s as f64 * 1e-3))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }
    fn figures(
        &self,
        run_dir: &Path,
        fig_dir: &Path,
        style: &FigureStyle,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let t = CsvTable::read(&run_dir.join("variance_by_position.csv"))?;
        let pos = t.column_f64("position")?;
        let var = t.column_f64("variance")?;
        let measured = Series {
            name: "measured".into(),
            points: pos
                .iter()
                .map(|p| p + 1.0)
                .zip(var.iter().copied())
                .collect(),
        };
        let v0 = var[0];
        let theory = Series {
            name: "Var(v)/(t+1)".into(),
            points: pos.iter().map(|p| (p + 1.0, v0 / (p + 1.0))).collect(),
        };
        let f = line_chart(
            style,
            &fig_dir.join("variance"),
            &LineChart {
                title: "Variance of the causal average by position",
                x_label: "position t + 1",
                y_label: "Var(o_t)",
                series: &[measured, theory],
                log_x: true,
                log_y: true,
            },
        )?;
        Ok(f.paths())
    }
}

fn registry(reps: Vec<Box<dyn Replication>>) -> Registry {
    Registry::new(reps).expect("registry")
}

fn opts(out: &Path, scale: Scale) -> RunOptions {
    RunOptions {
        scale,
        seed: 7,
        out: out.to_path_buf(),
        device_name: "cpu".into(),
        env: serde_json::json!({"git_rev": "abc123", "git_dirty": false, "threads": 1}),
        progress: false,
        jobs: 1,
    }
}

fn all() -> Vec<String> {
    vec!["all".to_string()]
}

// ---------------------------------------------------------------------------------------
// Claim files

#[test]
fn sample_claim_parses_with_every_field() {
    let c = Claim::parse(CLAIM, "tests/data/claim.toml").unwrap();
    assert_eq!(c.id, "toy-variance");
    assert_eq!(c.version, 2);
    assert_eq!(c.scales, vec![Scale::Smoke, Scale::Cpu, Scale::Gpu]);
    assert_eq!(c.checks.len(), 3);
    assert_eq!(c.checks[0].op, Op::Gt);
    assert_eq!(c.checks[1].op, Op::Le);
    assert_eq!(c.checks_at(Scale::Smoke).count(), 2);
    assert_eq!(c.checks_at(Scale::Gpu).count(), 3);
    assert_eq!(
        c.tolerance.for_metric("log_slope"),
        Tol {
            abs: 0.01,
            rel: 1e-9,
            rule: TolRule::Override,
        }
    );
    assert_eq!(
        c.tolerance.for_metric("other"),
        Tol {
            abs: 1e-12,
            rel: 1e-9,
            rule: TolRule::Default,
        }
    );
    assert_eq!(c.changelog.len(), 2);
    assert!(c.statement.contains("Var(o_t)"));
}

/// Each broken claim must fail with a message naming the file and the field.
#[test]
fn claim_validation_errors_name_file_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "op = \">\"",
            "op = \"=>\"",
            "check[0] (id `first-is-max`).op",
        ),
        (
            "id = \"decay-exponent\"",
            "id = \"first-is-max\"",
            "duplicate check id",
        ),
        (
            "version = 2\n",
            "version = 3\n",
            "highest changelog version 2",
        ),
        ("version = 2\n", "version = -1\n", "field `version`"),
        (
            "scales = [\"smoke\", \"cpu\", \"gpu\"]",
            "scales = [\"smoke\", \"tpu\"]",
            "field `scales`: unknown scale `tpu`",
        ),
        (
            "scales = [\"gpu\"]",
            "scales = [\"laptop\"]",
            "check[2] (id `long-context`).scales",
        ),
        ("title = ", "titel = ", "titel"),
        (
            "id = \"toy-variance\"",
            "id = \"Toy Variance\"",
            "field `id`",
        ),
        (
            "date = \"2026-05-01\"",
            "date = \"May 1st\"",
            "changelog[0].date",
        ),
        ("threshold = 2.0", "threshold = nan", "threshold"),
        (
            "default_abs = 1e-12",
            "default_abs = -1.0",
            "tolerance.default_abs",
        ),
        (
            "log_slope = { abs = 0.01 }",
            "log_slope = { abs = 0.01, tol = 2 }",
            "tol",
        ),
    ];
    for (from, to, expect) in cases {
        assert!(
            CLAIM.contains(from),
            "test case pattern `{from}` not in sample"
        );
        let text = CLAIM.replacen(from, to, 1);
        let err = Claim::parse(&text, "replications/x/claim.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("replications/x/claim.toml: ") && msg.contains(expect),
            "replacing `{from}` by `{to}`: expected `{expect}` in: {msg}"
        );
    }
    // A missing required field is named by toml's own message.
    let text = CLAIM.replace("statement = \"\"\"", "notes = \"\"\"");
    let msg = Claim::parse(&text, "c.toml").unwrap_err().to_string();
    assert!(msg.contains("c.toml") && msg.contains("notes"), "{msg}");
    let text: String = CLAIM
        .lines()
        .filter(|l| !l.starts_with("claim = "))
        .collect::<Vec<_>>()
        .join("\n");
    let msg = Claim::parse(&text, "c.toml").unwrap_err().to_string();
    assert!(msg.contains("missing field `claim`"), "{msg}");
}

#[test]
fn duplicate_replication_ids_are_rejected() {
    let err = Registry::new(vec![
        Box::new(Toy::new(Mode::Normal)),
        Box::new(Toy::with_id("other", Mode::Normal)),
        Box::new(Toy::new(Mode::Normal)),
    ])
    .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateId { ref id, .. } if id == "toy-variance"),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("duplicate replication id `toy-variance`"));
}

#[test]
fn list_table_shows_id_version_scales_claim() {
    let reg = registry(vec![Box::new(Toy::new(Mode::Normal))]);
    let t = reg.list_table();
    assert!(
        t.contains("toy-variance") && t.contains("smoke, cpu, gpu") && t.contains("first output"),
        "{t}"
    );
}

// ---------------------------------------------------------------------------------------
// Verdicts

#[test]
fn verdicts_count_nan_and_missing_as_not_holding() {
    let c = Claim::parse(CLAIM, "claim.toml").unwrap();
    let m = |ratio: Option<f64>, slope: Option<Option<f64>>| {
        let mut m = Metrics::new();
        m.insert("var_ratio_first_over_rest".into(), ratio);
        if let Some(s) = slope {
            m.insert("log_slope".into(), s);
        }
        m
    };
    let v = evaluate(&c, Scale::Smoke, &m(Some(5.0), Some(Some(-1.0))));
    assert_eq!((v.verdict, v.passed, v.total), (Verdict::Holds, 2, 2));
    let v = evaluate(&c, Scale::Gpu, &m(Some(5.0), Some(Some(-1.0))));
    assert_eq!((v.verdict, v.passed, v.total), (Verdict::Partly, 2, 3));
    // NaN (stored as null) does not hold, with a note.
    let v = evaluate(&c, Scale::Smoke, &m(None, Some(Some(-1.0))));
    assert_eq!(v.verdict, Verdict::Partly);
    assert!(!v.checks[0].holds && v.checks[0].value.is_none());
    assert!(v.checks[0].note.as_deref().unwrap().contains("not finite"));
    // A NaN that slipped through as a number also does not hold.
    let v = evaluate(
        &c,
        Scale::Smoke,
        &m(Some(f64::NAN), Some(Some(f64::INFINITY))),
    );
    assert_eq!(v.verdict, Verdict::DoesNotHold);
    // Missing metric.
    let v = evaluate(&c, Scale::Smoke, &m(Some(1.0), None));
    assert_eq!(v.verdict, Verdict::DoesNotHold);
    assert!(v.checks[1]
        .note
        .as_deref()
        .unwrap()
        .contains("not recorded"));
    assert_eq!(
        Verdict::DoesNotHold.to_string(),
        "does not hold at this scale"
    );
    // Boundaries follow the operator exactly.
    assert!(Op::Ge.holds(2.0, 2.0) && !Op::Gt.holds(2.0, 2.0));
    assert!(Op::Le.holds(-0.8, -0.8) && !Op::Lt.holds(-0.8, -0.8));
}

const INTERVAL_CLAIM: &str = r#"
id = "toy-interval"
version = 1
title = "t"
claim = "c"
statement = "s"
scales = ["smoke"]

[[check]]
id = "lower"
metric = "diff"
op = "<"
threshold = 0.0
interval = true
description = "d"

[tolerance]
default_abs = 1e-6
default_rel = 0.0
seed_spread_k = 5.0

[[changelog]]
version = 1
date = "2026-12-02"
change = "c"
"#;

fn interval_metrics(mean: f64, lo: f64, hi: f64) -> Metrics {
    let mut m = Metrics::new();
    m.insert("diff".into(), Some(mean));
    m.insert("diff.ci95_lo".into(), Some(lo));
    m.insert("diff.ci95_hi".into(), Some(hi));
    m
}

/// An interval check holds only when the whole interval is on the claimed side, fails
/// only when the whole interval is on the other side, and is undecided in between.
#[test]
fn interval_checks_hold_fail_or_stay_undecided() {
    let c = Claim::parse(INTERVAL_CLAIM, "claim.toml").unwrap();
    assert!(c.checks[0].interval);
    let judge = |mean, lo, hi| evaluate(&c, Scale::Smoke, &interval_metrics(mean, lo, hi));
    let v = judge(-0.05, -0.08, -0.02);
    assert_eq!(v.checks[0].outcome(), Outcome::Holds);
    assert_eq!((v.verdict, v.undecided), (Verdict::Holds, 0));
    assert_eq!(v.checks[0].interval, Some([-0.08, -0.02]));
    let v = judge(0.05, 0.02, 0.08);
    assert_eq!(v.checks[0].outcome(), Outcome::DoesNotHold);
    // A point value below the threshold is not enough when the interval straddles it.
    let v = judge(-0.01, -0.03, 0.01);
    assert_eq!(v.checks[0].outcome(), Outcome::Undecided);
    assert!(!v.checks[0].holds);
    assert_eq!(
        (v.verdict, v.passed, v.undecided),
        (Verdict::DoesNotHold, 0, 1)
    );
    // A missing bound does not hold, with a note naming it.
    let mut m = interval_metrics(-0.05, -0.08, -0.02);
    m.remove("diff.ci95_hi");
    let v = evaluate(&c, Scale::Smoke, &m);
    assert_eq!(v.checks[0].outcome(), Outcome::DoesNotHold);
    assert!(v.checks[0]
        .note
        .as_deref()
        .unwrap()
        .contains("diff.ci95_hi"));
    // Verdicts round-trip through JSON with their outcome.
    let v = judge(-0.01, -0.03, 0.01);
    let back: Verdicts = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(back, v);
}

/// Metrics recorded over seeds are judged as two sets of seeds: the mean within k
/// standard errors of the difference of the two means, per-seed values, sd and unreached
/// counts shown but not gated; other metrics keep the static tolerance; the rule is named.
#[test]
fn seed_spread_tolerances_compare_two_sets_of_seeds() {
    let c = Claim::parse(INTERVAL_CLAIM, "claim.toml").unwrap();
    let mut base = Metrics::new();
    for (k, v) in [
        ("loss", 2.0),
        ("loss.sd", 0.04),
        ("loss.n", 4.0),
        ("loss.ci95_lo", 1.94),
        ("loss.ci95_hi", 2.06),
        ("loss.seed3", 2.01),
        ("loss.unreached", 0.0),
        ("pretrained", 1.0),
    ] {
        base.insert(k.into(), Some(v));
    }
    let se_b = 0.04 / 2.0;
    // The run's own spread enters the standard error of the difference.
    let mut now = base.clone();
    now.insert("loss.sd".into(), Some(0.08));
    let t = |name: &str, now: &Metrics| c.tolerance.for_metric_in(name, &base, now);
    let se = (se_b * se_b + 0.04f64 * 0.04).sqrt();
    assert!((t("loss", &now).abs - 5.0 * se).abs() < 1e-12);
    assert!(matches!(t("loss", &now).rule, TolRule::SeedSpread { .. }));
    // A run without an sd for the family is taken to spread like the baseline.
    let mut no_sd = base.clone();
    no_sd.remove("loss.sd");
    assert!((t("loss", &no_sd).abs - 5.0 * se_b * 2f64.sqrt()).abs() < 1e-12);
    assert!(t("loss.ci95_hi", &now).abs > t("loss", &now).abs);
    for name in ["loss.seed3", "loss.sd", "loss.unreached"] {
        assert!(!t(name, &now).gated(), "{name}");
    }
    assert_eq!(t("loss.n", &now).rule, TolRule::Default);
    assert_eq!(t("pretrained", &now).rule, TolRule::Default);
    assert_eq!(t("pretrained", &now).abs, 1e-6);
    // A shift of the mean by 4 SE of the difference passes, one of 6 SE drifts; a seed
    // that moves anywhere and an unreached count that changes do not.
    let mut now = base.clone();
    let se2 = se_b * 2f64.sqrt();
    now.insert("loss".into(), Some(2.0 + 4.0 * se2));
    now.insert("loss.seed3".into(), Some(7.0));
    now.insert("loss.unreached".into(), Some(2.0));
    let rows = verify::compare_metrics(&c, &base, &now);
    assert!(rows.iter().all(|r| r.status == DriftStatus::Ok));
    now.insert("loss".into(), Some(2.0 + 6.0 * se2));
    let rows = verify::compare_metrics(&c, &base, &now);
    let bad: Vec<_> = rows
        .iter()
        .filter(|r| r.status != DriftStatus::Ok)
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].metric, "loss");
    // Without seed_spread_k every metric is judged by the static tolerance, seeds too.
    let strict = Claim::parse(&INTERVAL_CLAIM.replace("seed_spread_k = 5.0", ""), "c").unwrap();
    now.insert("loss".into(), Some(2.0 + 4.0 * se_b));
    let rows = verify::compare_metrics(&strict, &base, &now);
    for m in ["loss", "loss.seed3"] {
        assert!(rows
            .iter()
            .any(|r| r.metric == m && r.status == DriftStatus::Drift));
    }
}

/// A seed family's aggregate that turns null because some of its seeds never reached a
/// target is shown, not gated; one that turns null because every seed is null drifts.
#[test]
fn a_null_seed_mean_drifts_only_when_every_seed_is_null() {
    let c = Claim::parse(INTERVAL_CLAIM, "claim.toml").unwrap();
    let mut base = Metrics::new();
    for (k, v) in [
        ("steps", Some(400.0)),
        ("steps.sd", Some(50.0)),
        ("steps.n", Some(3.0)),
        ("steps.seed0", Some(350.0)),
        ("steps.seed1", Some(400.0)),
        ("steps.seed2", Some(450.0)),
    ] {
        base.insert(k.into(), v);
    }
    let mut now = base.clone();
    for k in ["steps", "steps.sd", "steps.seed1"] {
        now.insert(k.into(), None);
    }
    let rows = verify::compare_metrics(&c, &base, &now);
    assert!(rows.iter().all(|r| r.status == DriftStatus::Ok), "{rows:?}");
    for k in ["steps.seed0", "steps.seed2"] {
        now.insert(k.into(), None);
    }
    let rows = verify::compare_metrics(&c, &base, &now);
    let bad: Vec<_> = rows
        .iter()
        .filter(|r| r.status == DriftStatus::Drift)
        .map(|r| r.metric.as_str())
        .collect();
    assert_eq!(bad, ["steps"], "{rows:?}");
}

/// The share of a family's seeds that reached a finite value is judged on the mean's
/// row: 10 of 10 -> 1 of 10 drifts although the null mean is not gated, and so does
/// none -> 8 of 10 with both means null; 10 -> 8 of 10 does not. Seeds of other
/// families (`steps2.*`, `steps.x.*`) are not counted.
#[test]
fn a_seed_family_drifts_when_its_share_of_finite_seeds_moves_far() {
    let c = Claim::parse(INTERVAL_CLAIM, "claim.toml").unwrap();
    let family = |finite: usize, mean: Option<f64>| {
        let mut m = Metrics::new();
        m.insert("steps".into(), mean);
        m.insert("steps.n".into(), Some(10.0));
        for i in 0..10 {
            let v = (i < finite).then_some(400.0 + i as f64);
            m.insert(format!("steps.seed{i}"), v);
            // Seeds of other families, always finite: must not count.
            m.insert(format!("steps2.seed{i}"), Some(1.0));
            m.insert(format!("steps.x.seed{i}"), Some(1.0));
        }
        m
    };
    let status = |b: &Metrics, n: &Metrics| {
        verify::compare_metrics(&c, b, n)
            .into_iter()
            .find(|r| r.metric == "steps")
            .unwrap()
            .status
    };
    let all = family(10, Some(404.5));
    assert_eq!(status(&all, &family(8, None)), DriftStatus::Ok);
    assert_eq!(status(&all, &family(1, None)), DriftStatus::Drift);
    assert_eq!(
        status(&family(0, None), &family(8, None)),
        DriftStatus::Drift
    );
    assert_eq!(status(&family(0, None), &family(0, None)), DriftStatus::Ok);
}

#[test]
fn a_nan_metric_is_recorded_as_null_and_fails_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(vec![Box::new(Toy::new(Mode::NanRatio))]);
    let s = run_replications(&reg, &all(), &opts(dir.path(), Scale::Smoke)).unwrap();
    assert_eq!(
        s[0].status,
        RunStatus::Finished {
            verdict: Verdict::Partly,
            passed: 1,
            total: 2
        }
    );
    let rd = run_dir(dir.path(), Scale::Smoke, "toy-variance");
    let metrics = std::fs::read_to_string(rd.join(METRICS)).unwrap();
    assert!(
        metrics.contains("\"var_ratio_first_over_rest\": null"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------
// Runs and manifests

#[test]
fn a_second_run_reproduces_every_checksum() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reg = registry(vec![Box::new(Toy::new(Mode::Normal))]);
    for d in [&a, &b] {
        let s = run_replications(&reg, &all(), &opts(d.path(), Scale::Smoke)).unwrap();
        assert_eq!(
            s[0].status,
            RunStatus::Finished {
                verdict: Verdict::Holds,
                passed: 2,
                total: 2
            }
        );
    }
    let cmp = compare_checksums(a.path(), b.path()).unwrap();
    assert!(cmp.identical(), "{cmp}");
    assert_eq!(cmp.runs, vec!["smoke/toy-variance".to_string()]);
    assert_eq!(cmp.artifacts, 4, "{cmp}");

    let rd = run_dir(a.path(), Scale::Smoke, "toy-variance");
    let m = Manifest::load(&rd).unwrap();
    assert_eq!(m.id, "toy-variance");
    assert_eq!(m.claim_version, 2);
    assert_eq!((m.seed, m.seeds.clone()), (7, vec![7, 8]));
    assert_eq!(m.device, "cpu");
    assert_eq!(m.env["git_rev"], "abc123");
    assert_eq!(m.config["batch"], 256);
    assert_eq!(m.timing.stages[0].name, "simulate");
    let names: Vec<&str> = m.artifacts.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "metrics.json",
            "series/summary.json",
            "variance_by_position.csv",
            "verdicts.json"
        ]
    );
    assert!(check_integrity(&rd).unwrap().is_empty());
    // Artifacts are deterministic text: sorted JSON keys, null for NaN, Display floats.
    let summary = std::fs::read_to_string(rd.join("series/summary.json")).unwrap();
    assert_eq!(
        summary,
        "{\n  \"a\": [\n    1.5,\n    null\n  ],\n  \"z\": 1\n}\n"
    );
    let csv = std::fs::read_to_string(rd.join("variance_by_position.csv")).unwrap();
    assert!(csv.starts_with("position,variance\n0,0."), "{csv}");
    let first: f64 = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first > 0.25 && first < 0.42,
        "Var(U(-1,1)) = 1/3, got {first}"
    );
    let metrics = read_metrics(&rd).unwrap();
    for k in [
        "var0",
        "var0.sd",
        "var0.ci95_lo",
        "var0.ci95_hi",
        "var0.n",
        "var0.seed7",
        "var0.seed8",
    ] {
        assert!(metrics.contains_key(k), "{k} missing from {metrics:?}");
    }
    // Timings differ between runs but are not artifacts.
    let ma = Manifest::load(&run_dir(b.path(), Scale::Smoke, "toy-variance")).unwrap();
    assert_eq!(m.outputs_sha256, ma.outputs_sha256);

    // A changed seed changes the outputs, and the comparison says where.
    let c = tempfile::tempdir().unwrap();
    let mut o = opts(c.path(), Scale::Smoke);
    o.seed = 8;
    run_replications(&reg, &all(), &o).unwrap();
    let cmp = compare_checksums(a.path(), c.path()).unwrap();
    assert!(!cmp.identical());
    assert!(
        cmp.to_string().contains("variance_by_position.csv"),
        "{cmp}"
    );
}

#[test]
fn a_run_that_fails_midway_leaves_no_manifest_and_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let good = registry(vec![Box::new(Toy::new(Mode::Normal))]);
    run_replications(&good, &all(), &opts(dir.path(), Scale::Smoke)).unwrap();
    let rd = run_dir(dir.path(), Scale::Smoke, "toy-variance");
    assert!(rd.join(MANIFEST).is_file());

    // Rerun into the same folder with a replication that fails after its first artifact:
    // the stale manifest must be gone, so the folder does not look finished.
    let reg = registry(vec![
        Box::new(Toy::new(Mode::FailMidway)),
        Box::new(Toy::with_id("toy-panics", Mode::Panic)),
        Box::new(Toy::with_id("toy-fine", Mode::Normal)),
    ]);
    let mut events = Vec::new();
    let err = run_replications_with(&reg, &all(), &opts(dir.path(), Scale::Smoke), &mut |e| {
        events.push(e.to_string())
    })
    .unwrap_err();
    assert!(!rd.join(MANIFEST).exists());
    assert!(rd.join("variance_by_position.csv").exists());
    assert!(!rd.join(METRICS).exists());
    assert!(matches!(
        Manifest::load(&rd),
        Err(Error::IncompleteRun { .. })
    ));
    let Error::ReplicationsFailed { failed, summaries } = &err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(failed.len(), 2);
    assert!(failed[0].1.contains("simulated failure"), "{:?}", failed);
    assert!(
        failed[1].1.contains("panicked: simulated panic"),
        "{:?}",
        failed
    );
    assert!(run_dir(dir.path(), Scale::Smoke, "toy-fine")
        .join(MANIFEST)
        .is_file());
    let table = summary_table(summaries);
    assert!(
        table.contains("FAILED") && table.contains("toy-fine") && table.contains("holds"),
        "{table}"
    );
    assert!(
        err.to_string().contains("2 of 3 replications failed"),
        "{err}"
    );
    assert_eq!(events.len(), 6, "{events:?}");
    // No temporary files left behind.
    for e in std::fs::read_dir(&rd).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover {name}");
    }
}

#[test]
fn selection_rejects_unknown_ids_and_undeclared_scales() {
    let dir = tempfile::tempdir().unwrap();
    let text = CLAIM
        .replace(
            "scales = [\"smoke\", \"cpu\", \"gpu\"]",
            "scales = [\"smoke\", \"gpu\"]",
        )
        .replace("scales = [\"gpu\"]\n", "");
    let claim = Claim::parse(&text, "claim.toml").unwrap();
    let reg = registry(vec![Box::new(Toy {
        claim,
        mode: Mode::Normal,
    })]);
    let err = run_replications(&reg, &["nope".into()], &opts(dir.path(), Scale::Cpu)).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown replication `nope`; registered: toy-variance"),
        "{err}"
    );
    let err = run_replications(
        &reg,
        &["toy-variance".into()],
        &opts(dir.path(), Scale::Cpu),
    )
    .unwrap_err();
    assert!(matches!(err, Error::ScaleNotDeclared { .. }), "{err}");
    let s = run_replications(&reg, &all(), &opts(dir.path(), Scale::Cpu)).unwrap();
    assert!(matches!(s[0].status, RunStatus::Skipped { .. }));
}

struct Probe {
    claim: Claim,
    input: PathBuf,
}

impl Replication for Probe {
    fn claim(&self) -> &Claim {
        &self.claim
    }
    fn readme(&self) -> &str {
        ""
    }
    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()> {
        let rec = ctx.input(&self.input)?;
        assert_eq!(rec.size, 5);
        // Reserved and unsafe names are refused.
        for bad in [
            "manifest.json",
            "metrics.json",
            "../x.csv",
            "/abs.csv",
            ".hidden",
            "a/./b",
            "a//b",
            "a/",
            "",
        ] {
            assert!(ctx.write_text(bad, "x").is_err(), "`{bad}` accepted");
        }
        ctx.metric("m", 1.0)?;
        assert!(ctx.metric("m", 2.0).is_err());
        assert!(ctx.metric("has space", 2.0).is_err());
        ctx.config("k", 1)?;
        ctx.config("k", 1)?;
        assert!(ctx.config("k", 2).is_err());
        assert!(ctx.write_csv("bad.csv", &["a", "b"], [vec![1.0]]).is_err());
        let p = ctx.artifact_path("raw/blob.bin")?;
        sinkrep_inputs::write_atomic(&p, b"blob")?;
        ctx.register_file("raw/blob.bin")?;
        ctx.write_csv("f32.csv", &["x"], [[0.1f32], [f32::NAN]])?;
        ctx.write_rows(
            "rows.csv",
            [
                CsvRow {
                    name: "a,b".into(),
                    n: 3,
                    x: 0.1,
                    y: None,
                    ok: true,
                },
                CsvRow {
                    name: "c".into(),
                    n: 0,
                    x: f64::NAN,
                    y: Some(f64::NEG_INFINITY),
                    ok: false,
                },
            ],
        )?;
        ctx.write_rows("empty.csv", Vec::<CsvRow>::new())?;
        Ok(())
    }
    fn figures(&self, _: &Path, _: &Path, _: &FigureStyle) -> anyhow::Result<Vec<PathBuf>> {
        Ok(vec![])
    }
}

#[test]
fn inputs_are_hashed_into_the_manifest_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.bin");
    std::fs::write(&input, b"hello").unwrap();
    let claim = Claim::parse(&CLAIM.replace("toy-variance", "probe"), "claim.toml").unwrap();
    let reg = registry(vec![Box::new(Probe {
        claim,
        input: input.clone(),
    })]);
    let out = dir.path().join("runs");
    run_replications(&reg, &all(), &opts(&out, Scale::Smoke)).unwrap();
    let m = Manifest::load(&run_dir(&out, Scale::Smoke, "probe")).unwrap();
    let rec = &m.inputs[&input.display().to_string()];
    assert_eq!(
        rec.sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(m.artifacts.contains_key("raw/blob.bin"));
    let csv =
        std::fs::read_to_string(run_dir(&out, Scale::Smoke, "probe").join("f32.csv")).unwrap();
    assert_eq!(csv, "x\n0.1\nNaN\n");
    assert_eq!(m.verdict, Verdict::DoesNotHold);
}

/// A table row for `write_rows` / `read_rows`.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct CsvRow {
    name: String,
    n: usize,
    #[serde(rename = "x.value")]
    x: f64,
    y: Option<f64>,
    ok: bool,
}

#[test]
fn rows_write_their_field_names_as_the_header_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.bin");
    std::fs::write(&input, b"hello").unwrap();
    let claim = Claim::parse(&CLAIM.replace("toy-variance", "probe"), "claim.toml").unwrap();
    let reg = registry(vec![Box::new(Probe { claim, input })]);
    let out = dir.path().join("runs");
    run_replications(&reg, &all(), &opts(&out, Scale::Smoke)).unwrap();
    let rd = run_dir(&out, Scale::Smoke, "probe");
    let text = std::fs::read_to_string(rd.join("rows.csv")).unwrap();
    assert_eq!(
        text,
        "name,n,x.value,y,ok\n\"a,b\",3,0.1,,true\nc,0,NaN,-inf,false\n"
    );
    // A table without rows still has its header.
    let empty = std::fs::read_to_string(rd.join("empty.csv")).unwrap();
    assert_eq!(empty, "name,n,x.value,y,ok\n");
    let back: Vec<CsvRow> = sinkrep_runner::read_rows(&rd.join("rows.csv")).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].name, "a,b");
    assert_eq!((back[0].x, back[0].y), (0.1, None));
    assert!(back[1].x.is_nan() && back[1].y == Some(f64::NEG_INFINITY) && !back[1].ok);
    assert!(sinkrep_runner::read_rows::<CsvRow>(&rd.join("empty.csv"))
        .unwrap()
        .is_empty());
    // A table that lacks a column of the struct is refused with the file's name.
    let err = sinkrep_runner::read_rows::<CsvRow>(&rd.join("f32.csv")).unwrap_err();
    assert!(err.to_string().contains("f32.csv"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Verify

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn verify_passes_on_own_baseline_and_catches_drift_and_verdict_flips() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, base) = (dir.path().join("runs"), dir.path().join("baselines"));
    let reg = registry(vec![Box::new(Toy::new(Mode::Normal))]);
    run_replications(&reg, &all(), &opts(&runs, Scale::Smoke)).unwrap();

    // No baseline yet: a failure that says how to create one.
    let o = verify(&reg, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(!o.passed());
    assert!(o.render(false).contains("no baseline"), "{o}");

    // --update creates it; then verify passes.
    let o = verify(&reg, Scale::Smoke, &runs, &base, true).unwrap();
    assert!(o.passed(), "{o}");
    assert_eq!(o.updated.len(), 2, "{o}");
    assert!(o.updated[0].ends_with("metrics.json: created"), "{o}");
    let o = verify(&reg, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(o.passed(), "{o}");
    assert_eq!(o.compared, vec!["toy-variance".to_string()]);
    assert!(o.rows.iter().all(|r| r.status == DriftStatus::Ok));
    assert!(o.to_string().contains("PASS"));

    let bm = run_dir(&base, Scale::Smoke, "toy-variance").join(METRICS);
    let bv = run_dir(&base, Scale::Smoke, "toy-variance").join(VERDICTS);
    let original_metrics = std::fs::read(&bm).unwrap();
    let original_verdicts = std::fs::read(&bv).unwrap();

    // Within the per-metric tolerance (abs 0.01): passes.
    edit_json(&bm, |v| {
        let s = v["log_slope"].as_f64().unwrap();
        v["log_slope"] = (s + 0.005).into();
    });
    assert!(verify(&reg, Scale::Smoke, &runs, &base, false)
        .unwrap()
        .passed());

    // Beyond tolerance: fails, and the table names the metric and its numbers.
    edit_json(&bm, |v| {
        let s = v["log_slope"].as_f64().unwrap();
        v["log_slope"] = (s + 0.5).into();
    });
    let o = verify(&reg, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(!o.passed());
    let table = o.render(false);
    let line = table
        .lines()
        .find(|l| l.contains("log_slope"))
        .expect(&table);
    assert!(
        line.contains("DRIFT") && line.contains("-0.5") && line.contains("abs 0.01"),
        "{table}"
    );
    assert!(
        table.contains("metric") && table.contains("tolerance") && table.contains("FAIL"),
        "{table}"
    );
    // The default tolerance (1e-12 abs) catches a tiny change to another metric.
    std::fs::write(&bm, &original_metrics).unwrap();
    edit_json(&bm, |v| {
        let s = v["var0"].as_f64().unwrap();
        v["var0"] = (s * (1.0 + 1e-6)).into();
    });
    assert!(!verify(&reg, Scale::Smoke, &runs, &base, false)
        .unwrap()
        .passed());

    // A metric missing on one side is drift.
    std::fs::write(&bm, &original_metrics).unwrap();
    edit_json(&bm, |v| {
        v.as_object_mut().unwrap().remove("var0.sd");
    });
    let o = verify(&reg, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(!o.passed());
    assert!(o.render(false).contains("MISSING"), "{o}");

    // A flipped verdict fails even with identical metrics.
    std::fs::write(&bm, &original_metrics).unwrap();
    edit_json(&bv, |v| {
        v["checks"][1]["holds"] = false.into();
        v["verdict"] = "partly".into();
    });
    let o = verify(&reg, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(!o.passed());
    assert!(o.drifted().next().is_none());
    assert_eq!(o.verdict_changes.len(), 2, "{o}");
    let text = o.to_string();
    assert!(
        text.contains("verdict changes") && text.contains("decay-exponent"),
        "{text}"
    );

    // --update rewrites the baselines (and says what changed); verify passes again.
    edit_json(&bm, |v| {
        v["log_slope"] = 3.0.into();
    });
    let o = verify(&reg, Scale::Smoke, &runs, &base, true).unwrap();
    assert!(o.passed(), "{o}");
    assert_eq!(o.updated.len(), 2, "{o}");
    assert!(o.updated[0].contains("1 metric(s) changed"), "{o}");
    assert!(o.updated[1].contains("2 verdict change(s)"), "{o}");
    assert_eq!(std::fs::read(&bm).unwrap(), original_metrics);
    assert_eq!(std::fs::read(&bv).unwrap(), original_verdicts);
    assert!(verify(&reg, Scale::Smoke, &runs, &base, false)
        .unwrap()
        .passed());
    // Nothing to do the second time: files untouched, nothing listed.
    assert!(verify(&reg, Scale::Smoke, &runs, &base, true)
        .unwrap()
        .updated
        .is_empty());
}

#[test]
fn verify_flags_tampered_runs_stale_baselines_and_protocol_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, base) = (dir.path().join("runs"), dir.path().join("baselines"));
    let reg = registry(vec![Box::new(Toy::new(Mode::Normal))]);
    run_replications(&reg, &all(), &opts(&runs, Scale::Smoke)).unwrap();
    verify(&reg, Scale::Smoke, &runs, &base, true).unwrap();

    // A hand-edited run no longer matches its manifest.
    let rm = run_dir(&runs, Scale::Smoke, "toy-variance").join(METRICS);
    let orig = std::fs::read(&rm).unwrap();
    std::fs::write(&rm, b"{}\n").unwrap();
    let o = verify(&reg, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(
        !o.passed() && o.to_string().contains("does not match its manifest"),
        "{o}"
    );
    std::fs::write(&rm, &orig).unwrap();

    // A baseline for a replication nobody registers any more.
    std::fs::create_dir_all(base.join("smoke/retired")).unwrap();
    let o = verify(&reg, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(
        !o.passed() && o.to_string().contains("not registered"),
        "{o}"
    );
    std::fs::remove_dir_all(base.join("smoke/retired")).unwrap();

    // The claim moved to version 3: the old run must be redone.
    let text = CLAIM.replace("version = 2\n", "version = 3\n").replace(
        "[[changelog]]\nversion = 2",
        "[[changelog]]\nversion = 3\ndate = \"2026-06-01\"\nchange = \"x\"\n\n[[changelog]]\nversion = 2",
    );
    let v3 = registry(vec![Box::new(Toy {
        claim: Claim::parse(&text, "c.toml").unwrap(),
        mode: Mode::Normal,
    })]);
    let o = verify(&v3, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(!o.passed() && o.to_string().contains("rerun it"), "{o}");
    // After rerunning, the v2 baseline is flagged until it is updated.
    run_replications(&v3, &all(), &opts(&runs, Scale::Smoke)).unwrap();
    let o = verify(&v3, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(
        !o.passed() && o.to_string().contains("protocol changed"),
        "{o}"
    );
    assert!(verify(&v3, Scale::Smoke, &runs, &base, true)
        .unwrap()
        .passed());
    assert!(verify(&v3, Scale::Smoke, &runs, &base, false)
        .unwrap()
        .passed());

    // A baseline without a run is a failure too.
    std::fs::remove_dir_all(runs.join("smoke")).unwrap();
    let o = verify(&v3, Scale::Smoke, &runs, &base, false).unwrap();
    assert!(
        !o.passed() && o.to_string().contains("no finished run"),
        "{o}"
    );
}

// ---------------------------------------------------------------------------------------
// Figures and report

fn draw_all(style: &FigureStyle, dir: &Path) -> Vec<FigureFiles> {
    let series = vec![
        Series {
            name: "baseline".into(),
            points: (1..=64).map(|t| (t as f64, 1.0 / t as f64)).collect(),
        },
        Series {
            name: "head-wise RMSNorm".into(),
            points: (1..=64)
                .map(|t| (t as f64, 0.5 + 0.01 * t as f64))
                .collect(),
        },
        Series {
            name: "with a NaN".into(),
            points: vec![(1.0, 1.0), (2.0, f64::NAN), (3.0, -1.0)],
        },
    ];
    let matrix: Vec<Vec<f64>> = (0..30)
        .map(|l| {
            (0..9)
                .map(|h| {
                    ((l * 9 + h) as f64).sin().abs() + if l == 2 && h == 3 { f64::NAN } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let heads: Vec<String> = (0..9).map(|h| format!("h{h}")).collect();
    vec![
        line_chart(
            style,
            &dir.join("lines"),
            &LineChart {
                title: "Variance by position",
                x_label: "position",
                y_label: "variance",
                series: &series,
                log_x: true,
                log_y: true,
            },
        )
        .unwrap(),
        line_chart(
            style,
            &dir.join("lines_linear"),
            &LineChart {
                title: "Linear axes",
                x_label: "x",
                y_label: "y",
                series: &series[..1],
                log_x: false,
                log_y: false,
            },
        )
        .unwrap(),
        heatmap(
            style,
            &dir.join("heat"),
            &Heatmap {
                title: "Attention received by the first token",
                x_label: "head",
                y_label: "layer",
                matrix: &matrix,
                x_ticks: &heads,
                y_ticks: &[],
                legend: "alpha_0",
                colours: ColourMap::Viridis,
                range: Some((0.0, 1.0)),
                log: false,
            },
        )
        .unwrap(),
        heatmap(
            style,
            &dir.join("heat_div"),
            &Heatmap {
                title: "Change",
                x_label: "key",
                y_label: "query",
                matrix: &[vec![-1.0, 0.0, 2.0], vec![0.5, -0.25, 0.0]],
                x_ticks: &[],
                y_ticks: &[],
                legend: "delta",
                colours: ColourMap::Diverging,
                range: None,
                log: false,
            },
        )
        .unwrap(),
        bar_chart(
            style,
            &dir.join("bars"),
            &BarChart {
                title: "Validation loss",
                x_label: "model",
                y_label: "loss",
                categories: &["baseline".into(), "head-wise RMSNorm".into()],
                groups: &[BarGroup {
                    name: "4 seeds".into(),
                    values: vec![2.781, 2.742],
                    errors: vec![0.011, 0.007],
                }],
            },
        )
        .unwrap(),
        histogram(
            style,
            &dir.join("hist"),
            &Histogram {
                title: "Activation magnitudes",
                x_label: "|activation|",
                y_label: "count",
                series: &[
                    HistSeries {
                        name: "token 0".into(),
                        values: (1..500)
                            .map(|i| (i as f64 * 0.37).exp() % 1000.0 + 1.0)
                            .collect(),
                    },
                    HistSeries {
                        name: "others".into(),
                        values: (1..500).map(|i| (i % 17) as f64 + 0.5).collect(),
                    },
                ],
                bins: 30,
                log_x: true,
                log_y: true,
            },
        )
        .unwrap(),
    ]
}

#[test]
fn figures_are_byte_identical_svgs_and_readable_pngs_when_the_font_is_present() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let svg_only = FigureStyle::svg_only();
    let fa = draw_all(&svg_only, a.path());
    let fb = draw_all(&svg_only, b.path());
    for (x, y) in fa.iter().zip(&fb) {
        let (sx, sy) = (
            std::fs::read(&x.svg).unwrap(),
            std::fs::read(&y.svg).unwrap(),
        );
        assert!(sx == sy, "{} differs between runs", x.svg.display());
        let text = String::from_utf8(sx).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("<text"),
            "{}",
            x.svg.display()
        );
        assert!(x.png.is_none());
    }
    assert!(
        fa[0]
            .notes
            .iter()
            .any(|n| n.contains("2 point(s) not drawn")),
        "{:?}",
        fa[0].notes
    );
    assert!(
        fa[2]
            .notes
            .iter()
            .any(|n| n.contains("1 cell(s) drawn grey")),
        "{:?}",
        fa[2].notes
    );

    // A missing font: SVG still written, PNG skipped with a note, no failure.
    let missing = FigureStyle::new(Some(Path::new("/nonexistent/DejaVuSans.ttf")));
    assert!(missing.note().unwrap().contains("not found"));
    let c = tempfile::tempdir().unwrap();
    let fc = draw_all(&missing, c.path());
    assert!(fc.iter().all(|f| f.png.is_none() && f.svg.is_file()));
    assert!(fc[0].notes.iter().any(|n| n.contains("PNG skipped")));

    let font = default_font_path();
    if !font.is_file() {
        eprintln!(
            "skipped: PNG checks need {} (`sinkrep fetch`)",
            font.display()
        );
        return;
    }
    let style = FigureStyle::new(Some(&font));
    assert!(style.png_enabled() && style.note().is_none());
    assert!(style.tick_size >= 14.0 && style.width >= 1000);
    let (d, e) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fd = draw_all(&style, d.path());
    let fe = draw_all(&style, e.path());
    for ((x, y), s) in fd.iter().zip(&fe).zip(&fa) {
        let (px, py) = (x.png.as_ref().unwrap(), y.png.as_ref().unwrap());
        let bytes = std::fs::read(px).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(
            bytes == std::fs::read(py).unwrap(),
            "{} differs between runs",
            px.display()
        );
        // SVG layout does not depend on whether the font is there.
        assert!(std::fs::read(&x.svg).unwrap() == std::fs::read(&s.svg).unwrap());
    }
}

#[test]
fn figures_and_report_come_from_run_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, figs) = (dir.path().join("runs"), dir.path().join("figures"));
    let reg = registry(vec![
        Box::new(Toy::new(Mode::Normal)),
        Box::new(Toy::with_id("toy-not-run", Mode::Normal)),
    ]);
    run_replications(&reg, &["toy-variance".into()], &opts(&runs, Scale::Smoke)).unwrap();
    std::fs::create_dir_all(figs.join("toy-variance")).unwrap();
    std::fs::write(figs.join("toy-variance/stale.svg"), "old").unwrap();
    let made = make_figures(&reg, &runs, Scale::Smoke, &figs, &FigureStyle::svg_only()).unwrap();
    assert_eq!(made[0].files, vec![figs.join("toy-variance/variance.svg")]);
    assert!(made[1].skipped.is_some());
    assert!(!figs.join("toy-variance/stale.svg").exists());

    let report = dir.path().join("REPORT.md");
    write_report(&reg, &runs, Scale::Smoke, &figs, &report).unwrap();
    let text = std::fs::read_to_string(&report).unwrap();
    let again = render_report(&reg, &runs, Scale::Smoke, &figs, &report).unwrap();
    assert_eq!(text, again, "report is deterministic");
    for needle in [
        "# sinkrep report: scale `smoke`",
        "## toy-variance: Averaging shrinks variance",
        "> Under a causal mask",
        "Draw 256 sequences",
        "#### Details\n\nThe slope is a least-squares fit",
        "# not a heading: inside a code block",
        "### Verdict: holds",
        "| `first-is-max` | `var_ratio_first_over_rest` | > 2 |",
        "| `log_slope` |",
        "![variance](figures/toy-variance/variance.svg)",
        "| git_rev | abc123 |",
        "| device | cpu |",
        "Uniform values instead of a model's value vectors.",
        "_Not run at this scale",
    ] {
        assert!(
            text.contains(needle),
            "`{needle}` missing from report:\n{text}"
        );
    }
    assert!(
        !text.contains("What would falsify"),
        "protocol section ran past its end"
    );
}

/// A large input is hashed once per process: the cache is keyed by (path, size, mtime),
/// and a change of size or mtime invalidates it.
#[test]
fn input_hashes_are_cached_by_path_size_and_mtime() {
    use sinkrep_runner::files::cached_file_record;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("weights.bin");
    std::fs::write(&p, b"hello").unwrap();
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    let first = cached_file_record(&p).unwrap();
    // Same size and mtime, different bytes: the cached hash comes back (proof of a hit).
    std::fs::write(&p, b"world").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(cached_file_record(&p).unwrap(), first);
    // A different size is a different key.
    std::fs::write(&p, b"hello!").unwrap();
    let third = cached_file_record(&p).unwrap();
    assert_eq!(third.size, 6);
    assert_eq!(third.sha256, sinkrep_inputs::sha256_bytes(b"hello!"));
}

/// Per-scale protocol sizes come from the claim file; unknown keys and scales the claim
/// does not declare are errors naming the file.
#[test]
fn scale_params_deserialise_strictly() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Sizes {
        steps: usize,
    }
    let with = |table: &str| format!("{INTERVAL_CLAIM}\n{table}");
    let c = Claim::parse(&with("[scale.smoke]\nsteps = 7\n"), "claim.toml").unwrap();
    assert_eq!(c.scale_params::<Sizes>(Scale::Smoke).unwrap().steps, 7);
    let c = Claim::parse(&with("[scale.smoke]\nsteps = 7\nstpes = 8\n"), "claim.toml").unwrap();
    let e = c
        .scale_params::<Sizes>(Scale::Smoke)
        .unwrap_err()
        .to_string();
    assert!(e.contains("claim.toml") && e.contains("stpes"), "{e}");
    let e = Claim::parse(&with("[scale.gpu]\nsteps = 7\n"), "claim.toml").unwrap_err();
    assert!(e.to_string().contains("scale.gpu"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Claims on several pretrained models

/// The sample claim with two models and its first check judged per model.
fn two_model_claim(id: &str) -> Claim {
    let text = CLAIM
        .replace("id = \"toy-variance\"", &format!("id = \"{id}\""))
        .replace(
            "scales = [\"smoke\", \"cpu\", \"gpu\"]\n",
            "scales = [\"smoke\", \"cpu\", \"gpu\"]\nmodels = [\"small\", \"big\"]\n",
        )
        .replacen(
            "description = \"Var(o_0) exceeds",
            "per_model = true\ndescription = \"Var(o_0) exceeds",
            1,
        )
        .replace(
            "log_slope = { abs = 0.01 }",
            "log_slope = { abs = 0.01 }\nvar_ratio_first_over_rest = { abs = 0.5 }",
        );
    Claim::parse(&text, "tests/data/claim.toml").unwrap()
}

#[test]
fn a_per_model_check_is_judged_on_every_model_with_the_same_threshold() {
    let c = two_model_claim("toy-variance");
    assert_eq!(c.models, ["small", "big"]);
    let ids: Vec<&str> = c.checks.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "first-is-max",
            "first-is-max-big",
            "decay-exponent",
            "long-context"
        ]
    );
    let big = &c.checks[1];
    assert_eq!(big.metric, "big.var_ratio_first_over_rest");
    assert_eq!(big.model.as_deref(), Some("big"));
    assert_eq!(
        (big.op, big.threshold),
        (c.checks[0].op, c.checks[0].threshold)
    );
    assert_eq!(c.checks[0].model.as_deref(), Some("small"));
    assert_eq!(c.checks[2].model, None);
    // The override of the primary's metric covers the other model's copy.
    assert_eq!(
        c.tolerance.for_metric("big.var_ratio_first_over_rest").abs,
        0.5
    );
    assert_eq!(sinkrep_runner::model_metric(&c.models, "small", "m"), "m");
    assert_eq!(sinkrep_runner::model_metric(&c.models, "big", "m"), "big.m");
    // per_model without models is refused, naming the field.
    let text = CLAIM.replacen(
        "description = \"Var(o_0) exceeds",
        "per_model = true\ndescription = \"Var(o_0) exceeds",
        1,
    );
    let err = Claim::parse(&text, "c.toml").unwrap_err().to_string();
    assert!(err.contains("per_model") && err.contains("models"), "{err}");
}

/// Records the same section for each model of its claim, through `for_model`.
struct TwoModels {
    claim: Claim,
}

impl Replication for TwoModels {
    fn claim(&self) -> &Claim {
        &self.claim
    }
    fn readme(&self) -> &str {
        README
    }
    fn run(&self, ctx: &mut RunContext) -> anyhow::Result<()> {
        let models = self.claim.models.clone();
        for (k, m) in models.iter().enumerate() {
            ctx.for_model(&models, m, |ctx| -> anyhow::Result<()> {
                assert_eq!(ctx.model_scope(), (k > 0).then_some(m.as_str()));
                // "small" passes the check (3 > 2), "big" does not (1).
                ctx.metric("var_ratio_first_over_rest", if k == 0 { 3.0 } else { 1.0 })?;
                ctx.config("model", m)?;
                ctx.write_text("table.csv", "x\n1\n")?;
                Ok(())
            })?;
        }
        assert_eq!(ctx.model_scope(), None);
        ctx.metric("log_slope", -1.0)?;
        Ok(())
    }
    fn figures(&self, _: &Path, _: &Path, _: &FigureStyle) -> anyhow::Result<Vec<PathBuf>> {
        Ok(vec![])
    }
}

#[test]
fn for_model_scopes_metrics_config_and_artifacts_and_verdicts_go_by_model() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(vec![Box::new(TwoModels {
        claim: two_model_claim("two"),
    })]);
    let out = dir.path().join("runs");
    run_replications(&reg, &all(), &opts(&out, Scale::Smoke)).unwrap();
    let rd = run_dir(&out, Scale::Smoke, "two");
    assert!(rd.join("table.csv").is_file() && rd.join("big/table.csv").is_file());
    let m = Manifest::load(&rd).unwrap();
    assert!(m.artifacts.contains_key("big/table.csv"));
    assert_eq!(m.config["model"], "small");
    assert_eq!(m.config["big.model"], "big");
    let v = sinkrep_runner::read_verdicts(&rd).unwrap();
    let by: Vec<(&str, Verdict, usize, usize)> = v
        .by_model
        .iter()
        .map(|b| (b.model.as_str(), b.verdict, b.passed, b.total))
        .collect();
    assert_eq!(
        by,
        [
            ("small", Verdict::Holds, 1, 1),
            ("big", Verdict::DoesNotHold, 0, 1)
        ]
    );
    // The report shows the models side by side, same threshold in one row.
    let report = sinkrep_runner::render_report(
        &reg,
        &out,
        Scale::Smoke,
        &dir.path().join("figures"),
        &dir.path().join("REPORT.md"),
    )
    .unwrap();
    assert!(report.contains("**By model.**"), "{report}");
    let row = report
        .lines()
        .find(|l| l.contains("`first-is-max`") && l.contains("(holds)"))
        .expect("side-by-side row");
    assert!(
        row.contains("3 (holds)") && row.contains("1 (does not hold"),
        "{row}"
    );
}
