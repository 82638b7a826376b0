//! Fused CPU kernels for training (csrc/fused.cpp): RMSNorm, SwiGLU and half-split RoPE as
//! custom autograd functions, each one pass forward and one pass backward.
//!
//! `applies` says when they are used: f32 tensors on the CPU that take part in autograd
//! (a training forward). Everything else (no-grad analysis, which every pretrained-model
//! baseline holds; bf16; CUDA) keeps the composite libtorch ops, so those numbers do not
//! move. Within a training run the results are bit-identical for any thread count and
//! for each of the kernels' ISA clones (see the C++ file's header).

// The FFI calls and taking ownership of the tensors the C++ side returns need `unsafe`;
// the C++ functions catch every exception and report failure by return code.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr};
use tch::{Device, Kind, Tensor};

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
    fn sinkrep_fused_rope(
        x: *const std::ffi::c_void,
        cos: *const std::ffi::c_void,
        sin: *const std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// Set `SINKREP_FUSED=0` to train with the composite ops instead (a comparison switch;
/// the two differ in the last bits, so runs are only reproducible under one setting).
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

#[cfg(test)]
mod tests {
    //! Each fused kernel against the composite libtorch ops it replaces (values and every
    //! gradient, to f32 rounding), and bit-identical for 1 and 2 threads.
    use super::*;
    use crate::config::RopePairing;

    fn leaf(shape: &[i64], seed: i64, scale: f64) -> Tensor {
        tch::manual_seed(seed);
        (Tensor::randn(shape, (Kind::Float, Device::Cpu)) * scale).set_requires_grad(true)
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
        tch::manual_seed(seed);
        let up = Tensor::randn(y.size(), (Kind::Float, Device::Cpu));
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

    #[test]
    fn rope_matches_composite_half_split() {
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
            rope_pairing: RopePairing::HalfSplit,
            rope_scaling: crate::config::RopeScaling::None,
            tied_embeddings: true,
            max_seq_len: 40,
            attn_variant: crate::config::AttnVariant::Baseline,
            head_norm_init: 1.0,
            zero_init: false,
        };
        let rope = crate::llama::Rope::new(&cfg, 40, Device::Cpu);
        // T = 37 < the table's 40 positions; 1110 rows, two parallel chunks of 1024.
        let x = leaf(&[6, 37, 5, 16], 6, 1.0);
        check(
            "RoPE",
            &|t| rope.apply_bthd(&t[0]),
            &|t| rope.apply(&t[0].transpose(1, 2)),
            &[x],
        );
    }
}
