//! The instrumented model: GGUF round trip, determinism, interventions, the real model.

use sinkrep_analysis::{Moments, SinkProbe};
use sinkrep_gguf::{GgmlType, GgufWriter};
use sinkrep_model::{
    Ablate, AblateKind, Amplify, AmplifyMode, Capture, CenterMean, Config, GgufFile, Hooks,
    Interventions, Layers, MaskSelf, Model, Precision, RopePairing, RopeScaling, Site,
};
use tch::{Device, Kind, Tensor};

pub(crate) fn tiny_config() -> Config {
    Config {
        vocab_size: 61,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        d_ff: 48,
        rms_eps: 1e-5,
        rope_base: 10_000.0,
        rope_pairing: RopePairing::Adjacent,
        rope_scaling: RopeScaling::None,
        tied_embeddings: true,
        max_seq_len: 64,
        attn_variant: sinkrep_model::AttnVariant::Baseline,
        head_norm_init: 1.0,
        zero_init: false,
    }
}

fn tiny_model(seed: i64) -> Model {
    sinkrep_model::with_seed(seed, || Model::new(&tiny_config(), Device::Cpu).unwrap())
}

pub(crate) fn tokens(b: i64, t: i64) -> Tensor {
    let ids: Vec<i64> = (0..b * t).map(|i| (i * 7 + 3) % 61).collect();
    Tensor::from_slice(&ids).reshape([b, t])
}

pub(crate) fn run(model: &Model, x: &Tensor, hooks: &mut Hooks) -> Tensor {
    tch::no_grad(|| model.forward(x, hooks)).unwrap()
}

/// Same seed, same weights, same outputs, bit for bit.
#[test]
fn seeded_model_is_deterministic() {
    let x = tokens(2, 10);
    let a = run(&tiny_model(7), &x, &mut Hooks::new());
    let b = run(&tiny_model(7), &x, &mut Hooks::new());
    assert!(a.equal(&b));
    let c = run(&tiny_model(8), &x, &mut Hooks::new());
    assert!(!a.equal(&c));
}

/// `Model::seeded` draws on the CPU whatever the device: on the CPU it is the seeded
/// `Model::new`, weight for weight, and a seed decides every weight. (That the CUDA copy
/// holds the same weights is checked on a GPU by scripts/device/gpu-check.sh: the smoke
/// verify of claim 1's random-init models, which drifted when they were drawn on CUDA.)
#[test]
fn seeded_model_draws_on_the_cpu_whatever_the_device() {
    let cfg = tiny_config();
    let a = Model::seeded(&cfg, 7, Device::Cpu).unwrap();
    let b = tiny_model(7);
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    assert_eq!(va.len(), vb.len());
    for (name, t) in &va {
        assert!(
            t.equal(&vb[name]),
            "{name} differs from the seeded Model::new"
        );
    }
    let c = Model::seeded(&cfg, 8, Device::Cpu).unwrap();
    assert!(!va["token_embd.weight"].equal(&c.vs.variables()["token_embd.weight"]));
}

/// Every site of every layer is observed, in f32 and in bf16, with the residual stream's
/// identities (each block's adds run fused with the next norm: `add_norm_input`):
/// resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out bit for bit, each
/// layer's resid_post is the next one's resid_pre, and the output is the last resid_post
/// through the output norm. Watching everything leaves the f32 output's bits alone.
#[test]
fn every_site_is_observed_and_the_residual_stream_adds_up() {
    let mut m = tiny_model(3);
    let x = tokens(2, 9);
    for prec in [Precision::F32, Precision::Bf16] {
        m.set_precision(prec, true);
        let plain = run(&m, &x, &mut Hooks::new());
        let mut cap = Capture::new((0..2).flat_map(|l| Site::ALL.map(|s| (l, s))));
        let out = run(&m, &x, &mut Hooks::new().probe(&mut cap));
        if prec == Precision::F32 {
            assert!(plain.equal(&out), "probes changed the f32 output");
        }
        for l in 0..2 {
            let get = |s: Site| {
                cap.get(l, s)
                    .unwrap_or_else(|| panic!("{prec:?}: layer {l} site {} not observed", s.name()))
                    .shallow_clone()
            };
            let (pre, mid, post) = (
                get(Site::ResidPre),
                get(Site::ResidMid),
                get(Site::ResidPost),
            );
            assert!(
                mid.equal(&(&pre + get(Site::AttnOut))),
                "{prec:?} layer {l}: resid_mid"
            );
            assert!(
                post.equal(&(&mid + get(Site::MlpOut))),
                "{prec:?} layer {l}: resid_post"
            );
            if l == 0 {
                assert!(
                    post.equal(cap.get(1, Site::ResidPre).unwrap()),
                    "{prec:?}: post 0 != pre 1"
                );
            }
        }
        // The output norm's gain is 1 in a fresh model: x / rms(x).
        let last = cap.get(1, Site::ResidPost).unwrap();
        let want =
            last * (last.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float) + 1e-5).rsqrt();
        let err = (&out - &want).abs().max().double_value(&[]);
        assert!(
            err < 1e-5,
            "{prec:?}: output vs norm of the last resid_post: {err}"
        );
    }
}

/// Probes watch without touching, and empty interventions are the plain forward.
#[test]
fn interventions_off_is_bit_identical() {
    let m = tiny_model(1);
    let x = tokens(3, 12);
    let plain = run(&m, &x, &mut Hooks::new());
    let mut probe = SinkProbe::new(2, 0);
    let mut cap = Capture::new([(0, Site::AttnZ), (1, Site::MlpPost)]);
    let mut hooks = Hooks::new()
        .probe(&mut probe)
        .probe(&mut cap)
        .with(Interventions::default());
    let probed = run(&m, &x, &mut hooks);
    assert!(plain.equal(&probed));
    // An amplification by 1 in plain mode is also the identity.
    let iv = Interventions {
        amplify: vec![Amplify {
            positions: vec![3],
            layers: Layers::All,
            lambda: 1.0,
            mode: AmplifyMode::Plain,
        }],
        ..Default::default()
    };
    let same = run(&m, &x, &mut Hooks::new().with(iv));
    assert!(plain.equal(&same));
}

/// Mask-to-self at k in layer 0: row k of every head becomes one-hot at k, and every
/// other row of layer 0's pattern is unchanged.
#[test]
fn mask_to_self_changes_exactly_row_k() {
    let m = tiny_model(2);
    let x = tokens(2, 9);
    let k = 4;
    let mut before = Capture::new([(0, Site::AttnPattern)]);
    let _ = run(&m, &x, &mut Hooks::new().probe(&mut before));
    let iv = Interventions {
        mask_self: vec![MaskSelf {
            positions: vec![k],
            layers: Layers::Only(vec![0]),
        }],
        ..Default::default()
    };
    let mut after = Capture::new([(0, Site::AttnPattern)]);
    let _ = run(&m, &x, &mut Hooks::new().probe(&mut after).with(iv));
    let (a, b) = (
        before.get(0, Site::AttnPattern).unwrap(),
        after.get(0, Site::AttnPattern).unwrap(),
    ); // (B, H, T, T)
    let k = k as i64;
    for row in 0..9 {
        let ra = a.select(2, row);
        let rb = b.select(2, row);
        if row == k {
            let onehot = Tensor::zeros([9], (Kind::Float, Device::Cpu)).index_fill(
                0,
                &Tensor::from_slice(&[k]),
                1.0,
            );
            assert!(
                rb.equal(&onehot.expand_as(&rb)),
                "row k is not one-hot at k"
            );
            assert!(!ra.equal(&rb));
        } else {
            assert!(ra.equal(&rb), "row {row} changed");
        }
    }
}

/// Centred amplification moves o_k away from the mean by lambda; plain scales it.
#[test]
fn amplification_modes_do_what_they_say() {
    let m = tiny_model(3);
    let x = tokens(2, 8);
    let k = 5usize;
    let z_of = |iv: Interventions| {
        let mut cap = Capture::new([(1, Site::AttnZ)]);
        let _ = run(&m, &x, &mut Hooks::new().probe(&mut cap).with(iv));
        cap.get(1, Site::AttnZ).unwrap().shallow_clone() // (B, T, H, Dh)
    };
    let amp = |mode| Interventions {
        amplify: vec![Amplify {
            positions: vec![k],
            layers: Layers::Only(vec![1]),
            lambda: 3.0,
            mode,
        }],
        ..Default::default()
    };
    let z0 = z_of(Interventions::default());
    let zp = z_of(amp(AmplifyMode::Plain));
    let zk = z0.select(1, k as i64);
    assert!(zp
        .select(1, k as i64)
        .allclose(&(&zk * 3.0), 1e-6, 1e-6, false));
    // Other positions untouched.
    assert!(zp.select(1, 2).equal(&z0.select(1, 2)));
    let zc = z_of(amp(AmplifyMode::Centered(CenterMean::Positions)));
    let mu = z0.mean_dim(1, false, Kind::Float);
    let want = &mu + (&zk - &mu) * 3.0;
    assert!(zc.select(1, k as i64).allclose(&want, 1e-5, 1e-5, false));
}

/// Zero-ablation sets the channel to 0 at the position and nowhere else.
#[test]
fn zero_ablation_hits_only_its_cell() {
    let m = tiny_model(4);
    let x = tokens(2, 6);
    let iv = Interventions {
        ablate: vec![Ablate {
            layer: 1,
            channels: vec![7],
            positions: vec![0],
            kind: AblateKind::Zero,
        }],
        ..Default::default()
    };
    let mut before = Capture::new([(1, Site::MlpPost)]);
    let _ = run(&m, &x, &mut Hooks::new().probe(&mut before));
    let mut after = Capture::new([(1, Site::MlpPost)]);
    let _ = run(&m, &x, &mut Hooks::new().probe(&mut after).with(iv));
    let (a, b) = (
        before.get(1, Site::MlpPost).unwrap(),
        after.get(1, Site::MlpPost).unwrap(),
    );
    assert_eq!(b.double_value(&[0, 0, 7]), 0.0);
    assert_eq!(b.double_value(&[1, 0, 7]), 0.0);
    assert!(a.double_value(&[0, 0, 7]) != 0.0);
    let diff = (a - b).abs().gt(0.0).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(
        diff, 2,
        "exactly the two (sequence, pos 0, channel 7) cells change"
    );
}

/// A model written to GGUF (all f32) and read back gives the same outputs: the loader,
/// the config from metadata and the weight-name table agree with the model.
#[test]
fn gguf_round_trip_of_a_model() {
    let m = tiny_model(5);
    let cfg = tiny_config();
    let file = tiny_gguf(&m, |_| {});
    let back = Model::from_gguf(&file, Device::Cpu).unwrap();
    assert_eq!(back.config, cfg);
    let x = tokens(2, 7);
    assert!(run(&m, &x, &mut Hooks::new()).equal(&run(&back, &x, &mut Hooks::new())));
}

/// `m` (of `tiny_config`) as an all-f32 GGUF, with `extra` metadata or tensors.
fn tiny_gguf(m: &Model, extra: impl FnOnce(&mut GgufWriter)) -> GgufFile {
    tiny_gguf_with(m, "", extra)
}

/// `tiny_gguf` without the weight named `skip` (for `extra` to add in its own form).
fn tiny_gguf_with(m: &Model, skip: &str, extra: impl FnOnce(&mut GgufWriter)) -> GgufFile {
    let cfg = tiny_config();
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama")
        .add_metadata("llama.embedding_length", cfg.d_model as u32)
        .add_metadata("llama.block_count", cfg.n_layers as u32)
        .add_metadata("llama.attention.head_count", cfg.n_heads as u32)
        .add_metadata("llama.attention.head_count_kv", cfg.n_kv_heads as u32)
        .add_metadata("llama.feed_forward_length", cfg.d_ff as u32)
        .add_metadata("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
        .add_metadata("llama.rope.freq_base", 10_000f32)
        .add_metadata("llama.context_length", 64u32);
    let vars = m.vs.variables();
    let mut names: Vec<_> = vars.keys().cloned().collect();
    names.sort();
    for n in names.iter().filter(|n| n.as_str() != skip) {
        let t = &vars[n];
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let data: Vec<f32> = Vec::try_from(&t.flatten(0, -1)).unwrap();
        w.add_tensor_f32(n, &shape, GgmlType::F32, &data).unwrap();
    }
    extra(&mut w);
    GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
}

/// GGUF RoPE scaling is refused, naming what the file says, rather than ignored: sinkrep
/// reads RoPE scaling only from HF folders. "none" (or a factor of 1) is no scaling.
#[test]
fn gguf_rope_scaling_is_refused() {
    let m = tiny_model(6);
    type Extra = Box<dyn Fn(&mut GgufWriter)>;
    let cases: Vec<(Extra, &str)> = vec![
        (
            Box::new(|w| {
                w.add_metadata("llama.rope.scaling.type", "yarn");
            }),
            "yarn",
        ),
        (
            Box::new(|w| {
                w.add_metadata("llama.rope.scaling.type", "linear")
                    .add_metadata("llama.rope.scaling.factor", 4f32);
            }),
            "linear",
        ),
        (
            Box::new(|w| {
                w.add_metadata("llama.rope.scale_linear", 2f32);
            }),
            "llama.rope.scale_linear = 2",
        ),
        (
            Box::new(|w| {
                w.add_tensor_f32("rope_freqs.weight", &[4], GgmlType::F32, &[1.0; 4])
                    .unwrap();
            }),
            "rope_freqs.weight",
        ),
    ];
    for (extra, needle) in cases {
        let file = tiny_gguf(&m, extra);
        let err = Model::from_gguf(&file, Device::Cpu)
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains(needle) && err.contains("RoPE scaling"),
            "{needle}: {err}"
        );
    }
    let file = tiny_gguf(&m, |w| {
        w.add_metadata("llama.rope.scaling.type", "none")
            .add_metadata("llama.rope.scaling.factor", 1f32);
    });
    let back = Model::from_gguf(&file, Device::Cpu).unwrap();
    assert_eq!(back.config.rope_scaling, RopeScaling::None);
}

/// A GGUF whose weights cannot all be de-quantised (here the embedding in Q5_1, a
/// known layout sinkrep does not decode) is refused naming the tensor, and loading it
/// into a model changes none of its weights: every tensor is checked before any is
/// written (the loader de-quantises straight into the variables' memory).
#[test]
fn gguf_undecodable_tensor_changes_nothing() {
    let a = tiny_model(5);
    let b = tiny_model(6);
    let file = tiny_gguf_with(&a, "token_embd.weight", |w| {
        // 61 * 32 values = 61 blocks of 32, 24 bytes each.
        w.add_tensor_raw(
            "token_embd.weight",
            &[61, 32],
            GgmlType::Q5_1,
            vec![0u8; 61 * 24],
        )
        .unwrap();
    });
    let x = tokens(2, 7);
    let before = run(&b, &x, &mut Hooks::new());
    let err = b.load_weights(&file).unwrap_err().to_string();
    assert!(
        err.contains("token_embd.weight") && err.contains("Q5_1"),
        "{err}"
    );
    assert!(
        before.equal(&run(&b, &x, &mut Hooks::new())),
        "a refused file changed weights"
    );
    // The same file with the embedding in f32 loads, and gives model a's outputs.
    b.load_weights(&tiny_gguf(&a, |_| {})).unwrap();
    assert!(run(&a, &x, &mut Hooks::new()).equal(&run(&b, &x, &mut Hooks::new())));
}

/// A GGUF missing a weight is a clear error naming the tensor.
#[test]
fn gguf_missing_tensor_is_named() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama")
        .add_metadata("llama.embedding_length", 32u32)
        .add_metadata("llama.block_count", 1u32)
        .add_metadata("llama.attention.head_count", 4u32)
        .add_metadata("llama.feed_forward_length", 48u32);
    w.add_tensor_f32(
        "token_embd.weight",
        &[61, 32],
        GgmlType::F32,
        &[0.0; 61 * 32],
    )
    .unwrap();
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let err = Model::from_gguf(&file, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("blk.0."), "{err}");
}

/// SmolLM2: " Paris" after "The capital of France is", logits equal to those of an
/// independent implementation (HF transformers, scripts/peers), and deterministic.
#[test]
fn smollm2_says_paris() {
    let Some(path) = crate::pinned_model() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let model = Model::from_gguf(&file, Device::Cpu).unwrap();
    let tok = sinkrep_model::GgufTokenizer::from_gguf(&file).unwrap();
    let ids: Vec<i64> = tok
        .encode("The capital of France is")
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(ids, vec![504, 3575, 282, 4649, 314]);
    let x = Tensor::from_slice(&ids).unsqueeze(0);
    let h = run(&model, &x, &mut Hooks::new());
    let logits = model.logits(&h.select(1, 4)).squeeze();
    let top = logits.argmax(-1, false).int64_value(&[]);
    assert_eq!(tok.token_text(top as u32).unwrap(), " Paris");
    let h2 = run(&model, &x, &mut Hooks::new());
    assert!(h.equal(&h2), "forward is not deterministic");
    // HF transformers 5.24.0 on the same GGUF (de-quantised to f32, eager attention;
    // scripts/peers/hf_sink_report.py), measured on 2026-11-29. Our max |diff| was 2.2e-5.
    let hf: [(i64, f64); 4] = [
        (7042, 17.371265),
        (0, 1.6136417),
        (1, -11.871868),
        (6, -3.9414926),
    ];
    for (id, want) in hf {
        let got = logits.double_value(&[id]);
        assert!((got - want).abs() < 1e-3, "logit {id}: {got} vs {want}");
    }
}

/// bf16 matmuls stay close to f32 (a few bf16 ulps), the inference snapshot of the
/// weights changes nothing but speed, and switching back to f32 restores the exact
/// f32 forward: guards `Precision` and `Model::set_precision`.
#[test]
fn bf16_precision_is_close_and_snapshot_is_transparent() {
    let mut m = tiny_model(3);
    let x = tokens(2, 16);
    let f32_out = run(&m, &x, &mut Hooks::new());
    m.set_precision(Precision::Bf16, false);
    let cast_each_call = run(&m, &x, &mut Hooks::new());
    m.set_precision(Precision::Bf16, true);
    let snapshot = run(&m, &x, &mut Hooks::new());
    assert!(
        cast_each_call.equal(&snapshot),
        "snapshot changed the numbers"
    );
    assert_eq!(snapshot.kind(), Kind::Float, "bf16 mode still returns f32");
    let rel = (&snapshot - &f32_out).abs().max().double_value(&[])
        / f32_out.abs().max().double_value(&[]);
    assert!(rel > 0.0, "bf16 made no difference at all: is it applied?");
    assert!(rel < 0.05, "bf16 forward is {rel} (relative) away from f32");
    m.set_precision(Precision::F32, false);
    assert!(run(&m, &x, &mut Hooks::new()).equal(&f32_out));
    // Training in bf16: gradients flow to the f32 weights through the casts.
    m.set_precision(Precision::Bf16, false);
    let loss = m.loss(&x, &x, &mut Hooks::new()).unwrap();
    loss.backward();
    let g = m.blocks[0].mlp.down_proj().grad();
    assert!(
        g.defined() && g.kind() == Kind::Float && g.abs().sum(Kind::Double).double_value(&[]) > 0.0
    );
}

/// In bf16, a layer whose value aggregation a probe reads computes its value projection
/// in f32: position 0 attends only to itself, so its aggregation is exactly v_0, and at
/// layer 0 (whose input, the embedding, bf16 has not touched) it equals the f32 one bit
/// for bit, or, on a CPU with AMX (split-bf16 products), to within 2e-5 relative.
/// Unprobed, the value projection is bf16 and position 0 differs by far more.
#[test]
fn bf16_value_path_is_f32_where_probed() {
    let mut m = tiny_model(3);
    m.attn_impl = sinkrep_model::AttnImpl::Explicit;
    let x = tokens(2, 16);
    let z0 = |m: &Model, site: Site| {
        let mut cap = Capture::new([(0, site)]);
        let _ = run(m, &x, &mut Hooks::new().probe(&mut cap));
        cap.get(0, site).unwrap().shallow_clone()
    };
    let f32_z = z0(&m, Site::AttnZ).select(1, 0);
    m.set_precision(Precision::Bf16, true);
    let bf16_z = z0(&m, Site::AttnZ).select(1, 0);
    let scale = f32_z.abs().max().double_value(&[]);
    let rel_probed = (&bf16_z - &f32_z).abs().max().double_value(&[]) / scale;
    if sinkrep_model::split_bf16_available() {
        assert!(
            rel_probed < 2e-5,
            "probed value path (split-bf16) is {rel_probed} from f32"
        );
    } else {
        assert!(
            bf16_z.equal(&f32_z),
            "probed value path is not f32 in bf16 mode"
        );
    }
    // The W_O output of the same layer, with nobody reading the aggregation: bf16 values.
    let f32_model = {
        let mut m2 = tiny_model(3);
        m2.attn_impl = sinkrep_model::AttnImpl::Explicit;
        z0(&m2, Site::AttnOut).select(1, 0)
    };
    let bf16_out = z0(&m, Site::AttnOut).select(1, 0);
    assert!(
        !bf16_out.equal(&f32_model),
        "bf16 mode changed nothing unprobed"
    );
    let rel_out = (&bf16_out - &f32_model).abs().max().double_value(&[])
        / f32_model.abs().max().double_value(&[]);
    assert!(
        rel_out > 10.0 * rel_probed,
        "unprobed bf16 ({rel_out}) is not far from f32 next to the probed path ({rel_probed})"
    );
}

/// A bf16 analysis takes the sink prefix (positions 0..=K) from an f32 pass over it:
/// every statistic at K agrees with the f32 analysis to f32 rounding, the other
/// positions' carry bf16's error, and the report says how many positions were exact.
/// With an intervention that acts across positions there is no such pass.
#[test]
fn bf16_analysis_takes_the_sink_prefix_from_f32() {
    use sinkrep_analysis::{analyze, AnalyzeOptions};
    let mut m = tiny_model(5);
    let seqs: Vec<Vec<i64>> = (0..6)
        .map(|s| (0..12).map(|i| (s * 13 + i * 7 + 3) % 61).collect())
        .collect();
    let opts = AnalyzeOptions {
        sink_pos: 1,
        batch: 4,
        ..Default::default()
    };
    let f = analyze(&m, &seqs, &opts, &mut |_| {}).unwrap();
    m.set_precision(Precision::Bf16, true);
    let b = analyze(&m, &seqs, &opts, &mut |_| {}).unwrap();
    assert_eq!((f.exact_prefix, b.exact_prefix), (0, 2));
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1e-12);
    let mut later_moved = 0.0f64;
    for (lf, lb) in f.layers.iter().zip(&b.layers) {
        for (x, y) in [
            (lf.dom_ratio, lb.dom_ratio),
            (lf.max_abs_sink, lb.max_abs_sink),
            (lf.norm_sink, lb.norm_sink),
            (lf.mid_norm_sink, lb.mid_norm_sink),
            (lf.agg_var_by_pos[0], lb.agg_var_by_pos[0]),
            (lf.agg_var_by_pos[1], lb.agg_var_by_pos[1]),
        ] {
            assert!(
                close(x, y),
                "layer {}: {x} vs {y} at the sink prefix",
                lf.layer
            );
        }
        for (x, y) in lf.agg_var_by_pos[2..].iter().zip(&lb.agg_var_by_pos[2..]) {
            later_moved = later_moved.max((x - y).abs() / x.abs());
        }
    }
    assert!(
        later_moved > 1e-4,
        "bf16 did not move later positions ({later_moved:e})"
    );
    // Ablating a channel at every position: the prefix would not be the same computation.
    let ablate = AnalyzeOptions {
        interventions: Interventions {
            ablate: vec![Ablate {
                layer: 0,
                channels: vec![3],
                positions: (0..12).collect(),
                kind: AblateKind::Mean,
            }],
            ..Default::default()
        },
        ..opts
    };
    assert_eq!(
        analyze(&m, &seqs, &ablate, &mut |_| {})
            .unwrap()
            .exact_prefix,
        0
    );
}

/// The probe's per-position variance across sequences is exact however the sequences
/// are batched, and where the mean dwarfs the spread (the first token's massive dims:
/// 1e4 +- 1e-2 here, where an f32 sum / sum-of-squares would give garbage): guards the
/// f32 two-pass reductions of `Moments`.
#[test]
fn moments_are_exact_across_batches_and_large_means() {
    let (n, t) = (7usize, 3usize);
    let vals: Vec<f32> = (0..n * t)
        .map(|i| (1e4 + 1e-2 * (i as f64 * 1.7).sin()) as f32)
        .collect();
    let x = Tensor::from_slice(&vals).reshape([n as i64, t as i64, 1]);
    // Reference: population variance over sequences of the f32 values, in f64.
    let reference: Vec<f64> = (0..t)
        .map(|p| {
            let col: Vec<f64> = (0..n).map(|s| vals[s * t + p] as f64).collect();
            let mean = col.iter().sum::<f64>() / n as f64;
            col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64
        })
        .collect();
    let mut whole = Moments::default();
    whole.add(&x);
    let mut split = Moments::default();
    split.add(&x.narrow(0, 0, 3));
    split.add(&x.narrow(0, 3, 4));
    let mut ones = Moments::default();
    for s in 0..n as i64 {
        ones.add(&x.narrow(0, s, 1));
    }
    for (name, m) in [("one batch", &whole), ("3 + 4", &split), ("7 x 1", &ones)] {
        let got = m.var_across_sequences();
        for (p, (g, r)) in got.iter().zip(&reference).enumerate() {
            assert!(
                (g - r).abs() <= 1e-3 * r,
                "{name}, position {p}: variance {g}, exact {r}"
            );
        }
    }
}

/// A batch of one sequence (its own short path in `Moments::add`) gives the mean and
/// sums of squared deviations of the two-pass path, bit for bit: here the same sequence
/// twice (deviations zero either way), with a -0, an infinity and a NaN among its values.
#[test]
fn moments_of_one_sequence_match_the_two_pass_path() {
    let vals = [-0.0f32, 2.5, f32::INFINITY, f32::NAN, -1e-3, 7e5];
    let x = Tensor::from_slice(&vals).reshape([1, 3, 2]);
    let mut one = Moments::default();
    one.add(&x);
    let mut two = Moments::default();
    two.add(&Tensor::cat(&[&x, &x], 0));
    for (what, a, b) in [
        (
            "mean",
            one.mean.as_ref().unwrap(),
            two.mean.as_ref().unwrap(),
        ),
        ("m2", one.m2.as_ref().unwrap(), two.m2.as_ref().unwrap()),
    ] {
        let (a, b) = (
            Vec::<f64>::try_from(a.flatten(0, -1)).unwrap(),
            Vec::<f64>::try_from(b.flatten(0, -1)).unwrap(),
        );
        let bits = |v: &[f64]| {
            v.iter()
                .map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() })
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&a), bits(&b), "{what}: {a:?} vs {b:?}");
    }
    // Not finite: no mean and no variance (NaN), as the two-pass sums give.
    let m2 = Vec::<f64>::try_from(one.m2.as_ref().unwrap().flatten(0, -1)).unwrap();
    assert!(m2[2].is_nan() && m2[3].is_nan() && m2[0] == 0.0);
}

fn gemma() -> Option<(sinkrep_model::Gemma3, sinkrep_model::GgufTokenizer)> {
    let path = crate::gemma_model()?;
    let file = GgufFile::open(&path).unwrap();
    let model = sinkrep_model::Gemma3::from_gguf(&file, Device::Cpu).unwrap();
    let tok = sinkrep_model::GgufTokenizer::from_gguf(&file).unwrap();
    Some((model, tok))
}

/// Gemma-3-270M: the conventions read from the GGUF, logits equal to those of an
/// independent implementation (HF transformers 5.24.0 loading the same GGUF, f32, eager
/// attention: scripts/peers/gemma_hf_check.sh), every probe site seen on every layer.
#[test]
fn gemma3_matches_hf_and_shows_every_site() {
    let Some((model, tok)) = gemma() else { return };
    let c = &model.config;
    assert_eq!(
        (c.base.n_layers, c.base.d_model, c.base.head_dim),
        (18, 640, 256)
    );
    assert_eq!(
        (c.base.n_heads, c.base.n_kv_heads, c.base.d_ff),
        (4, 1, 2048)
    );
    assert_eq!((c.base.rope_base, c.rope_base_local), (1e6, 1e4));
    assert_eq!((c.base.rms_eps, c.sliding_window), (1e-6, 512));
    let global: Vec<usize> = (0..18).filter(|&l| c.is_global(l)).collect();
    assert_eq!(global, [5, 11, 17]);
    let ids: Vec<i64> = tok
        .encode("The capital of France is")
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(ids, [2, 818, 5279, 529, 7001, 563]);
    let x = Tensor::from_slice(&ids).unsqueeze(0);
    let mut cap = Capture::new((0..18).flat_map(|l| Site::ALL.map(|s| (l, s))));
    let h = tch::no_grad(|| model.forward(&x, &mut Hooks::new().probe(&mut cap))).unwrap();
    let logits = model.logits(&h.select(1, 5)).squeeze();
    // HF's largest logits (" the", " a", " Paris") and the first four ids.
    let hf: [(i64, f64); 7] = [
        (506, 19.091457),
        (496, 18.547596),
        (9079, 18.268616),
        (0, -19.280127),
        (1, 8.298051),
        (2, -7.973063),
        (3, -19.244465),
    ];
    for (id, want) in hf {
        let got = logits.double_value(&[id]);
        assert!((got - want).abs() < 2e-3, "logit {id}: {got} vs HF {want}");
    }
    assert_eq!(logits.argmax(-1, false).int64_value(&[]), 506);
    for l in 0..18 {
        for s in Site::ALL {
            assert!(cap.get(l, s).is_some(), "layer {l} site {}", s.name());
        }
        assert_eq!(cap.get(l, Site::AttnPattern).unwrap().size(), [1, 4, 6, 6]);
        assert_eq!(cap.get(l, Site::AttnZ).unwrap().size(), [1, 6, 4, 256]);
        assert_eq!(cap.get(l, Site::MlpPost).unwrap().size(), [1, 6, 2048]);
        // resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out: the
        // outputs are the post-normed tensors that reach the residual stream.
        let pre = cap.get(l, Site::ResidPre).unwrap();
        let mid = cap.get(l, Site::ResidMid).unwrap();
        let post = cap.get(l, Site::ResidPost).unwrap();
        assert!(mid.equal(&(pre + cap.get(l, Site::AttnOut).unwrap())));
        assert!(post.equal(&(mid + cap.get(l, Site::MlpOut).unwrap())));
        if l + 1 < 18 {
            assert!(post.equal(cap.get(l + 1, Site::ResidPre).unwrap()));
        }
    }
}

/// Sliding-window layers see the last 512 keys only (query i, key j: i - j < 512),
/// global layers see every earlier key.
#[test]
fn gemma3_sliding_window_and_global_layers() {
    let Some((model, _)) = gemma() else { return };
    let t = 520i64;
    let ids: Vec<i64> = (0..t).map(|i| 2 + (i * 7919) % 200_000).collect();
    let x = Tensor::from_slice(&ids).unsqueeze(0);
    let mut cap = Capture::new([(0, Site::AttnPattern), (5, Site::AttnPattern)]);
    let _ = tch::no_grad(|| model.forward(&x, &mut Hooks::new().probe(&mut cap))).unwrap();
    let local = cap.get(0, Site::AttnPattern).unwrap().select(0, 0); // (H, T, T)
    let global = cap.get(5, Site::AttnPattern).unwrap().select(0, 0);
    // Query 519: keys 0..=7 are 512 or more back, key 8 is 511 back.
    let row = local.select(1, 519); // (H, T)
    let mass =
        |m: &Tensor, from: i64, n: i64| m.narrow(1, from, n).sum(Kind::Double).double_value(&[]);
    assert_eq!(mass(&row, 0, 8), 0.0, "keys 512+ back are masked");
    assert!(
        (mass(&row, 8, 512) - 4.0).abs() < 1e-4,
        "4 heads, each sums to 1"
    );
    // The global layer's query 519 reaches the BOS at key 0, 519 back.
    assert!(mass(&global.select(1, 519), 0, 1) > 0.0);
}
