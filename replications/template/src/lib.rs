//! The replication template (replications/README.md, "Adding a replication"): a toy
//! claim measured end to end, in the layout every replication crate follows:
//!
//! - `claim.toml`: the claim, its checks and tolerances, and the sizes of each scale;
//! - `Sizes`: the `[scale.<s>]` table, deserialised with unknown keys rejected;
//! - a [`Study`] (`run` writes tables and metrics through the `RunContext`, `figures`
//!   draws from the run folder alone);
//! - [`sinkrep_runner::replication!`]: embeds `claim.toml` and `README.md`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sinkrep_runner::{line_chart, read_rows, Claim, FigureStyle, LineChart, RunContext, Scale};
use sinkrep_runner::{Series, Study};
use sinkrep_stats::{mean, SplitMix64};

/// The study; it has no state of its own (a study that needs some keeps it here).
pub struct Template;

sinkrep_runner::replication!(Template);

/// What changes between scales: `[scale.<s>]` of `claim.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Sequences the variance is taken over.
    pub sequences: usize,
    /// Positions per sequence (at least 3: the slope needs two positions after 0).
    pub positions: usize,
}

impl Sizes {
    /// The sizes at `scale`, from this crate's claim file.
    pub fn at(scale: Scale) -> Result<Sizes> {
        Sizes::from_claim(&claim()?, scale)
    }

    fn from_claim(claim: &Claim, scale: Scale) -> Result<Sizes> {
        let s: Sizes = claim.scale_params(scale)?;
        anyhow::ensure!(s.positions >= 3, "positions must be >= 3");
        anyhow::ensure!(s.sequences >= 2, "sequences must be >= 2");
        Ok(s)
    }
}

/// The per-position table, `variance_by_position.csv`.
const TABLE: &str = "variance_by_position.csv";

/// Var(o_t) for t = 0..positions: population variance over `sequences` running means
/// of uniform(-1, 1) values.
pub fn running_mean_variance(s: &Sizes, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    let mut sum = vec![0.0; s.positions];
    let mut sum2 = vec![0.0; s.positions];
    for _ in 0..s.sequences {
        let mut acc = 0.0;
        for t in 0..s.positions {
            acc += rng.next_f64() * 2.0 - 1.0;
            let o = acc / (t + 1) as f64;
            sum[t] += o;
            sum2[t] += o * o;
        }
    }
    let n = s.sequences as f64;
    sum.iter()
        .zip(&sum2)
        .map(|(s1, s2)| s2 / n - (s1 / n).powi(2))
        .collect()
}

/// Least-squares slope of ln var[t] on ln(t + 1) over t >= 1.
fn log_slope(var: &[f64]) -> f64 {
    let pts: Vec<(f64, f64)> = (1..var.len())
        .map(|t| (((t + 1) as f64).ln(), var[t].ln()))
        .collect();
    let mx = mean(pts.iter().map(|p| p.0));
    let my = mean(pts.iter().map(|p| p.1));
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

/// One row of the table: the columns are the field names, so a table's header and its
/// values cannot drift apart, and `figures` reads it back with the same struct.
#[derive(Debug, Default, Serialize, Deserialize)]
struct VarianceRow {
    position: usize,
    variance: f64,
}

impl Study for Template {
    fn run(&self, claim: &Claim, ctx: &mut RunContext) -> Result<()> {
        let s = Sizes::from_claim(claim, ctx.scale())?;
        ctx.config("sizes", &s)?;
        ctx.config("distribution", "uniform(-1, 1)")?;
        let seed = ctx.seeds(1)[0];
        let var = ctx.stage("simulate", |_| running_mean_variance(&s, seed));
        ctx.write_rows(
            TABLE,
            var.iter()
                .enumerate()
                .map(|(position, &variance)| VarianceRow { position, variance }),
        )?;
        ctx.metric(
            "var_ratio_first_over_rest",
            sinkrep_stats::ratio_at(&var, 0),
        )?;
        ctx.metric("log_slope", log_slope(&var))?;
        Ok(())
    }

    fn figures(&self, run_dir: &Path, fig_dir: &Path, style: &FigureStyle) -> Result<Vec<PathBuf>> {
        let rows: Vec<VarianceRow> = read_rows(&run_dir.join(TABLE))?;
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| ((r.position + 1) as f64, r.variance))
            .collect();
        let files = line_chart(
            style,
            &fig_dir.join("variance_by_position"),
            &LineChart {
                title: "Variance of the running mean by position",
                x_label: "position t + 1",
                y_label: "Var(o_t)",
                series: &[Series {
                    name: "measured".into(),
                    points,
                }],
                log_x: true,
                log_y: true,
            },
        )?;
        Ok(files.paths())
    }
}
