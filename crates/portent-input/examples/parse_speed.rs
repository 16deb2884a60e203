//! Times parsing of a generated 2,000,000-row `timestamp,value` CSV in each timestamp form, and
//! of the same series as Prometheus API JSON.
//!
//! `portent detect` must handle 1M samples/s end to end, parsing included, so parsing alone
//! should reach several million rows/s. Run in release mode:
//!
//! ```text
//! cargo run --release -p portent-input --example parse_speed [ROWS [FORM,...]]
//! ```
//!
//! The rows are NAB-shaped: a 30-second step from 2014-07-01, and values that are mostly
//! integers with some decimals, as NAB's counts and CloudWatch percentages are. Each form is
//! parsed five times and the best run is reported, to keep the page cache and the allocator's
//! first growth out of the number.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use portent_input::{Format, parse};

const START_SECS: i64 = 1_404_172_800; // 2014-07-01 00:00:00 UTC
const STEP_SECS: i64 = 30;

fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    // Howard Hinnant's civil_from_days.
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

fn generate(rows: usize, form: &str) -> String {
    let mut out = String::with_capacity(rows * 32);
    out.push_str("timestamp,value\n");
    for i in 0..rows {
        let t = START_SECS + i as i64 * STEP_SECS;
        let (y, mo, d, h, mi, s) = civil(t);
        // The result of write! to a String is always Ok.
        let _ = match form {
            "nab" => write!(out, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"),
            "rfc3339" => write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
            "unix_s" => write!(out, "{t}"),
            _ => write!(out, "{}", t * 1000), // unix_ms
        };
        let v = (i * 7919) % 20_000;
        let _ = if i % 4 == 0 {
            writeln!(out, ",{}.{:03}", v, i % 1000)
        } else {
            writeln!(out, ",{v}")
        };
    }
    out
}

/// The same series as a Prometheus `query_range` response.
fn generate_json(rows: usize) -> String {
    let mut out = String::with_capacity(rows * 24);
    out.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"nyc_taxi"},"values":["#);
    for i in 0..rows {
        let t = START_SECS + i as i64 * STEP_SECS;
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, r#"{sep}[{t},"{}"]"#, (i * 7919) % 20_000);
    }
    out.push_str("]}]}}");
    out
}

const FORMS: [&str; 5] = ["nab", "unix_s", "unix_ms", "rfc3339", "json"];

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let forms = std::env::args().nth(2).unwrap_or_else(|| FORMS.join(","));
    for form in forms.split(',') {
        if !FORMS.contains(&form) {
            eprintln!("unknown form {form:?} (expected one of {FORMS:?})");
            std::process::exit(2);
        }
        let input = if form == "json" {
            generate_json(rows)
        } else {
            generate(rows, form)
        };
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let series = match parse(input.as_bytes(), Format::Auto) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{form}: {e}");
                    std::process::exit(1);
                }
            };
            best = best.min(start.elapsed());
            assert_eq!(series[0].samples.len(), rows);
        }
        let per_sec = rows as f64 / best.as_secs_f64();
        println!(
            "{form:8} {rows} rows, {:5.1} MB: {:7.1} ms, {:5.2} M rows/s",
            input.len() as f64 / 1e6,
            best.as_secs_f64() * 1e3,
            per_sec / 1e6
        );
    }
}
