//! What `--model` names, and `sinkrep export`: a GGUF file or pinned alias, an HF
//! checkpoint folder, a `sinkrep train` run folder, or one of its checkpoints; any of
//! them written out as an HF folder.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use sinkrep_model::hf;
use sinkrep_model::{GgufFile, GgufTokenizer, Model};
use sinkrep_train::{Checkpoint, TokenizerKind};
use std::path::{Path, PathBuf};

/// Where a model comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Gguf(PathBuf),
    /// An HF checkpoint folder (`config.json`, safetensors, `tokenizer.json`).
    Hf(PathBuf),
    /// A checkpoint folder of a `sinkrep train` run (`checkpoints/step-N`), and the run.
    Checkpoint {
        ckpt: PathBuf,
        run: PathBuf,
    },
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Gguf(p) | Source::Hf(p) => p,
            Source::Checkpoint { ckpt, .. } => ckpt,
        }
    }
}

/// The folder a finished `sinkrep train` run keeps its HF export in.
pub const RUN_HF_DIR: &str = "hf";

/// Resolves `--model`: a pinned alias (fetched and verified on first use), a GGUF file,
/// an HF folder, a training run folder (its `hf/` export when the run finished, else its
/// latest checkpoint) or a checkpoint folder; the pinned SmolLM2 when absent.
pub fn resolve(model: Option<&str>) -> Result<Source> {
    use sinkrep_analysis::pinned::PINNED_MODELS;
    let name = model.unwrap_or(PINNED_MODELS[0].alias);
    if let Some(m) = PINNED_MODELS.iter().find(|m| m.alias == name) {
        let (input, file) = (m.input, m.file);
        crate::fetch_inputs(&[input.to_string()])?;
        let dir = sinkrep_inputs::present(input)
            .with_context(|| format!("pinned input `{input}` is not ready after fetching"))?;
        return Ok(Source::Gguf(dir.join(file)));
    }
    let p = PathBuf::from(name);
    if p.is_file() {
        return Ok(Source::Gguf(p));
    }
    if p.is_dir() {
        if p.join(RUN_HF_DIR).join(hf::CONFIG_FILE).is_file() {
            return Ok(Source::Hf(p.join(RUN_HF_DIR)));
        }
        if p.join(sinkrep_train::checkpoint::STATE_FILE).is_file() {
            let run = p
                .parent()
                .and_then(Path::parent)
                .with_context(|| format!("{}: checkpoint folder outside a run", p.display()))?;
            return Ok(Source::Checkpoint {
                ckpt: p.clone(),
                run: run.to_path_buf(),
            });
        }
        if p.join(sinkrep_train::train::RUN_FILE).is_file() {
            let latest = Checkpoint::latest(&p)?.with_context(|| {
                format!("{}: training run without a checkpoint yet", p.display())
            })?;
            return Ok(Source::Checkpoint {
                ckpt: latest.dir,
                run: p,
            });
        }
        if p.join(hf::CONFIG_FILE).is_file() {
            return Ok(Source::Hf(p));
        }
        bail!(
            "--model {name}: a folder that is neither an HF checkpoint (config.json) nor a sinkrep training run"
        );
    }
    let aliases: Vec<&str> = PINNED_MODELS.iter().map(|m| m.alias).collect();
    bail!(
        "--model {name}: no such file or folder, and not a pinned model (aliases: {})",
        aliases.join(", ")
    )
}

/// The tokenizer a training run used (its byte vocabulary, or its BPE artifact).
fn run_tokenizer(run: &Path, kind: TokenizerKind) -> Result<GgufTokenizer> {
    match kind {
        // A synthetic-task run has no text: `--random N` draws ids from the model's
        // vocabulary, and text (bytes) ids beyond it are refused by the model.
        TokenizerKind::Bytes | TokenizerKind::Ids => Ok(GgufTokenizer::bytes()),
        TokenizerKind::Bpe { .. } => {
            let path = run.join(sinkrep_train::train::TOKENIZER_FILE);
            let json = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            GgufTokenizer::from_hf_json(&json, None, None, Some(false))
                .with_context(|| format!("tokenizer {}", path.display()))
        }
    }
}

/// Loads a LLaMA-family model (GGUF de-quantised to f32, HF folder, or training
/// checkpoint) with its tokenizer. Gemma-3 GGUFs are refused by name.
pub fn load_llama(src: &Source, device: tch::Device) -> Result<(Model, GgufTokenizer)> {
    let ctx = || format!("model of {}", src.path().display());
    match src {
        Source::Gguf(path) => {
            let file = GgufFile::open(path).context("loading the model")?;
            let tok = GgufTokenizer::from_gguf(&file)
                .with_context(|| format!("tokenizer of {}", path.display()))?;
            Ok((Model::from_gguf(&file, device).with_context(ctx)?, tok))
        }
        Source::Hf(dir) => {
            let model = Model::from_hf_dir(dir, device).with_context(ctx)?;
            let cfg = hf::HfConfig::read(dir)?;
            Ok((model, hf::read_tokenizer(dir, &cfg)?))
        }
        Source::Checkpoint { ckpt, run } => {
            let (model, state) = sinkrep_train::load_model(ckpt, device).with_context(ctx)?;
            Ok((model, run_tokenizer(run, state.config.tokenizer)?))
        }
    }
}

/// Writes `model` and `tok` as an HF folder at `out`: assembled in a temporary sibling
/// folder, then renamed, so `out` is complete or absent. Refuses an existing `out`.
pub fn write_hf_folder(model: &Model, tok: &GgufTokenizer, out: &Path) -> Result<()> {
    if out.exists() {
        bail!(
            "{}: already exists; refusing to overwrite it",
            out.display()
        );
    }
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a folder name", out.display()))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = (|| -> Result<()> {
        model.write_hf(&tmp, tok.bos_id(), tok.eos_id())?;
        hf::write_tokenizer(&tmp, tok, model.config.max_seq_len)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// A Hugging Face checkpoint folder: config.json, model.safetensors (f32),
    /// tokenizer.json, tokenizer_config.json.
    Hf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A GGUF (LLaMA family) or pinned alias, an HF folder, a `sinkrep train` run folder
    /// or one of its checkpoint folders.
    #[arg(long, value_name = "PATH|ALIAS")]
    pub model: Option<String>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Hf)]
    pub format: ExportFormat,
    /// The folder to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_export(a: &ExportArgs) -> Result<()> {
    let ExportFormat::Hf = a.format;
    if a.out.exists() {
        bail!(
            "{}: already exists; refusing to overwrite it",
            a.out.display()
        );
    }
    // A Gemma-3 GGUF is refused by its config reader, by name.
    let src = resolve(a.model.as_deref())?;
    let (model, tok) = load_llama(&src, tch::Device::Cpu)?;
    write_hf_folder(&model, &tok, &a.out)?;
    eprintln!(
        "wrote {} ({} from {})",
        a.out.display(),
        hf::HfConfig::from_config(&model.config, None, None)
            .architectures
            .join(","),
        src.path().display()
    );
    Ok(())
}
