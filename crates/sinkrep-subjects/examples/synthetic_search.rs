//! The synthetic-subject search (issue 14): where does a from-scratch model form an
//! attention sink within a few CPU-minutes?
//!
//! Trains a grid over task x start token x model size x learning rate x weight decay,
//! every run measured along training (Sink_0^0.3, attention on position 0, DomRatio of
//! h_0, top FFN activation at position 0, validation loss) with the same measurement the
//! replications use (`sinkrep_subjects::measure`), and writes:
//!
//! - `curves.csv`: one row per (config, step);
//! - `summary.csv` and `summary.md`: one row per config, final state and first sink step;
//! - `timing.csv`: CPU seconds per run (the only numbers that vary between runs);
//! - `sink_vs_steps.svg/.png`: Sink_0 over steps, a heatmap row per config;
//! - `manifest.json`: the machine, the grid and every output's sha256.
//!
//! `just synthetic-search` runs it into `docs/research/synthetic-search/`. Runs train in
//! parallel, one libtorch thread each, so the numbers do not depend on `--jobs`.
//!
//! Usage: `synthetic_search [--out DIR] [--jobs N] [--only SUBSTR] [--steps N] [--replot]`
//! (`--replot` redraws the figure from the folder's `curves.csv` without training).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sinkrep_model::{AttnVariant, Precision};
use sinkrep_runner::{heatmap, ColourMap, FigureStyle, Heatmap};
use sinkrep_subjects::{analysis_windows, sink_step, train_subject, GainInit, SubjectSizes};
use sinkrep_train::{Start, SyntheticTask, TaskKind, TokenData};

/// One point of the grid.
#[derive(Debug, Clone, Serialize)]
struct Point {
    task: TaskKind,
    start: Start,
    n_layers: usize,
    lr: f64,
    weight_decay: f64,
}

impl Point {
    fn id(&self) -> String {
        let task = match self.task {
            TaskKind::BigramBackcopy => "bbc",
            TaskKind::TriggerRecall => "recall",
        };
        let start = match self.start {
            Start::Bos => "bos",
            Start::Fixed => "fixed",
            Start::Random => "random",
        };
        format!(
            "{task}_{start}_L{}_lr{}_wd{}",
            self.n_layers, self.lr, self.weight_decay
        )
    }

    fn sizes(&self, steps: usize) -> SubjectSizes {
        SubjectSizes {
            d_model: 64,
            n_layers: self.n_layers,
            n_heads: 2,
            d_ff: 256,
            bpe_vocab: None,
            seq_len: 64,
            batch: 32,
            steps,
            warmup: 100,
            lr: self.lr,
            // Constant after warm-up (the pre-study's schedule).
            min_lr: self.lr,
            weight_decay: self.weight_decay,
            decay_gains: false,
            gain_init: GainInit::One,
            eval_every: 50,
            eval_batches: 4,
            analysis_windows: 32,
            precision: Precision::F32,
            task: Some(task(self.task, self.start, steps)),
        }
    }
}

/// The task of the search: V 64 with 10 triggers, a soft bigram (8 successors,
/// Dirichlet(1)); enough training sequences that a run sees each about once.
fn task(kind: TaskKind, start: Start, steps: usize) -> SyntheticTask {
    SyntheticTask {
        task: kind,
        vocab: 64,
        triggers: 10,
        successors: 8,
        concentration: 1.0,
        start,
        train_seqs: steps * 32,
        val_seqs: 256,
        seed: 1,
    }
}

/// The grid, in order: both tasks (recall at 2 layers, the depth an induction head
/// needs; backcopy at 1 and 2), every start, lr {1e-2, 3e-2}, wd {0.1, 0.5}.
fn grid() -> Vec<Point> {
    let mut out = Vec::new();
    for (task, layers) in [
        (TaskKind::BigramBackcopy, 1),
        (TaskKind::BigramBackcopy, 2),
        (TaskKind::TriggerRecall, 2),
    ] {
        for start in [Start::Bos, Start::Fixed, Start::Random] {
            for lr in [3e-2, 1e-2] {
                for wd in [0.5, 0.1] {
                    out.push(Point {
                        task,
                        start,
                        n_layers: layers,
                        lr,
                        weight_decay: wd,
                    });
                }
            }
        }
    }
    out
}

#[derive(Serialize)]
struct CurveRow<'a> {
    config: &'a str,
    step: usize,
    sink_pct: f64,
    attn_mass_max: f64,
    dom_ratio_max: f64,
    top_ffn_abs: f64,
    top_ffn_ratio: f64,
    max_abs_ratio: f64,
    agg_var_ratio_mean: f64,
    val_loss: f64,
}

#[derive(Serialize)]
struct SummaryRow {
    config: String,
    task: TaskKind,
    start: Start,
    n_layers: usize,
    lr: f64,
    weight_decay: f64,
    steps: usize,
    final_sink_pct: f64,
    /// Mean Sink_0 over the last 5 evaluations (attention on position 0 is noisy at a
    /// constant learning rate).
    late_sink_pct: f64,
    final_attn_mass_max: f64,
    final_dom_ratio_max: f64,
    final_top_ffn_abs: f64,
    final_max_abs_ratio: f64,
    final_val_loss: f64,
    /// First evaluation step with Sink_0 >= 30%; empty if none.
    first_sink_step: Option<usize>,
}

#[derive(Serialize)]
struct TimingRow<'a> {
    config: &'a str,
    cpu_seconds: f64,
}

struct Args {
    out: PathBuf,
    jobs: usize,
    only: Option<String>,
    steps: usize,
    replot: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        out: PathBuf::from("docs/research/synthetic-search"),
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        only: None,
        steps: 1500,
        replot: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => a.out = PathBuf::from(value()?),
            "--jobs" => a.jobs = value()?.parse().context("--jobs: not a number")?,
            "--only" => a.only = Some(value()?),
            "--steps" => a.steps = value()?.parse().context("--steps: not a number")?,
            "--replot" => a.replot = true,
            "-h" | "--help" => {
                println!(
                    "synthetic_search [--out DIR] [--jobs N] [--only SUBSTR] [--steps N] [--replot]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    if a.jobs == 0 || a.steps < 100 {
        bail!("--jobs must be >= 1 and --steps >= 100");
    }
    Ok(a)
}

struct Outcome {
    point: Point,
    id: String,
    evals: Vec<sinkrep_subjects::EvalPoint>,
    val: Vec<(usize, f64)>,
    cpu_seconds: f64,
}

fn run_one(p: &Point, steps: usize, scratch: &Path) -> Result<Outcome> {
    let sizes = p.sizes(steps);
    let task = sizes.task.context("no task")?;
    let data = TokenData::synthetic(&task, sizes.seq_len)?;
    let windows = analysis_windows(&data, sizes.analysis_windows, sizes.seq_len)?;
    let cfg = sizes.train_config(AttnVariant::Baseline, 0, "cpu");
    let id = p.id();
    let t0 = cpu_time();
    let wall = Instant::now();
    let trained = train_subject(&cfg, &data, &windows, &scratch.join(&id), &|_| {})?;
    let cpu_seconds = cpu_time().map_or(wall.elapsed().as_secs_f64(), |t| t - t0.unwrap_or(0.0));
    eprintln!("{id}: done in {:.0} s", wall.elapsed().as_secs_f64());
    Ok(Outcome {
        point: p.clone(),
        id,
        evals: trained.measured.evals.clone(),
        val: trained.measured.val.clone(),
        cpu_seconds,
    })
}

/// This thread's CPU time (Linux), in seconds.
fn cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() -> Result<()> {
    let a = args()?;
    if a.replot {
        return replot(&a.out);
    }
    let points: Vec<Point> = grid()
        .into_iter()
        .filter(|p| a.only.as_ref().is_none_or(|s| p.id().contains(s.as_str())))
        .collect();
    if points.is_empty() {
        bail!("--only matches no config of the grid");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    eprintln!(
        "{} configs x {} steps on {} jobs",
        points.len(),
        a.steps,
        a.jobs
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.jobs)
        .build()?;
    let outcomes: Vec<Outcome> = pool.install(|| {
        use rayon::prelude::*;
        points
            .par_iter()
            .map(|p| run_one(p, a.steps, scratch.path()).with_context(|| p.id()))
            .collect::<Result<Vec<_>>>()
    })?;
    write_outputs(&a, &outcomes)
}

fn write_outputs(a: &Args, outcomes: &[Outcome]) -> Result<()> {
    let mut curves = csv::Writer::from_writer(Vec::new());
    let mut summary = csv::Writer::from_writer(Vec::new());
    let mut timing = csv::Writer::from_writer(Vec::new());
    let mut md = String::from(
        "| config | Sink_0 final (%) | Sink_0 last 5 evals (%) | alpha_0 max | DomRatio h_0 | top FFN at 0 | max\\|h_0\\| / others | val loss | first step Sink_0 >= 30% | CPU s |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let val: BTreeMap<usize, f64> = o.val.iter().copied().collect();
        for e in &o.evals {
            curves.serialize(CurveRow {
                config: &o.id,
                step: e.step,
                sink_pct: e.sink_pct,
                attn_mass_max: e.attn_mass_max,
                dom_ratio_max: e.dom_ratio_max,
                top_ffn_abs: e.top_ffn_abs,
                top_ffn_ratio: e.top_ffn_ratio,
                max_abs_ratio: e.max_abs_ratio,
                agg_var_ratio_mean: e.agg_var_ratio_mean,
                val_loss: val.get(&e.step).copied().unwrap_or(f64::NAN),
            })?;
        }
        let last = o.evals.last().context("a run without evaluations")?;
        let tail = &o.evals[o.evals.len().saturating_sub(5)..];
        let late = tail.iter().map(|e| e.sink_pct).sum::<f64>() / tail.len() as f64;
        let step = sink_step(&o.evals);
        let first = (!step.is_nan()).then_some(step as usize);
        let row = SummaryRow {
            config: o.id.clone(),
            task: o.point.task,
            start: o.point.start,
            n_layers: o.point.n_layers,
            lr: o.point.lr,
            weight_decay: o.point.weight_decay,
            steps: last.step,
            final_sink_pct: last.sink_pct,
            late_sink_pct: late,
            final_attn_mass_max: last.attn_mass_max,
            final_dom_ratio_max: last.dom_ratio_max,
            final_top_ffn_abs: last.top_ffn_abs,
            final_max_abs_ratio: last.max_abs_ratio,
            final_val_loss: val.get(&last.step).copied().unwrap_or(f64::NAN),
            first_sink_step: first,
        };
        timing.serialize(TimingRow {
            config: &o.id,
            cpu_seconds: o.cpu_seconds,
        })?;
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} | {:.1} | {:.3} | {} | {:.0} |\n",
            row.config,
            row.final_sink_pct,
            row.late_sink_pct,
            row.final_attn_mass_max,
            row.final_dom_ratio_max,
            row.final_top_ffn_abs,
            row.final_max_abs_ratio,
            row.final_val_loss,
            first.map_or("-".to_string(), |s| s.to_string()),
            o.cpu_seconds,
        ));
        summary.serialize(row)?;
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, bytes) in [
        ("curves.csv", curves.into_inner()?),
        ("summary.csv", summary.into_inner()?),
        ("summary.md", md.into_bytes()),
        ("timing.csv", timing.into_inner()?),
    ] {
        let path = a.out.join(name);
        sinkrep_inputs::write_atomic(&path, &bytes)?;
        files.push(path);
    }
    let grid: Vec<(String, Vec<(usize, f64)>)> = outcomes
        .iter()
        .map(|o| {
            let pts = o.evals.iter().map(|e| (e.step, e.sink_pct)).collect();
            (o.id.clone(), pts)
        })
        .collect();
    files.extend(draw(&a.out, &grid)?);
    let (cpu_model, cpu_isa) = sinkrep_runner::cpu_info();
    let mut hashes = BTreeMap::new();
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        hashes.insert(name.unwrap_or_default(), sinkrep_inputs::sha256_file(f)?);
    }
    let manifest = serde_json::json!({
        "command": "just synthetic-search",
        "steps": a.steps,
        "jobs": a.jobs,
        "only": a.only,
        "grid": outcomes.iter().map(|o| &o.point).collect::<Vec<_>>(),
        "cpu_model": cpu_model,
        "cpu_isa": cpu_isa,
        "threads_per_run": 1,
        "outputs_sha256": hashes,
        "note": "timing.csv and the CPU-seconds column of summary.md are CPU time and vary between runs; curves.csv and summary.csv are bit-reproducible on one machine whatever --jobs",
    });
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    sinkrep_inputs::write_atomic(&a.out.join("manifest.json"), &json)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// The figure: one row per config, one column per evaluation step (a heatmap stays
/// readable with dozens of configs where a line per config does not).
fn draw(out: &Path, grid: &[(String, Vec<(usize, f64)>)]) -> Result<Vec<PathBuf>> {
    let style = FigureStyle::with_default_font();
    let steps: Vec<usize> = grid
        .first()
        .map(|g| g.1.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let matrix: Vec<Vec<f64>> = grid
        .iter()
        .map(|g| g.1.iter().map(|p| p.1).collect())
        .collect();
    let x_ticks: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
    let y_ticks: Vec<String> = grid.iter().map(|g| g.0.clone()).collect();
    let fig = heatmap(
        &style,
        &out.join("sink_vs_steps"),
        &Heatmap {
            title: "Synthetic search: Sink_0^0.3 (%) over training, per config",
            x_label: "training step",
            y_label: "config",
            matrix: &matrix,
            x_ticks: &x_ticks,
            y_ticks: &y_ticks,
            legend: "Sink_0^0.3 (%)",
            colours: ColourMap::Viridis,
            range: Some((0.0, 100.0)),
            log: false,
        },
    )?;
    Ok(fig.paths())
}

/// `--replot`: redraws the figure from `curves.csv` in `out` (configs in file order).
fn replot(out: &Path) -> Result<()> {
    let path = out.join("curves.csv");
    let mut r =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut grid: Vec<(String, Vec<(usize, f64)>)> = Vec::new();
    for row in r.deserialize() {
        let (config, step, sink): (String, usize, f64) = {
            let rec: BTreeMap<String, String> = row?;
            let get = |k: &str| {
                rec.get(k)
                    .cloned()
                    .with_context(|| format!("no column {k}"))
            };
            (
                get("config")?,
                get("step")?.parse()?,
                get("sink_pct")?.parse()?,
            )
        };
        match grid.last_mut() {
            Some(g) if g.0 == config => g.1.push((step, sink)),
            _ => grid.push((config, vec![(step, sink)])),
        }
    }
    for f in draw(out, &grid)? {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
