//! Small statistics the runner needs: the Student-t quantile of the 95% intervals that
//! `RunContext::metric_samples` records and that seed-spread tolerances use.

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

#[cfg(test)]
mod tests {
    use super::t975;

    #[test]
    fn t_quantiles_match_the_table_and_fall_to_normal() {
        assert!(t975(1).is_nan());
        assert_eq!(t975(2), 12.706);
        assert_eq!(t975(3), 4.303);
        assert_eq!(t975(8), 2.365);
        assert_eq!(t975(100), 1.96);
    }
}
