//! The `portent` binary end to end: real processes, real files, assertions on what a user sees.
//!
//! Assertions are on structure (which lines, which columns, which files, which exit code), not on
//! counts that move whenever the models are retuned.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// What a run of the binary left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a failure reported by portent itself (not by clap): exit code 1 and one
    /// `portent: ` line on stderr, nothing on stdout. Returns that line.
    fn portent_error(&self) -> &str {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit code 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        assert!(
            self.stderr.starts_with("portent: "),
            "stderr: {}",
            self.stderr
        );
        assert_eq!(self.stderr.lines().count(), 1, "stderr: {}", self.stderr);
        self.stderr.trim_end()
    }
}

/// Runs `portent args...` in `dir`.
fn portent(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_portent"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn tmp() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes `text` to `dir/name` and returns the path as a string.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Seeded noise in [-0.5, 0.5) (splitmix64), so every data file is the same on every machine.
fn noise(i: u64) -> f64 {
    portent_core::seeded::uniform(i) - 0.5
}

/// A noisy hourly-ish wave with a spike of +`spike` at row `at`: enough to learn from in a
/// second, and an anomaly to find.
fn wave(i: usize, spike_at: usize) -> f64 {
    let base = 100.0 + 20.0 * (i as f64 / 60.0 * std::f64::consts::TAU / 24.0).sin();
    let v = base + 4.0 * noise(i as u64);
    let v = if (spike_at..spike_at + 5).contains(&i) {
        v + 400.0
    } else {
        v
    };
    (v * 1000.0).round() / 1000.0
}

/// 2024-01-01 00:00:00 UTC.
const T0: i64 = 1_704_067_200;

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC), NAB's timestamp form.
fn civil(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .unwrap()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// One interval line of a summary: `  <start> .. <end> UTC (<dur>)  peak <p> at <t>  <reason> ...`.
#[derive(Debug)]
struct IntervalLine {
    start: String,
    end: String,
    reason: String,
}

/// Splits a summary into its header line and interval lines; `plot:` lines are skipped.
/// Asserts that the header's interval count matches the lines that follow.
fn parse_summary<'a>(lines: &mut impl Iterator<Item = &'a str>) -> (String, Vec<IntervalLine>) {
    let header = lines.next().expect("a summary line").to_owned();
    let count: usize = header
        .split(" anomalous interval")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no interval count in {header:?}"));
    let mut out = Vec::new();
    for _ in 0..count {
        let line = lines.next().expect("an interval line");
        assert!(line.starts_with("  "), "{line:?}");
        let (start, rest) = line.trim_start().split_once(" .. ").unwrap();
        let (end, rest) = rest.split_once(" UTC (").unwrap();
        let (_, rest) = rest.split_once(")  peak ").unwrap();
        // "<score> at <date> <time>  <reason> value ..."
        let words: Vec<&str> = rest.split_whitespace().collect();
        assert_eq!(words[1], "at", "{line:?}");
        let score: f64 = words[0].parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{line:?}");
        assert_eq!(words[5], "value", "{line:?}");
        assert_eq!(words[7], "expected", "{line:?}");
        out.push(IntervalLine {
            start: start.to_owned(),
            end: end.to_owned(),
            reason: words[4].to_owned(),
        });
    }
    (header, out)
}

const SAMPLE_NAME: &str = r#"http_requests_per_second{job="sample", service="checkout"}"#;
const SCORES_HEADER: &str =
    "series,timestamp,value,anomaly_score,yhat,yhat_lower,yhat_upper,reason";

#[test]
fn detect_sample_summarises_the_injected_incidents() {
    let dir = tmp();
    let run = portent(dir.path(), &["detect", "--sample", "--quiet"]);
    run.ok();
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let mut lines = run.stdout.lines();
    let (header, iv) = parse_summary(&mut lines);
    assert_eq!(lines.next(), None, "{}", run.stdout);
    // The sample's 40-minute stretch of NaN is 41 samples, both ends included.
    assert!(
        header.starts_with(&format!("{SAMPLE_NAME}: 20160 samples, ")),
        "{header}"
    );
    assert!(header.contains("(score >= 0.80)"), "{header}");
    assert!(
        header.ends_with(", 41 samples without a value (NaN/Inf)"),
        "{header}"
    );
    assert!(!iv.is_empty());
    // Incidents are injected from day 9 (2024-01-10) on, after the model has learnt.
    assert!(
        iv.iter().any(|i| i.start.as_str() >= "2024-01-10"),
        "{iv:#?}"
    );
    // The NaN stretch, 2024-01-14 10:00 to 10:40, is reported as missing data inside it.
    let missing: Vec<_> = iv.iter().filter(|i| i.reason == "missing_data").collect();
    assert!(!missing.is_empty(), "{iv:#?}");
    for m in missing {
        assert!(m.start.as_str() >= "2024-01-14 10:00:00", "{m:?}");
        assert!(m.end.as_str() <= "2024-01-14 10:40:00", "{m:?}");
    }
    // The +600 spike at 2024-01-10 14:00..14:08 is impossible to miss, whatever its reason.
    assert!(
        iv.iter().any(|i| i.start.as_str() <= "2024-01-10 14:08:00"
            && i.end.as_str() >= "2024-01-10 14:00:00"),
        "{iv:#?}"
    );
    // Every injected incident is found, and nothing else is reported: the README's first
    // command shows five incidents and no false alarm. (The drift is gentle, half a request a
    // second per minute, and is found once it leaves the range of its hour.)
    let incidents = [
        ("spike", "2024-01-10 14:00:00", "2024-01-10 14:08:00"),
        ("level shift", "2024-01-11 03:00:00", "2024-01-11 05:00:00"),
        ("drift", "2024-01-12 08:00:00", "2024-01-12 16:00:00"),
        ("flatline", "2024-01-13 20:00:00", "2024-01-13 21:00:00"),
        ("missing data", "2024-01-14 10:00:00", "2024-01-14 10:40:00"),
    ];
    for (kind, from, to) in incidents {
        assert!(
            iv.iter()
                .any(|i| i.start.as_str() >= from && i.start.as_str() <= to),
            "{kind} ({from} .. {to}) not found: {iv:#?}"
        );
    }
    for i in &iv {
        assert!(
            incidents
                .iter()
                .any(|(_, from, to)| i.start.as_str() >= *from && i.start.as_str() <= *to),
            "a false alarm: {i:?}"
        );
    }
}

#[test]
fn detect_sample_writes_plot_and_csv() {
    let dir = tmp();
    let run = portent(
        dir.path(),
        &[
            "detect",
            "--sample",
            "--quiet",
            "--plot",
            "out.svg",
            "-o",
            "scores.csv",
        ],
    );
    run.ok();
    assert!(
        run.stdout.lines().last() == Some("  plot: out.svg"),
        "{}",
        run.stdout
    );

    let svg = fs::read_to_string(dir.path().join("out.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"));
    // The title is the series, XML-escaped.
    assert!(
        svg.contains(
            "http_requests_per_second{job=&quot;sample&quot;, service=&quot;checkout&quot;}"
        ),
        "no series name in the SVG"
    );

    let mut r = csv::Reader::from_path(dir.path().join("scores.csv")).unwrap();
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>().join(","),
        SCORES_HEADER
    );
    let mut rows = 0;
    let mut nan = 0;
    let mut prev = String::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        assert_eq!(rec.len(), 8);
        assert_eq!(&rec[0], SAMPLE_NAME);
        assert!(rec[1].ends_with('Z') && rec[1] > *prev, "{:?}", &rec[1]);
        prev = rec[1].to_owned();
        let score: f64 = rec[3].parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{rec:?}");
        for col in [2, 4, 5, 6] {
            rec[col].parse::<f64>().unwrap();
        }
        if &rec[2] == "NaN" {
            nan += 1;
            assert!(
                ("2024-01-14T10:00:00Z"..="2024-01-14T10:40:00Z").contains(&&rec[1]),
                "{rec:?}"
            );
        }
        rows += 1;
    }
    assert_eq!(rows, 20160);
    assert_eq!(nan, 41);
    assert_eq!(prev, "2024-01-14T23:59:00Z");
}

#[test]
fn detect_sample_writes_json_with_nan_as_null() {
    let dir = tmp();
    let run = portent(
        dir.path(),
        &["detect", "--sample", "--quiet", "-o", "scores.json"],
    );
    run.ok();
    let text = fs::read_to_string(dir.path().join("scores.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let series = json.as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(
        series[0]["labels"],
        serde_json::json!({
            "__name__": "http_requests_per_second",
            "job": "sample",
            "service": "checkout",
        })
    );
    let samples = series[0]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 20160);
    assert_eq!(samples[0]["t"], 1_704_067_200_000i64);
    let mut nulls = 0;
    for s in samples {
        let score = s["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{s}");
        match &s["value"] {
            serde_json::Value::Null => nulls += 1,
            v => assert!(v.is_f64(), "{s}"),
        }
        assert!(s["reason"].is_null() || s["reason"].is_string(), "{s}");
    }
    assert_eq!(nulls, 41);
    // Before the first fit nothing is expected: NaN, written as null.
    assert!(samples[0]["yhat"].is_null());
}

#[test]
fn detect_output_dash_puts_scores_on_stdout_and_summary_on_stderr() {
    let dir = tmp();
    let run = portent(dir.path(), &["detect", "--sample", "--quiet", "-o", "-"]);
    run.ok();
    let mut out = run.stdout.lines();
    assert_eq!(out.next(), Some(SCORES_HEADER));
    assert_eq!(out.count(), 20160);
    assert!(!run.stdout.contains("anomalous interval"));
    let (header, _) = parse_summary(&mut run.stderr.lines());
    assert!(header.starts_with(SAMPLE_NAME), "{}", run.stderr);
    assert!(!dir.path().join("-").exists());
}

#[test]
fn detect_long_csv_names_the_series_after_the_file() {
    let dir = tmp();
    let mut text = String::from("timestamp,value\n");
    for i in 0..1500 {
        writeln!(text, "{},{}", civil(T0 + 60 * i as i64), wave(i, 1300)).unwrap();
    }
    let path = write(dir.path(), "long.csv", &text);
    let run = portent(dir.path(), &["detect", &path, "--quiet", "-o", "s.csv"]);
    run.ok();
    let mut lines = run.stdout.lines();
    let (header, iv) = parse_summary(&mut lines);
    assert!(
        header.starts_with(&format!("{path}: 1500 samples, ")),
        "{header}"
    );
    assert!(!header.contains("NaN"), "{header}");
    // The spike at row 1300 (21:40) is found.
    assert!(
        iv.iter().any(|i| i.start.as_str() <= "2024-01-01 21:44:00"
            && i.end.as_str() >= "2024-01-01 21:40:00"),
        "{iv:#?}"
    );
    let scores = fs::read_to_string(dir.path().join("s.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1501);
    // An unlabelled series is `{}`, the empty selector, in the series column.
    let first = scores.lines().nth(1).unwrap();
    assert!(first.starts_with("{},2024-01-01T00:00:00Z,"), "{first}");
}

#[test]
fn detect_wide_csv_scores_and_plots_each_column() {
    let dir = tmp();
    let mut text = String::from("timestamp,\"cpu{host=\"\"a\"\"}\",mem\n");
    for i in 0..1500 {
        let v = wave(i, 1300);
        writeln!(text, "{},{v},{}", civil(T0 + 60 * i as i64), 2.0 * v).unwrap();
    }
    let path = write(dir.path(), "wide.csv", &text);
    let run = portent(dir.path(), &["detect", &path, "--quiet", "--plot", "p.svg"]);
    run.ok();
    let mut lines = run.stdout.lines();
    let (cpu, _) = parse_summary(&mut lines);
    assert!(cpu.starts_with(r#"cpu{host="a"}: 1500 samples, "#), "{cpu}");
    assert_eq!(lines.next(), Some("  plot: p-1.svg"));
    let (mem, _) = parse_summary(&mut lines);
    assert!(mem.starts_with("mem: 1500 samples, "), "{mem}");
    assert_eq!(lines.next(), Some("  plot: p-2.svg"));
    assert_eq!(lines.next(), None);

    assert!(!dir.path().join("p.svg").exists());
    let p1 = fs::read_to_string(dir.path().join("p-1.svg")).unwrap();
    let p2 = fs::read_to_string(dir.path().join("p-2.svg")).unwrap();
    assert!(p1.starts_with("<svg") && p1.contains("cpu{host=&quot;a&quot;}"));
    assert!(p2.starts_with("<svg") && p2.contains("mem"));
}

/// Regression: an all-empty column of a wide CSV failed the whole run with "no samples to
/// plot" after the other series had been scored and summarised.
#[test]
fn detect_wide_csv_with_an_empty_column_plots_the_others() {
    let dir = tmp();
    let mut text = String::from("timestamp,a,b,c\n");
    for i in 0..200 {
        let v = wave(i, usize::MAX - 10);
        writeln!(text, "{},{v},,{v}", civil(T0 + 60 * i as i64)).unwrap();
    }
    let path = write(dir.path(), "sparse.csv", &text);
    let run = portent(dir.path(), &["detect", &path, "--quiet", "--plot", "p.svg"]);
    run.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.contains(&"b: 0 samples, 0 anomalous intervals (score >= 0.80)"));
    assert!(lines.contains(&"  plot: none (no samples)"));
    assert!(dir.path().join("p-1.svg").is_file());
    assert!(!dir.path().join("p-2.svg").exists());
    // Numbering follows the columns, so p-3 is still column c.
    assert!(dir.path().join("p-3.svg").is_file());
}

/// Regression: `portent detect -o - | head` printed "portent: writing -: Broken pipe" and
/// exited 1.
#[test]
fn detect_output_to_a_closed_pipe_exits_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tmp();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portent"))
        .args(["detect", "--sample", "--quiet", "-o", "-"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the header, then hang up while it still has megabytes to write.
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 64];
    stdout.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"series,timestamp,"));
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("portent: "), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn detect_reads_unix_seconds_without_a_header() {
    let dir = tmp();
    let mut text = String::new();
    for i in 0..1000 {
        writeln!(text, "{},{}", T0 + 60 * i as i64, wave(i, 900)).unwrap();
    }
    let path = write(dir.path(), "unix.csv", &text);
    let run = portent(dir.path(), &["detect", &path, "--quiet", "-o", "s.json"]);
    run.ok();
    assert!(
        run.stdout.starts_with(&format!("{path}: 1000 samples, ")),
        "{}",
        run.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("s.json")).unwrap()).unwrap();
    let samples = json[0]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1000);
    assert_eq!(samples[0]["t"], T0 * 1000);
    assert_eq!(samples[999]["t"], (T0 + 60 * 999) * 1000);
    assert_eq!(json[0]["labels"], serde_json::json!({}));
}

#[test]
fn detect_reads_a_prometheus_query_range_response() {
    let dir = tmp();
    let values = |scale: f64| -> Vec<serde_json::Value> {
        (0..1000)
            .map(|i| {
                let t = T0 + 15 * i as i64;
                serde_json::json!([t, format!("{}", scale * wave(i, 800))])
            })
            .collect()
    };
    let body = serde_json::json!({
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"__name__": "node_load1", "instance": "a"}, "values": values(1.0)},
                {"metric": {"__name__": "node_load1", "instance": "b"}, "values": values(3.0)},
            ]
        }
    });
    // A `.txt` name: the format is told from the content, not the extension.
    let path = write(dir.path(), "query.txt", &body.to_string());
    let run = portent(dir.path(), &["detect", &path, "--quiet", "-o", "s.json"]);
    run.ok();
    let mut lines = run.stdout.lines();
    let (a, _) = parse_summary(&mut lines);
    let (b, _) = parse_summary(&mut lines);
    assert_eq!(lines.next(), None);
    assert!(
        a.starts_with(r#"node_load1{instance="a"}: 1000 samples, "#),
        "{a}"
    );
    assert!(
        b.starts_with(r#"node_load1{instance="b"}: 1000 samples, "#),
        "{b}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("s.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[1]["labels"]["instance"], "b");
    assert_eq!(json[1]["samples"][1]["t"], (T0 + 15) * 1000);
}

#[test]
fn detect_reports_a_malformed_timestamp_with_file_and_line() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "bad.csv",
        "timestamp,value\n\
         2024-01-01 00:00:00,1\n\
         2024-01-01 00:01:00,2\n\
         2024-01-01 0x:02:00,3\n\
         2024-01-01 00:03:00,4\n",
    );
    let run = portent(dir.path(), &["detect", &path, "--quiet"]);
    let e = run.portent_error();
    assert!(e.starts_with(&format!("portent: {path}: line 4: ")), "{e}");
    assert!(e.contains("\"2024-01-01 0x:02:00\""), "{e}");
    // Says what would have been accepted.
    assert!(e.contains("YYYY-MM-DD HH:MM:SS"), "{e}");
}

#[test]
fn detect_refuses_rows_out_of_time_order() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "order.csv",
        "timestamp,value\n\
         2024-01-01 00:00:00,1\n\
         2024-01-01 00:02:00,2\n\
         2024-01-01 00:01:00,3\n",
    );
    let run = portent(dir.path(), &["detect", &path, "--quiet"]);
    let e = run.portent_error();
    assert!(e.starts_with(&format!("portent: {path}: line 4: ")), "{e}");
    assert!(e.contains("not after line 3's 2024-01-01 00:02:00"), "{e}");
    assert!(e.contains("time order"), "{e}");
}

#[test]
fn detect_names_a_missing_file() {
    let dir = tmp();
    let path = dir.path().join("no-such-file.csv");
    let path = path.to_str().unwrap();
    let run = portent(dir.path(), &["detect", path, "--quiet"]);
    let e = run.portent_error();
    assert!(e.starts_with(&format!("portent: {path}: ")), "{e}");
    #[cfg(unix)]
    assert!(e.contains("No such file or directory"), "{e}");
}

#[test]
fn detect_refuses_empty_and_header_only_files() {
    let dir = tmp();
    let empty = write(dir.path(), "empty.csv", "");
    let e = portent(dir.path(), &["detect", &empty])
        .portent_error()
        .to_owned();
    assert!(
        e.starts_with(&format!("portent: {empty}: empty input (expected ")),
        "{e}"
    );
    let header = write(dir.path(), "header.csv", "timestamp,value\n");
    let e = portent(dir.path(), &["detect", &header])
        .portent_error()
        .to_owned();
    assert_eq!(
        e,
        format!("portent: {header}: line 1: a header but no data rows")
    );
}

#[test]
fn detect_refuses_a_threshold_outside_0_1() {
    let dir = tmp();
    // `-0.5` as its own argument, too: clap used to read it as a flag `-0`.
    for t in ["1.5", "-0.5", "NaN"] {
        let run = portent(dir.path(), &["detect", "--sample", "--threshold", t]);
        let e = run.portent_error();
        assert_eq!(
            e,
            format!("portent: --threshold {t}: must be between 0 and 1")
        );
    }
    // Negative deviations are refused naming the flag, not the detector's field.
    let run = portent(
        dir.path(),
        &["detect", "--sample", "--min-abs-deviation", "-1"],
    );
    assert_eq!(
        run.portent_error(),
        "portent: --min-abs-deviation -1: must be 0 or more"
    );
}

#[test]
fn detect_direction_lists_the_choices() {
    let dir = tmp();
    let run = portent(
        dir.path(),
        &["detect", "--sample", "--direction", "sideways"],
    );
    // A usage error: clap's exit code and message.
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("'sideways'"), "{}", run.stderr);
    assert!(run.stderr.contains("--direction"), "{}", run.stderr);
    assert!(
        run.stderr.contains("above, below or both"),
        "{}",
        run.stderr
    );
}

#[test]
fn detect_accepts_nan_inf_and_gaps_and_counts_them() {
    let dir = tmp();
    let mut text = String::from("timestamp,value\n");
    let mut rows = 0;
    let mut unusable = 0;
    for i in 0..2000 {
        // A 200-minute gap.
        if (1200..1400).contains(&i) {
            continue;
        }
        let v = match i {
            1500..=1502 => "NaN".to_owned(),
            1600 => "+Inf".to_owned(),
            1700 => "-Inf".to_owned(),
            1800 => "nan".to_owned(),
            _ => wave(i, usize::MAX - 10).to_string(),
        };
        if !v.starts_with(|c: char| c.is_ascii_digit()) {
            unusable += 1;
        }
        rows += 1;
        writeln!(text, "{},{v}", civil(T0 + 60 * i as i64)).unwrap();
    }
    assert_eq!(unusable, 6);
    let path = write(dir.path(), "holes.csv", &text);
    let run = portent(dir.path(), &["detect", &path, "--quiet", "-o", "s.json"]);
    run.ok();
    let header = run.stdout.lines().next().unwrap();
    assert!(
        header.starts_with(&format!("{path}: {rows} samples, ")),
        "{header}"
    );
    assert!(
        header.ends_with(&format!(", {unusable} samples without a value (NaN/Inf)")),
        "{header}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("s.json")).unwrap()).unwrap();
    let samples = json[0]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), rows);
    assert_eq!(samples.iter().filter(|s| s["value"].is_null()).count(), 6);
    for s in samples {
        let score = s["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{s}");
    }
}

/// The NAB corpus shared by the workspace, as an absolute path.
fn nab_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/nab");
    assert!(
        root.join("labels/combined_windows_tiny.json").is_file(),
        "the NAB corpus is expected at {}",
        root.display()
    );
    fs::canonicalize(root).unwrap()
}

/// Lines in a file after its header, which must start with `header`.
fn data_rows(path: &Path, header: &str) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    assert!(first.starts_with(header), "{}: {first}", path.display());
    lines.map(str::to_owned).collect()
}

#[test]
fn eval_nab_tiny_writes_results_and_json() {
    let nab = nab_root();
    let windows = nab.join("labels/combined_windows_tiny.json");
    let dir = tmp();
    let out = dir.path().join("results");
    let run = portent(
        dir.path(),
        &[
            "eval",
            "nab",
            "--data",
            nab.to_str().unwrap(),
            "--windows",
            windows.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
            "--quiet",
        ],
    );
    run.ok();
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    // Only the two files the tiny windows file names.
    assert!(
        lines[0].starts_with("NAB v1.1: 2 files, 12202 rows, 7 windows"),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("profile "), "{}", lines[1]);
    for profile in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        assert!(
            lines
                .iter()
                .any(|l| l.split_whitespace().next() == Some(profile)),
            "no {profile} row in\n{}",
            run.stdout
        );
    }
    let json: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let obj = json.as_object().unwrap();
    assert_eq!(obj.len(), 3, "{json}");
    for profile in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        assert!(obj[profile].is_number(), "{json}");
    }

    let taxi = data_rows(
        &out.join("portent/realKnownCause/portent_nyc_taxi.csv"),
        "timestamp,value,anomaly_score",
    );
    assert_eq!(taxi.len(), 10320);
    assert!(
        taxi[0].starts_with("2014-07-01 00:00:00,10844,"),
        "{}",
        taxi[0]
    );
    for row in &taxi {
        let score: f64 = row.split(',').nth(2).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{row}");
    }
    let null = data_rows(
        &out.join("null/realKnownCause/null_nyc_taxi.csv"),
        "timestamp,value,anomaly_score",
    );
    assert_eq!(null.len(), 10320);
    // Nothing beyond the windows file's two data files.
    let written: Vec<_> = fs::read_dir(out.join("portent/realKnownCause"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
}

/// A one-file NAB layout in `dir`: 1000 noisy rows at 5 minutes with a spike at row 800 inside
/// the file's only window. Small enough to replay in well under a second.
fn tiny_nab(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("nab");
    fs::create_dir_all(root.join("data/synthetic")).unwrap();
    fs::create_dir_all(root.join("labels")).unwrap();
    let start = 1_388_534_400; // 2014-01-01 00:00:00, as in NAB's artificial files
    let mut csv = String::from("timestamp,value\n");
    for i in 0..1000 {
        writeln!(csv, "{},{}", civil(start + 300 * i as i64), wave(i, 800)).unwrap();
    }
    fs::write(root.join("data/synthetic/wave.csv"), csv).unwrap();
    let windows = root.join("labels/windows.json");
    let edge = |row: i64| format!("{}.000000", civil(start + 300 * row));
    fs::write(
        &windows,
        serde_json::json!({ "synthetic/wave.csv": [[edge(780), edge(830)]] }).to_string(),
    )
    .unwrap();
    (root, windows)
}

#[test]
fn eval_nab_floor_above_reach_fails() {
    let dir = tmp();
    let (root, windows) = tiny_nab(dir.path());
    // Normalised scores top out at 100, so 101 always fails.
    let floor = write(dir.path(), "floor.json", r#"{"standard": 101}"#);
    let run = portent(
        dir.path(),
        &[
            "eval",
            "nab",
            "--data",
            root.to_str().unwrap(),
            "--windows",
            windows.to_str().unwrap(),
            "--floor",
            &floor,
            "--json",
            "--quiet",
        ],
    );
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    // The scores are still printed, so a failing CI run shows what was reached.
    let last = run.stdout.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    assert!(json["standard"].as_f64().unwrap() <= 100.0);
    let e = run.stderr.trim_end();
    assert!(e.starts_with("portent: NAB regression: standard "), "{e}");
    assert!(e.ends_with("< floor 101.00"), "{e}");
    assert!(!e.contains("reward_low"), "{e}");

    // A floor naming no profile is an error of its own, not a pass.
    let floor = write(dir.path(), "typo.json", r#"{"standrad": 1}"#);
    let run = portent(
        dir.path(),
        &[
            "eval",
            "nab",
            "--data",
            root.to_str().unwrap(),
            "--windows",
            windows.to_str().unwrap(),
            "--floor",
            &floor,
            "--quiet",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("unknown profile standrad"),
        "{}",
        run.stderr
    );
}

#[test]
fn help_lists_commands_and_detect_options() {
    let dir = tmp();
    let run = portent(dir.path(), &["--help"]);
    run.ok();
    for cmd in ["detect", "eval"] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "{cmd} missing from\n{}",
            run.stdout
        );
    }
    let run = portent(dir.path(), &["detect", "--help"]);
    run.ok();
    for opt in [
        "--sample",
        "--plot",
        "--threshold",
        "--direction",
        "--output",
    ] {
        assert!(
            run.stdout.contains(opt),
            "{opt} missing from\n{}",
            run.stdout
        );
    }
    // The choices and defaults a user needs are in the help, not only in the docs.
    assert!(run.stdout.contains("above, below or both"));
    assert!(run.stdout.contains("[default: 0.8]"));
}

#[test]
fn detect_limit_reports_time_to_exhaustion() {
    // A leak of 0.25 a minute from 500: at the last row (~1000) the limit of 1200 is 800
    // minutes, 13h20m, away.
    let d = tmp();
    let mut csv = String::from("timestamp,value\n");
    for i in 0..2000i64 {
        csv += &format!("{},{}\n", 1_700_000_000 + i * 60, 500.0 + i as f64 * 0.25);
    }
    let f = write(d.path(), "leak.csv", &csv);
    let run = portent(d.path(), &["detect", &f, "--limit", "1200", "--quiet"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("limit 1200"))
        .unwrap_or_else(|| panic!("no limit line: {}", run.stdout));
    assert!(
        line.contains("reached in 13h1") || line.contains("reached in 13h2"),
        "{line}"
    );

    let run = portent(d.path(), &["detect", &f, "--limit", "100", "--quiet"]);
    assert!(
        run.stdout.contains("limit 100: already reached"),
        "{}",
        run.stdout
    );
    let mut falling = String::from("timestamp,value\n");
    for i in 0..2000i64 {
        falling += &format!("{},{}\n", 1_700_000_000 + i * 60, 1000.0 - i as f64 * 0.25);
    }
    let falling = write(d.path(), "falling.csv", &falling);
    let run = portent(
        d.path(),
        &["detect", &falling, "--limit", "2000", "--quiet"],
    );
    assert!(
        run.stdout.contains("not heading towards it"),
        "{}",
        run.stdout
    );
}

#[test]
fn rows_out_of_time_order_stop_detect_unless_skipped() {
    let dir = tmp();
    let mut csv = String::from("timestamp,value\n");
    for i in 0..300u64 {
        csv += &format!("{},{}\n", 1_600_000_000 + i * 60, 10.0 + noise(i));
        if i == 100 {
            // A repeated timestamp, as in several NAB files.
            csv += &format!("{},{}\n", 1_600_000_000 + i * 60, 99.0);
        }
    }
    let path = write(dir.path(), "dup.csv", &csv);
    let run = portent(dir.path(), &["detect", &path, "--quiet"]);
    assert_eq!(
        run.portent_error(),
        format!(
            "portent: {path}: line 103: timestamp 1600006000 is not after line 102's 1600006000: \
             rows must be in time order (or pass --skip-out-of-order to skip such rows)"
        )
    );
    let run = portent(
        dir.path(),
        &["detect", &path, "--quiet", "--skip-out-of-order"],
    );
    run.ok();
    assert_eq!(
        run.stderr.trim_end(),
        format!(
            "portent: {path}: skipped 1 row not after the previous one (the first at line 103)"
        )
    );
    assert!(run.stdout.contains(": 300 samples, "), "{}", run.stdout);
}

#[test]
fn ask_without_a_daemon_says_where_it_looked() {
    let dir = tmp();
    // Port 1 on loopback: nothing listens there.
    let run = portent(
        dir.path(),
        &["ask", "what's up?", "--url", "http://127.0.0.1:1"],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("asking portent at http://127.0.0.1:1: is `portent serve` running there?"),
        "{}",
        run.stderr
    );
    let run = portent(dir.path(), &["ask", "x", "--url", "not a url"]);
    assert!(
        run.stderr.contains("--url \"not a url\": not a URL"),
        "{}",
        run.stderr
    );
}
