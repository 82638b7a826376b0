//! Fused CPU kernels (csrc/fused.cpp) for RMSNorm, SwiGLU and half-split RoPE, and causal
//! attention for training (`attention_applies`: f32, no grouped KV heads, inside autograd
//! or in the trainer's validation forward; analysis keeps its explicit attention).
//!
//! - Training (`applies`: f32 tensors on the CPU that take part in autograd): custom
//!   autograd functions, each one pass forward and one pass backward.
//! - Inference (`applies_infer`: f32 or bf16 CPU tensors outside autograd, as in every
//!   analysis and every evaluation during training): one pass each, reading and writing
//!   bf16 where a bf16 forward wants it, so no cast surrounds each linear layer.
//!
//! Everything else (CUDA, strided inputs) keeps the composite libtorch ops. Results are
//! bit-identical for any thread count and for each of the kernels' ISA clones (see the
//! C++ file's header); against the composite ops they differ in the last bits only.

// The FFI calls and taking ownership of the tensors the C++ side returns need `unsafe`;
// the C++ functions catch every exception and report failure by return code.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr};
use tch::{Device, Kind, Tensor};

use crate::config::RopePairing;

extern "C" {
    fn sinkrep_fused_rms_norm(
        x: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        eps: f64,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_fused_swiglu(
        a: *const std::ffi::c_void,
        u: *const std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_fused_causal_attention(
        q: *const std::ffi::c_void,
        k: *const std::ffi::c_void,
        v: *const std::ffi::c_void,
        scale: f64,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_fused_rope(
        x: *const std::ffi::c_void,
        cos: *const std::ffi::c_void,
        sin: *const std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_infer_rms_norm(
        x: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        eps: f64,
        want_f32: c_int,
        want_bf16: c_int,
        out_f32: *mut *mut std::ffi::c_void,
        out_bf16: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_infer_add_rms_norm(
        x: *const std::ffi::c_void,
        a: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        eps: f64,
        want_f32: c_int,
        want_bf16: c_int,
        split: c_int,
        out_sum: *mut *mut std::ffi::c_void,
        out_f32: *mut *mut std::ffi::c_void,
        out_bf16: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_infer_swiglu(
        a: *const std::ffi::c_void,
        u: *const std::ffi::c_void,
        want_f32: c_int,
        want_bf16: c_int,
        out_f32: *mut *mut std::ffi::c_void,
        out_bf16: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_batch_moments(
        x: *const std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_row_norm_maxabs(
        x: *const std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_channel_maxabs(
        x: *const std::ffi::c_void,
        skip: i64,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_infer_rms_norm_split(
        x: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        eps: f64,
        out_hi: *mut *mut std::ffi::c_void,
        out_lo: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_split_available() -> c_int;
    fn sinkrep_split_pack(
        w: *const std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_split_mm(
        xh: *const std::ffi::c_void,
        xl: *const std::ffi::c_void,
        packed: *const std::ffi::c_void,
        n: i64,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_causal_softmax(
        scores: *const std::ffi::c_void,
        scale: f64,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_infer_add_widen(
        x: *const std::ffi::c_void,
        a: *const std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn sinkrep_infer_rope(
        x: *const std::ffi::c_void,
        cos: *const std::ffi::c_void,
        sin: *const std::ffi::c_void,
        adjacent: c_int,
        out_bf16: c_int,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// Set `SINKREP_FUSED=0` to train and analyse with the composite ops instead (a comparison
/// switch; the two differ in the last bits, so runs are only reproducible under one setting).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SINKREP_FUSED").map_or(true, |v| v != "0"))
}

/// Should the fused kernel take `x`? f32, CPU, contiguous, and part of an autograd graph.
pub(crate) fn applies(x: &Tensor) -> bool {
    x.device() == Device::Cpu
        && x.kind() == Kind::Float
        && x.requires_grad()
        && x.is_contiguous()
        && enabled()
}

/// Should an inference kernel take `x`? f32 or bf16, CPU, contiguous, outside autograd.
pub(crate) fn applies_infer(x: &Tensor) -> bool {
    x.device() == Device::Cpu
        && matches!(x.kind(), Kind::Float | Kind::BFloat16)
        && !x.requires_grad()
        && x.is_contiguous()
        && enabled()
}

/// Should a probe-reduction kernel take `x`? f32, CPU, contiguous, outside autograd.
pub(crate) fn applies_reduce(x: &Tensor) -> bool {
    x.kind() == Kind::Float && applies_infer(x)
}

fn ptr(t: &Tensor) -> *const std::ffi::c_void {
    t.as_ptr() as *const std::ffi::c_void
}

fn call(
    what: &str,
    f: impl FnOnce(*mut *mut std::ffi::c_void, *mut c_char, usize) -> c_int,
) -> Tensor {
    let mut out: *mut std::ffi::c_void = std::ptr::null_mut();
    let mut err = [0 as c_char; 512];
    let rc = f(&mut out, err.as_mut_ptr(), err.len());
    if rc != 0 || out.is_null() {
        // The callers check shapes, kinds and layout first: an error here is a bug.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
        panic!("fused {what} kernel failed: {msg}");
    }
    // SAFETY: `out` is a heap `at::Tensor*` made by the C++ side, which tch's `Tensor`
    // owns and frees (the same representation as its own C API's tensors).
    unsafe { Tensor::from_ptr(out.cast()) }
}

/// RMSNorm over the last dimension: `x * rsqrt(mean(x^2) + eps) * w`, with `w` of shape
/// (D) or (P, D) where row r of `x` (flattened to rows of D) uses gain row r % P.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let w = w.contiguous();
    call("RMSNorm", |out, err, n| unsafe {
        sinkrep_fused_rms_norm(ptr(x), ptr(&w), eps, out, err, n)
    })
}

/// `silu(a) * u` for contiguous `a`, `u` of one shape.
pub(crate) fn swiglu(a: &Tensor, u: &Tensor) -> Tensor {
    let u = u.contiguous();
    call("SwiGLU", |out, err, n| unsafe {
        sinkrep_fused_swiglu(ptr(a), ptr(&u), out, err, n)
    })
}

/// Half-split RoPE of `x` (B, T, H, Dh), contiguous, with tables (T_max >= T, Dh/2).
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    call("RoPE", |out, err, n| unsafe {
        sinkrep_fused_rope(ptr(x), ptr(cos), ptr(sin), out, err, n)
    })
}

/// Longest sequence the fused attention takes: its forward keeps the (B, H, T, T)
/// probabilities for the backward (4 MiB per layer for the small model, T = 128).
pub(crate) const ATTN_MAX_T: i64 = 512;

/// Should the fused causal attention take `q`, `k`, `v` (B, H, T, Dh)? f32 CPU tensors of
/// one shape (no grouped KV heads), unit channel stride, at most [`ATTN_MAX_T`] positions
/// and 128 channels per head; inside or outside autograd.
pub(crate) fn attention_applies(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let s = q.size();
    s.len() == 4
        && s[2] <= ATTN_MAX_T
        && s[3] <= 128
        && [q, k, v].iter().all(|x| {
            x.device() == Device::Cpu
                && x.kind() == Kind::Float
                && x.size() == s
                && x.stride()[3] == 1
        })
        && enabled()
}

/// Causal self-attention `softmax(scale q k^T) v`, keys j <= i, of `q`, `k`, `v`
/// (B, H, T, Dh): returns (B, H, T, Dh), a transposed view of a contiguous (B, T, H, Dh).
pub(crate) fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    call("causal attention", |out, err, n| unsafe {
        sinkrep_fused_causal_attention(ptr(q), ptr(k), ptr(v), scale, out, err, n)
    })
    .transpose(1, 2)
}

/// Takes ownership of a tensor the C++ side made (None for a null pointer).
fn owned(p: *mut std::ffi::c_void) -> Option<Tensor> {
    // SAFETY: as in `call`: a heap `at::Tensor*` from the C++ side, or null.
    (!p.is_null()).then(|| unsafe { Tensor::from_ptr(p.cast()) })
}

/// A two-output inference kernel: the f32 output when `want_f32`, the bf16 one when
/// `want_bf16`.
fn call2(
    what: &str,
    want_f32: bool,
    want_bf16: bool,
    f: impl FnOnce(*mut *mut std::ffi::c_void, *mut *mut std::ffi::c_void, *mut c_char, usize) -> c_int,
) -> (Option<Tensor>, Option<Tensor>) {
    let mut of: *mut std::ffi::c_void = std::ptr::null_mut();
    let mut ob: *mut std::ffi::c_void = std::ptr::null_mut();
    let mut err = [0 as c_char; 512];
    let rc = f(&mut of, &mut ob, err.as_mut_ptr(), err.len());
    let (f32_out, bf16_out) = (owned(of), owned(ob));
    if rc != 0 {
        // The callers check kinds, devices and layout first: an error here is a bug.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
        panic!("fused {what} kernel failed: {msg}");
    }
    (f32_out.filter(|_| want_f32), bf16_out.filter(|_| want_bf16))
}

/// Inference RMSNorm of f32 `x` (rows of D) with f32 gain (D) or (P, D): the output in
/// f32 (`want_f32`) and/or bf16 (`want_bf16`), from one pass.
pub(crate) fn rms_norm_infer(
    x: &Tensor,
    w: &Tensor,
    eps: f64,
    want_f32: bool,
    want_bf16: bool,
) -> (Option<Tensor>, Option<Tensor>) {
    call2("RMSNorm", want_f32, want_bf16, |of, ob, err, n| unsafe {
        sinkrep_infer_rms_norm(
            ptr(x),
            ptr(w),
            eps,
            want_f32.into(),
            want_bf16.into(),
            of,
            ob,
            err,
            n,
        )
    })
}

/// Inference residual add and RMSNorm in one pass: `s = x + a` for the f32 stream `x` and
/// a branch output `a` of its shape (f32 or bf16; both contiguous), and the RMSNorm of `s`
/// with f32 gain (D) or (P, D) in f32 (`want_f32`) and/or bf16 (`want_bf16`, at least one
/// of the two). The same bits as `residual_add` followed by `rms_norm_infer`.
pub(crate) fn add_rms_norm_infer(
    x: &Tensor,
    a: &Tensor,
    w: &Tensor,
    eps: f64,
    want_f32: bool,
    want_bf16: bool,
) -> (Tensor, Option<Tensor>, Option<Tensor>) {
    add_rms_norm_call(x, a, w, eps, want_f32, want_bf16, false)
}

/// As `add_rms_norm_infer`, with the norm as split-bf16 parts (`rms_norm_infer_split`):
/// returns the sum, the high parts and the low parts.
pub(crate) fn add_rms_norm_infer_split(
    x: &Tensor,
    a: &Tensor,
    w: &Tensor,
    eps: f64,
) -> (Tensor, Tensor, Tensor) {
    let (s, lo, hi) = add_rms_norm_call(x, a, w, eps, true, true, true);
    (
        s,
        hi.expect("the kernel returns both parts"),
        lo.expect("the kernel returns both parts"),
    )
}

fn add_rms_norm_call(
    x: &Tensor,
    a: &Tensor,
    w: &Tensor,
    eps: f64,
    want_f32: bool,
    want_bf16: bool,
    split: bool,
) -> (Tensor, Option<Tensor>, Option<Tensor>) {
    let mut os: *mut std::ffi::c_void = std::ptr::null_mut();
    let (f, b) = call2(
        "add + RMSNorm",
        want_f32,
        want_bf16,
        |of, ob, err, n| unsafe {
            sinkrep_infer_add_rms_norm(
                ptr(x),
                ptr(a),
                ptr(w),
                eps,
                want_f32.into(),
                want_bf16.into(),
                split.into(),
                &mut os,
                of,
                ob,
                err,
                n,
            )
        },
    );
    // call2 has panicked on failure; on success the sum is always there.
    let s = owned(os).expect("fused add + RMSNorm kernel returned no sum");
    (s, f, b)
}

/// Inference `silu(a) * u` for contiguous `a`, `u` of one shape and kind (f32 or bf16):
/// the output in f32 and/or bf16, from one pass.
pub(crate) fn swiglu_infer(
    a: &Tensor,
    u: &Tensor,
    want_f32: bool,
    want_bf16: bool,
) -> (Option<Tensor>, Option<Tensor>) {
    call2("SwiGLU", want_f32, want_bf16, |of, ob, err, n| unsafe {
        sinkrep_infer_swiglu(
            ptr(a),
            ptr(u),
            want_f32.into(),
            want_bf16.into(),
            of,
            ob,
            err,
            n,
        )
    })
}

/// Inference RoPE of `x` (B, T, H, Dh), f32 or bf16, contiguous, with f32 tables
/// (T_max >= T, Dh/2) and channel pairs `pairing`: returns (B, H, T, Dh) contiguous, in
/// bf16 when `out` is `Kind::BFloat16`, else f32.
pub(crate) fn rope_infer(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    pairing: RopePairing,
    out: Kind,
) -> Tensor {
    let bf = c_int::from(out == Kind::BFloat16);
    let adjacent = c_int::from(pairing == RopePairing::Adjacent);
    call("RoPE", |o, err, n| unsafe {
        sinkrep_infer_rope(ptr(x), ptr(cos), ptr(sin), adjacent, bf, o, err, n)
    })
}

/// `x + a` for the f32 residual stream `x` and a branch output `a` of the same shape: one
/// pass that widens a bf16 `a` (outside autograd on the CPU, both contiguous), else
/// libtorch's promoting add. The same bits either way.
pub(crate) fn residual_add(x: &Tensor, a: &Tensor) -> Tensor {
    if x.kind() == Kind::Float
        && a.kind() == Kind::BFloat16
        && x.size() == a.size()
        && applies_infer(x)
        && applies_infer(a)
    {
        return call("residual add", |o, err, n| unsafe {
            sinkrep_infer_add_widen(ptr(x), ptr(a), o, err, n)
        });
    }
    x + a
}

/// Over dim 0 of f32 `x` (B, ...): (3, ...) holding the mean, the sum of x - mean and the
/// sum of its square.
pub(crate) fn batch_moments(x: &Tensor) -> Tensor {
    call("moments", |o, err, n| unsafe {
        sinkrep_batch_moments(ptr(x), o, err, n)
    })
}

/// Each row (last dimension) of f32 `x`: (2, ...) holding the L2 norm and max |x|.
pub(crate) fn row_norm_maxabs(x: &Tensor) -> Tensor {
    call("row statistics", |o, err, n| unsafe {
        sinkrep_row_norm_maxabs(ptr(x), o, err, n)
    })
}

/// Causal softmax of `scale * scores` for f32 `scores` (B, H, T, T) (q k^T): zeros above
/// the diagonal, as a softmax over -inf-masked scores gives.
pub(crate) fn causal_softmax(scores: &Tensor, scale: f64) -> Tensor {
    call("causal softmax", |o, err, n| unsafe {
        sinkrep_causal_softmax(ptr(scores), scale, o, err, n)
    })
}

/// f32 `x` (B, T, F): max |x| per channel over every (b, t) with t != `skip` (-1: none).
pub(crate) fn channel_maxabs(x: &Tensor, skip: i64) -> Tensor {
    call("channel max", |o, err, n| unsafe {
        sinkrep_channel_maxabs(ptr(x), skip, o, err, n)
    })
}

/// Can split-bf16 products (csrc/fused.cpp, "bf16x3") run here? Only with AMX, where
/// oneDNN's brgemm multiplies bf16 into f32 at several times the f32 rate; asked once.
/// `SINKREP_SPLIT_BF16=0` (or `SINKREP_FUSED=0`) turns them off: the probed projections
/// of a bf16 analysis then run in f32 sgemm, as on CPUs without AMX.
pub(crate) fn split_available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        enabled()
            && std::env::var("SINKREP_SPLIT_BF16").map_or(true, |v| v != "0")
            // SAFETY: no arguments; the C function catches every exception.
            && unsafe { sinkrep_split_available() } == 1
    })
}

/// Does an (N, K) weight fit the split product (N a multiple of 16, K even)?
pub(crate) fn split_fits(w: &Tensor) -> bool {
    matches!(w.size()[..], [n, k] if n % 16 == 0 && k % 2 == 0)
        && w.kind() == Kind::Float
        && w.device() == Device::Cpu
}

/// The packed high and low bf16 parts of an f32 weight (N, K) that `split_fits`.
pub(crate) fn split_pack(w: &Tensor) -> Tensor {
    let w = w.contiguous();
    call("split pack", |o, err, n| unsafe {
        sinkrep_split_pack(ptr(&w), o, err, n)
    })
}

/// `x W^T` for an f32 `x` given as its split parts `xh`, `xl` (M, K) bf16 contiguous
/// (`rms_norm_infer_split`) and `packed` from `split_pack` of W (N, K): (M, N) f32 from
/// three bf16 products with f32 accumulation (error ~4e-6 relative).
pub(crate) fn split_mm(xh: &Tensor, xl: &Tensor, packed: &Tensor, n: i64) -> Tensor {
    call("split product", |o, err, len| unsafe {
        sinkrep_split_mm(ptr(xh), ptr(xl), ptr(packed), n, o, err, len)
    })
}

/// Inference RMSNorm of f32 `x` as split-bf16 parts `(hi, lo)`: `hi` is the bf16 output
/// of `rms_norm_infer`, `lo` = bf16(y - hi) (0 where `hi` is not finite).
pub(crate) fn rms_norm_infer_split(x: &Tensor, w: &Tensor, eps: f64) -> (Tensor, Tensor) {
    let (hi, lo) = call2("RMSNorm split", true, true, |oh, ol, err, n| unsafe {
        sinkrep_infer_rms_norm_split(ptr(x), ptr(w), eps, oh, ol, err, n)
    });
    (
        hi.expect("the kernel returns both parts"),
        lo.expect("the kernel returns both parts"),
    )
}

#[cfg(test)]
mod tests {
    //! Each fused kernel against the composite libtorch ops it replaces (values and every
    //! gradient, to f32 rounding), and bit-identical for 1 and 2 threads.
    use super::*;
    use crate::config::RopePairing;

    fn leaf(shape: &[i64], seed: i64, scale: f64) -> Tensor {
        (crate::seeded_randn(shape, seed) * scale).set_requires_grad(true)
    }

    /// Output and input gradients of `f` for a fixed upstream gradient.
    fn run(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], seed: i64) -> Vec<Tensor> {
        for x in inputs {
            let mut g = x.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let y = f(inputs);
        let up = crate::seeded_randn(&y.size(), seed);
        (&y * &up).sum(Kind::Float).backward();
        let mut out = vec![y.detach().copy()];
        out.extend(inputs.iter().map(|x| x.grad().copy()));
        out
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let scale = b.abs().max().double_value(&[]).max(1e-30);
        let err = (a - b).abs().max().double_value(&[]) / scale;
        assert!(
            err < 2e-5,
            "{what}: max error {err:e} relative to max |value|"
        );
    }

    fn check(
        name: &str,
        fused: &dyn Fn(&[Tensor]) -> Tensor,
        composite: &dyn Fn(&[Tensor]) -> Tensor,
        inputs: &[Tensor],
    ) {
        let want = run(composite, inputs, 99);
        let got = run(fused, inputs, 99);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            close(
                g,
                w,
                &format!("{name} tensor {i} (0: output, then input gradients)"),
            );
        }
        // Thread count does not change a bit.
        let prev = tch::get_num_threads();
        tch::set_num_threads(1);
        let one = run(fused, inputs, 99);
        tch::set_num_threads(2);
        let two = run(fused, inputs, 99);
        tch::set_num_threads(prev);
        for (a, b) in one.iter().zip(&two) {
            assert!(a.equal(b), "{name}: 1 and 2 threads differ");
        }
    }

    fn composite_rms(x: &Tensor, w: &Tensor) -> Tensor {
        let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        x * (var + 1e-5).rsqrt() * w
    }

    #[test]
    fn rms_norm_matches_composite_with_shared_and_per_head_gains() {
        // 604 rows: more than one parallel chunk (16384 / 40 rows), and not a multiple of
        // the 64-row reduction block.
        let x = leaf(&[1, 151, 4, 40], 1, 3.0);
        let shared = (leaf(&[40], 2, 0.5) + 1.0).detach().set_requires_grad(true);
        let per_head = (leaf(&[4, 40], 3, 0.5) + 1.0)
            .detach()
            .set_requires_grad(true);
        for w in [shared, per_head] {
            check(
                "RMSNorm",
                &|t| rms_norm(&t[0], &t[1], 1e-5),
                &|t| composite_rms(&t[0], &t[1]),
                &[x.shallow_clone(), w],
            );
        }
        // A frozen gain: no gradient asked for it, none computed.
        let w = Tensor::ones([40], (Kind::Float, Device::Cpu));
        let y = rms_norm(&x, &w, 1e-5);
        y.sum(Kind::Float).backward();
        assert!(!w.grad().defined());
    }

    /// Explicit causal attention in libtorch ops.
    fn composite_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let t = q.size()[2];
        let mask = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).triu(1);
        (q.matmul(&k.transpose(-2, -1)) * scale)
            .masked_fill(&mask, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float)
            .matmul(v)
    }

    #[test]
    fn causal_attention_matches_composite() {
        // (B, T, H, Dh) storage seen as (B, H, T, Dh), as the model's projections give
        // them; T = 70 and 17 leave partial 16-key tails, Dh = 40 a partial vector.
        for (t, dh) in [(70, 16), (17, 40), (1, 8)] {
            let qkv: Vec<Tensor> = (0..3).map(|i| leaf(&[2, t, 3, dh], 20 + i, 2.0)).collect();
            let scale = 1.0 / (dh as f64).sqrt();
            let heads = |x: &Tensor| x.transpose(1, 2);
            check(
                "causal attention",
                &|x| causal_attention(&heads(&x[0]), &heads(&x[1]), &heads(&x[2]), scale),
                &|x| composite_attention(&heads(&x[0]), &heads(&x[1]), &heads(&x[2]), scale),
                &qkv,
            );
            // Outside autograd: the same output bits.
            let with = causal_attention(&heads(&qkv[0]), &heads(&qkv[1]), &heads(&qkv[2]), scale);
            let without = tch::no_grad(|| {
                causal_attention(&heads(&qkv[0]), &heads(&qkv[1]), &heads(&qkv[2]), scale)
            });
            assert!(with.detach().equal(&without));
            // Contiguous (B, H, T, Dh) inputs read the same values.
            let cont = tch::no_grad(|| {
                let c = |x: &Tensor| heads(x).contiguous();
                causal_attention(&c(&qkv[0]), &c(&qkv[1]), &c(&qkv[2]), scale)
            });
            assert!(cont.equal(&without));
        }
    }

    #[test]
    fn swiglu_matches_composite_across_the_sigmoid_range() {
        // Magnitudes up to ~100: both tails of the sigmoid and exp's clamps.
        // 23100 values: two parallel chunks of 16384.
        let a = leaf(&[7, 33, 100], 4, 30.0);
        let u = leaf(&[7, 33, 100], 5, 1.0);
        check(
            "SwiGLU",
            &|t| swiglu(&t[0], &t[1]),
            &|t| t[0].silu() * &t[1],
            &[a, u],
        );
    }

    /// Half-split RoPE tables for 40 positions of 5 heads of 16 channels.
    fn half_split_rope() -> crate::llama::Rope {
        rope_with(RopePairing::HalfSplit)
    }

    /// RoPE tables for 40 positions of 5 heads of 16 channels, channels paired `pairing`.
    fn rope_with(pairing: RopePairing) -> crate::llama::Rope {
        let cfg = crate::config::Config {
            vocab_size: 16,
            d_model: 80,
            n_layers: 1,
            n_heads: 5,
            n_kv_heads: 5,
            head_dim: 16,
            d_ff: 32,
            rms_eps: 1e-5,
            rope_base: 10_000.0,
            rope_pairing: pairing,
            rope_scaling: crate::config::RopeScaling::None,
            tied_embeddings: true,
            max_seq_len: 40,
            attn_variant: crate::config::AttnVariant::Baseline,
            head_norm_init: 1.0,
            zero_init: false,
        };
        crate::llama::Rope::new(&cfg, 40, Device::Cpu)
    }

    #[test]
    fn rope_matches_composite_half_split() {
        let rope = half_split_rope();
        // T = 37 < the table's 40 positions; 1110 rows, two parallel chunks of 1024.
        let x = leaf(&[6, 37, 5, 16], 6, 1.0);
        check(
            "RoPE",
            &|t| rope.apply_bthd(&t[0]),
            &|t| rope.apply(&t[0].transpose(1, 2)),
            &[x],
        );
    }

    // ---- Inference kernels: no autograd; f32 or bf16 in and out.

    fn plain(shape: &[i64], seed: i64, scale: f64) -> Tensor {
        crate::seeded_randn(shape, seed) * scale
    }

    /// Bit patterns, so NaNs compare too.
    fn bits(t: &Tensor) -> Tensor {
        match t.kind() {
            Kind::BFloat16 => t.view_dtype(Kind::Int16),
            _ => t.view_dtype(Kind::Int),
        }
    }

    /// Same values bit for bit, NaN where the other has NaN (libtorch's own casts give a
    /// NaN different payloads on different code paths).
    fn same_bits(a: &Tensor, b: &Tensor, what: &str) {
        assert_eq!(a.kind(), b.kind(), "{what}: kinds");
        assert_eq!(a.size(), b.size(), "{what}: shapes");
        let (na, nb) = (a.isnan(), b.isnan());
        assert!(na.equal(&nb), "{what}: NaNs differ");
        let (a, b) = (a.masked_fill(&na, 0.0), b.masked_fill(&nb, 0.0));
        assert!(bits(&a).equal(&bits(&b)), "{what}: bits differ");
    }

    fn threads_agree(name: &str, f: &dyn Fn() -> Vec<Tensor>) {
        let prev = tch::get_num_threads();
        tch::set_num_threads(1);
        let one = f();
        tch::set_num_threads(2);
        let two = f();
        tch::set_num_threads(prev);
        for (a, b) in one.iter().zip(&two) {
            same_bits(a, b, &format!("{name}: 1 vs 2 threads"));
        }
    }

    fn both(r: (Option<Tensor>, Option<Tensor>)) -> Vec<Tensor> {
        r.0.into_iter().chain(r.1).collect()
    }

    #[test]
    fn inference_rms_norm_matches_composite_and_rounds_to_bf16_like_libtorch() {
        let x = plain(&[1, 151, 4, 40], 1, 3.0);
        assert!(applies_infer(&x) && !applies(&x));
        for w in [plain(&[40], 2, 0.5) + 1.0, plain(&[4, 40], 3, 0.5) + 1.0] {
            let out = both(rms_norm_infer(&x, &w, 1e-5, true, true));
            assert_eq!(out.len(), 2);
            close(&out[0], &composite_rms(&x, &w), "RMSNorm (inference, f32)");
            // The bf16 output is the f32 one rounded to nearest-even, as libtorch casts.
            same_bits(
                &out[1],
                &out[0].to_kind(Kind::BFloat16),
                "RMSNorm bf16 output",
            );
            // One output asked for: that one only, the same values.
            let f = rms_norm_infer(&x, &w, 1e-5, true, false);
            assert!(f.1.is_none());
            same_bits(f.0.as_ref().unwrap(), &out[0], "RMSNorm f32 alone");
            let b = rms_norm_infer(&x, &w, 1e-5, false, true);
            assert!(b.0.is_none());
            same_bits(b.1.as_ref().unwrap(), &out[1], "RMSNorm bf16 alone");
            threads_agree("RMSNorm (inference)", &|| {
                both(rms_norm_infer(&x, &w, 1e-5, true, true))
            });
        }
    }

    #[test]
    fn add_then_rms_norm_in_one_pass_gives_the_bits_of_the_two_steps() {
        let x = plain(&[2, 37, 40], 21, 10.0);
        // Specials in the branch: they propagate through the add and the row's norm alike.
        let specials = [f32::INFINITY, f32::NAN, -0.0, 1e-40, f32::NEG_INFINITY];
        for (kind, seed) in [(Kind::Float, 22), (Kind::BFloat16, 23)] {
            let a = plain(&[2, 37, 40], seed, 3.0).to_kind(kind);
            a.get(1)
                .get(4)
                .narrow(0, 0, 5)
                .copy_(&Tensor::from_slice(&specials));
            for w in [plain(&[40], 24, 0.5) + 1.0, plain(&[37, 40], 25, 0.5) + 1.0] {
                let s2 = residual_add(&x, &a);
                let (f2, b2) = rms_norm_infer(&s2, &w, 1e-5, true, true);
                let (s, f, b) = add_rms_norm_infer(&x, &a, &w, 1e-5, true, true);
                same_bits(&s, &s2, "add + RMSNorm: sum");
                same_bits(&f.unwrap(), &f2.unwrap(), "add + RMSNorm: f32 norm");
                same_bits(
                    &b.unwrap(),
                    b2.as_ref().unwrap(),
                    "add + RMSNorm: bf16 norm",
                );
                // Only what is asked for.
                let (_, f, b) = add_rms_norm_infer(&x, &a, &w, 1e-5, false, true);
                assert!(f.is_none());
                same_bits(
                    &b.unwrap(),
                    b2.as_ref().unwrap(),
                    "add + RMSNorm: bf16 alone",
                );
                // Split parts: those of the two steps.
                let (hi2, lo2) = rms_norm_infer_split(&s2, &w, 1e-5);
                let (s3, hi, lo) = add_rms_norm_infer_split(&x, &a, &w, 1e-5);
                same_bits(&s3, &s2, "add + RMSNorm split: sum");
                same_bits(&hi, &hi2, "add + RMSNorm split: high parts");
                same_bits(&lo, &lo2, "add + RMSNorm split: low parts");
                threads_agree("add + RMSNorm split", &|| {
                    let (s, h, l) = add_rms_norm_infer_split(&x, &a, &w, 1e-5);
                    vec![s, h, l]
                });
                threads_agree("add + RMSNorm", &|| {
                    let (s, f, b) = add_rms_norm_infer(&x, &a, &w, 1e-5, true, true);
                    vec![s, f.unwrap(), b.unwrap()]
                });
            }
        }
    }

    #[test]
    fn split_rms_norm_parts_are_the_bf16_output_and_its_rounding_error() {
        let x = plain(&[2, 37, 64], 11, 3.0);
        // A row with an infinity: its high parts are non-finite, its low parts zero.
        let _ = x.get(1).get(5).get(7).fill_(f64::INFINITY);
        let w = plain(&[64], 12, 0.5) + 1.0;
        let (f, b) = rms_norm_infer(&x, &w, 1e-5, true, true);
        let (f, b) = (f.unwrap(), b.unwrap());
        let (hi, lo) = rms_norm_infer_split(&x, &w, 1e-5);
        same_bits(&hi, &b, "split high part vs the bf16 output");
        let finite = hi.to_kind(Kind::Float).isfinite();
        assert!(
            !bool::try_from(finite.all()).unwrap(),
            "the test row has non-finite values"
        );
        let lo_f = lo.to_kind(Kind::Float);
        // Zero where the high part is not finite; elsewhere hi + lo is the f32 value to
        // within bf16 rounding of the remainder (2^-8 of it, itself at most 2^-8 of |f|).
        let zero_lo = lo_f.masked_select(&finite.logical_not());
        assert!(bool::try_from(zero_lo.eq(0.0).all()).unwrap());
        let sum = hi.to_kind(Kind::Float) + &lo_f;
        let err = (&sum - &f).abs().masked_select(&finite);
        let bound = f.abs().masked_select(&finite) * 2f64.powi(-16);
        assert!(
            bool::try_from(err.le_tensor(&bound).all()).unwrap(),
            "hi + lo != f32 value"
        );
        // The low parts carry information: plain bf16 alone is off by far more.
        let plain_err = (hi.to_kind(Kind::Float) - &f).abs().masked_select(&finite);
        assert!(plain_err.max().double_value(&[]) > 100.0 * err.max().double_value(&[]));
        threads_agree("RMSNorm split", &|| {
            let (h, l) = rms_norm_infer_split(&x, &w, 1e-5);
            vec![h, l]
        });
    }

    #[test]
    fn split_products_are_near_f64_and_thread_independent_where_amx_is() {
        if !split_available() {
            // Without AMX the probed products stay in f32 sgemm: nothing is packed.
            let mut w = crate::llama::Weight::new(plain(&[192, 64], 13, 0.1));
            w.snapshot(true);
            assert!(w.split().is_none());
            return;
        }
        // 300 rows: two full blocks of 128 and a short one; 80 columns: a block of 64 and
        // one of 16.
        let x = plain(&[300, 64], 14, 2.0);
        let w = plain(&[80, 64], 15, 0.2);
        assert!(split_fits(&w) && !split_fits(&plain(&[81, 64], 15, 0.2)));
        let b = Tensor::zeros([64], (Kind::Float, Device::Cpu));
        let (hi, lo) = rms_norm_infer_split(&x, &(b + 1.0), 1e-5);
        let xs = rms_norm_infer(
            &x,
            &Tensor::ones([64], (Kind::Float, Device::Cpu)),
            1e-5,
            true,
            false,
        )
        .0
        .unwrap();
        let packed = split_pack(&w);
        let y = split_mm(&hi, &lo, &packed, 80);
        assert_eq!(y.size(), [300, 80]);
        let exact = xs
            .to_kind(Kind::Double)
            .matmul(&w.to_kind(Kind::Double).tr());
        let scale = exact.abs().max().double_value(&[]);
        let rel = |t: &Tensor| {
            (t.to_kind(Kind::Double) - &exact)
                .abs()
                .max()
                .double_value(&[])
                / scale
        };
        let e_split = rel(&y);
        let e_bf16 = rel(&xs
            .to_kind(Kind::BFloat16)
            .matmul(&w.to_kind(Kind::BFloat16).tr()));
        assert!(e_split < 2e-5, "split product error {e_split}");
        assert!(
            e_bf16 > 30.0 * e_split,
            "plain bf16 {e_bf16} vs split {e_split}"
        );
        threads_agree("split product", &|| vec![split_mm(&hi, &lo, &packed, 80)]);
    }

    #[test]
    fn inference_swiglu_reads_and_writes_bf16_exactly_as_f32_then_cast() {
        let a = plain(&[7, 33, 100], 4, 30.0);
        let u = plain(&[7, 33, 100], 5, 1.0);
        let out = both(swiglu_infer(&a, &u, true, true));
        close(&out[0], &(a.silu() * &u), "SwiGLU (inference, f32)");
        same_bits(
            &out[1],
            &out[0].to_kind(Kind::BFloat16),
            "SwiGLU bf16 output",
        );
        // bf16 inputs are widened exactly: the same as f32 inputs holding their values.
        let (ab, ub) = (a.to_kind(Kind::BFloat16), u.to_kind(Kind::BFloat16));
        let from_bf = both(swiglu_infer(&ab, &ub, true, true));
        let from_f = both(swiglu_infer(
            &ab.to_kind(Kind::Float),
            &ub.to_kind(Kind::Float),
            true,
            true,
        ));
        for (g, w) in from_bf.iter().zip(&from_f) {
            same_bits(g, w, "SwiGLU from bf16 inputs");
        }
        threads_agree("SwiGLU (inference)", &|| {
            both(swiglu_infer(&ab, &ub, true, true))
        });
    }

    #[test]
    fn inference_rope_transposes_and_matches_composite_bit_for_bit() {
        for pairing in [RopePairing::HalfSplit, RopePairing::Adjacent] {
            inference_rope_matches_composite(pairing);
        }
    }

    fn inference_rope_matches_composite(pairing: RopePairing) {
        let rope = rope_with(pairing);
        let x = plain(&[6, 37, 5, 16], 6, 1.0);
        // Position 0 rotates by nothing (cos 1, sin 0): put values there whose bf16
        // rounding is a tie (to even, both ways), an infinity and a NaN.
        let specials = [
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
            f32::from_bits(0xBF80_8000),
            f32::INFINITY,
            f32::NAN,
        ];
        x.narrow(1, 0, 1)
            .narrow(3, 0, 5)
            .copy_(&Tensor::from_slice(&specials).view([1, 1, 1, 5]));
        // The composite: transpose, rotate in f32, cast.
        let want = rope.apply(&x.transpose(1, 2)).contiguous();
        let got = rope.apply_heads(&x, Kind::Float);
        assert!(got.is_contiguous());
        same_bits(&got, &want, &format!("RoPE (inference, f32, {pairing:?})"));
        let got_b = rope.apply_heads(&x, Kind::BFloat16);
        same_bits(
            &got_b,
            &want.to_kind(Kind::BFloat16),
            "RoPE (inference, bf16 out)",
        );
        let xb = x.to_kind(Kind::BFloat16);
        let want_b = rope.apply(&xb.to_kind(Kind::Float).transpose(1, 2));
        same_bits(
            &rope.apply_heads(&xb, Kind::Float),
            &want_b.contiguous(),
            "RoPE (inference, bf16 in)",
        );
        threads_agree("RoPE (inference)", &|| {
            vec![
                rope.apply_heads(&x, Kind::Float),
                rope.apply_heads(&xb, Kind::BFloat16),
            ]
        });
    }

    #[test]
    fn residual_add_widens_bf16_exactly_as_libtorch_promotes() {
        let x = plain(&[3, 37, 100], 8, 10.0);
        let a = plain(&[3, 37, 100], 9, 3.0).to_kind(Kind::BFloat16);
        let specials = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0, 1e-40];
        a.narrow(1, 0, 1)
            .narrow(2, 0, 5)
            .copy_(&Tensor::from_slice(&specials).view([1, 1, 5]));
        let got = residual_add(&x, &a);
        assert_eq!(got.kind(), Kind::Float);
        same_bits(&got, &(&x + &a), "residual add (bf16 branch)");
        // An f32 branch takes libtorch's add.
        let af = a.to_kind(Kind::Float);
        same_bits(&residual_add(&x, &af), &(&x + &af), "residual add (f32)");
        threads_agree("residual add", &|| vec![residual_add(&x, &a)]);
    }

    #[test]
    fn causal_softmax_matches_masked_softmax() {
        // T = 37: full 16-lane blocks and tails; scores up to ~+-60 after scaling.
        let s = plain(&[3, 4, 37, 37], 7, 40.0);
        let scale = 1.0 / 8.0;
        let mask = Tensor::ones([37, 37], (Kind::Bool, Device::Cpu)).triu(1);
        let want = (&s * scale)
            .masked_fill(&mask, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float);
        let got = causal_softmax(&s, scale);
        close(&got, &want, "causal softmax");
        // Exact zeros above the diagonal; rows sum to 1.
        assert_eq!(got.masked_select(&mask).abs().max().double_value(&[]), 0.0);
        let sums = got.sum_dim_intlist(-1, false, Kind::Double);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
        threads_agree("causal softmax", &|| vec![causal_softmax(&s, scale)]);
    }

    #[test]
    fn causal_softmax_ignores_future_keys_and_keeps_nan_in_its_row() {
        // T = 64: every row's tail is read in place, 16 lanes at a time, past the keys.
        let s = plain(&[2, 3, 64, 64], 10, 40.0);
        let scale = 1.0 / 8.0;
        // A NaN and an infinity among future keys (lanes past the key count of rows 5
        // and 17); a NaN among the keys of row 40.
        let _ = s.get(0).get(0).get(5).get(10).fill_(f64::NAN);
        let _ = s.get(0).get(1).get(17).get(20).fill_(f64::INFINITY);
        let _ = s.get(1).get(2).get(40).get(3).fill_(f64::NAN);
        let mask = Tensor::ones([64, 64], (Kind::Bool, Device::Cpu)).triu(1);
        let want = (&s * scale)
            .masked_fill(&mask, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float);
        let got = causal_softmax(&s, scale);
        let nan_row = got.get(1).get(2).get(40);
        assert_eq!(
            nan_row
                .narrow(0, 0, 41)
                .isnan()
                .sum(Kind::Int64)
                .int64_value(&[]),
            41,
            "a NaN key makes its row NaN"
        );
        // Everything else is finite and matches the masked softmax.
        let _ = got.get(1).get(2).get(40).fill_(0.0);
        let _ = want.get(1).get(2).get(40).fill_(0.0);
        assert_eq!(got.isnan().sum(Kind::Int64).int64_value(&[]), 0);
        close(&got, &want, "causal softmax, T = 64");
        assert_eq!(got.masked_select(&mask).abs().max().double_value(&[]), 0.0);
    }
}
