//! Claim 2 of "The Structural Origin of Attention Sink" (arXiv 2605.06611): a few FFN
//! channels ("super neurons") fire enormously on the first token; their down-projection
//! columns are channel-sparse, so the first token's residual stream gets a few massive
//! dimensions (dimension disparity), and that makes it the attention sink.
//!
//! Measured on each pinned pretrained model of claim.toml's `models` (SmolLM2-135M-Instruct,
//! the primary, and Gemma-3-270M); see README.md for the protocol and claim.toml for the
//! checks. `study` holds the measurements on any `Decoder`, so the same census is
//! repeated on models trained from scratch (README, "From scratch").

mod figures;
mod metrics;
pub mod plan;
pub mod probe;
mod rows;
mod scratch;
use sinkrep_subjects::Subject;
pub mod study;
pub mod weights;

pub use plan::{Sizes, DOMINANT_DIMS};

use anyhow::Context;
use sinkrep_analysis::{pinned, SUPER_NEURON_ABS, SUPER_NEURON_MEDIAN_RATIO};
use sinkrep_model::Decoder;
use sinkrep_runner::{Claim, FigureStyle, RunContext, Study};
use sinkrep_stats::SINK_EPS;
use std::path::{Path, PathBuf};
use study::{Condition, Eval};

use metrics::*;
use rows::*;

/// The study `super-neurons`.
pub struct SuperNeurons;

sinkrep_runner::replication!(SuperNeurons);

impl Study for SuperNeurons {
    fn run(&self, claim: &Claim, ctx: &mut RunContext) -> anyhow::Result<()> {
        run(ctx, claim, &claim.scale_params(ctx.scale())?)
    }
    fn figures(
        &self,
        run_dir: &Path,
        fig_dir: &Path,
        style: &FigureStyle,
    ) -> anyhow::Result<Vec<PathBuf>> {
        figures::figures(run_dir, fig_dir, style)
    }
}

fn run(ctx: &mut RunContext, claim: &Claim, sizes: &Sizes) -> anyhow::Result<()> {
    let sizes = *sizes;
    ctx.config("sizes", sizes)?;
    ctx.config("sink_pos", 0)?;
    ctx.config("sink_eps", SINK_EPS)?;
    ctx.config(
        "super_neuron_rule",
        format!(
            "sinkrep_analysis: |mean activation at position 0| > {SUPER_NEURON_ABS} and > {SUPER_NEURON_MEDIAN_RATIO} x the layer's median |activation|, flagged on the natural-text census"
        ),
    )?;
    ctx.config("fire_abs", SUPER_NEURON_ABS)?;
    ctx.config("dominant_dims", DOMINANT_DIMS)?;
    ctx.config("datafree_spike_factor", weights::SPIKE_FACTOR)?;
    ctx.config("carrier_share", study::CARRIER_SHARE)?;
    ctx.config("carrier_max", study::CARRIER_MAX)?;
    ctx.config("ablation_positions", [0])?;
    ctx.config(
        "inputs",
        "each model: pinned::model_sequences(seed): random ids (random_tokens) and text windows (text_windows), after the model's BOS if its tokenizer adds one (Gemma-3; none for SmolLM2); the first text_seqs text windows for the census, the rest held out",
    )?;

    for alias in &claim.models {
        ctx.for_model(&claim.models, alias, |ctx| run_model(ctx, &sizes, alias))?;
    }

    // 6. From scratch: the same census on the harness's two trained subjects (once each).
    for subject in [Subject::Corpus, Subject::Synthetic] {
        scratch::run(ctx, &sizes, subject)?;
    }
    Ok(())
}

/// The pretrained-model sections (1-5) for pinned model `alias`, inside its
/// [`RunContext::for_model`] scope. A BOS-adding model (Gemma-3) reads BOS + text or
/// BOS + random ids, as it was trained, so its position 0 (the sink position, the
/// ablated position) is the BOS; SmolLM2's inputs are unchanged (no BOS).
fn run_model(ctx: &mut RunContext, sizes: &Sizes, alias: &str) -> anyhow::Result<()> {
    let device = pinned::device(ctx.device_name())?;
    let seed = ctx.seed();
    let (model, tok, model_path) = ctx.stage("load", |_| pinned::load_pinned(alias, device))?;
    let model: &dyn Decoder = &*model;
    ctx.input(&model_path)?;
    ctx.config(
        "model",
        model_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    )?;
    let bos = pinned::bos_prefix(&tok);
    if !bos.is_empty() {
        ctx.config("bos_prefix", &bos)?;
    }
    // Where this family's probe sites read another tensor than LLaMA's (Gemma-3's
    // post-norms): empty, and not recorded, for SmolLM2.
    let notes = model.site_notes();
    if !notes.is_empty() {
        ctx.config("site_notes", &notes)?;
    }
    for f in pinned::text_files().context("pinned texts")? {
        ctx.input(&f)?;
    }

    let vocab = model.config().vocab_size;
    let random =
        pinned::model_sequences(&tok, sizes.random_seqs, sizes.seq_len, seed, Some(vocab))?;
    let mut text = pinned::model_sequences(
        &tok,
        sizes.text_seqs + sizes.heldout_seqs,
        sizes.seq_len,
        seed,
        None,
    )?;
    let heldout = text.split_off(sizes.text_seqs);

    // 1. Sink census (Gu et al.) on random tokens and on natural text.
    let rand_rep = ctx.stage("census-random", |ctx| {
        let pb = ctx.progress(random.len() as u64, "census, random tokens");
        let r = study::census(model, &random, sizes.batch, &mut |d| {
            pb.set_position(d as u64)
        });
        pb.finish_and_clear();
        r
    })?;
    let text_rep = ctx.stage("census-text", |ctx| {
        let pb = ctx.progress(text.len() as u64, "census, natural text");
        let r = study::census(model, &text, sizes.batch, &mut |d| {
            pb.set_position(d as u64)
        });
        pb.finish_and_clear();
        r
    })?;
    ctx.write_json("census_text.json", &text_rep)?;
    ctx.write_json("census_random.json", &rand_rep)?;
    write_census(ctx, &[("text", &text_rep), ("random", &rand_rep)])?;

    // 2. Data-free: spikes in the down-projections.
    let down = ctx.stage("down-proj-scan", |_| weights::scan_down_proj(model));
    write_down_proj(ctx, &down)?;

    // 3. Super neurons of both censuses; natural text is the primary set.
    let mut rows = sn_rows(model, "text", &text_rep, &rand_rep, &down);
    rows.extend(sn_rows(model, "random", &rand_rep, &text_rep, &down));
    let sn: Vec<(usize, usize)> = text_rep
        .super_neurons
        .iter()
        .map(|s| (s.layer, s.channel))
        .collect();
    let mut watch: Vec<(usize, usize)> = rows.iter().map(|r| (r.sn.layer, r.sn.channel)).collect();
    watch.sort_unstable();
    watch.dedup();
    let mut sn_layers: Vec<usize> = sn.iter().map(|s| s.0).collect();
    sn_layers.sort_unstable();
    sn_layers.dedup();
    let shares: Vec<(usize, Vec<(f64, f64)>)> = ctx.stage("column-shares", |_| {
        sn_layers
            .iter()
            .map(|&l| (l, weights::column_shares(model, l)))
            .collect()
    });

    // 4. Held-out windows: baseline (amplification, specificity, loss), early carriers,
    //    then every ablation.
    let n_layers = model.config().n_layers;
    let base = ctx.stage("heldout-baseline", |ctx| {
        let pb = ctx.progress(heldout.len() as u64, "held-out baseline");
        let r = study::evaluate(
            model,
            &heldout,
            sizes.heldout_batch,
            &Default::default(),
            &watch,
            true,
            &mut |d| pb.inc(d as u64),
        );
        pb.finish_and_clear();
        r
    })?;
    let first_sn = sn_layers.first().copied();
    let early = first_sn.and_then(|l| study::early_carriers(model, &base, l));
    let early_targets: Vec<(usize, usize)> = early
        .as_ref()
        .map(|e| e.carriers.iter().map(|c| (c.layer, c.channel)).collect())
        .unwrap_or_default();
    let conds = study::conditions(&sn, &early_targets);
    ctx.config(
        "conditions",
        conds.iter().map(Condition::key).collect::<Vec<_>>(),
    )?;
    let evals: Vec<(Condition, Eval)> = ctx.stage("ablations", |ctx| {
        let pb = ctx.progress((conds.len() * heldout.len()) as u64, "ablations");
        let r = conds
            .iter()
            .map(|c| {
                study::evaluate(
                    model,
                    &heldout,
                    sizes.heldout_batch,
                    &c.interventions(),
                    &[],
                    false,
                    &mut |d| pb.inc(d as u64),
                )
                .map(|e| (c.clone(), e))
            })
            .collect::<anyhow::Result<Vec<_>>>();
        pb.finish_and_clear();
        r
    })?;

    // 5. Tables and metrics.
    write_super_neurons(ctx, &rows, &base)?;
    write_shares(ctx, &shares, &sn)?;
    write_first_token(ctx, &base)?;
    write_carriers(ctx, early.as_ref())?;
    write_ablations(ctx, &base, &evals, first_sn, n_layers)?;
    census_metrics(ctx, "", &text_rep, &rand_rep)?;
    sn_metrics(ctx, &rows, &base, &shares, &down, &sn)?;
    amplification_metrics(ctx, &base, first_sn)?;
    carrier_metrics(ctx, early.as_ref())?;
    ablation_metrics(ctx, &base, &evals, first_sn, n_layers)?;
    Ok(())
}
