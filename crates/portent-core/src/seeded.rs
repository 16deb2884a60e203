//! Seeded pseudo-random draws (splitmix64), for the built-in sample series, tests and
//! benchmarks: the same numbers on every machine and every run, with no dependency.
//!
//! ```
//! use portent_core::seeded;
//! let u = seeded::uniform(42);
//! assert!((0.0..1.0).contains(&u));
//! assert_eq!(u, seeded::uniform(42));
//! ```

/// The `i`-th draw, uniform in [0, 1). Consecutive `i` give independent draws (splitmix64's
/// finaliser), unlike a plain multiplicative sequence.
pub fn uniform(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The `i`-th roughly standard normal draw: a sum of twelve uniforms, minus six.
pub fn gauss(i: u64) -> f64 {
    (0..12).map(|k| uniform(i * 12 + k)).sum::<f64>() - 6.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_pinned_and_roughly_gaussian() {
        // Pinned: the sample series and every benchmark are built from these.
        assert_eq!(
            uniform(0).to_bits(),
            0x3fec_4415_072f_63b9_u64,
            "{:#x}",
            uniform(0).to_bits()
        );
        let n = 20_000u64;
        let mean = (0..n).map(gauss).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| gauss(i).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
