//! Hugging Face checkpoint folders of the LLaMA family: `config.json` (mirrored by
//! `HfConfig`, converted into the validated `Config`), weights in `model.safetensors` or
//! shards listed by `model.safetensors.index.json` (f32, f16 or bf16), read into a
//! `Model` and written from one. The tokenizer files are the caller's
//! (`GgufTokenizer::from_hf_json`).
//!
//! Weight names map through `WEIGHT_NAMES`, one row per variable of `llama::Model`
//! (whose variables carry the GGUF names):
//!
//! | sinkrep / GGUF                   | HF                                              |
//! |----------------------------------|-------------------------------------------------|
//! | `token_embd.weight`              | `model.embed_tokens.weight`                     |
//! | `blk.{i}.attn_norm.weight`       | `model.layers.{i}.input_layernorm.weight`       |
//! | `blk.{i}.attn_q/k/v.weight`      | `model.layers.{i}.self_attn.q/k/v_proj.weight`  |
//! | `blk.{i}.attn_output.weight`     | `model.layers.{i}.self_attn.o_proj.weight`      |
//! | `blk.{i}.ffn_norm.weight`        | `model.layers.{i}.post_attention_layernorm.weight` |
//! | `blk.{i}.ffn_gate/up/down.weight`| `model.layers.{i}.mlp.gate/up/down_proj.weight` |
//! | `output_norm.weight`             | `model.norm.weight`                             |
//! | `output.weight` (untied only)    | `lm_head.weight`                                |
//! | `blk.{i}.attn_head_norm.weight`  | `model.layers.{i}.self_attn.head_norm.weight` (sinkrep variant) |
//! | `blk.{i}.attn_gate.weight`       | `model.layers.{i}.self_attn.attn_gate.weight` (sinkrep variant) |
//!
//! RoPE: HF's Q/K rows are in the half-split layout (`rotate_half`). Files always hold
//! that layout. A model that computes with adjacent pairs (every GGUF LLaMA: llama.cpp's
//! converter permutes the rows) has its Q/K rows permuted back on export and again on
//! import, and `config.json` records the pairing (`sinkrep.rope_pairing`), so a round
//! trip gives the same weights in the same order, hence bit-identical outputs. Folders
//! without that record (any HF checkpoint) are computed half-split, as HF does.
//!
//! RoPE scaling: `rope_scaling` (transformers 4, key `rope_type` or the older `type`) or
//! `rope_parameters` (transformers 5) of type `default`, `linear` or `llama3` becomes
//! `Config::rope_scaling`; other types (dynamic, yarn, longrope, ...) are refused by name.
//! Export writes it back as `rope_scaling` (`null` when none, as before).
//!
//! Attention variants HF does not know (head-wise RMSNorm, gated) are written with their
//! extra tensors, `architectures = ["SinkrepLlamaForCausalLM"]` and
//! `model_type = "sinkrep_llama"` (so HF refuses them instead of silently dropping the
//! tensors), and the variant in `sinkrep.attn_variant`.

use crate::config::{AttnVariant, Config, RopePairing, RopeScaling};
use crate::llama::Model;
use crate::ModelError;
use serde::{Deserialize, Serialize};
use sinkrep_gguf::tokenizer::GgufTokenizer;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The HF architecture of plain LLaMA-family checkpoints.
pub const LLAMA_ARCH: &str = "LlamaForCausalLM";
/// The architecture written for sinkrep's attention variants (unknown to HF on purpose).
pub const VARIANT_ARCH: &str = "SinkrepLlamaForCausalLM";
const VARIANT_MODEL_TYPE: &str = "sinkrep_llama";

/// sinkrep variable name -> HF tensor name; `{i}` is the layer index.
pub const WEIGHT_NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    (
        "blk.{i}.attn_norm.weight",
        "model.layers.{i}.input_layernorm.weight",
    ),
    (
        "blk.{i}.attn_q.weight",
        "model.layers.{i}.self_attn.q_proj.weight",
    ),
    (
        "blk.{i}.attn_k.weight",
        "model.layers.{i}.self_attn.k_proj.weight",
    ),
    (
        "blk.{i}.attn_v.weight",
        "model.layers.{i}.self_attn.v_proj.weight",
    ),
    (
        "blk.{i}.attn_output.weight",
        "model.layers.{i}.self_attn.o_proj.weight",
    ),
    (
        "blk.{i}.ffn_norm.weight",
        "model.layers.{i}.post_attention_layernorm.weight",
    ),
    (
        "blk.{i}.ffn_gate.weight",
        "model.layers.{i}.mlp.gate_proj.weight",
    ),
    (
        "blk.{i}.ffn_up.weight",
        "model.layers.{i}.mlp.up_proj.weight",
    ),
    (
        "blk.{i}.ffn_down.weight",
        "model.layers.{i}.mlp.down_proj.weight",
    ),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    (
        "blk.{i}.attn_head_norm.weight",
        "model.layers.{i}.self_attn.head_norm.weight",
    ),
    (
        "blk.{i}.attn_gate.weight",
        "model.layers.{i}.self_attn.attn_gate.weight",
    ),
];

/// The HF name of sinkrep variable `name`, through `WEIGHT_NAMES`.
pub fn hf_name(name: &str) -> Option<String> {
    let (layer, pattern) = match name.strip_prefix("blk.") {
        Some(rest) => {
            let (i, tail) = rest.split_once('.')?;
            (Some(i), format!("blk.{{i}}.{tail}"))
        }
        None => (None, name.to_string()),
    };
    let (_, hf) = WEIGHT_NAMES.iter().find(|(s, _)| *s == pattern)?;
    Some(match layer {
        Some(i) => hf.replace("{i}", i),
        None => hf.to_string(),
    })
}

/// sinkrep's own fields in `config.json`: what HF's LLaMA config cannot say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkrepFields {
    /// The RoPE pairing sinkrep computes with (see the module doc).
    pub rope_pairing: RopePairing,
    pub attn_variant: AttnVariant,
    /// The head-wise RMSNorm gain's initial value (training metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_norm_init: Option<f64>,
}

/// `config.json` of a LLaMA-family checkpoint, the fields sinkrep reads or writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HfConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent: as many KV heads as query heads (no GQA).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Absent: hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default = "default_context")]
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    /// transformers 4's place for the RoPE base; 5 moved it into `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 5's RoPE settings: `rope_theta`, `rope_type` and the scaling's
    /// parameters in one object (read, never written).
    #[serde(default, skip_serializing)]
    rope_parameters: Option<serde_json::Value>,
    /// `null`, or `{"rope_type": "default" | "linear" | "llama3", "factor": ..., ...}`
    /// (`rope_scaling_of`).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// HF LLaMA's default is false (an `lm_head.weight` is expected).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// An id or a list of ids; the first is used.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinkrep: Option<SinkrepFields>,
}

fn silu() -> String {
    "silu".into()
}

fn default_context() -> usize {
    2048
}

impl HfConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<HfConfig, ModelError> {
        let path = dir.join(CONFIG_FILE);
        let text = fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
        serde_json::from_str(&text).map_err(|e| file_err(&path, e))
    }

    /// The first EOS id.
    pub fn eos_id(&self) -> Option<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Array(v)) => v.first().and_then(|x| x.as_u64()),
            Some(v) => v.as_u64(),
            None => None,
        }
        .and_then(|x| u32::try_from(x).ok())
    }

    /// The validated `Config`; refuses what sinkrep's LLaMA does not compute (by name).
    pub fn to_config(&self) -> Result<Config, ModelError> {
        let unsupported = |m: String| Err(ModelError::Unsupported(m));
        let arch = self.architectures.first().map(String::as_str).unwrap_or("");
        let variant = match (arch, &self.sinkrep) {
            (LLAMA_ARCH, None) => AttnVariant::Baseline,
            (LLAMA_ARCH | VARIANT_ARCH, Some(s)) => s.attn_variant,
            (VARIANT_ARCH, None) => {
                return Err(ModelError::BadConfig(format!(
                    "architecture {VARIANT_ARCH} without its `sinkrep` section"
                )))
            }
            _ => {
                return unsupported(format!(
                    "architecture `{arch}` (supported: {LLAMA_ARCH}, {VARIANT_ARCH})"
                ))
            }
        };
        if self.hidden_act != "silu" {
            return unsupported(format!(
                "hidden_act `{}` (supported: silu)",
                self.hidden_act
            ));
        }
        if self.attention_bias || self.mlp_bias {
            return unsupported("attention_bias / mlp_bias (sinkrep's LLaMA has no biases)".into());
        }
        let params = self.rope_parameters.as_ref().filter(|p| !p.is_null());
        let scalings = [
            (
                "rope_scaling",
                self.rope_scaling.as_ref().filter(|v| !v.is_null()),
            ),
            ("rope_parameters", params),
        ];
        let mut rope_scaling = RopeScaling::None;
        for (field, v) in scalings {
            let Some(v) = v else { continue };
            let s = rope_scaling_of(field, v)?;
            if !s.is_none() && !rope_scaling.is_none() && s != rope_scaling {
                return Err(ModelError::BadConfig(format!(
                    "rope_scaling {rope_scaling:?} and rope_parameters {s:?} disagree"
                )));
            }
            if !s.is_none() {
                rope_scaling = s;
            }
        }
        let rope_base = self
            .rope_theta
            .or_else(|| params.and_then(|p| p.get("rope_theta")?.as_f64()))
            .unwrap_or(10_000.0);
        let n_heads = self.num_attention_heads;
        let head_dim = match self.head_dim {
            Some(d) => d,
            None if n_heads > 0 => self.hidden_size / n_heads,
            None => 0,
        };
        let sinkrep = self.sinkrep.as_ref();
        let cfg = Config {
            vocab_size: self.vocab_size,
            d_model: self.hidden_size,
            n_layers: self.num_hidden_layers,
            n_heads,
            n_kv_heads: self.num_key_value_heads.unwrap_or(n_heads),
            head_dim,
            d_ff: self.intermediate_size,
            rms_eps: self.rms_norm_eps,
            rope_base,
            rope_pairing: sinkrep.map_or(RopePairing::HalfSplit, |s| s.rope_pairing),
            rope_scaling,
            tied_embeddings: self.tie_word_embeddings,
            max_seq_len: self.max_position_embeddings,
            attn_variant: variant,
            head_norm_init: sinkrep.and_then(|s| s.head_norm_init).unwrap_or(1.0),
            zero_init: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config.json of `cfg` (f32 weights) with these special tokens.
    pub fn from_config(cfg: &Config, bos_id: Option<u32>, eos_id: Option<u32>) -> HfConfig {
        let baseline = cfg.attn_variant == AttnVariant::Baseline;
        let headwise = matches!(cfg.attn_variant, AttnVariant::HeadwiseRmsnorm { .. });
        HfConfig {
            architectures: vec![if baseline { LLAMA_ARCH } else { VARIANT_ARCH }.into()],
            model_type: if baseline {
                "llama"
            } else {
                VARIANT_MODEL_TYPE
            }
            .into(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.d_model,
            intermediate_size: cfg.d_ff,
            num_hidden_layers: cfg.n_layers,
            num_attention_heads: cfg.n_heads,
            num_key_value_heads: Some(cfg.n_kv_heads),
            head_dim: Some(cfg.head_dim),
            hidden_act: silu(),
            max_position_embeddings: cfg.max_seq_len,
            rms_norm_eps: cfg.rms_eps,
            rope_theta: Some(cfg.rope_base),
            rope_parameters: None,
            rope_scaling: rope_scaling_json(&cfg.rope_scaling),
            tie_word_embeddings: cfg.tied_embeddings,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: bos_id,
            eos_token_id: eos_id.map(serde_json::Value::from),
            torch_dtype: Some("float32".into()),
            sinkrep: Some(SinkrepFields {
                rope_pairing: cfg.rope_pairing,
                attn_variant: cfg.attn_variant,
                head_norm_init: headwise.then_some(cfg.head_norm_init),
            }),
        }
    }
}

/// The scaling an HF RoPE object names: `rope_scaling` (type in `rope_type`, or `type` in
/// configs older than transformers 4.45) or `rope_parameters` (no type: default).
/// HF's `linear` and `llama3` only rescale inv_freq (their `attention_factor` is 1);
/// types that also rescale attention or depend on the sequence length are refused.
fn rope_scaling_of(field: &str, v: &serde_json::Value) -> Result<RopeScaling, ModelError> {
    let bad = |m: String| ModelError::BadConfig(m);
    let ty = match v.get("rope_type").or_else(|| v.get("type")) {
        Some(t) => t
            .as_str()
            .ok_or_else(|| bad(format!("{field}: rope_type {t} is not a string")))?,
        None if field == "rope_parameters" => "default",
        None => return Err(bad(format!("{field} without a `rope_type`"))),
    };
    let num = |key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| bad(format!("{field} of type `{ty}` without a numeric `{key}`")))
    };
    Ok(match ty {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => {
            let (factor, low_freq_factor, high_freq_factor) = (
                num("factor")?,
                num("low_freq_factor")?,
                num("high_freq_factor")?,
            );
            let key = "original_max_position_embeddings";
            let orig = v
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "{field} of type `llama3` without an integer `{key}`"
                    ))
                })?;
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: orig,
            }
        }
        other => {
            return Err(ModelError::Unsupported(format!(
                "{field} of type `{other}` (sinkrep's RoPE supports default, linear and llama3)"
            )))
        }
    })
}

/// `config.json`'s `rope_scaling` for `s` (transformers 4.45+ spelling); `None` for none.
fn rope_scaling_json(s: &RopeScaling) -> Option<serde_json::Value> {
    let ty = s.hf_type();
    match *s {
        RopeScaling::None => None,
        RopeScaling::Linear { factor } => {
            Some(serde_json::json!({"rope_type": ty, "factor": factor}))
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => Some(serde_json::json!({
            "rope_type": ty,
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        })),
    }
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::File {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Q/K rows from HF's half-split layout to adjacent pairs (llama.cpp's `permute`):
/// (H, 2, Dh/2, D) -> (H, Dh/2, 2, D).
fn to_adjacent(w: &Tensor, heads: i64) -> Tensor {
    let (rows, d) = (w.size()[0], w.size()[1]);
    w.reshape([heads, 2, rows / heads / 2, d])
        .transpose(1, 2)
        .reshape([rows, d])
}

/// The inverse of `to_adjacent`: (H, Dh/2, 2, D) -> (H, 2, Dh/2, D).
fn to_half_split(w: &Tensor, heads: i64) -> Tensor {
    let (rows, d) = (w.size()[0], w.size()[1]);
    w.reshape([heads, rows / heads / 2, 2, d])
        .transpose(1, 2)
        .reshape([rows, d])
}

/// For an adjacent-pairing model, the head count of a Q or K variable (whose rows move).
fn permuted_heads(cfg: &Config, name: &str) -> Option<i64> {
    if cfg.rope_pairing != RopePairing::Adjacent {
        return None;
    }
    if name.ends_with(".attn_q.weight") {
        Some(cfg.n_heads as i64)
    } else if name.ends_with(".attn_k.weight") {
        Some(cfg.n_kv_heads as i64)
    } else {
        None
    }
}

/// The safetensors files of a folder: the shards its index names, or `model.safetensors`.
/// Returns, for each tensor name, the file that holds it.
fn weight_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>, ModelError> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        let text = fs::read_to_string(&index).map_err(|e| file_err(&index, e))?;
        let idx: Index = serde_json::from_str(&text).map_err(|e| file_err(&index, e))?;
        for file in idx.weight_map.values() {
            if file.contains('/') || file.contains("..") {
                return Err(file_err(
                    &index,
                    format!("shard name `{file}` is not a file name"),
                ));
            }
        }
        return Ok(idx
            .weight_map
            .into_iter()
            .map(|(t, f)| (t, dir.join(f)))
            .collect());
    }
    let single = dir.join(WEIGHTS_FILE);
    if !single.is_file() {
        return Err(file_err(
            dir,
            format!("no {WEIGHTS_FILE} nor {INDEX_FILE} in this folder"),
        ));
    }
    Ok(header_names(&single)?
        .into_iter()
        .map(|n| (n, single.clone()))
        .collect())
}

/// The tensor names in a safetensors file's header, without reading its data (the whole
/// file is validated when it is loaded).
fn header_names(path: &Path) -> Result<Vec<String>, ModelError> {
    Ok(read_header(path)?
        .entries
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "__metadata__")
        .collect())
}

/// A safetensors file's header, read without its data.
struct Header {
    entries: serde_json::Map<String, serde_json::Value>,
    /// Where the data starts: 8 + the header's length.
    data_start: u64,
    file_len: u64,
}

fn read_header(path: &Path) -> Result<Header, ModelError> {
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(|e| file_err(path, e))?;
    let len = f.metadata().map_err(|e| file_err(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| file_err(path, "truncated: shorter than a safetensors header"))?;
    let n = u64::from_le_bytes(n);
    // safetensors' own cap on the header (100 MB), and it must fit in the file.
    if n > 100_000_000 || n > len.saturating_sub(8) {
        return Err(file_err(
            path,
            format!("header of {n} bytes does not fit in a {len}-byte file (truncated?)"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| file_err(path, e))?;
    let entries =
        serde_json::from_slice(&header).map_err(|e| file_err(path, format!("header: {e}")))?;
    Ok(Header {
        entries,
        data_start: 8 + n,
        file_len: len,
    })
}

/// Checks from its header alone that a safetensors file holds all the data the header
/// describes (the format has no gaps: the last tensor ends at the end of the file), so a
/// file cut short is refused before anything loads it.
pub fn check_safetensors(path: &Path) -> Result<(), ModelError> {
    let h = read_header(path)?;
    let end = h
        .entries
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let want = h.data_start + end;
    if want != h.file_len {
        return Err(file_err(
            path,
            format!(
                "{} bytes, but its header describes {want} (truncated?)",
                h.file_len
            ),
        ));
    }
    Ok(())
}

/// [`check_safetensors`] on every weight file of the HF folder `dir`.
pub fn check_weight_files(dir: &Path) -> Result<(), ModelError> {
    let files: std::collections::BTreeSet<PathBuf> = weight_files(dir)?.into_values().collect();
    files.iter().try_for_each(|f| check_safetensors(f))
}

/// One tensor's data as f32 (f32, f16 and bf16 files).
fn to_f32(
    view: &safetensors::tensor::TensorView<'_>,
    path: &Path,
    name: &str,
) -> Result<Vec<f32>, ModelError> {
    use safetensors::Dtype;
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(file_err(
                path,
                format!("tensor `{name}` is {other:?}; supported are F32, F16 and BF16"),
            ))
        }
    })
}

/// HF tensors that carry nothing sinkrep needs (older checkpoints saved RoPE's table).
fn ignorable(hf: &str) -> bool {
    hf.ends_with(".rotary_emb.inv_freq")
}

impl Model {
    /// Loads a LLaMA-family HF checkpoint folder (`config.json` + safetensors) as f32.
    pub fn from_hf_dir(dir: &Path, device: Device) -> Result<Model, ModelError> {
        let hf = HfConfig::read(dir)?;
        let mut cfg = hf.to_config().map_err(|e| match e {
            ModelError::Unsupported(_) | ModelError::BadConfig(_) => {
                file_err(&dir.join(CONFIG_FILE), e)
            }
            e => e,
        })?;
        cfg.zero_init = true;
        let model = Model::new(&cfg, device)?;
        let files = weight_files(dir)?;
        // Which HF tensor each variable reads, grouped by file (each file read once).
        let mut wanted: BTreeMap<PathBuf, Vec<(String, String)>> = BTreeMap::new();
        let mut used = std::collections::BTreeSet::new();
        for name in model.vs.variables().keys() {
            let hf_name = hf_name(name).ok_or_else(|| {
                ModelError::BadConfig(format!("no HF name for variable `{name}`"))
            })?;
            let file = files.get(&hf_name).ok_or_else(|| {
                file_err(
                    dir,
                    format!("missing tensor `{hf_name}` (sinkrep `{name}`)"),
                )
            })?;
            used.insert(hf_name.clone());
            wanted
                .entry(file.clone())
                .or_default()
                .push((name.clone(), hf_name));
        }
        // A tied model may still ship lm_head (transformers saves it in some versions).
        let expected = |t: &str| {
            used.contains(t) || ignorable(t) || (cfg.tied_embeddings && t == "lm_head.weight")
        };
        let extra = files.keys().find(|t| !expected(t));
        if let Some(t) = extra {
            return Err(file_err(
                &files[t],
                format!("tensor `{t}` is not part of this architecture/variant (config.json)"),
            ));
        }
        let vars = model.vs.variables();
        for (path, names) in wanted {
            let bytes = fs::read(&path).map_err(|e| file_err(&path, e))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| file_err(&path, format!("not a complete safetensors file ({e})")))?;
            for (name, hf_name) in names {
                let view = st.tensor(&hf_name).map_err(|e| file_err(&path, e))?;
                let mut var = vars[&name].shallow_clone();
                let want: Vec<usize> = var.size().iter().map(|&x| x as usize).collect();
                if view.shape() != want.as_slice() {
                    return Err(file_err(
                        &path,
                        ModelError::ShapeMismatch {
                            name: hf_name,
                            expected: want,
                            found: view.shape().to_vec(),
                        },
                    ));
                }
                let data = to_f32(&view, &path, &hf_name)?;
                let mut t = Tensor::from_slice(&data).reshape(var.size());
                if let Some(heads) = permuted_heads(&cfg, &name) {
                    t = to_adjacent(&t, heads).contiguous();
                }
                tch::no_grad(|| var.set_data(&t.to_device(var.device())));
            }
        }
        let mut model = model;
        model.config.zero_init = false;
        Ok(model)
    }

    /// Writes this model's weights (f32) and `config.json` into `dir`, which must exist.
    /// Special token ids go into the config. Tokenizer files are the caller's.
    pub fn write_hf(
        &self,
        dir: &Path,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
    ) -> Result<(), ModelError> {
        let cfg = &self.config;
        let mut tensors: Vec<(String, F32View)> = Vec::new();
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in vars {
            let hf = hf_name(&name).ok_or_else(|| {
                ModelError::BadConfig(format!("no HF name for variable `{name}`"))
            })?;
            let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float);
            let t = match permuted_heads(cfg, &name) {
                Some(heads) => to_half_split(&t, heads),
                None => t,
            };
            let shape: Vec<usize> = t.size().iter().map(|&x| x as usize).collect();
            let data: Vec<f32> = Vec::try_from(&t.contiguous().flatten(0, -1))?;
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((hf, F32View { shape, bytes }));
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let path = dir.join(WEIGHTS_FILE);
        safetensors::serialize_to_file(tensors, &Some(meta), &path)
            .map_err(|e| file_err(&path, e))?;
        let hf = HfConfig::from_config(cfg, bos_id, eos_id);
        let mut json = serde_json::to_vec_pretty(&hf).map_err(|e| file_err(dir, e))?;
        json.push(b'\n');
        let path = dir.join(CONFIG_FILE);
        fs::write(&path, json).map_err(|e| file_err(&path, e))
    }
}

/// An f32 tensor's bytes for `safetensors::serialize_to_file`.
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for F32View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Is `dir` an HF checkpoint folder (has a `config.json`)?
pub fn is_hf_dir(dir: &Path) -> bool {
    dir.is_dir() && dir.join(CONFIG_FILE).is_file()
}

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// The tokenizer of an HF folder: `tokenizer.json`, its BOS/EOS ids from `config.json`
/// (or `tokenizer_config.json`'s token strings), and whether to add a BOS from
/// `tokenizer_config.json`'s `add_bos_token` (else from the post-processor).
pub fn read_tokenizer(dir: &Path, hf: &HfConfig) -> Result<GgufTokenizer, ModelError> {
    let path = dir.join(TOKENIZER_FILE);
    let json = fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
    let tc_path = dir.join(TOKENIZER_CONFIG_FILE);
    let tc: serde_json::Value = match fs::read_to_string(&tc_path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| file_err(&tc_path, e))?,
        Err(_) => serde_json::Value::Null,
    };
    let add_bos = tc.get("add_bos_token").and_then(|v| v.as_bool());
    // A token string, or an AddedToken object (`{"content": ...}`).
    let token_str = |key: &str| {
        let v = tc.get(key)?;
        v.as_str()
            .or_else(|| v.get("content").and_then(|c| c.as_str()))
            .map(str::to_string)
    };
    let probe = GgufTokenizer::from_hf_json(&json, None, None, Some(false))
        .map_err(|e| file_err(&path, e))?;
    let bos = hf
        .bos_token_id
        .or_else(|| token_str("bos_token").and_then(|t| probe.piece_id(&t)));
    let eos = hf
        .eos_id()
        .or_else(|| token_str("eos_token").and_then(|t| probe.piece_id(&t)));
    GgufTokenizer::from_hf_json(&json, bos, eos, add_bos).map_err(|e| file_err(&path, e))
}

/// Writes `tokenizer.json` and `tokenizer_config.json` (BOS policy, special tokens,
/// context length) for `tok` into `dir`.
pub fn write_tokenizer(dir: &Path, tok: &GgufTokenizer, max_len: usize) -> Result<(), ModelError> {
    let path = dir.join(TOKENIZER_FILE);
    let json = tok.to_hf_json().map_err(|e| file_err(&path, e))?;
    fs::write(&path, json).map_err(|e| file_err(&path, e))?;
    let piece = |id: Option<u32>| id.and_then(|i| tok.token_piece(i)).map(str::to_string);
    let tc = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": tok.add_bos(),
        "add_eos_token": false,
        "bos_token": piece(tok.bos_id()),
        "eos_token": piece(tok.eos_id()),
        "model_max_length": max_len,
    });
    let path = dir.join(TOKENIZER_CONFIG_FILE);
    let mut bytes = serde_json::to_vec_pretty(&tc).map_err(|e| file_err(&path, e))?;
    bytes.push(b'\n');
    fs::write(&path, bytes).map_err(|e| file_err(&path, e))
}
