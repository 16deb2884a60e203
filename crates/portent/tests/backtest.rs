//! `portent backtest` end to end: ten days of a request rate with two injected incidents,
//! backfilled into a real Prometheus with `promtool`, replayed by the binary. 127.0.0.1 only.
//!
//! Skipped (with a loud message) when `prometheus` or `promtool` is not installed, unless
//! `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{free_port, require, start_prometheus};

const MIN: i64 = 60;
const DAY: i64 = 1440 * MIN;
const DAYS: i64 = 10;

/// Minutes from the start: a 10-minute spike on day 8 at 14:00, the rate down to a third on
/// day 9 from 03:00 to 05:00.
const SPIKE: (i64, i64) = (8 * 1440 + 14 * 60, 8 * 1440 + 14 * 60 + 9);
const DROP: (i64, i64) = (9 * 1440 + 3 * 60, 9 * 1440 + 5 * 60);

/// The series as (unix seconds, value), one a minute, from `t0`: a daily cycle, seeded noise.
fn data(t0: i64) -> Vec<(i64, f64)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..DAYS * 1440)
        .map(|m| {
            let t = t0 + m * MIN;
            let day = std::f64::consts::TAU * (t.rem_euclid(DAY) as f64 / DAY as f64);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x >> 11) as f64 / (1u64 << 53) as f64 * 40.0 - 20.0;
            let mut v = 300.0 - 180.0 * (day + 0.5).cos() + 30.0 * (2.0 * day).sin() + noise;
            if (SPIKE.0..=SPIKE.1).contains(&m) {
                v += 600.0;
            }
            if (DROP.0..=DROP.1).contains(&m) {
                v *= 0.35;
            }
            (t, (v * 100.0).round() / 100.0)
        })
        .collect()
}

/// Backfills `points` as `test_requests{job="api"}` into `dir/data` with promtool.
fn backfill(promtool: &Path, points: &[(i64, f64)], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let om = dir.join("backfill.om");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&om).unwrap());
    writeln!(f, "# TYPE test_requests gauge").unwrap();
    for (t, v) in points {
        writeln!(f, "test_requests{{job=\"api\"}} {v} {t}").unwrap();
    }
    writeln!(f, "# EOF").unwrap();
    f.into_inner().unwrap().sync_all().unwrap();
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool: {}", text(&out));
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_config(dir: &Path, prom: u16) -> PathBuf {
    let path = dir.join("portent.yml");
    std::fs::write(
        &path,
        format!(
            "source:
  pull:
    url: http://127.0.0.1:{prom}
    retries:
      max: 0
queries:
  requests:
    expr: test_requests
    step: 1m
schedules:
  daily:
    fit_every: 1d
    fit_window: 7d
    score_every: 5m
models:
  m:
    type: auto
"
        ),
    )
    .unwrap();
    path
}

fn backtest(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portent"))
        .arg("backtest")
        .arg(config)
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn backtest_over_prometheus_finds_the_injected_incidents_and_little_else() {
    let (Some(prometheus), Some(promtool)) = (require("prometheus"), require("promtool")) else {
        return;
    };
    // Ten days ending at midnight UTC three days ago: well inside the retention given below.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t0 = now - now.rem_euclid(DAY) - (DAYS + 3) * DAY;
    let dir = tempfile::tempdir().unwrap();
    let prom_dir = dir.path().join("prom");
    backfill(&promtool, &data(t0), &prom_dir);
    let port = free_port();
    let _prom = start_prometheus(
        &prometheus,
        port,
        &prom_dir,
        "global: {}\n",
        &["--storage.tsdb.retention.time=100y"],
    );
    let config = write_config(dir.path(), port);

    // Replay the last three days; the seven before are the warm-up history.
    let from = t0 + 7 * DAY;
    let to = t0 + DAYS * DAY - MIN;
    let verdicts = dir.path().join("verdicts.csv");
    let out = backtest(
        &config,
        &[
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--json",
            "--output",
            verdicts.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let intervals: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "interval")
        .collect();
    eprintln!("{}", text(&out));

    // Each incident is inside an interval the replay reported.
    let ms = |minute: i64| (t0 + minute * MIN) * 1000;
    let overlaps = |(a, b): (i64, i64)| {
        intervals.iter().any(|i| {
            i["from_ms"].as_i64().unwrap() <= ms(b) + 10 * 60_000
                && i["to_ms"].as_i64().unwrap() >= ms(a)
                && i["labels"]["job"] == "api"
                && i["model"] == "m"
                && i["query"] == "requests"
        })
    };
    assert!(overlaps(SPIKE), "spike not found: {stdout}");
    assert!(overlaps(DROP), "drop not found: {stdout}");
    // And little else: at most one interval outside them over three days.
    let stray = intervals
        .iter()
        .filter(|i| {
            let (f, t) = (i["from_ms"].as_i64().unwrap(), i["to_ms"].as_i64().unwrap());
            ![SPIKE, DROP]
                .iter()
                .any(|&(a, b)| f <= ms(b) + 60 * 60_000 && t >= ms(a))
        })
        .count();
    assert!(
        stray <= 1,
        "{stray} intervals outside the incidents: {stdout}"
    );

    // Every sample of the replay was scored once, and written.
    let rows = std::fs::read_to_string(&verdicts).unwrap().lines().count() - 1;
    let expected = ((to - from) / MIN) as usize;
    assert!(
        rows.abs_diff(expected) <= 5,
        "{rows} verdicts written, {expected} samples in the range"
    );
}

#[test]
fn backtest_says_what_is_wrong_with_its_input() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: the read fails with the query and the address.
    let port = free_port();
    let config = write_config(dir.path(), port);
    let out = backtest(&config, &["--from", "now-1h"]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("reading query requests (test_requests)"),
        "{err}"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    let out = backtest(&config, &["--from", "now", "--to", "now-1d"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("must be before --to"), "{}", text(&out));

    let out = backtest(&config, &["--from", "last tuesday"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--from: \"last tuesday\" is not a time"),
        "{}",
        text(&out)
    );
}
