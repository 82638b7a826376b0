//! Wall time of a training step (no losses printed): sizes the protocol by cost alone.
//! `cargo run --release -p sinkrep-subjects --example step_time -- d layers heads dff seq batch steps`
use anyhow::Result;
use sinkrep_model::AttnVariant;
use sinkrep_subjects::{GainInit, SubjectSizes};
use sinkrep_train::{train, Corpus, RunOptions, TokenData};

fn main() -> Result<()> {
    sinkrep_model::alloc::keep_freed_memory();
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let s = SubjectSizes {
        d_model: a[0],
        n_layers: a[1],
        n_heads: a[2],
        d_ff: a[3],
        bpe_vocab: None,
        seq_len: a[4],
        batch: a[5],
        steps: a[6],
        warmup: 10,
        lr: 3e-3,
        min_lr: 3e-4,
        weight_decay: 0.1,
        decay_gains: false,
        gain_init: GainInit::One,
        eval_every: 0,
        eval_batches: 1,
        analysis_windows: 4,
        precision: sinkrep_model::Precision::F32,
        task: None,
    };
    let data = TokenData::build(&Corpus::shakespeare()?, s.tokenizer())?;
    for v in [
        AttnVariant::Baseline,
        AttnVariant::HeadwiseRmsnorm { shared: true },
    ] {
        let cfg = s.train_config(v, 0, "cpu");
        let dir = tempfile::tempdir()?;
        let out = train(&cfg, &data, &dir.path().join("r"), RunOptions::default())?;
        println!(
            "{:?} {:?}: {:.2} ms/step, params {}",
            a,
            v,
            out.step_time_s * 1e3,
            cfg.model.n_params()
        );
    }
    Ok(())
}
