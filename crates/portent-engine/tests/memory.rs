//! Memory per series, measured: the process's resident memory grows by less than 4 KiB for each
//! fitted series the store tracks. The series are of the costly kind: eight Kubernetes-like
//! labels, and a detector fitted on 22 days with an evident daily cycle, so that it carries
//! per-hour ranges (24 of them; a series whose weekly cycle is evident carries 168, 1.1 KiB
//! more, which [`Store::approx_bytes`] assumes for every seasonal series). Alone in its test
//! binary so that no other test's allocations blur the measurement.
//!
//! Measured at `d0715b3`: 1,350 B resident per series (1,088 B of it the entry inline, most of
//! the rest the label sets' text and the index), 1,366 B estimated, 824 B of detector state on
//! disk.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap fixtures known good

use portent_core::seeded::gauss;
use portent_core::{Fit, Sample, Timestamp};
use portent_engine::{Entry, Store};
use portent_models::DetectorConfig;
use portent_testkit::cadvisor_labels;

const SERIES: usize = 20_000;
const MIN: i64 = 60_000;

/// Resident memory of this process, in bytes (Linux).
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's second field");
    pages * 4096
}

#[test]
fn resident_memory_per_series() {
    let t0 = 1_700_438_400_000; // a Monday
    let history: Vec<Sample> = (0..22 * 1440)
        .map(|i| {
            let t = t0 + i * MIN;
            let day = std::f64::consts::TAU * (t % 86_400_000) as f64 / 86_400_000.0;
            let weekend = if (i / 1440) % 7 >= 5 { -20.0 } else { 0.0 };
            let v = 100.0 + 30.0 * day.sin() + weekend + 2.0 * gauss(i as u64);
            Sample::new(Timestamp::from_millis(t), v)
        })
        .collect();
    let detector = DetectorConfig::default().fit(&history).unwrap();
    let sel = detector.selection();
    assert!(sel.evident.daily > 0, "{sel:?}");
    let state = postcard::to_stdvec(&detector).unwrap().len();
    drop(history);

    let before = resident();
    let mut store = Store::new();
    let g = store.group_id("auto", "cpu");
    for i in 0..SERIES {
        let e = Entry::new(detector.clone(), Timestamp::from_millis(t0));
        store.group_mut(g).insert(cadvisor_labels(i), e);
    }
    let measured = resident().saturating_sub(before) / SERIES;
    let estimated = store.approx_bytes() / SERIES;
    println!(
        "{sel:?}; per series: {measured} B resident, {estimated} B estimated, {state} B of detector state \
         on disk, {} B entry inline",
        std::mem::size_of::<Entry>()
    );
    assert!(measured <= 4096, "{measured} B resident per series");
    assert!(estimated <= 4096, "{estimated} B estimated per series");
    // The estimate is for self-metrics: it must be in the right ballpark.
    assert!(
        estimated * 2 >= measured && estimated <= measured * 2,
        "estimate {estimated} B, measured {measured} B"
    );
    assert_eq!(store.len(), SERIES);
}
