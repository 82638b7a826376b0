//! Interventions: data describing how a forward pass departs from the plain model.
//! With none set, `forward` is bit-identical to the plain forward (tested).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which layers an intervention applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layers {
    All,
    Only(Vec<usize>),
}

impl Layers {
    pub fn contains(&self, layer: usize) -> bool {
        match self {
            Layers::All => true,
            Layers::Only(v) => v.contains(&layer),
        }
    }
}

/// The mean mu of centred amplification, o'_k = mu + lambda (o_k - mu). Every choice is
/// computed per head (on the head's d_head channels) from the current forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CenterMean {
    /// mu_c = mean over all positions t of o_t,c, per sequence and channel: o_k moves
    /// away from the sequence's typical aggregation output. The default: it is the
    /// single-sequence analogue of the per-dimension batch mean in which the paper
    /// measures variance (claim 1), and it is defined for a batch of one.
    Positions,
    /// mu = mean over the d_head channels of o_k (a scalar per head): amplifies the
    /// spread of o_k's own coordinates.
    Channels,
    /// mu_c = mean over the batch of o_k,c: the literal "variance across sequences" mean;
    /// needs a batch of several sequences.
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmplifyMode {
    /// o' = mu + lambda (o - mu).
    Centered(CenterMean),
    /// o' = lambda o (the control).
    Plain,
    /// o' = o + (lambda - 1) ||o - mu_positions|| u, u a fixed random unit direction per
    /// head (seeded): a displacement of the centred amplification's size in a random
    /// direction (control).
    RandomDirection { seed: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amplify {
    pub positions: Vec<usize>,
    pub layers: Layers,
    pub lambda: f64,
    pub mode: AmplifyMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AblateKind {
    Zero,
    /// Replace by the channel's mean over all positions of the current batch except the
    /// ablated ones (the value the channel takes on an ordinary token).
    Mean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ablate {
    pub layer: usize,
    pub channels: Vec<usize>,
    pub positions: Vec<usize>,
    pub kind: AblateKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskSelf {
    pub positions: Vec<usize>,
    pub layers: Layers,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interventions {
    /// Query k attends only to itself (as the first token does under a causal mask).
    pub mask_self: Vec<MaskSelf>,
    pub amplify: Vec<Amplify>,
    pub ablate: Vec<Ablate>,
    /// Turn off the head-wise RMSNorm / gate of a model that has one (o goes straight to W_O).
    pub disable_head_norm: bool,
}

impl Interventions {
    pub fn is_empty(&self) -> bool {
        self.mask_self.is_empty()
            && self.amplify.is_empty()
            && self.ablate.is_empty()
            && !self.disable_head_norm
    }

    /// Positions that attend only to themselves at `layer`.
    pub(crate) fn mask_self_at(&self, layer: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .mask_self
            .iter()
            .filter(|m| m.layers.contains(layer))
            .flat_map(|m| m.positions.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Applies amplifications to z (B, T, H, Dh) at `layer`.
    pub(crate) fn amplify_z(&self, layer: usize, z: Tensor) -> Tensor {
        for a in self.amplify.iter().filter(|a| a.layers.contains(layer)) {
            let t = z.size()[1];
            for &k in a.positions.iter().filter(|&&k| (k as i64) < t) {
                let k = k as i64;
                let zk = z.select(1, k); // (B, H, Dh)
                let new = match a.mode {
                    AmplifyMode::Plain => &zk * a.lambda,
                    AmplifyMode::Centered(m) => {
                        let mu = match m {
                            CenterMean::Positions => z.mean_dim(1, false, Kind::Float), // (B, H, Dh)
                            CenterMean::Channels => zk.mean_dim(-1, true, Kind::Float), // (B, H, 1)
                            CenterMean::Batch => zk.mean_dim(0, true, Kind::Float), // (1, H, Dh)
                        };
                        &mu + (&zk - &mu) * a.lambda
                    }
                    AmplifyMode::RandomDirection { seed } => {
                        let mu = z.mean_dim(1, false, Kind::Float);
                        let norm = (&zk - &mu).norm_scalaropt_dim(2, [-1], true); // (B, H, 1)
                        let s = zk.size();
                        let u = seeded_unit(seed, s[1], s[2], zk.device()); // (H, Dh)
                        &zk + norm * u.unsqueeze(0) * (a.lambda - 1.0)
                    }
                };
                let mut idx = z.narrow(1, k, 1);
                idx.copy_(&new.unsqueeze(1));
            }
        }
        z
    }

    /// Applies ablations to the FFN intermediate h (B, T, F) at `layer`.
    pub(crate) fn ablate_mlp(&self, layer: usize, h: Tensor) -> Tensor {
        let abls: Vec<&Ablate> = self.ablate.iter().filter(|a| a.layer == layer).collect();
        if abls.is_empty() {
            return h;
        }
        let t = h.size()[1];
        for a in abls {
            let pos: Vec<i64> = a
                .positions
                .iter()
                .map(|&p| p as i64)
                .filter(|&p| p < t)
                .collect();
            if pos.is_empty() {
                continue;
            }
            for &c in &a.channels {
                let c = c as i64;
                let col = h.select(2, c); // (B, T)
                let value = match a.kind {
                    AblateKind::Zero => Tensor::zeros([1], (Kind::Float, h.device())),
                    AblateKind::Mean => {
                        let keep: Vec<i64> = (0..t).filter(|p| !pos.contains(p)).collect();
                        if keep.is_empty() {
                            Tensor::zeros([1], (Kind::Float, h.device()))
                        } else {
                            let ki = Tensor::from_slice(&keep).to_device(h.device());
                            col.index_select(1, &ki).mean(Kind::Float).reshape([1])
                        }
                    }
                };
                for &p in &pos {
                    let mut cell = h.narrow(1, p, 1).narrow(2, c, 1);
                    cell.copy_(&value.reshape([1, 1, 1]).expand_as(&cell));
                }
            }
        }
        h
    }
}

/// A fixed unit vector per head, from a seeded generator that does not depend on
/// libtorch's global RNG (SplitMix64 + Box-Muller), so the control is reproducible.
fn seeded_unit(seed: u64, h: i64, d: i64, device: tch::Device) -> Tensor {
    let mut g = sinkrep_stats::SplitMix64::new(seed);
    let n = (h * d) as usize;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let (u1, u2) = (g.next_f64().max(1e-300), g.next_f64());
        let r = (-2.0 * u1.ln()).sqrt();
        v.push((r * (2.0 * std::f64::consts::PI * u2).cos()) as f32);
    }
    let t = Tensor::from_slice(&v).reshape([h, d]).to_device(device);
    let norm = t.norm_scalaropt_dim(2, [-1], true);
    t / norm
}
