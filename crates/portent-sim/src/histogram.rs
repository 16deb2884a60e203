//! Latency histograms without drawing every request: each tick's requests are spread over the
//! buckets by the log-normal distribution's CDF, so cumulative counts are exact and cheap.

/// The Prometheus client libraries' default buckets, seconds (`+Inf` implied).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The standard normal CDF (Abramowitz–Stegun 7.1.26; error below 1.5e-7).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Cumulative counts of `n` requests with log-normal latencies (`median`, `sigma`) at each
/// bound of [`DEFAULT_BUCKETS`]. Non-decreasing, each at most `n`.
pub(crate) fn cumulative(n: f64, median: f64, sigma: f64) -> [f64; 11] {
    let ln_m = median.ln();
    DEFAULT_BUCKETS.map(|le| (n * normal_cdf((le.ln() - ln_m) / sigma)).round().min(n))
}

/// The mean of a log-normal with this median and σ (for `_sum`).
pub(crate) fn lognormal_mean(median: f64, sigma: f64) -> f64 {
    median * (sigma * sigma / 2.0).exp()
}

/// The `q`-quantile of a histogram, as PromQL's `histogram_quantile` computes it: linear
/// interpolation inside the bucket, 0 as the lower bound of the first, the highest finite
/// bound if the rank falls in `+Inf`. `buckets` are `(le, cumulative count)` sorted by `le`
/// and end with `+Inf`. `None` without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|&(_, c)| c >= rank)?;
    if buckets[i].0.is_infinite() {
        return Some(buckets[i.saturating_sub(1)].0);
    }
    let (lo, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    let (hi, count) = buckets[i];
    if count <= below {
        return Some(hi);
    }
    Some(lo + (hi - lo) * (rank - below) / (count - below))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_accurate() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(2.326_348) - 0.99).abs() < 1e-6);
        assert!((normal_cdf(-1.0) - 0.158_655_25).abs() < 1e-6);
    }

    #[test]
    fn cumulative_counts_recover_the_quantiles() {
        let c = cumulative(100_000.0, 0.08, 0.5);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        let buckets: Vec<(f64, f64)> = DEFAULT_BUCKETS
            .iter()
            .copied()
            .zip(c)
            .chain([(f64::INFINITY, 100_000.0)])
            .collect();
        let p50 = histogram_quantile(0.5, &buckets).unwrap();
        assert!((0.05..0.1).contains(&p50), "{p50}");
        let p99 = histogram_quantile(0.99, &buckets).unwrap();
        assert!((0.25..0.3).contains(&p99), "{p99}");
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 0.0)]), None);
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 4.0)]),
            Some(1.0)
        );
    }
}
