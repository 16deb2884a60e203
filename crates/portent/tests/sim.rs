//! `portent sim` end to end: the files it writes, its errors, and `/metrics` scraped by a real
//! Prometheus (skipped when Debian's `prometheus` is not installed, unless
//! `PORTENT_REQUIRE_SERVERS` is set).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Proc, free_port, get, require, start_prometheus, until};

/// Monday 2024-01-01T00:00:00Z, the simulator's default start, in ms.
const START_MS: i64 = 1_704_067_200_000;

fn portent(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portent"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn writes_csv_and_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "sim",
        "--seed",
        "5",
        "--days",
        "3",
        "--step",
        "15m",
        "--csv",
        "out.csv",
        "--truth",
        "truth.json",
    ];
    let out = portent(dir.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("2 incidents"), "{stdout}");

    let csv_text = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["timestamp", "series", "value"]
    );
    let mut last = i64::MIN;
    let mut names = std::collections::BTreeSet::new();
    let mut rows = 0;
    for row in reader.records() {
        let row = row.unwrap();
        let t: i64 = row[0].parse().unwrap();
        assert!(
            t >= last && (START_MS..START_MS + 3 * 86_400_000).contains(&t),
            "{t}"
        );
        last = t;
        let series = &row[1];
        assert!(series.ends_with('}') && series.contains("{"), "{series}");
        names.insert(series.split('{').next().unwrap().to_string());
        let v: f64 = row[2].parse().unwrap();
        assert!(v.is_finite());
        rows += 1;
    }
    assert_eq!(last, START_MS + (3 * 96 - 1) * 15 * 60_000);
    assert!(rows > 3 * 96 * 300, "{rows}");
    for name in [
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_resource_limits",
        "kube_pod_container_status_restarts_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_sum",
        "http_request_duration_seconds_count",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }

    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("truth.json")).unwrap())
            .unwrap();
    let truth = truth.as_array().unwrap();
    let kinds: Vec<&str> = truth.iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["night_traffic_drop", "latency_creep"]);
    for t in truth {
        let (start, end) = (t["start"].as_i64().unwrap(), t["end"].as_i64().unwrap());
        assert!(START_MS + 2 * 86_400_000 <= start && start < end, "{t}");
        assert!(t["cause"].as_str().unwrap().contains("namespace="), "{t}");
        assert!(!t["affected"].as_array().unwrap().is_empty(), "{t}");
    }
    // The night drop hits batch/ingest at 03:00 on day 2.
    assert_eq!(
        truth[0]["start"].as_i64().unwrap(),
        START_MS + 2 * 86_400_000 + 3 * 3_600_000
    );
    assert_eq!(
        truth[0]["cause"],
        r#"{namespace="batch", service="ingest"}"#
    );

    // Same seed, same bytes.
    let again = portent(
        dir.path(),
        &[
            "sim",
            "--seed",
            "5",
            "--days",
            "3",
            "--step",
            "15m",
            "--csv",
            "again.csv",
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(std::fs::read_to_string(dir.path().join("again.csv")).unwrap() == csv_text);
}

#[test]
fn bad_arguments_say_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["sim"], "nothing to do"),
        (&["sim", "--days", "0", "--csv", "x.csv"], "--days"),
        (&["sim", "--step", "500ms", "--csv", "x.csv"], "step"),
        (
            &["sim", "--serve", "127.0.0.1:1", "--speed", "0"],
            "--speed",
        ),
    ];
    for (args, want) in cases {
        let out = portent(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("portent: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    let out = portent(dir.path(), &["sim", "--serve", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.path().join("x.csv").exists());
}

/// `GET path` until it answers 200 and `ok` accepts the body, for at most 30 s.
fn wait_for(
    port: u16,
    path: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
    procs: &[&Proc],
) -> String {
    let logs = || {
        procs
            .iter()
            .map(|p| p.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    until(Duration::from_secs(30), what, &logs, || {
        get(port, path)
            .filter(|(status, body)| *status == 200 && ok(body))
            .map(|(_, b)| b)
    })
}

fn start_sim(port: u16, dir: &Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portent"));
    cmd.args([
        "sim",
        "--serve",
        &format!("127.0.0.1:{port}"),
        "--speed",
        "600",
        "--step",
        "15s",
    ]);
    Proc::spawn(cmd, &dir.join("sim.log"))
}

#[test]
fn serves_metrics_that_advance_in_accelerated_time() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sim = start_sim(port, dir.path());
    let first = wait_for(
        port,
        "/metrics",
        "portent sim",
        |b| b.contains("# TYPE"),
        &[&sim],
    );
    assert!(first.contains("# TYPE http_request_duration_seconds histogram"));
    assert!(first.contains("# TYPE node_cpu_seconds_total counter"));
    let total = |body: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with("http_request_duration_seconds_count{"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    };
    // At 600x, one real second is ten simulated minutes: forty 15 s steps.
    std::thread::sleep(Duration::from_millis(1100));
    let later = get(port, "/metrics").unwrap().1;
    assert!(
        total(&later) > total(&first),
        "{} -> {}",
        total(&first),
        total(&later)
    );
    assert_eq!(get(port, "/nope").unwrap().0, 404);
}

#[test]
fn a_real_prometheus_scrapes_the_simulated_cluster() {
    let Some(bin) = require("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim_port = free_port();
    let sim = start_sim(sim_port, dir.path());
    wait_for(
        sim_port,
        "/metrics",
        "portent sim",
        |b| b.contains("# TYPE"),
        &[&sim],
    );

    let prom_port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sim\n    honor_labels: true\n    \
         static_configs:\n      - targets: ['127.0.0.1:{sim_port}']\n"
    );
    let prom = start_prometheus(&bin, prom_port, &dir.path().join("prom"), &config, &[]);
    let procs = [&sim, &prom];
    // Scraped, parsed, stored with the simulator's own labels: every pod's histogram and
    // the node exporter's CPUs.
    let q = |promql: &str| {
        format!(
            "/api/v1/query?query={}",
            promql
                .replace('(', "%28")
                .replace(')', "%29")
                .replace('"', "%22")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('=', "%3D")
                .replace(' ', "%20")
        )
    };
    wait_for(
        prom_port,
        &q("up{job=\"sim\"} == 1"),
        "up",
        |b| b.contains("\"value\""),
        &procs,
    );
    let body = wait_for(
        prom_port,
        &q("count(http_request_duration_seconds_count{namespace=\"shop\"})"),
        "shop histograms",
        |b| b.contains("\"value\""),
        &procs,
    );
    let n: f64 = body
        .rsplit_once(",\"")
        .unwrap()
        .1
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 10.0, "{body}");
    wait_for(
        prom_port,
        &q("count(node_cpu_seconds_total{mode=\"idle\"}) == 16"),
        "node CPUs",
        |b| b.contains("\"value\""),
        &procs,
    );
}
