//! Seeded draws: one independent stream per entity, so that adding a scenario or a pod does
//! not reshuffle the noise of everything else.

use portent_core::seeded;

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A splitmix64 stream.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    next: u64,
}

impl Rng {
    /// The stream `key` of run `seed`.
    pub(crate) fn new(seed: u64, key: &str) -> Self {
        // FNV-1a of the key, then mixed with the seed: distinct keys give unrelated streams.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self {
            next: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ h.rotate_left(29),
        }
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        let u = seeded::uniform(self.next);
        self.next = self.next.wrapping_add(0x9E37_79B9_7F4A_7C15);
        u
    }

    /// Standard normal (Box–Muller).
    pub(crate) fn gauss(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// `x` rounded down or up at random so that the expectation is `x` (for counts).
    pub(crate) fn round(&mut self, x: f64) -> f64 {
        let x = x.max(0.0);
        let floor = x.floor();
        floor + f64::from(u8::from(self.uniform() < x - floor))
    }

    /// A random name suffix of `len` characters, as in `checkout-7c9f8d6b5b-x2kqp`.
    pub(crate) fn suffix(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(NAME_ALPHABET[self.below(NAME_ALPHABET.len())]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<f64> = (0..5).map(|_| Rng::new(1, "x").uniform()).collect();
        let mut r = Rng::new(1, "x");
        let b: Vec<f64> = (0..5).map(|_| r.uniform()).collect();
        assert!(a.iter().all(|&v| v == a[0]));
        assert_eq!(b[0], a[0]);
        assert_ne!(Rng::new(1, "x").uniform(), Rng::new(2, "x").uniform());
        assert_ne!(Rng::new(1, "x").uniform(), Rng::new(1, "y").uniform());
        let mut g = Rng::new(3, "g");
        let n = 20_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let v = g.gauss();
            s += v;
            s2 += v * v;
        }
        let mean = s / f64::from(n);
        assert!(mean.abs() < 0.03 && (s2 / f64::from(n) - 1.0).abs() < 0.05);
        assert_eq!(Rng::new(1, "n").suffix(5).len(), 5);
    }
}
