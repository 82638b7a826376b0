//! The measurements of this replication on any `sinkrep_model::Decoder` (the pinned
//! SmolLM2 and Gemma-3, and the models trained from scratch by `sinkrep-subjects`): the sink census,
//! held-out evaluation (sink census + DomRatio + language-model loss) under FFN-channel
//! ablations, and the search for the early channels that carry the first token's
//! disparity before the first super-neuron layer.

use crate::probe::{FirstTokenProbe, OnlySites};
use sinkrep_analysis::to_vec;
use sinkrep_analysis::{analyze, AnalyzeOptions, SinkProbe, SinkReport, SUPER_NEURON_ABS};
use sinkrep_model::{Ablate, AblateKind, Decoder, Hooks, Interventions, Site};
use sinkrep_stats::{mean, SINK_EPS};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// The census of Gu et al. on `seqs` (each of the same length), sink position 0;
/// `on_progress` as in `analyze` (sequences done so far).
pub fn census(
    model: &dyn Decoder,
    seqs: &[Vec<i64>],
    batch: usize,
    on_progress: &mut dyn FnMut(usize),
) -> anyhow::Result<SinkReport> {
    let opts = AnalyzeOptions {
        sink_pos: 0,
        eps: SINK_EPS,
        batch,
        ..AnalyzeOptions::default()
    };
    Ok(analyze(model, seqs, &opts, on_progress)?)
}

/// One layer of a held-out evaluation, position 0 against the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerEval {
    pub layer: usize,
    /// Share of (sequence, head) pairs with alpha_0 > eps.
    pub sink_frac: f64,
    /// Mean over sequences, heads and queries i > 0 of A[i, 0].
    pub attn_mass: f64,
    /// DomRatio of the residual stream after the layer at position 0, mean over sequences.
    pub dom_ratio: f64,
    /// max_j |h_0,j| after the layer (mean over sequences), and the max over the other
    /// positions (mean over sequences), as in `LayerReport`.
    pub max_abs_first: f64,
    pub max_abs_rest: f64,
}

/// A held-out evaluation: one pass over the windows with interventions.
#[derive(Debug)]
pub struct Eval {
    /// Sink_0^eps in percent over all (sequence, layer, head) triples.
    pub sink_metric: f64,
    pub layers: Vec<LayerEval>,
    /// Mean next-token cross-entropy (nats) of positions 1..T given the prefix.
    pub loss: f64,
    pub loss_tokens: usize,
    /// Mean over sequences of the residual stream after each layer at position 0, (D).
    pub mean_h0: Vec<Vec<f64>>,
    /// Mean over sequences of the FFN intermediate act(gate)*up at position 0, (F);
    /// empty unless `evaluate` was asked for it (`with_ffn`).
    pub mean_a0: Vec<Vec<f64>>,
    pub first: FirstTokenProbe,
}

impl Eval {
    /// Mean of the per-layer sink fractions over `layers` (in percent). Every layer has
    /// the same number of (sequence, head) pairs, so this is the pooled share.
    pub fn sink_over(&self, layers: impl Iterator<Item = usize>) -> f64 {
        mean(layers.map(|l| 100.0 * self.layers[l].sink_frac))
    }
    /// Mean DomRatio of h_0 over `layers`.
    pub fn dom_ratio_over(&self, layers: impl Iterator<Item = usize>) -> f64 {
        mean(layers.map(|l| self.layers[l].dom_ratio))
    }
}

/// Runs `model` over `seqs` in batches of `batch` with `interventions`, reducing the sink
/// census (`SinkProbe`), the first token's residual statistics and the firing of the
/// `watch`ed FFN channels elsewhere (`FirstTokenProbe`), and the language-model loss;
/// with `with_ffn`, also the mean FFN intermediate at position 0 (`Eval::mean_a0`).
/// Mean ablation replaces a channel by its mean over the other positions of the current
/// batch, so results depend on `batch` (recorded in the config). After each batch,
/// `on_batch_done` is called with the number of sequences in that batch (an increment,
/// unlike `analyze`'s `on_progress`, so several evaluations can share one progress bar).
pub fn evaluate(
    model: &dyn Decoder,
    seqs: &[Vec<i64>],
    batch: usize,
    interventions: &Interventions,
    watch: &[(usize, usize)],
    with_ffn: bool,
    on_batch_done: &mut dyn FnMut(usize),
) -> anyhow::Result<Eval> {
    let t = seqs.first().map(Vec::len).unwrap_or(0);
    anyhow::ensure!(
        t >= 2 && seqs.iter().all(|s| s.len() == t),
        "held-out windows must all have the same length of at least 2 tokens"
    );
    let n_layers = model.config().n_layers;
    let mut sink = SinkProbe::new(n_layers, 0);
    let sites: &[Site] = if with_ffn {
        &[Site::AttnPattern, Site::ResidPost, Site::MlpPost]
    } else {
        &[Site::AttnPattern, Site::ResidPost]
    };
    let mut first = FirstTokenProbe::new(n_layers, watch, SUPER_NEURON_ABS);
    let (mut loss_sum, mut loss_tokens) = (0.0f64, 0usize);
    let device = model.device();
    tch::no_grad(|| -> anyhow::Result<()> {
        for chunk in seqs.chunks(batch.max(1)) {
            let flat: Vec<i64> = chunk.iter().flatten().copied().collect();
            let tokens = Tensor::from_slice(&flat)
                .reshape([chunk.len() as i64, t as i64])
                .to_device(device);
            let mut only = OnlySites {
                inner: &mut sink,
                sites,
            };
            let mut hooks = Hooks::new()
                .probe(&mut only)
                .probe(&mut first)
                .with(interventions.clone());
            let hidden = model.forward(&tokens, &mut hooks)?; // (B, T, D)
                                                              // Logits one sequence at a time: (T-1, V) is small, (B, T, V) is not.
            for s in 0..chunk.len() as i64 {
                let h = hidden.get(s).narrow(0, 0, t as i64 - 1);
                let target = tokens.get(s).narrow(0, 1, t as i64 - 1);
                let ce = model
                    .logits(&h)
                    .log_softmax(-1, Kind::Float)
                    .nll_loss(&target)
                    .double_value(&[]);
                loss_sum += ce * (t - 1) as f64;
                loss_tokens += t - 1;
            }
            on_batch_done(chunk.len());
        }
        Ok(())
    })?;
    let (mut above, mut total) = (0usize, 0usize);
    let mut layers = Vec::with_capacity(n_layers);
    let mut mean_h0 = Vec::with_capacity(n_layers);
    let mut mean_a0 = Vec::with_capacity(n_layers);
    for (l, acc) in sink.layers.iter().enumerate() {
        let n = acc.n_seqs.max(1) as f64;
        let pairs: Vec<f64> = acc.alpha.iter().flatten().copied().collect();
        let above_l = pairs.iter().filter(|a| **a > SINK_EPS).count();
        above += above_l;
        total += pairs.len();
        layers.push(LayerEval {
            layer: l,
            sink_frac: above_l as f64 / pairs.len().max(1) as f64,
            attn_mass: acc.mass_sum / acc.mass_count.max(1) as f64,
            dom_ratio: acc.dom_ratio_sum / n,
            max_abs_first: acc.max_abs_k_sum / n,
            max_abs_rest: acc.max_abs_others_sum / n,
        });
        let mean_of = |s: &Option<Tensor>| s.as_ref().map(|s| to_vec(&(s / n))).unwrap_or_default();
        mean_h0.push(mean_of(&acc.resid_k_sum));
        if with_ffn {
            mean_a0.push(mean_of(&acc.mlp_k_sum));
        }
    }
    Ok(Eval {
        sink_metric: 100.0 * above as f64 / total.max(1) as f64,
        layers,
        loss: loss_sum / loss_tokens.max(1) as f64,
        loss_tokens,
        mean_h0,
        mean_a0,
        first,
    })
}

/// An ablation: `targets` (layer, channel) of the FFN intermediate set to zero or to
/// their mean over the other positions, at position 0 only.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// `sn-l11`, `sn-all`, `early`, `early+sn-all`, ...
    pub name: String,
    pub kind: AblateKind,
    pub targets: Vec<(usize, usize)>,
}

impl Condition {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            AblateKind::Zero => "zero",
            AblateKind::Mean => "mean",
        }
    }
    /// `<name>/<kind>`, the condition's key in tables.
    pub fn key(&self) -> String {
        format!("{}/{}", self.name, self.kind_name())
    }
    /// The interventions: one `Ablate` per layer, position 0.
    pub fn interventions(&self) -> Interventions {
        let mut by_layer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(l, c) in &self.targets {
            by_layer.entry(l).or_default().push(c);
        }
        Interventions {
            ablate: by_layer
                .into_iter()
                .map(|(layer, channels)| Ablate {
                    layer,
                    channels,
                    positions: vec![0],
                    kind: self.kind,
                })
                .collect(),
            ..Interventions::default()
        }
    }
}

/// The ablation conditions: every super-neuron layer alone and all super neurons, zero
/// and mean each; the early carriers, and early carriers plus all super neurons, mean.
pub fn conditions(super_neurons: &[(usize, usize)], early: &[(usize, usize)]) -> Vec<Condition> {
    let mut layers: Vec<usize> = super_neurons.iter().map(|s| s.0).collect();
    layers.sort_unstable();
    layers.dedup();
    let mut groups: Vec<(String, Vec<(usize, usize)>)> = layers
        .iter()
        .map(|&l| {
            let t = super_neurons.iter().copied().filter(|s| s.0 == l).collect();
            (format!("sn-l{l}"), t)
        })
        .collect();
    if !super_neurons.is_empty() {
        groups.push(("sn-all".into(), super_neurons.to_vec()));
    }
    let mut out: Vec<Condition> = groups
        .into_iter()
        .flat_map(|(name, targets)| {
            [AblateKind::Zero, AblateKind::Mean].map(|kind| Condition {
                name: name.clone(),
                kind,
                targets: targets.clone(),
            })
        })
        .collect();
    if !early.is_empty() {
        let mut both = early.to_vec();
        both.extend_from_slice(super_neurons);
        both.sort_unstable();
        both.dedup();
        for (name, targets) in [("early", early.to_vec()), ("early+sn-all", both)] {
            out.push(Condition {
                name: name.into(),
                kind: AblateKind::Mean,
                targets,
            });
        }
    }
    out
}

/// One early FFN channel writing the dominant dim of h_0 before the first super neuron.
#[derive(Debug, Clone, PartialEq)]
pub struct Carrier {
    pub layer: usize,
    pub channel: usize,
    /// Mean activation at position 0.
    pub activation: f64,
    /// W_down[dim, channel].
    pub weight: f64,
    /// activation x weight: what the channel adds to h_0[dim] (mean over sequences).
    pub contribution: f64,
    /// Cumulative aligned contribution over |peak value|, including this channel.
    pub cum_share: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EarlyCarriers {
    /// The dominant dim of h_0 after the first super-neuron layer.
    pub dim: usize,
    pub first_sn_layer: usize,
    /// The layer before `first_sn_layer` where |mean h_0[dim]| peaks, and that value.
    pub peak_layer: usize,
    pub peak_value: f64,
    pub carriers: Vec<Carrier>,
}

/// Share of the early peak that the carriers must account for, and the most channels
/// taken (a guard: the rule is meant to find a handful).
pub const CARRIER_SHARE: f64 = 0.8;
pub const CARRIER_MAX: usize = 16;

/// The follow-up search: the dominant dim `dim` of h_0 after the first super-neuron layer
/// (largest |mean|), the layer before it where |h_0[dim]| peaks, and the smallest set of
/// FFN channels in layers up to that peak whose mean contributions at position 0
/// (activation x W_down[dim, channel], taken with the sign of the peak) add up to
/// `CARRIER_SHARE` of the peak value, largest first, at most `CARRIER_MAX`.
/// `None` when the first super neuron is in layer 0 (nothing before it).
pub fn early_carriers(
    model: &dyn Decoder,
    base: &Eval,
    first_sn_layer: usize,
) -> Option<EarlyCarriers> {
    if first_sn_layer == 0 || first_sn_layer >= base.mean_h0.len() || base.mean_a0.is_empty() {
        return None;
    }
    let h = &base.mean_h0[first_sn_layer];
    let dim = crate::weights::argmax(&h.iter().map(|x| x.abs()).collect::<Vec<_>>()).0;
    let (peak_layer, _) = crate::weights::argmax(
        &(0..first_sn_layer)
            .map(|l| base.mean_h0[l].get(dim).map_or(0.0, |x| x.abs()))
            .collect::<Vec<_>>(),
    );
    let peak_value = base.mean_h0[peak_layer]
        .get(dim)
        .copied()
        .unwrap_or(f64::NAN);
    let sign = peak_value.signum();
    let mut cands: Vec<Carrier> = Vec::new();
    for l in 0..=peak_layer {
        let row = to_vec(&model.down_proj(l).select(0, dim as i64)); // (F)
        for (c, (&a, &w)) in base.mean_a0[l].iter().zip(&row).enumerate() {
            cands.push(Carrier {
                layer: l,
                channel: c,
                activation: a,
                weight: w,
                contribution: a * w,
                cum_share: 0.0,
            });
        }
    }
    cands.sort_by(|a, b| {
        (b.contribution * sign)
            .total_cmp(&(a.contribution * sign))
            .then((a.layer, a.channel).cmp(&(b.layer, b.channel)))
    });
    let mut carriers = Vec::new();
    let mut cum = 0.0;
    for mut c in cands {
        if cum >= CARRIER_SHARE * peak_value.abs()
            || carriers.len() >= CARRIER_MAX
            || c.contribution * sign <= 0.0
        {
            break;
        }
        cum += c.contribution * sign;
        c.cum_share = cum / peak_value.abs();
        carriers.push(c);
    }
    Some(EarlyCarriers {
        dim,
        first_sn_layer,
        peak_layer,
        peak_value,
        carriers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_cover_layers_all_and_early() {
        let sn = [(11, 1229), (11, 1487), (28, 678)];
        let early = [(2, 90)];
        let c = conditions(&sn, &early);
        let keys: Vec<String> = c.iter().map(Condition::key).collect();
        assert_eq!(
            keys,
            [
                "sn-l11/zero",
                "sn-l11/mean",
                "sn-l28/zero",
                "sn-l28/mean",
                "sn-all/zero",
                "sn-all/mean",
                "early/mean",
                "early+sn-all/mean"
            ]
        );
        let iv = c[4].interventions();
        assert_eq!(iv.ablate.len(), 2);
        assert_eq!(iv.ablate[0].channels, vec![1229, 1487]);
        assert_eq!(iv.ablate[0].positions, vec![0]);
        assert!(conditions(&[], &[]).is_empty());
    }
}
