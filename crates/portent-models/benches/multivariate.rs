//! Benchmarks of the multivariate models, on seeded synthetic data.
//!
//! The data has the shape of one pod's aligned metrics over one week at one-minute steps
//! (10,080 rows): CPU, memory and latency all follow traffic, which has a daily cycle and noise;
//! the error rate is independent noise. One row in a hundred is an anomaly, alternately a gross
//! outlier on one metric and a broken correlation (memory up, latency down), so that the fits
//! do their contamination trimming on real work. That is the workload of one refit of one
//! entity, and scoring it is a week of that entity's rows.
//!
//! Run: `cargo bench -p portent-models --bench multivariate`. Each group has a reference
//! measured in the same run, so that ratios survive a noisy machine.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portent_core::seeded::gauss;
use portent_models::multivariate::{
    AutoencoderConfig, FeatureSet, IsolationForestConfig, ScoreRows,
};

const ROWS: usize = 10_080;

fn schema() -> FeatureSet {
    FeatureSet::new(["cpu", "memory", "latency", "errors"]).expect("valid names")
}

fn week() -> Vec<[f64; 4]> {
    (0..ROWS as u64)
        .map(|m| {
            let g = |k: u64| gauss(m * 8 + k);
            let day = std::f64::consts::TAU * m as f64 / 1440.0;
            let t = 1.0 + 0.4 * day.sin() + 0.1 * g(0);
            let (t_mem, t_lat) = if m % 200 == 7 {
                (t + 0.4, t - 0.4)
            } else {
                (t, t)
            };
            let mut row = [
                2.0 * t + 0.05 * g(1),
                1e9 * (0.5 + 0.3 * t_mem) + 1e7 * g(2),
                0.05 + 0.03 * t_lat + 0.002 * g(3),
                0.2 + 0.05 * g(4),
            ];
            if m % 200 == 107 {
                row[(m / 200 % 4) as usize] *= 4.0;
            }
            row
        })
        .collect()
}

fn fit(c: &mut Criterion) {
    let rows = week();
    let mut g = c.benchmark_group("multivariate_fit_10080x4");
    g.sample_size(10);
    g.bench_function("isolation_forest", |b| {
        let config = IsolationForestConfig::default();
        b.iter(|| config.fit(schema(), black_box(&rows)))
    });
    g.bench_function("autoencoder", |b| {
        let config = AutoencoderConfig::default();
        b.iter(|| config.fit(schema(), black_box(&rows)))
    });
    // Reference: sorting each feature's values once, as any robust scaling must.
    g.bench_function("reference_sort_columns", |b| {
        b.iter(|| {
            for j in 0..4 {
                let mut col: Vec<f64> = rows.iter().map(|r| r[j]).collect();
                col.sort_unstable_by(f64::total_cmp);
                black_box(&col);
            }
        })
    });
    g.finish();
}

fn score(c: &mut Criterion) {
    let rows = week();
    let forest = IsolationForestConfig::default()
        .fit(schema(), &rows)
        .expect("fit");
    let ae = AutoencoderConfig::default()
        .fit(schema(), &rows)
        .expect("fit");
    for (name, bytes) in [
        (
            "isolation_forest",
            postcard::to_stdvec(&forest).map(|v| v.len()),
        ),
        ("autoencoder", postcard::to_stdvec(&ae).map(|v| v.len())),
    ] {
        eprintln!("{name}: state bytes (postcard): {:?}", bytes);
    }

    let mut g = c.benchmark_group("multivariate_score_10080x4");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("isolation_forest", |b| {
        b.iter(|| {
            for r in &rows {
                black_box(forest.score_row(r).ok());
            }
        })
    });
    // The same scores, tree by tree over all rows (as the fit scores its window).
    g.bench_function("isolation_forest_batch", |b| {
        b.iter(|| black_box(forest.score_rows(black_box(&rows))))
    });
    g.bench_function("autoencoder", |b| {
        b.iter(|| {
            for r in &rows {
                black_box(ae.score_row(r).ok());
            }
        })
    });
    // Reference: a diagonal Mahalanobis distance per row, the cheapest multivariate score.
    g.bench_function("reference_diagonal_distance", |b| {
        b.iter(|| {
            for r in &rows {
                black_box(r.iter().map(|v| v * v).sum::<f64>());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, fit, score);
criterion_main!(benches);
