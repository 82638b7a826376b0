//! The reductions probes keep of an activation, one pass each on the CPU.
//!
//! An analysis forward reduces every layer's activations to a few statistics; with
//! libtorch ops each takes a chain of kernels (an `abs` copy before `amax`, a subtraction
//! and a square before a sum). For f32 contiguous CPU tensors outside autograd these run
//! as single-pass kernels (`csrc/fused.cpp`; `SINKREP_FUSED=0` switches them off), else as
//! libtorch ops. The two agree to f32 rounding (tests below); the kernels are bit-identical
//! for any thread count.

use tch::{Kind, Tensor};

use crate::fused;

/// Moments over dim 0 of f32 `x` (B, ...), B >= 1, each shaped like `x[0]`, f32: the mean,
/// the sum of `x - mean` and the sum of `(x - mean)^2` (the corrected two-pass algorithm:
/// the second sum is exactly zero only in exact arithmetic, and corrects the first).
pub fn batch_moments(x: &Tensor) -> (Tensor, Tensor, Tensor) {
    if fused::applies_reduce(x) && x.dim() >= 2 && x.size()[0] >= 1 {
        let o = fused::batch_moments(x);
        return (o.get(0), o.get(1), o.get(2));
    }
    let mean = x.mean_dim(0, false, Kind::Float);
    let mut d = x - &mean;
    let dsum = d.sum_dim_intlist(0, false, Kind::Float);
    let d2 = d.square_().sum_dim_intlist(0, false, Kind::Float);
    (mean, dsum, d2)
}

/// The L2 norm and the max |x| of every row (last dimension) of f32 `x`, each shaped
/// like `x` without its last dimension, f32.
pub fn row_norm_maxabs(x: &Tensor) -> (Tensor, Tensor) {
    if fused::applies_reduce(x) && x.dim() >= 1 && x.size().last().is_some_and(|&d| d >= 1) {
        let o = fused::row_norm_maxabs(x);
        return (o.get(0), o.get(1));
    }
    (
        x.norm_scalaropt_dim(2, [-1], false),
        x.abs().amax([-1], false),
    )
}

/// For f32 `x` (B, T, F): the max |x| of each channel over every sequence and every
/// position but `skip`, shape (F), f32; `None` when no position is left.
pub fn channel_maxabs(x: &Tensor, skip: Option<i64>) -> Option<Tensor> {
    let s = x.size();
    let t = *s.get(1)?;
    let left = t - i64::from(skip.is_some_and(|k| (0..t).contains(&k)));
    if x.dim() != 3 || left == 0 || s[0] == 0 {
        return None;
    }
    if fused::applies_reduce(x) {
        return Some(fused::channel_maxabs(x, skip.unwrap_or(-1)));
    }
    others(x, 1, skip.filter(|k| (0..t).contains(k)).unwrap_or(-1))
        .iter()
        .map(|v| v.abs().amax([0, 1], false))
        .reduce(|a, b| a.maximum(&b))
}

/// The views of `x` along `dim` that hold every index except `k` (zero, one or two
/// views: before k and after k; all of `x` for k = -1), so reductions over "the other
/// positions" need no copy.
pub fn others(x: &Tensor, dim: i64, k: i64) -> Vec<Tensor> {
    let t = x.size()[dim as usize];
    let mut v = Vec::with_capacity(2);
    if k > 0 {
        v.push(x.narrow(dim, 0, k));
    }
    if k + 1 < t {
        v.push(x.narrow(dim, k + 1, t - k - 1));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(shape: &[i64], seed: i64) -> Tensor {
        crate::seeded_randn(shape, seed)
    }

    fn close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
        let scale = b.abs().max().double_value(&[]).max(1e-30);
        let err = (a - b).abs().max().double_value(&[]) / scale;
        assert!(
            err < tol,
            "{what}: max error {err:e} relative to max |value|"
        );
    }

    #[test]
    fn batch_moments_match_libtorch_and_cancel_nothing_at_a_large_mean() {
        // A mean 1e4 times the spread in one column (a massive dimension): the corrected
        // two-pass sums still give the spread.
        let x = plain(&[50, 7, 33], 1);
        let _ = x.narrow(2, 0, 1).g_add_scalar_(1e4);
        let (mean, dsum, d2) = batch_moments(&x);
        assert_eq!(mean.size(), vec![7, 33]);
        let want_mean = x.to_kind(Kind::Double).mean_dim(0, false, Kind::Double);
        let want_var = x.to_kind(Kind::Double).var_dim(0, false, false);
        let mean_d = mean.to_kind(Kind::Double) + dsum.to_kind(Kind::Double) / 50.0;
        let var = (d2.to_kind(Kind::Double) - dsum.to_kind(Kind::Double).square() / 50.0) / 50.0;
        close(&mean_d, &want_mean, 1e-7, "mean");
        close(&var, &want_var, 1e-5, "variance");
        // Thread count does not change a bit.
        let prev = tch::get_num_threads();
        tch::set_num_threads(1);
        let one = batch_moments(&x);
        tch::set_num_threads(2);
        let two = batch_moments(&x);
        tch::set_num_threads(prev);
        assert!(one.1.equal(&two.1) && one.2.equal(&two.2));
        // The libtorch path (a strided view) agrees with the kernel.
        let strided = x.transpose(1, 2).contiguous().transpose(1, 2);
        assert!(!strided.is_contiguous());
        let lib = batch_moments(&strided);
        let lib_mean = lib.0.to_kind(Kind::Double) + lib.1.to_kind(Kind::Double) / 50.0;
        let lib_var =
            (lib.2.to_kind(Kind::Double) - lib.1.to_kind(Kind::Double).square() / 50.0) / 50.0;
        close(&lib_mean, &mean_d, 1e-7, "corrected mean, libtorch path");
        close(&lib_var, &var, 1e-5, "variance, libtorch path");
    }

    #[test]
    fn row_statistics_match_libtorch() {
        let x = plain(&[3, 64, 37], 2) * 10.0;
        let (norm, maxabs) = row_norm_maxabs(&x);
        assert_eq!(norm.size(), vec![3, 64]);
        close(&norm, &x.norm_scalaropt_dim(2, [-1], false), 1e-6, "norm");
        assert!(maxabs.equal(&x.abs().amax([-1], false)), "max |x| is exact");
        let strided = x.transpose(0, 1).contiguous().transpose(0, 1);
        let (lib_norm, lib_max) = row_norm_maxabs(&strided);
        close(&lib_norm, &norm, 1e-6, "norm, libtorch path");
        assert!(lib_max.equal(&maxabs));
        // A NaN makes its row's statistics NaN, and only its row's.
        let _ = x.get(1).get(5).get(3).fill_(f64::NAN);
        let (norm, maxabs) = row_norm_maxabs(&x);
        for t in [&norm, &maxabs] {
            assert!(t.get(1).get(5).double_value(&[]).is_nan());
            assert_eq!(t.isnan().sum(Kind::Int64).int64_value(&[]), 1);
        }
    }

    #[test]
    fn channel_max_leaves_out_the_skipped_position() {
        let x = plain(&[4, 9, 300], 3);
        // Position 2 holds the largest values: leaving it out must change the result.
        let _ = x.narrow(1, 2, 1).g_mul_scalar_(100.0);
        let all = channel_maxabs(&x, None).unwrap();
        let but2 = channel_maxabs(&x, Some(2)).unwrap();
        assert!(all.equal(&x.abs().amax([0, 1], false)));
        let rest = Tensor::cat(&[x.narrow(1, 0, 2), x.narrow(1, 3, 6)], 1);
        assert!(but2.equal(&rest.abs().amax([0, 1], false)));
        assert!(!but2.equal(&all));
        let strided = x.transpose(0, 1).contiguous().transpose(0, 1);
        assert!(channel_maxabs(&strided, Some(2)).unwrap().equal(&but2));
        // Nothing left: None.
        assert!(channel_maxabs(&x.narrow(1, 0, 1).contiguous(), Some(0)).is_none());
    }
}
