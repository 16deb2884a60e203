//! Incidents end to end: a real Prometheus scrapes a gauge this test serves; `portent serve`
//! reads it, groups the anomaly into an incident and posts it to a real Alertmanager, which
//! delivers it to a webhook receiver inside this test, firing with its annotations and then
//! resolved, once. A replay of the same data (`portent backtest`) finds the same incident. An
//! operator marks it a false positive through the API (refused without the token; the verdict
//! is on disk), and a replay of the same data then opens no incident: the spike is held back.
//! Last, an on-call engineer silences the incident's alert in Alertmanager: portent reads the
//! silence back and records it as feedback too.
//! 127.0.0.1 only; every wait has a deadline.
//!
//! Skipped (with a loud message) when `prometheus` or `prometheus-alertmanager` is not
//! installed, unless `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::time::Duration;

use common::{
    alerts, finite_yhat, free_port, get, post, require, serve_target, start_alertmanager,
    start_portent, start_prometheus, until, webhook,
};

const TOKEN: &str = "feedback-token";

fn incidents(port: u16, state: &str) -> Vec<serde_json::Value> {
    get(port, &format!("/api/v1/incidents?state={state}"))
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["incidents"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn an_incident_pages_through_alertmanager_resolves_and_a_false_positive_stops_its_pattern() {
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
    // The detector flags a jump that stays with one high score and then takes the new level
    // in, so the incident fires at once (`hold: 0s`) rather than after a hold.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("server:\n", &format!("server:\n  bearer_token: {TOKEN}\n"))
        + &format!(
            "incidents:
  hold: 0s
  gap: 5s
  resolve_after: 6s
  silences_every: 1s
  notify:
    alertmanager:
      - url: http://127.0.0.1:{am_port}
        resend_every: 2s
        runbook_url: https://runbooks.example.com/{{incident}}
"
        );
    std::fs::write(&config, text).unwrap();

    let prom_config = format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: target
    static_configs:
      - targets: ['127.0.0.1:{}']
",
        target.port
    );
    let prom = start_prometheus(
        &prometheus,
        prom_port,
        &dir.path().join("prom"),
        &prom_config,
        &[],
    );
    let portent = start_portent(&config, &dir.path().join("portent.log"));
    let logs = || {
        format!(
            "--- portent ---\n{}\n--- prometheus ---\n{}\n--- webhook ---\n{:?}",
            portent.log(),
            prom.log(),
            got.lock().unwrap()
        )
    };
    until(
        Duration::from_secs(120),
        "a finite portent_yhat",
        &logs,
        || finite_yhat(portent_port, "gauge"),
    );
    // Calm for a while, so that the replays below have history to fit on before the spike.
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        alerts(&got, "firing").is_empty(),
        "paged before the anomaly\n{}",
        logs()
    );

    // A spike of a second or two: one incident, firing at Alertmanager with portent's labels
    // and annotations.
    let spike = || {
        target.jump_to(10_000.0);
        std::thread::sleep(Duration::from_millis(3500));
        target.calm();
    };
    let spiked_at = std::time::SystemTime::now();
    spike();
    let firing = until(
        Duration::from_secs(60),
        "the incident's alert at the webhook",
        &logs,
        || alerts(&got, "firing").into_iter().next(),
    );
    let labels = &firing["labels"];
    assert_eq!(labels["alertname"], "PortentIncident", "{firing}");
    assert_eq!(labels["severity"], "warning", "{firing}");
    let id = labels["incident"].as_str().unwrap().to_owned();
    let annotations = &firing["annotations"];
    assert!(
        annotations["summary"]
            .as_str()
            .unwrap()
            .contains("test_gauge"),
        "{firing}"
    );
    assert!(
        annotations["description"]
            .as_str()
            .unwrap()
            .contains("Most likely cause"),
        "{firing}"
    );
    assert_eq!(
        annotations["runbook_url"],
        format!("https://runbooks.example.com/{id}").as_str()
    );
    let open = incidents(portent_port, "open");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["id"], id.as_str());
    // `portent ask` answers from the daemon: the open incident and its likely cause.
    let asked = std::process::Command::new(env!("CARGO_BIN_EXE_portent"))
        .args(["ask", "what's happening?", "--url"])
        .arg(format!("http://127.0.0.1:{portent_port}"))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&asked.stdout);
    assert!(asked.status.success(), "{asked:?}");
    assert!(
        answer.contains(&id) && answer.contains("test_gauge"),
        "{answer}"
    );

    // Calm again: the incident resolves, and Alertmanager says so once.
    until(
        Duration::from_secs(90),
        "the resolved notification",
        &logs,
        || alerts(&got, "resolved").into_iter().next(),
    );
    let ids = |status: &str| {
        let mut ids: Vec<String> = alerts(&got, status)
            .iter()
            .filter_map(|a| a["labels"]["incident"].as_str().map(str::to_owned))
            .collect();
        ids.dedup();
        ids
    };
    assert_eq!(ids("firing"), std::slice::from_ref(&id), "{}", logs());

    // A replay of the data so far (`portent backtest`, the daemon's steps over Prometheus'
    // history) finds the same incident.
    let spiked_at = spiked_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let replay = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portent"))
            .arg("backtest")
            .arg(&config)
            .args([
                "--from",
                &(spiked_at - 5_000).to_string(),
                "--to",
                "now",
                "--json",
                "-q",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let incidents: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "incident")
            .collect();
        (incidents, stderr)
    };
    let (replayed, summary) = replay();
    assert_eq!(replayed.len(), 1, "{replayed:?}\n{summary}");
    assert!(
        summary.contains("(0 anomalous samples held back"),
        "{summary}"
    );

    // Not a problem, says the operator; refused without the token, taken with it.
    let path = format!("/api/v1/incidents/{id}/feedback");
    let body = r#"{"verdict": "false_positive", "by": "e2e", "note": "load test"}"#;
    let (status, _) = post(portent_port, &path, body, "wrong").unwrap();
    assert_eq!(status, 401);
    let (status, answer) = post(portent_port, &path, body, TOKEN).unwrap();
    assert_eq!(status, 201, "{answer}");
    let saved = std::fs::read_to_string(dir.path().join("state/feedback.json")).unwrap();
    assert!(saved.contains("false_positive"), "{saved}");

    let (_, listed) = get(portent_port, "/api/v1/feedback").unwrap();
    assert!(listed.contains(&id), "{listed}");

    // A replay of the same data now pages no more: the spike is held back as the pattern the
    // operator called a false positive.
    let (incidents, summary) = replay();
    assert!(incidents.is_empty(), "{incidents:?}\n{summary}");
    assert!(
        !summary.contains("(0 anomalous samples held back"),
        "{summary}"
    );

    // Someone on call silences the incident's alert in Alertmanager itself: portent reads the
    // silence back and keeps it as feedback, with who and why, once.
    let now = jiff::Timestamp::now();
    let silence = serde_json::json!({
        "matchers": [
            {"name": "alertname", "value": "PortentIncident", "isRegex": false, "isEqual": true},
            {"name": "incident", "value": id, "isRegex": false, "isEqual": true}
        ],
        "startsAt": now.to_string(),
        "endsAt": (now + jiff::SignedDuration::from_hours(1)).to_string(),
        "createdBy": "oncall-bob",
        "comment": "nightly load test"
    });
    let (status, created) = post(am_port, "/api/v2/silences", &silence.to_string(), "").unwrap();
    assert_eq!(status, 200, "{created}");
    let silence_id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = until(
        Duration::from_secs(30),
        "the silence in portent's feedback",
        &logs,
        || {
            get(portent_port, "/api/v1/feedback")
                .map(|(_, b)| b)
                .filter(|b| b.contains(&silence_id))
        },
    );
    let feedback: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let from_silence: Vec<&serde_json::Value> = feedback["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.to_string().contains(&silence_id))
        .collect();
    assert_eq!(from_silence.len(), 1, "{listed}");
    let f = from_silence[0];
    assert_eq!(f["incident"], id.as_str(), "{f}");
    assert_eq!(f["verdict"], "false_positive", "{f}");
    assert_eq!(f["by"], "oncall-bob", "{f}");
    assert_eq!(f["note"], "nightly load test", "{f}");
    // Read again every second, it is still one entry.
    std::thread::sleep(Duration::from_secs(3));
    let (_, again) = get(portent_port, "/api/v1/feedback").unwrap();
    assert_eq!(again.matches(&silence_id).count(), 1, "{again}");
    let saved = std::fs::read_to_string(dir.path().join("state/feedback.json")).unwrap();
    assert!(saved.contains(&silence_id), "{saved}");
    drop(portent);
}
