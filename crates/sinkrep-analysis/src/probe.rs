//! `SinkProbe`: one probe that watches the attention pattern, the value-aggregation
//! output, the residual stream and the FFN intermediate of every layer, and keeps only
//! reductions. Batches of sequences can be fed one after another: every statistic is an
//! accumulated sum (f64) or an appended per-sequence value.

use sinkrep_model::reduce::{self, others};
use sinkrep_model::{Probe, Site};
use tch::{Kind, Tensor};

/// Running per-(position, channel) moments across sequences, merged batch by batch.
///
/// Each batch is reduced in f32 with the corrected two-pass algorithm (mean, then squared
/// deviations from it), so no f64 copy of the (B, T, C) activations is made and nothing
/// cancels when the mean dwarfs the spread (the first token's massive dims); the small
/// (T, C) batch results are merged in f64 with Chan et al.'s pairwise update. (libtorch's
/// Welford `var` is exact too but ~8x slower on the CPU.)
#[derive(Debug, Default)]
pub struct Moments {
    /// Mean over sequences, (T, C), f64.
    pub mean: Option<Tensor>,
    /// Sum of squared deviations from `mean` over sequences, (T, C), f64.
    pub m2: Option<Tensor>,
    /// Sum over sequences of the variance across channels at each position, (T), f64;
    /// accumulated from batches of one sequence only (see `add`).
    pub chan_var_sum: Option<Tensor>,
    pub count: i64,
}

impl Moments {
    /// Adds a batch x: (B, T, C) of f32 activations.
    pub fn add(&mut self, x: &Tensor) {
        let nb = x.size()[0];
        let (mean_b, m2_b) = if nb == 1 {
            // One sequence: the values the two-pass sums below give for n = 1, bit for
            // bit, without their seven passes over (T, C): d = x - x is 0, or NaN where x
            // is not finite; the mean is x + d (so -0 comes out +0, as 0 + x does) and
            // the sum of squared deviations is d.
            let xd = x.get(0).to_kind(Kind::Double);
            #[allow(clippy::eq_op)] // x - x on purpose: 0, or NaN where x is not finite
            let d = &xd - &xd;
            (&xd + &d, d)
        } else {
            // (T, C) each, f32, one fused pass on the CPU (sinkrep_model::reduce).
            let (mean_f, dsum, d2) = reduce::batch_moments(x);
            // Corrected two-pass: sum(d^2) - sum(d)^2 / n removes the error of the rounded
            // f32 mean (exact arithmetic would give sum(d) = 0), and sum(d)/n restores it.
            let dsum = dsum.to_kind(Kind::Double);
            let m2_b = d2.to_kind(Kind::Double) - dsum.square() / nb as f64;
            (mean_f.to_kind(Kind::Double) + dsum / nb as f64, m2_b)
        };
        // The variance across channels is reported only for a single sequence (N = 1),
        // which means one batch of one: a batch of two or more proves N >= 2, so it is
        // skipped there (two passes over (B, T, C) saved per layer).
        if nb == 1 {
            let mean_c = x.mean_dim(-1, true, Kind::Float); // (1, T, 1)
            let cv = (x - mean_c)
                .square_()
                .mean_dim(-1, false, Kind::Float) // (1, T): variance across channels
                .to_kind(Kind::Double)
                .sum_dim_intlist(0, false, Kind::Double);
            add_into(&mut self.chan_var_sum, cv);
        }
        let na = self.count;
        let n = (na + nb) as f64;
        (self.mean, self.m2) = match (self.mean.take(), self.m2.take()) {
            (Some(mean_a), Some(m2_a)) => {
                let delta = &mean_b - &mean_a;
                let mean = &mean_a + &delta * (nb as f64 / n);
                let m2 = m2_a + m2_b + delta.square() * (na as f64 * nb as f64 / n);
                (Some(mean), Some(m2))
            }
            _ => (Some(mean_b), Some(m2_b)),
        };
        self.count += nb;
    }

    /// Per-position variance across sequences (population), averaged over channels: (T).
    pub fn var_across_sequences(&self) -> Vec<f64> {
        match &self.m2 {
            Some(m2) if self.count > 0 => {
                let var = m2 / self.count as f64;
                to_vec(&var.mean_dim(-1, false, Kind::Double))
            }
            _ => vec![],
        }
    }

    /// Per-position variance across channels (population) of a single sequence: (T).
    /// Empty unless exactly one sequence was added.
    pub fn var_across_channels(&self) -> Vec<f64> {
        match &self.chan_var_sum {
            Some(c) if self.count == 1 => to_vec(c),
            _ => vec![],
        }
    }

    /// Takes positions 0..n (the first n rows) from `exact`, moments of the same sequences
    /// over a prefix of at least n positions (`SinkProbe::adopt_prefix`).
    fn adopt_prefix(&mut self, exact: &Moments, n: i64) {
        debug_assert_eq!(self.count, exact.count);
        for (mine, theirs) in [
            (&mut self.mean, &exact.mean),
            (&mut self.m2, &exact.m2),
            (&mut self.chan_var_sum, &exact.chan_var_sum),
        ] {
            if let (Some(m), Some(e)) = (mine.as_mut(), theirs) {
                m.narrow(0, 0, n).copy_(&e.narrow(0, 0, n));
            }
        }
    }
}

fn add_into(acc: &mut Option<Tensor>, x: Tensor) {
    *acc = Some(match acc.take() {
        Some(a) => a + x,
        None => x,
    });
}

/// A tensor as a flat `Vec<f64>` on the CPU (any kind, any device); empty if libtorch
/// cannot convert it.
pub fn to_vec(t: &Tensor) -> Vec<f64> {
    let t = t
        .to_kind(Kind::Double)
        .to_device(tch::Device::Cpu)
        .flatten(0, -1);
    Vec::<f64>::try_from(&t).unwrap_or_default()
}

/// Column `k` of attention maps a: (B, H, T, T): alpha_k per (sequence, head) (mean of
/// A[i, k] over queries i >= k), and the sum and count of the per-(sequence, head) mean
/// over queries i > k (the attention mass).
fn column(a: &Tensor, k: usize) -> (Vec<Vec<f64>>, f64, i64) {
    let k = k as i64;
    let t = a.size()[2];
    let col = a.select(3, k); // (B, H, T)
    let alpha = col.narrow(2, k, t - k).mean_dim(-1, false, Kind::Double); // (B, H)
    let b = alpha.size()[0];
    let flat = to_vec(&alpha);
    let h = flat.len() / b.max(1) as usize;
    let per_seq = (0..b as usize)
        .map(|s| flat[s * h..(s + 1) * h].to_vec())
        .collect();
    if t - k - 1 > 0 {
        let mass = col
            .narrow(2, k + 1, t - k - 1)
            .mean_dim(-1, false, Kind::Double);
        (
            per_seq,
            mass.sum(Kind::Double).double_value(&[]),
            mass.numel() as i64,
        )
    } else {
        (per_seq, 0.0, 0)
    }
}

/// Per-layer accumulators.
#[derive(Debug, Default)]
pub struct LayerAcc {
    /// alpha_K per (sequence, head), appended batch by batch.
    pub alpha: Vec<Vec<f64>>,
    /// Sum over (sequence, head) of the mean over queries i > K of A[i, K].
    pub mass_sum: f64,
    pub mass_count: i64,
    /// The same two for the comparison column (`SinkProbe::compare`), when set.
    pub cmp_alpha: Vec<Vec<f64>>,
    pub cmp_mass_sum: f64,
    pub cmp_mass_count: i64,
    /// Value-aggregation output z (heads concatenated) moments.
    pub z: Moments,
    /// Attention output (after W_O) moments, when requested.
    pub attn_out: Moments,
    /// Residual stream after the layer: sums over sequences.
    pub dom_ratio_sum: f64,
    pub max_abs_k_sum: f64,
    pub max_abs_others_sum: f64,
    pub norm_k_sum: f64,
    pub norm_others_sum: f64,
    /// Sum over sequences of h_K (D).
    pub resid_k_sum: Option<Tensor>,
    /// Residual stream before the layer's FFN (after attention), at K: sums of norm and
    /// variance across channels, and the same averaged over the other positions.
    pub mid_norm_k_sum: f64,
    pub mid_norm_others_sum: f64,
    /// FFN intermediate: sum over sequences of m_K (F).
    pub mlp_k_sum: Option<Tensor>,
    /// FFN intermediate: max over sequences and positions != K of |m_t,c| (F).
    pub mlp_others_max: Option<Tensor>,
    /// Sum over batches of the median of |m| over the whole batch (positions, channels).
    pub mlp_median_sum: f64,
    pub mlp_batches: i64,
    pub n_seqs: i64,
}

/// Watches every layer and reduces; see the module docs.
#[derive(Debug)]
pub struct SinkProbe {
    pub k: usize,
    /// A second attention column to reduce (alpha and mass only): the first text token
    /// when K is a BOS, so BOS and no-BOS models can be compared.
    pub compare: Option<usize>,
    pub layers: Vec<LayerAcc>,
    /// Also accumulate the attention output after W_O (for the W_O ordering check).
    pub with_attn_out: bool,
}

impl SinkProbe {
    pub fn new(n_layers: usize, k: usize) -> Self {
        SinkProbe {
            k,
            compare: None,
            layers: (0..n_layers).map(|_| LayerAcc::default()).collect(),
            with_attn_out: false,
        }
    }

    /// Replaces every statistic of positions 0..=K with `exact`'s: a probe that watched
    /// the same sequences, in the same batches, cut to a prefix of at least K + 1
    /// positions (in practice computed in f32 while this one watched a bf16 pass; under
    /// causal attention the prefix is computed exactly as in the whole sequence).
    /// Replaced: the value-aggregation and attention-output moments of rows 0..=K, and
    /// the residual-stream, mid-block and FFN statistics at K. Kept: everything that also
    /// reads later positions (the attention column, whose queries run to T; the "others"
    /// statistics; the FFN median).
    pub fn adopt_prefix(&mut self, exact: &SinkProbe) {
        let n = self.k as i64 + 1;
        for (acc, e) in self.layers.iter_mut().zip(&exact.layers) {
            acc.z.adopt_prefix(&e.z, n);
            acc.attn_out.adopt_prefix(&e.attn_out, n);
            acc.dom_ratio_sum = e.dom_ratio_sum;
            acc.max_abs_k_sum = e.max_abs_k_sum;
            acc.norm_k_sum = e.norm_k_sum;
            acc.resid_k_sum = e.resid_k_sum.as_ref().map(Tensor::copy);
            acc.mid_norm_k_sum = e.mid_norm_k_sum;
            acc.mlp_k_sum = e.mlp_k_sum.as_ref().map(Tensor::copy);
        }
    }

    fn attn(&mut self, layer: usize, a: &Tensor) {
        let (alpha, mass_sum, mass_count) = column(a, self.k);
        let acc = &mut self.layers[layer];
        acc.alpha.extend(alpha);
        acc.mass_sum += mass_sum;
        acc.mass_count += mass_count;
        if let Some(c) = self.compare.filter(|&c| (c as i64) < a.size()[2]) {
            let (alpha, mass_sum, mass_count) = column(a, c);
            acc.cmp_alpha.extend(alpha);
            acc.cmp_mass_sum += mass_sum;
            acc.cmp_mass_count += mass_count;
        }
    }

    fn resid(&mut self, layer: usize, x: &Tensor) {
        let k = self.k as i64;
        let b = x.size()[0];
        let xk = x.select(1, k); // (B, D)
                                 // Each position's norm and max |x| over channels, (B, T): one pass over x.
        let (norms, maxabs) = reduce::row_norm_maxabs(x);
        let maxk = maxabs.select(1, k).to_kind(Kind::Double); // (B)
        let meank = xk
            .abs()
            .mean_dim(-1, false, Kind::Float)
            .to_kind(Kind::Double);
        let acc = &mut self.layers[layer];
        acc.dom_ratio_sum += sum_f64(&(&maxk / &meank));
        acc.max_abs_k_sum += sum_f64(&maxk);
        acc.norm_k_sum += sum_f64(&norms.select(1, k));
        let views = others(&maxabs, 1, k); // (B, *) each
        if let Some(m) = views
            .iter()
            .map(|v| v.amax([1], false))
            .reduce(|a, c| a.maximum(&c))
        {
            acc.max_abs_others_sum += sum_f64(&m);
            // Mean over the other positions of each position's norm, per sequence.
            let norm_sum = others(&norms, 1, k)
                .iter()
                .map(|v| {
                    v.to_kind(Kind::Double)
                        .sum_dim_intlist(-1, false, Kind::Double)
                })
                .reduce(|a, c| a + c)
                .unwrap_or_else(|| Tensor::zeros([b], (Kind::Double, x.device())));
            let n_others = (x.size()[1] - 1) as f64;
            acc.norm_others_sum += sum_f64(&norm_sum) / n_others;
        }
        add_into(
            &mut acc.resid_k_sum,
            xk.to_kind(Kind::Double)
                .sum_dim_intlist(0, false, Kind::Double),
        );
        acc.n_seqs += b;
    }

    fn mid(&mut self, layer: usize, x: &Tensor) {
        let k = self.k as i64;
        let t = x.size()[1];
        let acc = &mut self.layers[layer];
        let norms = reduce::row_norm_maxabs(x).0.to_kind(Kind::Double); // (B, T)
        acc.mid_norm_k_sum += sum_f64(&norms.select(1, k));
        if t > 1 {
            let others_sum: f64 = others(&norms, 1, k).iter().map(sum_f64).sum();
            acc.mid_norm_others_sum += others_sum / (t - 1) as f64;
        }
    }

    fn mlp(&mut self, layer: usize, m: &Tensor) {
        let k = self.k as i64;
        let acc = &mut self.layers[layer];
        add_into(
            &mut acc.mlp_k_sum,
            m.select(1, k)
                .to_kind(Kind::Double)
                .sum_dim_intlist(0, false, Kind::Double),
        );
        if let Some(mo) = reduce::channel_maxabs(m, Some(k)) {
            let mo = mo.to_kind(Kind::Double); // (F)
            acc.mlp_others_max = Some(match acc.mlp_others_max.take() {
                Some(prev) => prev.maximum(&mo),
                None => mo,
            });
        }
        // The median of |m| over the batch: Sun et al.'s reference scale. A full median of
        // B*T*F values costs as much as the FFN itself, so it is taken over a fixed strided
        // subsample of at most MEDIAN_SAMPLE values (deterministic; the median of ~65k
        // values of a smooth distribution is within a fraction of a percent of the full one).
        let flat = m.flatten(0, -1);
        let n = flat.size()[0];
        // A stride coprime with the channel count visits every channel, not a few.
        let f = m.size()[2];
        let mut stride = (n / MEDIAN_SAMPLE).max(1);
        while gcd(stride, f) != 1 {
            stride += 1;
        }
        let sample = flat.slice(0, 0, n, stride).abs();
        acc.mlp_median_sum += sample.median().double_value(&[]);
        acc.mlp_batches += 1;
    }
}

/// Most values the per-batch FFN median is taken over (see `SinkProbe::mlp`).
pub const MEDIAN_SAMPLE: i64 = 65_536;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Sum of every element, in f64 (for small tensors: it converts first).
fn sum_f64(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])
}

impl Probe for SinkProbe {
    fn wants(&self, layer: usize, site: Site) -> bool {
        layer < self.layers.len()
            && match site {
                Site::AttnPattern
                | Site::AttnZ
                | Site::ResidPost
                | Site::ResidMid
                | Site::MlpPost => true,
                Site::AttnOut => self.with_attn_out,
                _ => false,
            }
    }

    fn observe(&mut self, layer: usize, site: Site, t: &Tensor) {
        match site {
            Site::AttnPattern => self.attn(layer, t),
            Site::AttnZ => {
                let s = t.size(); // (B, T, H, Dh)
                self.layers[layer]
                    .z
                    .add(&t.reshape([s[0], s[1], s[2] * s[3]]));
            }
            Site::AttnOut => self.layers[layer].attn_out.add(t),
            Site::ResidPost => self.resid(layer, t),
            Site::ResidMid => self.mid(layer, t),
            Site::MlpPost => self.mlp(layer, t),
            _ => {}
        }
    }
}
