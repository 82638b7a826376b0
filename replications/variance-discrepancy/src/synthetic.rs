//! The synthetic subject (`sinkrep-subjects`, Bigram-Backcopy): a model trained from
//! scratch that forms a sink on position 0 within minutes. Does position 0's variance
//! discrepancy come first, the sink later? Per checkpoint of each seed's baseline run:
//! Var(o_0) / mean Var(o_t>0) of the value-aggregation output against Sink_0^0.3, and
//! at the end the same ratio on random token ids (the claim's "positional, not
//! semantic").
//!
//! The subject's sequences start with a fixed BOS, so o_0 is the same vector in every
//! sequence and its variance *across sequences* (the measure of the pretrained
//! sections) is exactly 0: recorded as it is (`agg_var_ratio_seq`). The ordering
//! question is asked of the variance *across the channels* of each position's vector
//! (`agg_var_ratio`): o_0 = v_0 is never averaged, the later outputs are.

use anyhow::Result;
use serde::Serialize;
use sinkrep_analysis::{analyze, random_tokens, AnalyzeOptions};
use sinkrep_runner::RunContext;
use sinkrep_stats::{mean, SINK_EPS};
use sinkrep_subjects::{first_step, from_scratch_stage, sink_step, Subject, SCRATCH_SEEDS};

/// The table of the section: one row per (seed, evaluation step).
pub const CURVES_CSV: &str = "synthetic_var_vs_sink.csv";
/// Random-id sequences of the end-of-training check.
const RANDOM_SEQS: usize = 32;

#[derive(Serialize, Default)]
struct Row {
    seed: u64,
    step: usize,
    agg_var_ratio_channels: f64,
    agg_var_ratio_mean: f64,
    out_var_ratio_mean: f64,
    sink_pct: f64,
    attn_mass_max: f64,
    dom_ratio_max: f64,
}

pub fn run(ctx: &mut RunContext) -> Result<()> {
    let subjects = from_scratch_stage(ctx, Subject::Synthetic, SCRATCH_SEEDS)?;
    ctx.write_rows(
        CURVES_CSV,
        subjects.iter().flat_map(|fs| {
            fs.measured.evals.iter().map(move |e| Row {
                seed: fs.seed,
                step: e.step,
                agg_var_ratio_channels: e.agg_var_ratio_channels,
                agg_var_ratio_mean: e.agg_var_ratio_mean,
                out_var_ratio_mean: e.out_var_ratio_mean,
                sink_pct: e.sink_pct,
                attn_mass_max: e.attn_mass_max,
                dom_ratio_max: e.dom_ratio_max,
            })
        }),
    )?;
    let seeds: Vec<u64> = subjects.iter().map(|f| f.seed).collect();
    ctx.per_seed(&seeds, |ctx, i| -> Result<()> {
        let fs = &subjects[i];
        let evals = &fs.measured.evals;
        // The ratio across channels (judged) and across sequences (0 for a fixed BOS),
        // untrained and at the end.
        type Of = fn(&sinkrep_subjects::EvalPoint) -> f64;
        let ratios: [(&str, Of); 2] = [
            ("agg_var_ratio", |e| e.agg_var_ratio_channels),
            ("agg_var_ratio_seq", |e| e.agg_var_ratio_mean),
        ];
        for (name, f) in ratios {
            for (when, e) in [("init", evals.first()), ("final", evals.last())] {
                ctx.metric(&format!("synthetic.{name}.{when}"), e.map_or(f64::NAN, f))?;
            }
        }
        let sink = sink_step(evals);
        let var = first_step(evals, |e| e.agg_var_ratio_channels > 1.0);
        ctx.metric("synthetic.order.sink_step", sink)?;
        ctx.metric("synthetic.order.var_step", var)?;
        ctx.metric("synthetic.order.var_lead", sink - var)?;
        ctx.metric(
            "synthetic.final.sink_pct",
            evals.last().map_or(f64::NAN, |e| e.sink_pct),
        )?;
        // The final model on random ids: is position 0 still the variance outlier?
        let t = fs.config.seq_len;
        let seqs = random_tokens(RANDOM_SEQS, t, fs.model.config.vocab_size, fs.seed);
        let opts = AnalyzeOptions {
            sink_pos: 0,
            eps: SINK_EPS,
            batch: RANDOM_SEQS,
            ..AnalyzeOptions::default()
        };
        let rep = analyze(&fs.model, &seqs, &opts, &mut |_| {})?;
        ctx.metric(
            "synthetic.random.agg_var_ratio",
            mean(rep.layers.iter().map(|l| l.agg_var_ratio)),
        )?;
        ctx.metric("synthetic.random.sink_pct", rep.sink_metric.value)?;
        Ok(())
    })
}
