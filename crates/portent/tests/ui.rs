//! The web UI in a real headless Chromium, driven through chromedriver's WebDriver protocol
//! (plain HTTP and JSON, so no client crate is needed): `portent serve` takes a gauge this test
//! remote_writes into it, a spike opens an incident, and then the overview lists the series
//! and the incident, the series page's chart draws the pushed values, the incident page loads,
//! and its "false positive" button is refused without the token and recorded on the server
//! with it. Screenshots of each page are kept in `$CARGO_TARGET_DIR/ui-screenshots` (or
//! `target/ui-screenshots`). 127.0.0.1 only; every wait has a deadline.
//!
//! Skipped (with a loud message) when `chromium` or `chromedriver` (Debian's `chromium` and
//! `chromium-driver`) is not installed, unless `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::browser::Browser;
use common::{free_port, get, now_ms, push_gauge, require, start_portent, until};
use portent_core::{Sample, Timestamp};
use serde_json::{Value, json};

const TOKEN: &str = "ui-token";

fn write_config(dir: &Path, listen: u16) -> PathBuf {
    let path = dir.join("portent.yml");
    std::fs::write(
        &path,
        format!(
            "source:
  push:
queries:
  gauge:
    expr: ui_gauge
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
server:
  listen: 127.0.0.1:{listen}
  bearer_token: {TOKEN}
storage:
  dir: state
# The incident fires at once and stays open while the browser looks at it.
incidents:
  hold: 0s
  gap: 5s
  resolve_after: 10m
"
        ),
    )
    .unwrap();
    path
}

/// Around 100 with a deterministic wobble of ±5.
fn calm(i: i64) -> f64 {
    100.0 + 5.0 * ((i as f64) * 0.7).sin()
}

fn api(port: u16, path: &str) -> Option<Value> {
    get(port, path)
        .filter(|(s, _)| *s == 200)
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
}

#[test]
fn the_ui_shows_series_and_incidents_and_feedback_reaches_the_server() {
    let (Some(chromium), Some(chromedriver)) = (require("chromium"), require("chromedriver"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let portent = start_portent(&config, &dir.path().join("portent.log"));
    let log = || portent.log();
    until(Duration::from_secs(30), "/-/healthy", &log, || {
        get(port, "/-/healthy").filter(|(s, _)| *s == 200)
    });

    // Ten minutes of calm history at once, so the model fits at its first tick instead of
    // warming up for minutes; then one sample a second, spiking while `spiking` is set.
    let start = now_ms();
    let history: Vec<Sample> = (0..600)
        .map(|i| Sample::new(Timestamp::from_millis(start - (600 - i) * 1000), calm(i)))
        .collect();
    assert_eq!(
        push_gauge(port, "ui_gauge", history),
        Some(204),
        "{}",
        log()
    );
    let spiking = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (spiking, stop) = (Arc::clone(&spiking), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 600;
            while !stop.load(Ordering::SeqCst) {
                let v = if spiking.load(Ordering::SeqCst) {
                    10_000.0
                } else {
                    calm(i)
                };
                let _ = push_gauge(
                    port,
                    "ui_gauge",
                    vec![Sample::new(Timestamp::from_millis(now_ms()), v)],
                );
                i += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    until(Duration::from_secs(90), "an expected value", &log, || {
        let v = api(port, "/api/v1/series")?;
        v["series"][0]["yhat"].as_f64()
    });
    std::thread::sleep(Duration::from_secs(3));
    spiking.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(3500));
    spiking.store(false, Ordering::SeqCst);
    let incident = until(Duration::from_secs(60), "an open incident", &log, || {
        let v = api(port, "/api/v1/incidents?state=open")?;
        v["incidents"][0]["id"].as_str().map(str::to_owned)
    });
    // A few calm points after the spike, so the chart shows it between normal values.
    std::thread::sleep(Duration::from_secs(3));
    let series_id = api(port, "/api/v1/series").unwrap()["series"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let browser = Browser::start(&chromium, &chromedriver, dir.path());
    let base = format!("http://127.0.0.1:{port}");

    // Overview: the series, ranked, and the open incident.
    browser.goto(&format!("{base}/"));
    browser.wait_ready("overview");
    let listed = browser.eval(
        "return [document.getElementById('app').dataset.series, \
         document.querySelectorAll('tr[data-series-id]').length, \
         document.querySelectorAll('#series svg.spark path').length, \
         document.body.innerText]",
    );
    assert!(listed[1].as_u64().unwrap() >= 1, "{listed}");
    assert!(listed[2].as_u64().unwrap() >= 1, "no sparkline: {listed}");
    assert!(listed[3].as_str().unwrap().contains("ui_gauge"), "{listed}");
    let row = browser.eval(&format!(
        "return !!document.querySelector('tr[data-incident-id=\"{incident}\"]')"
    ));
    assert_eq!(row, Value::Bool(true), "the incident is not listed");
    browser.screenshot("overview.png");

    // Series page: uPlot drew the pushed values, with the spike marked.
    browser.goto(&format!("{base}/ui/series/{series_id}"));
    browser.wait_ready("series");
    let chart = browser.wait(
        Duration::from_secs(10),
        "the chart",
        "const c = document.getElementById('chart'); \
         return c && c.querySelector('canvas') && \
           [Number(c.dataset.points), c.querySelector('canvas').width]",
    );
    assert!(chart[0].as_u64().unwrap() > 10, "points drawn: {chart}");
    assert!(chart[1].as_u64().unwrap() > 100, "canvas width: {chart}");
    // Dragging across the chart zooms into the dragged span.
    let span = |v: &Value| v[1].as_f64().unwrap() - v[0].as_f64().unwrap();
    let range = "const c = document.getElementById('chart'); \
                 return c.dataset.xMin && [Number(c.dataset.xMin), Number(c.dataset.xMax)]";
    let before = span(&browser.wait(Duration::from_secs(5), "the x range", range));
    browser.drag("#chart .u-over", -200, 100);
    browser.wait(
        Duration::from_secs(5),
        "a narrower x range after the drag",
        &format!(
            "const c = document.getElementById('chart'); \
             return Number(c.dataset.xMax) - Number(c.dataset.xMin) < {before} * 0.9"
        ),
    );
    let anomalies = browser.eval("return document.querySelectorAll('#anomalies tbody tr').length");
    assert!(anomalies.as_u64().unwrap() >= 1, "no anomaly listed");
    browser.screenshot("series.png");

    // Incident page: explanation, candidates, evidence.
    browser.goto(&format!("{base}/ui/incidents/{incident}"));
    browser.wait_ready("incident");
    let shown = browser.eval(
        "return [document.querySelector('pre.explanation').innerText, \
         document.querySelectorAll('#candidates tbody tr').length, \
         document.querySelectorAll('#evidence tbody tr').length, \
         document.getElementById('feedback-state').dataset.verdict]",
    );
    assert!(
        shown[0].as_str().unwrap().contains(&incident),
        "explanation: {shown}"
    );
    assert!(shown[1].as_u64().unwrap() >= 1, "{shown}");
    assert!(shown[2].as_u64().unwrap() >= 1, "{shown}");
    assert_eq!(shown[3], "", "feedback before any click: {shown}");

    // Without the token the server refuses, and says so on the page.
    browser.click("#false-positive");
    browser.wait(
        Duration::from_secs(10),
        "the refusal",
        "const m = document.getElementById('feedback-message'); \
         return m.className === 'error' && m.innerText",
    );
    let feedback = |port| api(port, &format!("/api/v1/incidents/{incident}")).unwrap();
    assert_eq!(feedback(port)["feedback"], json!([]));

    // With the token (typed into the header's field, kept in local storage) it is recorded,
    // and the page shows the server's state.
    browser.type_into("#token", TOKEN);
    browser.click("#false-positive");
    browser.wait(
        Duration::from_secs(10),
        "the verdict shown",
        "return document.getElementById('feedback-state').dataset.verdict === 'false_positive'",
    );
    let v = feedback(port);
    assert_eq!(v["feedback"][0]["verdict"], "false_positive", "{v}");
    assert_eq!(v["feedback"][0]["by"], "web-ui", "{v}");
    browser.screenshot("incident.png");

    stop.store(true, Ordering::SeqCst);
    pusher.join().unwrap();
}
