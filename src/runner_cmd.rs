//! `sinkrep list | run | verify | figures | report`: the replication runner's commands.

use anyhow::{bail, Context, Result};
use clap::Args;
use sinkrep_runner::{
    compare_checksums, make_figures, run_replications_with, summary_table, verify, write_report,
    FigureStyle, Registry, RunOptions, Scale,
};
use std::path::{Path, PathBuf};

use crate::analyze::DeviceArg;

/// Every registered replication, one crate per paper claim under replications/.
pub fn registry() -> Result<Registry> {
    Ok(Registry::new(vec![
        sinkrep_variance_discrepancy::replication()?,
        sinkrep_super_neurons::replication()?,
        sinkrep_arbitrary_sinks::replication()?,
        sinkrep_headwise_rmsnorm::replication()?,
    ])?)
}

/// The repository this binary was built from: default home of runs/, data/baselines/,
/// figures/ and REPORT.md, whatever the current directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn default_scale() -> Scale {
    if tch::Cuda::is_available() {
        Scale::Gpu
    } else {
        Scale::Cpu
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Replication id, several ids separated by commas (they share one invocation, so a
    /// model they all need is trained once), or `all`.
    #[arg(default_value = "all")]
    pub id: String,
    /// smoke (CI, seconds), cpu (default without CUDA), gpu (default with CUDA).
    #[arg(long)]
    pub scale: Option<Scale>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Output root; runs land in <out>/<scale>/<id>/. Default: <repo>/runs.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Base seed (replications derive their per-seed streams from it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compute threads (default: the number of cores). Analyses of pretrained models use
    /// them as libtorch intra-op threads; independent training runs go one per thread,
    /// each single-threaded, so no number depends on this.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Judge claim 4 (`headwise-rmsnorm` only) from runs trained elsewhere instead of
    /// training: DIR/<variant>/seed-<N>/ as `sinkrep train` or scripts/peers/train_ddp.py
    /// write them, for the scale's seeds (from --seed) and judged steps.
    #[arg(long, value_name = "DIR")]
    pub from_runs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub scale: Option<Scale>,
    /// Output root of the runs to check. Default: <repo>/runs.
    #[arg(long)]
    pub runs: Option<PathBuf>,
    /// Baselines root. Default: <repo>/data/baselines.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Rewrite the baselines from the runs and say what changed.
    #[arg(long)]
    pub update: bool,
    /// Show every metric, not only those that moved.
    #[arg(long)]
    pub all: bool,
    /// Instead: check that two output roots (or run folders) have identical artifact checksums.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with_all = ["update", "baseline"])]
    pub same_checksums: Option<Vec<PathBuf>>,
}

#[derive(Debug, Args)]
pub struct FiguresArgs {
    #[arg(long)]
    pub scale: Option<Scale>,
    /// Default: <repo>/runs.
    #[arg(long)]
    pub runs: Option<PathBuf>,
    /// Default: <repo>/figures.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(long)]
    pub scale: Option<Scale>,
    /// Default: <repo>/runs.
    #[arg(long)]
    pub runs: Option<PathBuf>,
    /// Figures folder the report links to. Default: <repo>/figures.
    #[arg(long)]
    pub figures: Option<PathBuf>,
    /// Default: <repo>/REPORT.md.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn or_repo(p: &Option<PathBuf>, rel: &str) -> PathBuf {
    p.clone().unwrap_or_else(|| repo_root().join(rel))
}

pub fn list() -> Result<()> {
    print!("{}", registry()?.list_table());
    Ok(())
}

pub fn run(a: &RunArgs) -> Result<()> {
    if let Some(n) = a.threads {
        if n < 1 {
            bail!("--threads must be at least 1");
        }
        tch::set_num_threads(n);
    }
    let device = a.device.resolve()?;
    let device_name = match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let scale = a.scale.unwrap_or_else(default_scale);
    let reg = match &a.from_runs {
        None => registry()?,
        Some(dir) => {
            let id = sinkrep_headwise_rmsnorm::claim()?.id;
            if a.id != id {
                bail!("--from-runs judges claim 4 only: `sinkrep run {id} --from-runs DIR`");
            }
            // Read and check the whole import before the runner empties the run folder.
            let import = sinkrep_headwise_rmsnorm::from_runs::Import::read(dir, scale, a.seed)?;
            Registry::new(vec![sinkrep_headwise_rmsnorm::from_runs::replication(
                import,
            )?])?
        }
    };
    let info = crate::env::collect();
    let mut env = serde_json::to_value(&info)?;
    if let Some(o) = env.as_object_mut() {
        // Machine-specific paths are not part of a run's identity.
        for k in ["cache_root", "inputs_dir", "venv_dir"] {
            o.remove(k);
        }
        o.insert("git_rev".into(), info.git_revision.clone().into());
        o.insert("git_dirty".into(), info.git_dirty.into());
    }
    let opts = RunOptions {
        scale,
        seed: a.seed,
        out: or_repo(&a.out, "runs"),
        device_name,
        env,
        progress: true,
        // Independent training runs go one per core (each on one intra-op thread), so
        // their numbers are the same whatever the count.
        jobs: a
            .threads
            .map(|n| n as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let ids: Vec<String> = if a.id == "all" {
        vec![]
    } else {
        a.id.split(',').map(|s| s.trim().to_string()).collect()
    };
    let res = run_replications_with(&reg, &ids, &opts, &mut |e| eprintln!("{e}"));
    match res {
        Ok(summaries) => {
            print!("{}", summary_table(&summaries));
            Ok(())
        }
        Err(sinkrep_runner::Error::ReplicationsFailed {
            failed, summaries, ..
        }) => {
            print!("{}", summary_table(&summaries));
            let names: Vec<String> = failed.iter().map(|(id, e)| format!("{id}: {e}")).collect();
            bail!(
                "{} replication(s) failed: {}",
                failed.len(),
                names.join("; ")
            )
        }
        Err(e) => Err(e.into()),
    }
}

pub fn verify_cmd(a: &VerifyArgs) -> Result<()> {
    if let Some(pair) = &a.same_checksums {
        let cmp = compare_checksums(&pair[0], &pair[1])?;
        print!("{cmp}");
        if !cmp.identical() {
            bail!("{} and {} differ", pair[0].display(), pair[1].display());
        }
        return Ok(());
    }
    let reg = registry()?;
    let scale = a.scale.unwrap_or_else(default_scale);
    let out = verify(
        &reg,
        scale,
        &or_repo(&a.runs, "runs"),
        &or_repo(&a.baseline, "data/baselines"),
        a.update,
    )?;
    print!("{}", out.render(a.all));
    if !out.passed() && !a.update {
        bail!("drift beyond tolerance or a changed verdict at scale {scale} (see the table above)");
    }
    Ok(())
}

pub fn figures(a: &FiguresArgs) -> Result<()> {
    let reg = registry()?;
    let scale = a.scale.unwrap_or_else(default_scale);
    let style = FigureStyle::with_default_font();
    if let Some(n) = style.note() {
        eprintln!("{n}");
    }
    let out = or_repo(&a.out, "figures");
    let done = make_figures(&reg, &or_repo(&a.runs, "runs"), scale, &out, &style)?;
    for f in &done {
        match &f.skipped {
            Some(why) => eprintln!("{}: skipped ({why})", f.id),
            None => eprintln!("{}: {} file(s)", f.id, f.files.len()),
        }
    }
    Ok(())
}

pub fn report(a: &ReportArgs) -> Result<()> {
    let reg = registry()?;
    let scale = a.scale.unwrap_or_else(default_scale);
    let out = or_repo(&a.out, "REPORT.md");
    write_report(
        &reg,
        &or_repo(&a.runs, "runs"),
        scale,
        &or_repo(&a.figures, "figures"),
        &out,
    )
    .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", display_rel(&out));
    Ok(())
}

fn display_rel(p: &Path) -> String {
    p.strip_prefix(repo_root())
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.display().to_string())
}
