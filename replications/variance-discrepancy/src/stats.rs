//! Statistics of a per-position variance profile: how much position 0 stands out, and how
//! the variance falls with position.

use sinkrep_analysis::kendall_tau;

/// Summary of one per-position variance profile `var[t]`, t = 0..T-1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Profile {
    /// var[0] / mean of var[1..]: how far position 0 sits above the average position.
    pub ratio_first: f64,
    /// var[0] / max of var[1..]: > 1 exactly when position 0 has the highest variance.
    pub first_over_max_rest: f64,
    /// Least-squares slope of ln var[t] on ln(t+1) over t = 1..T-1 (position 0, the
    /// outlier under test, is left out). Uniform averaging of i.i.d. values gives -1.
    pub slope: f64,
    /// Spearman's rho between t and var[t] over t = 1..T-1.
    pub spearman: f64,
    /// Kendall's tau-b between t and var[t] over t = 1..T-1.
    pub kendall: f64,
}

impl Profile {
    /// NaN everywhere when the profile has fewer than 3 positions (no decay to fit).
    pub fn of(var: &[f64]) -> Profile {
        if var.len() < 3 {
            return Profile {
                ratio_first: f64::NAN,
                first_over_max_rest: f64::NAN,
                slope: f64::NAN,
                spearman: f64::NAN,
                kendall: f64::NAN,
            };
        }
        let rest = &var[1..];
        let mean_rest = rest.iter().sum::<f64>() / rest.len() as f64;
        let max_rest = rest.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pos: Vec<f64> = (1..var.len()).map(|t| t as f64).collect();
        Profile {
            ratio_first: var[0] / mean_rest,
            first_over_max_rest: var[0] / max_rest,
            slope: loglog_slope(var, 1),
            spearman: spearman(&pos, rest),
            kendall: kendall_tau(&pos, rest),
        }
    }
}

/// Least-squares slope of ln var[t] on ln(t+1) over t = from..T-1. NaN when a variance in
/// the range is not positive or fewer than two positions remain.
pub fn loglog_slope(var: &[f64], from: usize) -> f64 {
    let pts: Vec<(f64, f64)> = var
        .iter()
        .enumerate()
        .skip(from)
        .map(|(t, v)| (((t + 1) as f64).ln(), v.ln()))
        .collect();
    if pts.len() < 2 || pts.iter().any(|p| !p.1.is_finite()) {
        return f64::NAN;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

/// Ranks 1..n, ties given their average rank. NaN values rank last (they make any
/// correlation NaN anyway through [`spearman`]).
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rho: Pearson correlation of the ranks (average ranks for ties). NaN when
/// either side is constant, shorter than 2, or holds a NaN.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 || a[..n].iter().chain(&b[..n]).any(|x| x.is_nan()) {
        return f64::NAN;
    }
    pearson(&ranks(&a[..n]), &ranks(&b[..n]))
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let sab: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let saa: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let sbb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    sab / (saa * sbb).sqrt()
}
