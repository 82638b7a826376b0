//! Claim 3/4 of the paper: a sink can be created at any position k, by mask-to-self
//! (token k attends only to itself, as the first token does) or by amplifying the
//! variance of k's value-aggregation output, o'_k = mu + lambda (o_k - mu); plain
//! scaling lambda o_k does not. Measured on the pinned SmolLM2-135M with the controls
//! the README lists.
//!
//! Subjects: `measure` takes any `Decoder` and token sequences: each pinned pretrained
//! model of the claim's `models` (SmolLM2-135M, Gemma-3-270M), then a model trained from
//! scratch (sinkrep-train; `scratch`).

pub mod figures;
pub mod metrics;
pub mod plan;
pub mod rows;
pub mod scratch;

use std::path::{Path, PathBuf};

use anyhow::Context;
use sinkrep_analysis::{analyze, pinned, AnalyzeOptions};
use sinkrep_model::Decoder;
use sinkrep_runner::{Claim, FigureStyle, RunContext, Study};

use plan::{InputKind, Plan, Spec, PRIMARY_LAYERS};
use rows::{alpha_rows, summarize, LayerRow, Row};
use sinkrep_stats::SINK_EPS;
use sinkrep_subjects::Subject;

/// The study: the plan's cells on the pinned model, then the from-scratch section.
pub struct ArbitrarySinks;

sinkrep_runner::replication!(ArbitrarySinks);

/// What one cell produced.
pub struct Measured {
    pub row: Row,
    pub layers: Vec<LayerRow>,
    /// Per-head alpha rows (baseline and mask-to-self cells only).
    pub alpha: Vec<rows::AlphaRow>,
}

/// Runs every cell of `specs` on `model`: `inputs` gives the sequences of each kind (all
/// of length `plan.seq_len`). `on_cell` is called after each cell (progress).
pub fn measure(
    model: &dyn Decoder,
    inputs: &[(InputKind, Vec<Vec<i64>>)],
    plan: &Plan,
    specs: &[Spec],
    direction_seed: u64,
    on_cell: &mut dyn FnMut(),
) -> anyhow::Result<Vec<Measured>> {
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let seqs = inputs
            .iter()
            .find(|(k, _)| *k == spec.kind)
            .map(|(_, s)| s)
            .with_context(|| format!("no {} sequences were prepared", spec.kind.as_str()))?;
        let opts = AnalyzeOptions {
            sink_pos: spec.report_pos,
            eps: SINK_EPS,
            // One batch: `centered-batch`'s mean is over all the kind's sequences.
            batch: seqs.len().max(1),
            interventions: spec.interventions(direction_seed),
            ..AnalyzeOptions::default()
        };
        let rep = analyze(model, seqs, &opts, &mut |_| {}).with_context(|| {
            format!(
                "cell {i} ({}, {} input, k = {})",
                spec.group.name(),
                spec.kind.as_str(),
                spec.k
            )
        })?;
        let (row, layers) = summarize(i, spec, &rep, plan.last_pos());
        let alpha = if spec.amp.is_none() {
            alpha_rows(&row, &rep)
        } else {
            Vec::new()
        };
        out.push(Measured { row, layers, alpha });
        on_cell();
    }
    Ok(out)
}

/// The plan's cells on pinned model `alias`, inside its [`RunContext::for_model`] scope.
/// `seeds`: text windows, random tokens, random directions. A BOS-adding model (Gemma-3)
/// reads BOS + text, as trained: its position 0 is the BOS, positions k >= 1 are text.
fn run_model(
    ctx: &mut RunContext,
    plan: &Plan,
    alias: &str,
    (text_seed, random_seed, direction_seed): (u64, u64, u64),
) -> anyhow::Result<()> {
    let device = pinned::device(ctx.device_name())?;
    let (model, tok, model_path) =
        ctx.stage("load model", |_| pinned::load_pinned(alias, device))?;
    ctx.input(&model_path)?;
    for f in pinned::text_files()? {
        ctx.input(&f)?;
    }
    let cfg = model.config();
    if plan.last_pos() >= cfg.max_seq_len {
        anyhow::bail!(
            "sequences of {} tokens exceed the model's context of {}",
            plan.seq_len,
            cfg.max_seq_len
        );
    }
    let inputs: Vec<(InputKind, Vec<Vec<i64>>)> = plan
        .kinds
        .iter()
        .map(|&kind| -> anyhow::Result<_> {
            let seqs = match kind {
                InputKind::Text => {
                    pinned::model_sequences(&tok, plan.n_seqs, plan.seq_len, text_seed, None)?
                }
                InputKind::Random => pinned::model_sequences(
                    &tok,
                    plan.n_seqs,
                    plan.seq_len,
                    random_seed,
                    Some(cfg.vocab_size),
                )?,
            };
            Ok((kind, seqs))
        })
        .collect::<anyhow::Result<_>>()?;
    let specs = plan.specs();

    ctx.config("model", pinned::pinned_model(alias)?.name)?;
    ctx.config("bos_prefix", pinned::bos_prefix(&tok))?;
    ctx.config("cells", specs.len())?;
    ctx.write_json(
        "inputs.json",
        &inputs
            .iter()
            .map(|(k, s)| (k.as_str().to_string(), s.clone()))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )?;

    let measured = ctx.stage("measure", |ctx| {
        let pb = ctx.progress(specs.len() as u64, "cells");
        let r = measure(&*model, &inputs, plan, &specs, direction_seed, &mut || {
            pb.inc(1)
        });
        pb.finish_and_clear();
        r
    })?;

    ctx.stage("write", |ctx| -> anyhow::Result<()> {
        ctx.write_rows(rows::CELLS_CSV, measured.iter().map(|m| m.row.clone()))?;
        ctx.write_rows(
            rows::PER_LAYER_CSV,
            measured
                .iter()
                .flat_map(|m| m.layers.iter().map(|l| l.csv(&m.row))),
        )?;
        ctx.write_rows(
            rows::ALPHA_CSV,
            measured.iter().flat_map(|m| m.alpha.iter().cloned()),
        )?;
        let rows: Vec<Row> = measured.iter().map(|m| m.row.clone()).collect();
        let layers: Vec<Vec<LayerRow>> = measured.iter().map(|m| m.layers.clone()).collect();
        for (name, v) in metrics::compute(&rows, &layers, plan) {
            ctx.metric(&name, v)?;
        }
        Ok(())
    })
}

impl Study for ArbitrarySinks {
    fn run(&self, claim: &Claim, ctx: &mut RunContext) -> anyhow::Result<()> {
        let plan: Plan = claim.scale_params(ctx.scale())?;
        // seed, seed + 1, seed + 2: text windows, random tokens, random directions.
        let seeds = ctx.seeds(3);
        let (text_seed, random_seed, direction_seed) = (seeds[0], seeds[1], seeds[2]);
        ctx.config("plan", &plan)?;
        ctx.config("eps", SINK_EPS)?;
        ctx.config("primary_layers", PRIMARY_LAYERS)?;
        ctx.config("text_seed", text_seed)?;
        ctx.config("random_seed", random_seed)?;
        ctx.config(
            "random_direction_seed",
            format!(
                "{direction_seed} (per cell: seed * 1000003 + 2 k + kind, kind text = 0, random = 1)"
            ),
        )?;
        ctx.config(
            "default_center_mean",
            "positions: mu = mean over the sequence's positions of o_t, per head and channel",
        )?;
        ctx.config(
            "lambda_1",
            "the baseline cell (no intervention) of the same inputs",
        )?;
        for alias in &claim.models {
            ctx.for_model(&claim.models, alias, |ctx| {
                run_model(ctx, &plan, alias, (text_seed, random_seed, direction_seed))
            })?;
        }
        // From scratch: the same interventions on the harness's two trained subjects (the
        // text-corpus model, which has no sink of its own, and the synthetic one, which does).
        for subject in [Subject::Corpus, Subject::Synthetic] {
            scratch::run(ctx, &plan, subject)?;
        }
        Ok(())
    }

    fn figures(
        &self,
        run_dir: &Path,
        fig_dir: &Path,
        style: &FigureStyle,
    ) -> anyhow::Result<Vec<PathBuf>> {
        // The primary model's figures (and the from-scratch one) from the run folder;
        // another model's from its folder, into a folder of its name.
        let mut files = figures::draw(run_dir, fig_dir, style)?;
        for alias in crate::claim()?.models.iter().skip(1) {
            files.extend(
                figures::draw(&run_dir.join(alias), &fig_dir.join(alias), style)
                    .with_context(|| format!("{alias} figures"))?,
            );
        }
        Ok(files)
    }
}
