//! The benchmarks' seeded workload, shared by `benches/models.rs` and by
//! `examples/bench_workload.rs` (which prints it as CSV so that `bench/prophet_compare.sh` can
//! fit Python Prophet on exactly the same series).
//!
//! The data has the shape of an infrastructure metric: one-minute steps, a daily and a weekly
//! cycle, noise, and two incidents (a spike burst and a six-hour level shift) that the robust
//! fit has to see through.

use std::f64::consts::TAU;

use portent_core::seeded::uniform;
use portent_core::{Sample, Timestamp};

const MINUTE: i64 = 60_000;
const DAY: i64 = 1440 * MINUTE;
const WEEK: i64 = 7 * DAY;

/// `n` one-minute samples of a seasonal metric with two incidents.
pub(crate) fn workload(n: usize) -> Vec<Sample> {
    workload_at(n, MINUTE)
}

/// [`workload`] at a step of `step_ms` (the incidents stay at the same sample indices).
pub(crate) fn workload_at(n: usize, step_ms: i64) -> Vec<Sample> {
    let t0 = 1_700_000_000_000i64;
    (0..n)
        .map(|i| {
            let t = t0 + i as i64 * step_ms;
            let d = TAU * (t.rem_euclid(DAY) as f64 / DAY as f64);
            let w = TAU * (t.rem_euclid(WEEK) as f64 / WEEK as f64);
            // Sum of uniforms: roughly Gaussian noise with σ ≈ 2.9.
            let noise = (0..4)
                .map(|k| uniform((i * 4 + k) as u64) - 0.5)
                .sum::<f64>()
                * 5.0;
            let mut v = 200.0 + 40.0 * d.sin() + 10.0 * (2.0 * d).cos() + 15.0 * w.sin() + noise;
            if (3000..3010).contains(&i) {
                v += 150.0;
            }
            if (7000..7360).contains(&i) {
                v -= 80.0;
            }
            Sample::new(Timestamp::from_millis(t), v)
        })
        .collect()
}
