//! Benchmarks of the multivariate models, on seeded synthetic data.
//!
//! The data (`benches/pod_rows.rs`) has the shape of one pod's aligned metrics over one week
//! at one-minute steps (10,080 rows), one row in a hundred an anomaly, so that the fits do
//! their contamination trimming on real work. That is the workload of one refit of one
//! entity, and scoring it is a week of that entity's rows.
//!
//! Run: `cargo bench -p portent-models --bench multivariate`. Each group has a reference
//! measured in the same run, so that ratios survive a noisy machine.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
mod pod_rows;
use pod_rows::pod_rows;
use portent_models::multivariate::{
    AutoencoderConfig, FeatureSet, IsolationForestConfig, ScoreRows,
};

const ROWS: usize = 10_080;

fn schema() -> FeatureSet {
    FeatureSet::new(["cpu", "memory", "latency", "errors"]).expect("valid names")
}

fn week() -> Vec<[f64; 4]> {
    pod_rows(0, ROWS).0
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
