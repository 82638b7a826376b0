//! Random token ids for Gu et al.'s random-token protocol, drawn with the shared
//! SplitMix64 (no libtorch RNG), so they are the same on every machine and in the Python
//! oracle (scripts/peers), which reimplements the same draw.

use sinkrep_stats::SplitMix64;

/// `n` sequences of `t` token ids, uniform over [0, vocab) (`z % vocab`, drawn row-major:
/// sequence by sequence, position by position), as in Gu et al.'s random-token protocol.
pub fn random_tokens(n: usize, t: usize, vocab: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut g = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            (0..t)
                .map(|_| (g.next_u64() % vocab as u64) as i64)
                .collect()
        })
        .collect()
}
