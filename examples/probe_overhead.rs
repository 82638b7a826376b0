//! Probe overhead measured in alternating pairs: a plain forward and a forward with the
//! full sink probe, one right after the other, the order flipped every pair, on the
//! pinned SmolLM2. Criterion's `forward/` benches time the two one after the other for
//! seconds each, so on a shared machine a load change between them moves the ratio;
//! pairs see the same conditions. Prints one JSON object (used by `just bench-compare`).
//!
//! `cargo run --release --example probe_overhead -- [pairs=7] [precision=f32|bf16]`

use anyhow::{bail, Context, Result};
use sinkrep_analysis::{pinned, random_tokens, SinkProbe};
use sinkrep_model::{Hooks, Model, Precision};
use std::time::Instant;
use tch::Tensor;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn time(f: impl FnOnce()) -> f64 {
    let t0 = Instant::now();
    f();
    t0.elapsed().as_secs_f64()
}

fn main() -> Result<()> {
    sinkrep_model::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pairs: usize = args.first().map_or(Ok(7), |s| s.parse()).context("pairs")?;
    let precision = match args.get(1).map(String::as_str) {
        None | Some("f32") => Precision::F32,
        Some("bf16") => Precision::Bf16,
        Some(p) => bail!("precision `{p}`: expected f32 or bf16"),
    };
    let (mut model, _, _) = pinned::load(tch::Device::Cpu)?;
    model.set_precision(precision, true);
    let plain =
        |m: &Model, x: &Tensor| tch::no_grad(|| m.forward(x, &mut Hooks::new())).map(|_| ());
    let probed = |m: &Model, x: &Tensor| {
        let mut p = SinkProbe::new(m.config.n_layers, 0);
        tch::no_grad(|| m.forward(x, &mut Hooks::new().probe(&mut p))).map(|_| ())
    };
    let mut out = serde_json::Map::new();
    for (b, t) in [(10usize, 64usize), (1, 512)] {
        let flat: Vec<i64> = random_tokens(b, t, model.config.vocab_size, 0).concat();
        let x = Tensor::from_slice(&flat).reshape([b as i64, t as i64]);
        plain(&model, &x)?;
        probed(&model, &x)?;
        let (mut tp, mut tq, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..pairs {
            let (a, q) = if i % 2 == 0 {
                let a = time(|| plain(&model, &x).expect("forward"));
                (a, time(|| probed(&model, &x).expect("forward")))
            } else {
                let q = time(|| probed(&model, &x).expect("forward"));
                (time(|| plain(&model, &x).expect("forward")), q)
            };
            tp.push(a);
            tq.push(q);
            ratios.push(q / a);
        }
        out.insert(
            format!("{b}x{t}"),
            serde_json::json!({
                "plain_median_s": median(tp),
                "probe_median_s": median(tq),
                "overhead_median_of_pairs": median(ratios.clone()) - 1.0,
                "pair_ratios": ratios,
            }),
        );
    }
    out.insert("pairs".into(), pairs.into());
    out.insert("precision".into(), format!("{precision:?}").into());
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
