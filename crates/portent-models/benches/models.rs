//! Benchmarks of the models' hot paths, on seeded synthetic data.
//!
//! The data has the shape of an infrastructure metric: one week (for the fit) at one-minute
//! steps, a daily and a weekly cycle, noise, and two incidents (a spike burst and a six-hour
//! level shift) that the robust fit has to see through; that is the workload of one refit.
//! It is generated in `workload.rs`, which `examples/bench_workload.rs` also prints as CSV so
//! that `bench/prophet_compare.sh` can fit Python Prophet on the very same series.
//!
//! `refit_28d_15s` is the refit that `portent detect` and the engine do once a day on a series
//! scraped every 15 s (Prometheus' default): four weeks, 161,280 samples, the same shape.
//!
//! Run: `cargo bench -p portent-models --bench models`. Each group has a reference measured in
//! the same run, so that ratios survive a noisy machine.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use portent_core::{Detect, Fit};
use portent_models::{DetectorConfig, SeasonalBaseline, SeasonalConfig, select_model};

mod workload;
use workload::{workload, workload_at};

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

fn refit_long(c: &mut Criterion) {
    let window = workload_at(28 * 5760, 15_000);
    let mut g = c.benchmark_group("refit_28d_15s");
    g.throughput(Throughput::Elements(window.len() as u64));
    // The whole model selection: the history summarised into time bins for the fits, the
    // level's smoothing replayed on the most recent samples.
    g.bench_function("select_model", |b| {
        b.iter(|| select_model(black_box(&window)))
    });
    // Reference: sorting the window's values once, the cheapest thing that looks at every
    // sample in order of value (the detector's refit used to do it for its range).
    let values: Vec<f64> = window.iter().map(|s| s.v).collect();
    g.bench_function("reference_sort_values", |b| {
        b.iter_batched_ref(
            || values.clone(),
            |v| v.sort_unstable_by(f64::total_cmp),
            BatchSize::LargeInput,
        )
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
    // With eight days of history the hourly ranges are on, and at a minute's step the
    // seasonal shift too: the per-sample cost of a mature series.
    let long_history = workload(8 * 1440);
    let long_stream = workload(8 * 1440 + 10_080)[8 * 1440..].to_vec();
    let mature = DetectorConfig::default().fit(&long_history).expect("fit");
    let state = postcard::to_stdvec(&mature).expect("serialise");
    eprintln!(
        "state bytes per series with eight days (postcard): {}",
        state.len()
    );
    g.bench_function("portent_default_detector_8d_history", |b| {
        b.iter_batched_ref(
            || mature.clone(),
            |d| {
                for s in &long_stream {
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

criterion_group!(benches, fit, refit_long, observe);
criterion_main!(benches);
