//! `sinkrep analyze` and `sinkrep intervene`: the per-layer sink report of a GGUF model.

use crate::models::Source;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use sinkrep_analysis::{analyze, random_tokens, AnalyzeOptions, SinkReport};
use sinkrep_model::{
    Ablate, AblateKind, Amplify, AmplifyMode, CenterMean, Decoder, GgufFile, GgufTokenizer,
    Interventions, Layers, MaskSelf, Precision,
};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

impl DeviceArg {
    pub fn resolve(self) -> Result<tch::Device> {
        Ok(match self {
            DeviceArg::Auto => tch::Device::cuda_if_available(),
            DeviceArg::Cpu => tch::Device::Cpu,
            DeviceArg::Cuda => {
                if !tch::Cuda::is_available() {
                    bail!(
                        "--device cuda: CUDA is not available on this machine ({}; see `sinkrep env`)",
                        sinkrep_model::cuda::load().describe()
                    );
                }
                tch::Device::Cuda(0)
            }
        })
    }
}

/// What to analyse and how.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A GGUF checkpoint (LLaMA family or Gemma-3), an HF checkpoint folder (LLaMA
    /// family: config.json, safetensors, tokenizer.json), a `sinkrep train` run or
    /// checkpoint folder, or a pinned model's alias:
    /// `smollm2-135m` (SmolLM2-135M-Instruct, the default) or `gemma3-270m` (Gemma-3-270M,
    /// under Google's Gemma terms); an alias is fetched and checksum-verified on first use.
    #[arg(long, value_name = "PATH|ALIAS")]
    pub model: Option<String>,
    /// Analyse this text (one sequence).
    #[arg(long, group = "input")]
    pub text: Option<String>,
    /// Analyse this file: its tokens cut into consecutive windows of --seq-len tokens.
    #[arg(long, group = "input")]
    pub text_file: Option<PathBuf>,
    /// Analyse N sequences of uniformly random token ids (Gu et al.'s protocol).
    #[arg(long, value_name = "N", group = "input")]
    pub random: Option<usize>,
    /// Tokens per sequence for --random and --text-file.
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// At most this many windows from --text-file.
    #[arg(long, default_value_t = 100)]
    pub max_seqs: usize,
    /// Seed of the random token ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The position whose sink status is reported (K): 0, the BOS for models that add one
    /// (Gemma-3), else the first text token. When K is a BOS, the first text token's
    /// column (position 1) is reported beside it.
    #[arg(long, default_value_t = 0)]
    pub sink_pos: usize,
    /// Threshold on alpha_K for Sink_K^eps, in (0, 1).
    #[arg(long, default_value_t = sinkrep_stats::SINK_EPS)]
    pub eps: f64,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Matmul precision: f32 (exact, the default) or bf16 (linear layers in bf16 with
    /// f32 accumulation; residual stream, softmax, the key and value projections and
    /// every statistic stay f32, and the sink prefix, positions 0..=K, comes from an f32
    /// pass; several times faster on CPUs with AMX/AVX512-BF16 and on GPUs; statistics
    /// within 4% of f32).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Emit JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the wall and CPU time of loading the model and of the analysis to stderr,
    /// one line each (`just bench-compare` reads them).
    #[arg(long)]
    pub timing: bool,
}

/// Wall and CPU time since `start`, for `--timing`.
struct Phase {
    wall: std::time::Instant,
    cpu: f64,
}

impl Phase {
    fn start() -> Phase {
        Phase {
            wall: std::time::Instant::now(),
            cpu: sinkrep_runner::timing::cpu_seconds(),
        }
    }

    /// `what: W s (cpu C s)` on stderr when `on`.
    fn report(&self, on: bool, what: &str) {
        if on {
            eprintln!(
                "sinkrep: {what}: {:.3}s (cpu {:.3}s)",
                self.wall.elapsed().as_secs_f64(),
                sinkrep_runner::timing::cpu_seconds() - self.cpu
            );
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    F32,
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Precision {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Centered,
    Plain,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MeanArg {
    Positions,
    Channels,
    Batch,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AblateArg {
    Zero,
    Mean,
}

/// The intervention, applied at --sink-pos.
#[derive(Debug, Args)]
pub struct InterveneArgs {
    #[command(flatten)]
    pub analyze: AnalyzeArgs,
    /// Make --sink-pos attend only to itself (in --mask-layers, default all layers).
    #[arg(long, group = "intervention")]
    pub mask_self: bool,
    /// Layers for --mask-self (comma-separated); default all.
    #[arg(long, value_delimiter = ',', requires = "mask_self")]
    pub mask_layers: Vec<usize>,
    /// Amplify the value-aggregation output at --sink-pos by LAMBDA.
    #[arg(
        long,
        value_name = "LAMBDA",
        group = "intervention",
        requires = "layers"
    )]
    pub amplify: Option<f64>,
    /// Layers for --amplify (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<usize>,
    /// centered: o' = mu + lambda (o - mu); plain: o' = lambda o (the control).
    #[arg(long, value_enum, default_value_t = ModeArg::Centered)]
    pub mode: ModeArg,
    /// The mean mu of centred amplification (see sinkrep-model's CenterMean).
    #[arg(long, value_enum, default_value_t = MeanArg::Positions)]
    pub mean: MeanArg,
    /// Ablate FFN channels at --sink-pos: LAYER:CHANNEL[,LAYER:CHANNEL...].
    #[arg(long, value_delimiter = ',', group = "intervention")]
    pub ablate: Vec<String>,
    /// zero, or mean (the channel's mean over the other positions).
    #[arg(long, value_enum, default_value_t = AblateArg::Zero)]
    pub ablate_kind: AblateArg,
}

/// The model, its tokenizer, and where they came from.
pub struct Loaded {
    pub model: Box<dyn Decoder>,
    pub tokenizer: GgufTokenizer,
    pub path: PathBuf,
}

/// Loads the model of `a` on its device, in its precision.
pub fn load_for(a: &AnalyzeArgs) -> Result<Loaded> {
    let mut loaded = load(a.model.as_deref(), a.device.resolve()?)?;
    loaded.model.set_precision(a.precision.into(), true);
    Ok(loaded)
}

pub fn load(model: Option<&str>, device: tch::Device) -> Result<Loaded> {
    let src = crate::models::resolve(model)?;
    let path = src.path().to_path_buf();
    let Source::Gguf(_) = src else {
        let (model, tokenizer) = crate::models::load_llama(&src, device)?;
        return Ok(Loaded {
            model: Box::new(model),
            tokenizer,
            path,
        });
    };
    let file = GgufFile::open(&path).context("loading the model")?;
    let tokenizer = GgufTokenizer::from_gguf(&file)
        .with_context(|| format!("tokenizer of {}", path.display()))?;
    let model = sinkrep_model::load_gguf(&file, device)
        .with_context(|| format!("model of {}", path.display()))?;
    Ok(Loaded {
        model,
        tokenizer,
        path,
    })
}

/// Refuses out-of-range numbers before anything is loaded, one line each.
pub fn check_args(a: &AnalyzeArgs) -> Result<()> {
    if !(a.eps > 0.0 && a.eps < 1.0) {
        bail!(
            "--eps must be in (0, 1) (a share of attention), got {}",
            a.eps
        );
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if a.seq_len == 0 {
        bail!("--seq-len must be at least 1");
    }
    if a.max_seqs == 0 {
        bail!("--max-seqs must be at least 1");
    }
    if a.random == Some(0) {
        bail!("--random must be at least 1");
    }
    if (a.random.is_some() || a.text_file.is_some()) && a.sink_pos >= a.seq_len {
        bail!(
            "--sink-pos {} is outside the {}-token sequences (--seq-len)",
            a.sink_pos,
            a.seq_len
        );
    }
    Ok(())
}

/// The first text token's position: 1 when the tokenizer adds a BOS, else 0.
fn first_text_pos(tok: &GgufTokenizer) -> usize {
    usize::from(tok.add_bos())
}

/// The token sequences the arguments ask for.
pub fn sequences(a: &AnalyzeArgs, loaded: &Loaded) -> Result<Vec<Vec<i64>>> {
    let tok = &loaded.tokenizer;
    let encode = |s: &str| -> Result<Vec<i64>> {
        Ok(tok
            .encode(s)
            .context("tokenizing")?
            .into_iter()
            .map(i64::from)
            .collect())
    };
    // With a BOS-adding tokenizer (Gemma-3) every sequence starts with BOS, as the model
    // was trained: position 0 is the BOS, the text follows.
    let bos: Vec<i64> = if tok.add_bos() {
        tok.bos_id().map(i64::from).into_iter().collect()
    } else {
        Vec::new()
    };
    if let Some(text) = &a.text {
        let ids = encode(text)?;
        if ids.len() <= bos.len() {
            bail!("--text is empty after tokenization");
        }
        return Ok(vec![ids]);
    }
    if a.seq_len <= bos.len() {
        bail!("--seq-len must leave room for text after the BOS (at least 2)");
    }
    if let Some(path) = &a.text_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let ids: Vec<i64> = tok
            .encode_with_bos(&text, false)
            .context("tokenizing")?
            .into_iter()
            .map(i64::from)
            .collect();
        let seqs: Vec<Vec<i64>> = ids
            .chunks_exact(a.seq_len - bos.len())
            .take(a.max_seqs)
            .map(|w| [bos.as_slice(), w].concat())
            .collect();
        if seqs.is_empty() {
            bail!(
                "{} has {} tokens, fewer than --seq-len {}",
                path.display(),
                ids.len(),
                a.seq_len
            );
        }
        return Ok(seqs);
    }
    if let Some(n) = a.random {
        if n == 0 {
            bail!("--random must be at least 1");
        }
        let seqs = random_tokens(
            n,
            a.seq_len - bos.len(),
            loaded.model.config().vocab_size,
            a.seed,
        );
        return Ok(seqs
            .into_iter()
            .map(|s| [bos.as_slice(), &s].concat())
            .collect());
    }
    bail!("say what to analyse: --text STR, --text-file FILE or --random N")
}

fn progress(n: usize) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(n as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if n > 1 {
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} analysing {pos}/{len} sequences [{elapsed_precise}] {wide_bar} {per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    } else {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb
}

pub fn report(
    loaded: &Loaded,
    seqs: &[Vec<i64>],
    a: &AnalyzeArgs,
    interventions: Interventions,
) -> Result<SinkReport> {
    let opts = AnalyzeOptions {
        sink_pos: a.sink_pos,
        eps: a.eps,
        batch: a.batch,
        interventions,
        compare_pos: Some(first_text_pos(&loaded.tokenizer)),
        ..AnalyzeOptions::default()
    };
    let pb = progress(seqs.len());
    let mut rep = analyze(loaded.model.as_ref(), seqs, &opts, &mut |done| {
        pb.set_position(done as u64)
    })?;
    pb.finish_and_clear();
    if let Some(nt) = rep.next_token.as_mut() {
        nt.text = loaded
            .tokenizer
            .token_text(nt.id as u32)
            .unwrap_or_default();
    }
    Ok(rep)
}

pub fn run_analyze(a: &AnalyzeArgs) -> Result<()> {
    check_args(a)?;
    let load = Phase::start();
    let loaded = load_for(a)?;
    load.report(a.timing, "load");
    let analysis = Phase::start();
    let seqs = sequences(a, &loaded)?;
    let rep = report(&loaded, &seqs, a, Interventions::default())?;
    analysis.report(
        a.timing,
        &format!("analysis of {}x{} tokens", rep.n_sequences, rep.n_tokens),
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print_table(&loaded, &rep, None);
    }
    Ok(())
}

pub fn interventions(i: &InterveneArgs, n_layers: usize) -> Result<Interventions> {
    let k = i.analyze.sink_pos;
    let check_layers = |ls: &[usize]| -> Result<()> {
        if let Some(l) = ls.iter().find(|&&l| l >= n_layers) {
            bail!("layer {l} does not exist (the model has {n_layers} layers)");
        }
        Ok(())
    };
    let mut iv = Interventions::default();
    if i.mask_self {
        check_layers(&i.mask_layers)?;
        iv.mask_self.push(MaskSelf {
            positions: vec![k],
            layers: if i.mask_layers.is_empty() {
                Layers::All
            } else {
                Layers::Only(i.mask_layers.clone())
            },
        });
    } else if let Some(lambda) = i.amplify {
        if !lambda.is_finite() {
            bail!("--amplify must be a finite number, got {lambda}");
        }
        check_layers(&i.layers)?;
        let mode = match i.mode {
            ModeArg::Plain => AmplifyMode::Plain,
            ModeArg::Centered => AmplifyMode::Centered(match i.mean {
                MeanArg::Positions => CenterMean::Positions,
                MeanArg::Channels => CenterMean::Channels,
                MeanArg::Batch => CenterMean::Batch,
            }),
        };
        iv.amplify.push(Amplify {
            positions: vec![k],
            layers: Layers::Only(i.layers.clone()),
            lambda,
            mode,
        });
    } else if !i.ablate.is_empty() {
        let mut by_layer: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for spec in &i.ablate {
            let (l, c) = spec
                .split_once(':')
                .and_then(|(l, c)| Some((l.trim().parse().ok()?, c.trim().parse().ok()?)))
                .with_context(|| format!("--ablate expects LAYER:CHANNEL, got `{spec}`"))?;
            check_layers(&[l])?;
            by_layer.entry(l).or_default().push(c);
        }
        for (layer, channels) in by_layer {
            iv.ablate.push(Ablate {
                layer,
                channels,
                positions: vec![k],
                kind: match i.ablate_kind {
                    AblateArg::Zero => AblateKind::Zero,
                    AblateArg::Mean => AblateKind::Mean,
                },
            });
        }
    } else {
        bail!("say which intervention: --mask-self, --amplify LAMBDA --layers L,... or --ablate L:C,...");
    }
    Ok(iv)
}

#[derive(Serialize)]
struct InterveneOutput<'a> {
    intervention: &'a Interventions,
    #[serde(flatten)]
    after: &'a SinkReport,
    before: &'a SinkReport,
}

pub fn run_intervene(i: &InterveneArgs) -> Result<()> {
    let a = &i.analyze;
    check_args(a)?;
    if let Some(lambda) = i.amplify.filter(|l| !l.is_finite()) {
        bail!("--amplify must be a finite number, got {lambda}");
    }
    let load = Phase::start();
    let loaded = load_for(a)?;
    if let Some(bad) = i
        .ablate
        .iter()
        .filter_map(|s| s.split_once(':'))
        .filter_map(|(_, c)| c.trim().parse::<usize>().ok())
        .find(|&c| c >= loaded.model.config().d_ff)
    {
        bail!(
            "FFN channel {bad} does not exist (the model has {})",
            loaded.model.config().d_ff
        );
    }
    load.report(a.timing, "load");
    let iv = interventions(i, loaded.model.config().n_layers)?;
    let analysis = Phase::start();
    let seqs = sequences(a, &loaded)?;
    let before = report(&loaded, &seqs, a, Interventions::default())?;
    let after = report(&loaded, &seqs, a, iv.clone())?;
    analysis.report(a.timing, "analysis (before and after the intervention)");
    if a.json {
        let out = InterveneOutput {
            intervention: &iv,
            after: &after,
            before: &before,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&loaded, &after, Some(&before));
    }
    Ok(())
}

fn print_table(loaded: &Loaded, rep: &SinkReport, before: Option<&SinkReport>) {
    println!(
        "model {} ({}) | {} sequence(s) x {} tokens | sink position {} | eps {} | {} matmuls",
        loaded.path.display(),
        loaded.model.family(),
        rep.n_sequences,
        rep.n_tokens,
        rep.sink_pos,
        rep.eps,
        match rep.precision {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    );
    if let Some(nt) = &rep.next_token {
        println!("next token: {} {:?}", nt.id, nt.text);
    }
    let k_is = if loaded.tokenizer.add_bos() && rep.sink_pos == 0 {
        "the BOS"
    } else if !loaded.tokenizer.add_bos() && rep.sink_pos == 0 {
        "the first text token; this model adds no BOS"
    } else {
        "a text token"
    };
    println!("K = {} is {k_is}", rep.sink_pos);
    for note in &rep.site_notes {
        println!("site: {note}");
    }
    let b = |f: fn(&sinkrep_analysis::LayerReport) -> f64, l: usize| {
        before
            .map(|r| format!(" ({:.3})", f(&r.layers[l])))
            .unwrap_or_default()
    };
    let cmp_head = rep
        .compare_sink_metric
        .as_ref()
        .map(|c| {
            format!(
                " {:>9} {:>9}",
                format!("mass@{}", c.pos),
                format!("frac@{}", c.pos)
            )
        })
        .unwrap_or_default();
    println!(
        "{:>5} {:>18} {:>18}{cmp_head} {:>12} {:>12} {:>12} {:>12}  top FFN channel at K",
        "layer", "attn_mass", "sink_frac", "agg_var_rat", "dom_ratio", "maxabs_K", "maxabs_rest"
    );
    for l in &rep.layers {
        let top = l
            .top_ffn_channels
            .first()
            .map(|c| format!("{} = {:.1}", c.channel, c.value))
            .unwrap_or_default();
        let cmp = l
            .compare
            .as_ref()
            .map(|c| format!(" {:>9.3} {:>9.3}", c.attn_mass, c.sink_frac))
            .unwrap_or_default();
        println!(
            "{:>5} {:>18} {:>18}{cmp} {:>12.3} {:>12.2} {:>12.2} {:>12.2}  {}",
            l.layer,
            format!("{:.3}{}", l.attn_mass, b(|r| r.attn_mass, l.layer)),
            format!("{:.3}{}", l.sink_frac, b(|r| r.sink_frac, l.layer)),
            l.agg_var_ratio,
            l.dom_ratio,
            l.max_abs_sink,
            l.max_abs_others,
            top
        );
    }
    let before_metric = before
        .map(|r| format!(" (before: {:.1}%)", r.sink_metric.value))
        .unwrap_or_default();
    println!(
        "Sink_{}^{} = {:.1}%{}",
        rep.sink_pos, rep.eps, rep.sink_metric.value, before_metric
    );
    if let Some(c) = &rep.compare_sink_metric {
        println!(
            "Sink_{}^{} = {:.1}% (the first text token, beside the BOS)",
            c.pos, c.eps, c.value
        );
    }
    println!("super neurons ({}):", rep.super_neuron_criterion);
    if rep.super_neurons.is_empty() {
        println!("  none");
    }
    for s in &rep.super_neurons {
        let feeds: Vec<String> = s
            .feeds
            .iter()
            .map(|f| format!("{} ({:+.3})", f.channel, f.value))
            .collect();
        println!(
            "  layer {:>2} channel {:>5}: {:>10.1} ({:.0}x median), elsewhere max {:.1}; feeds dims {}; top-2 energy share {:.2}",
            s.layer,
            s.channel,
            s.activation,
            s.ratio_to_median,
            s.max_abs_elsewhere,
            feeds.join(", "),
            s.top2_energy_share
        );
    }
}
