//! `portent demo`, as a newcomer runs it: the simulated cluster through the real daemon, an
//! incident served by the API within two minutes, the scenario that caused it announced, and
//! a clean stop on SIGINT (Ctrl-C).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, free_port, get, until};

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
