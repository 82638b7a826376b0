//! Claim 4 judged from runs trained elsewhere: `sinkrep run headwise-rmsnorm --from-runs
//! DIR`. DIR holds one folder per variant and seed, in the layout `sinkrep train` and
//! `scripts/peers/train_ddp.py` write (`sinkrep_subjects::imported`):
//!
//! ```text
//! DIR/<variant>/seed-<N>/   variant: baseline, headwise (required), headwise-perhead, gated
//! ```
//!
//! The protocol is the scale's (`claim.toml`, `[scale.<s>]`): its seeds (from `--seed`),
//! its judged steps, which every run must have evaluated and the last of which must be
//! the run's last step, and its analysis windows. The same metrics, tables and checks as a
//! self-trained run follow, with the sink, DomRatio and variance measurements taken on the
//! imported checkpoints (every `checkpoints/step-N/` and the final `hf/`) instead of at
//! every evaluation step. The sensitivity grid is not imported (its neighbours are other
//! trainings). [`Import::read`] checks the whole import before the runner touches the run
//! folder, so a broken one is refused in one line with nothing written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Result};
use serde::Serialize;
use sinkrep_analysis::pinned;
use sinkrep_runner::{Claim, FigureStyle, Replication, RunContext, Scale};
use sinkrep_subjects::imported::{measure_all, ImportedRun, Weights};

use crate::{
    record_measure_config, synthetic_section, write_metrics, write_tables, RunResult, Sizes,
    VARIANTS,
};

/// Variants an import must have: the ones the checks judge.
const REQUIRED: [&str; 2] = ["baseline", "headwise"];

/// A variant's folder: its `sinkrep train --variant` / `train_ddp.py --variant` name.
pub fn variant_dir(variant: &str) -> String {
    variant.replace('_', "-")
}

/// The runs of one import, read and checked, in the design's order (seeds, then variants).
#[derive(Debug)]
pub struct Import {
    pub dir: PathBuf,
    pub scale: Scale,
    pub seeds: Vec<u64>,
    /// (variant, seed, run).
    pub runs: Vec<(&'static str, u64, ImportedRun)>,
}

impl Import {
    /// Reads every run the protocol of `scale` needs from `dir` (seeds `base_seed`, ...).
    /// Fails in one line on a missing folder, log or judged step, a malformed or truncated
    /// log, a non-finite loss, a weight file cut short, or models that do not fit the
    /// protocol (vocabulary, context).
    pub fn read(dir: &Path, scale: Scale, base_seed: u64) -> Result<Import> {
        ensure!(
            dir.is_dir(),
            "--from-runs {}: no such folder",
            dir.display()
        );
        let s = Sizes::at(scale)?;
        let seeds: Vec<u64> = (0..s.seeds as u64).map(|i| base_seed + i).collect();
        let mut variants = Vec::new();
        for (name, _) in VARIANTS {
            let vdir = dir.join(variant_dir(name));
            if vdir.is_dir() {
                variants.push(name);
            } else if REQUIRED.contains(&name) {
                bail!(
                    "{}: missing (claim 4 compares `baseline` and `headwise` runs; `headwise-perhead` and `gated` are optional)",
                    vdir.display()
                );
            }
        }
        let [.., final_step] = s.judged_steps;
        let mut runs = Vec::new();
        for &seed in &seeds {
            for &name in &variants {
                let rdir = dir.join(variant_dir(name)).join(format!("seed-{seed}"));
                ensure!(
                    rdir.is_dir(),
                    "{}: missing (the {scale} protocol judges seeds {}..={} of every variant; --seed sets the first)",
                    rdir.display(),
                    seeds[0],
                    seeds[seeds.len() - 1]
                );
                let run = ImportedRun::read(&rdir)?;
                for step in s.judged_steps {
                    ensure!(
                        run.has_val_at(step),
                        "{}: no validation loss at step {step}, a judged step of the {scale} protocol (judged steps {:?})",
                        rdir.join(sinkrep_train::train::VAL_CSV).display(),
                        s.judged_steps
                    );
                }
                ensure!(
                    run.last_step() == final_step,
                    "{}: the run ends at step {}, the {scale} protocol's final judged step is {final_step}",
                    rdir.display(),
                    run.last_step()
                );
                runs.push((name, seed, run));
            }
        }
        let (_, _, first) = &runs[0];
        let sub = &s.subject;
        for (_, _, r) in &runs {
            let mut c = r.config.clone();
            c.attn_variant = first.config.attn_variant;
            ensure!(
                c == first.config && r.tokens_per_step == first.tokens_per_step,
                "{}: another model size or batch than {} (paired comparisons need one training configuration)",
                r.dir.display(),
                first.dir.display()
            );
        }
        let cfg = &first.config;
        let vocab_ok = cfg.vocab_size == 256 || Some(cfg.vocab_size) == sub.bpe_vocab;
        ensure!(
            vocab_ok,
            "{}: a vocabulary of {} tokens; the {scale} protocol analyses byte models (256) or its BPE ({})",
            first.dir.display(),
            cfg.vocab_size,
            sub.bpe_vocab.map_or("none".to_string(), |v| v.to_string())
        );
        ensure!(
            cfg.max_seq_len >= sub.seq_len,
            "{}: a context of {} tokens; the {scale} protocol analyses windows of {}",
            first.dir.display(),
            cfg.max_seq_len,
            sub.seq_len
        );
        Ok(Import {
            dir: dir.to_path_buf(),
            scale,
            seeds,
            runs,
        })
    }

    fn variants(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = Vec::new();
        for (name, _, _) in &self.runs {
            if !v.contains(name) {
                v.push(name);
            }
        }
        v
    }
}

/// What the manifest records of one imported run.
#[derive(Serialize)]
struct RunRecord {
    variant: &'static str,
    seed: u64,
    /// Relative to the import folder.
    dir: String,
    last_step: usize,
    tokens_per_step: usize,
    /// Steps of the models measured (the last is `hf/`).
    measured_steps: Vec<usize>,
    /// `hf` (HF folders) or `sinkrep-train` (sinkrep checkpoints before `hf/`).
    checkpoints: &'static str,
}

/// Claim 4's replication judging `import` instead of training: the registry's
/// `headwise-rmsnorm` (claim, README, figures) with this `run`.
pub fn replication(import: Import) -> Result<Box<dyn Replication>> {
    Ok(Box::new(FromRuns {
        inner: crate::replication()?,
        import,
    }))
}

struct FromRuns {
    inner: Box<dyn Replication>,
    import: Import,
}

impl Replication for FromRuns {
    fn claim(&self) -> &Claim {
        self.inner.claim()
    }

    fn readme(&self) -> &str {
        self.inner.readme()
    }

    fn run(&self, ctx: &mut RunContext) -> Result<()> {
        run(self.inner.claim(), &self.import, ctx)
    }

    fn figures(&self, run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
        self.inner.figures(run_dir, fig_dir, style)
    }
}

fn run(claim: &Claim, import: &Import, ctx: &mut RunContext) -> Result<()> {
    let mut s: Sizes = claim.scale_params(ctx.scale())?;
    s.validate()?;
    ensure!(
        ctx.scale() == import.scale && ctx.seeds(s.seeds) == import.seeds,
        "the import was read for scale {} and seeds {:?}",
        import.scale,
        import.seeds
    );
    let device = ctx.device_name().to_string();
    let dev = pinned::device(&device)?;
    ctx.config("training", "external")?;
    ctx.config("from_runs", import.dir.display().to_string())?;
    ctx.config(
        "grid",
        "not run: the sensitivity grid's neighbours are other trainings, not imported",
    )?;
    ctx.config("judged_steps", s.judged_steps)?;
    ctx.config("variants", import.variants())?;
    record_measure_config(ctx)?;
    let (_, _, first) = &import.runs[0];
    ctx.config("model_config", &first.config)?;
    let records: Vec<RunRecord> = import
        .runs
        .iter()
        .map(|(variant, seed, r)| RunRecord {
            variant,
            seed: *seed,
            dir: r
                .dir
                .strip_prefix(&import.dir)
                .unwrap_or(&r.dir)
                .display()
                .to_string(),
            last_step: r.last_step(),
            tokens_per_step: r.tokens_per_step,
            measured_steps: r.models.iter().map(|m| m.step).collect(),
            checkpoints: if r.models[..r.models.len() - 1]
                .iter()
                .any(|m| matches!(m.weights, Weights::Checkpoint(_)))
            {
                "sinkrep-train"
            } else {
                "hf"
            },
        })
        .collect();
    ctx.config("imported_runs", &records)?;
    for (_, _, r) in &import.runs {
        for f in &r.files {
            ctx.input(f)?;
        }
    }

    // The analysis windows of the scale, in the imported models' tokens.
    let mut sub = s.subject.clone();
    if first.config.vocab_size == 256 {
        sub.bpe_vocab = None;
    }
    ctx.config("analysis_tokenizer", sub.tokenizer())?;
    let data = sinkrep_subjects::corpus(ctx, &sub)?;
    ctx.config("data_fingerprint", &data.fingerprint)?;
    let windows = sinkrep_subjects::analysis_windows(&data, sub.analysis_windows, sub.seq_len)?;
    let runs: Vec<&ImportedRun> = import.runs.iter().map(|r| &r.2).collect();
    let jobs = ctx.jobs();
    let measured = ctx.stage("measure imported checkpoints", |_| {
        measure_all(&runs, &windows, sub.precision, dev, jobs)
    })?;
    let all: Vec<RunResult> = import
        .runs
        .iter()
        .zip(measured)
        .map(|((variant, seed, _), m)| RunResult {
            config: "judged".to_string(),
            variant,
            seed: *seed,
            run: Arc::new(m),
        })
        .collect();
    let judged: Vec<&RunResult> = all.iter().collect();
    write_tables(ctx, &judged, &all)?;
    s.grid.clear();
    write_metrics(ctx, &all, &s)?;
    // The synthetic section is not imported: its small runs train here (the same
    // protocol as a self-trained run), so its checks are judged either way.
    synthetic_section(ctx, &s.synthetic, &device)
}
