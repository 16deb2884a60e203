//! `portent serve` in push mode, end to end: a real Prometheus scrapes a gauge this test
//! serves and remote_writes it into portent, which scores it; with a `remote_write` output,
//! portent sends the scores on to a real VictoriaMetrics. 127.0.0.1 only; every wait has a
//! deadline.
//!
//! Skipped (with a loud message) when `prometheus` or `victoria-metrics` is not installed,
//! unless `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use common::{Proc, free_port, get, require, start_portent, until};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Serves `test_gauge{kind="demo"}` (around 100, with noise) and `other_gauge` (which no
/// query selects) on `/metrics`; returns the port.
fn serve_target() -> u16 {
    common::serve_target_with("# TYPE other_gauge gauge\nother_gauge 1\n").port
}

/// Prometheus scraping `target` every second and remote_writing everything to portent on
/// `portent`, in batches sent at least every second.
fn start_prometheus(bin: &Path, port: u16, target: u16, portent: u16, dir: &Path) -> Proc {
    let config = format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: target
    static_configs:
      - targets: ['127.0.0.1:{target}']
remote_write:
  - url: http://127.0.0.1:{portent}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send: false
"
    );
    common::start_prometheus(bin, port, dir, &config, &[])
}

fn write_config(dir: &Path, listen: u16, vm: Option<u16>) -> PathBuf {
    let path = dir.join("portent.yml");
    let outputs = match vm {
        Some(vm) => format!(
            "outputs:
  metrics:
    type: metrics
  vm:
    type: remote_write
    url: http://127.0.0.1:{vm}/api/v1/write
    timeout: 5s
"
        ),
        None => String::new(),
    };
    std::fs::write(
        &path,
        format!(
            "source:
  push:
queries:
  gauge:
    expr: 'test_gauge{{kind=\"demo\"}}'
    step: 1s
schedules:
  fast:
    fit_every: 10s
    fit_window: 10m
    score_every: 1s
models:
  m:
    type: auto
    queries: [gauge]
    schedules: [fast]
{outputs}server:
  listen: 127.0.0.1:{listen}
storage:
  dir: state
"
        ),
    )
    .unwrap();
    path
}

/// The exposed `portent_anomaly_score` of the gauge.
fn score(port: u16) -> Option<f64> {
    let (status, body) = get(port, "/metrics")?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find(|l| {
            l.starts_with("portent_anomaly_score{")
                && l.contains("query=\"gauge\"")
                && l.contains("model=\"m\"")
                && l.contains("kind=\"demo\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

/// The value of the one exposed sample whose line starts with `prefix`.
fn metric(port: u16, prefix: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

/// `POST path` with `body` and a snappy `Content-Encoding`: the status.
fn post_snappy(port: u16, path: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
         Content-Encoding: snappy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn prometheus_pushes_portent_scores_and_a_malformed_body_changes_nothing() {
    let Some(bin) = require("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = serve_target();
    let port = free_port();
    let config = write_config(dir.path(), port, None);
    let log = dir.path().join("portent.log");
    let _portent = start_portent(&config, &log);
    let plog = || std::fs::read_to_string(&log).unwrap_or_default();
    until(Duration::from_secs(20), "/-/healthy", &plog, || {
        get(port, "/-/healthy").filter(|(s, _)| *s == 200)
    });
    let prom_port = free_port();
    let _prom = start_prometheus(&bin, prom_port, target, port, &dir.path().join("prom"));

    let s = until(
        Duration::from_secs(60),
        "portent_anomaly_score of the pushed gauge",
        &plog,
        || score(port),
    );
    assert!((0.0..=1.0).contains(&s), "score {s}");
    let ingested = metric(port, "portent_samples_ingested_total{source=\"push\"}").unwrap();
    assert!(ingested >= 1.0, "ingested {ingested}");
    // Prometheus pushes `up`, `scrape_*` and `other_gauge` too: no query selects them.
    until(
        Duration::from_secs(20),
        "unmatched samples counted",
        &plog,
        || {
            metric(
                port,
                "portent_push_samples_dropped_total{reason=\"unmatched\"}",
            )
            .filter(|n| *n > 0.0)
        },
    );
    assert_eq!(metric(port, "portent_push_series "), Some(1.0));
    assert_eq!(metric(port, "portent_series_tracked "), Some(1.0));

    // A malformed body: 400, counted, nothing changes.
    let errors = |p| metric(p, "portent_source_errors_total{source=\"push\"}").unwrap_or(0.0);
    let before = errors(port);
    assert_eq!(
        post_snappy(port, "/api/v1/write", b"this is not snappy"),
        Some(400)
    );
    assert_eq!(
        post_snappy(port, "/api/v1/write", b"\x0a\xff\xff\xff\x0f"),
        Some(400)
    );
    assert_eq!(errors(port), before + 2.0);
    assert_eq!(metric(port, "portent_push_series "), Some(1.0));
    assert_eq!(metric(port, "portent_series_tracked "), Some(1.0));
    // Still scoring what Prometheus pushes.
    let n = metric(port, "portent_samples_ingested_total{source=\"push\"}").unwrap();
    until(
        Duration::from_secs(20),
        "more samples pushed",
        &plog,
        || metric(port, "portent_samples_ingested_total{source=\"push\"}").filter(|m| *m > n),
    );
}

/// VictoriaMetrics on `port`, data in `dir`; returns once it answers.
fn start_vm(bin: &Path, port: u16, dir: &Path) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", dir.join("data").display()))
        .arg("-retentionPeriod=100y")
        .arg("-search.latencyOffset=1s")
        .arg("-loggerLevel=WARN");
    let p = Proc::spawn(cmd, &dir.join("log"));
    until(
        Duration::from_secs(30),
        "victoria-metrics ready",
        &|| p.log(),
        || get(port, "/health").filter(|(s, _)| *s == 200),
    );
    p
}

#[test]
fn scores_of_pushed_series_are_remote_written_to_victoria_metrics() {
    let Some(prom_bin) = require("prometheus") else {
        return;
    };
    let Some(vm_bin) = require("victoria-metrics") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vm_port = free_port();
    let vm = start_vm(&vm_bin, vm_port, &dir.path().join("vm"));
    let target = serve_target();
    let port = free_port();
    let config = write_config(dir.path(), port, Some(vm_port));
    let log = dir.path().join("portent.log");
    let _portent = start_portent(&config, &log);
    let plog = || std::fs::read_to_string(&log).unwrap_or_default();
    until(Duration::from_secs(20), "/-/healthy", &plog, || {
        get(port, "/-/healthy").filter(|(s, _)| *s == 200)
    });
    let prom_port = free_port();
    let _prom = start_prometheus(&prom_bin, prom_port, target, port, &dir.path().join("prom"));
    until(
        Duration::from_secs(60),
        "a score on /metrics",
        &plog,
        || score(port),
    );
    until(Duration::from_secs(30), "samples sent to vm", &plog, || {
        metric(
            port,
            "portent_remote_write_samples_sent_total{output=\"vm\"}",
        )
        .filter(|n| *n >= 4.0)
    });

    // Read the scores back from VictoriaMetrics: the input's labels, plus query and model.
    let query =
        "/api/v1/query?query=portent_anomaly_score%7Bquery%3D%22gauge%22%2Cmodel%3D%22m%22%7D";
    let body = until(
        Duration::from_secs(30),
        "portent_anomaly_score in victoria-metrics",
        &|| format!("{}\n--- vm ---\n{}", plog(), vm.log()),
        || {
            let _ = get(vm_port, "/internal/force_flush");
            get(vm_port, query)
                .filter(|(s, b)| *s == 200 && b.contains("portent_anomaly_score"))
                .map(|(_, b)| b)
        },
    );
    for want in [
        "\"kind\":\"demo\"",
        "\"metric\":\"test_gauge\"",
        "\"query\":\"gauge\"",
        "\"model\":\"m\"",
        "\"job\":\"target\"",
    ] {
        assert!(body.contains(want), "{want} not in {body}");
    }
    assert_eq!(
        metric(
            port,
            "portent_remote_write_samples_failed_total{output=\"vm\"}"
        ),
        Some(0.0)
    );
}
