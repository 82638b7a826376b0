//! Data-free look at the down-projections, in the spirit of Yu et al. 2024 ("The Super
//! Weight in Large Language Models"): a super weight sits where a spike in the column
//! (input channel) maxima of |W_down| meets a spike in its row (output dim) maxima.
//! Here only the weights are read: no forward pass.

use sinkrep_analysis::down_proj_sparsity;
use sinkrep_analysis::to_vec;
use sinkrep_model::Decoder;
use sinkrep_stats::median;

/// A column (or row) counts as a spike when its max |W| exceeds this many times the
/// median of its layer's column (row) maxima. Chosen before looking: an order of
/// magnitude, the scale on which Yu et al.'s spikes stand out in their plots.
pub const SPIKE_FACTOR: f64 = 10.0;

/// One layer's down-projection W_down (D, F), reduced.
#[derive(Debug, Clone, PartialEq)]
pub struct DownProjLayer {
    pub layer: usize,
    /// The largest |W| entry and where it is: row = output (hidden) dim, col = FFN channel.
    pub max_abs: f64,
    pub max_row: usize,
    pub max_col: usize,
    /// Median over the F columns of the column max |W|; largest column max over it.
    pub col_max_median: f64,
    pub col_spike: f64,
    /// Median over the D rows of the row max |W|; largest row max over it.
    pub row_max_median: f64,
    pub row_spike: f64,
    /// Columns and rows whose max exceeds `SPIKE_FACTOR` x the median.
    pub spike_cols: Vec<usize>,
    pub spike_rows: Vec<usize>,
    /// Max |W| of every column, (F).
    pub col_max: Vec<f64>,
}

impl DownProjLayer {
    /// 1 + the number of columns whose max |W| exceeds column `c`'s: 1 is the largest.
    pub fn col_rank(&self, c: usize) -> usize {
        let v = self.col_max.get(c).copied().unwrap_or(f64::NAN);
        1 + self.col_max.iter().filter(|&&x| x > v).count()
    }
}

/// Index and value of the largest element (first on ties); `(0, NaN)` when empty.
pub fn argmax(v: &[f64]) -> (usize, f64) {
    v.iter()
        .enumerate()
        .fold((0, f64::NAN), |(bi, bv), (i, &x)| {
            if bv.is_nan() || x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
}

/// Scans every layer's W_down.
pub fn scan_down_proj(model: &dyn Decoder) -> Vec<DownProjLayer> {
    (0..model.config().n_layers)
        .map(|layer| {
            let w = model.down_proj(layer).abs(); // (D, F)
            let col_max = to_vec(&w.amax([0], false)); // (F)
            let row_max = to_vec(&w.amax([1], false)); // (D)
            let (max_col, max_abs) = argmax(&col_max);
            let (max_row, _) = argmax(&row_max);
            let col_med = median(&col_max);
            let row_med = median(&row_max);
            let spikes = |v: &[f64], med: f64| -> Vec<usize> {
                v.iter()
                    .enumerate()
                    .filter(|(_, &x)| x > SPIKE_FACTOR * med)
                    .map(|(i, _)| i)
                    .collect()
            };
            DownProjLayer {
                layer,
                max_abs,
                max_row,
                max_col,
                col_max_median: col_med,
                col_spike: max_abs / col_med,
                row_max_median: row_med,
                row_spike: row_max[max_row] / row_med,
                spike_cols: spikes(&col_max, col_med),
                spike_rows: spikes(&row_max, row_med),
                col_max,
            }
        })
        .collect()
}

/// Top-1 and top-2 energy shares of every down-projection column of `layer`
/// (`sinkrep_analysis::down_proj_sparsity`, one column at a time).
pub fn column_shares(model: &dyn Decoder, layer: usize) -> Vec<(f64, f64)> {
    let w = model.down_proj(layer);
    let f = w.size()[1] as usize;
    (0..f)
        .map(|c| {
            let (_, top1, top2) = down_proj_sparsity(w, c, 2);
            (top1, top2)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_largest() {
        assert_eq!(argmax(&[1.0, 5.0, 5.0, 2.0]), (1, 5.0));
    }
}
