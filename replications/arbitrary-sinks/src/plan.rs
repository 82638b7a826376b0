//! What is measured at each scale: the grid of (input kind, position, intervention)
//! cells, each one `analyze` call. Every choice is explained in the README's Protocol.

use serde::{Deserialize, Serialize};
use sinkrep_model::{Amplify, AmplifyMode, CenterMean, Interventions, Layers, MaskSelf};
use sinkrep_runner::Scale;

/// Tokens per sequence (Gu et al.'s T = 64).
pub const SEQ_LEN: usize = 64;
/// Layers of the primary amplification: those before the pinned model's natural sink
/// forms (its attention to position 0 jumps at layer 2; `sinkrep analyze`).
pub const PRIMARY_LAYERS: [usize; 2] = [0, 1];

/// Where the input sequences come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// Windows of the pinned natural texts (`pinned::text_windows`).
    Text,
    /// Uniformly random token ids (`random_tokens`), Gu et al.'s protocol.
    Random,
}

impl InputKind {
    pub const ALL: [InputKind; 2] = [InputKind::Text, InputKind::Random];
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Text => "text",
            InputKind::Random => "random",
        }
    }
}

/// The mode of an amplification, with a stable name for tables and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    CenteredPositions,
    CenteredChannels,
    CenteredBatch,
    Plain,
    RandomDirection,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::CenteredPositions,
        Mode::CenteredChannels,
        Mode::CenteredBatch,
        Mode::Plain,
        Mode::RandomDirection,
    ];
    /// Name in CSV columns (`centered-positions`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::CenteredPositions => "centered-positions",
            Mode::CenteredChannels => "centered-channels",
            Mode::CenteredBatch => "centered-batch",
            Mode::Plain => "plain",
            Mode::RandomDirection => "random-direction",
        }
    }
    /// Name inside metric names (`centered_positions`, ...).
    pub fn metric_name(self) -> String {
        self.as_str().replace('-', "_")
    }
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
    fn to_model(self, seed: u64) -> AmplifyMode {
        match self {
            Mode::CenteredPositions => AmplifyMode::Centered(CenterMean::Positions),
            Mode::CenteredChannels => AmplifyMode::Centered(CenterMean::Channels),
            Mode::CenteredBatch => AmplifyMode::Centered(CenterMean::Batch),
            Mode::Plain => AmplifyMode::Plain,
            Mode::RandomDirection => AmplifyMode::RandomDirection { seed },
        }
    }
}

/// Which sweep a cell belongs to (a CSV column; figures and metrics filter on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Group {
    /// No intervention; reported at 0, every position k and T-1.
    Baseline,
    /// Mask-to-self at k in every layer; reported at k and at 0.
    MaskAll,
    /// Mask-to-self at k in the first n layers only; reported at k.
    MaskFirst(usize),
    /// Centred (positions mean) and plain amplification in the primary layers, every
    /// position, every lambda.
    AmpPrimary,
    /// The other means and the random direction, primary layers, secondary positions.
    AmpModes,
    /// Other layer choices (centred-positions, and plain at the largest lambda).
    AmpLayers,
    /// Amplification at the last position T-1, which no query can attend to.
    AmpLast,
}

impl Group {
    pub fn name(self) -> String {
        match self {
            Group::Baseline => "baseline".into(),
            Group::MaskAll => "mask-all".into(),
            Group::MaskFirst(n) => format!("mask-first{n}"),
            Group::AmpPrimary => "amp-primary".into(),
            Group::AmpModes => "amp-modes".into(),
            Group::AmpLayers => "amp-layers".into(),
            Group::AmpLast => "amp-last".into(),
        }
    }
}

/// An amplification o'_k = f(o_k) at the value-aggregation output of position k.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AmpSpec {
    pub mode: Mode,
    pub layers: Vec<usize>,
    pub lambda: f64,
}

/// One cell of the grid: one `analyze` call over the kind's sequences.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    pub group: Group,
    pub kind: InputKind,
    /// The position intervened on (for the baseline: the position reported).
    pub k: usize,
    /// The position whose sink report is taken (`AnalyzeOptions::sink_pos`).
    pub report_pos: usize,
    /// Mask-to-self layers: `None` for no mask, `Some(None)` for all layers,
    /// `Some(Some(n))` for the first n.
    pub mask: Option<Option<usize>>,
    pub amp: Option<AmpSpec>,
}

/// `0+1+2` for a layer list.
pub fn layers_label(layers: &[usize]) -> String {
    layers
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// Seed of the random-direction control for a cell: a different direction per
/// (kind, position), so averages over cells average over directions.
pub fn direction_seed(base: u64, kind: InputKind, k: usize) -> u64 {
    base.wrapping_mul(1_000_003)
        .wrapping_add(k as u64 * 2 + kind as u64)
}

impl Spec {
    pub fn mask_label(&self) -> String {
        match self.mask {
            None => "-".into(),
            Some(None) => "all".into(),
            Some(Some(n)) => layers_label(&(0..n).collect::<Vec<_>>()),
        }
    }

    pub fn interventions(&self, seed: u64) -> Interventions {
        let mut iv = Interventions::default();
        if let Some(m) = self.mask {
            iv.mask_self.push(MaskSelf {
                positions: vec![self.k],
                layers: match m {
                    None => Layers::All,
                    Some(n) => Layers::Only((0..n).collect()),
                },
            });
        }
        if let Some(a) = &self.amp {
            iv.amplify.push(Amplify {
                positions: vec![self.k],
                layers: Layers::Only(a.layers.clone()),
                lambda: a.lambda,
                mode: a.mode.to_model(direction_seed(seed, self.kind, self.k)),
            });
        }
        iv
    }
}

/// The sizes of one scale: `[scale.<s>]` of `claim.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Sequences per input kind; every cell uses the same ones, in one batch (so the
    /// batch mean of `centered-batch` is over all of them).
    pub n_seqs: usize,
    pub seq_len: usize,
    pub kinds: Vec<InputKind>,
    /// Positions k where sinks are created (mask-to-self, primary amplification).
    pub positions: Vec<usize>,
    /// Mask-to-self in the first n layers only, for each n here.
    pub mask_first: Vec<usize>,
    /// Lambdas of the primary sweep (lambda = 1 is the baseline, not rerun).
    pub lambdas: Vec<f64>,
    /// Positions and lambdas of the secondary sweeps (other means, random direction,
    /// other layer choices, the last position); a subset of the above, same largest lambda.
    pub secondary_positions: Vec<usize>,
    pub secondary_lambdas: Vec<f64>,
    /// Layer choices of the secondary sweep (besides the primary `0+1`).
    pub layer_choices: Vec<Vec<usize>>,
}

impl Plan {
    /// The plan at `scale`: `[scale.<scale>]` of this crate's `claim.toml`.
    pub fn at(scale: Scale) -> anyhow::Result<Plan> {
        Ok(crate::claim()?.scale_params(scale)?)
    }

    pub fn last_pos(&self) -> usize {
        self.seq_len - 1
    }

    pub fn max_lambda(&self) -> f64 {
        self.lambdas.iter().copied().fold(f64::NAN, f64::max)
    }

    /// Every cell, in a fixed order: per kind, the baseline, mask-to-self, then the
    /// amplification sweeps.
    pub fn specs(&self) -> Vec<Spec> {
        let mut out = Vec::new();
        let last = self.last_pos();
        let primary = PRIMARY_LAYERS.to_vec();
        let lmax = self.max_lambda();
        for &kind in &self.kinds {
            let base = |k: usize| Spec {
                group: Group::Baseline,
                kind,
                k,
                report_pos: k,
                mask: None,
                amp: None,
            };
            out.push(base(0));
            out.extend(self.positions.iter().map(|&k| base(k)));
            out.push(base(last));
            for &k in &self.positions {
                for report_pos in [k, 0] {
                    out.push(Spec {
                        group: Group::MaskAll,
                        kind,
                        k,
                        report_pos,
                        mask: Some(None),
                        amp: None,
                    });
                }
                for &n in &self.mask_first {
                    out.push(Spec {
                        group: Group::MaskFirst(n),
                        kind,
                        k,
                        report_pos: k,
                        mask: Some(Some(n)),
                        amp: None,
                    });
                }
            }
            let amp = |group, k, mode, layers: &[usize], lambda| Spec {
                group,
                kind,
                k,
                report_pos: k,
                mask: None,
                amp: Some(AmpSpec {
                    mode,
                    layers: layers.to_vec(),
                    lambda,
                }),
            };
            for &k in &self.positions {
                for mode in [Mode::CenteredPositions, Mode::Plain] {
                    for &l in &self.lambdas {
                        out.push(amp(Group::AmpPrimary, k, mode, &primary, l));
                    }
                }
            }
            for &k in &self.secondary_positions {
                for mode in [
                    Mode::CenteredChannels,
                    Mode::CenteredBatch,
                    Mode::RandomDirection,
                ] {
                    for &l in &self.secondary_lambdas {
                        out.push(amp(Group::AmpModes, k, mode, &primary, l));
                    }
                }
                for layers in &self.layer_choices {
                    for &l in &self.secondary_lambdas {
                        out.push(amp(Group::AmpLayers, k, Mode::CenteredPositions, layers, l));
                    }
                    out.push(amp(Group::AmpLayers, k, Mode::Plain, layers, lmax));
                }
            }
            for mode in [Mode::CenteredPositions, Mode::Plain] {
                for &l in &self.secondary_lambdas {
                    out.push(amp(Group::AmpLast, last, mode, &primary, l));
                }
            }
        }
        out
    }
}
