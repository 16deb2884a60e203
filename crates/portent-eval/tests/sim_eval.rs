//! `portent_eval::sim` on a short run: a small cluster, one day of warm-up, a memory leak and a
//! bad rollout on the second day, at two-minute steps so that it stays quick in debug builds.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use portent_eval::sim::{SimEvalConfig, run};
use portent_sim::{DEFAULT_START, Scenario, ScenarioKind};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn short_config() -> SimEvalConfig {
    let mut config = SimEvalConfig::new(7, 2);
    config.sim.step = Duration::from_secs(120);
    config
        .sim
        .deployments
        .retain(|d| matches!(d.name.as_str(), "payments-api" | "frontend"));
    config.sim.nodes.truncate(2);
    let at = |h: i64| DEFAULT_START.add_millis(DAY_MS + h * HOUR_MS);
    config.sim.scenarios = vec![
        Scenario::new(
            ScenarioKind::MemoryLeak,
            at(1),
            at(11),
            "payments",
            "payments-api",
        ),
        Scenario::new(ScenarioKind::BadRollout, at(14), at(15), "shop", "frontend"),
    ];
    config.warm_up_ms = DAY_MS;
    config
}

#[test]
fn short_run_reports_every_scenario_and_the_leak_beats_the_threshold() {
    let report = run(&short_config(), &|_| {}).unwrap();
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["memory_leak", "bad_rollout"]);

    let leak = &report.scenarios[0];
    assert!(leak.detected, "{leak:#?}");
    let portent_delay = leak.delay_minutes.unwrap();
    assert!(leak.caught_by_univariate || leak.caught_by_multivariate);
    // The static threshold (90% of the limit) fires only near the end of the ten-hour leak, if
    // at all.
    let fixed = &leak.paths["static_threshold"];
    if fixed.caught {
        assert!(
            fixed.delay_minutes.unwrap() > portent_delay + 60.0,
            "{leak:#?}"
        );
    }

    // Every path has a false-alarm rate, counted over entity-days after the warm-up.
    assert!(report.entity_days > 1.0);
    for g in ["portent", "univariate", "multivariate", "static_threshold"] {
        assert!(report.false_alarms.contains_key(g), "{g}");
        assert!(leak.false_alarms_per_day_by.contains_key(g), "{g}");
    }
    assert!(leak.false_alarms_per_day >= 0.0);

    // Through the incident correlator, each scenario is one incident; the leak's top candidate
    // is a series of the leaking pod. The bad rollout's is a pod of the bad ReplicaSet: its new
    // pods have no history to be scored against, but they err more than the old ones did.
    for s in &report.scenarios {
        assert_eq!(s.incidents, 1, "{s:#?}");
        assert!(s.one_incident);
        assert!(s.shared_with.is_empty(), "{s:#?}");
    }
    assert_eq!(report.own_incident_fraction(), 1.0);
    assert!(leak.top_cause_correct, "{leak:#?}");
    assert!(report.scenarios[1].top_cause_correct, "{report:#?}");
    assert_eq!(report.top_cause_fraction(), 1.0);
    assert_eq!(
        (report.rollouts_named, report.rollouts_named_wrongly),
        (1, 0)
    );
    assert!(
        report
            .table()
            .contains("injected cause the top candidate in 2/2")
    );

    // The JSON line has the documented shape.
    let v: serde_json::Value = serde_json::from_str(&report.to_json_line()).unwrap();
    let obj = v.as_object().unwrap();
    for key in [
        "scenarios",
        "top_cause_fraction",
        "one_incident_fraction",
        "own_incident_fraction",
        "false_incidents",
        "false_incidents_per_day",
        "rollouts_named",
        "rollouts_named_wrongly",
    ] {
        assert!(obj.contains_key(key), "{key} missing in {v}");
    }
    let scenarios = obj["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 2);
    for s in scenarios {
        for key in [
            "name",
            "detected",
            "delay_minutes",
            "false_alarms_per_day",
            "caught_by_univariate",
            "caught_by_multivariate",
            "caught_by_static_threshold",
            "incidents",
            "one_incident",
            "top_cause_correct",
            "top_candidate",
            "shared_with",
        ] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
        assert_eq!(
            s["detected"].as_bool().unwrap(),
            !s["delay_minutes"].is_null()
        );
    }
}
