//! `sinkrep train`: the pre-training harness (`sinkrep-train`) as a command. A run folder
//! holds the harness's logs and checkpoints and, once the run completes, an HF export
//! of its final weights in `hf/` (so `sinkrep analyze --model RUN` works).

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use sinkrep_model::AttnVariant;
use sinkrep_runner::Scale;
use sinkrep_subjects::Subject;
use sinkrep_train::data::CORPUS_INPUT;
use sinkrep_train::train::{CONFIG_FILE, TOKENIZER_FILE};
use sinkrep_train::{Checkpoint, Corpus, RunOptions, TextTokenizer, TokenData, TrainConfig};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VariantArg {
    /// Plain attention.
    Baseline,
    /// The paper's head-wise RMSNorm, one gain vector shared by the heads.
    Headwise,
    /// Head-wise RMSNorm with one gain vector per head.
    HeadwisePerhead,
    /// Gated attention (sigmoid gate after SDPA).
    Gated,
}

impl From<VariantArg> for AttnVariant {
    fn from(v: VariantArg) -> AttnVariant {
        match v {
            VariantArg::Baseline => AttnVariant::Baseline,
            VariantArg::Headwise => AttnVariant::HeadwiseRmsnorm { shared: true },
            VariantArg::HeadwisePerhead => AttnVariant::HeadwiseRmsnorm { shared: false },
            VariantArg::Gated => AttnVariant::Gated,
        }
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long, value_enum)]
    pub variant: VariantArg,
    /// A training config (JSON, the `config.json` a run writes); --variant and --seed
    /// override its fields.
    #[arg(long, conflicts_with = "scale", required_unless_present = "scale")]
    pub config: Option<PathBuf>,
    /// The sizes of claim 4's judged subject at this scale
    /// (replications/headwise-rmsnorm/claim.toml, `[scale.S.subject]`).
    #[arg(long)]
    pub scale: Option<Scale>,
    /// With --scale: which subject, the text corpus's or the synthetic task's
    /// (`[scale.S.synthetic.subject]`: Bigram-Backcopy, which forms a sink in minutes).
    #[arg(long, value_enum, default_value_t = SubjectArg::Corpus, requires = "scale")]
    pub subject: SubjectArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The run folder (refused when it already holds a run, unless --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its latest checkpoint (bit-identical on CPU).
    #[arg(long)]
    pub resume: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = crate::analyze::DeviceArg::Auto)]
    pub device: crate::analyze::DeviceArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SubjectArg {
    /// The pinned Shakespeare/Milton corpus.
    Corpus,
    /// The synthetic task (generated, nothing to fetch).
    Synthetic,
}

/// Checkpoints along a `--scale` run: this many, evenly spaced (the last at the end).
const SCALE_CHECKPOINTS: usize = 4;

fn config_for(a: &TrainArgs) -> Result<TrainConfig> {
    let device = match a.device.resolve()? {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let variant = AttnVariant::from(a.variant);
    if let Some(path) = &a.config {
        if matches!(a.subject, SubjectArg::Synthetic) {
            bail!("--subject goes with --scale; a --config names its own data (its `task`)");
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut cfg: TrainConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a training config", path.display()))?;
        cfg.model.attn_variant = variant;
        cfg.seed = a.seed;
        return Ok(cfg);
    }
    let scale = a.scale.context("--config FILE or --scale S")?;
    let subject = match a.subject {
        SubjectArg::Corpus => Subject::Corpus,
        SubjectArg::Synthetic => Subject::Synthetic,
    };
    let sizes = subject.sizes(scale)?;
    let mut cfg = sizes.train_config(variant, a.seed, &device);
    cfg.ckpt_every = cfg.steps.div_ceil(SCALE_CHECKPOINTS).max(1);
    cfg.keep_checkpoints = 0;
    Ok(cfg)
}

/// The data of `cfg`: its synthetic task's sequences, or the pinned corpus tokenised as
/// its tokenizer kind (a BPE run's own tokenizer when resuming).
fn data_for(cfg: &TrainConfig, run: &Path, resume: bool) -> Result<TokenData> {
    if let Some(task) = &cfg.task {
        return Ok(TokenData::synthetic(task, cfg.seq_len)?);
    }
    let kind = cfg.tokenizer;
    crate::fetch_inputs(&[CORPUS_INPUT.to_string()])?;
    let corpus = Corpus::shakespeare()?;
    let saved = run.join(TOKENIZER_FILE);
    if resume && saved.is_file() {
        let json = std::fs::read_to_string(&saved)
            .with_context(|| format!("reading {}", saved.display()))?;
        return Ok(TokenData::with_tokenizer(
            &corpus,
            TextTokenizer::from_json(&json)?,
        )?);
    }
    Ok(TokenData::build(&corpus, kind)?)
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let out = &a.out;
    let holds_run = out.join(CONFIG_FILE).is_file();
    let outcome = if a.resume {
        if !holds_run {
            bail!("--resume: {} holds no run to continue", out.display());
        }
        let text = std::fs::read_to_string(out.join(CONFIG_FILE))?;
        let saved: TrainConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: bad run config", out.join(CONFIG_FILE).display()))?;
        let data = data_for(&saved, out, true)?;
        let opts = RunOptions {
            progress: true,
            ..RunOptions::default()
        };
        sinkrep_train::resume(out, &data, opts)?
    } else {
        let non_empty = out
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if holds_run || non_empty {
            bail!(
                "{}: already exists and is not empty; refusing to overwrite a run (--resume continues it)",
                out.display()
            );
        }
        let cfg = config_for(a)?;
        cfg.validate()?;
        let data = data_for(&cfg, out, false)?;
        eprintln!(
            "training {:?}, seed {}, {} parameters, {} steps of {} tokens, into {}",
            cfg.model.attn_variant,
            cfg.seed,
            cfg.model.n_params(),
            cfg.steps,
            cfg.tokens_per_step(),
            out.display()
        );
        let opts = RunOptions {
            progress: true,
            ..RunOptions::default()
        };
        sinkrep_train::train(&cfg, &data, out, opts)?
    };
    if !outcome.completed {
        bail!("training stopped at step {}", outcome.steps_done);
    }
    let hf_dir = out.join(crate::models::RUN_HF_DIR);
    if !hf_dir.exists() {
        let last = Checkpoint::latest(out)?.context("finished run without a checkpoint")?;
        let src = crate::models::Source::Checkpoint {
            ckpt: last.dir,
            run: out.clone(),
        };
        let (model, tok) = crate::models::load_llama(&src, tch::Device::Cpu)?;
        crate::models::write_hf_folder(&model, &tok, &hf_dir)?;
    }
    eprintln!(
        "done: {} steps, final train loss {:.4}, val loss {:.4}; logs {} and {}; HF folder {}",
        outcome.steps_done,
        outcome.final_train_loss.unwrap_or(f64::NAN),
        outcome.final_val_loss.unwrap_or(f64::NAN),
        outcome.train_csv.display(),
        outcome.val_csv.display(),
        hf_dir.display()
    );
    Ok(())
}
