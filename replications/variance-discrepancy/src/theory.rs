//! The theory check: causal value aggregation of i.i.d. values, simulated in plain Rust
//! with the shared SplitMix64 (sinkrep-stats) (no libtorch RNG, so the numbers are the same on
//! every machine up to libm's last bits).
//!
//! Each trial draws values v[s][c] ~ N(0, 1) for positions s < T and channels c < D, and
//! forms o[t][c] = sum_{s<=t} a[t][s] v[s][c] with
//! - uniform attention, a[t][s] = 1/(t+1): Var(o_t) = Var(v)/(t+1) exactly;
//! - random softmax attention, a[t] = softmax(l[t][0..=t]) with logits l[t][s] ~ N(0, s^2)
//!   drawn afresh for every query t (causally masked): Var(o_t) = E[sum_s a[t][s]^2].
//!
//! Variance is taken across trials for each (position, channel), then averaged over
//! channels, the same reduction `SinkProbe` applies to the model's value-aggregation
//! output.

use rayon::prelude::*;
use sinkrep_stats::SplitMix64;

/// The attention weights of the simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attention {
    Uniform,
    /// Softmax of i.i.d. N(0, scale^2) logits, per query, over the keys s <= t.
    Softmax {
        scale: f64,
    },
}

/// Trials per independently seeded chunk: chunks run in parallel and are summed in chunk
/// order, so the result does not depend on the number of threads.
const CHUNK: usize = 250;

/// Standard normals from SplitMix64 by Box-Muller (both outputs used).
struct Normal {
    g: SplitMix64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Normal {
        Normal {
            g: SplitMix64::new(seed),
            spare: None,
        }
    }
    fn next(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1] so ln(u1) is finite.
        let u1 = 1.0 - self.g.next_f64();
        let u2 = self.g.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        self.spare = Some(r * th.sin());
        r * th.cos()
    }
}

/// Per-position variance of o_t (across trials, mean over `channels`), for positions
/// 0..len. `seed` fixes every draw; chunk k of trials uses the k-th output of a
/// SplitMix64 seeded with `seed` as its own seed.
pub fn simulate(
    attn: Attention,
    len: usize,
    trials: usize,
    channels: usize,
    seed: u64,
) -> Vec<f64> {
    if len == 0 || trials == 0 || channels == 0 {
        return vec![f64::NAN; len];
    }
    let mut master = SplitMix64::new(seed);
    let chunks: Vec<(u64, usize)> = (0..trials.div_ceil(CHUNK))
        .map(|k| (master.next_u64(), CHUNK.min(trials - k * CHUNK)))
        .collect();
    let partial: Vec<(Vec<f64>, Vec<f64>)> = chunks
        .par_iter()
        .map(|&(s, n)| chunk_moments(attn, len, n, channels, s))
        .collect();
    let mut sum = vec![0.0; len * channels];
    let mut sumsq = vec![0.0; len * channels];
    for (s, q) in &partial {
        for i in 0..sum.len() {
            sum[i] += s[i];
            sumsq[i] += q[i];
        }
    }
    let n = trials as f64;
    (0..len)
        .map(|t| {
            (0..channels)
                .map(|c| {
                    let m = sum[t * channels + c] / n;
                    (sumsq[t * channels + c] / n - m * m).max(0.0)
                })
                .sum::<f64>()
                / channels as f64
        })
        .collect()
}

/// Sums and sums of squares of o[t][c] over `trials` trials, (len * channels) each.
fn chunk_moments(
    attn: Attention,
    len: usize,
    trials: usize,
    channels: usize,
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Normal::new(seed);
    let mut sum = vec![0.0; len * channels];
    let mut sumsq = vec![0.0; len * channels];
    let mut v = vec![0.0; len * channels]; // (T, D)
    let mut o = vec![0.0; channels];
    let mut w = vec![0.0; len];
    for _ in 0..trials {
        for x in v.iter_mut() {
            *x = rng.next();
        }
        for t in 0..len {
            match attn {
                Attention::Uniform => w[..=t].fill(1.0 / (t + 1) as f64),
                Attention::Softmax { scale } => {
                    for x in w[..=t].iter_mut() {
                        *x = scale * rng.next();
                    }
                    let max = w[..=t].iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let mut z = 0.0;
                    for x in w[..=t].iter_mut() {
                        *x = (*x - max).exp();
                        z += *x;
                    }
                    for x in w[..=t].iter_mut() {
                        *x /= z;
                    }
                }
            }
            o.fill(0.0);
            for (s, &a) in w[..=t].iter().enumerate() {
                let row = &v[s * channels..(s + 1) * channels];
                for (oc, vc) in o.iter_mut().zip(row) {
                    *oc += a * vc;
                }
            }
            let base = t * channels;
            for (c, &x) in o.iter().enumerate() {
                sum[base + c] += x;
                sumsq[base + c] += x * x;
            }
        }
    }
    (sum, sumsq)
}
