//! The pull path end to end, up to a page: a real Prometheus scrapes a gauge this test serves
//! and `portent serve`; portent reads the gauge from Prometheus and scores it; Prometheus
//! evaluates the rules `portent rules` wrote and sends the alert to a real Alertmanager, which
//! posts it to a webhook receiver inside this test, firing and then resolved. 127.0.0.1 only;
//! every wait has a deadline.
//!
//! Skipped (with a loud message) when `prometheus` or `prometheus-alertmanager` is not
//! installed, unless `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    alerts, finite_yhat, free_port, require, serve_target, start_alertmanager, start_portent,
    start_prometheus, until, webhook,
};

#[test]
fn a_jump_pages_through_prometheus_rules_and_alertmanager_then_resolves() {
    let (Some(prometheus), Some(alertmanager)) =
        (require("prometheus"), require("prometheus-alertmanager"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = serve_target();
    let (hook, got) = webhook();
    let am_port = free_port();
    let _am = start_alertmanager(&alertmanager, am_port, hook, &dir.path().join("am"));

    let (prom_port, portent_port) = (free_port(), free_port());
    let config = common::pull_config(dir.path(), prom_port, portent_port);
    // The rules exactly as `portent rules` writes them, with a short window and hold so the
    // test runs in seconds.
    let rules = dir.path().join("rules.yml");
    let out = Command::new(env!("CARGO_BIN_EXE_portent"))
        .args([
            "rules",
            config.to_str().unwrap(),
            "--window",
            "20s",
            "--for",
            "2s",
        ])
        .args(["-o", rules.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let prom_config = format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ['{rules}']
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
scrape_configs:
  - job_name: target
    static_configs:
      - targets: ['127.0.0.1:{target}']
  - job_name: portent
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{portent_port}']
",
        rules = rules.display(),
        target = target.port,
    );
    let prom = start_prometheus(
        &prometheus,
        prom_port,
        &dir.path().join("prom"),
        &prom_config,
        &[],
    );

    let log = dir.path().join("portent.log");
    let portent = start_portent(&config, &log);
    let logs = || {
        format!(
            "--- portent ---\n{}\n--- prometheus ---\n{}\n--- webhook ---\n{:?}",
            portent.log(),
            prom.log(),
            got.lock().unwrap()
        )
    };
    // Fitted: the model expects something.
    until(
        Duration::from_secs(120),
        "a finite portent_yhat",
        &logs,
        || finite_yhat(portent_port, "gauge"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        alerts(&got, "firing").is_empty(),
        "paged before the anomaly\n{}",
        logs()
    );

    target.jump_to(10_000.0);
    let firing = until(
        Duration::from_secs(60),
        "the alert at the webhook",
        &logs,
        || alerts(&got, "firing").into_iter().next(),
    );
    let labels = &firing["labels"];
    assert_eq!(labels["alertname"], "PortentAnomaly", "{firing}");
    assert_eq!(labels["query"], "gauge");
    assert_eq!(labels["model"], "m");
    assert_eq!(labels["severity"], "warning");
    // The input series' own labels come through, so the page says which series.
    assert_eq!(labels["kind"], "demo", "{firing}");
    assert_eq!(labels["metric"], "test_gauge", "{firing}");
    let summary = firing["annotations"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(summary.contains("Anomalous gauge (model m)"), "{summary}");
    assert!(summary.contains("kind=\"demo\""), "{summary}");

    // Back to normal: once the window passes without a high score the alert resolves.
    target.calm();
    until(
        Duration::from_secs(90),
        "the resolved notification",
        &logs,
        || alerts(&got, "resolved").into_iter().next(),
    );
    // One notification per state: the firing alert was not repeated.
    let firing = alerts(&got, "firing");
    assert_eq!(firing.len(), 1, "{firing:?}");
    drop(portent);
}
