//! The fitted detector's saved form is the state file's (format version 4): a detector saved
//! by an earlier build loads, and saves back to the same bytes. The fixture
//! (`fixtures/detector-v4.postcard`) was written from [`detector`] below by the build that
//! added the untrimmed range (format 4; format 3 added the seasonal shift, and the version 2
//! fixture was written before the detector stopped holding its smoothing factors and options
//! inline, `93bb33b`). Its detector has every part of the state set, the seasonal shift's
//! included: a change of the format that was not meant fails here.

#![allow(clippy::unwrap_used)] // fixtures known good

use portent_core::seeded::gauss;
use portent_core::{Detect, Fit, Sample, Timestamp};
use portent_models::{Detector, DetectorConfig};

const MIN: i64 = 60_000;

/// Nine days of a daily cycle at one minute, fitted on the first eight and fed the ninth, with
/// options away from their defaults: every part of the state is set.
fn detector() -> Detector {
    let t0 = 1_700_438_400_000; // a Monday
    let samples: Vec<Sample> = (0..9 * 1440)
        .map(|i| {
            let t = t0 + i * MIN;
            let day = std::f64::consts::TAU * (t % 86_400_000) as f64 / 86_400_000.0;
            let v = 100.0 + 30.0 * day.sin() + 2.0 * gauss(i as u64);
            Sample::new(Timestamp::from_millis(t), v)
        })
        .collect();
    let config = DetectorConfig {
        memory: 1500.0,
        shift_span: 6.0,
        refractory: 80.0,
        ..DetectorConfig::default()
    };
    let (fit, live) = samples.split_at(8 * 1440);
    let mut d = config.fit(fit).unwrap();
    for s in live {
        d.observe(*s);
    }
    d
}

#[test]
fn a_detector_saved_by_an_earlier_build_loads_and_saves_the_same_bytes() {
    let d = detector();
    let saved = postcard::to_stdvec(&d).unwrap();
    if let Some(path) = std::env::var_os("PORTENT_WRITE_FIXTURE") {
        std::fs::write(path, &saved).unwrap();
    }
    let fixture: &[u8] = include_bytes!("fixtures/detector-v4.postcard");
    assert_eq!(saved, fixture, "the saved form changed");
    let loaded: Detector = postcard::from_bytes(fixture).unwrap();
    assert_eq!(loaded, d);
    assert_eq!(postcard::to_stdvec(&loaded).unwrap(), fixture);
}
