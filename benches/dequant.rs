//! De-quantisation throughput per ggml type: one 1024 x 4096 tensor (4M values) per type,
//! encoded in memory with `GgufWriter` (ggml's reference quantisation), parsed back with
//! `GgufFile::from_bytes`, and decoded to f32 into a preallocated buffer, so only the
//! decoding is timed (no file I/O, no allocation). F32 is the copy-only reference.
//!
//! `cargo bench --bench dequant`; CI runs each once with `cargo test --benches`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sinkrep_gguf::{GgmlType, GgufFile, GgufWriter};
use std::time::Duration;

const ROWS: usize = 1024;
const COLS: usize = 4096;

/// Deterministic values in [-1, 1) (SplitMix64), with a few large outliers per row the
/// way real weights have them, so block scales vary as in a checkpoint.
fn values(n: usize) -> Vec<f32> {
    let mut rng = sinkrep_stats::SplitMix64::new(0);
    (0..n)
        .map(|i| {
            let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 997 == 0 {
                u * 30.0
            } else {
                u
            }
        })
        .collect()
}

/// ROWS x COLS values of a k-quant type as random super-blocks with finite scales.
fn k_quant_blocks(t: GgmlType) -> Vec<u8> {
    let (per_block, size) = t.block_layout().expect("k-quant layout");
    let n_blocks = ROWS * COLS / per_block as usize;
    let size = size as usize;
    let mut state = 7u64;
    let mut bytes: Vec<u8> = (0..n_blocks * size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let scale = 0.01f32;
    let d = half::f16::from_f32(scale).to_bits().to_le_bytes();
    for b in bytes.chunks_exact_mut(size) {
        match t {
            GgmlType::Q4_K => {
                b[..2].copy_from_slice(&d);
                b[2..4].copy_from_slice(&d);
            }
            _ => b[size - 2..].copy_from_slice(&d),
        }
    }
    bytes
}

fn dequant(c: &mut Criterion) {
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
    ];
    // The k-quants have no quantiser here: their super-blocks are random bytes with
    // fixed, finite f16 scales (d, and dmin for Q4_K), written raw.
    let k_quants = [GgmlType::Q4_K, GgmlType::Q6_K];
    let data = values(ROWS * COLS);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "bench");
    for t in types {
        w.add_tensor_f32(&t.name(), &[ROWS, COLS], t, &data)
            .expect("encode bench tensor");
    }
    for t in k_quants {
        w.add_tensor_raw(&t.name(), &[ROWS, COLS], t, k_quant_blocks(t))
            .expect("raw bench tensor");
    }
    let file = GgufFile::from_bytes(w.to_bytes().expect("serialise")).expect("parse");
    let mut out = vec![0.0f32; ROWS * COLS];

    let mut g = c.benchmark_group("dequant");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements((ROWS * COLS) as u64));
    for t in types.into_iter().chain(k_quants) {
        let name = t.name();
        g.bench_function(name.as_str(), |b| {
            b.iter(|| file.tensor_f32_into(&name, &mut out).expect("decode"))
        });
    }
    g.finish();
}

criterion_group!(benches, dequant);
criterion_main!(benches);
