//! Prints the benchmark workload (`benches/workload.rs`) as CSV `ds,y`, the input format of
//! Python Prophet, so that `bench/prophet_compare.sh` fits Prophet on exactly the series that
//! `cargo bench -p portent-models --bench models` fits.
//!
//! Run: `cargo run --release -q -p portent-models --example bench_workload -- [N]` (N samples,
//! default 10080: one week at one-minute steps). `ds` is UTC, `YYYY-MM-DD HH:MM:SS`; `y` is
//! printed in Rust's shortest round-trip form, so the parsed f64s are bit-identical.

use std::io::{self, BufWriter, Write};

#[path = "../benches/workload.rs"]
mod workload;

/// Proleptic Gregorian (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a millisecond Unix timestamp; sub-second parts are dropped.
fn datetime(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, sod % 3600 / 60, sod % 60);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

fn main() -> io::Result<()> {
    let n = match std::env::args().nth(1) {
        None => 10_080,
        Some(a) => a.parse::<usize>().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("N must be a count: {a:?}: {e}"),
            )
        })?,
    };
    let mut out = BufWriter::new(io::stdout().lock());
    writeln!(out, "ds,y")?;
    for s in workload::workload(n) {
        writeln!(out, "{},{}", datetime(s.t.millis()), s.v)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::datetime;

    #[test]
    fn formats_utc() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        assert_eq!(datetime(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(datetime(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(datetime(-1_000), "1969-12-31 23:59:59");
    }
}
