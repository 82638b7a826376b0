//! Benchmarks of the analysis side on the pinned SmolLM2-135M GGUF (skipped with a
//! message when it has not been fetched): load to a ready model, forward passes with and
//! without the sink probes, and Gu et al.'s random-token protocol (64-token sequences).
//!
//! `cargo bench --bench model`; CI runs each once with `cargo test --benches`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sinkrep_analysis::{analyze, random_tokens, AnalyzeOptions};
use sinkrep_model::{GgufFile, GgufTokenizer, Hooks, Model, Precision};
use std::time::Duration;
use tch::{Device, Tensor};

fn pinned() -> Option<std::path::PathBuf> {
    let path = sinkrep_analysis::pinned::model_path_if_present();
    if path.is_none() {
        eprintln!("skipped: pinned model not fetched (run `just fetch`)");
    }
    path
}

fn load(c: &mut Criterion) {
    let Some(path) = pinned() else { return };
    let mut g = c.benchmark_group("load");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("gguf_to_ready_model", |b| {
        b.iter(|| {
            let file = GgufFile::open(&path).unwrap();
            let tok = GgufTokenizer::from_gguf(&file).unwrap();
            let model = Model::from_gguf(&file, Device::Cpu).unwrap();
            (model.config.n_layers, tok.vocab_size())
        })
    });
    g.finish();
}

fn forward(c: &mut Criterion) {
    let Some(path) = pinned() else { return };
    // As the CLI does: keep freed tensor memory for reuse (no page faults per layer).
    sinkrep_model::alloc::keep_freed_memory();
    let file = GgufFile::open(&path).unwrap();
    let mut model = Model::from_gguf(&file, Device::Cpu).unwrap();
    let mut g = c.benchmark_group("forward");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    for (b, t) in [(10usize, 64usize), (1, 512)] {
        let ids = random_tokens(b, t, model.config.vocab_size, 0);
        let flat: Vec<i64> = ids.concat();
        let x = Tensor::from_slice(&flat).reshape([b as i64, t as i64]);
        g.throughput(Throughput::Elements((b * t) as u64));
        let id = format!("{b}x{t}");
        // f32, then bf16 matmuls with the weights snapshotted (as `analyze --precision bf16`).
        for (suffix, prec) in [("", Precision::F32), ("_bf16", Precision::Bf16)] {
            model.set_precision(prec, true);
            let model = &model;
            g.bench_with_input(
                BenchmarkId::new(format!("plain{suffix}"), &id),
                &x,
                |bch, x| bch.iter(|| tch::no_grad(|| model.forward(x, &mut Hooks::new()).unwrap())),
            );
            let name = format!("sink_report{suffix}");
            // The whole report, as `analyze` makes it (in bf16 with its f32 pass over the
            // sink prefix).
            let opts = AnalyzeOptions {
                batch: b,
                ..Default::default()
            };
            g.bench_with_input(BenchmarkId::new(name, &id), &ids, |bch, ids| {
                bch.iter(|| analyze(model, ids, &opts, &mut |_| {}).unwrap())
            });
        }
        model.set_precision(Precision::F32, false);
    }
    g.finish();
}

fn gu_protocol(c: &mut Criterion) {
    let Some(path) = pinned() else { return };
    let file = GgufFile::open(&path).unwrap();
    let model = Model::from_gguf(&file, Device::Cpu).unwrap();
    // 20 of the protocol's 100 sequences per iteration keeps a sample under 5 s.
    let seqs = random_tokens(20, 64, model.config.vocab_size, 0);
    let mut g = c.benchmark_group("gu_protocol");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(20 * 64));
    g.bench_function("analyze_20x64", |b| {
        b.iter(|| analyze(&model, &seqs, &AnalyzeOptions::default(), &mut |_| {}).unwrap())
    });
    g.finish();
}

criterion_group!(benches, load, forward, gu_protocol);
criterion_main!(benches);
