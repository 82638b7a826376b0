//! Claim 4 judged from runs trained elsewhere (`sinkrep run headwise-rmsnorm --from-runs`):
//! `scripts/peers/train_ddp.py` under torchrun (2 processes, gloo on CPU) then
//! `--from-runs`; the same on `sinkrep train` runs, with the import's one-line refusals;
//! and one config trained by both trainers, compared on the same held-out windows.
//!
//! The Python tests need a Python with torch: `sinkrep_inputs::python()`, which under
//! `just test` is the libtorch venv's (the one the build links against), so they run in
//! CI; elsewhere they print a visible skip, as the pinned-input tests do.

use std::path::Path;
use std::process::{Command, Output};

use crate::{sinkrep, stderr};

use sinkrep_model::{Hooks, Model};
use sinkrep_runner::{CsvTable, Manifest};
use sinkrep_subjects::SubjectSizes;
use sinkrep_train::data::{EVAL_SEED, STREAM_EVAL};
use sinkrep_train::{Corpus, Sampler, TokenData, TokenizerKind};
use tch::Device;

const ID: &str = "headwise-rmsnorm";

fn corpus_present() -> bool {
    let ok = sinkrep_analysis::pinned::text_files().is_ok();
    if !ok {
        eprintln!("skipped: corpus not fetched (run `just fetch`)");
    }
    ok
}

/// A Python that imports torch, or a visible skip.
fn python_with_torch() -> Option<String> {
    let py = sinkrep_inputs::python();
    let ok = Command::new(&py)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: {py} cannot import torch (`just test` uses the libtorch venv's)");
    }
    ok.then_some(py)
}

/// `torchrun --standalone --nproc_per_node N scripts/peers/train_ddp.py ARGS`.
fn train_ddp(py: &str, nproc: usize, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peers/train_ddp.py");
    let o = Command::new(py)
        .args(["-m", "torch.distributed.run", "--standalone"])
        .arg(format!("--nproc_per_node={nproc}"))
        .arg(&script)
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run torchrun");
    assert!(o.status.success(), "train_ddp.py {args:?}: {}", stderr(&o));
}

/// `sinkrep run headwise-rmsnorm --from-runs DIR --scale smoke` into `out`.
fn from_runs(dir: &Path, out: &Path) -> Output {
    sinkrep(&[
        "run",
        ID,
        "--from-runs",
        dir.to_str().unwrap(),
        "--scale",
        "smoke",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// The claim-4 section a `--from-runs` run must produce, whoever trained: verdicts,
/// metrics over both seeds, tables with one row per imported checkpoint, the manifest's
/// record of the external training and of every imported file, figures and a report.
fn assert_claim4_section(runs: &Path, out: &Path, measured_steps: &[usize]) {
    let rd = out.join("smoke").join(ID);
    for f in ["verdicts.json", "metrics.json", "manifest.json"] {
        assert!(rd.join(f).is_file(), "missing {f}");
    }
    let m = Manifest::load(&rd).unwrap();
    assert_eq!(m.config["training"], "external");
    assert_eq!(m.config["from_runs"], runs.display().to_string());
    assert_eq!(m.seeds, vec![0, 1]);
    // Every imported file, hashed: both logs and every file of every model folder.
    let hf_weights = runs.join("headwise/seed-1/hf/model.safetensors");
    let rec = &m.inputs[&hf_weights.display().to_string()];
    assert_eq!(
        rec.sha256,
        sinkrep_inputs::sha256_file(&hf_weights).unwrap()
    );
    for v in ["baseline", "headwise"] {
        for s in 0..2 {
            let run = runs.join(format!("{v}/seed-{s}"));
            for f in ["train_log.csv", "val_log.csv", "hf/config.json"] {
                let k = run.join(f).display().to_string();
                assert!(
                    m.inputs.contains_key(&k),
                    "{k} not in the manifest's inputs"
                );
            }
        }
    }

    let metrics = sinkrep_runner::read_metrics(&rd).unwrap();
    let get = |k: &str| metrics.get(k).copied().flatten();
    for k in [
        "paired.val_loss.final.headwise_minus_baseline",
        "paired.val_loss.early.headwise_minus_baseline.ci95_lo",
        "ratio.dom_ratio_max.headwise_over_baseline",
        "paired.abs_log_out_var_ratio.headwise_minus_baseline",
        "final.headwise.eff_rank",
    ] {
        assert!(
            get(k).is_some_and(f64::is_finite),
            "metric {k}: {:?}",
            get(k)
        );
    }
    assert_eq!(
        get("paired.val_loss.final.headwise_minus_baseline.n"),
        Some(2.0)
    );
    assert!(
        !metrics.contains_key("final.gated.val_loss"),
        "no gated runs imported"
    );
    assert!(
        !metrics.keys().any(|k| k.starts_with("grid.")),
        "no grid imported"
    );
    // The losses are the imported logs' own.
    let last_val = |v: &str, s: u64| -> f64 {
        let t = CsvTable::read(&runs.join(format!("{v}/seed-{s}/val_log.csv"))).unwrap();
        *t.column_f64("val_loss").unwrap().last().unwrap()
    };
    let want = (last_val("baseline", 0) + last_val("baseline", 1)) / 2.0;
    let got = get("final.baseline.val_loss").unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    let ev = CsvTable::read(&rd.join("eval_metrics.csv")).unwrap();
    assert_eq!(ev.rows.len(), 2 * 2 * measured_steps.len());
    let steps: Vec<usize> = ev.column_f64("step").unwrap()[..measured_steps.len()]
        .iter()
        .map(|&s| s as usize)
        .collect();
    assert_eq!(steps, measured_steps);

    let figs = out.join("figures");
    let o = sinkrep(&[
        "figures",
        "--scale",
        "smoke",
        "--runs",
        out.to_str().unwrap(),
        "--out",
        figs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(figs.join(ID).join("val_loss.svg").is_file());
    let report = out.join("REPORT.md");
    let o = sinkrep(&[
        "report",
        "--scale",
        "smoke",
        "--runs",
        out.to_str().unwrap(),
        "--figures",
        figs.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains(&format!("## {ID}:")), "no claim-4 section");
    assert!(text.contains("config `training` | `external`"), "{text}");
}

/// The end-to-end path: train_ddp.py under torchrun with 2 processes (gloo on
/// CPU) at smoke size for baseline and head-wise over the smoke protocol's 2 seeds, then
/// `--from-runs` on its output gives claim 4's section.
#[test]
fn torchrun_ddp_runs_are_judged_from_runs() {
    if !corpus_present() {
        return;
    }
    let Some(py) = python_with_torch() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("ddp");
    let runs_s = runs.to_str().unwrap();
    for v in ["baseline", "headwise"] {
        for seed in ["0", "1"] {
            train_ddp(
                &py,
                2,
                &[
                    "--variant",
                    v,
                    "--seed",
                    seed,
                    "--scale",
                    "smoke",
                    "--out",
                    runs_s,
                ],
            );
        }
    }
    let out = tmp.path().join("out");
    let o = from_runs(&runs, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    // train_ddp.py checkpoints every steps/4 = 5 steps; the last one is read from hf/.
    assert_claim4_section(&runs, &out, &[5, 10, 15, 20]);
}

/// `sinkrep train` runs import too (sinkrep checkpoints along training, `hf/` at the
/// end), and a broken import is refused in one line before anything is written: the
/// previous run in the output folder stays whole.
#[test]
fn sinkrep_train_runs_are_judged_and_broken_imports_refused() {
    if !corpus_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    for v in ["baseline", "headwise"] {
        for seed in ["0", "1"] {
            let dir = runs.join(v).join(format!("seed-{seed}"));
            let o = sinkrep(&[
                "train",
                "--variant",
                v,
                "--scale",
                "smoke",
                "--seed",
                seed,
                "--device",
                "cpu",
                "--out",
                dir.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
    }
    let out = tmp.path().join("out");
    let o = from_runs(&runs, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_claim4_section(&runs, &out, &[5, 10, 15, 20]);
    let manifest = out.join("smoke").join(ID).join("manifest.json");
    let before = std::fs::read(&manifest).unwrap();

    // Each breakage on a fresh copy of the runs: (what, how, what the error must say).
    type Break = fn(&Path);
    let cases: [(&str, Break, &str); 7] = [
        (
            "missing seed folder",
            |r| std::fs::remove_dir_all(r.join("headwise/seed-1")).unwrap(),
            "headwise/seed-1: missing",
        ),
        (
            "missing variant",
            |r| std::fs::remove_dir_all(r.join("baseline")).unwrap(),
            "baseline: missing",
        ),
        (
            "CSV cut inside a row",
            |r| truncate_by(&r.join("baseline/seed-0/val_log.csv"), 3),
            "val_log.csv: does not end with a line break (truncated?)",
        ),
        (
            "CSV cut after a row: the judged final step is gone",
            |r| drop_last_line(&r.join("baseline/seed-0/val_log.csv")),
            "validation log ends at step 15, the training log at step 20",
        ),
        (
            "NaN loss",
            |r| replace_last_field(&r.join("headwise/seed-0/train_log.csv"), 2, "NaN"),
            "train_log.csv: line 21: train_loss is NaN (not finite)",
        ),
        (
            "missing judged step",
            |r| drop_line_of_step(&r.join("baseline/seed-1/val_log.csv"), 10),
            "no validation loss at step 10, a judged step of the smoke protocol",
        ),
        (
            "weights cut short",
            |r| truncate_by(&r.join("headwise/seed-0/hf/model.safetensors"), 100),
            "model.safetensors:",
        ),
    ];
    for (what, breaker, says) in cases {
        let broken = tmp.path().join("broken");
        if broken.exists() {
            std::fs::remove_dir_all(&broken).unwrap();
        }
        copy_dir(&runs, &broken);
        breaker(&broken);
        let o = from_runs(&broken, &out);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
        assert_eq!(
            std::fs::read(&manifest).unwrap(),
            before,
            "{what}: run touched"
        );
    }
    let o = from_runs(&tmp.path().join("nowhere"), &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("nowhere: no such folder"),
        "{}",
        stderr(&o)
    );
    let o = sinkrep(&["run", "all", "--from-runs", runs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("claim 4 only"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&manifest).unwrap(), before);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn truncate_by(path: &Path, n: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - n).unwrap();
}

fn lines_of(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn drop_last_line(path: &Path) {
    let mut l = lines_of(path);
    l.pop();
    write_lines(path, &l);
}

fn drop_line_of_step(path: &Path, step: usize) {
    let l: Vec<String> = lines_of(path)
        .into_iter()
        .filter(|l| !l.starts_with(&format!("{step},")))
        .collect();
    write_lines(path, &l);
}

fn replace_last_field(path: &Path, field: usize, value: &str) {
    let mut l = lines_of(path);
    let last = l.pop().unwrap();
    let mut f: Vec<&str> = last.split(',').collect();
    f[field] = value;
    l.push(f.join(","));
    write_lines(path, &l);
}

/// Mean next-token loss of the HF folder `dir` on `n` batches of the validation sampler
/// (sinkrep-train's fixed validation windows; the same tokens for every model).
fn heldout_loss(dir: &Path, data: &TokenData, batch: usize, seq_len: usize, n: u64) -> f64 {
    let model = Model::from_hf_dir(dir, Device::Cpu).unwrap();
    let sampler = Sampler::new(&data.val, EVAL_SEED, STREAM_EVAL, batch, seq_len).unwrap();
    tch::no_grad(|| {
        (0..n)
            .map(|i| {
                let (x, y) = sampler.batch(i, Device::Cpu);
                model
                    .loss(&x, &y, &mut Hooks::new())
                    .unwrap()
                    .double_value(&[])
            })
            .sum::<f64>()
            / n as f64
    })
}

/// The paired config: the smoke model, trained long enough to leave the unigram plateau.
fn paired_sizes() -> SubjectSizes {
    SubjectSizes {
        batch: PAIRED_BATCH,
        steps: PAIRED_STEPS,
        warmup: PAIRED_STEPS / 10,
        eval_every: PAIRED_STEPS / 2,
        ..SubjectSizes::at(sinkrep_runner::Scale::Smoke).unwrap()
    }
}

const PAIRED_STEPS: usize = 500;
const PAIRED_BATCH: usize = 16;
/// How far apart the two trainers' mean held-out losses (over `paired_seeds()`) may be,
/// in nats. Measured with `SINKREP_PAIRED_SEEDS=6` (2026-12-03, this machine): the
/// per-seed held-out loss has sd 0.023 under `sinkrep train` (mean 2.324) and 0.021 under
/// train_ddp.py (mean 2.339); the 6-seed means differ by +0.015, 1.2 standard errors, so
/// no systematic difference shows. The difference of two 2-seed means then has sd about
/// 0.022, and 0.08 is 3.6 of those (a false alarm about 3 times in 10,000). It bites:
/// train_ddp.py with half the learning rate lands +0.109 away (3 seeds) and fails;
/// dropping its weight decay and warm-up moves it +0.019, which this cannot see. An
/// architecture mismatch (RoPE, norms, variant tensors) fails by far more, as the models
/// are scored by sinkrep's own loader.
const PAIRED_TOL: f64 = 0.08;

/// Seeds each trainer trains (`SINKREP_PAIRED_SEEDS=n` trains n, to measure the spread
/// behind PAIRED_TOL).
fn paired_seeds() -> Vec<u64> {
    let n = std::env::var("SINKREP_PAIRED_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    (0..n).collect()
}

/// One config trained by `sinkrep train` and by `train_ddp.py` (1 process): the final
/// models, scored by the same code on the same held-out windows, agree within
/// PAIRED_TOL. They cannot agree bit for bit: the batches (SplitMix64 vs torch's
/// generator) and the initial weights (libtorch vs torch draws) differ, so the two
/// trainers are two seeds of one training, and the tolerance is seed noise.
#[test]
fn sinkrep_train_and_train_ddp_reach_the_same_loss() {
    if !corpus_present() {
        return;
    }
    let Some(py) = python_with_torch() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sizes = paired_sizes();
    let data = TokenData::build(&Corpus::shakespeare().unwrap(), TokenizerKind::Bytes).unwrap();
    let score = |dir: &Path| heldout_loss(dir, &data, 32, sizes.seq_len, 8);
    let ddp_args = |s: &SubjectSizes| -> Vec<String> {
        let mut a = Vec::new();
        for (k, v) in [
            ("d-model", s.d_model.to_string()),
            ("n-layers", s.n_layers.to_string()),
            ("n-heads", s.n_heads.to_string()),
            ("d-ff", s.d_ff.to_string()),
            ("seq-len", s.seq_len.to_string()),
            ("batch", s.batch.to_string()),
            ("steps", s.steps.to_string()),
            ("warmup", s.warmup.to_string()),
            ("lr", s.lr.to_string()),
            ("min-lr", s.min_lr.to_string()),
            ("weight-decay", s.weight_decay.to_string()),
            ("eval-every", s.eval_every.to_string()),
            ("eval-batches", s.eval_batches.to_string()),
        ] {
            a.push(format!("--{k}"));
            a.push(v);
        }
        a
    };
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for seed in paired_seeds() {
        let cfg = sizes.train_config(sinkrep_model::AttnVariant::Baseline, seed, "cpu");
        let cfg_path = tmp.path().join(format!("config-{seed}.json"));
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let run = tmp.path().join(format!("sinkrep-{seed}"));
        let o = sinkrep(&[
            "train",
            "--variant",
            "baseline",
            "--config",
            cfg_path.to_str().unwrap(),
            "--seed",
            &seed.to_string(),
            "--device",
            "cpu",
            "--out",
            run.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        ours.push(score(&run.join("hf")));

        let out = tmp.path().join("ddp");
        let mut args: Vec<String> = vec![
            "--variant".into(),
            "baseline".into(),
            "--seed".into(),
            seed.to_string(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ];
        args.extend(ddp_args(&sizes));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        train_ddp(&py, 1, &args);
        theirs.push(score(&out.join(format!("baseline/seed-{seed}/hf"))));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let diff = mean(&theirs) - mean(&ours);
    eprintln!("held-out loss: sinkrep train {ours:?}, train_ddp.py {theirs:?}, diff {diff:+.4}");
    assert!(
        diff.abs() < PAIRED_TOL,
        "train_ddp.py {theirs:?} vs sinkrep train {ours:?}: {diff:+.4} nats apart (tolerance {PAIRED_TOL})"
    );
}
