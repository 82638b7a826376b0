//! Probes and interventions are data passed into `forward` (as candle passes its cache):
//! no closures inside modules, no global state.
//!
//! Site names follow TransformerLens so researchers recognise them.

use crate::interventions::Interventions;
use crate::llama::Precision;
use tch::Tensor;

/// A named place in a block where a probe can look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// Residual stream entering the block, (B, T, D).
    ResidPre,
    /// Attention probabilities after softmax (and after any mask intervention), (B, H, T, T).
    AttnPattern,
    /// Value-aggregation output z = A V per head, before the head-wise norm/gate and W_O,
    /// after any amplification intervention, (B, T, H, Dh).
    AttnZ,
    /// Attention output after W_O, (B, T, D).
    AttnOut,
    /// Residual stream between attention and FFN, (B, T, D).
    ResidMid,
    /// FFN intermediate act(gate) * up, after any ablation, (B, T, F).
    MlpPost,
    /// FFN output after the down projection, (B, T, D).
    MlpOut,
    /// Residual stream leaving the block, (B, T, D).
    ResidPost,
}

impl Site {
    pub const ALL: [Site; 8] = [
        Site::ResidPre,
        Site::AttnPattern,
        Site::AttnZ,
        Site::AttnOut,
        Site::ResidMid,
        Site::MlpPost,
        Site::MlpOut,
        Site::ResidPost,
    ];

    /// TransformerLens-style name (`hook_resid_pre`, ...), without the layer.
    pub fn name(self) -> &'static str {
        match self {
            Site::ResidPre => "resid_pre",
            Site::AttnPattern => "attn_pattern",
            Site::AttnZ => "attn_z",
            Site::AttnOut => "attn_out",
            Site::ResidMid => "resid_mid",
            Site::MlpPost => "mlp_post",
            Site::MlpOut => "mlp_out",
            Site::ResidPost => "resid_post",
        }
    }

    pub fn parse(s: &str) -> Option<Site> {
        Site::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// Something that watches sites during a forward pass and keeps only what it needs
/// (a reduction, or a capture). It must not modify the tensor it is shown.
pub trait Probe {
    /// Does this probe want `site` at `layer`? The model skips work nobody wants
    /// (notably, materialising the attention pattern).
    fn wants(&self, layer: usize, site: Site) -> bool;
    /// Called with the tensor at `site` of `layer` for the current batch.
    fn observe(&mut self, layer: usize, site: Site, t: &Tensor);
}

/// What a forward pass is asked to observe and change.
#[derive(Default)]
pub struct Hooks<'a> {
    pub probes: Vec<&'a mut dyn Probe>,
    pub interventions: Interventions,
    /// Run this forward pass in this matmul precision instead of the model's own (a bf16
    /// model can run a pass in f32: its f32 weights are always kept).
    pub precision: Option<Precision>,
}

impl<'a> Hooks<'a> {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn probe(mut self, p: &'a mut dyn Probe) -> Self {
        self.probes.push(p);
        self
    }
    pub fn with(mut self, interventions: Interventions) -> Self {
        self.interventions = interventions;
        self
    }
    /// Runs the pass in precision `p` whatever the model's (see `precision`).
    pub fn precision(mut self, p: Precision) -> Self {
        self.precision = Some(p);
        self
    }
    pub(crate) fn wants(&self, layer: usize, site: Site) -> bool {
        self.probes.iter().any(|p| p.wants(layer, site))
    }
    pub(crate) fn observe(&mut self, layer: usize, site: Site, t: &Tensor) {
        for p in self.probes.iter_mut() {
            if p.wants(layer, site) {
                p.observe(layer, site, t);
            }
        }
    }
}

/// The simplest probe: keeps a copy of the whole tensor at chosen (layer, site) pairs.
#[derive(Debug, Default)]
pub struct Capture {
    pub sites: Vec<(usize, Site)>,
    pub tensors: std::collections::BTreeMap<(usize, Site), Tensor>,
}

impl Capture {
    pub fn new(sites: impl IntoIterator<Item = (usize, Site)>) -> Self {
        Capture {
            sites: sites.into_iter().collect(),
            tensors: Default::default(),
        }
    }
    pub fn get(&self, layer: usize, site: Site) -> Option<&Tensor> {
        self.tensors.get(&(layer, site))
    }
}

impl Probe for Capture {
    fn wants(&self, layer: usize, site: Site) -> bool {
        self.sites.contains(&(layer, site))
    }
    fn observe(&mut self, layer: usize, site: Site, t: &Tensor) {
        // Concatenate over batches when called for several chunks.
        let t = t.detach().copy();
        let entry = self.tensors.remove(&(layer, site));
        let v = match entry {
            Some(prev) => Tensor::cat(&[prev, t], 0),
            None => t,
        };
        self.tensors.insert((layer, site), v);
    }
}
