//! The daemon's multivariate jobs (`joint.rs`) on seeded data: 1,000 pods, ten replicas in
//! each of 100 workloads, four features each (CPU, memory, latency, errors) at one-minute
//! steps, one Isolation Forest pooled per workload and fitted on a day of rows.
//!
//! Measured: one five-minute score tick of the scheduler (5,000 rows: reading the four queries
//! from a [`MemorySource`], joining them per pod, scoring, combining), against the reference of
//! scoring the same 5,000 rows with the pools' forests directly, in the same run. Printed once:
//! the state file's bytes per pool.
//!
//! Run: `cargo bench -p portent-engine --bench joint`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use portent_config::JointMethod;
use portent_core::seeded::gauss;
use portent_core::{Labels, Sample, Series, Timestamp};
use portent_engine::{Cadence, Feature, JointJob, MemorySource, Plan, Scheduler};
use portent_models::multivariate::{FeatureSet, IsolationForestConfig, ScoreRows};

const MIN: i64 = 60_000;
const DAY: i64 = 1440 * MIN;
/// A Monday, 00:00 UTC.
const T0: i64 = 1_700_438_400_000;
const WORKLOADS: usize = 100;
const REPLICAS: usize = 10;
const FEATURES: [&str; 4] = ["cpu", "memory", "latency", "errors"];
/// The measured tick: five one-minute rows per pod after a day of history.
const NOW: i64 = T0 + DAY + 5 * MIN;

fn row(pod: usize, minute: i64) -> [f64; 4] {
    let i = (minute as u64) * 4096 + pod as u64;
    let g = |k: u64| gauss(i * 5 + k);
    let t = 1.0 + 0.4 * (std::f64::consts::TAU * minute as f64 / 1440.0).sin() + 0.05 * g(0);
    [
        0.5 * t + 0.02 * g(1),
        3e8 * (1.0 + 0.2 * t) + 2e6 * g(2),
        0.05 + 0.02 * t + 0.001 * g(3),
        0.01 + 0.002 * g(4).abs(),
    ]
}

fn source() -> MemorySource {
    let mut m = MemorySource::new();
    for w in 0..WORKLOADS {
        for r in 0..REPLICAS {
            let pod_i = w * REPLICAS + r;
            let pod = format!("api-{w:03}-7d9f8bcd4-{r:05}");
            let workload = format!("api-{w:03}");
            let rows: Vec<(i64, [f64; 4])> = (0..(NOW - T0) / MIN + 1)
                .map(|k| (T0 + k * MIN, row(pod_i, k)))
                .collect();
            for (f, name) in FEATURES.iter().enumerate() {
                let labels = Labels::new([
                    ("__name__", *name),
                    ("namespace", "shop"),
                    ("pod", pod.as_str()),
                    ("workload", workload.as_str()),
                ])
                .expect("valid labels");
                let samples = rows
                    .iter()
                    .map(|(t, r)| Sample::new(Timestamp::from_millis(*t), r[f]))
                    .collect();
                m.insert(name, Series { labels, samples });
            }
        }
    }
    m
}

fn plan() -> Plan {
    Plan {
        jobs: Vec::new(),
        joint: vec![JointJob {
            model: "pods".into(),
            method: JointMethod::IsolationForest,
            features: FEATURES
                .map(|q| Feature {
                    query: q.into(),
                    expr: q.into(),
                })
                .to_vec(),
            step_ms: MIN,
            join_on: vec!["namespace".into(), "pod".into()],
            pool_by: vec!["namespace".into(), "workload".into()],
            cadence: Cadence {
                fit_every_ms: DAY,
                fit_window_ms: DAY,
                score_every_ms: 5 * MIN,
            },
        }],
        retention_ms: DAY,
    }
}

fn tick(c: &mut Criterion) {
    let mut src = source();
    // The first step fits every pool on the day before it; the measured one scores the next
    // five minutes.
    let mut warm = Scheduler::new(plan()).expect("valid plan");
    let first = warm.step(Timestamp::from_millis(T0 + DAY), &mut src);
    assert_eq!(first.fitted, WORKLOADS, "every pool fitted");
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = portent_engine::save(warm.store(), dir.path()).expect("save");
    println!(
        "state file: {} bytes for {WORKLOADS} pools, {} bytes per pool",
        saved.bytes,
        saved.bytes / WORKLOADS as u64
    );

    // The reference: the same rows through forests fitted the same way, directly.
    let schema = FeatureSet::new(FEATURES).expect("valid names");
    let forests: Vec<_> = (0..WORKLOADS)
        .map(|w| {
            let rows: Vec<[f64; 4]> = (0..1440)
                .flat_map(|k| (0..REPLICAS).map(move |r| row(w * REPLICAS + r, k)))
                .collect();
            IsolationForestConfig::default()
                .fit(schema.clone(), &rows)
                .expect("fit")
        })
        .collect();
    let fresh: Vec<(usize, [f64; 4])> = (0..WORKLOADS * REPLICAS)
        .flat_map(|p| (1440..1445).map(move |k| (p, row(p, k))))
        .collect();

    let mut g = c.benchmark_group("joint_tick_1000_pods_5_rows");
    g.sample_size(10);
    g.bench_function("scheduler_step", |b| {
        b.iter_batched(
            || warm.clone(),
            |mut s| {
                let r = s.step(Timestamp::from_millis(NOW), &mut src);
                assert_eq!(r.joint_rows_scored, WORKLOADS * REPLICAS * 5);
                // Returned, so that dropping the clone is not timed.
                (black_box(r), s)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("reference_score_rows", |b| {
        b.iter(|| {
            for (p, r) in &fresh {
                black_box(forests[p / REPLICAS].score_row(r).expect("width"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
