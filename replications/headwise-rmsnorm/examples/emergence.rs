//! When does the sink emerge? Trains one variant at the `cpu` scale's sizes for a chosen
//! number of steps and prints the sink and disparity measurements at each evaluation:
//! a probe of how far the cpu scale (150 steps) is from the regime the claim is about.
//!
//! `cargo run --release -p sinkrep-headwise-rmsnorm --example emergence -- \
//!     [steps=2000] [eval_every=100] [variant=baseline|headwise|headwise_perhead|gated] [seed=0]`
//!
//! Prints one CSV row per evaluation on stdout (the run folder is a temp dir).

use anyhow::{bail, Context, Result};
use sinkrep_headwise_rmsnorm::{analysis_windows, measure, Sizes, VARIANTS};
use sinkrep_model::Model;
use sinkrep_runner::Scale;
use sinkrep_train::{train, Corpus, RunOptions, TokenData};

fn main() -> Result<()> {
    sinkrep_model::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let steps: usize = arg(0, "2000").parse().context("steps")?;
    let eval_every: usize = arg(1, "100").parse().context("eval_every")?;
    let name = arg(2, "baseline");
    let seed: u64 = arg(3, "0").parse().context("seed")?;
    let Some(&(_, variant)) = VARIANTS.iter().find(|(n, _)| *n == name) else {
        bail!("unknown variant `{name}`");
    };
    let s = Sizes::at(Scale::Cpu)?.subject;
    let mut cfg = s.train_config(variant, seed, "cpu");
    cfg.steps = steps;
    cfg.warmup_steps = s.warmup.max(steps / 10);
    cfg.eval_every = eval_every;
    cfg.ckpt_every = 0;
    let data = TokenData::build(&Corpus::shakespeare()?, s.tokenizer())?;
    let windows = analysis_windows(&data, s.analysis_windows, s.seq_len)?;
    println!("step,sink_pct,attn_mass_mean,attn_mass_max,dom_ratio_mean,dom_ratio_max,agg_var_ratio_mean,eff_rank");
    let mut on_eval = |step: usize, model: &Model| -> Result<()> {
        let p = measure(model, &windows, step)?;
        println!(
            "{step},{:.2},{:.4},{:.4},{:.2},{:.2},{:.4},{:.1}",
            p.sink_pct,
            p.attn_mass_mean,
            p.attn_mass_max,
            p.dom_ratio_mean,
            p.dom_ratio_max,
            p.agg_var_ratio_mean,
            p.eff_rank
        );
        Ok(())
    };
    let dir = tempfile::tempdir()?;
    let out = train(
        &cfg,
        &data,
        dir.path(),
        RunOptions {
            progress: false,
            stop_after: None,
            on_eval: Some(&mut on_eval),
        },
    )?;
    for r in &out.val_log {
        eprintln!("val step {} loss {:.4}", r.step, r.val_loss);
    }
    Ok(())
}
