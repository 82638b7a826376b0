//! "From scratch": the sink census and the super-neuron scan repeated on the small
//! decoder the training harness pre-trains at this scale (`sinkrep-subjects`' baseline
//! subject: claim 4's judged configuration), on random byte sequences and on validation
//! windows, for `SCRATCH_SEEDS` independently trained models.

use crate::metrics::census_metrics;
use crate::rows::write_census_to;
use crate::{study, Sizes};
use sinkrep_analysis::{random_tokens, SinkReport};
use sinkrep_runner::RunContext;
use sinkrep_subjects::{from_scratch_stage, SCRATCH_SEEDS};

/// Trains (or reuses) the models, runs both censuses on each, writes
/// `scratch_census_layers.csv` and `scratch_alpha_per_head.csv` for the first seed, and
/// records `scratch.*` metrics as means over the seeds (with their spread).
pub fn run(ctx: &mut RunContext, sizes: &Sizes) -> anyhow::Result<()> {
    let subjects = from_scratch_stage(ctx, SCRATCH_SEEDS)?;
    let seeds: Vec<u64> = subjects.iter().map(|f| f.seed).collect();
    ctx.per_seed(&seeds, |ctx, i| one(ctx, sizes, &subjects[i], i == 0))
}

fn one(
    ctx: &mut RunContext,
    sizes: &Sizes,
    fs: &sinkrep_subjects::FromScratch,
    tables: bool,
) -> anyhow::Result<()> {
    let seed = fs.seed;
    let t = sizes.seq_len.min(fs.config.seq_len);
    let random = random_tokens(sizes.random_seqs, t, fs.model.config.vocab_size, seed);
    let text: Vec<Vec<i64>> = fs.windows.iter().map(|w| w[..t].to_vec()).collect();
    let census = |seqs: &[Vec<i64>]| -> anyhow::Result<SinkReport> {
        study::census(&fs.model, seqs, sizes.batch, &mut |_| {})
    };
    let (rand_rep, text_rep) = ctx.stage("scratch-census", |_| {
        Ok::<_, anyhow::Error>((census(&random)?, census(&text)?))
    })?;
    if tables {
        ctx.write_json("scratch_census_text.json", &text_rep)?;
        write_census_to(
            ctx,
            "scratch_",
            &[("text", &text_rep), ("random", &rand_rep)],
        )?;
    }
    census_metrics(ctx, "scratch.", &text_rep, &rand_rep)?;
    ctx.metric("scratch.val_loss", fs.final_val_loss)?;
    for (name, r) in [("text", &text_rep), ("random", &rand_rep)] {
        ctx.metric(
            &format!("scratch.n_super_neurons_{name}"),
            r.super_neurons.len() as f64,
        )?;
        let strongest = r
            .layers
            .iter()
            .filter_map(|l| l.top_ffn_channels.first())
            .map(|c| c.value.abs())
            .fold(0.0f64, f64::max);
        ctx.metric(&format!("scratch.top_ffn_abs_{name}"), strongest)?;
    }
    Ok(())
}
