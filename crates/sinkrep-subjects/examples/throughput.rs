//! Training throughput of one model for each attention variant, on the pinned corpus:
//! `small` (the default: `TrainConfig::small`, d_model 128, 4 layers, 4 heads, seq 128,
//! batch 16, byte vocabulary) or `subject` (claim 4's cpu-scale subject, the model a cpu
//! `just replicate-all` trains 90 times: `[scale.cpu.subject]` of
//! replications/headwise-rmsnorm/claim.toml, read through `SubjectSizes`).
//!
//! `cargo run --release -p sinkrep-subjects --example throughput -- [steps] [threads] [device] [precision] [small|subject]`
//! (threads: libtorch intra-op threads, 0 = libtorch's default; precision: f32 or bf16).

use sinkrep_model::AttnVariant;
use sinkrep_runner::timing::cpu_seconds;
use sinkrep_runner::Scale;
use sinkrep_subjects::SubjectSizes;
use sinkrep_train::{train, Corpus, RunOptions, TokenData, TrainConfig};

fn main() -> anyhow::Result<()> {
    // As the sinkrep binary does: keep freed tensor memory for reuse.
    sinkrep_model::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).map_or(Ok(40), |s| s.parse())?;
    let threads: usize = args.get(2).map_or(Ok(0), |s| s.parse())?;
    let device = args.get(3).cloned().unwrap_or_else(|| "cpu".into());
    let precision = match args.get(4).map(String::as_str) {
        None | Some("f32") => sinkrep_model::Precision::F32,
        Some("bf16") => sinkrep_model::Precision::Bf16,
        Some(p) => anyhow::bail!("precision `{p}`: expected f32 or bf16"),
    };
    let subject = match args.get(5).map(String::as_str) {
        None | Some("small") => None,
        Some("subject") => Some(SubjectSizes::at(Scale::Cpu)?),
        Some(m) => anyhow::bail!("model `{m}`: expected small or subject"),
    };
    let config = |variant: AttnVariant| match &subject {
        None => TrainConfig::small(variant),
        Some(s) => s.train_config(variant, 0, "cpu"),
    };
    let corpus = Corpus::shakespeare()?;
    let data = TokenData::build(&corpus, config(AttnVariant::Baseline).tokenizer)?;
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    println!(
        "torch threads {}, device {device}, {precision:?} matmuls, {steps} steps per variant, model {}",
        tch::get_num_threads(),
        if subject.is_some() { "subject (claim 4, cpu scale)" } else { "small" },
    );
    for variant in [
        AttnVariant::Baseline,
        AttnVariant::HeadwiseRmsnorm { shared: true },
        AttnVariant::Gated,
    ] {
        let mut cfg = config(variant);
        cfg.steps = steps;
        cfg.warmup_steps = steps / 4;
        cfg.eval_every = 0;
        cfg.eval_batches = 1;
        cfg.ckpt_every = 0;
        cfg.device = device.clone();
        cfg.threads = threads;
        cfg.precision = precision;
        let dir = tempfile::tempdir()?;
        let cpu0 = cpu_seconds();
        let out = train(&cfg, &data, dir.path(), RunOptions::default())?;
        let cpu_per_step = (cpu_seconds() - cpu0) / steps as f64;
        println!(
            "{:<34} {:>6.0} tokens/s  {:>6.1} ms/step (wall)  {:>6.1} ms/step (CPU)  loss {:.3} -> {:.3}  params {}",
            format!("{variant:?}"),
            out.tokens_per_s,
            out.step_time_s * 1e3,
            cpu_per_step * 1e3,
            out.train_log[0].train_loss,
            out.final_train_loss.unwrap_or(f64::NAN),
            cfg.model.n_params(),
        );
        let ph = &out.phase_time_s;
        println!(
            "{:<34} phases ms/step: data {:.2} forward {:.2} backward {:.2} optimizer {:.2}",
            format!("{variant:?}"),
            ph.data_s * 1e3,
            ph.forward_s * 1e3,
            ph.backward_s * 1e3,
            ph.optimizer_s * 1e3,
        );
    }
    Ok(())
}
