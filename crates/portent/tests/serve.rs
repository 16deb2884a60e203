//! `portent serve` end to end: a real Prometheus scraping a gauge this test serves, portent
//! pulling from it as a child process. 127.0.0.1 only; every wait has a deadline.
//!
//! Skipped (with a loud message) when `prometheus` is not installed, unless
//! `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use common::{Proc, free_port, get, require, serve_target, start_portent, until};

use std::path::Path;
use std::time::{Duration, Instant};

/// Prometheus on `port` scraping `target` every second, its data in `dir`.
fn start_prometheus(bin: &Path, port: u16, target: u16, dir: &Path) -> Proc {
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: \
         target\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
    );
    common::start_prometheus(bin, port, dir, &config, &[])
}

/// The exposed `portent_anomaly_score` of the gauge, with its `query` and `model` labels.
fn score(port: u16) -> Option<f64> {
    output(port, "portent_anomaly_score")
}

/// The gauge's output metric `name` (`portent_anomaly_score`, `portent_yhat`…).
fn output(port: u16, name: &str) -> Option<f64> {
    let (status, body) = get(port, "/metrics")?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains("query=\"gauge\"")
                && l.contains("model=\"m\"")
                && l.contains("kind=\"demo\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

fn metric_sum(port: u16, name: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics")?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .sum(),
    )
}

fn ready(port: u16) -> Option<()> {
    get(port, "/-/ready").filter(|(s, _)| *s == 200).map(|_| ())
}

#[test]
fn serve_scores_a_jump_saves_on_sigterm_and_resumes() {
    let Some(bin) = require("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = serve_target();
    let prom_port = free_port();
    let _prom = start_prometheus(&bin, prom_port, target.port, &dir.path().join("prom"));

    let port = free_port();
    let config = common::pull_config(dir.path(), prom_port, port);
    let log = dir.path().join("portent.log");
    let mut portent = start_portent(&config, &log);
    let plog = || std::fs::read_to_string(&log).unwrap_or_default();

    let (status, _) = until(Duration::from_secs(20), "/-/healthy", &plog, || {
        get(port, "/-/healthy")
    });
    assert_eq!(status, 200);
    until(Duration::from_secs(30), "/-/ready", &plog, || ready(port));
    until(
        Duration::from_secs(30),
        "portent_anomaly_score of the gauge",
        &plog,
        || score(port),
    );

    // Normal phase: a fit needs 48 samples (48 s at a 1 s step), then refits come every 10 s:
    // wait until the model expects something (a finite yhat), then a little more.
    let started = Instant::now();
    until(
        Duration::from_secs(90),
        "a finite portent_yhat (a fitted model)",
        &plog,
        || output(port, "portent_yhat").filter(|y| y.is_finite()),
    );
    eprintln!("fitted after {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    let before = score(port).unwrap();
    assert!(before < 0.8, "score {before} before the jump\n{}", plog());

    target.jump_to(10_000.0);
    let high = until(
        Duration::from_secs(20),
        "a score ≥ 0.8 after the jump",
        &plog,
        || score(port).filter(|s| *s >= 0.8),
    );
    eprintln!("score before the jump {before}, after {high}");

    portent.signal("TERM");
    let status = portent.wait(Duration::from_secs(20));
    assert!(status.success(), "exit {status}\n{}", plog());
    let state = std::fs::read_dir(dir.path().join("state")).unwrap().count();
    assert!(state > 0, "no state file\n{}", plog());

    let log2 = dir.path().join("portent2.log");
    let portent2 = start_portent(&config, &log2);
    let plog2 = || std::fs::read_to_string(&log2).unwrap_or_default();
    until(
        Duration::from_secs(30),
        "/-/ready after restart",
        &plog2,
        || ready(port),
    );
    assert!(
        plog2().contains("loaded the state of 1 series"),
        "{}",
        plog2()
    );
    let tracked = metric_sum(port, "portent_series_tracked").unwrap();
    assert!(tracked >= 1.0, "portent_series_tracked {tracked}");
    drop(portent2);
}

/// The value of the one exposed sample whose line starts with `prefix`.
fn metric(port: u16, prefix: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

#[test]
fn serve_survives_a_stopped_prometheus_and_a_bad_reload() {
    let Some(bin) = require("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = serve_target();
    let prom_port = free_port();
    let prom_dir = dir.path().join("prom");
    let prom = start_prometheus(&bin, prom_port, target.port, &prom_dir);

    let port = free_port();
    let config = common::pull_config(dir.path(), prom_port, port);
    let log = dir.path().join("portent.log");
    let portent = start_portent(&config, &log);
    let plog = || std::fs::read_to_string(&log).unwrap_or_default();
    until(Duration::from_secs(30), "/-/ready", &plog, || ready(port));
    until(Duration::from_secs(30), "a score", &plog, || score(port));

    // A config that does not load: counted, logged, the running one stays.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "source: [not, a, mapping]\n").unwrap();
    portent.signal("HUP");
    until(
        Duration::from_secs(10),
        "a failed reload counted",
        &plog,
        || metric(port, "portent_config_reloads_total{result=\"failure\"}").filter(|n| *n >= 1.0),
    );
    assert_eq!(
        metric(port, "portent_config_last_reload_successful"),
        Some(0.0)
    );
    std::fs::write(&config, good).unwrap();
    portent.signal("HUP");
    until(
        Duration::from_secs(10),
        "a good reload counted",
        &plog,
        || metric(port, "portent_config_reloads_total{result=\"success\"}").filter(|n| *n >= 1.0),
    );

    // Prometheus goes away: /metrics still answers, errors are counted.
    let errors = |p| metric(p, "portent_source_errors_total{").unwrap_or(0.0);
    let before = errors(port);
    drop(prom);
    until(
        Duration::from_secs(20),
        "source errors counted",
        &plog,
        || (errors(port) > before).then_some(()),
    );
    assert_eq!(get(port, "/-/healthy").map(|(s, _)| s), Some(200));

    // It comes back: scoring resumes.
    let _prom = start_prometheus(&bin, prom_port, target.port, &prom_dir);
    let ingested = |p| metric(p, "portent_samples_ingested_total{").unwrap_or(0.0);
    let at_restart = ingested(port);
    until(
        Duration::from_secs(30),
        "samples ingested again",
        &plog,
        || (ingested(port) > at_restart).then_some(()),
    );
    drop(portent);
}
