//! The small numerics every sinkrep crate shares. NaN handling is part of each
//! function's contract and is pinned by the tests below: a verdict must never pass
//! because a NaN was skipped, so only the `finite_*` functions drop non-finite values.

pub mod rng;

use std::borrow::Borrow;

pub use rng::{derive, mix64, SplitMix64};

/// Gu et al.'s threshold of Sink_k^eps: a (layer, head) pair has its sink at k when the
/// attention position k receives exceeds eps (Gu et al., ICLR 2025; the paper uses eps = 0.3).
pub const SINK_EPS: f64 = 0.3;

/// Arithmetic mean; NaN when empty, and NaN when any value is NaN. The sum starts at
/// -0.0, the identity of IEEE addition, as `Iterator::sum` does for floats. Takes values
/// or references (`mean(&v)`, `mean(v.iter().map(..))`).
pub fn mean<I>(v: I) -> f64
where
    I: IntoIterator,
    I::Item: Borrow<f64>,
{
    let (s, n) = v
        .into_iter()
        .fold((-0.0, 0usize), |(s, n), x| (s + *x.borrow(), n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// Mean of the finite values only; NaN when there are none.
pub fn finite_mean<I>(v: I) -> f64
where
    I: IntoIterator,
    I::Item: Borrow<f64>,
{
    mean(v.into_iter().map(|x| *x.borrow()).filter(|x| x.is_finite()))
}

/// Smallest value; NaN when empty or when any value is NaN.
pub fn min(v: &[f64]) -> f64 {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Largest value; NaN when empty or when any value is NaN.
pub fn max(v: &[f64]) -> f64 {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Median (mean of the two middle values for an even count); NaN when empty or when any
/// value is NaN.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}

/// Median of the finite values only; NaN when there are none.
pub fn finite_median<I>(v: I) -> f64
where
    I: IntoIterator,
    I::Item: Borrow<f64>,
{
    let xs: Vec<f64> = v
        .into_iter()
        .map(|x| *x.borrow())
        .filter(|x| x.is_finite())
        .collect();
    median(&xs)
}

/// `v[k]` over the mean of `v` at every other position; NaN when `v` has fewer than two
/// entries or `k` is out of range.
pub fn ratio_at(v: &[f64], k: usize) -> f64 {
    if v.len() < 2 || k >= v.len() {
        return f64::NAN;
    }
    let others = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != k)
        .map(|(_, x)| x)
        .sum::<f64>()
        / (v.len() - 1) as f64;
    v[k] / others
}

/// Student-t 97.5% quantiles for 1..=30 degrees of freedom (two-sided 95% interval).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The 97.5% Student-t quantile for the mean of `n` samples (n - 1 degrees of freedom);
/// 1.96 past 31 samples, NaN below 2 (no spread to estimate).
pub fn t975(n: usize) -> f64 {
    match n {
        0 | 1 => f64::NAN,
        _ => T975.get(n - 2).copied().unwrap_or(1.96),
    }
}

/// The mean of repeated measurements (one per seed) with its Student-t 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanInterval {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); NaN below two samples.
    pub sd: f64,
    /// Half-width of the 95% interval, t975(n) sd / sqrt(n); NaN below two samples.
    pub half: f64,
}

impl MeanInterval {
    /// NaN in every field but `n` when `v` is empty.
    pub fn of(v: &[f64]) -> MeanInterval {
        let n = v.len();
        let mean = mean(v);
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        MeanInterval {
            n,
            mean,
            sd,
            half: t975(n) * sd / (n as f64).sqrt(),
        }
    }

    pub fn lo(&self) -> f64 {
        self.mean - self.half
    }

    pub fn hi(&self) -> f64 {
        self.mean + self.half
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f64 = f64::NAN;

    /// A NaN must reach the verdict: every plain statistic propagates it, only the
    /// `finite_*` ones skip it, and an empty input is NaN (never 0 or +-inf).
    #[test]
    fn nan_propagates_except_in_finite_statistics() {
        let v = [1.0, NAN, 3.0];
        assert!(mean(v).is_nan());
        assert!(min(&v).is_nan());
        assert!(max(&v).is_nan());
        assert!(median(&v).is_nan());
        assert!(ratio_at(&v, 0).is_nan());
        assert_eq!(finite_mean(v), 2.0);
        assert_eq!(finite_median(v), 2.0);
        assert_eq!(finite_mean([f64::INFINITY, 4.0]), 4.0);
        let none: [f64; 0] = [];
        for empty in [
            mean(none),
            finite_mean(none),
            min(&none),
            max(&none),
            median(&none),
        ] {
            assert!(empty.is_nan());
        }
        assert!(finite_median([NAN]).is_nan());
        assert!(ratio_at(&[1.0], 0).is_nan());
        assert!(ratio_at(&[1.0, 2.0], 2).is_nan());
    }

    #[test]
    fn plain_values() {
        assert_eq!(mean([1.0, 2.0, 6.0]), 3.0);
        assert_eq!(min(&[2.0, -1.0, 5.0]), -1.0);
        assert_eq!(max(&[2.0, -1.0, 5.0]), 5.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(ratio_at(&[6.0, 1.0, 3.0], 0), 3.0);
        assert_eq!(ratio_at(&[1.0, 6.0, 3.0], 1), 3.0);
    }

    #[test]
    fn t_quantiles_match_the_table_and_fall_to_normal() {
        assert!(t975(1).is_nan());
        assert_eq!(t975(2), 12.706);
        assert_eq!(t975(3), 4.303);
        assert_eq!(t975(8), 2.365);
        assert_eq!(t975(100), 1.96);
    }

    #[test]
    fn interval_of_two_and_of_one_sample() {
        let i = MeanInterval::of(&[1.0, 3.0]);
        assert_eq!((i.n, i.mean), (2, 2.0));
        assert_eq!(i.sd, 2f64.sqrt());
        assert!((i.half - 12.706).abs() < 1e-12);
        let one = MeanInterval::of(&[5.0]);
        assert_eq!(one.mean, 5.0);
        assert!(one.sd.is_nan() && one.half.is_nan() && one.lo().is_nan());
    }
}
