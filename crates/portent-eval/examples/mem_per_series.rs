//! Resident memory per series of the push path (issue 3's bar: under 4 KiB per series), in a
//! bounded process: N series (default 100,000) tracked by the scheduler with a fitted detector
//! each, fed M minutes (default 10) of remote_write bodies through the push buffer and scored.
//!
//! ```sh
//! cargo run --release -p portent-eval --example mem_per_series -- [SERIES] [MINUTES]
//! ```
//!
//! Prints VmRSS (from /proc/self/status) before, after building the scheduler's state, and after
//! the minutes of ingest and scoring, each delta per series, next to the engine's own estimate
//! ([`Store::approx_bytes`]), the push buffer's samples (16 bytes each as they came) and what the
//! buffer holds by its own estimate ([`PushBuffer::approx_bytes`]). The data is that of
//! `benches/push_path.rs`.

use std::sync::Mutex;
use std::time::Instant;

// The allocator the portent binary uses: what the daemon's push path runs with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use portent_core::{Fit, Labels, Sample, Timestamp};
use portent_engine::{
    Cadence, Entry, IngestStats, Job, Plan, PushBuffer, PushLimits, PushQuery, Scheduler, Selector,
    Store,
};
use portent_models::DetectorConfig;
#[path = "../benches/common/push.rs"]
mod push;
use push::{DAY, METRIC, MIN, Routed, T0, bodies, labels, value};

fn vm_rss() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let minutes: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let per = |bytes: usize| bytes / n.max(1);

    let history: Vec<Sample> = (0..8 * 1440)
        .map(|i| {
            let t = T0 - 8 * DAY + i * MIN;
            Sample::new(Timestamp::from_millis(t), value(0, t))
        })
        .collect();
    let detector = DetectorConfig::default()
        .fit(&history)
        .unwrap_or_else(|e| panic!("fit: {e}"));
    drop(history);

    let rss0 = vm_rss();
    let mut store = Store::new();
    let g = store.group_id("auto", "cpu");
    for i in 0..n {
        let mut e = Entry::new(detector.clone(), Timestamp::from_millis(T0));
        e.last_scored = Some(Timestamp::from_millis(T0));
        store.group_mut(g).insert(labels(i), e);
    }
    let rss1 = vm_rss();
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
    let (mut scheduler, _) =
        Scheduler::with_store(plan, store).unwrap_or_else(|e| panic!("plan: {e}"));
    let buffer = Mutex::new(PushBuffer::new(
        vec![PushQuery {
            alias: "cpu".into(),
            selector: Selector::metric(METRIC),
            step_ms: MIN,
        }],
        PushLimits::default(),
    ));
    scheduler.step(Timestamp::from_millis(T0), &mut Routed(&buffer));
    let names: Vec<Labels> = (0..n).map(labels).collect();
    let mut scored = 0;
    // The receiver keeps decode buffers from one request to the next.
    let mut decoded = portent_prom::DecodedWrite::default();
    let (mut t_decode, mut t_ingest, mut t_step, mut score_time) = (0.0, 0.0, 0.0, 0.0);
    for m in 1..=minutes {
        let t = T0 + m * MIN;
        for body in bodies(&names, t) {
            let started = Instant::now();
            decoded
                .decode(&body, 64 << 20)
                .unwrap_or_else(|e| panic!("decode: {e}"));
            t_decode += started.elapsed().as_secs_f64();
            let started = Instant::now();
            if let Ok(mut b) = buffer.lock() {
                // As the daemon's receiver does: known series looked up by the decoded labels.
                let mut stats = IngestStats::default();
                decoded
                    .for_each_batch(PushBuffer::BATCH, |batch| b.ingest_batch(batch, &mut stats));
            }
            t_ingest += started.elapsed().as_secs_f64();
        }
        let started = Instant::now();
        let report = scheduler.step(Timestamp::from_millis(t), &mut Routed(&buffer));
        t_step += started.elapsed().as_secs_f64();
        scored += report.samples_scored;
        score_time += report.score_time.as_secs_f64();
    }
    drop(names);
    let rss2 = vm_rss();
    let (samples, buffer_bytes) = buffer
        .lock()
        .map_or((0, 0), |b| (b.sample_count(), b.approx_bytes()));
    println!("{n} series, {minutes} minutes, {scored} samples scored");
    let per_sample = |secs: f64| secs * 1e9 / (scored.max(1) as f64);
    println!(
        "time per sample: decode {:.0} ns, push buffer ingest {:.0} ns, scheduler step {:.0} ns \
         (score ticks: read the buffer and score, {:.0} ns); {:.0} samples/s on one core",
        per_sample(t_decode),
        per_sample(t_ingest),
        per_sample(t_step),
        per_sample(score_time),
        scored as f64 / (t_decode + t_ingest + t_step),
    );
    println!(
        "VmRSS: {} MiB before, {} MiB with the scheduler's state, {} MiB after ingest and scoring",
        rss0 >> 20,
        rss1 >> 20,
        rss2 >> 20
    );
    println!(
        "per series: scheduler state {} B resident ({} B by Store::approx_bytes), push buffer {} \
         samples ({} B as they came, {} B held by PushBuffer::approx_bytes), whole push path {} B \
         resident",
        per(rss1.saturating_sub(rss0)),
        per(scheduler.store().approx_bytes()),
        samples / n.max(1),
        per(16 * samples),
        per(buffer_bytes),
        per(rss2.saturating_sub(rss0)),
    );
}
