//! "From scratch": the sink census and the super-neuron scan repeated on the two
//! decoders the training harness trains at this scale (`sinkrep-subjects`): the text
//! corpus subject (claim 4's judged configuration) and the synthetic subject (a
//! Bigram-Backcopy model that forms a sink), on random token sequences and on validation
//! windows, for `SCRATCH_SEEDS` independently trained models each (the synthetic subject:
//! `synthetic_seeds` of the scale's sizes, 10 at cpu and gpu scale, since its checks are
//! judged). For the synthetic subject, whose sink forms during training, the order of
//! events along training too.

use crate::metrics::census_metrics;
use crate::rows::write_census_to;
use crate::{study, Sizes};
use sinkrep_analysis::{random_tokens, SinkReport, SUPER_NEURON_ABS, SUPER_NEURON_MEDIAN_RATIO};
use sinkrep_runner::RunContext;
use sinkrep_subjects::{
    first_step, per_scratch_seeds, sink_step, FromScratch, Subject, MASSIVE_DOM_RATIO,
    SCRATCH_SEEDS,
};

/// Trains (or reuses) the models of `subject`, runs both censuses on each, writes
/// `<prefix>_census_layers.csv` and `<prefix>_alpha_per_head.csv` for the first seed,
/// and records `<prefix>.*` metrics as means over the seeds (with their spread).
pub fn run(ctx: &mut RunContext, sizes: &Sizes, subject: Subject) -> anyhow::Result<()> {
    let seeds = match subject {
        Subject::Synthetic => sizes.synthetic_seeds,
        Subject::Corpus => SCRATCH_SEEDS,
    };
    per_scratch_seeds(ctx, subject, seeds, |ctx, fs, first| {
        one(ctx, sizes, fs, subject, first)
    })
}

fn one(
    ctx: &mut RunContext,
    sizes: &Sizes,
    fs: &FromScratch,
    subject: Subject,
    tables: bool,
) -> anyhow::Result<()> {
    let p = subject.prefix();
    let seed = fs.seed;
    let t = sizes.seq_len.min(fs.config.seq_len);
    let random = random_tokens(sizes.random_seqs, t, fs.model.config.vocab_size, seed);
    let text: Vec<Vec<i64>> = fs.windows.iter().map(|w| w[..t].to_vec()).collect();
    let census = |seqs: &[Vec<i64>]| -> anyhow::Result<SinkReport> {
        study::census(&fs.model, seqs, sizes.batch, &mut |_| {})
    };
    let (rand_rep, text_rep) = ctx.stage(&format!("{p}-census"), |_| {
        Ok::<_, anyhow::Error>((census(&random)?, census(&text)?))
    })?;
    if tables {
        ctx.write_json(&format!("{p}_census_text.json"), &text_rep)?;
        write_census_to(
            ctx,
            &format!("{p}_"),
            &[("text", &text_rep), ("random", &rand_rep)],
        )?;
    }
    census_metrics(ctx, &format!("{p}."), &text_rep, &rand_rep)?;
    ctx.metric(&format!("{p}.val_loss"), fs.final_val_loss)?;
    for (name, r) in [("text", &text_rep), ("random", &rand_rep)] {
        ctx.metric(
            &format!("{p}.n_super_neurons_{name}"),
            r.super_neurons.len() as f64,
        )?;
        let strongest = r
            .layers
            .iter()
            .filter_map(|l| l.top_ffn_channels.first())
            .map(|c| c.value.abs())
            .fold(0.0f64, f64::max);
        ctx.metric(&format!("{p}.top_ffn_abs_{name}"), strongest)?;
    }
    if subject == Subject::Synthetic {
        order_metrics(ctx, p, fs)?;
    }
    Ok(())
}

/// The order of events along training (evaluation steps of the run): the first step
/// with a sink (Sink_0^0.3 >= 30%), with a super neuron at position 0 (the strongest FFN
/// channel there passes the census's rule: |mean activation| > SUPER_NEURON_ABS and >
/// SUPER_NEURON_MEDIAN_RATIO x the layer median) and with massive dims (DomRatio of h_0
/// above MASSIVE_DOM_RATIO in some layer); the leads are sink step minus the other
/// (positive: before the sink). A step is NaN when its event never happens.
///
/// A run whose sink has not formed by its last evaluation is right-censored: its sink
/// step is unknown but later than that evaluation, so its lead is at least the last
/// evaluation's step minus the other event's, and that lower bound is recorded
/// (`order.sink_unreached` is 1 for such a run, else 0). Since claim version 7; before,
/// the lead was NaN and one late seed made the whole family's mean undefined. A lead
/// stays NaN when the other event never happens.
fn order_metrics(ctx: &mut RunContext, p: &str, fs: &FromScratch) -> anyhow::Result<()> {
    let evals = &fs.measured.evals;
    let sink = sink_step(evals);
    let sup = first_step(evals, |e| {
        e.top_ffn_abs > SUPER_NEURON_ABS && e.top_ffn_ratio > SUPER_NEURON_MEDIAN_RATIO
    });
    let massive = first_step(evals, |e| e.dom_ratio_max > MASSIVE_DOM_RATIO);
    let last = evals.last().map_or(f64::NAN, |e| e.step as f64);
    let unreached = sink.is_nan();
    let sink_or_bound = if unreached { last } else { sink };
    ctx.metric(&format!("{p}.order.sink_step"), sink)?;
    ctx.metric(
        &format!("{p}.order.sink_unreached"),
        if unreached { 1.0 } else { 0.0 },
    )?;
    ctx.metric(&format!("{p}.order.super_neuron_step"), sup)?;
    ctx.metric(&format!("{p}.order.massive_step"), massive)?;
    ctx.metric(&format!("{p}.order.super_neuron_lead"), sink_or_bound - sup)?;
    ctx.metric(&format!("{p}.order.massive_lead"), sink_or_bound - massive)?;
    // Peaks over training (the final model may have moved past them).
    let peak =
        |f: fn(&sinkrep_subjects::EvalPoint) -> f64| evals.iter().map(f).fold(f64::NAN, f64::max);
    ctx.metric(
        &format!("{p}.order.peak_top_ffn_abs"),
        peak(|e| e.top_ffn_abs),
    )?;
    ctx.metric(
        &format!("{p}.order.peak_top_ffn_ratio"),
        peak(|e| e.top_ffn_ratio),
    )?;
    ctx.metric(
        &format!("{p}.order.peak_dom_ratio_max"),
        peak(|e| e.dom_ratio_max),
    )?;
    Ok(())
}
