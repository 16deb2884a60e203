//! Prints a long, realistic single-series metric as a `timestamp,value` CSV, the input of the
//! end-to-end throughput measurement of `portent detect` (see BENCHMARKS.md, "Performance").
//!
//! Run: `cargo run --release -q -p portent-models --example metric_csv -- [ROWS [STEP_S]] > m.csv`
//! (default 2,000,000 rows at 15 s, Prometheus' default scrape interval: about 347 days).
//!
//! The shape is that of a request-rate metric, seeded so every run prints the same bytes: a
//! daily cycle with a lunchtime bump, quieter weekends, slow growth, roughly Gaussian noise, and
//! a few incidents (a spike burst, a level shift, a slow leak, a half-hour scrape gap) for the detector to
//! find. At a 15 s step the engine's 28-day refit window holds about 161,000 samples, so this
//! also exercises refits on histories far larger than NAB's. Timestamps are Unix seconds and
//! values have three decimals, as `promtool` and the Prometheus API print them.

use std::f64::consts::TAU;
use std::io::{self, BufWriter, Write};

use portent_core::seeded::uniform;

const T0: i64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC, a Tuesday
const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;

/// The value at row `i`, time `t` (Unix seconds).
fn value(i: u64, t: i64, rows: u64) -> f64 {
    let day = TAU * (t.rem_euclid(DAY) as f64 / DAY as f64);
    let week = TAU * (t.rem_euclid(WEEK) as f64 / WEEK as f64);
    let days = (t - T0) as f64 / DAY as f64;
    // Sum of four uniforms: roughly Gaussian noise with σ ≈ 0.58 × 8.
    let noise = (0..4).map(|k| uniform(i * 4 + k) - 0.5).sum::<f64>() * 8.0;
    let mut v = 500.0 * (1.0 + 0.001 * days) // slow growth
        + 150.0 * day.sin()
        + 40.0 * (2.0 * day).cos() // lunchtime bump
        + 60.0 * week.cos() // quieter weekends
        + noise;
    // Incidents at fixed fractions of the series, so any length has them.
    let at = |f: f64| (rows as f64 * f) as u64;
    if (at(0.2)..at(0.2) + 8).contains(&i) {
        v += 400.0; // a two-minute spike burst
    }
    if (at(0.45)..at(0.45) + 1440).contains(&i) {
        v -= 200.0; // a six-hour outage of part of the fleet
    }
    if (at(0.7)..at(0.75)).contains(&i) {
        v += 0.02 * (i - at(0.7)) as f64; // a slow leak
    }
    v.max(0.0)
}

fn main() -> io::Result<()> {
    let arg = |k: usize, default: u64| -> io::Result<u64> {
        std::env::args().nth(k).map_or(Ok(default), |a| {
            a.parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("usage: metric_csv [ROWS [STEP_S]]: {a:?}: {e}"),
                )
            })
        })
    };
    let rows = arg(1, 2_000_000)?;
    let step = arg(2, 15)? as i64;
    let mut out = BufWriter::new(io::stdout().lock());
    writeln!(out, "timestamp,value")?;
    let gap_at = rows * 9 / 10;
    for i in 0..rows {
        // Half an hour of failed scrapes 90% of the way in: time jumps, the row count does not.
        let gap = if i >= gap_at { 1800 } else { 0 };
        let t = T0 + i as i64 * step + gap;
        writeln!(out, "{t},{:.3}", value(i, t, rows))?;
    }
    out.flush()
}
