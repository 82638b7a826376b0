//! "From scratch": both interventions and the plain-scaling control on the small
//! decoder the training harness pre-trains at this scale (headwise-rmsnorm's baseline
//! sizes and procedure). At the CPU scales that model has formed no natural sink, which
//! makes it a clean test of whether an intervention *creates* one.

use crate::plan::{Plan, PRIMARY_LAYERS};
use serde::Serialize;
use sinkrep_analysis::{analyze, random_tokens, AnalyzeOptions, SinkReport};
use sinkrep_model::{Amplify, AmplifyMode, CenterMean, Interventions, Layers, MaskSelf, Model};
use sinkrep_runner::RunContext;
use sinkrep_stats::{mean, SINK_EPS};
use sinkrep_subjects::{per_scratch_seed, FromScratch, Subject};

/// The conditions, in table order.
pub const CONDITIONS: [&str; 4] = ["baseline", "mask_self", "centered", "plain"];
/// The table this section writes for `subject` (`scratch_cells.csv`,
/// `synthetic_cells.csv`).
pub fn cells_csv(subject: Subject) -> String {
    format!("{}_cells.csv", subject.prefix())
}

/// Amplification acts on the primary layers the model has (the synthetic subject has
/// one layer).
fn interventions(condition: &str, k: usize, lambda: f64, n_layers: usize) -> Interventions {
    let mut iv = Interventions::default();
    let layers: Vec<usize> = PRIMARY_LAYERS
        .iter()
        .copied()
        .filter(|&l| l < n_layers)
        .collect();
    let amp = |mode| Amplify {
        positions: vec![k],
        layers: Layers::Only(layers.clone()),
        lambda,
        mode,
    };
    match condition {
        "mask_self" => iv.mask_self.push(MaskSelf {
            positions: vec![k],
            layers: Layers::All,
        }),
        "centered" => iv
            .amplify
            .push(amp(AmplifyMode::Centered(CenterMean::Positions))),
        "plain" => iv.amplify.push(amp(AmplifyMode::Plain)),
        _ => {}
    }
    iv
}

fn report(
    model: &Model,
    seqs: &[Vec<i64>],
    k: usize,
    iv: Interventions,
) -> anyhow::Result<SinkReport> {
    let opts = AnalyzeOptions {
        sink_pos: k,
        eps: SINK_EPS,
        batch: seqs.len().max(1),
        interventions: iv,
        ..AnalyzeOptions::default()
    };
    Ok(analyze(model, seqs, &opts, &mut |_| {})?)
}

/// Trains (or reuses) the models of `subject`, measures every (input, k, condition) cell
/// on each, writes `<prefix>_cells.csv` for the first seed and records `<prefix>.*`
/// metrics (means over inputs and k, then over the `SCRATCH_SEEDS` models, with their
/// spread).
pub fn run(ctx: &mut RunContext, plan: &Plan, subject: Subject) -> anyhow::Result<()> {
    per_scratch_seed(ctx, subject, |ctx, fs, first| {
        one(ctx, plan, fs, subject, first)
    })
}

fn one(
    ctx: &mut RunContext,
    plan: &Plan,
    fs: &FromScratch,
    subject: Subject,
    tables: bool,
) -> anyhow::Result<()> {
    let prefix = subject.prefix();
    let n_layers = fs.model.config.n_layers;
    let seed = fs.seed;
    let t = plan.seq_len.min(fs.config.seq_len);
    let n = plan.n_seqs.max(fs.windows.len().min(16));
    let inputs = [
        (
            "text",
            fs.windows
                .iter()
                .take(n)
                .map(|w| w[..t].to_vec())
                .collect::<Vec<_>>(),
        ),
        (
            "random",
            random_tokens(n, t, fs.model.config.vocab_size, seed),
        ),
    ];
    // Positions of the main plan that fit, with queries after them.
    let ks: Vec<usize> = plan
        .positions
        .iter()
        .copied()
        .filter(|&k| k + 1 < t)
        .collect();
    let lambda = plan.max_lambda();
    ctx.config(&format!("{prefix}_positions"), &ks)?;
    ctx.config(&format!("{prefix}_lambda"), lambda)?;
    ctx.config(&format!("{prefix}_seqs_per_input"), n)?;

    let mut rows = Vec::new();
    // condition -> (Sink_k, attention mass on k, Sink_0) samples over inputs and k.
    let mut acc: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); CONDITIONS.len()];
    ctx.stage(&format!("{prefix}-measure"), |_| -> anyhow::Result<()> {
        for &(input, ref seqs) in &inputs {
            for &k in &ks {
                for (ci, &cond) in CONDITIONS.iter().enumerate() {
                    let at_k =
                        report(&fs.model, seqs, k, interventions(cond, k, lambda, n_layers))?;
                    let at_0 =
                        report(&fs.model, seqs, 0, interventions(cond, k, lambda, n_layers))?;
                    let mass = mean(at_k.layers.iter().map(|l| l.attn_mass).collect::<Vec<_>>());
                    let max_abs = at_k
                        .layers
                        .iter()
                        .map(|l| l.max_abs_sink)
                        .fold(0.0f64, f64::max);
                    acc[ci].push((at_k.sink_metric.value, mass, at_0.sink_metric.value));
                    rows.push(ScratchRow {
                        input,
                        k,
                        condition: cond,
                        lambda,
                        sink_k: at_k.sink_metric.value,
                        attn_mass_k: mass,
                        max_abs_k_peak: max_abs,
                        sink_0: at_0.sink_metric.value,
                    });
                }
            }
        }
        Ok(())
    })?;
    if tables {
        ctx.write_rows(&cells_csv(subject), rows)?;
    }
    let names = metric_names(subject);
    let mut values = vec![fs.final_val_loss];
    for samples in &acc {
        let m = |f: fn(&(f64, f64, f64)) -> f64| mean(samples.iter().map(f).collect::<Vec<_>>());
        values.extend([m(|s| s.0), m(|s| s.1), m(|s| s.2)]);
    }
    for (name, v) in names.iter().zip(values) {
        ctx.metric(name, v)?;
    }
    Ok(())
}

/// One row of the scratch `cells.csv`.
#[derive(Serialize, Default)]
struct ScratchRow {
    input: &'static str,
    k: usize,
    condition: &'static str,
    lambda: f64,
    sink_k: f64,
    attn_mass_k: f64,
    max_abs_k_peak: f64,
    sink_0: f64,
}

/// The metrics `run` records for `subject`, in order.
pub fn metric_names(subject: Subject) -> Vec<String> {
    let p = subject.prefix();
    let mut names = vec![format!("{p}.val_loss")];
    for cond in CONDITIONS {
        for q in ["sink_k", "attn_mass_k", "sink_0"] {
            names.push(format!("{p}.{cond}.{q}.mean"));
        }
    }
    names
}
