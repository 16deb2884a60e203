//! What the incident hub adds to every verdict of `portent serve`: [`Correlator::learn`], which
//! the daemon calls for each scored sample (anomalous or not) to learn where pods run and what
//! each Deployment's ReplicaSets' pods show.
//!
//! * `learn/100k_verdicts`: one minute of verdicts of 100,000 series: 20,000 pods of 2,000
//!   Deployments (two ReplicaSets each, a rollout half done), five series per pod (CPU and
//!   memory with a `node` label, errors, latency, requests), after two warm-up minutes, so
//!   every pod, ReplicaSet and query is already known (the steady state: nothing allocated);
//! * `learn/reference_detector_score`: the reference measured in the same run, portent's
//!   default detector scoring and updating 100,000 samples of one series (fitted on a week),
//!   the per-sample cost the verdicts come from.
//!
//! Run: `cargo bench -p portent-incidents --bench learn`. With `cargo test --benches` the
//! same code runs once on 2,000 series.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use portent_core::seeded::gauss;
use portent_core::{Detect, Fit, Labels, Sample, Timestamp};
use portent_incidents::{Correlator, CorrelatorConfig};
use portent_models::DetectorConfig;

// The allocator the portent binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MIN: i64 = 60_000;
const T0: i64 = 1_793_577_600_000;
/// Characters Kubernetes uses in generated names, so pod names parse as Deployment pods.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated(mut i: usize, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = SAFE[i % SAFE.len()] as char;
            i /= SAFE.len();
            c
        })
        .collect()
}

/// `(labels, query)` of every series, five per pod.
fn series() -> Vec<(Labels, &'static str)> {
    let mut out = Vec::with_capacity(100_000);
    for pod in 0..20_000 {
        let deployment = pod / 10;
        let ns = format!("team-{}", deployment % 40);
        let set = generated(deployment * 2 + usize::from(pod % 10 < 5), 10);
        let name = format!("app-{deployment}-{set}-{}", generated(pod, 5));
        let node = format!("ip-10-0-{}-{}", pod % 7, pod % 250);
        for (metric, query, with_node) in [
            ("container_cpu_usage_seconds_total", "cpu", true),
            ("container_memory_working_set_bytes", "memory", true),
            ("pod_error_ratio", "errors", false),
            ("pod_latency_p99_seconds", "latency", false),
            ("pod_requests_per_second", "requests", false),
        ] {
            let mut pairs = vec![
                ("__name__", metric.to_owned()),
                ("namespace", ns.clone()),
                ("pod", name.clone()),
                ("container", "app".to_owned()),
            ];
            if with_node {
                pairs.push(("node", node.clone()));
            }
            out.push((Labels::new(pairs).expect("valid labels"), query));
        }
    }
    out
}

fn learn(c: &mut Criterion) {
    let smoke = std::env::args().all(|a| a != "--bench");
    let series = series();
    let n = if smoke { 2_000 } else { series.len() };
    let series = &series[..n];
    let mut corr = Correlator::new(CorrelatorConfig::default());
    let minute = |corr: &mut Correlator, m: i64| {
        let t = Timestamp::from_millis(T0 + m * MIN);
        for (i, (labels, query)) in series.iter().enumerate() {
            let noise = gauss((m as u64) << 20 | i as u64);
            corr.learn(labels, query, t, 1.0 + 0.1 * noise, true);
        }
    };
    for m in 0..2 {
        minute(&mut corr, m);
    }
    let samples: Vec<Sample> = (0..10_080 + n as i64)
        .map(|i| {
            let day = (i as f64 / 1440.0 * std::f64::consts::TAU).sin();
            Sample::new(
                Timestamp::from_millis(T0 + i * MIN),
                10.0 + 3.0 * day + gauss(i as u64),
            )
        })
        .collect();
    let (fit_on, stream) = samples.split_at(10_080);
    let fitted = DetectorConfig::default().fit(fit_on).expect("fit");

    let mut g = c.benchmark_group("learn");
    g.throughput(Throughput::Elements(n as u64));
    let mut m = 2;
    g.bench_function("100k_verdicts", |b| {
        b.iter(|| {
            minute(&mut corr, m);
            m += 1;
        })
    });
    g.bench_function("reference_detector_score", |b| {
        b.iter_batched_ref(
            || fitted.clone(),
            |d| {
                for s in stream {
                    black_box(d.observe(*s));
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, learn);
criterion_main!(benches);
