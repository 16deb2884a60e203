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

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Proc, free_port, get, require, serve_target, start_portent, start_prometheus, until};

/// A webhook receiver: every POST body it gets, in order.
fn webhook() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Headers, then Content-Length bytes of body.
            let body = loop {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break Some(buf[end + 4..end + 4 + len].to_vec());
                }
            };
            if let Some(json) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                sink.lock().unwrap().push(json);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

fn start_alertmanager(bin: &Path, port: u16, hook: u16, dir: &Path) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:
  receiver: test
  group_by: [alertname, query, model]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: http://127.0.0.1:{hook}/hook
        send_resolved: true
"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // No gossip: a lone instance, and nothing listening beyond loopback.
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn");
    let p = Proc::spawn(cmd, &dir.join("log"));
    until(
        Duration::from_secs(30),
        "alertmanager ready",
        &|| p.log(),
        || get(port, "/-/ready").filter(|(s, _)| *s == 200),
    );
    p
}

/// The alerts of the webhook posts so far whose status is `status`, as (alertname, labels).
fn alerts(got: &Mutex<Vec<serde_json::Value>>, status: &str) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|post| post["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["status"] == status)
        .collect()
}

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
        || {
            let (_, body) = get(portent_port, "/metrics")?;
            body.lines()
                .find(|l| l.starts_with("portent_yhat{") && l.contains("query=\"gauge\""))
                .and_then(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
                .filter(|y| y.is_finite())
        },
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
