//! Seeded rows with the shape of one pod's aligned metrics at one-minute steps: CPU, memory
//! and latency all follow traffic, which has a daily cycle and noise; the error rate is
//! independent noise. One row in a hundred is an anomaly, alternately a broken correlation
//! (memory up, latency down, each within its usual range) and a gross outlier on one metric.
//! Shared by `benches/multivariate.rs` and `examples/iforest_compare.rs`.

use portent_core::seeded::gauss;

/// Rows of minutes `[from, from + n)`, and whether each is an injected anomaly.
pub(crate) fn pod_rows(from: u64, n: usize) -> (Vec<[f64; 4]>, Vec<bool>) {
    (from..from + n as u64)
        .map(|m| {
            let g = |k: u64| gauss(m * 8 + k);
            let day = std::f64::consts::TAU * m as f64 / 1440.0;
            let t = 1.0 + 0.4 * day.sin() + 0.1 * g(0);
            let broken = m % 200 == 7;
            let gross = m % 200 == 107;
            let (t_mem, t_lat) = if broken { (t + 0.4, t - 0.4) } else { (t, t) };
            let mut row = [
                2.0 * t + 0.05 * g(1),
                1e9 * (0.5 + 0.3 * t_mem) + 1e7 * g(2),
                0.05 + 0.03 * t_lat + 0.002 * g(3),
                0.2 + 0.05 * g(4),
            ];
            if gross {
                row[(m / 200 % 4) as usize] *= 4.0;
            }
            (row, broken || gross)
        })
        .unzip()
}
