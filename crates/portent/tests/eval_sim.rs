//! `portent eval sim --json --bar` end to end, on a short, coarse run (3 days at 5-minute
//! steps: the two scenarios of the third day).
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn json_last_line_has_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_portent"))
        .args([
            "eval", "sim", "--seed", "3", "--days", "3", "--step", "5m", "--json", "--quiet",
            "--bar",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("scenario"), "{stdout}");
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    let scenarios = v["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["night_traffic_drop", "latency_creep"]);
    for s in scenarios {
        for key in [
            "detected",
            "false_alarms_per_day",
            "caught_by_univariate",
            "caught_by_multivariate",
            "caught_by_static_threshold",
        ] {
            assert!(s[key].is_boolean() || s[key].is_number(), "{key} in {s}");
        }
        assert!(s["delay_minutes"].is_number() || s["delay_minutes"].is_null());
        // Both scenarios change their series within minutes, against the run without them.
        let visible = s["visible_minutes"].as_f64().unwrap();
        assert!((0.0..=60.0).contains(&visible), "{s}");
    }
    // `--bar` fails the run exactly when the report falls short, and says where; the report
    // is printed either way. At 5-minute steps the creep may be flagged late: the seasonal
    // shift runs only on series sampled every two minutes or more often.
    let creep = &scenarios[1];
    let mut short = Vec::new();
    for s in scenarios {
        if s["detected"] != true {
            short.push(format!("{}: not detected", s["name"].as_str().unwrap()));
        }
    }
    if let (Some(delay), Some(visible)) = (
        creep["delay_minutes"].as_f64(),
        creep["visible_minutes"].as_f64(),
    ) && delay - visible > 15.0
    {
        short.push("latency_creep: flagged".into());
    }
    if creep["false_alarms_per_day"].as_f64().unwrap() > 1.0 {
        short.push("false alarms:".into());
    }
    assert_eq!(
        out.status.success(),
        short.is_empty(),
        "{short:?}\n{stderr}"
    );
    for want in &short {
        assert!(stderr.contains(want.as_str()), "{want} not in {stderr}");
    }
    if !short.is_empty() {
        assert!(
            stderr.contains("below the bar on the simulator"),
            "{stderr}"
        );
    }
}

#[test]
fn too_few_days_is_refused_with_a_hint() {
    let out = Command::new(env!("CARGO_BIN_EXE_portent"))
        .args(["eval", "sim", "--days", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--days 1"));
}
