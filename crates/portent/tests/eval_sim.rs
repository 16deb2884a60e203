//! `portent eval sim --json` end to end, on a short, coarse run (3 days at 5-minute steps: the
//! two scenarios of the third day).
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn json_last_line_has_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_portent"))
        .args([
            "eval", "sim", "--seed", "3", "--days", "3", "--step", "5m", "--json", "--quiet",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
