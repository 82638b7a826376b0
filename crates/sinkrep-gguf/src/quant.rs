//! De-quantisation and reference quantisation of the supported ggml types.
//!
//! Block layouts: ggml `ggml-common.h`. De-quantisation computes exactly what the
//! reference (`dequantize_row_*` in `ggml-quants.c`, and gguf-py's
//! `gguf.quants`) computes: f32 products and sums, in the same order, no FMA.
//! Quantisation follows the `quantize_row_*_ref` routines.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::GgmlType;

/// Values per block of the 32-value block types.
const QK: usize = 32;

/// Elements each parallel task de-quantises: large enough to amortise scheduling,
/// small enough to balance across cores.
const TASK_ELEMS: usize = 1 << 14;

fn f16_le(lo: u8, hi: u8) -> f32 {
    f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// Applies `f` to every (input block of `B` bytes, output block of `N` values)
/// pair, in parallel. The caller has checked that the lengths match exactly.
fn par_blocks<const B: usize, const N: usize>(
    bytes: &[u8],
    out: &mut [f32],
    f: impl Fn(&[u8; B], &mut [f32; N]) + Sync,
) {
    let blocks_per_task = (TASK_ELEMS / N).max(1);
    out.par_chunks_mut(blocks_per_task * N)
        .zip(bytes.par_chunks(blocks_per_task * B))
        .for_each(|(o, b)| {
            let (o, _) = o.as_chunks_mut::<N>();
            let (b, _) = b.as_chunks::<B>();
            for (o, b) in o.iter_mut().zip(b) {
                f(b, o);
            }
        });
}

/// De-quantises `bytes` of type `t` into `out`. `Err` explains a length mismatch
/// (which the reader's validation should already have ruled out).
pub(crate) fn dequantize(t: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let Some((block, size)) = t.block_layout() else {
        return Err(format!("unknown block layout for type {t}"));
    };
    let (block, size) = (block as usize, size as usize);
    if !out.len().is_multiple_of(block) || bytes.len() != out.len() / block * size {
        return Err(format!(
            "{} bytes of {t} data cannot hold {} values",
            bytes.len(),
            out.len()
        ));
    }
    match t {
        GgmlType::F32 => par_blocks::<4, 1>(bytes, out, |b, o| o[0] = f32::from_le_bytes(*b)),
        GgmlType::F16 => par_blocks::<2, 1>(bytes, out, |b, o| o[0] = f16_le(b[0], b[1])),
        GgmlType::BF16 => par_blocks::<2, 1>(bytes, out, |b, o| {
            o[0] = bf16::from_bits(u16::from_le_bytes(*b)).to_f32();
        }),
        // block_q8_0 { f16 d; i8 qs[32] }: v = d * q.
        GgmlType::Q8_0 => par_blocks::<34, QK>(bytes, out, |b, o| {
            let d = f16_le(b[0], b[1]);
            for (o, &q) in o.iter_mut().zip(&b[2..]) {
                *o = d * f32::from(q as i8);
            }
        }),
        // block_q4_0 { f16 d; u8 qs[16] }: low nibbles are values 0..15, high
        // nibbles values 16..31; v = d * (q - 8).
        GgmlType::Q4_0 => par_blocks::<18, QK>(bytes, out, |b, o| {
            let d = f16_le(b[0], b[1]);
            let (lo, hi) = o.split_at_mut(QK / 2);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&b[2..]) {
                *lo = d * f32::from((q & 0x0f) as i8 - 8);
                *hi = d * f32::from((q >> 4) as i8 - 8);
            }
        }),
        // block_q4_1 { f16 d; f16 m; u8 qs[16] }: same nibble order; v = d * q + m.
        GgmlType::Q4_1 => par_blocks::<20, QK>(bytes, out, |b, o| {
            let d = f16_le(b[0], b[1]);
            let m = f16_le(b[2], b[3]);
            let (lo, hi) = o.split_at_mut(QK / 2);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&b[4..]) {
                *lo = d * f32::from(q & 0x0f) + m;
                *hi = d * f32::from(q >> 4) + m;
            }
        }),
        _ => return Err(format!("de-quantisation of {t} is not implemented")),
    }
    Ok(())
}

/// Quantises `data` (a whole number of blocks, checked by the caller) to type `t`.
pub(crate) fn quantize(t: GgmlType, data: &[f32]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match t {
        GgmlType::F32 => data.iter().for_each(|x| out.extend(x.to_le_bytes())),
        GgmlType::F16 => data
            .iter()
            .for_each(|&x| out.extend(f16::from_f32(x).to_bits().to_le_bytes())),
        GgmlType::BF16 => data
            .iter()
            .for_each(|&x| out.extend(bf16::from_f32(x).to_bits().to_le_bytes())),
        GgmlType::Q8_0 => data.chunks(QK).for_each(|x| quantize_q8_0(x, &mut out)),
        GgmlType::Q4_0 => data.chunks(QK).for_each(|x| quantize_q4_0(x, &mut out)),
        GgmlType::Q4_1 => data.chunks(QK).for_each(|x| quantize_q4_1(x, &mut out)),
        _ => return Err(format!("quantisation to {t} is not implemented")),
    }
    Ok(out)
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// `quantize_row_q8_0_ref`: d = amax / 127, q = round(x / d) (as x * (1/d)).
fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_bits().to_le_bytes());
    // `as i8` saturates; |x * id| <= 127 except for rounding and non-finite input.
    out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
}

/// `quantize_row_q4_0_ref`: d = max / -8 where max is the value of largest
/// magnitude; q = min(15, trunc(x / d + 8.5)).
fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_bits().to_le_bytes());
    let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
    let (lo, hi) = x.split_at(QK / 2);
    out.extend(lo.iter().zip(hi).map(|(&a, &b)| q(a) | (q(b) << 4)));
}

/// `quantize_row_q4_1_ref`: d = (max - min) / 15, m = min,
/// q = min(15, trunc((x - min) / d + 0.5)).
fn quantize_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let min = x.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
    let max = x.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
    let d = (max - min) / 15.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_bits().to_le_bytes());
    out.extend(f16::from_f32(min).to_bits().to_le_bytes());
    let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
    let (lo, hi) = x.split_at(QK / 2);
    out.extend(lo.iter().zip(hi).map(|(&a, &b)| q(a) | (q(b) << 4)));
}
