//! Synthetic corpora: seeded, tokenizer-free sequence tasks on which a small model forms
//! an attention sink within minutes on a CPU.
//!
//! Both tasks share one generator. A random bigram table over `vocab` ordinary tokens
//! (ids `0..vocab`) gives every token `successors` distinct next tokens with
//! Dirichlet(`concentration`) weights: few successors or a small concentration make the
//! bigram sharp, many successors and a concentration of 1 or more make it soft. Ids
//! `0..triggers` are trigger tokens: the token after a trigger does not follow the
//! bigram but a rule that needs attention, so a head has work to do at triggers only and
//! is idle ("dormant") everywhere else:
//!
//! - **Bigram-Backcopy** (Guo et al. 2024, "Active-dormant attention heads", arXiv
//!   2410.13835): after a trigger, the next token copies the token just before the
//!   trigger. One layer suffices (attend to i-1 from the trigger).
//! - **Trigger recall** (Bietti et al. 2023, "Birth of a Transformer: A Memory
//!   Viewpoint", NeurIPS 2023, arXiv 2306.00802): every sequence draws, for each
//!   trigger, one output token; after a trigger comes that trigger's output, every time.
//!   The first occurrence is unpredictable; later ones are predictable only by finding
//!   the previous occurrence of the same trigger and copying what followed it (an
//!   induction head, two layers).
//!
//! Position 0 holds, per `start`: a BOS token (id `vocab`, never produced elsewhere),
//! a fixed ordinary token (the first non-trigger id) or a random non-trigger token.
//! The model's vocabulary is always `vocab + 1`, so the three starts train the same
//! architecture.
//!
//! The table comes from `seed`; training and validation sequences from streams of it.
//! A corpus is a function of its parameters alone: [`SyntheticTask::fingerprint`] hashes
//! them together with every generated token.

use serde::{Deserialize, Serialize};
use sinkrep_stats::{derive, SplitMix64};

use crate::{Result, TrainError};

/// Which rule decides the token after a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    BigramBackcopy,
    TriggerRecall,
}

/// What position 0 holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// A BOS token (id `vocab`), then a random non-trigger token.
    Bos,
    /// The same ordinary token in every sequence (the first non-trigger id).
    Fixed,
    /// A uniformly random non-trigger token: nothing fixed at position 0.
    Random,
}

/// The parameters of a synthetic corpus (part of the training config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticTask {
    pub task: TaskKind,
    /// Ordinary tokens, triggers included (ids `0..vocab`).
    pub vocab: usize,
    /// Trigger tokens: ids `0..triggers`.
    pub triggers: usize,
    /// Distinct successors of each token in the bigram table.
    pub successors: usize,
    /// Dirichlet concentration of each row's successor weights.
    pub concentration: f64,
    pub start: Start,
    /// Training sequences (drawn with replacement by the sampler).
    pub train_seqs: usize,
    /// Validation sequences.
    pub val_seqs: usize,
    /// Seeds the bigram table and the sequences.
    pub seed: u64,
}

/// Streams of the task's generator.
const STREAM_TABLE: u64 = 11;
const STREAM_TRAIN_SEQS: u64 = 12;
const STREAM_VAL_SEQS: u64 = 13;

impl SyntheticTask {
    /// The model vocabulary the task needs: the ordinary tokens and BOS.
    pub fn model_vocab(&self) -> usize {
        self.vocab + 1
    }

    /// The BOS id.
    pub fn bos(&self) -> u32 {
        self.vocab as u32
    }

    pub fn is_trigger(&self, tok: u32) -> bool {
        (tok as usize) < self.triggers
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::BadConfig(format!("synthetic task: {m}")));
        if self.triggers == 0 || self.triggers >= self.vocab {
            return bad(format!(
                "triggers must be in 1..vocab (vocab {}, triggers {})",
                self.vocab, self.triggers
            ));
        }
        if self.vocab > 1 << 20 {
            return bad(format!("vocab {} exceeds 2^20", self.vocab));
        }
        if self.successors == 0 || self.successors > self.vocab {
            return bad(format!(
                "successors must be in 1..=vocab (got {})",
                self.successors
            ));
        }
        if !(self.concentration.is_finite() && self.concentration > 0.0) {
            return bad(format!(
                "concentration must be finite and > 0, got {}",
                self.concentration
            ));
        }
        if self.train_seqs == 0 || self.val_seqs == 0 {
            return bad("train_seqs and val_seqs must be > 0".into());
        }
        Ok(())
    }

    /// The bigram table: for each ordinary token, (successor, cumulative weight) with the
    /// last cumulative weight 1.
    pub fn table(&self) -> Vec<Vec<(u32, f64)>> {
        let mut rng = SplitMix64::new(derive(self.seed, STREAM_TABLE, 0));
        (0..self.vocab)
            .map(|_| {
                // `successors` distinct ids: a partial Fisher-Yates shuffle.
                let mut ids: Vec<u32> = (0..self.vocab as u32).collect();
                for i in 0..self.successors {
                    let j = i + rng.below((self.vocab - i) as u64) as usize;
                    ids.swap(i, j);
                }
                let g: Vec<f64> = (0..self.successors)
                    .map(|_| gamma(&mut rng, self.concentration).max(1e-300))
                    .collect();
                let total: f64 = g.iter().sum();
                let mut acc = 0.0;
                let mut row: Vec<(u32, f64)> = ids[..self.successors]
                    .iter()
                    .zip(&g)
                    .map(|(&id, w)| {
                        acc += w / total;
                        (id, acc)
                    })
                    .collect();
                if let Some(last) = row.last_mut() {
                    last.1 = 1.0;
                }
                row
            })
            .collect()
    }

    /// Sequence `index` of the training (`val` false) or validation split, of `len`
    /// tokens.
    pub fn sequence(
        &self,
        table: &[Vec<(u32, f64)>],
        val: bool,
        index: u64,
        len: usize,
    ) -> Vec<u32> {
        let stream = if val {
            STREAM_VAL_SEQS
        } else {
            STREAM_TRAIN_SEQS
        };
        let mut rng = SplitMix64::new(derive(self.seed, stream, index));
        let non_trigger = |rng: &mut SplitMix64| {
            self.triggers as u32 + rng.below((self.vocab - self.triggers) as u64) as u32
        };
        // Trigger recall: this sequence's output for each trigger.
        let outputs: Vec<u32> = match self.task {
            TaskKind::TriggerRecall => (0..self.triggers).map(|_| non_trigger(&mut rng)).collect(),
            TaskKind::BigramBackcopy => Vec::new(),
        };
        let mut s = Vec::with_capacity(len);
        match self.start {
            Start::Bos => {
                s.push(self.bos());
                if len > 1 {
                    s.push(non_trigger(&mut rng));
                }
            }
            Start::Fixed => s.push(self.triggers as u32),
            Start::Random => s.push(non_trigger(&mut rng)),
        }
        while s.len() < len {
            let t = s.len();
            let prev = s[t - 1];
            let next = if self.is_trigger(prev) {
                match self.task {
                    // The token before the trigger (t >= 2: position 0 and a BOS's
                    // successor are never triggers).
                    TaskKind::BigramBackcopy => s[t - 2],
                    TaskKind::TriggerRecall => outputs[prev as usize],
                }
            } else {
                let row = &table[prev as usize];
                let u = rng.next_f64();
                row[row.partition_point(|&(_, c)| c <= u).min(row.len() - 1)].0
            };
            s.push(next);
        }
        s
    }

    /// The canonical parameters, as hashed into the corpus fingerprint.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A Gamma(shape, 1) draw (Marsaglia and Tsang 2000; shape < 1 by the boost
/// Gamma(a) = Gamma(a + 1) U^(1/a)).
fn gamma(rng: &mut SplitMix64, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = open01(rng);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = open01(rng);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A uniform draw in (0, 1).
fn open01(rng: &mut SplitMix64) -> f64 {
    loop {
        let u = rng.next_f64();
        if u > 0.0 {
            return u;
        }
    }
}

/// A standard normal draw (Box-Muller, one of the pair).
fn normal(rng: &mut SplitMix64) -> f64 {
    let (u1, u2) = (open01(rng), rng.next_f64());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn bbc() -> SyntheticTask {
        SyntheticTask {
            task: TaskKind::BigramBackcopy,
            vocab: 64,
            triggers: 10,
            successors: 8,
            concentration: 1.0,
            start: Start::Bos,
            train_seqs: 64,
            val_seqs: 16,
            seed: 7,
        }
    }

    #[test]
    fn gamma_has_its_mean_and_variance() {
        let mut rng = SplitMix64::new(3);
        for shape in [0.5, 1.0, 2.5] {
            let xs: Vec<f64> = (0..40_000).map(|_| gamma(&mut rng, shape)).collect();
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64;
            // Gamma(k, 1): mean k, variance k. 40k draws: SE of the mean sqrt(k/40k).
            assert!((m - shape).abs() < 0.03, "shape {shape}: mean {m}");
            assert!((v - shape).abs() < 0.1 * shape, "shape {shape}: var {v}");
        }
    }

    #[test]
    fn table_rows_are_distributions_over_distinct_successors() {
        let t = bbc().table();
        assert_eq!(t.len(), 64);
        for row in &t {
            assert_eq!(row.len(), 8);
            let mut ids: Vec<u32> = row.iter().map(|r| r.0).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 8);
            assert!(row.windows(2).all(|w| w[0].1 <= w[1].1));
            assert_eq!(row.last().map(|r| r.1), Some(1.0));
        }
    }
}
