//! HF checkpoint folders: round trips of every variant, sharded bf16 files, broken
//! folders, the pinned SmolLM2 exported and re-read, and `sinkrep train` end to end.

use crate::model::{run, tiny_config, tokens};
use crate::{sinkrep, stderr};
use sinkrep_model::hf::{self, HfConfig};
use sinkrep_model::{AttnVariant, Config, Hooks, Model, RopePairing, RopeScaling};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// HF transformers 5.24.0's logits for " Paris" (7042) and ids 0, 1, 6 after "The capital
/// of France is", loading the exported folder (scripts/peers/hf_folder_logits.py, measured
/// on 2026-12-02; same ids [504, 3575, 282, 4649, 314], same " Paris"). Over the 26 logits
/// sinkrep's report carries (ids 0..16 and the top 10) the max |diff| was 1.6e-5.
const HF_LOGITS: [(i64, f64); 4] = [
    (7042, 17.371273),
    (0, 1.6136445),
    (1, -11.871873),
    (6, -3.9414988),
];

fn model_of(cfg: &Config, seed: i64) -> Model {
    let m = sinkrep_model::with_seed(seed, || Model::new(cfg, Device::Cpu).unwrap());
    // Non-trivial norm gains and head-norm gains, so a swapped table entry shows.
    tch::no_grad(|| {
        for (name, mut v) in m.vs.variables() {
            if name.contains("norm") {
                v.copy_(&(Tensor::rand_like(&v) + 0.5));
            }
        }
    });
    m
}

/// Every variant and both RoPE pairings (GQA, tied and untied) survive write + read bit
/// for bit, and variants are marked so HF refuses them instead of dropping tensors.
#[test]
fn hf_round_trip_of_every_variant() {
    let variants = [
        (AttnVariant::Baseline, RopePairing::Adjacent, true),
        (AttnVariant::Baseline, RopePairing::HalfSplit, false),
        (
            AttnVariant::HeadwiseRmsnorm { shared: true },
            RopePairing::HalfSplit,
            true,
        ),
        (
            AttnVariant::HeadwiseRmsnorm { shared: false },
            RopePairing::Adjacent,
            true,
        ),
        (AttnVariant::Gated, RopePairing::HalfSplit, true),
    ];
    for (i, (variant, pairing, tied)) in variants.into_iter().enumerate() {
        let cfg = Config {
            attn_variant: variant,
            rope_pairing: pairing,
            tied_embeddings: tied,
            ..tiny_config()
        };
        let m = model_of(&cfg, i as i64);
        let dir = tempfile::tempdir().unwrap();
        m.write_hf(dir.path(), Some(1), Some(2)).unwrap();
        let back = Model::from_hf_dir(dir.path(), Device::Cpu).unwrap();
        assert_eq!(back.config, cfg, "{variant:?}");
        let x = tokens(2, 9);
        let (a, b) = (
            run(&m, &x, &mut Hooks::new()),
            run(&back, &x, &mut Hooks::new()),
        );
        assert!(a.equal(&b), "{variant:?} {pairing:?}: outputs differ");
        let hfc = HfConfig::read(dir.path()).unwrap();
        let plain = variant == AttnVariant::Baseline;
        assert_eq!(hfc.architectures[0] == hf::LLAMA_ARCH, plain, "{variant:?}");
        assert_eq!(hfc.sinkrep.unwrap().attn_variant, variant);
        assert_eq!(hfc.bos_token_id, Some(1));
    }
}

/// The adjacent-pairing Q rows are stored in HF's half-split order: row (h, s, j) of the
/// file is row (h, j, s) of the model (llama.cpp's permutation, undone).
#[test]
fn hf_q_rows_are_in_half_split_order() {
    let cfg = tiny_config(); // adjacent pairing
    let m = model_of(&cfg, 3);
    let dir = tempfile::tempdir().unwrap();
    m.write_hf(dir.path(), None, None).unwrap();
    let file: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join(hf::WEIGHTS_FILE))
            .unwrap()
            .into_iter()
            .collect();
    let ours = &m.vs.variables()["blk.0.attn_q.weight"];
    let theirs = &file["model.layers.0.self_attn.q_proj.weight"];
    let (h, dh) = (cfg.n_heads as i64, cfg.head_dim as i64);
    // Head 1, pair j = 2: adjacent rows 2j, 2j+1 are half-split rows j, j + dh/2.
    let (j, base) = (2, dh);
    assert!(ours.get(base + 2 * j).equal(&theirs.get(base + j)));
    assert!(ours
        .get(base + 2 * j + 1)
        .equal(&theirs.get(base + j + dh / 2)));
    assert_eq!(theirs.size(), [h * dh, cfg.d_model as i64]);
}

/// Writes `m`'s weights as two bf16 shards with an index, as HF does for big models.
fn write_bf16_shards(m: &Model, dir: &Path) {
    let src = tempfile::tempdir().unwrap();
    m.write_hf(src.path(), None, None).unwrap();
    std::fs::copy(src.path().join(hf::CONFIG_FILE), dir.join(hf::CONFIG_FILE)).unwrap();
    let all = Tensor::read_safetensors(src.path().join(hf::WEIGHTS_FILE)).unwrap();
    let mut map = serde_json::Map::new();
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().partition(|(n, _)| n.contains("layers.0"));
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let bf: Vec<(String, Tensor)> = part
            .into_iter()
            .map(|(n, t)| {
                map.insert(n.clone(), file.into());
                (n, t.to_kind(Kind::BFloat16))
            })
            .collect();
        Tensor::write_safetensors(&bf, dir.join(file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join(hf::INDEX_FILE), index.to_string()).unwrap();
}

/// A sharded bf16 folder loads as the same model with bf16-rounded weights.
#[test]
fn hf_sharded_bf16_folder_loads() {
    let cfg = Config {
        rope_pairing: RopePairing::HalfSplit,
        ..tiny_config()
    };
    let m = model_of(&cfg, 4);
    // Round the weights to bf16 first, so the bf16 files hold them exactly.
    tch::no_grad(|| {
        for (_, mut v) in m.vs.variables() {
            let r = v.to_kind(Kind::BFloat16).to_kind(Kind::Float);
            v.copy_(&r);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    write_bf16_shards(&m, dir.path());
    let back = Model::from_hf_dir(dir.path(), Device::Cpu).unwrap();
    let x = tokens(1, 7);
    assert!(run(&m, &x, &mut Hooks::new()).equal(&run(&back, &x, &mut Hooks::new())));
}

/// Broken folders are one-line errors naming the file and the problem, never a panic.
#[test]
fn broken_hf_folders_are_one_line_errors() {
    let cfg = Config {
        rope_pairing: RopePairing::HalfSplit,
        ..tiny_config()
    };
    let m = model_of(&cfg, 5);
    let good = tempfile::tempdir().unwrap();
    m.write_hf(good.path(), None, None).unwrap();
    let weights = std::fs::read(good.path().join(hf::WEIGHTS_FILE)).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(good.path().join(hf::CONFIG_FILE)).unwrap()).unwrap();
    type Breaker = Box<dyn Fn(&Path)>;
    fn b(f: impl Fn(&Path) + 'static) -> Breaker {
        Box::new(f)
    }
    let write_cfg = |f: Box<dyn Fn(&mut serde_json::Value)>| -> Breaker {
        let mut c = config.clone();
        f(&mut c);
        Box::new(move |d: &Path| std::fs::write(d.join(hf::CONFIG_FILE), c.to_string()).unwrap())
    };
    let with_tensor = |name: &'static str, t: Tensor| -> Breaker {
        Box::new(move |d: &Path| {
            let mut all = Tensor::read_safetensors(d.join(hf::WEIGHTS_FILE)).unwrap();
            all.retain(|(n, _)| n != name);
            all.push((name.to_string(), t.shallow_clone()));
            Tensor::write_safetensors(&all, d.join(hf::WEIGHTS_FILE)).unwrap();
        })
    };
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "missing weights",
            b(|d: &Path| std::fs::remove_file(d.join(hf::WEIGHTS_FILE)).unwrap()),
            "no model.safetensors",
        ),
        (
            "truncated",
            b({
                let w = weights.clone();
                move |d: &Path| {
                    std::fs::write(d.join(hf::WEIGHTS_FILE), &w[..w.len() - 100]).unwrap()
                }
            }),
            "model.safetensors",
        ),
        (
            "architecture",
            write_cfg(Box::new(|c| {
                c["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"])
            })),
            "GPTNeoXForCausalLM",
        ),
        (
            "rope scaling yarn",
            write_cfg(Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 8.0})
            })),
            "rope_scaling of type `yarn`",
        ),
        (
            "rope scaling dynamic, old key",
            write_cfg(Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0})
            })),
            "`dynamic`",
        ),
        (
            "rope_parameters longrope",
            write_cfg(Box::new(|c| {
                c["rope_parameters"] =
                    serde_json::json!({"rope_type": "longrope", "rope_theta": 1e4})
            })),
            "rope_parameters of type `longrope`",
        ),
        (
            "llama3 without its factors",
            write_cfg(Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0})
            })),
            "low_freq_factor",
        ),
        (
            "linear factor 0",
            write_cfg(Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 0.0})
            })),
            "factor 0 must be finite and > 0",
        ),
        (
            "llama3 low >= high",
            write_cfg(Box::new(|c| {
                c["rope_scaling"] = llama3_json(8.0, 4.0, 4.0, 16);
            })),
            "low_freq_factor 4 must be < high_freq_factor 4",
        ),
        (
            "rope_scaling and rope_parameters disagree",
            write_cfg(Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 2.0});
                c["rope_parameters"] = serde_json::json!({"rope_type": "linear", "factor": 4.0});
            })),
            "disagree",
        ),
        (
            "bad config",
            write_cfg(Box::new(|c| {
                c["num_attention_heads"] = serde_json::json!(3)
            })),
            "config.json",
        ),
        (
            "dtype",
            with_tensor(
                "model.norm.weight",
                Tensor::zeros([32], (Kind::Int64, Device::Cpu)),
            ),
            "I64",
        ),
        (
            "shape",
            with_tensor(
                "model.norm.weight",
                Tensor::zeros([31], (Kind::Float, Device::Cpu)),
            ),
            "model.norm.weight",
        ),
        (
            "extra tensor",
            with_tensor(
                "model.layers.0.self_attn.q_norm.weight",
                Tensor::zeros([8], (Kind::Float, Device::Cpu)),
            ),
            "q_norm",
        ),
    ];
    for (what, brk, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        for f in [hf::WEIGHTS_FILE, hf::CONFIG_FILE] {
            std::fs::copy(good.path().join(f), dir.path().join(f)).unwrap();
        }
        brk(dir.path());
        let out = sinkrep(&[
            "analyze",
            "--model",
            dir.path().to_str().unwrap(),
            "--random",
            "1",
            "--device",
            "cpu",
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{what}: {err}"
        );
    }
}

/// The pinned SmolLM2, exported as an HF folder and re-read, gives the GGUF's report bit
/// for bit (same weights, same RoPE layout, same tokenizer); export refuses to overwrite;
/// and the folder's logits are the ones HF transformers computes from it.
#[test]
fn exported_smollm2_matches_gguf_and_hf() {
    let Some(gguf) = crate::pinned_model() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smollm2-hf");
    let out_s = out.to_str().unwrap();
    let o = sinkrep(&[
        "export",
        "--model",
        "smollm2-135m",
        "--format",
        "hf",
        "--out",
        out_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = sinkrep(&["export", "--model", "smollm2-135m", "--out", out_s]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("refusing to overwrite"),
        "{}",
        stderr(&again)
    );

    let report = |model: &str, input: &[&str]| -> Vec<u8> {
        let mut args = vec!["analyze", "--model", model, "--device", "cpu", "--json"];
        args.extend_from_slice(input);
        let o = sinkrep(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        o.stdout
    };
    for input in [
        &["--text", "The capital of France is"][..],
        &["--random", "4", "--seq-len", "32"][..],
    ] {
        let (a, b) = (report(gguf.to_str().unwrap(), input), report(out_s, input));
        assert!(a == b, "{input:?}: reports differ");
    }

    // The folder's logits agree with HF transformers' on the same folder (HF_LOGITS).
    let model = Model::from_hf_dir(&out, Device::Cpu).unwrap();
    let x = Tensor::from_slice(&[504i64, 3575, 282, 4649, 314]).unsqueeze(0);
    let logits = model
        .logits(&run(&model, &x, &mut Hooks::new()).select(1, 4))
        .squeeze();
    for (id, want) in HF_LOGITS {
        let got = logits.double_value(&[id]);
        assert!((got - want).abs() < 1e-3, "logit {id}: {got} vs {want}");
    }
}

/// `sinkrep train` at smoke scale writes logs, checkpoints and an HF folder that
/// `analyze` reads; it refuses to overwrite the run; --resume of a finished run is a
/// no-op; the variant survives the HF round trip.
#[test]
fn train_then_analyze_a_headwise_run() {
    if sinkrep_analysis::pinned::text_files().is_err() {
        eprintln!("skipped: corpus not fetched (run `just fetch`)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let run_s = run_dir.to_str().unwrap();
    let args = [
        "train",
        "--variant",
        "headwise",
        "--scale",
        "smoke",
        "--seed",
        "1",
        "--device",
        "cpu",
        "--out",
        run_s,
    ];
    let o = sinkrep(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "train_log.csv",
        "val_log.csv",
        "hf/config.json",
        "hf/model.safetensors",
        "hf/tokenizer.json",
    ] {
        assert!(run_dir.join(f).is_file(), "missing {f}");
    }
    let ckpts = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .count();
    assert!(ckpts >= 2, "{ckpts} checkpoints");
    let hfc = HfConfig::read(&run_dir.join("hf")).unwrap();
    assert_eq!(
        hfc.sinkrep.unwrap().attn_variant,
        AttnVariant::HeadwiseRmsnorm { shared: true }
    );

    let again = sinkrep(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("refusing to overwrite"),
        "{}",
        stderr(&again)
    );
    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = sinkrep(&resume);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = sinkrep(&[
        "analyze",
        "--model",
        run_s,
        "--text",
        "To be, or not to be",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);
    assert_eq!(v["n_tokens"], 19, "byte tokens");
}

fn llama3_json(factor: f64, low: f64, high: f64, orig: usize) -> serde_json::Value {
    serde_json::json!({
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": orig,
    })
}

/// RoPE's inverse frequencies, computed here the way HF transformers does
/// (`_compute_default_rope_parameters` then `_compute_llama3_parameters`, in f32 torch
/// ops), independently of `Config::rope_inv_freq`.
fn hf_style_inv_freq(base: f64, dim: i64, scaling: &RopeScaling) -> Vec<f32> {
    let exps = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))
        .to_kind(Kind::Float)
        / dim as f64;
    let inv = (Tensor::from(base).to_kind(Kind::Float).pow(&exps)).reciprocal();
    let inv = match *scaling {
        RopeScaling::None => inv,
        RopeScaling::Linear { factor } => inv / factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old = original_max_position_embeddings as f64;
            let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
            let wavelen = inv.reciprocal() * (2.0 * std::f64::consts::PI);
            let scaled = inv.where_self(&wavelen.le(low_wl), &(&inv / factor));
            let smooth = (wavelen.reciprocal() * old - low_freq_factor)
                / (high_freq_factor - low_freq_factor);
            let smoothed: Tensor = (1.0 - &smooth) * &scaled / factor + &smooth * &scaled;
            let medium = wavelen.ge(high_wl).logical_and(&wavelen.le(low_wl));
            smoothed.where_self(&medium, &scaled)
        }
    };
    Vec::<f32>::try_from(&inv).unwrap()
}

fn close(a: &[f32], b: &[f32], rel: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= rel * y.abs())
}

/// `llama3` and `linear` inverse frequencies agree with HF's formulas computed here; no
/// scaling is exactly the pre-scaling table (f64, rounded once to f32).
#[test]
fn rope_inv_freq_of_each_scaling() {
    // Llama 3.1's factors and base; head_dim 32 puts pairs in all three llama3 bands
    // (wavelengths 2π·500000^(i/16) against 8192/4 and 8192/1).
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    let cfg = |s: RopeScaling| Config {
        head_dim: 32,
        d_model: 128,
        rope_base: 500_000.0,
        rope_scaling: s,
        ..tiny_config()
    };
    let plain = cfg(RopeScaling::None).rope_inv_freq();
    let before: Vec<f32> = (0..16)
        .map(|i| (1.0 / 500_000f64.powf(2.0 * i as f64 / 32.0)) as f32)
        .collect();
    assert_eq!(plain, before, "no scaling must be bit-identical");
    assert!(close(
        &plain,
        &hf_style_inv_freq(500_000.0, 32, &RopeScaling::None),
        1e-6
    ));

    let got = cfg(llama3).rope_inv_freq();
    let want = hf_style_inv_freq(500_000.0, 32, &llama3);
    assert!(close(&got, &want, 1e-6), "{got:?}\n{want:?}");
    // The three bands: high frequencies kept, low ones divided by 8, some in between.
    let ratio: Vec<f32> = got.iter().zip(&plain).map(|(g, p)| p / g).collect();
    assert_eq!(ratio[0], 1.0);
    assert!((ratio[15] - 8.0).abs() < 1e-5, "{ratio:?}");
    let between = ratio.iter().filter(|&&r| r > 1.001 && r < 7.999).count();
    assert!(between >= 1, "{ratio:?}");
    // Hand-checked pair: i = 8, wavelen = 2π·500000^(1/2) ≈ 4442.9, in the band:
    // s = (8192/wavelen - 1)/3, inv' = inv·((1-s)/8 + s).
    let inv8 = 1.0 / 500_000f64.sqrt();
    let s = (8192.0 * inv8 / (2.0 * std::f64::consts::PI) - 1.0) / 3.0;
    assert!(s > 0.0 && s < 1.0);
    let want8 = inv8 * ((1.0 - s) / 8.0 + s);
    assert!(
        (got[8] as f64 - want8).abs() < 1e-6 * want8,
        "{} vs {want8}",
        got[8]
    );

    let linear = RopeScaling::Linear { factor: 4.0 };
    let got = cfg(linear).rope_inv_freq();
    assert!(close(
        &got,
        &hf_style_inv_freq(500_000.0, 32, &linear),
        1e-6
    ));
    assert!(close(
        &got,
        &plain.iter().map(|x| x / 4.0).collect::<Vec<_>>(),
        1e-6
    ));

    // Invalid factors are refused by the validated config.
    for bad in [
        RopeScaling::Linear { factor: 0.0 },
        RopeScaling::Linear { factor: f64::NAN },
        RopeScaling::Llama3 {
            factor: -8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        },
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 4.0,
            high_freq_factor: 1.0,
            original_max_position_embeddings: 8192,
        },
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 0,
        },
    ] {
        assert!(cfg(bad).validate().is_err(), "{bad:?}");
    }
}

/// An HF folder whose config.json has `rope_scaling` llama3 loads with that scaling; its
/// outputs equal the unscaled model's at position 0 (RoPE is the identity there) and
/// differ further on; export writes the scaling back, so the round trip keeps it; and
/// transformers 5's `rope_parameters` spelling reads the same.
#[test]
fn hf_llama3_rope_scaling_loads_and_round_trips() {
    let cfg = Config {
        rope_pairing: RopePairing::HalfSplit,
        ..tiny_config()
    };
    let m = model_of(&cfg, 6);
    let plain_dir = tempfile::tempdir().unwrap();
    m.write_hf(plain_dir.path(), None, None).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain_dir.path().join(hf::CONFIG_FILE)).unwrap())
            .unwrap();
    assert!(config["rope_scaling"].is_null());
    // head_dim 8, base 1e4: wavelengths 2π·10^i (i = 0..3); with an original context of
    // 16 (bands 4 and 16) pair 0 is in between and pairs 1..3 are divided by 8.
    let want = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16,
    };
    let spellings = [
        ("rope_scaling", llama3_json(8.0, 1.0, 4.0, 16)),
        ("rope_parameters", {
            let mut p = llama3_json(8.0, 1.0, 4.0, 16);
            p["rope_theta"] = serde_json::json!(10_000.0);
            p
        }),
    ];
    let x = tokens(1, 40);
    let plain = run(&m, &x, &mut Hooks::new());
    for (field, value) in spellings {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            plain_dir.path().join(hf::WEIGHTS_FILE),
            dir.path().join(hf::WEIGHTS_FILE),
        )
        .unwrap();
        let mut c = config.clone();
        c[field] = value;
        std::fs::write(dir.path().join(hf::CONFIG_FILE), c.to_string()).unwrap();
        let scaled = Model::from_hf_dir(dir.path(), Device::Cpu).unwrap();
        assert_eq!(scaled.config.rope_scaling, want, "{field}");
        assert_eq!(
            scaled.config,
            Config {
                rope_scaling: want,
                ..cfg.clone()
            }
        );
        let out = run(&scaled, &x, &mut Hooks::new());
        assert!(
            out.select(1, 0).equal(&plain.select(1, 0)),
            "{field}: position 0"
        );
        let last = (out.select(1, 39) - plain.select(1, 39)).abs().max();
        assert!(
            last.double_value(&[]) > 1e-3,
            "{field}: position 39 unchanged"
        );

        // Export keeps it: config.json says llama3, the re-read model is the same.
        let again = tempfile::tempdir().unwrap();
        scaled.write_hf(again.path(), None, None).unwrap();
        let hfc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(again.path().join(hf::CONFIG_FILE)).unwrap())
                .unwrap();
        assert_eq!(hfc["rope_scaling"], llama3_json(8.0, 1.0, 4.0, 16));
        let back = Model::from_hf_dir(again.path(), Device::Cpu).unwrap();
        assert_eq!(back.config, scaled.config);
        assert!(run(&back, &x, &mut Hooks::new()).equal(&out));
    }

    // Linear, in the pre-4.45 spelling (`type`), round trips too.
    let lin = Config {
        rope_scaling: RopeScaling::Linear { factor: 2.0 },
        ..cfg.clone()
    };
    let m = model_of(&lin, 7);
    let dir = tempfile::tempdir().unwrap();
    m.write_hf(dir.path(), None, None).unwrap();
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(hf::CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(
        c["rope_scaling"],
        serde_json::json!({"rope_type": "linear", "factor": 2.0})
    );
    c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
    std::fs::write(dir.path().join(hf::CONFIG_FILE), c.to_string()).unwrap();
    let back = Model::from_hf_dir(dir.path(), Device::Cpu).unwrap();
    assert_eq!(back.config, lin);
    assert!(run(&back, &x, &mut Hooks::new()).equal(&run(&m, &x, &mut Hooks::new())));
}

/// `sinkrep train --subject synthetic` trains the synthetic subject (no corpus needed),
/// records its task in run.json, and `analyze --random` reads the result.
#[test]
fn train_and_analyze_the_synthetic_subject() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let run_s = run_dir.to_str().unwrap();
    let o = sinkrep(&[
        "train",
        "--variant",
        "baseline",
        "--scale",
        "smoke",
        "--subject",
        "synthetic",
        "--device",
        "cpu",
        "--out",
        run_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["data"]["task"]["task"], "bigram-backcopy");
    assert_eq!(run["data"]["task"]["start"], "bos");
    let a = sinkrep(&[
        "analyze",
        "--model",
        run_s,
        "--random",
        "4",
        "--seq-len",
        "16",
        "--device",
        "cpu",
    ]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(String::from_utf8_lossy(&a.stdout).contains("Sink_0^0.3"));
    // --subject needs --scale.
    let bad = sinkrep(&[
        "train",
        "--variant",
        "baseline",
        "--subject",
        "synthetic",
        "--out",
        run_s,
    ]);
    assert!(!bad.status.success());
}
