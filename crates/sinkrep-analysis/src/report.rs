//! The per-layer sink report (`sinkrep analyze`), from a `SinkProbe` fed by the model.

use crate::probe::{to_vec, SinkProbe};
use crate::AnalysisError;
use serde::{Deserialize, Serialize};
use sinkrep_model::{Decoder, Hooks, Interventions, Precision};
use sinkrep_stats::ratio_at;
use tch::Tensor;

/// Super-neuron criterion (Sun et al. 2024's massive-activation rule, applied to the FFN
/// intermediate act(gate)*up at the sink position): |mean activation at K| > 100 ...
pub const SUPER_NEURON_ABS: f64 = 100.0;
/// ... and > 1000 x the median |activation| of that layer's FFN intermediate (all
/// positions and channels).
pub const SUPER_NEURON_MEDIAN_RATIO: f64 = 1000.0;

#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// The sink position K.
    pub sink_pos: usize,
    pub eps: f64,
    /// Sequences per forward pass.
    pub batch: usize,
    pub interventions: Interventions,
    /// How many top FFN channels and massive dims to list per layer.
    pub top: usize,
    /// Also reduce the attention output after W_O (for the W_O ordering check).
    pub with_attn_out: bool,
    /// A second position whose attention column is reported beside K's (the first text
    /// token when K is a BOS).
    pub compare_pos: Option<usize>,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            sink_pos: 0,
            eps: sinkrep_stats::SINK_EPS,
            batch: 50,
            interventions: Interventions::default(),
            top: 5,
            with_attn_out: false,
            compare_pos: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VarianceKind {
    /// Variance across sequences of each (position, channel), averaged over channels.
    AcrossSequences,
    /// Variance across the channels of one position's vector (a single sequence).
    AcrossChannels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextToken {
    pub id: i64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelValue {
    pub channel: usize,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FfnChannel {
    pub channel: usize,
    /// Mean over sequences of the activation at K.
    pub value: f64,
    /// |value| / median |activation| of the layer.
    pub ratio_to_median: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerReport {
    pub layer: usize,
    /// Mean over sequences, heads and queries i > K of A[i, K].
    pub attn_mass: f64,
    /// Share of (sequence, head) pairs with alpha_K > eps.
    pub sink_frac: f64,
    /// alpha_K per head, mean over sequences.
    pub alpha_per_head: Vec<f64>,
    /// Variance of the value-aggregation output at K over the mean variance elsewhere.
    pub agg_var_ratio: f64,
    /// The per-position variance behind `agg_var_ratio`.
    pub agg_var_by_pos: Vec<f64>,
    /// Per-position variance after W_O (only with `with_attn_out`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub attn_out_var_by_pos: Vec<f64>,
    /// DomRatio of the residual stream after the layer at K, mean over sequences.
    pub dom_ratio: f64,
    pub max_abs_sink: f64,
    pub max_abs_others: f64,
    /// L2 norm of the residual stream after the layer at K, and mean over other positions.
    pub norm_sink: f64,
    pub norm_others: f64,
    /// The same norms between attention and FFN (to locate the FFN's amplification).
    pub mid_norm_sink: f64,
    pub mid_norm_others: f64,
    /// Largest dims of the mean residual vector at K.
    pub massive_dims: Vec<ChannelValue>,
    /// Median |FFN intermediate| of the layer.
    pub ffn_median_abs: f64,
    pub top_ffn_channels: Vec<FfnChannel>,
    /// The comparison column (`AnalyzeOptions::compare_pos`), when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compare: Option<ColumnReport>,
}

/// Attention received by one more position, reduced like K's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnReport {
    pub pos: usize,
    pub attn_mass: f64,
    pub sink_frac: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkMetric {
    pub eps: f64,
    /// Sink_K^eps in percent over all (sequence, layer, head) triples.
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuperNeuron {
    pub layer: usize,
    pub channel: usize,
    /// Mean over sequences of the activation at K.
    pub activation: f64,
    pub ratio_to_median: f64,
    /// Max |activation| of the channel at any other position (all sequences).
    pub max_abs_elsewhere: f64,
    /// Hidden dims its down-projection column feeds most (by |weight|).
    pub feeds: Vec<ChannelValue>,
    /// Share of the column's energy (sum of squares) in its top 1 and top 2 dims.
    pub top1_energy_share: f64,
    pub top2_energy_share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkReport {
    pub n_sequences: usize,
    pub n_tokens: usize,
    pub sink_pos: usize,
    pub eps: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_token: Option<NextToken>,
    /// For a single sequence: the last position's logits of token ids 0..16, and the 10
    /// largest as (id, logit), largest first: enough for an independent implementation to
    /// be compared (scripts/peers/compare_reports.py).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub last_logits_head: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub last_logits_top: Vec<(i64, f64)>,
    pub agg_var_kind: VarianceKind,
    pub layers: Vec<LayerReport>,
    pub sink_metric: SinkMetric,
    pub super_neuron_criterion: String,
    pub super_neurons: Vec<SuperNeuron>,
    /// The model's matmul precision; absent from JSON when f32 (the default).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// In bf16: how many leading positions (the sink and those before it) were computed
    /// in f32 (`exact_prefix_len`); absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exact_prefix: usize,
    /// Sink_P^eps of the comparison column P, when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compare_sink_metric: Option<ColumnMetric>,
    /// Where the model's probe sites read a different tensor than LLaMA's (Gemma-3's
    /// post-norms); absent for LLaMA.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub site_notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnMetric {
    pub pos: usize,
    pub eps: f64,
    /// Sink_P^eps in percent.
    pub value: f64,
}

/// Runs the model over `seqs` (all of length T) with a `SinkProbe` and the interventions
/// in `opts`, batch by batch, and builds the report. After each batch, `on_progress` is
/// called with the number of sequences done so far (a position for a progress bar).
pub fn analyze(
    model: &dyn Decoder,
    seqs: &[Vec<i64>],
    opts: &AnalyzeOptions,
    on_progress: &mut dyn FnMut(usize),
) -> Result<SinkReport, AnalysisError> {
    let t = seqs.first().map(|s| s.len()).unwrap_or(0);
    if t == 0 || seqs.iter().any(|s| s.len() != t) {
        return Err(AnalysisError::BadInput(
            "sequences must be non-empty and of equal length".into(),
        ));
    }
    if opts.sink_pos >= t {
        return Err(AnalysisError::BadInput(format!(
            "sink position {} is outside the {t}-token sequence",
            opts.sink_pos
        )));
    }
    let vocab = model.config().vocab_size as i64;
    if let Some(bad) = seqs.iter().flatten().find(|&&id| id < 0 || id >= vocab) {
        return Err(AnalysisError::BadInput(format!(
            "token id {bad} outside the vocabulary of {vocab}"
        )));
    }
    let n_layers = model.config().n_layers;
    let mut probe = SinkProbe::new(n_layers, opts.sink_pos);
    probe.compare = opts.compare_pos.filter(|&c| c != opts.sink_pos && c < t);
    probe.with_attn_out = opts.with_attn_out;
    // In bf16, positions 0..=K come from an f32 pass over that prefix (see
    // `exact_prefix_len`); a second probe watches it.
    let prefix = exact_prefix_len(model.precision(), opts, t);
    let mut exact = (prefix > 0).then(|| {
        let mut p = SinkProbe::new(n_layers, opts.sink_pos);
        p.with_attn_out = opts.with_attn_out;
        p
    });
    let mut last_hidden = None;
    let device = model.device();
    let batch = opts.batch.max(1);
    let tokens_of = |chunk: &[Vec<i64>], len: usize| {
        let flat: Vec<i64> = chunk.iter().flat_map(|s| &s[..len]).copied().collect();
        Tensor::from_slice(&flat)
            .reshape([chunk.len() as i64, len as i64])
            .to_device(device)
    };
    tch::no_grad(|| -> Result<(), AnalysisError> {
        if let Some(e) = exact.as_mut() {
            // As many prefix tokens per pass as the main passes hold tokens.
            for chunk in seqs.chunks(batch * (t / prefix)) {
                let mut hooks = Hooks::new()
                    .probe(e)
                    .with(opts.interventions.clone())
                    .precision(Precision::F32);
                let _hidden = model.forward(&tokens_of(chunk, prefix), &mut hooks)?;
            }
        }
        let mut done = 0;
        for chunk in seqs.chunks(batch) {
            let tokens = tokens_of(chunk, t);
            let mut hooks = Hooks::new()
                .probe(&mut probe)
                .with(opts.interventions.clone());
            let h = model.forward(&tokens, &mut hooks)?;
            if seqs.len() == 1 {
                last_hidden = Some(h.select(1, t as i64 - 1));
            }
            done += chunk.len();
            on_progress(done);
        }
        Ok(())
    })?;
    if let Some(e) = &exact {
        probe.adopt_prefix(e);
    }
    let logits = last_hidden.map(|h| model.logits(&h).squeeze_dim(0)); // (V)
    let next_token = logits.as_ref().map(|l| NextToken {
        id: l.argmax(-1, false).int64_value(&[]),
        text: String::new(),
    });
    let mut rep = build_report(model, &probe, seqs.len(), t, opts, next_token);
    rep.exact_prefix = prefix;
    if let Some(l) = logits {
        let n = l.size()[0];
        rep.last_logits_head = to_vec(&l.narrow(0, 0, n.min(16)));
        let (vals, ids) = l.topk(n.min(10), -1, true, true);
        let ids: Vec<i64> = Vec::try_from(&ids).unwrap_or_default();
        rep.last_logits_top = ids.into_iter().zip(to_vec(&vals)).collect();
    }
    Ok(rep)
}

/// How many leading positions a bf16 analysis computes in f32: K + 1 (the sink and the
/// positions before it), in a separate f32 pass over that prefix whose statistics replace
/// the bf16 pass's there (`SinkProbe::adopt_prefix`). The sink position's statistics are
/// the ones bf16 rounding moves most: its value-aggregation variance is ~1-2% of the other
/// positions' in SmolLM2's last layers, so rounding noise of the same absolute size is a
/// large relative error of `agg_var_ratio` (7% on natural text, measured by
/// `just bench-compare`). Under causal attention the prefix does not see later tokens,
/// so the f32 pass computes it exactly as an f32 analysis would, for (K + 1) / T of the
/// tokens. 0 (no such pass) in f32, when the prefix is the whole sequence, and with
/// interventions that act across positions (masking, amplification, ablation), under
/// which a cut prefix is no longer the same computation.
pub fn exact_prefix_len(precision: Precision, opts: &AnalyzeOptions, t: usize) -> usize {
    let iv = &opts.interventions;
    let position_free = iv.mask_self.is_empty() && iv.amplify.is_empty() && iv.ablate.is_empty();
    let n = opts.sink_pos + 1;
    if precision == Precision::Bf16 && position_free && n < t {
        n
    } else {
        0
    }
}

fn build_report(
    model: &dyn Decoder,
    probe: &SinkProbe,
    n: usize,
    t: usize,
    opts: &AnalyzeOptions,
    next_token: Option<NextToken>,
) -> SinkReport {
    let k = opts.sink_pos;
    let kind = if n >= 2 {
        VarianceKind::AcrossSequences
    } else {
        VarianceKind::AcrossChannels
    };
    let (mut above, mut total) = (0usize, 0usize);
    let mut layers = Vec::new();
    let mut super_neurons = Vec::new();
    let (mut cmp_above, mut cmp_total) = (0usize, 0usize);
    for (l, acc) in probe.layers.iter().enumerate() {
        let compare = probe.compare.map(|pos| {
            let above_c = acc
                .cmp_alpha
                .iter()
                .flatten()
                .filter(|&&a| a > opts.eps)
                .count();
            let total_c = acc.cmp_alpha.iter().map(Vec::len).sum::<usize>();
            cmp_above += above_c;
            cmp_total += total_c;
            ColumnReport {
                pos,
                attn_mass: acc.cmp_mass_sum / acc.cmp_mass_count.max(1) as f64,
                sink_frac: above_c as f64 / total_c.max(1) as f64,
            }
        });
        let nf = acc.n_seqs.max(1) as f64;
        let h = acc.alpha.first().map(|v| v.len()).unwrap_or(0);
        let mut per_head = vec![0.0; h];
        let mut above_l = 0usize;
        for seq in &acc.alpha {
            for (i, a) in seq.iter().enumerate() {
                per_head[i] += a / acc.alpha.len() as f64;
                if *a > opts.eps {
                    above_l += 1;
                }
            }
        }
        let total_l = acc.alpha.len() * h;
        above += above_l;
        total += total_l;
        let var = match kind {
            VarianceKind::AcrossSequences => acc.z.var_across_sequences(),
            VarianceKind::AcrossChannels => acc.z.var_across_channels(),
        };
        let out_var = match kind {
            VarianceKind::AcrossSequences => acc.attn_out.var_across_sequences(),
            VarianceKind::AcrossChannels => acc.attn_out.var_across_channels(),
        };
        let agg_var_ratio = ratio_at(&var, k);
        let resid_k = acc
            .resid_k_sum
            .as_ref()
            .map(|s| to_vec(&(s / nf)))
            .unwrap_or_default();
        let massive_dims = top_abs(&resid_k, opts.top)
            .into_iter()
            .map(|(i, v)| ChannelValue {
                channel: i,
                value: v,
            })
            .collect();
        let median = acc.mlp_median_sum / acc.mlp_batches.max(1) as f64;
        let mlp_k = acc
            .mlp_k_sum
            .as_ref()
            .map(|s| to_vec(&(s / nf)))
            .unwrap_or_default();
        let others_max = acc.mlp_others_max.as_ref().map(to_vec).unwrap_or_default();
        let top_ffn_channels = top_abs(&mlp_k, opts.top)
            .into_iter()
            .map(|(c, v)| FfnChannel {
                channel: c,
                value: v,
                ratio_to_median: v.abs() / median,
            })
            .collect();
        for (c, &v) in mlp_k.iter().enumerate() {
            if v.abs() > SUPER_NEURON_ABS && v.abs() > SUPER_NEURON_MEDIAN_RATIO * median {
                let (feeds, top1, top2) = down_proj_sparsity(model.down_proj(l), c, 3);
                super_neurons.push(SuperNeuron {
                    layer: l,
                    channel: c,
                    activation: v,
                    ratio_to_median: v.abs() / median,
                    max_abs_elsewhere: others_max.get(c).copied().unwrap_or(f64::NAN),
                    feeds,
                    top1_energy_share: top1,
                    top2_energy_share: top2,
                });
            }
        }
        layers.push(LayerReport {
            layer: l,
            attn_mass: acc.mass_sum / acc.mass_count.max(1) as f64,
            sink_frac: above_l as f64 / total_l.max(1) as f64,
            alpha_per_head: per_head,
            agg_var_ratio,
            agg_var_by_pos: var,
            attn_out_var_by_pos: out_var,
            dom_ratio: acc.dom_ratio_sum / nf,
            max_abs_sink: acc.max_abs_k_sum / nf,
            max_abs_others: acc.max_abs_others_sum / nf,
            norm_sink: acc.norm_k_sum / nf,
            norm_others: acc.norm_others_sum / nf,
            mid_norm_sink: acc.mid_norm_k_sum / nf,
            mid_norm_others: acc.mid_norm_others_sum / nf,
            massive_dims,
            ffn_median_abs: median,
            top_ffn_channels,
            compare,
        });
    }
    SinkReport {
        n_sequences: n,
        n_tokens: t,
        sink_pos: k,
        eps: opts.eps,
        next_token,
        last_logits_head: Vec::new(),
        last_logits_top: Vec::new(),
        agg_var_kind: kind,
        layers,
        sink_metric: SinkMetric {
            eps: opts.eps,
            value: 100.0 * above as f64 / total.max(1) as f64,
        },
        super_neuron_criterion: format!(
            "FFN intermediate act(gate)*up at position {k}, mean over sequences: |a| > {SUPER_NEURON_ABS} and |a| > {SUPER_NEURON_MEDIAN_RATIO} x the layer's median |a| (Sun et al. 2024's massive-activation rule)"
        ),
        super_neurons,
        precision: model.precision(),
        exact_prefix: 0,
        compare_sink_metric: probe.compare.map(|pos| ColumnMetric {
            pos,
            eps: opts.eps,
            value: 100.0 * cmp_above as f64 / cmp_total.max(1) as f64,
        }),
        site_notes: model.site_notes(),
    }
}

/// Indices and values of the `n` entries largest in magnitude, largest first (ties by index).
fn top_abs(v: &[f64], n: usize) -> Vec<(usize, f64)> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].abs().total_cmp(&v[a].abs()).then(a.cmp(&b)));
    idx.into_iter().take(n).map(|i| (i, v[i])).collect()
}

/// For FFN channel `c`, the hidden dims its down-projection column (W_down[:, c]) feeds
/// most, and the share of the column's energy in its top 1 and top 2 dims.
pub fn down_proj_sparsity(w_down: &Tensor, c: usize, n: usize) -> (Vec<ChannelValue>, f64, f64) {
    let col = to_vec(&w_down.select(1, c as i64));
    let energy: Vec<f64> = col.iter().map(|x| x * x).collect();
    let total: f64 = energy.iter().sum();
    let top = top_abs(&col, n.max(2));
    let share = |m: usize| top.iter().take(m).map(|(i, _)| energy[*i]).sum::<f64>() / total;
    let feeds = top
        .iter()
        .take(n)
        .map(|&(i, v)| ChannelValue {
            channel: i,
            value: v,
        })
        .collect();
    (feeds, share(1), share(2))
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
