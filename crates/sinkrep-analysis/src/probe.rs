//! `SinkProbe`: one probe that watches the attention pattern, the value-aggregation
//! output, the residual stream and the FFN intermediate of every layer, and keeps only
//! reductions. Batches of sequences can be fed one after another: every statistic is an
//! accumulated sum (f64) or an appended per-sequence value.

use sinkrep_model::{Probe, Site};
use tch::{Kind, Tensor};

/// Running sums for per-(position, channel) variance across sequences.
#[derive(Debug, Default)]
pub struct Moments {
    /// Sum over sequences, (T, C), f64.
    pub sum: Option<Tensor>,
    /// Sum of squares over sequences, (T, C), f64.
    pub sumsq: Option<Tensor>,
    /// Sum over sequences of the variance across channels at each position, (T), f64.
    pub chan_var_sum: Option<Tensor>,
    pub count: i64,
}

impl Moments {
    /// x: (B, T, C).
    fn add(&mut self, x: &Tensor) {
        let x = x.to_kind(Kind::Double);
        let s = x.sum_dim_intlist(0, false, Kind::Double);
        let q = x.square().sum_dim_intlist(0, false, Kind::Double);
        let cv = x
            .var_correction(-1, 0, false)
            .sum_dim_intlist(0, false, Kind::Double);
        add_into(&mut self.sum, s);
        add_into(&mut self.sumsq, q);
        add_into(&mut self.chan_var_sum, cv);
        self.count += x.size()[0];
    }

    /// Per-position variance across sequences (population), averaged over channels: (T).
    pub fn var_across_sequences(&self) -> Vec<f64> {
        match (&self.sum, &self.sumsq) {
            (Some(s), Some(q)) if self.count > 0 => {
                let n = self.count as f64;
                let mean = s / n;
                let var = (q / n - mean.square()).clamp_min(0.0);
                to_vec(&var.mean_dim(-1, false, Kind::Double))
            }
            _ => vec![],
        }
    }

    /// Per-position variance across channels (population), averaged over sequences: (T).
    pub fn var_across_channels(&self) -> Vec<f64> {
        match &self.chan_var_sum {
            Some(c) if self.count > 0 => to_vec(&(c / self.count as f64)),
            _ => vec![],
        }
    }
}

fn add_into(acc: &mut Option<Tensor>, x: Tensor) {
    *acc = Some(match acc.take() {
        Some(a) => a + x,
        None => x,
    });
}

pub(crate) fn to_vec(t: &Tensor) -> Vec<f64> {
    let t = t
        .to_kind(Kind::Double)
        .to_device(tch::Device::Cpu)
        .flatten(0, -1);
    Vec::<f64>::try_from(&t).unwrap_or_default()
}

/// Per-layer accumulators.
#[derive(Debug, Default)]
pub struct LayerAcc {
    /// alpha_K per (sequence, head), appended batch by batch.
    pub alpha: Vec<Vec<f64>>,
    /// Sum over (sequence, head) of the mean over queries i > K of A[i, K].
    pub mass_sum: f64,
    pub mass_count: i64,
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
    pub layers: Vec<LayerAcc>,
    /// Also accumulate the attention output after W_O (for the W_O ordering check).
    pub with_attn_out: bool,
}

impl SinkProbe {
    pub fn new(n_layers: usize, k: usize) -> Self {
        SinkProbe {
            k,
            layers: (0..n_layers).map(|_| LayerAcc::default()).collect(),
            with_attn_out: false,
        }
    }

    fn attn(&mut self, layer: usize, a: &Tensor) {
        // a: (B, H, T, T); column K holds what every query gives to K.
        let k = self.k as i64;
        let t = a.size()[2];
        let col = a.select(3, k); // (B, H, T)
        let alpha = col.narrow(2, k, t - k).mean_dim(-1, false, Kind::Double); // (B, H)
        let acc = &mut self.layers[layer];
        let b = alpha.size()[0];
        let flat = to_vec(&alpha);
        let h = flat.len() / b.max(1) as usize;
        for s in 0..b as usize {
            acc.alpha.push(flat[s * h..(s + 1) * h].to_vec());
        }
        if t - k - 1 > 0 {
            let mass = col
                .narrow(2, k + 1, t - k - 1)
                .mean_dim(-1, false, Kind::Double);
            acc.mass_sum += mass.sum(Kind::Double).double_value(&[]);
            acc.mass_count += mass.numel() as i64;
        }
    }

    fn resid(&mut self, layer: usize, x: &Tensor) {
        let k = self.k as i64;
        let s = x.size();
        let (b, t) = (s[0], s[1]);
        let abs = x.abs().to_kind(Kind::Double); // (B, T, D)
        let ak = abs.select(1, k); // (B, D)
        let maxk = ak.amax([-1], false); // (B)
        let meank = ak.mean_dim(-1, false, Kind::Double);
        let acc = &mut self.layers[layer];
        acc.dom_ratio_sum += (&maxk / &meank).sum(Kind::Double).double_value(&[]);
        acc.max_abs_k_sum += maxk.sum(Kind::Double).double_value(&[]);
        acc.norm_k_sum += x
            .select(1, k)
            .norm_scalaropt_dim(2, [-1], false)
            .to_kind(Kind::Double)
            .sum(Kind::Double)
            .double_value(&[]);
        if t > 1 {
            let others = others_index(t, k, x.device());
            let ao = abs.index_select(1, &others); // (B, T-1, D)
            acc.max_abs_others_sum += ao.amax([1, 2], false).sum(Kind::Double).double_value(&[]);
            acc.norm_others_sum += x
                .index_select(1, &others)
                .norm_scalaropt_dim(2, [-1], false)
                .to_kind(Kind::Double)
                .mean_dim(-1, false, Kind::Double)
                .sum(Kind::Double)
                .double_value(&[]);
        }
        add_into(
            &mut acc.resid_k_sum,
            x.select(1, k)
                .to_kind(Kind::Double)
                .sum_dim_intlist(0, false, Kind::Double),
        );
        acc.n_seqs += b;
    }

    fn mid(&mut self, layer: usize, x: &Tensor) {
        let k = self.k as i64;
        let t = x.size()[1];
        let acc = &mut self.layers[layer];
        let norms = x.norm_scalaropt_dim(2, [-1], false).to_kind(Kind::Double); // (B, T)
        acc.mid_norm_k_sum += norms.select(1, k).sum(Kind::Double).double_value(&[]);
        if t > 1 {
            let others = others_index(t, k, x.device());
            acc.mid_norm_others_sum += norms
                .index_select(1, &others)
                .mean_dim(-1, false, Kind::Double)
                .sum(Kind::Double)
                .double_value(&[]);
        }
    }

    fn mlp(&mut self, layer: usize, m: &Tensor) {
        let k = self.k as i64;
        let t = m.size()[1];
        let acc = &mut self.layers[layer];
        add_into(
            &mut acc.mlp_k_sum,
            m.select(1, k)
                .to_kind(Kind::Double)
                .sum_dim_intlist(0, false, Kind::Double),
        );
        if t > 1 {
            let others = others_index(t, k, m.device());
            let mo = m
                .index_select(1, &others)
                .abs()
                .amax([0, 1], false)
                .to_kind(Kind::Double);
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

fn others_index(t: i64, k: i64, device: tch::Device) -> Tensor {
    let idx: Vec<i64> = (0..t).filter(|&i| i != k).collect();
    Tensor::from_slice(&idx).to_device(device)
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
