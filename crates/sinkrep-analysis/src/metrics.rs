//! Scalar metrics on plain vectors.

/// DomRatio(h) = max_j |h_j| / mean_k |h_k| (the paper's definition, arXiv 2605.06611).
pub fn dom_ratio(h: &[f64]) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    let max = h.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mean = h.iter().map(|x| x.abs()).sum::<f64>() / h.len() as f64;
    max / mean
}

/// Kendall's tau-b between two equally long sequences (ties handled), O(n^2): n here is a
/// sequence length (<= a few thousand).
pub fn kendall_tau(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (mut conc, mut disc, mut ties_a, mut ties_b) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in (i + 1)..n {
            let da = (a[i] - a[j]).partial_cmp(&0.0);
            let db = (b[i] - b[j]).partial_cmp(&0.0);
            use std::cmp::Ordering::*;
            match (da, db) {
                (Some(Equal), Some(Equal)) => {}
                (Some(Equal), _) => ties_a += 1,
                (_, Some(Equal)) => ties_b += 1,
                (Some(x), Some(y)) if x == y => conc += 1,
                (Some(_), Some(_)) => disc += 1,
                _ => {}
            }
        }
    }
    let n0 = (conc + disc + ties_a) as f64;
    let n1 = (conc + disc + ties_b) as f64;
    if n0 == 0.0 || n1 == 0.0 {
        return f64::NAN;
    }
    (conc - disc) as f64 / (n0 * n1).sqrt()
}

/// Effective rank (Roy & Vetterli 2007): exp of the entropy of the normalised singular
/// values.
pub fn effective_rank(singular_values: &[f64]) -> f64 {
    let sum: f64 = singular_values.iter().filter(|s| **s > 0.0).sum();
    if sum <= 0.0 {
        return f64::NAN;
    }
    let h: f64 = singular_values
        .iter()
        .filter(|s| **s > 0.0)
        .map(|s| {
            let p = s / sum;
            -p * p.ln()
        })
        .sum();
    h.exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dom_ratio_known_values() {
        assert_eq!(dom_ratio(&[1.0, -1.0, 1.0, -1.0]), 1.0);
        // max 10, mean (10+1+1+0)/4 = 3
        assert!((dom_ratio(&[10.0, 1.0, -1.0, 0.0]) - 10.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn kendall_known_values() {
        assert_eq!(kendall_tau(&[1., 2., 3., 4.], &[10., 20., 30., 40.]), 1.0);
        assert_eq!(kendall_tau(&[1., 2., 3., 4.], &[4., 3., 2., 1.]), -1.0);
        // one discordant pair of 6: (5 - 1) / 6
        let t = kendall_tau(&[1., 2., 3., 4.], &[1., 3., 2., 4.]);
        assert!((t - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn effective_rank_known_values() {
        assert!((effective_rank(&[1.0, 1.0, 1.0, 1.0]) - 4.0).abs() < 1e-12);
        assert!((effective_rank(&[5.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
    }
}
