//! Seeded percentile bootstrap, reproducible bit for bit.
//!
//! [`Bootstrap`] fixes the number of resamples, the confidence level and the seed. Each aggregate
//! cell gets its own stream, [`Rng::for_label`] (seed mixed with a hash of the cell's label), so a
//! cell's interval does not depend on which other cells exist. The generator is xoshiro256**
//! seeded through SplitMix64; indices are drawn by Lemire's unbiased multiply-and-reject; bounds
//! are the type-7 (linear) quantiles of the sorted replicates, as numpy computes them. All of it is
//! integer or IEEE-754 arithmetic in a fixed order, so bounds agree across runs and machines.

use serde::{Deserialize, Serialize};

/// Parameters of the percentile bootstrap; recorded in every report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub resamples: usize,
    /// Two-sided confidence level, e.g. 0.95.
    pub level: f64,
    pub seed: u64,
}

impl Bootstrap {
    /// The seed scrbench uses unless told otherwise.
    pub const SEED: u64 = 0x5C2B_E4C4_2026_0013;
}

impl Default for Bootstrap {
    /// 10 000 resamples, 95 %, [`Bootstrap::SEED`].
    fn default() -> Self {
        Bootstrap {
            resamples: 10_000,
            level: 0.95,
            seed: Bootstrap::SEED,
        }
    }
}

/// xoshiro256** pseudo-random generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut state = seed;
        Rng {
            s: std::array::from_fn(|_| splitmix64(&mut state)),
        }
    }

    /// A stream for one labelled use of `seed` (FNV-1a of the label, mixed into the seed).
    pub fn for_label(seed: u64, label: &str) -> Rng {
        let hash = label.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        });
        let mut state = seed ^ hash;
        Rng::new(splitmix64(&mut state))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }
}

/// Type-7 quantile of sorted values (`p` in 0..=1); `None` when empty.
pub fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * p;
    let lo = (h.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_reference_stream() {
        // SplitMix64 from 0 gives the published first output 0xE220A8397B1DCDAF.
        let mut state = 0;
        assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
        let mut rng = Rng::new(7);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(7);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        let mut rng = Rng::new(1);
        assert!((0..1000).all(|_| rng.below(3) < 3));
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&[5.0], 0.025), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
