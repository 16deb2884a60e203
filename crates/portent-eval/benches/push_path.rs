//! The push path of `portent serve` for 100,000 series, as issue 3 measures it: Prometheus
//! remote_writes one sample per series per minute; each iteration is one minute of it.
//!
//! * `push_path/decode_ingest_score`: the minute's remote_write bodies (protobuf + snappy,
//!   2,000 series each, Prometheus' default `max_samples_per_send`) decoded by portent-prom's
//!   decoder (`decode_write`), each series looked up in the engine's [`PushBuffer`] by its
//!   labels as decoded and appended (as the daemon's receiver does), then one
//!   [`Scheduler::step`] that reads
//!   the buffer as its source (the same glue as the daemon's `Routed`: the buffer behind a
//!   mutex) and scores every new sample with the default detector;
//! * `push_path/reference_snappy_protobuf`: the reference measured in the same run, snappy
//!   decompression and protobuf decoding of the same bodies alone (prost, no label validation):
//!   the floor any remote_write receiver pays.
//!
//! The data: eight Kubernetes-like labels per series (cAdvisor's CPU series), values on a daily
//! cycle with seeded noise, one sample per series per minute. Every series has a detector fitted
//! on eight days of such a series (cloned, as fitting 100,000 series would take minutes of
//! setup); fits are not part of the step (the fit cadence is a week), so this is ingest plus
//! scoring, the bar of issue 3. Encoding the bodies is setup, outside the timing. The push
//! buffer is filled to its bound (168 samples a series at 100,000 series) before anything is
//! measured: the steady state of a daemon, not its first three hours.
//!
//! Throughput is printed as samples per second per core (the step runs on one thread). With
//! `cargo test --benches` (no `--bench` argument) the same code runs once on 2,000 series.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The allocator the portent binary runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use portent_core::{Fit, Labels, Sample, Timestamp};
use portent_engine::{
    Cadence, Entry, IngestStats, Job, Plan, PushBuffer, PushLimits, PushQuery, Scheduler, Selector,
    Store,
};
use portent_models::DetectorConfig;
#[path = "common/push.rs"]
mod push;
use prost::Message;
use push::{DAY, METRIC, MIN, Routed, T0, bodies, labels, value};

/// A scheduler tracking every series of `labels` with a fitted detector, scored up to `t0`, and
/// an empty push buffer selecting them.
fn setup(labels: &[Labels]) -> (Scheduler, Mutex<PushBuffer>) {
    let history: Vec<Sample> = (0..8 * 1440)
        .map(|i| {
            let t = T0 - 8 * DAY + i * MIN;
            Sample::new(Timestamp::from_millis(t), value(0, t))
        })
        .collect();
    let detector = DetectorConfig::default()
        .fit(&history)
        .unwrap_or_else(|e| panic!("fit: {e}"));
    let mut store = Store::new();
    let g = store.group_id("auto", "cpu");
    for l in labels {
        let mut e = Entry::new(detector.clone(), Timestamp::from_millis(T0));
        e.last_scored = Some(Timestamp::from_millis(T0));
        store.group_mut(g).insert(l.clone(), e);
    }
    let plan = Plan {
        jobs: vec![Job {
            model: "auto".into(),
            query: "cpu".into(),
            expr: METRIC.into(),
            step_ms: MIN,
            detector: DetectorConfig::default(),
            cadence: Cadence {
                fit_every_ms: 7 * DAY,
                fit_window_ms: 7 * DAY,
                score_every_ms: MIN,
            },
        }],
        joint: Vec::new(),
        retention_ms: DAY,
    };
    let (scheduler, _) = Scheduler::with_store(plan, store).unwrap_or_else(|e| panic!("plan: {e}"));
    let buffer = PushBuffer::new(
        vec![PushQuery {
            alias: "cpu".into(),
            selector: Selector::metric(METRIC),
            step_ms: MIN,
        }],
        PushLimits::default(),
    );
    (scheduler, Mutex::new(buffer))
}

/// What the daemon's receiver does with a decoded body: each series looked up in the buffer by
/// its labels as decoded (`PushSink::ingest_write`).
fn ingest(buffer: &mut PushBuffer, write: &portent_prom::DecodedWrite) -> IngestStats {
    let mut stats = IngestStats::default();
    write.for_each_batch(PushBuffer::BATCH, |batch| {
        buffer.ingest_batch(batch, &mut stats)
    });
    stats
}

/// One minute: decode and ingest every body, then step. Returns samples scored.
fn minute(
    scheduler: &mut Scheduler,
    buffer: &Mutex<PushBuffer>,
    bodies: &[Vec<u8>],
    t: i64,
) -> usize {
    // The receiver keeps decode buffers from one request to the next.
    let mut write = portent_prom::DecodedWrite::default();
    for body in bodies {
        write
            .decode(body, 64 << 20)
            .unwrap_or_else(|e| panic!("decode: {e}"));
        let stats = match buffer.lock() {
            Ok(mut b) => ingest(&mut b, &write),
            Err(p) => ingest(&mut p.into_inner(), &write),
        };
        black_box(stats);
    }
    let report = scheduler.step(Timestamp::from_millis(t), &mut Routed(buffer));
    report.samples_scored
}

fn push_path(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100_000 } else { 2_000 };
    let labels: Vec<Labels> = (0..n).map(labels).collect();
    let (mut scheduler, buffer) = setup(&labels);
    // A first step at T0 sets the scheduler's clock; minutes follow it.
    scheduler.step(Timestamp::from_millis(T0), &mut Routed(&buffer));
    let mut t = T0;
    // Steady state, as a daemon runs for weeks: the buffer is filled to its bound first, so
    // its rings no longer grow (each growth a copy into fresh pages, a quarter of the page
    // faults of a run that starts empty and fills as it is measured). In the quick test mode
    // the bound is far off, so it starts empty.
    if full {
        let limits = PushLimits::default();
        let per_series = limits.max_samples_per_series.min(limits.max_samples / n);
        for _ in 0..per_series {
            t += MIN;
            let minute_bodies = bodies(&labels, t).collect::<Vec<_>>();
            minute(&mut scheduler, &buffer, &minute_bodies, t);
        }
    }
    let mut group = c.benchmark_group("push_path");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(if full { 30 } else { 1 }));
    group.bench_function(format!("decode_ingest_score_{n}_series"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                t += MIN;
                let minute_bodies = bodies(&labels, t).collect::<Vec<_>>();
                let started = Instant::now();
                let scored = minute(&mut scheduler, &buffer, &minute_bodies, t);
                total += started.elapsed();
                assert_eq!(scored, n, "every series scored once a minute");
            }
            total
        })
    });
    let reference: Vec<Vec<u8>> = bodies(&labels, T0 + MIN).collect();
    group.bench_function(format!("reference_snappy_protobuf_{n}_series"), |b| {
        b.iter(|| {
            for body in &reference {
                let raw = snap::raw::Decoder::new()
                    .decompress_vec(body)
                    .unwrap_or_default();
                let req =
                    portent_prom::proto::WriteRequest::decode(raw.as_slice()).unwrap_or_default();
                black_box(req);
            }
        })
    });
    group.finish();
    let bytes = scheduler.store().approx_bytes();
    let samples = buffer.lock().map_or(0, |b| b.sample_count());
    println!(
        "state per series: scheduler store {} B (approx_bytes), push buffer {} samples = {} B of \
         samples",
        bytes / n,
        samples / n,
        16 * samples / n,
    );
}

criterion_group!(benches, push_path);
criterion_main!(benches);
