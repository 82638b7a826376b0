//! A LLaMA-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU, tied or untied
//! output), instrumented with probes and interventions. Reads top to bottom: `Attention`,
//! `Mlp`, `Block`, `Model`, each built from `(path, &config)` with a `forward`.
//!
//! Weight names are the GGUF names, one to one: the `nn::Path` of each variable *is* its
//! GGUF tensor name (tch joins path segments with '.'):
//!
//! | variable                         | GGUF tensor                 | shape (row-major)   |
//! |----------------------------------|-----------------------------|---------------------|
//! | `token_embd.weight`              | same                        | (V, D)              |
//! | `blk.{i}.attn_norm.weight`       | same                        | (D)                 |
//! | `blk.{i}.attn_q/k/v.weight`      | same                        | (H*Dh / KV*Dh, D)   |
//! | `blk.{i}.attn_output.weight`     | same                        | (D, H*Dh)           |
//! | `blk.{i}.ffn_norm.weight`        | same                        | (D)                 |
//! | `blk.{i}.ffn_gate/up.weight`     | same                        | (F, D)              |
//! | `blk.{i}.ffn_down.weight`        | same                        | (D, F)              |
//! | `output_norm.weight`             | same                        | (D)                 |
//! | `output.weight` (untied only)    | same                        | (V, D)              |
//! | `blk.{i}.attn_head_norm.weight`  | (sinkrep variant)           | (Dh) or (H, Dh)     |
//! | `blk.{i}.attn_gate.weight`       | (sinkrep variant)           | (H*Dh, D)           |

use crate::config::{AttnVariant, Config, RopePairing};
use crate::hooks::{Hooks, Site};
use crate::ModelError;
use sinkrep_gguf::GgufFile;
use tch::{nn, Device, Kind, Tensor};

/// How attention probabilities are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnImpl {
    /// softmax(QK^T/sqrt(d) + mask) V written out: the pattern can be probed and masked.
    /// The default for analysis.
    Explicit,
    /// Fused attention (faster, used for training): sinkrep's CPU kernel in f32 without
    /// grouped KV heads (crate::fused::causal_attention), else libtorch's
    /// scaled_dot_product_attention. A layer falls back to `Explicit` when a probe wants
    /// its pattern or a mask intervention applies there.
    Fused,
}

/// How the linear layers multiply (the model's only precision switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32: the default, and the numbers every baseline holds.
    #[default]
    F32,
    /// Mixed precision the way autocast does it: each linear layer casts its input and
    /// weight to bf16 and its product back to f32 (the kernels accumulate in f32);
    /// embeddings, RMSNorm, RoPE, attention scores and softmax, the residual stream and
    /// every probe stay in f32, and so do the weights the optimizer updates and the key
    /// and value projections of a layer whose pattern or aggregation a probe reads
    /// (`Precision::probed`; on a CPU with AMX those run as split-bf16 products, f32-accurate
    /// to 4e-6, `Keep::Split`). `Hooks::precision` runs one pass in f32 (the analysis takes
    /// the sink prefix from such a pass: `sinkrep_analysis::report::exact_prefix_len`). With
    /// AMX or AVX512-BF16 on the CPU, or on a GPU, the matmuls run several times faster;
    /// reported statistics differ from `F32` by under 4% (`just bench-compare` measures it).
    Bf16,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// `x` cast for `mm` (bf16, or `x` itself in f32); cast once, use for every
    /// projection of the same input (Q, K, V; gate and up).
    pub(crate) fn input(self, x: &Tensor) -> Tensor {
        match self {
            Precision::F32 => x.shallow_clone(),
            Precision::Bf16 => x.to_kind(Kind::BFloat16),
        }
    }

    /// `xc W^T` for `xc` from `input`, returned in f32.
    pub(crate) fn mm(self, xc: &Tensor, w: &Weight) -> Tensor {
        self.mm_native(xc, w).to_kind(Kind::Float)
    }

    /// `xc W^T` in the kind the product comes out in: bf16 in `Bf16` (its values are
    /// those `mm` returns, which only widens them), for consumers that read bf16 (the
    /// inference kernels, the next matmul, a residual add that promotes it exactly).
    pub(crate) fn mm_native(self, xc: &Tensor, w: &Weight) -> Tensor {
        match self {
            Precision::F32 => xc.linear::<Tensor>(&w.w, None),
            Precision::Bf16 => xc.linear::<Tensor>(&w.bf16(), None),
        }
    }

    /// `x W^T` in this precision, returned in f32.
    pub(crate) fn linear(self, x: &Tensor, w: &Weight) -> Tensor {
        self.mm(&self.input(x), w)
    }

    /// A projection a probe's statistics are sensitive to (f32 `x`, `xc` its `input`
    /// cast), returned in f32: when `probed`, it runs in f32 whatever the precision.
    /// Two projections take this rule, for the statistics bf16 rounding moved past the 4%
    /// that bf16 results are held to (`just bench-compare`, SmolLM2-135M):
    /// - the value projection of a layer whose value aggregation a probe reads: the
    ///   aggregation-variance statistics are ratios of small variances (the sink
    ///   position's is ~1% of the others' in the last layer); bf16 values moved one by 6%;
    /// - the key projection of a layer whose attention pattern a probe reads: alpha_K is
    ///   a mean over queries of the weight on the one key K, so that key's rounding error
    ///   does not average out; bf16 keys moved 6 of 900 (sequence, head) pairs across
    ///   eps at layer 2 on natural text, 4.6% of that layer's sink fraction (2 with f32
    ///   keys).
    ///
    /// Together they are 6% of SmolLM2's matmul FLOPs, but were a seventh of a bf16
    /// analysis's time in f32 sgemm on an AMX CPU (7x slower than its bf16 matmuls):
    /// there, `probed_native` runs them as split-bf16 products (`Keep::Split`).
    pub(crate) fn probed(self, x: &Tensor, xc: &Tensor, w: &Weight, probed: bool) -> Tensor {
        if probed {
            Precision::F32.mm(x, w)
        } else {
            self.mm(xc, w)
        }
    }

    /// `probed` for a normalised input, in the kind the product comes out in (f32 when
    /// probed; else as `mm_native`).
    fn probed_native(self, xn: &Normed, w: &Weight, probed: bool) -> Tensor {
        if probed && !self.is_f32() {
            if let (Some(lo), Some(packed)) = (&xn.lo, w.split()) {
                return split_product(&xn.mm, lo, &packed, w.w.size()[0]);
            }
            Precision::F32.mm(&xn.f32(), w)
        } else {
            self.mm_native(&xn.mm, w)
        }
    }

    /// The kind fused attention runs in (flash kernels want 16-bit inputs on GPUs).
    fn attn_kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// A linear layer's weight (out, in) as the VarStore holds it, and, when snapshots are on
/// (`set_precision(Bf16, true)`), a bf16 copy of it for inference, made on the first bf16
/// product that uses it and kept, so a bf16 forward does not cast every weight on every
/// call, and weights no bf16 product reads (the embedding of an analysis that computes no
/// logits; key and value projections a probe keeps in f32) are never copied. Training
/// never snapshots: its weights change.
pub(crate) struct Weight {
    pub(crate) w: Tensor,
    /// `Some` while snapshots are on: the copy, once made.
    bf16: Option<std::cell::OnceCell<Tensor>>,
    /// `Some` while snapshots are on: the packed high and low bf16 parts for split-bf16
    /// products (`Precision::probed_native`), once made; `None` inside where they cannot run.
    split: Option<std::cell::OnceCell<Option<Tensor>>>,
}

impl Weight {
    pub(crate) fn new(w: Tensor) -> Weight {
        Weight {
            w,
            bf16: None,
            split: None,
        }
    }

    pub(crate) fn snapshot(&mut self, on: bool) {
        self.bf16 = on.then(std::cell::OnceCell::new);
        self.split = on.then(std::cell::OnceCell::new);
    }

    /// The packed split-bf16 parts (snapshots on, AMX, a weight that fits), made on first use.
    pub(crate) fn split(&self) -> Option<Tensor> {
        self.split
            .as_ref()?
            .get_or_init(|| {
                (crate::fused::split_available() && crate::fused::split_fits(&self.w))
                    .then(|| tch::no_grad(|| crate::fused::split_pack(&self.w.detach())))
            })
            .as_ref()
            .map(Tensor::shallow_clone)
    }

    /// The weight in bf16: the kept snapshot, or (snapshots off) a cast for this call.
    fn bf16(&self) -> Tensor {
        match &self.bf16 {
            Some(cell) => cell
                .get_or_init(|| tch::no_grad(|| self.w.detach().to_kind(Kind::BFloat16)))
                .shallow_clone(),
            None => self.w.to_kind(Kind::BFloat16),
        }
    }
}

/// How a forward pass runs: attention implementation and matmul precision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exec {
    pub(crate) imp: AttnImpl,
    pub(crate) prec: Precision,
}

/// Initial weights: N(0, min(0.02, 1/sqrt(fan_in))).
pub(crate) fn weight_init(fan_in: i64) -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02f64.min(1.0 / (fan_in as f64).sqrt()),
    }
}

/// The variable `p/weight` of shape `dims`, drawn from `init`; or, while a checkpoint is
/// loaded (`Config::zero_init`: its tensors replace every weight before any use), left
/// unset: no random numbers drawn, and no fill that would page the memory in on one
/// thread (0.5 GB for SmolLM2-135M in f32) before the parallel de-quantisation writes it.
pub(crate) fn weight_var(p: &nn::Path, dims: &[i64], init: nn::Init, cfg: &Config) -> Tensor {
    if cfg.zero_init {
        p.add("weight", Tensor::empty(dims, (p.kind(), p.device())), true)
    } else {
        p.var("weight", dims, init)
    }
}

/// The linear layer `p/name`'s weight ([`weight_var`] with [`weight_init`]).
fn linear_weight(p: &nn::Path, name: &str, dims: &[i64], fan_in: i64, cfg: &Config) -> Weight {
    Weight::new(weight_var(&(p / name), dims, weight_init(fan_in), cfg))
}

/// Can the fused kernels normalise f32 `x` with gain `w`? A gain of shape (D) or (P, D)
/// over x's last two dimensions (the head-wise per-head gain), f32.
fn fused_gain_fits(x: &Tensor, w: &Tensor) -> bool {
    let d = x.size().last().copied().unwrap_or(0);
    let fits = match w.size()[..] {
        [wd] => wd == d,
        [p, wd] => wd == d && x.dim() >= 2 && x.size()[x.dim() - 2] == p,
        _ => false,
    };
    fits && w.kind() == Kind::Float && x.kind() == Kind::Float
}

pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    // On the CPU, one fused pass (crate::fused): as an autograd function in a training
    // forward, as a plain kernel in inference.
    if fused_gain_fits(x, w) {
        if crate::fused::applies(x) {
            return crate::fused::rms_norm(x, w, eps);
        }
        if crate::fused::applies_infer(x) {
            if let (Some(y), _) = crate::fused::rms_norm_infer(x, w, eps, true, false) {
                return y;
            }
        }
    }
    // As HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * w, in f32.
    let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    x * (var + eps).rsqrt() * w
}

/// `x W^T` in f32 by split-bf16 products, from x's parts `xh` (B, T, K) and `xl` and W's
/// packed parts (`Weight::split`); see `Keep::Split`.
fn split_product(xh: &Tensor, xl: &Tensor, packed: &Tensor, n: i64) -> Tensor {
    let size = xh.size();
    let k = size[size.len() - 1];
    let y = crate::fused::split_mm(&xh.reshape([-1, k]), &xl.reshape([-1, k]), packed, n);
    let mut out = size;
    *out.last_mut().unwrap() = n;
    y.reshape(out)
}

/// What a normalised block input keeps besides the matmul input (`norm_input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Nothing: every consumer reads `mm`.
    Nothing,
    /// The f32 values, for products a probe keeps in f32 (`Precision::probed`).
    F32,
    /// The low bf16 parts, for those products as split-bf16 products in `Bf16` on a CPU
    /// with AMX (`fused::split_mm`): x = xh + xl with xh the bf16 matmul input and
    /// xl = bf16(x - xh), W likewise (`Weight::split`), and x W^T = xh Wh + xh Wl + xl Wh,
    /// three bf16 products accumulated in f32. Error 4.3e-6 relative, against 7.1e-7 for
    /// f32 sgemm and 3.7e-3 for plain bf16, at 3.5x the f32 speed (measured on one
    /// (3200 x 576) x (576 x 192) product). A bf16 report from an AMX machine therefore
    /// differs from one made without AMX in these products' last bits, as the bf16
    /// products' accumulation order already makes them differ.
    Split,
}

/// A normalised block input in the forms its consumers take: `mm` for the matmuls (bf16
/// in `Bf16`, else f32), the f32 values or the low bf16 parts where they were kept
/// (`norm_input`).
pub(crate) struct Normed {
    f32: Option<Tensor>,
    pub(crate) mm: Tensor,
    lo: Option<Tensor>,
}

impl Normed {
    /// The f32 normalised input (kept, or widened from `mm` if it was not asked for).
    pub(crate) fn f32(&self) -> Tensor {
        match &self.f32 {
            Some(f) => f.shallow_clone(),
            None => self.mm.to_kind(Kind::Float),
        }
    }
}

/// RMSNorm of f32 `x` for the linear layers of precision `prec`. In `Bf16` on the CPU
/// outside autograd, one pass writes the bf16 matmul input, and the f32 values or the low
/// parts as `keep` asks; elsewhere the f32 norm and its cast, as `Precision::input` does
/// (and f32 values where split parts were asked for).
pub(crate) fn norm_input(x: &Tensor, w: &Tensor, eps: f64, prec: Precision, keep: Keep) -> Normed {
    if !prec.is_f32() && fused_gain_fits(x, w) && crate::fused::applies_infer(x) {
        if keep == Keep::Split {
            let (hi, lo) = crate::fused::rms_norm_infer_split(x, w, eps);
            return Normed {
                f32: None,
                mm: hi,
                lo: Some(lo),
            };
        }
        if let (f, Some(b)) = crate::fused::rms_norm_infer(x, w, eps, keep == Keep::F32, true) {
            return Normed {
                f32: f,
                mm: b,
                lo: None,
            };
        }
    }
    let f = rms_norm(x, w, eps);
    Normed {
        mm: prec.input(&f),
        f32: Some(f),
        lo: None,
    }
}

/// `x + a` (`fused::residual_add`) and `norm_input` of the sum: one pass over the stream
/// where the fused kernel applies (CPU, outside autograd, a gain it fits), the same bits
/// as the two steps, which run everywhere else.
pub(crate) fn add_norm_input(
    x: &Tensor,
    a: &Tensor,
    w: &Tensor,
    eps: f64,
    prec: Precision,
    keep: Keep,
) -> (Tensor, Normed) {
    let fused = x.size() == a.size()
        && fused_gain_fits(x, w)
        && crate::fused::applies_infer(x)
        && crate::fused::applies_infer(a);
    if fused && keep == Keep::Split && !prec.is_f32() {
        // As `norm_input`'s split parts.
        let (s, hi, lo) = crate::fused::add_rms_norm_infer_split(x, a, w, eps);
        let xn = Normed {
            f32: None,
            mm: hi,
            lo: Some(lo),
        };
        return (s, xn);
    }
    if fused && keep != Keep::Split {
        // As `norm_input`: bf16 matmul input (and f32 values if kept) in `Bf16`, f32 else.
        let bf = !prec.is_f32();
        let (s, f, b) =
            crate::fused::add_rms_norm_infer(x, a, w, eps, !bf || keep == Keep::F32, bf);
        let xn = match (f, b) {
            (f, Some(b)) => Normed {
                f32: f,
                mm: b,
                lo: None,
            },
            (Some(f), None) => Normed {
                mm: prec.input(&f),
                f32: Some(f),
                lo: None,
            },
            (None, None) => unreachable!("add_rms_norm_infer returns the outputs it is asked for"),
        };
        return (s, xn);
    }
    let s = crate::fused::residual_add(x, a);
    let xn = norm_input(&s, w, eps, prec, keep);
    (s, xn)
}

/// RoPE tables for positions 0..max_t: cos, sin of shape (T, Dh/2).
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
    pairing: RopePairing,
}

impl Rope {
    pub(crate) fn new(cfg: &Config, max_t: usize, device: Device) -> Rope {
        let inv = Tensor::from_slice(&cfg.rope_inv_freq()).to_device(device);
        let t = Tensor::arange(max_t as i64, (Kind::Float, device));
        let freqs = t.unsqueeze(1) * inv.unsqueeze(0); // (T, Dh/2)
        Rope {
            cos: freqs.cos(),
            sin: freqs.sin(),
            pairing: cfg.rope_pairing,
        }
    }

    /// Positions the tables cover.
    pub(crate) fn len(&self) -> usize {
        self.cos.size()[0] as usize
    }

    /// x: (B, T, H, Dh) as the projections leave it; returns (B, H, T, Dh). A training
    /// forward on the CPU with half-split pairs takes the fused kernel (crate::fused).
    pub(crate) fn apply_bthd(&self, x: &Tensor) -> Tensor {
        if self.pairing == RopePairing::HalfSplit
            && x.size()[1] <= self.len() as i64
            && crate::fused::applies(x)
        {
            return crate::fused::rope(x, &self.cos, &self.sin).transpose(1, 2);
        }
        self.apply(&x.transpose(1, 2))
    }

    /// x: (B, T, H, Dh) in any kind, as a projection leaves it; returns (B, H, T, Dh) in
    /// `out`, computed in f32. Outside autograd on the CPU (either pairing), one fused
    /// pass that also transposes and casts (crate::fused).
    pub(crate) fn apply_heads(&self, x: &Tensor, out: Kind) -> Tensor {
        if x.dim() == 4 && x.size()[1] <= self.len() as i64 && crate::fused::applies_infer(x) {
            return crate::fused::rope_infer(x, &self.cos, &self.sin, self.pairing, out);
        }
        self.apply_bthd(&x.to_kind(Kind::Float)).to_kind(out)
    }

    /// x: (B, H, T, Dh).
    pub(crate) fn apply(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (t, d) = (s[2], s[3]);
        let cos = self.cos.narrow(0, 0, t);
        let sin = self.sin.narrow(0, 0, t);
        match self.pairing {
            RopePairing::Adjacent => {
                let xp = x.reshape([s[0], s[1], t, d / 2, 2]); // (B, H, T, Dh/2, 2)
                let x0 = xp.select(-1, 0);
                let x1 = xp.select(-1, 1);
                let o0 = &x0 * &cos - &x1 * &sin;
                let o1 = &x0 * &sin + &x1 * &cos;
                Tensor::stack(&[o0, o1], -1).reshape([s[0], s[1], t, d])
            }
            RopePairing::HalfSplit => {
                let x0 = x.narrow(-1, 0, d / 2);
                let x1 = x.narrow(-1, d / 2, d / 2);
                let o0 = &x0 * &cos - &x1 * &sin;
                let o1 = &x0 * &sin + &x1 * &cos;
                Tensor::cat(&[o0, o1], -1)
            }
        }
    }
}

pub struct Attention {
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    head_norm: Option<Tensor>,
    gate: Option<Weight>,
    n_heads: i64,
    n_kv: i64,
    head_dim: i64,
    eps: f64,
}

impl Attention {
    fn new(p: &nn::Path, cfg: &Config) -> Attention {
        let (d, h, kv, dh) = (
            cfg.d_model as i64,
            cfg.n_heads as i64,
            cfg.n_kv_heads as i64,
            cfg.head_dim as i64,
        );
        let w = |name: &str, dims: &[i64], fan_in: i64| linear_weight(p, name, dims, fan_in, cfg);
        let head_norm = match cfg.attn_variant {
            // A constant start draws no random numbers, so the baseline and head-wise
            // models of one seed share every other initial weight.
            AttnVariant::HeadwiseRmsnorm { shared } => {
                let shape: &[i64] = if shared { &[dh] } else { &[h, dh] };
                Some((p / "attn_head_norm").var(
                    "weight",
                    shape,
                    nn::Init::Const(cfg.head_norm_init),
                ))
            }
            _ => None,
        };
        let gate = match cfg.attn_variant {
            AttnVariant::Gated => Some(w("attn_gate", &[h * dh, d], d)),
            _ => None,
        };
        Attention {
            wq: w("attn_q", &[h * dh, d], d),
            wk: w("attn_k", &[kv * dh, d], d),
            wv: w("attn_v", &[kv * dh, d], d),
            wo: w("attn_output", &[d, h * dh], h * dh),
            head_norm,
            gate,
            n_heads: h,
            n_kv: kv,
            head_dim: dh,
            eps: cfg.rms_eps,
        }
    }

    /// xn: the normalised block input (B, T, D). Returns the attention output (B, T, D),
    /// in f32, or bf16 straight from W_O in `Bf16` (the residual add widens it exactly).
    fn forward(
        &self,
        xn: &Normed,
        layer: usize,
        rope: &Rope,
        exec: Exec,
        hooks: &mut Hooks,
    ) -> Tensor {
        let xc = &xn.mm;
        let s = xc.size();
        let (b, t) = (s[0], s[1]);
        let (h, kv, dh) = (self.n_heads, self.n_kv, self.head_dim);
        let rep = h / kv;
        let scale = 1.0 / (dh as f64).sqrt();
        let self_only = hooks.interventions.mask_self_at(layer);
        let explicit = exec.imp == AttnImpl::Explicit
            || !self_only.is_empty()
            || hooks.wants(layer, Site::AttnPattern);
        // Explicit attention runs in f32; fused attention in `attn_kind`.
        let kind = if explicit {
            Kind::Float
        } else {
            exec.prec.attn_kind()
        };
        let q = rope.apply_heads(&exec.prec.mm_native(xc, &self.wq).view([b, t, h, dh]), kind); // (B, H, T, Dh)
        let k = exec
            .prec
            .probed_native(xn, &self.wk, hooks.wants(layer, Site::AttnPattern));
        let k = rope.apply_heads(&k.view([b, t, kv, dh]), kind); // (B, KV, T, Dh)
        let v = exec
            .prec
            .probed_native(xn, &self.wv, hooks.wants(layer, Site::AttnZ))
            .view([b, t, kv, dh])
            .transpose(1, 2)
            .to_kind(kind); // (B, KV, T, Dh)

        let z = if explicit {
            // Group the rep query heads of each KV head so K and V are not repeated:
            // (B, KV, rep*T, Dh) @ (B, KV, Dh, T) -> (B, KV, rep*T, T).
            let qg = q.reshape([b, kv, rep * t, dh]);
            let raw = qg.matmul(&k.transpose(-2, -1)).view([b, h, t, t]); // (B, H, T, T)
            let att = if self_only.is_empty() && crate::fused::applies_reduce(&raw) {
                // Scale, mask and softmax in one pass (crate::fused).
                crate::fused::causal_softmax(&raw, scale)
            } else {
                let mask = causal_mask(t, &self_only, xc.device()); // (T, T), true = blocked
                (raw * scale)
                    .masked_fill(&mask, f64::NEG_INFINITY)
                    .softmax(-1, Kind::Float)
            };
            if hooks.wants(layer, Site::AttnPattern) {
                hooks.observe(layer, Site::AttnPattern, &att);
            }
            att.view([b, kv, rep * t, t])
                .matmul(&v) // (B, KV, rep*T, Dh)
                .view([b, h, t, dh])
        } else if crate::fused::attention_applies(&q, &k, &v) {
            // On the CPU in f32 without grouped KV heads (q and k of one shape), one pass
            // per head (crate::fused): libtorch's flash attention is dominated by sgemm
            // calls at the subjects' head dims.
            crate::fused::causal_attention(&q, &k, &v, scale)
        } else {
            Tensor::scaled_dot_product_attention::<Tensor>(
                &q,
                &k,
                &v,
                None,
                0.0,
                true,
                scale,
                rep > 1,
            )
        };
        // Contiguous once here: W_O's reshape below is then a view, and probes of
        // `attn_z` reshape it without another copy. Still in the attention's kind: the
        // interventions and variants below, and probes, take it in f32.
        let z = z.transpose(1, 2).contiguous(); // (B, T, H, Dh)
        let disabled = hooks.interventions.disable_head_norm;
        let variant = !disabled && (self.head_norm.is_some() || self.gate.is_some());
        let z = if variant || !hooks.interventions.amplify.is_empty() {
            z.to_kind(Kind::Float)
        } else {
            z
        };
        let z = if hooks.interventions.amplify.is_empty() {
            z
        } else {
            hooks.interventions.amplify_z(layer, z.contiguous())
        };
        if hooks.wants(layer, Site::AttnZ) {
            hooks.observe(layer, Site::AttnZ, &z.to_kind(Kind::Float));
        }
        let z = match (&self.head_norm, &self.gate) {
            (Some(g), _) if !disabled => {
                // Head-wise RMSNorm over each head's Dh channels (paper, claim 5).
                rms_norm(&z, g, self.eps)
            }
            (_, Some(wg)) if !disabled => {
                let gate = exec.prec.mm(xc, wg).view([b, t, h, dh]).sigmoid();
                z * gate
            }
            _ => z,
        };
        let zc = exec.prec.input(&z.reshape([b, t, h * dh]));
        let out = exec.prec.mm_native(&zc, &self.wo);
        if hooks.wants(layer, Site::AttnOut) {
            hooks.observe(layer, Site::AttnOut, &out.to_kind(Kind::Float));
        }
        out
    }
}

/// (T, T) boolean mask, true where attention is blocked: the causal mask, plus every key
/// other than itself for the `self_only` query rows.
pub(crate) fn causal_mask(t: i64, self_only: &[usize], device: Device) -> Tensor {
    let mask = Tensor::ones([t, t], (Kind::Bool, device)).triu(1);
    if self_only.is_empty() {
        return mask;
    }
    let rows: Vec<i64> = self_only
        .iter()
        .map(|&k| k as i64)
        .filter(|&k| k < t)
        .collect();
    let m = mask;
    for k in rows {
        let mut row = m.select(0, k);
        let _ = row.fill_(1);
        let mut diag = row.narrow(0, k, 1);
        let _ = diag.fill_(0);
    }
    m
}

pub struct Mlp {
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
}

impl Mlp {
    fn new(p: &nn::Path, cfg: &Config) -> Mlp {
        let (d, f) = (cfg.d_model as i64, cfg.d_ff as i64);
        let w = |name: &str, dims: &[i64], fan_in: i64| linear_weight(p, name, dims, fan_in, cfg);
        Mlp {
            w_gate: w("ffn_gate", &[f, d], d),
            w_up: w("ffn_up", &[f, d], d),
            w_down: w("ffn_down", &[d, f], f),
        }
    }

    /// SwiGLU: W_down (silu(x W_gate) * (x W_up)), for the normalised input `xn`. Returns
    /// f32, or bf16 straight from W_down in `Bf16` (the residual add widens it exactly).
    fn forward(&self, xn: &Normed, layer: usize, prec: Precision, hooks: &mut Hooks) -> Tensor {
        let xc = &xn.mm;
        let a = prec.mm_native(xc, &self.w_gate);
        let u = prec.mm_native(xc, &self.w_up);
        let ablate = !hooks.interventions.ablate.is_empty();
        let post = hooks.wants(layer, Site::MlpPost);
        // silu(a) * u in f32, one fused pass on the CPU: an autograd function in a
        // training forward; in inference a kernel that reads the products in their kind
        // and writes the down projection's bf16 input directly (and f32 for probes).
        let (h, hc) = if crate::fused::applies(&a) && a.size() == u.size() {
            (Some(crate::fused::swiglu(&a, &u)), None)
        } else if crate::fused::applies_infer(&a)
            && crate::fused::applies_infer(&u)
            && a.size() == u.size()
            && a.kind() == u.kind()
        {
            let bf = !prec.is_f32() && !ablate;
            crate::fused::swiglu_infer(&a, &u, !bf || post, bf)
        } else {
            (
                Some(a.to_kind(Kind::Float).silu() * u.to_kind(Kind::Float)),
                None,
            )
        }; // (B, T, F)
        let h = match h {
            Some(h) if ablate => Some(hooks.interventions.ablate_mlp(layer, h)),
            h => h,
        };
        if let (true, Some(h)) = (post, &h) {
            hooks.observe(layer, Site::MlpPost, h);
        }
        let hc = match (hc, h) {
            (Some(hc), _) => hc,
            (None, Some(h)) => prec.input(&h),
            // (swiglu_infer returns at least one of the two)
            (None, None) => prec.input(&(a.to_kind(Kind::Float).silu() * u.to_kind(Kind::Float))),
        };
        let out = prec.mm_native(&hc, &self.w_down);
        if hooks.wants(layer, Site::MlpOut) {
            hooks.observe(layer, Site::MlpOut, &out.to_kind(Kind::Float));
        }
        out
    }

    /// The down-projection weight (D, F): column c is what FFN channel c writes.
    pub fn down_proj(&self) -> &Tensor {
        &self.w_down.w
    }
    pub fn gate_proj(&self) -> &Tensor {
        &self.w_gate.w
    }
    pub fn up_proj(&self) -> &Tensor {
        &self.w_up.w
    }
}

pub struct Block {
    attn_norm: Tensor,
    pub attn: Attention,
    ffn_norm: Tensor,
    pub mlp: Mlp,
    eps: f64,
}

impl Block {
    fn new(p: nn::Path, cfg: &Config) -> Block {
        Block {
            attn_norm: (&p / "attn_norm").ones("weight", &[cfg.d_model as i64]),
            attn: Attention::new(&p, cfg),
            ffn_norm: (&p / "ffn_norm").ones("weight", &[cfg.d_model as i64]),
            mlp: Mlp::new(&p, cfg),
            eps: cfg.rms_eps,
        }
    }

    /// What the attention input's norm keeps besides the matmul input: the f32 values, or
    /// their low bf16 parts, where the f32 key or value path of a probe wants them
    /// (`Precision::probed`, `Keep`).
    fn keep(&self, layer: usize, exec: Exec, hooks: &Hooks) -> Keep {
        let probed_k = hooks.wants(layer, Site::AttnPattern);
        let probed_v = hooks.wants(layer, Site::AttnZ);
        if !(probed_k || probed_v) {
            Keep::Nothing
        } else if !exec.prec.is_f32()
            && (!probed_k || self.attn.wk.split().is_some())
            && (!probed_v || self.attn.wv.split().is_some())
        {
            Keep::Split
        } else {
            Keep::F32
        }
    }

    /// The block's input from the stream `x` entering it: `x` itself and its normalised
    /// form for the attention.
    fn enter(&self, x: Tensor, layer: usize, exec: Exec, hooks: &Hooks) -> (Tensor, Normed) {
        let keep = self.keep(layer, exec, hooks);
        let xn = norm_input(&x, &self.attn_norm, self.eps, exec.prec, keep);
        (x, xn)
    }

    /// As `enter`, for the stream `mid + m` the previous block leaves (`forward`): the
    /// residual add and this block's input norm in one pass (`add_norm_input`).
    fn enter_sum(
        &self,
        mid: &Tensor,
        m: &Tensor,
        layer: usize,
        exec: Exec,
        hooks: &Hooks,
    ) -> (Tensor, Normed) {
        let keep = self.keep(layer, exec, hooks);
        add_norm_input(mid, m, &self.attn_norm, self.eps, exec.prec, keep)
    }

    /// Runs the block on the stream `x` entering it and its normalised form `xn`
    /// (`enter`). Returns the stream after the attention, `mid`, and the MLP's output
    /// `m`: the block's output is `mid + m`, which the caller adds in one pass with the
    /// next norm (`enter_sum`, `add_norm_input`) and hands to the `ResidPost` hook.
    fn forward(
        &self,
        x: &Tensor,
        xn: Normed,
        layer: usize,
        rope: &Rope,
        exec: Exec,
        hooks: &mut Hooks,
    ) -> (Tensor, Tensor) {
        if hooks.wants(layer, Site::ResidPre) {
            hooks.observe(layer, Site::ResidPre, x);
        }
        let a = self.attn.forward(&xn, layer, rope, exec, hooks);
        drop(xn);
        let (mid, xn) = add_norm_input(x, &a, &self.ffn_norm, self.eps, exec.prec, Keep::Nothing);
        if hooks.wants(layer, Site::ResidMid) {
            hooks.observe(layer, Site::ResidMid, &mid);
        }
        let m = self.mlp.forward(&xn, layer, exec.prec, hooks);
        (mid, m)
    }
}

pub struct Model {
    pub config: Config,
    pub vs: nn::VarStore,
    /// The token embedding; also the output projection when the embeddings are tied.
    tok_embd: Weight,
    pub blocks: Vec<Block>,
    out_norm: Tensor,
    output: Option<Weight>,
    rope: Rope,
    pub attn_impl: AttnImpl,
    /// Matmul precision; change it with `set_precision`.
    precision: Precision,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish()
    }
}

impl Model {
    /// A randomly initialised model whose weights depend on `seed` alone, whatever the
    /// device: drawn on the CPU from libtorch's generator seeded with `seed`
    /// ([`crate::with_seed`]), then copied to `device`. (Drawing on a CUDA device would
    /// use CUDA's own generator: other weights for the same seed, which moved the
    /// random-init metrics of claim 1 on the first CUDA run.)
    pub fn seeded(cfg: &Config, seed: i64, device: Device) -> Result<Model, ModelError> {
        let cpu = crate::with_seed(seed, || Model::new(cfg, Device::Cpu))?;
        if device == Device::Cpu {
            return Ok(cpu);
        }
        let mut zero = cfg.clone();
        zero.zero_init = true;
        let mut m = Model::new(&zero, device)?;
        m.config.zero_init = cfg.zero_init;
        let src = cpu.vs.variables();
        for (name, mut var) in m.vs.variables() {
            tch::no_grad(|| var.f_copy_(&src[&name]))?;
        }
        Ok(m)
    }

    /// A randomly initialised model drawn on `device` from libtorch's global generator
    /// (seed it first, or use [`Model::seeded`], which gives the same weights on every device).
    pub fn new(cfg: &Config, device: Device) -> Result<Model, ModelError> {
        cfg.validate()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (v, d) = (cfg.vocab_size as i64, cfg.d_model as i64);
        let emb_init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let tok_embd = weight_var(&(&root / "token_embd"), &[v, d], emb_init, cfg);
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::new(&root / "blk" / i, cfg))
            .collect();
        let out_norm = (&root / "output_norm").ones("weight", &[d]);
        let output =
            (!cfg.tied_embeddings).then(|| weight_var(&(&root / "output"), &[v, d], emb_init, cfg));
        let rope = Rope::new(cfg, cfg.max_seq_len, device);
        Ok(Model {
            config: cfg.clone(),
            vs,
            tok_embd: Weight::new(tok_embd),
            blocks,
            out_norm,
            output: output.map(Weight::new),
            rope,
            attn_impl: AttnImpl::Explicit,
            precision: Precision::F32,
        })
    }

    /// Loads a LLaMA-family GGUF: config from metadata, every weight de-quantised to f32.
    pub fn from_gguf(file: &GgufFile, device: Device) -> Result<Model, ModelError> {
        let mut cfg = Config::from_gguf(file)?;
        // Build with zero placeholders, then replace each variable's data.
        cfg.zero_init = true;
        let mut model = Model::new(&cfg, device)?;
        model.load_weights(file)?;
        model.config.zero_init = false;
        Ok(model)
    }

    /// Replaces every variable's data with the GGUF tensor of the same name.
    pub fn load_weights(&self, file: &GgufFile) -> Result<(), ModelError> {
        load_vars(&self.vs, file)
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Runs the decoder on token ids (B, T) and returns the final normalised hidden states
    /// (B, T, D) for every position (probes need all of them). `logits` maps them to the
    /// vocabulary.
    pub fn forward(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor, ModelError> {
        let t = tokens.size().get(1).copied().unwrap_or(0) as usize;
        if tokens.dim() != 2 || t == 0 {
            return Err(ModelError::BadInput(format!(
                "tokens must be (batch, time) with time > 0, got {:?}",
                tokens.size()
            )));
        }
        if t > self.config.max_seq_len {
            return Err(ModelError::BadInput(format!(
                "sequence of {t} tokens exceeds the model's context of {}",
                self.config.max_seq_len
            )));
        }
        let mut x = Tensor::embedding(&self.tok_embd.w, tokens, -1, false, false); // (B, T, D)
        let exec = Exec {
            imp: self.attn_impl,
            prec: hooks.precision.unwrap_or(self.precision),
        };
        // Each block leaves its output as `mid + m`; the add runs fused with the norm that
        // reads it (the next block's input norm, or the output norm).
        let mut pending: Option<Tensor> = None;
        for (i, block) in self.blocks.iter().enumerate() {
            let (xi, xn) = match pending.take() {
                None => block.enter(x, i, exec, hooks),
                Some(m) => {
                    let (xi, xn) = block.enter_sum(&x, &m, i, exec, hooks);
                    if hooks.wants(i - 1, Site::ResidPost) {
                        hooks.observe(i - 1, Site::ResidPost, &xi);
                    }
                    (xi, xn)
                }
            };
            let (mid, m) = block.forward(&xi, xn, i, &self.rope, exec, hooks);
            x = mid;
            pending = Some(m);
        }
        let eps = self.config.rms_eps;
        let Some(m) = pending else {
            return Ok(rms_norm(&x, &self.out_norm, eps));
        };
        let (out, y) = add_norm_input(&x, &m, &self.out_norm, eps, Precision::F32, Keep::Nothing);
        let last = self.blocks.len() - 1;
        if hooks.wants(last, Site::ResidPost) {
            hooks.observe(last, Site::ResidPost, &out);
        }
        Ok(y.mm)
    }

    /// Output logits (…, V) from final hidden states (…, D).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        self.precision
            .linear(hidden, self.output.as_ref().unwrap_or(&self.tok_embd))
    }

    /// Mean next-token cross-entropy of `tokens` (B, T) predicting `targets` (B, T).
    pub fn loss(
        &self,
        tokens: &Tensor,
        targets: &Tensor,
        hooks: &mut Hooks,
    ) -> Result<Tensor, ModelError> {
        let h = self.forward(tokens, hooks)?;
        let logits = self.logits(&h);
        let v = logits.size()[2];
        Ok(logits
            .view([-1, v])
            .cross_entropy_for_logits(&targets.reshape([-1])))
    }

    pub fn token_embedding(&self) -> &Tensor {
        &self.tok_embd.w
    }

    /// Sets the matmul precision. For `Bf16` on a model used only for inference, also
    /// keeps a bf16 snapshot of every linear weight (`snapshot`: true), so forward
    /// passes skip the per-call cast; the snapshot is of the weights *now*: set the
    /// precision again after changing them. Switching to `F32` (or `snapshot` false)
    /// drops the snapshots.
    pub fn set_precision(&mut self, p: Precision, snapshot: bool) {
        self.precision = p;
        let on = snapshot && p == Precision::Bf16;
        tch::no_grad(|| {
            self.tok_embd.snapshot(on);
            if let Some(o) = self.output.as_mut() {
                o.snapshot(on);
            }
            for b in &mut self.blocks {
                let a = &mut b.attn;
                for w in [&mut a.wq, &mut a.wk, &mut a.wv, &mut a.wo] {
                    w.snapshot(on);
                }
                if let Some(g) = a.gate.as_mut() {
                    g.snapshot(on);
                }
                let m = &mut b.mlp;
                for w in [&mut m.w_gate, &mut m.w_up, &mut m.w_down] {
                    w.snapshot(on);
                }
            }
        });
    }
}

/// Replaces the data of every variable of `vs` with the GGUF tensor of the same name,
/// de-quantised in parallel; each is checked against the variable's shape first. On the
/// CPU the tensors are de-quantised straight into the variables' memory (one pass, no
/// staging copy: at load time the page faults of every extra copy cost more than the
/// de-quantisation itself); elsewhere through an f32 buffer copied to the device.
pub(crate) fn load_vars(vs: &nn::VarStore, file: &GgufFile) -> Result<(), ModelError> {
    use rayon::prelude::*;
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    // Every tensor checked first (shape, type, bytes), so a wrong file changes nothing.
    for name in &names {
        let info = file.tensor_info(name)?;
        let want: Vec<usize> = vars[*name].size().iter().map(|&x| x as usize).collect();
        if info.shape != want {
            return Err(ModelError::ShapeMismatch {
                name: (*name).clone(),
                expected: want,
                found: info.shape.clone(),
            });
        }
        file.check_tensor_f32(name)?;
    }
    // Each variable's memory as (name, address, length), alive for this whole function
    // (`vars` holds the tensors).
    let targets: Vec<(&String, usize, usize)> = names
        .iter()
        .map(|n| {
            let t = &vars[*n];
            (*n, t.data_ptr() as usize, t.numel())
        })
        .collect();
    let mut spans: Vec<(usize, usize)> = targets.iter().map(|&(_, a, n)| (a, a + 4 * n)).collect();
    spans.sort_unstable();
    let disjoint = spans.windows(2).all(|w| w[0].1 <= w[1].0);
    let in_place = disjoint
        && vars
            .values()
            .all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous());
    if in_place {
        let done: Vec<Result<(), sinkrep_gguf::GgufError>> = targets
            .par_iter()
            .map(|&(name, addr, len)| {
                // SAFETY: `addr` is the start of a contiguous f32 CPU tensor of `len`
                // elements that outlives this call, and the spans are disjoint (checked
                // above), so no other task or reference touches these elements.
                #[allow(unsafe_code)]
                let out = unsafe { std::slice::from_raw_parts_mut(addr as *mut f32, len) };
                file.tensor_f32_into(name, out)
            })
            .collect();
        // Checked above, so none fails; if one did, the first in name order is reported.
        return done
            .into_iter()
            .collect::<Result<(), _>>()
            .map_err(ModelError::from);
    }
    let loaded: Vec<Result<(String, Vec<f32>), ModelError>> = names
        .par_iter()
        .map(|name| Ok(((*name).clone(), file.tensor_f32(name)?)))
        .collect();
    tch::no_grad(|| {
        for r in loaded {
            let (name, data) = r?;
            let mut var = vars[&name].shallow_clone();
            let t = Tensor::from_slice(&data)
                .reshape(var.size())
                .to_device(var.device());
            var.set_data(&t);
        }
        Ok(())
    })
}

impl crate::Decoder for Model {
    fn family(&self) -> &'static str {
        "llama"
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn device(&self) -> Device {
        Model::device(self)
    }
    fn precision(&self) -> Precision {
        self.precision
    }
    fn set_precision(&mut self, p: Precision, snapshot: bool) {
        Model::set_precision(self, p, snapshot)
    }
    fn forward(&self, tokens: &Tensor, hooks: &mut Hooks) -> Result<Tensor, ModelError> {
        Model::forward(self, tokens, hooks)
    }
    fn logits(&self, hidden: &Tensor) -> Tensor {
        Model::logits(self, hidden)
    }
    fn down_proj(&self, layer: usize) -> &Tensor {
        self.blocks[layer].mlp.down_proj()
    }
    fn site_notes(&self) -> Vec<String> {
        Vec::new()
    }
    fn attn_impl(&self) -> AttnImpl {
        self.attn_impl
    }
}
