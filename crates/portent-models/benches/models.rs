//! Benchmarks of the models' hot paths, on seeded synthetic data.
//!
//! The data has the shape of an infrastructure metric: one week (for the fit) at one-minute
//! steps, a daily and a weekly cycle, noise, and two incidents (a spike burst and a six-hour
//! level shift) that the robust fit has to see through; that is the workload of one refit.
//!
//! Run: `cargo bench -p portent-models --bench models`. Each group has a reference measured in
//! the same run, so that ratios survive a noisy machine.

use std::f64::consts::TAU;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use portent_core::{Detect, Fit, Sample, Timestamp};
use portent_models::{DetectorConfig, SeasonalBaseline, SeasonalConfig, select_model};

const MINUTE: i64 = 60_000;
const DAY: i64 = 1440 * MINUTE;
const WEEK: i64 = 7 * DAY;

/// splitmix64 → uniform in [0, 1): seeded, dependency-free, identical everywhere.
fn uniform(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// `n` one-minute samples of a seasonal metric with two incidents.
pub fn workload(n: usize) -> Vec<Sample> {
    let t0 = 1_700_000_000_000i64;
    (0..n)
        .map(|i| {
            let t = t0 + i as i64 * MINUTE;
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

fn fit(c: &mut Criterion) {
    let week = workload(10_080);
    let mut g = c.benchmark_group("seasonal_fit_10080");
    g.bench_function("portent_robust_fourier", |b| {
        let config = SeasonalConfig::default();
        b.iter(|| SeasonalBaseline::fit(black_box(&config), black_box(&week)))
    });
    // Reference: one plain least-squares pass over the same design (no robust iterations).
    g.bench_function("reference_least_squares", |b| {
        let config = SeasonalConfig {
            iterations: 0,
            ..SeasonalConfig::default()
        };
        b.iter(|| SeasonalBaseline::fit(black_box(&config), black_box(&week)))
    });
    // The whole refit: seasonality detection and level smoothing included.
    g.bench_function("select_model", |b| {
        b.iter(|| select_model(black_box(&week)))
    });
    g.finish();
}

fn observe(c: &mut Criterion) {
    let history = workload(10_080);
    let stream = workload(10_080 * 2)[10_080..].to_vec();
    let fitted = DetectorConfig::default().fit(&history).expect("fit");
    let state = postcard::to_stdvec(&fitted).expect("serialise");
    eprintln!("state bytes per series (postcard): {}", state.len());

    let mut g = c.benchmark_group("score_and_update");
    g.throughput(Throughput::Elements(stream.len() as u64));
    g.bench_function("portent_default_detector", |b| {
        b.iter_batched_ref(
            || fitted.clone(),
            |d| {
                for s in &stream {
                    black_box(d.observe(*s));
                }
            },
            BatchSize::LargeInput,
        )
    });
    // Reference: the cheapest streaming detector there is, an EWMA z-score.
    g.bench_function("reference_ewma_zscore", |b| {
        b.iter(|| {
            let (mut m, mut v) = (stream[0].v, 1.0f64);
            for s in &stream {
                let e = s.v - m;
                black_box(e / v.sqrt());
                m += 0.05 * e;
                v += 0.05 * (e * e - v);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, fit, observe);
criterion_main!(benches);
