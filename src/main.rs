//! `sinkrep`: the command-line entry point.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod analyze;
mod env;
mod models;
mod runner_cmd;
mod train_cmd;

#[derive(Parser)]
#[command(
    name = "sinkrep",
    version,
    about = "Reproduce 'The Structural Origin of Attention Sink' (arXiv 2605.06611) and analyse sinks in LLaMA-family and Gemma-3 models (GGUF, HF folders)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print versions (sinkrep, git, libtorch), CUDA, threads and cache paths; --matmul-peak
    /// measures the matmul rate.
    Env(env::EnvArgs),
    /// Per-layer sink report of a GGUF model: attention received, super neurons, massive dims.
    Analyze(analyze::AnalyzeArgs),
    /// The sink report with an intervention applied (mask-to-self, amplification, ablation).
    Intervene(analyze::InterveneArgs),
    /// Write a model sinkrep loads (GGUF, HF folder, training checkpoint) as an HF
    /// checkpoint folder.
    Export(models::ExportArgs),
    /// Train a model from scratch (claim 4's architecture and variants) into a run folder
    /// that ends with an HF export.
    Train(train_cmd::TrainArgs),
    /// List the registered replications (one per paper claim).
    List,
    /// Run replications; writes artifacts, metrics, verdicts and a manifest per run.
    Run(runner_cmd::RunArgs),
    /// Compare a run's metrics and verdicts with the committed baselines (drift table).
    Verify(runner_cmd::VerifyArgs),
    /// Regenerate figures (SVG + PNG) from run outputs alone.
    Figures(runner_cmd::FiguresArgs),
    /// Write REPORT.md from run outputs and figures.
    Report(runner_cmd::ReportArgs),
    /// Fetch and verify the pinned inputs (data/inputs.toml) into the cache.
    Fetch {
        /// Only these input ids (default: all).
        ids: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    // Before any libtorch operation (MKL reads its reproducibility mode once): analyses of
    // a given model give the same bits for any thread count. Not for `run` and `train`:
    // strict mode changes the bits of some 1-thread products too, and the trained subjects
    // amplify that past their committed baselines' tolerance (sinkrep_model::blas).
    if matches!(
        cli.command,
        Command::Analyze(_) | Command::Intervene(_) | Command::Export(_) | Command::Env(_)
    ) {
        sinkrep_model::blas::reproducible_blas();
    }
    sinkrep_model::alloc::keep_freed_memory();
    // Before anything asks libtorch about CUDA (sinkrep_model::cuda).
    sinkrep_model::cuda::load();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Env(a) => env::print(&a),
        Command::Analyze(a) => analyze::run_analyze(&a),
        Command::Intervene(i) => analyze::run_intervene(&i),
        Command::Export(a) => models::run_export(&a),
        Command::Train(a) => train_cmd::run(&a),
        Command::List => runner_cmd::list(),
        Command::Run(a) => runner_cmd::run(&a),
        Command::Verify(a) => runner_cmd::verify_cmd(&a),
        Command::Figures(a) => runner_cmd::figures(&a),
        Command::Report(a) => runner_cmd::report(&a),
        Command::Fetch { ids } => fetch_inputs(&ids),
    }
}

/// Fetches (if needed) and verifies the pinned inputs `ids` (all when empty).
pub fn fetch_inputs(ids: &[String]) -> Result<()> {
    let manifest = sinkrep_inputs::Manifest::pinned();
    let cache = sinkrep_inputs::Cache::default();
    let python = env::python();
    let wanted: Vec<_> = if ids.is_empty() {
        manifest.inputs.iter().collect()
    } else {
        ids.iter()
            .map(|id| manifest.get(id))
            .collect::<Result<_, _>>()?
    };
    for input in wanted {
        let was_ready = cache.is_ready(input);
        if !was_ready {
            eprintln!(
                "fetching {} ({}=={} from {:?})",
                input.id, input.package, input.version, input.registry
            );
        }
        let outcome = cache
            .fetch(input, &python)
            .with_context(|| format!("fetching input `{}`", input.id))?;
        if let (Some(notice), sinkrep_inputs::FetchOutcome::Downloaded) = (&input.notice, outcome) {
            eprintln!("{notice}");
        }
        if was_ready && !ids.is_empty() {
            continue; // quiet when another command asks for an input that is present
        }
        eprintln!(
            "{}: {} ({})",
            input.id,
            match outcome {
                sinkrep_inputs::FetchOutcome::AlreadyPresent => "present, verified earlier",
                sinkrep_inputs::FetchOutcome::Downloaded => "downloaded and verified",
            },
            cache.input_dir(&input.id).display()
        );
    }
    Ok(())
}
