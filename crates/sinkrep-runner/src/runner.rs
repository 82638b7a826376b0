//! `sinkrep run`: runs replications into `<out>/<scale>/<id>/`, judges their checks and
//! writes the manifest last; `sinkrep figures`: draws each finished run's figures.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::claim::Scale;
use crate::context::RunContext;
use crate::error::{io_err, Error, Result};
use crate::figures::FigureStyle;
use crate::json::json_bytes;
use crate::manifest::{
    outputs_digest, Manifest, Timing, MANIFEST, MANIFEST_SCHEMA, METRICS, VERDICTS,
};
use crate::registry::{Registry, Replication};
use crate::table::{fmt_seconds, TextTable};
use crate::verdict::{evaluate, Metrics, Verdict};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scale: Scale,
    pub seed: u64,
    /// Output root; runs go to `<out>/<scale>/<id>/`.
    pub out: PathBuf,
    /// The device the binary resolved from `--device` (e.g. `cpu`, `cuda:0`).
    pub device_name: String,
    /// Environment recorded in every manifest, filled by the binary. Suggested keys:
    /// `git_rev`, `git_dirty`, `sinkrep_version`, `tch_version`, `libtorch_version`,
    /// `cuda`, `threads`, `rustc`. See [`git_state`] for the first two.
    pub env: serde_json::Value,
    /// Show progress bars (they are hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// How many independent jobs (training runs) a replication may run at once, each on
    /// one intra-op thread. Never changes a number: every job is single-threaded.
    pub jobs: usize,
}

/// Folder under `<out>/<scale>/` shared by the replications of one invocation (models
/// trained once and reused, see `RunContext::shared_dir`). Emptied when an invocation
/// starts, so nothing in it outlives the code that made it.
pub const SHARED_DIR: &str = ".shared";

/// How one replication's run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Finished {
        verdict: Verdict,
        passed: usize,
        total: usize,
    },
    /// The run returned an error or panicked; no manifest was written.
    Failed { error: String },
    /// `all` was selected and this replication does not declare the scale.
    Skipped { reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub id: String,
    pub scale: Scale,
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub wall_seconds: f64,
}

/// Progress notifications for the binary to print (the library itself prints nothing).
#[derive(Debug, Clone, Copy)]
pub enum RunEvent<'a> {
    Started {
        id: &'a str,
        scale: Scale,
        run_dir: &'a Path,
    },
    Finished(&'a RunSummary),
}

impl fmt::Display for RunEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunEvent::Started { id, scale, run_dir } => {
                write!(f, "run {id} at scale {scale} -> {}", run_dir.display())
            }
            RunEvent::Finished(s) => match &s.status {
                RunStatus::Finished {
                    verdict,
                    passed,
                    total,
                } => write!(
                    f,
                    "{}: {verdict} ({passed}/{total} checks) in {}",
                    s.id,
                    fmt_seconds(s.wall_seconds)
                ),
                RunStatus::Failed { error } => write!(f, "{}: FAILED: {error}", s.id),
                RunStatus::Skipped { reason } => write!(f, "{}: skipped ({reason})", s.id),
            },
        }
    }
}

/// The table printed at the end of `sinkrep run`: id, verdict, checks, wall time.
pub fn summary_table(summaries: &[RunSummary]) -> String {
    let mut t = TextTable::new(&["id", "scale", "verdict", "checks", "wall time"]);
    for s in summaries {
        let (verdict, checks) = match &s.status {
            RunStatus::Finished {
                verdict,
                passed,
                total,
            } => (verdict.to_string(), format!("{passed}/{total}")),
            RunStatus::Failed { .. } => ("FAILED (error)".to_string(), "-".to_string()),
            RunStatus::Skipped { reason } => (format!("skipped: {reason}"), "-".to_string()),
        };
        let time = match s.status {
            RunStatus::Skipped { .. } => "-".to_string(),
            _ => fmt_seconds(s.wall_seconds),
        };
        t.row(vec![
            s.id.clone(),
            s.scale.to_string(),
            verdict,
            checks,
            time,
        ]);
    }
    t.render()
}

/// The run folder of replication `id` at `scale` under output root `out`.
pub fn run_dir(out: &Path, scale: Scale, id: &str) -> PathBuf {
    out.join(scale.as_str()).join(id)
}

/// Resolves the ids to run: empty or `all` means every replication (those that do not
/// declare the scale are skipped); named ids must exist and declare the scale.
fn select<'r>(
    registry: &'r Registry,
    ids: &[String],
    scale: Scale,
) -> Result<Vec<(&'r dyn Replication, bool)>> {
    if ids.is_empty() || ids.iter().any(|i| i == "all") {
        return Ok(registry
            .iter()
            .map(|r| (r, r.claim().supports(scale)))
            .collect());
    }
    let mut out: Vec<(&dyn Replication, bool)> = Vec::new();
    for id in ids {
        let r = registry.get(id)?;
        if !r.claim().supports(scale) {
            return Err(Error::ScaleNotDeclared {
                id: id.clone(),
                scale,
                declared: r.claim().scales_list(),
            });
        }
        if !out.iter().any(|(o, _)| o.claim().id == *id) {
            out.push((r, true));
        }
    }
    Ok(out)
}

/// [`run_replications_with`] without progress notifications.
pub fn run_replications(
    registry: &Registry,
    ids: &[String],
    opts: &RunOptions,
) -> Result<Vec<RunSummary>> {
    run_replications_with(registry, ids, opts, &mut |_| {})
}

/// Runs the selected replications one after the other. A replication that fails
/// (error or panic) is recorded and the others still run; the result is then
/// [`Error::ReplicationsFailed`], which carries every summary for the table.
pub fn run_replications_with(
    registry: &Registry,
    ids: &[String],
    opts: &RunOptions,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Vec<RunSummary>> {
    let selected = select(registry, ids, opts.scale)?;
    let shared = opts.out.join(opts.scale.as_str()).join(SHARED_DIR);
    if shared.exists() {
        std::fs::remove_dir_all(&shared).map_err(io_err(&shared))?;
    }
    let mut summaries = Vec::with_capacity(selected.len());
    let mut failed = Vec::new();
    for (rep, supported) in selected {
        let id = rep.claim().id.clone();
        let dir = run_dir(&opts.out, opts.scale, &id);
        if !supported {
            let s = RunSummary {
                id,
                scale: opts.scale,
                run_dir: dir,
                status: RunStatus::Skipped {
                    reason: format!("claim declares {}", rep.claim().scales_list()),
                },
                wall_seconds: 0.0,
            };
            on_event(RunEvent::Finished(&s));
            summaries.push(s);
            continue;
        }
        on_event(RunEvent::Started {
            id: &id,
            scale: opts.scale,
            run_dir: &dir,
        });
        let t0 = Instant::now();
        let status = match run_one(rep, opts, &dir, t0) {
            Ok(m) => RunStatus::Finished {
                verdict: m.verdict,
                passed: m.checks_passed,
                total: m.checks_total,
            },
            Err(e) => {
                let msg = format!("{e:#}");
                failed.push((id.clone(), msg.clone()));
                RunStatus::Failed { error: msg }
            }
        };
        let s = RunSummary {
            id,
            scale: opts.scale,
            run_dir: dir,
            status,
            wall_seconds: t0.elapsed().as_secs_f64(),
        };
        on_event(RunEvent::Finished(&s));
        summaries.push(s);
    }
    if failed.is_empty() {
        Ok(summaries)
    } else {
        Err(Error::ReplicationsFailed { failed, summaries })
    }
}

/// Empties the run folder, manifest first: from here until the new manifest is written,
/// the folder does not look finished.
fn prepare_run_dir(dir: &Path) -> Result<()> {
    let manifest = dir.join(MANIFEST);
    match std::fs::remove_file(&manifest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&manifest)(e)),
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))
}

fn run_one(
    rep: &dyn Replication,
    opts: &RunOptions,
    dir: &Path,
    t0: Instant,
) -> anyhow::Result<Manifest> {
    let claim = rep.claim();
    prepare_run_dir(dir)?;
    let mut ctx = RunContext::new(
        &claim.id,
        opts.scale,
        opts.seed,
        &opts.device_name,
        dir.to_path_buf(),
        opts.progress,
    )
    .with_jobs(opts.jobs.max(1));
    match catch_unwind(AssertUnwindSafe(|| rep.run(&mut ctx))) {
        Ok(r) => r?,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".to_string());
            anyhow::bail!("panicked: {msg}");
        }
    }

    // metrics.json, verdicts.json, then the manifest, last.
    let metrics: Metrics = ctx
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), v.is_finite().then_some(*v)))
        .collect();
    let bytes = json_bytes(&metrics, METRICS)?;
    ctx.write_artifact_unchecked(METRICS, &bytes)?;
    let verdicts = evaluate(claim, opts.scale, &metrics);
    let bytes = json_bytes(&verdicts, VERDICTS)?;
    ctx.write_artifact_unchecked(VERDICTS, &bytes)?;

    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        id: claim.id.clone(),
        claim_version: claim.version,
        scale: opts.scale,
        seed: opts.seed,
        seeds: ctx.recorded_seeds().to_vec(),
        device: opts.device_name.clone(),
        config: ctx.config.clone(),
        env: opts.env.clone(),
        runner_version: env!("CARGO_PKG_VERSION").to_string(),
        inputs: ctx.inputs.clone(),
        outputs_sha256: outputs_digest(&ctx.artifacts),
        artifacts: ctx.artifacts.clone(),
        verdict: verdicts.verdict,
        checks_passed: verdicts.passed,
        checks_total: verdicts.total,
        timing: Timing {
            stages: ctx.stages.clone(),
            wall_seconds: t0.elapsed().as_secs_f64(),
        },
    };
    let bytes = json_bytes(&manifest, MANIFEST)?;
    sinkrep_inputs::write_atomic(&dir.join(MANIFEST), &bytes)?;
    Ok(manifest)
}

/// Git revision and dirty flag (modified or untracked, not ignored, files) of the
/// working tree at `repo`, as JSON for [`RunOptions::env`]: `{"git_rev": "...", "git_dirty": bool}`, or nulls when `git` or
/// the repository is unavailable (a source tarball).
pub fn git_state(repo: &Path) -> serde_json::Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "HEAD"]);
    let dirty = rev
        .as_ref()
        .and_then(|_| git(&["status", "--porcelain"]))
        .map(|s| !s.is_empty());
    serde_json::json!({ "git_rev": rev, "git_dirty": dirty })
}

/// What `sinkrep figures` did for one replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiguresSummary {
    pub id: String,
    pub files: Vec<PathBuf>,
    /// Why nothing was drawn (no finished run at this scale).
    pub skipped: Option<String>,
}

/// `sinkrep figures`: for every replication with a finished run at `scale` under
/// `runs_dir`, empties `<figures_dir>/<id>/` of old `.svg`/`.png` files and calls its
/// `figures`. Replications without a finished run are skipped; one that fails is
/// reported and the others still draw ([`Error::FiguresFailed`]).
pub fn make_figures(
    registry: &Registry,
    runs_dir: &Path,
    scale: Scale,
    figures_dir: &Path,
    style: &FigureStyle,
) -> Result<Vec<FiguresSummary>> {
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for rep in registry.iter() {
        let id = rep.claim().id.clone();
        let rdir = run_dir(runs_dir, scale, &id);
        if !rdir.join(MANIFEST).is_file() {
            out.push(FiguresSummary {
                id,
                files: Vec::new(),
                skipped: Some(format!("no finished run at {}", rdir.display())),
            });
            continue;
        }
        let fdir = figures_dir.join(&id);
        let res = (|| -> anyhow::Result<Vec<PathBuf>> {
            Manifest::load(&rdir)?;
            if fdir.is_dir() {
                for e in std::fs::read_dir(&fdir).map_err(io_err(&fdir))? {
                    let p = e.map_err(io_err(&fdir))?.path();
                    if p.extension().is_some_and(|x| x == "svg" || x == "png") {
                        std::fs::remove_file(&p).map_err(io_err(&p))?;
                    }
                }
            }
            std::fs::create_dir_all(&fdir).map_err(io_err(&fdir))?;
            rep.figures(&rdir, &fdir, style)
        })();
        match res {
            Ok(mut files) => {
                files.sort();
                out.push(FiguresSummary {
                    id,
                    files,
                    skipped: None,
                });
            }
            Err(e) => failed.push((id, format!("{e:#}"))),
        }
    }
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(Error::FiguresFailed {
            total: registry.len(),
            failed,
        })
    }
}
