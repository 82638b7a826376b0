//! A tiny seeded generator that does not depend on libtorch's RNG, so random-token inputs
//! are the same on every machine and in the Python oracle (scripts/peers).

/// splitmix64 (Steele, Lea, Flood 2014), the generator the oracle reimplements.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

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
