//! The metrics of a run, from its cell rows alone (so they can be recomputed from
//! `cells.csv`). Names are listed in the README; the checks use five of them.

use sinkrep_analysis::kendall_tau;
use sinkrep_stats::{max, mean, min};

use crate::plan::{layers_label, InputKind, Mode, Plan, PRIMARY_LAYERS};
use crate::rows::{LayerRow, Row};

/// Looks cells up by what they measured.
struct Table<'a> {
    rows: &'a [Row],
}

impl<'a> Table<'a> {
    fn baseline(&self, kind: InputKind, pos: usize) -> Option<&'a Row> {
        self.rows
            .iter()
            .find(|r| r.group == "baseline" && r.kind == kind.as_str() && r.report_pos == pos)
    }
    fn group(&self, group: &str, kind: InputKind, k: usize, pos: usize) -> Option<&'a Row> {
        self.rows.iter().find(|r| {
            r.group == group && r.kind == kind.as_str() && r.k == k && r.report_pos == pos
        })
    }
    /// The amplification cell; lambda = 1 is the baseline (no intervention).
    fn amp(
        &self,
        kind: InputKind,
        k: usize,
        mode: Mode,
        layers: &[usize],
        lambda: f64,
    ) -> Option<&'a Row> {
        if lambda == 1.0 {
            return self.baseline(kind, k);
        }
        let layers = layers_label(layers);
        self.rows.iter().find(|r| {
            r.kind == kind.as_str()
                && r.k == k
                && r.report_pos == k
                && r.mode == mode.as_str()
                && r.amp_layers == layers
                && r.lambda == lambda
        })
    }
}

/// `f` of each cell's row (NaN where the row is missing).
fn over<'a>(
    cells: &[(InputKind, usize)],
    get: impl Fn(InputKind, usize) -> Option<&'a Row>,
    f: impl Fn(&Row) -> f64,
) -> Vec<f64> {
    cells
        .iter()
        .map(|&(kind, k)| get(kind, k).map(&f).unwrap_or(f64::NAN))
        .collect()
}

/// Mean over `cells` of Sink_k at each lambda of `[1] + lambdas`, and Kendall's tau of
/// that curve against lambda.
fn curve(
    t: &Table,
    cells: &[(InputKind, usize)],
    mode: Mode,
    layers: &[usize],
    lambdas: &[f64],
) -> (Vec<f64>, Vec<f64>, f64) {
    let xs: Vec<f64> = std::iter::once(1.0)
        .chain(lambdas.iter().copied())
        .collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&l| {
            mean(over(
                cells,
                |kd, k| t.amp(kd, k, mode, layers, l),
                |r| r.sink,
            ))
        })
        .collect();
    let tau = if ys.iter().any(|y| y.is_nan()) {
        f64::NAN
    } else if ys.iter().all(|&y| y == ys[0]) {
        // tau-b is undefined for a flat curve; a flat curve has no trend.
        0.0
    } else {
        kendall_tau(&xs, &ys)
    };
    (xs, ys, tau)
}

/// Every metric of the run, in a fixed order. `layers[c]` are the per-layer rows of
/// cell `c` (`Row::cell`).
pub fn compute(rows: &[Row], layers: &[Vec<LayerRow>], plan: &Plan) -> Vec<(String, f64)> {
    let t = Table { rows };
    // Mean attention mass on report_pos over layers >= `from`, for the cell `r`.
    let mass_from = |r: &Row, from: usize| -> f64 {
        let v: Vec<f64> = layers
            .get(r.cell)
            .map(|l| {
                l.iter()
                    .filter(|x| x.layer >= from)
                    .map(|x| x.attn_mass)
                    .collect()
            })
            .unwrap_or_default();
        mean(&v)
    };
    let mut m: Vec<(String, f64)> = Vec::new();
    let mut put = |name: String, v: f64| m.push((name, v));
    let primary = PRIMARY_LAYERS.to_vec();
    let lmax = plan.max_lambda();
    let cells: Vec<(InputKind, usize)> = plan
        .kinds
        .iter()
        .flat_map(|&kd| plan.positions.iter().map(move |&k| (kd, k)))
        .collect();
    let cells2: Vec<(InputKind, usize)> = plan
        .kinds
        .iter()
        .flat_map(|&kd| plan.secondary_positions.iter().map(move |&k| (kd, k)))
        .collect();

    // Baseline: is k a sink before any intervention? And the natural sink at 0.
    let base = |kd, k| t.baseline(kd, k);
    let sink_k = over(&cells, base, |r| r.sink);
    put("baseline.sink_k.max".into(), max(&sink_k));
    put("baseline.sink_k.mean".into(), mean(&sink_k));
    put(
        "baseline.attn_mass_k.mean".into(),
        mean(over(&cells, base, |r| r.attn_mass)),
    );
    put(
        "baseline.peak_max_abs_k.mean".into(),
        mean(over(&cells, base, |r| r.peak_max_abs)),
    );
    let base0 = over(&cells, |kd, _| t.baseline(kd, 0), |r| r.sink);
    put("baseline.sink_0.mean".into(), mean(&base0));
    put(
        "baseline.peak_max_abs_0.mean".into(),
        mean(over(&cells, |kd, _| t.baseline(kd, 0), |r| r.peak_max_abs)),
    );

    // Mask-to-self in every layer, reported at k and at 0.
    let mk = |kd, k| t.group("mask-all", kd, k, k);
    let s = over(&cells, mk, |r| r.sink);
    put("mask_self.sink_k.min".into(), min(&s));
    put("mask_self.sink_k.mean".into(), mean(&s));
    for &kind in &plan.kinds {
        let kc: Vec<(InputKind, usize)> = cells.iter().copied().filter(|c| c.0 == kind).collect();
        put(
            format!("mask_self.sink_k.{}.mean", kind.as_str()),
            mean(over(&kc, mk, |r| r.sink)),
        );
    }
    // k as a sink next to the natural one: its Sink_k against the natural Sink_0.
    put(
        "mask_self.sink_k_over_natural_sink_0".into(),
        mean(&s) / mean(over(&cells, |kd, _| t.baseline(kd, 0), |r| r.sink)),
    );
    put(
        "mask_self.attn_mass_k.mean".into(),
        mean(over(&cells, mk, |r| r.attn_mass)),
    );
    put(
        "mask_self.peak_max_abs_k.mean".into(),
        mean(over(&cells, mk, |r| r.peak_max_abs)),
    );
    put(
        "mask_self.peak_dom_ratio_k.mean".into(),
        mean(over(&cells, mk, |r| r.peak_dom_ratio)),
    );
    put(
        "mask_self.super_neurons_k.mean".into(),
        mean(over(&cells, mk, |r| r.super_neurons as f64)),
    );
    let m0 = over(&cells, |kd, k| t.group("mask-all", kd, k, 0), |r| r.sink);
    put("mask_self.sink_0.mean".into(), mean(&m0));
    put("mask_self.sink_0_drop".into(), mean(&base0) - mean(&m0));
    put(
        "mask_self.attn_mass_0.mean".into(),
        mean(over(
            &cells,
            |kd, k| t.group("mask-all", kd, k, 0),
            |r| r.attn_mass,
        )),
    );
    put(
        "baseline.attn_mass_0.mean".into(),
        mean(over(&cells, |kd, _| t.baseline(kd, 0), |r| r.attn_mass)),
    );
    // How k and 0 share the attention under mask-to-self.
    put(
        "mask_self.attn_mass_k_plus_0.mean".into(),
        mean(over(&cells, mk, |r| r.attn_mass))
            + mean(over(
                &cells,
                |kd, k| t.group("mask-all", kd, k, 0),
                |r| r.attn_mass,
            )),
    );
    // Mask-to-self in the first n layers only: does the sink persist?
    for &n in &plan.mask_first {
        let g = format!("mask-first{n}");
        let get = |kd, k| t.group(&g, kd, k, k);
        let s = over(&cells, get, |r| r.sink);
        put(format!("mask_self_first{n}.sink_k.min"), min(&s));
        put(format!("mask_self_first{n}.sink_k.mean"), mean(&s));
        put(
            format!("mask_self_first{n}.peak_max_abs_k.mean"),
            mean(over(&cells, get, |r| r.peak_max_abs)),
        );
        // Persistence: attention to k in the layers left unmasked (>= n), as a share of
        // what the all-layer mask gives in the same layers (1 = the sink persists).
        let part = mean(over(&cells, get, |r| mass_from(r, n)));
        let full = mean(over(&cells, mk, |r| mass_from(r, n)));
        put(format!("mask_self_first{n}.persistence"), part / full);
    }

    // Primary amplification sweep: centred (positions mean) and plain, layers 0+1.
    let mut at_max = [f64::NAN; 2];
    for (i, mode) in [Mode::CenteredPositions, Mode::Plain]
        .into_iter()
        .enumerate()
    {
        let name = mode.metric_name();
        let (_, ys, tau) = curve(&t, &cells, mode, &primary, &plan.lambdas);
        put(format!("amp.{name}.tau"), tau);
        let get = |kd, k| t.amp(kd, k, mode, &primary, lmax);
        let s = over(&cells, get, |r| r.sink);
        at_max[i] = mean(&s);
        put(format!("amp.{name}.sink_k_at_max_lambda.min"), min(&s));
        put(format!("amp.{name}.sink_k_at_max_lambda.mean"), mean(&s));
        put(format!("amp.{name}.sink_k.max_over_lambda"), max(&ys[1..]));
        put(
            format!("amp.{name}.attn_mass_k_at_max_lambda.mean"),
            mean(over(&cells, get, |r| r.attn_mass)),
        );
        put(
            format!("amp.{name}.peak_max_abs_k_at_max_lambda.mean"),
            mean(over(&cells, get, |r| r.peak_max_abs)),
        );
    }
    put(
        "amp.plain_over_centered_at_max_lambda".into(),
        at_max[1] / at_max[0],
    );

    // Every mode on the secondary cells (primary layers).
    for mode in Mode::ALL {
        let name = mode.metric_name();
        let (_, _, tau) = curve(&t, &cells2, mode, &primary, &plan.secondary_lambdas);
        put(format!("amp_modes.{name}.tau"), tau);
        let get = |kd, k| t.amp(kd, k, mode, &primary, lmax);
        put(
            format!("amp_modes.{name}.sink_k_at_max_lambda.mean"),
            mean(over(&cells2, get, |r| r.sink)),
        );
        put(
            format!("amp_modes.{name}.attn_mass_k_at_max_lambda.mean"),
            mean(over(&cells2, get, |r| r.attn_mass)),
        );
        put(
            format!("amp_modes.{name}.peak_max_abs_k_at_max_lambda.mean"),
            mean(over(&cells2, get, |r| r.peak_max_abs)),
        );
    }

    // Layer choices on the secondary cells.
    let mut choices = vec![primary.clone()];
    choices.extend(plan.layer_choices.iter().cloned());
    for layers in &choices {
        let tag = format!("l{}", layers_label(layers).replace('+', "_"));
        let (_, _, tau) = curve(
            &t,
            &cells2,
            Mode::CenteredPositions,
            layers,
            &plan.secondary_lambdas,
        );
        put(format!("amp_layers.{tag}.centered_positions.tau"), tau);
        for mode in [Mode::CenteredPositions, Mode::Plain] {
            put(
                format!(
                    "amp_layers.{tag}.{}.sink_k_at_max_lambda.mean",
                    mode.metric_name()
                ),
                mean(over(
                    &cells2,
                    |kd, k| t.amp(kd, k, mode, layers, lmax),
                    |r| r.sink,
                )),
            );
        }
    }

    // The last position: nothing attends to it; its own state and self-attention.
    let last = plan.last_pos();
    let lasts: Vec<(InputKind, usize)> = plan.kinds.iter().map(|&kd| (kd, last)).collect();
    put(
        "last_pos.baseline.alpha.mean".into(),
        mean(over(&lasts, base, |r| r.alpha)),
    );
    put(
        "last_pos.baseline.peak_max_abs.mean".into(),
        mean(over(&lasts, base, |r| r.peak_max_abs)),
    );
    for mode in [Mode::CenteredPositions, Mode::Plain] {
        let name = mode.metric_name();
        let get = |kd, k| t.amp(kd, k, mode, &primary, lmax);
        put(
            format!("last_pos.{name}.alpha_at_max_lambda.mean"),
            mean(over(&lasts, get, |r| r.alpha)),
        );
        put(
            format!("last_pos.{name}.peak_max_abs_at_max_lambda.mean"),
            mean(over(&lasts, get, |r| r.peak_max_abs)),
        );
        put(
            format!("last_pos.{name}.peak_dom_ratio_at_max_lambda.mean"),
            mean(over(&lasts, get, |r| r.peak_dom_ratio)),
        );
    }
    m
}
