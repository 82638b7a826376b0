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

/// Values per super-block of the k-quants (`QK_K`).
const QK_K: usize = 256;

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

/// Can `n_bytes` bytes of type `t` hold exactly `n_values` values? `Err` says why not.
pub(crate) fn check_len(t: GgmlType, n_bytes: usize, n_values: usize) -> Result<(), String> {
    let Some((block, size)) = t.block_layout() else {
        return Err(format!("unknown block layout for type {t}"));
    };
    let (block, size) = (block as usize, size as usize);
    if !n_values.is_multiple_of(block) || n_bytes != n_values / block * size {
        return Err(format!(
            "{n_bytes} bytes of {t} data cannot hold {n_values} values"
        ));
    }
    Ok(())
}

/// De-quantises `bytes` of type `t` into `out`. `Err` explains a length mismatch
/// (which the reader's validation should already have ruled out).
pub(crate) fn dequantize(t: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    check_len(t, bytes.len(), out.len())?;
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
        // block_q5_0 { f16 d; u8 qh[4]; u8 qs[16] }: value j takes its low 4 bits from
        // nibble j of qs (low nibbles 0..15, high nibbles 16..31) and its fifth bit from
        // bit j of the little-endian u32 qh; v = d * (q - 16).
        GgmlType::Q5_0 => par_blocks::<22, QK>(bytes, out, |b, o| {
            let d = f16_le(b[0], b[1]);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let (lo, hi) = o.split_at_mut(QK / 2);
            for (j, ((lo, hi), &q)) in lo.iter_mut().zip(hi).zip(&b[6..]).enumerate() {
                let h0 = ((qh >> j) & 1) as u8;
                let h1 = ((qh >> (j + 16)) & 1) as u8;
                *lo = d * f32::from(((q & 0x0f) | (h0 << 4)) as i8 - 16);
                *hi = d * f32::from(((q >> 4) | (h1 << 4)) as i8 - 16);
            }
        }),
        GgmlType::Q4_K => par_blocks::<144, QK_K>(bytes, out, dequantize_q4_k),
        GgmlType::Q6_K => par_blocks::<210, QK_K>(bytes, out, dequantize_q6_k),
        _ => return Err(format!("de-quantisation of {t} is not implemented")),
    }
    Ok(())
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K super-block, packed in
/// 12 bytes (`get_scale_min_k4` in ggml-quants.c): sub-blocks 0..3 in the low 6 bits of
/// bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7 in the nibbles of bytes 8..11,
/// with their top two bits in the high bits of bytes 0..7.
fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }: eight sub-blocks of 32
/// with 6-bit scales and mins; v = (d * sc) * q - (dmin * m). Each 32 bytes of qs hold
/// two sub-blocks: the low nibbles the first, the high nibbles the second.
fn dequantize_q4_k(b: &[u8; 144], o: &mut [f32; QK_K]) {
    let d = f16_le(b[0], b[1]);
    let dmin = f16_le(b[2], b[3]);
    let mut scales = [0u8; 12];
    scales.copy_from_slice(&b[4..16]);
    for (pair, (q, o)) in b[16..]
        .chunks_exact(32)
        .zip(o.chunks_exact_mut(64))
        .enumerate()
    {
        let (sc1, m1) = scale_min_k4(2 * pair, &scales);
        let (sc2, m2) = scale_min_k4(2 * pair + 1, &scales);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = o.split_at_mut(32);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
            *lo = d1 * f32::from(q & 0x0f) - m1;
            *hi = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }: sixteen sub-blocks of 16
/// with 8-bit signed scales; each 6-bit q is 4 low bits from ql and 2 high bits from qh;
/// v = (d * sc) * (q - 32). Per half of 128 values (64 bytes of ql, 32 of qh), value
/// l + 32 s (s = 0..3) takes ql[l + 32 (s & 1)]'s low (s < 2) or high nibble and bits
/// 2s, 2s+1 of qh[l].
fn dequantize_q6_k(b: &[u8; 210], o: &mut [f32; QK_K]) {
    let d = f16_le(b[208], b[209]);
    let (ql, rest) = b.split_at(128);
    let (qh, sc) = rest.split_at(64);
    for (half, o) in o.chunks_exact_mut(128).enumerate() {
        let ql = &ql[64 * half..64 * half + 64];
        let qh = &qh[32 * half..32 * half + 32];
        let sc = &sc[8 * half..8 * half + 8];
        for (i, v) in o.iter_mut().enumerate() {
            let (s, l) = (i / 32, i % 32);
            let low = (ql[l + 32 * (s & 1)] >> (4 * (s >> 1))) & 0x0f;
            let high = (qh[l] >> (2 * s)) & 3;
            let q = (low | (high << 4)) as i8 - 32;
            let scale = d * f32::from(sc[2 * s + l / 16] as i8);
            *v = scale * f32::from(q);
        }
    }
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
        GgmlType::Q5_0 => data.chunks(QK).for_each(|x| quantize_q5_0(x, &mut out)),
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

/// `quantize_row_q5_0_ref`: d = max / -16 where max is the value of largest magnitude;
/// q = min(31, trunc(x / d + 16.5)); bit 4 of value j goes to bit j of qh.
fn quantize_q5_0(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_bits().to_le_bytes());
    let q = |v: f32| ((v * id + 16.5) as i8).clamp(0, 31) as u8;
    let (lo, hi) = x.split_at(QK / 2);
    let mut qh = 0u32;
    let mut qs = [0u8; QK / 2];
    for (j, (&a, &b)) in lo.iter().zip(hi).enumerate() {
        let (qa, qb) = (q(a), q(b));
        qs[j] = (qa & 0x0f) | ((qb & 0x0f) << 4);
        qh |= u32::from(qa >> 4) << j;
        qh |= u32::from(qb >> 4) << (j + QK / 2);
    }
    out.extend(qh.to_le_bytes());
    out.extend(qs);
}
