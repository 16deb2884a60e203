//! portent's built-in sample series: what `portent detect --sample` scores when there is no
//! file, so the README's first command needs no download and no server.
//!
//! Two weeks of a request rate at one-minute steps: a daily and a weekly cycle, noise, and five
//! incidents of the kinds portent names, on the last days so the model has learnt first.

use std::f64::consts::TAU;

use portent_core::seeded::uniform;
use portent_core::{Labels, Sample, Series, Timestamp};

const MINUTE: i64 = 60_000;
const DAY: i64 = 1440 * MINUTE;

/// The incidents, as (kind, first minute, last minute) from the series' start.
pub(crate) const INCIDENTS: [(&str, i64, i64); 5] = [
    ("spike", 9 * 1440 + 14 * 60, 9 * 1440 + 14 * 60 + 8),
    ("level_shift", 10 * 1440 + 3 * 60, 10 * 1440 + 5 * 60),
    ("drift", 11 * 1440 + 8 * 60, 11 * 1440 + 16 * 60),
    ("flatline", 12 * 1440 + 20 * 60, 12 * 1440 + 21 * 60),
    (
        "missing_data",
        13 * 1440 + 10 * 60,
        13 * 1440 + 10 * 60 + 40,
    ),
];

/// The sample series.
pub(crate) fn series() -> Series {
    // Monday 2024-01-01 00:00 UTC.
    let t0 = 1_704_067_200_000i64;
    let n = 14 * 1440;
    let mut frozen = None;
    let samples = (0..n)
        .map(|m| {
            let t = t0 + m * MINUTE;
            let day = TAU * (t.rem_euclid(DAY) as f64 / DAY as f64);
            let weekday = (m / 1440) % 7;
            let weekend = if weekday >= 5 { 0.7 } else { 1.0 };
            // Busy in the afternoon, quiet at night.
            let base = weekend * (300.0 - 180.0 * (day + 0.5).cos() + 30.0 * (2.0 * day).sin());
            let noise = (0..4)
                .map(|k| uniform((m * 4 + k) as u64) - 0.5)
                .sum::<f64>()
                * 20.0;
            let mut v = base + noise;
            for (kind, from, to) in INCIDENTS {
                if !(from..=to).contains(&m) {
                    continue;
                }
                match kind {
                    "spike" => v += 600.0,
                    "level_shift" => v *= 0.35,
                    "drift" => v += (m - from) as f64 * 0.5,
                    "flatline" => v = *frozen.get_or_insert(v),
                    _ => v = f64::NAN,
                }
            }
            Sample::new(Timestamp::from_millis(t), (v * 100.0).round() / 100.0)
        })
        .collect();
    Series {
        labels: Labels::new([
            ("__name__", "http_requests_per_second"),
            ("job", "sample"),
            ("service", "checkout"),
        ])
        .unwrap_or_default(),
        samples,
    }
}
