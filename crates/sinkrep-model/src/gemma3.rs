//! The Gemma-3 text decoder (`gemma3` GGUFs, e.g. Gemma-3-270M), instrumented with the
//! same probe sites and interventions as `llama.rs`. Reads top to bottom: `Gemma3Config`,
//! `Attention`, `Mlp`, `Block`, `Gemma3`.
//!
//! What differs from LLaMA, each an explicit field of `Gemma3Config` (sources: HF
//! `modeling_gemma3.py`, llama.cpp `src/models/gemma3.cpp` and `convert_hf_to_gguf.py`):
//! the embedding is scaled by sqrt(d); queries and keys are RMS-normalised per head before
//! RoPE (QK-norm); attention and FFN are wrapped in pre- *and* post-norms; the FFN is
//! GeGLU with the tanh GELU; five of every six layers attend within a sliding window with
//! their own RoPE base; RoPE rotates half-split pairs (llama.cpp's NEOX mode, no Q/K
//! permutation in the converter); scores are scaled by query_pre_attn_scalar^-1/2.
//!
//! Weight names are the GGUF names, one to one (the `nn::Path` of each variable):
//!
//! | variable                            | role                                 | shape        |
//! |-------------------------------------|--------------------------------------|--------------|
//! | `token_embd.weight`                 | embedding, tied output               | (V, D)       |
//! | `blk.{i}.attn_norm.weight`          | pre-attention RMSNorm                | (D)          |
//! | `blk.{i}.attn_q/k/v.weight`         | projections                          | (H*Dh / KV*Dh, D) |
//! | `blk.{i}.attn_q_norm/k_norm.weight` | QK-norm, per head over Dh            | (Dh)         |
//! | `blk.{i}.attn_output.weight`        | W_O                                  | (D, H*Dh)    |
//! | `blk.{i}.post_attention_norm.weight`| post-attention RMSNorm               | (D)          |
//! | `blk.{i}.ffn_norm.weight`           | pre-FFN RMSNorm                      | (D)          |
//! | `blk.{i}.ffn_gate/up.weight`        | GeGLU                                | (F, D)       |
//! | `blk.{i}.ffn_down.weight`           | down projection                      | (D, F)       |
//! | `blk.{i}.post_ffw_norm.weight`      | post-FFN RMSNorm                     | (D)          |
//! | `output_norm.weight`                | final RMSNorm                        | (D)          |
//!
//! Probe sites, where they sit in this block (TransformerLens's Gemma-2 convention for
//! the two outputs): `attn_out` is post_attention_norm(W_O z) and `mlp_out` is
//! post_ffw_norm(W_down h), the tensors added to the residual stream; `mlp_post` is
//! gelu_tanh(gate) * up; the rest as in `llama.rs`. `Gemma3::site_notes` says so in reports.

use crate::config::{refuse_gguf_rope_scaling, AttnVariant, Config, RopePairing, RopeScaling};
use crate::hooks::{Hooks, Site};
use crate::llama::{causal_mask, load_vars, rms_norm, Rope, Weight};
use crate::{AttnImpl, ModelError, Precision};
use serde::{Deserialize, Serialize};
use sinkrep_gguf::GgufFile;
use tch::{nn, Device, Kind, Tensor};

/// How the FFN's gate is activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gelu {
    /// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): HF `gelu_pytorch_tanh`, ggml's
    /// `ggml_gelu`. Gemma's `hidden_activation`.
    Tanh,
}

/// How a stored RMSNorm gain g is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormGain {
    /// x_hat * g. GGUF files hold Gemma's 1 + w already: llama.cpp's converter adds 1 to
    /// every `*norm.weight` (and HF's GGUF loader subtracts it again for its
    /// `Gemma3RMSNorm`, which multiplies by 1 + w).
    AsStored,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gemma3Config {
    /// The fields every family has. `rope_base` is the global layers' base
    /// (`gemma3.rope.freq_base`, 1e6), `rope_pairing` is `HalfSplit`, `rms_eps` is
    /// `gemma3.attention.layer_norm_rms_epsilon` (1e-6) for every norm, QK-norm included.
    pub base: Config,
    /// RoPE base of the sliding-window layers: 10,000. Not in the GGUF: HF's
    /// `rope_local_base_freq` default and llama.cpp's `rope_freq_base_train_swa` for gemma3.
    pub rope_base_local: f64,
    /// A sliding-window layer's query i sees keys j with i - window < j <= i
    /// (`gemma3.attention.sliding_window`, 512; llama.cpp masks i - j >= window).
    pub sliding_window: usize,
    /// Layer i is global (full causal attention, `rope_base`) when (i + 1) is a multiple
    /// of this, else sliding-window: 6 (HF `sliding_window_pattern`, llama.cpp
    /// `set_swa_pattern(6)`), so layers 5, 11, 17 of 18 are global.
    pub global_every: usize,
    /// Scores are q.k * query_pre_attn_scalar^-1/2: 256 for the 270M model (= head_dim).
    pub query_pre_attn_scalar: f64,
    /// Token embeddings are multiplied by this: sqrt(d_model) (Gemma's `normalizer`), in f32.
    pub embed_scale: f64,
    pub norm_gain: NormGain,
    pub ffn_gelu: Gelu,
}

impl Gemma3Config {
    pub fn from_gguf(file: &GgufFile) -> Result<Gemma3Config, ModelError> {
        let arch = file.architecture()?;
        if arch != "gemma3" {
            return Err(ModelError::Unsupported(format!(
                "architecture `{arch}` is not gemma3"
            )));
        }
        let k = |s: &str| format!("gemma3.{s}");
        let d_model = file.get_u32(&k("embedding_length"))? as usize;
        let n_heads = file.get_u32(&k("attention.head_count"))? as usize;
        let head_dim = file.get_u32(&k("attention.key_length"))? as usize;
        if let Some(v) = file.get_u32_opt(&k("attention.value_length"))? {
            if v as usize != head_dim {
                return Err(ModelError::Unsupported(format!(
                    "key length {head_dim} differs from value length {v}"
                )));
            }
        }
        // Larger Gemma 3 checkpoints scale the global layers' RoPE (linear, factor 8).
        refuse_gguf_rope_scaling(file, "gemma3")?;
        let embd = file.tensor_info("token_embd.weight")?;
        let base = Config {
            vocab_size: embd.shape.first().copied().unwrap_or(0),
            d_model,
            n_layers: file.get_u32(&k("block_count"))? as usize,
            n_heads,
            n_kv_heads: file.get_u32(&k("attention.head_count_kv"))? as usize,
            head_dim,
            d_ff: file.get_u32(&k("feed_forward_length"))? as usize,
            rms_eps: f32_to_f64(file.get_f32(&k("attention.layer_norm_rms_epsilon"))?),
            rope_base: f32_to_f64(file.get_f32_opt(&k("rope.freq_base"))?.unwrap_or(1e6)),
            rope_pairing: RopePairing::HalfSplit,
            rope_scaling: RopeScaling::None,
            tied_embeddings: file.tensor_info("output.weight").is_err(),
            max_seq_len: file.get_u32(&k("context_length"))? as usize,
            attn_variant: AttnVariant::Baseline,
            head_norm_init: 1.0,
            zero_init: false,
        };
        if !base.tied_embeddings {
            return Err(ModelError::Unsupported(
                "a gemma3 GGUF with an untied output.weight".into(),
            ));
        }
        let cfg = Gemma3Config {
            base,
            rope_base_local: 10_000.0,
            sliding_window: file.get_u32(&k("attention.sliding_window"))? as usize,
            global_every: 6,
            query_pre_attn_scalar: head_dim as f64,
            embed_scale: (d_model as f64).sqrt(),
            norm_gain: NormGain::AsStored,
            ffn_gelu: Gelu::Tanh,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        self.base.validate()?;
        if self.sliding_window == 0 || self.global_every == 0 {
            return Err(ModelError::BadConfig(
                "sliding_window and global_every must be > 0".into(),
            ));
        }
        if self.query_pre_attn_scalar <= 0.0 || self.rope_base_local <= 1.0 {
            return Err(ModelError::BadConfig(
                "query_pre_attn_scalar must be > 0 and rope_base_local > 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether layer `i` attends globally (else within the sliding window).
    pub fn is_global(&self, i: usize) -> bool {
        (i + 1).is_multiple_of(self.global_every)
    }
}

/// The shortest decimal that round-trips (1e-6, not 9.99999997e-7), as `config.rs` does.
fn f32_to_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

pub struct Attention {
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    q_norm: Tensor,
    k_norm: Tensor,
    n_heads: i64,
    n_kv: i64,
    head_dim: i64,
    eps: f64,
    scale: f64,
    /// `Some(window)` for a sliding-window layer.
    window: Option<i64>,
}

impl Attention {
    fn new(p: &nn::Path, cfg: &Gemma3Config, layer: usize) -> Attention {
        let c = &cfg.base;
        let (d, h, kv, dh) = (
            c.d_model as i64,
            c.n_heads as i64,
            c.n_kv_heads as i64,
            c.head_dim as i64,
        );
        let z = nn::Init::Const(0.0);
        Attention {
            wq: Weight::new((p / "attn_q").var("weight", &[h * dh, d], z)),
            wk: Weight::new((p / "attn_k").var("weight", &[kv * dh, d], z)),
            wv: Weight::new((p / "attn_v").var("weight", &[kv * dh, d], z)),
            wo: Weight::new((p / "attn_output").var("weight", &[d, h * dh], z)),
            q_norm: (p / "attn_q_norm").ones("weight", &[dh]),
            k_norm: (p / "attn_k_norm").ones("weight", &[dh]),
            n_heads: h,
            n_kv: kv,
            head_dim: dh,
            eps: c.rms_eps,
            scale: cfg.query_pre_attn_scalar.powf(-0.5),
            window: (!cfg.is_global(layer)).then_some(cfg.sliding_window as i64),
        }
    }

    /// x: (B, T, D) normalised block input. Returns W_O z (B, T, D), before the post-norm.
    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        rope: &Rope,
        prec: Precision,
        hooks: &mut Hooks,
    ) -> Tensor {
        let s = x.size();
        let (b, t) = (s[0], s[1]);
        let (h, kv, dh) = (self.n_heads, self.n_kv, self.head_dim);
        let rep = h / kv;
        let xc = prec.input(x);
        // QK-norm: RMSNorm over each head's Dh channels, before RoPE.
        let q = rms_norm(
            &prec.mm(&xc, &self.wq).view([b, t, h, dh]),
            &self.q_norm,
            self.eps,
        )
        .transpose(1, 2); // (B, H, T, Dh)
        let k = rms_norm(
            &prec
                .probed(x, &xc, &self.wk, hooks.wants(layer, Site::AttnPattern))
                .view([b, t, kv, dh]),
            &self.k_norm,
            self.eps,
        )
        .transpose(1, 2); // (B, KV, T, Dh)
        let v = prec
            .probed(x, &xc, &self.wv, hooks.wants(layer, Site::AttnZ))
            .view([b, t, kv, dh])
            .transpose(1, 2); // (B, KV, T, Dh)
        let q = rope.apply(&q);
        let k = rope.apply(&k);

        // Always the explicit path: the sliding window is a mask, and probes read A.
        let self_only = hooks.interventions.mask_self_at(layer);
        let qg = q.reshape([b, kv, rep * t, dh]);
        let scores = qg.matmul(&k.transpose(-2, -1)) * self.scale; // (B, KV, rep*T, T)
        let scores = scores.view([b, h, t, t]); // (B, H, T, T)
        let mut mask = causal_mask(t, &self_only, x.device()); // (T, T), true = blocked
        if let Some(w) = self.window {
            // Keys more than window - 1 positions back are out of reach.
            let far = Tensor::ones([t, t], (Kind::Bool, x.device())).tril(-w);
            mask = mask.logical_or(&far);
        }
        let att = scores
            .masked_fill(&mask, f64::NEG_INFINITY)
            .softmax(-1, Kind::Float);
        if hooks.wants(layer, Site::AttnPattern) {
            hooks.observe(layer, Site::AttnPattern, &att);
        }
        let z = att
            .view([b, kv, rep * t, t])
            .matmul(&v) // (B, KV, rep*T, Dh)
            .view([b, h, t, dh])
            .transpose(1, 2)
            .contiguous(); // (B, T, H, Dh)
        let z = if hooks.interventions.amplify.is_empty() {
            z
        } else {
            hooks.interventions.amplify_z(layer, z)
        };
        if hooks.wants(layer, Site::AttnZ) {
            hooks.observe(layer, Site::AttnZ, &z);
        }
        prec.linear(&z.reshape([b, t, h * dh]), &self.wo)
    }
}

pub struct Mlp {
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
}

impl Mlp {
    fn new(p: &nn::Path, cfg: &Gemma3Config) -> Mlp {
        let (d, f) = (cfg.base.d_model as i64, cfg.base.d_ff as i64);
        let z = nn::Init::Const(0.0);
        Mlp {
            w_gate: Weight::new((p / "ffn_gate").var("weight", &[f, d], z)),
            w_up: Weight::new((p / "ffn_up").var("weight", &[f, d], z)),
            w_down: Weight::new((p / "ffn_down").var("weight", &[d, f], z)),
        }
    }

    /// GeGLU: W_down (gelu_tanh(x W_gate) * (x W_up)), before the post-norm.
    fn forward(&self, x: &Tensor, layer: usize, prec: Precision, hooks: &mut Hooks) -> Tensor {
        let xc = prec.input(x);
        let g = prec.mm(&xc, &self.w_gate).gelu("tanh");
        let u = prec.mm(&xc, &self.w_up);
        let h = g * u; // (B, T, F)
        let h = if hooks.interventions.ablate.is_empty() {
            h
        } else {
            hooks.interventions.ablate_mlp(layer, h)
        };
        if hooks.wants(layer, Site::MlpPost) {
            hooks.observe(layer, Site::MlpPost, &h);
        }
        prec.linear(&h, &self.w_down)
    }

    /// The down-projection weight (D, F): column c is what FFN channel c writes (before
    /// the post-FFN norm rescales each hidden dim).
    pub fn down_proj(&self) -> &Tensor {
        &self.w_down.w
    }
}

pub struct Block {
    attn_norm: Tensor,
    pub attn: Attention,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    pub mlp: Mlp,
    post_ffw_norm: Tensor,
    eps: f64,
    /// Index into `Gemma3::ropes`: 0 global, 1 local.
    rope: usize,
}

impl Block {
    fn new(p: nn::Path, cfg: &Gemma3Config, layer: usize) -> Block {
        let d = cfg.base.d_model as i64;
        Block {
            attn_norm: (&p / "attn_norm").ones("weight", &[d]),
            attn: Attention::new(&p, cfg, layer),
            post_attn_norm: (&p / "post_attention_norm").ones("weight", &[d]),
            ffn_norm: (&p / "ffn_norm").ones("weight", &[d]),
            mlp: Mlp::new(&p, cfg),
            post_ffw_norm: (&p / "post_ffw_norm").ones("weight", &[d]),
            eps: cfg.base.rms_eps,
            rope: usize::from(!cfg.is_global(layer)),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        rope: &Rope,
        prec: Precision,
        hooks: &mut Hooks,
    ) -> Tensor {
        if hooks.wants(layer, Site::ResidPre) {
            hooks.observe(layer, Site::ResidPre, x);
        }
        let a = self.attn.forward(
            &rms_norm(x, &self.attn_norm, self.eps),
            layer,
            rope,
            prec,
            hooks,
        );
        let a = rms_norm(&a, &self.post_attn_norm, self.eps);
        if hooks.wants(layer, Site::AttnOut) {
            hooks.observe(layer, Site::AttnOut, &a);
        }
        let mid = x + a;
        if hooks.wants(layer, Site::ResidMid) {
            hooks.observe(layer, Site::ResidMid, &mid);
        }
        let m = self.mlp.forward(
            &rms_norm(&mid, &self.ffn_norm, self.eps),
            layer,
            prec,
            hooks,
        );
        let m = rms_norm(&m, &self.post_ffw_norm, self.eps);
        if hooks.wants(layer, Site::MlpOut) {
            hooks.observe(layer, Site::MlpOut, &m);
        }
        let out = mid + m;
        if hooks.wants(layer, Site::ResidPost) {
            hooks.observe(layer, Site::ResidPost, &out);
        }
        out
    }
}

pub struct Gemma3 {
    pub config: Gemma3Config,
    pub vs: nn::VarStore,
    /// The token embedding, also the output projection (tied).
    tok_embd: Weight,
    pub blocks: Vec<Block>,
    out_norm: Tensor,
    /// RoPE tables: [global (rope_base), local (rope_base_local)].
    ropes: [Rope; 2],
    precision: Precision,
}

impl std::fmt::Debug for Gemma3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemma3")
            .field("config", &self.config)
            .finish()
    }
}

impl Gemma3 {
    /// A model with every weight zero (norm gains one), to be filled by `load_weights`.
    pub fn new(cfg: &Gemma3Config, device: Device) -> Result<Gemma3, ModelError> {
        cfg.validate()?;
        let c = &cfg.base;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (v, d) = (c.vocab_size as i64, c.d_model as i64);
        let tok_embd = (&root / "token_embd").var("weight", &[v, d], nn::Init::Const(0.0));
        let blocks = (0..c.n_layers)
            .map(|i| Block::new(&root / "blk" / i, cfg, i))
            .collect();
        let out_norm = (&root / "output_norm").ones("weight", &[d]);
        // RoPE tables only as long as a sequence can be here; the context is 32k.
        let max_t = c.max_seq_len.min(8192);
        let local = Config {
            rope_base: cfg.rope_base_local,
            // HF scales only the global layers' RoPE (and this GGUF reader refuses scaling).
            rope_scaling: RopeScaling::None,
            ..c.clone()
        };
        Ok(Gemma3 {
            config: cfg.clone(),
            vs,
            tok_embd: Weight::new(tok_embd),
            blocks,
            out_norm,
            ropes: [
                Rope::new(c, max_t, device),
                Rope::new(&local, max_t, device),
            ],
            precision: Precision::F32,
        })
    }

    /// Loads a gemma3 GGUF: config from metadata, every weight de-quantised to f32.
    pub fn from_gguf(file: &GgufFile, device: Device) -> Result<Gemma3, ModelError> {
        let cfg = Gemma3Config::from_gguf(file)?;
        let model = Gemma3::new(&cfg, device)?;
        load_vars(&model.vs, file)?;
        Ok(model)
    }

    /// Final normalised hidden states (B, T, D) for every position of tokens (B, T).
    pub fn forward(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor, ModelError> {
        let t = tokens.size().get(1).copied().unwrap_or(0);
        let max_t = self.ropes[0].len();
        if tokens.dim() != 2 || t == 0 {
            return Err(ModelError::BadInput(format!(
                "tokens must be (batch, time) with time > 0, got {:?}",
                tokens.size()
            )));
        }
        if t as usize > max_t {
            return Err(ModelError::BadInput(format!(
                "sequence of {t} tokens exceeds the {max_t} positions this model is built for"
            )));
        }
        let x = Tensor::embedding(&self.tok_embd.w, tokens, -1, false, false); // (B, T, D)
        let mut x = x * self.config.embed_scale;
        let prec = hooks.precision.unwrap_or(self.precision);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, i, &self.ropes[block.rope], prec, hooks);
        }
        Ok(rms_norm(&x, &self.out_norm, self.config.base.rms_eps))
    }

    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        self.precision.linear(hidden, &self.tok_embd)
    }

    pub fn set_precision(&mut self, p: Precision, snapshot: bool) {
        self.precision = p;
        let on = snapshot && p == Precision::Bf16;
        tch::no_grad(|| {
            self.tok_embd.snapshot(on);
            for b in &mut self.blocks {
                let a = &mut b.attn;
                for w in [&mut a.wq, &mut a.wk, &mut a.wv, &mut a.wo] {
                    w.snapshot(on);
                }
                let m = &mut b.mlp;
                for w in [&mut m.w_gate, &mut m.w_up, &mut m.w_down] {
                    w.snapshot(on);
                }
            }
        });
    }
}

/// Where Gemma-3's probe sites differ from LLaMA's, for reports.
pub const SITE_NOTES: [&str; 3] = [
    "attn_out is post_attention_norm(W_O z) (blk.N.post_attention_norm applied), the tensor added to the residual stream",
    "mlp_out is post_ffw_norm(W_down h) (blk.N.post_ffw_norm applied); super-neuron columns are read from ffn_down before that norm",
    "mlp_post is gelu_tanh(x W_gate) * (x W_up) (GeGLU); resid_* include the sqrt(d)-scaled embedding",
];

impl crate::Decoder for Gemma3 {
    fn family(&self) -> &'static str {
        "gemma3"
    }
    fn config(&self) -> &Config {
        &self.config.base
    }
    fn device(&self) -> Device {
        self.vs.device()
    }
    fn precision(&self) -> Precision {
        self.precision
    }
    fn set_precision(&mut self, p: Precision, snapshot: bool) {
        Gemma3::set_precision(self, p, snapshot)
    }
    fn forward(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor, ModelError> {
        Gemma3::forward(self, tokens, hooks)
    }
    fn logits(&self, hidden: &Tensor) -> Tensor {
        Gemma3::logits(self, hidden)
    }
    fn down_proj(&self, layer: usize) -> &Tensor {
        self.blocks[layer].mlp.down_proj()
    }
    fn site_notes(&self) -> Vec<String> {
        SITE_NOTES.iter().map(|s| s.to_string()).collect()
    }
    fn attn_impl(&self) -> AttnImpl {
        AttnImpl::Explicit
    }
}
