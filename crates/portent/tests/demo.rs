//! `portent demo`, as a newcomer runs it: the simulated cluster through the real daemon, an
//! incident served by the API and shown in the web UI (a real headless Chromium) within two
//! minutes, the scenario that caused it announced, and a clean stop on SIGINT (Ctrl-C).
//! Screenshots of the UI on the demo are kept in `$CARGO_TARGET_DIR/ui-screenshots/demo-*`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::{Proc, free_port, get, require, until};

#[test]
fn the_demo_shows_an_incident_within_two_minutes_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portent"));
    cmd.args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--dir")
        .arg(dir.path().join("state"));
    let started = Instant::now();
    let mut demo = Proc::spawn(cmd, &dir.path().join("demo.log"));
    let log = || demo.log();
    // The bar: within two minutes of starting, the UI (which reads this API) has an incident.
    let incident = until(
        Duration::from_secs(120),
        "an incident in /api/v1/incidents",
        &log,
        || {
            let (status, body) = get(port, "/api/v1/incidents")?;
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            v["incidents"].as_array()?.first().cloned()
        },
    );
    eprintln!(
        "first incident after {:.1}s: {incident}",
        started.elapsed().as_secs_f64()
    );
    let id = incident["id"].as_str().unwrap().to_owned();
    let (status, body) = get(port, &format!("/api/v1/incidents/{id}")).unwrap();
    assert_eq!(status, 200, "{body}");
    // The daemon's own metrics are served too: the scores of the recorded series.
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portent_anomaly_score{") && l.contains("service=\"frontend\"")),
        "{metrics}"
    );
    // And the multivariate model's, one per pod, named by the pod alone.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portent_anomaly_score{namespace=")
                && l.contains("model=\"pod_health\"")
                && l.contains("query=\"pod_health\"")
                && !l.contains("metric=")),
        "{metrics}"
    );
    // With each feature's share of it.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portent_feature_contribution{namespace=")
                && l.contains("model=\"pod_health\"")
                && l.contains("feature=\"pod_memory\"")),
        "{metrics}"
    );
    // The same incident in the UI, in a real browser (skipped without Chromium unless the
    // servers are required), with screenshots for the README's tour.
    if let (Some(chromium), Some(chromedriver)) = (require("chromium"), require("chromedriver")) {
        let browser = Browser::start(&chromium, &chromedriver, dir.path());
        let base = format!("http://127.0.0.1:{port}");
        browser.goto(&format!("{base}/"));
        browser.wait_ready("overview");
        browser.wait(
            Duration::from_secs(20),
            "the incident on the overview",
            &format!("return !!document.querySelector('tr[data-incident-id=\"{id}\"]')"),
        );
        // The bad rollout's incident (errors on shop/frontend) for the screenshots, once
        // open; else the first. A few more minutes of the cluster give the sparklines a shape.
        let shot = until(
            Duration::from_secs(60),
            "the bad rollout's incident",
            &log,
            || {
                let (_, body) = get(port, "/api/v1/incidents")?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                v["incidents"]
                    .as_array()?
                    .iter()
                    .find(|i| i.to_string().contains("frontend"))
                    .and_then(|i| i["id"].as_str().map(str::to_owned))
            },
        );
        std::thread::sleep(Duration::from_secs(3));
        browser.goto(&format!("{base}/"));
        browser.wait_ready("overview");
        browser.screenshot("demo-overview.png");
        browser.goto(&format!("{base}/ui/incidents/{shot}"));
        browser.wait_ready("incident");
        let shown = browser.eval(
            "return [document.querySelector('pre.explanation').innerText, \
             document.querySelectorAll('#candidates tbody tr').length, \
             document.querySelector('h1').innerText]",
        );
        // The incident may have merged into an older one since: its link shows that one.
        let page_id = shown[2]
            .as_str()
            .unwrap()
            .trim_start_matches("Incident ")
            .to_owned();
        if page_id != shot {
            let (_, body) = get(port, &format!("/api/v1/incidents/{shot}")).unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["incident"]["incident"]["id"], page_id.as_str(), "{v}");
        }
        assert!(shown[0].as_str().unwrap().contains(&page_id), "{shown}");
        assert!(shown[1].as_u64().unwrap() >= 1, "{shown}");
        browser.screenshot("demo-incident.png");
        // The top candidate links to its series' chart.
        let linked = browser.eval(
            "const a = document.querySelector('#candidates a[href^=\"/ui/series/\"]'); \
             return a && a.getAttribute('href')",
        );
        assert!(
            linked.as_str().is_some(),
            "no series link on the incident page"
        );
        // The rollout's error ratio, charted.
        let (_, body) = get(port, "/api/v1/series?limit=500").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let series = v["series"].as_array().and_then(|all| {
            all.iter()
                .find(|s| {
                    let t = s.to_string();
                    t.contains("service:http_errors:ratio") && t.contains("frontend")
                })
                .and_then(|s| s["id"].as_str())
        });
        if let Some(series) = series {
            browser.goto(&format!("{base}/ui/series/{series}"));
            browser.wait_ready("series");
            browser.wait(
                Duration::from_secs(10),
                "the chart drawn",
                "const c = document.getElementById('chart'); \
                 return c && Number(c.dataset.points) > 10",
            );
            browser.screenshot("demo-series.png");
        }
    }
    // What happened is said on the terminal: the scenario, then the incident it caused.
    until(
        Duration::from_secs(10),
        "the incident printed",
        &log,
        || {
            let text = demo.log();
            (text.contains("scenario begins: bad_rollout") && text.contains(&id)).then_some(())
        },
    );
    demo.signal("INT");
    let status = demo.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", demo.log());
    assert!(
        demo.log().contains("portent demo: stopped"),
        "{}",
        demo.log()
    );
    // The state was saved where asked.
    assert!(dir.path().join("state/state.bin").exists());
}

#[test]
fn bad_demo_options_say_what_to_change() {
    for (args, want) in [
        (vec!["--speed", "0"], "--speed 0: must be between 1"),
        (vec!["--history", "10m"], "--history must be at least 1h"),
        (vec!["--expect-incident"], "--for"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_portent"))
            .arg("demo")
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
