//! Grouping, ranking and lifecycle over seeded scenarios, with a fake clock.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{anomaly, at, labels, node, pods, row, run, scenario, unrelated};
use portent_core::Reason;
use portent_core::{Labels, Timestamp};
use portent_incidents::{CorrelatorConfig, Level, State, rank};

#[test]
fn a_node_and_its_pods_are_one_incident_and_another_namespace_is_another() {
    let c = run(CorrelatorConfig::default(), &scenario());
    let incs = c.incidents();
    assert_eq!(incs.len(), 2, "{incs:#?}");
    let cluster = &incs[0];
    assert_eq!(cluster.members.len(), 4);
    assert_eq!(cluster.started_at, at(0));
    let other = &incs[1];
    assert_eq!(other.members.len(), 1);
    assert_eq!(other.members[0].labels, unrelated());

    let ranked = rank(cluster);
    assert_eq!(ranked[0].evidence_id, "e1");
    assert_eq!(cluster.member("e1").unwrap().labels, node());
    assert_eq!(ranked[0].level, Level::Node);
    assert_eq!(ranked[0].direction_term, 1.0, "{ranked:#?}");
    // The pods deviate more but came later and sit downstream.
    assert!(ranked[0].strength_term < ranked[1].strength_term);
    // Evidence IDs follow arrival.
    let ids: Vec<_> = cluster
        .members
        .iter()
        .map(|m| m.evidence_id.as_str())
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4"]);
}

#[test]
fn a_pod_precedes_its_service() {
    let pod = labels(&[("namespace", "shop"), ("pod", "api-7d9f8-xk2p")]);
    let svc = labels(&[("namespace", "shop"), ("service", "api")]);
    let mut anomalies = Vec::new();
    for min in 0..6 {
        anomalies.push(anomaly(&svc, min + 1, 50.0, 0.99, Reason::Spike));
        anomalies.push(anomaly(&pod, min, 15.0, 0.85, Reason::Spike));
    }
    anomalies.sort_by_key(|a| a.scored.t);
    let c = run(CorrelatorConfig::default(), &anomalies);
    assert_eq!(c.incidents().len(), 1);
    let ranked = rank(&c.incidents()[0]);
    assert_eq!(ranked[0].level, Level::Pod, "{ranked:#?}");
    assert_eq!(ranked[1].level, Level::Service);
}

#[test]
fn ids_are_deterministic_and_depend_on_the_first_anomaly() {
    let a = run(CorrelatorConfig::default(), &scenario());
    let b = run(CorrelatorConfig::default(), &scenario());
    let ids = |c: &portent_incidents::Correlator| {
        c.incidents()
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    assert!(ids(&a)[0].as_str().starts_with("inc-"));
    assert_eq!(ids(&a)[0].as_str().len(), 20);
    let shifted: Vec<_> = scenario()
        .into_iter()
        .map(|mut x| {
            x.scored.t = x.scored.t.add_millis(60_000);
            x
        })
        .collect();
    let c = run(CorrelatorConfig::default(), &shifted);
    assert_ne!(ids(&c)[0], ids(&a)[0]);
}

#[test]
fn lifecycle_pending_firing_resolved_dropped() {
    let config = CorrelatorConfig {
        hold: Duration::from_secs(180),
        resolve_after: Duration::from_secs(300),
        retention: Duration::from_secs(3600),
        // Reopening has its own test.
        reopen_within: Duration::ZERO,
        ..CorrelatorConfig::default()
    };
    let mut c = portent_incidents::Correlator::new(config);
    let n = node();
    c.observe(&anomaly(&n, 0, 20.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents()[0].state, State::Pending);
    c.observe(&anomaly(&n, 2, 20.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents()[0].state, State::Pending);
    c.observe(&anomaly(&n, 3, 20.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents()[0].state, State::Firing);
    assert_eq!(c.incidents()[0].fired_at, Some(at(3)));
    c.advance(at(7));
    assert_eq!(c.incidents()[0].state, State::Firing);
    c.advance(at(8));
    assert_eq!(c.incidents()[0].state, State::Resolved);
    assert_eq!(c.incidents()[0].resolved_at, Some(at(8)));
    // A new anomaly after resolution opens a new incident.
    c.observe(&anomaly(&n, 20, 20.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2);
    assert_ne!(c.incidents()[0].id, c.incidents()[1].id);
    // A lone anomaly keeps it open for `resolve_after`, longer than the hold: it fires when the
    // hold runs out, as portent's alerting rule does on a lone onset score.
    c.advance(at(23));
    assert_eq!(c.incidents()[1].state, State::Firing);
    assert_eq!(c.incidents()[1].fired_at, Some(at(23)));
    c.advance(at(25));
    assert_eq!(c.incidents()[1].state, State::Resolved);
    assert_eq!(c.counters().pending_expired, 0);
    c.advance(at(67));
    assert_eq!(c.incidents().len(), 2);
    // The first is past its retention.
    c.advance(at(68));
    assert_eq!(c.incidents().len(), 1, "{:#?}", c.incidents());
    assert_eq!(c.counters().dropped_resolved, 1);
}

/// Regression: the simulator's memory leak and bad rollout each gave one anomaly at their onset
/// (the detector's refractory memory keeps it from scoring every sample of a shift high), and
/// their incidents were dropped as pending although the alerting rule on the same scores fired.
#[test]
fn a_lone_onset_fires_after_the_hold_even_when_the_clock_jumps() {
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&anomaly(&node(), 0, 20.0, 0.95, Reason::LevelShift));
    // The next call comes long after: it was open (quiet < 10 min) when the 2 min hold ran out.
    c.advance(at(60));
    let inc = &c.incidents()[0];
    assert_eq!(inc.state, State::Resolved);
    assert_eq!(inc.fired_at, Some(at(2)));
    assert_eq!(c.counters().pending_expired, 0);
}

#[test]
fn a_pending_incident_quiet_before_its_hold_is_dropped() {
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig {
        hold: Duration::from_secs(600),
        resolve_after: Duration::from_secs(300),
        ..CorrelatorConfig::default()
    });
    c.observe(&anomaly(&node(), 0, 20.0, 0.9, Reason::Spike));
    c.advance(at(9));
    assert!(c.incidents().is_empty(), "{:#?}", c.incidents());
    assert_eq!(c.counters().pending_expired, 1);
}

#[test]
fn below_threshold_and_time_gaps_do_not_group() {
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig {
        hold: Duration::ZERO,
        resolve_after: Duration::from_secs(3600),
        ..CorrelatorConfig::default()
    });
    let p = &pods()[0];
    c.observe(&anomaly(p, 0, 20.0, 0.5, Reason::Spike));
    assert!(c.incidents().is_empty());
    assert_eq!(c.counters().below_threshold, 1);
    c.observe(&anomaly(p, 0, 20.0, 0.9, Reason::Spike));
    assert_eq!(
        c.incidents()[0].state,
        State::Firing,
        "hold 0 fires at once"
    );
    // 11 minutes later, beyond the 10-minute gap: a separate incident.
    c.observe(&anomaly(&pods()[1], 11, 20.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2);
}

#[test]
fn a_late_link_merges_incidents_into_the_oldest() {
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    let a = labels(&[("node", "n1"), ("__name__", "x")]);
    let b = labels(&[("node", "n2"), ("__name__", "x")]);
    // A pod on n2 whose workload also has a pod on n1.
    let p1 = labels(&[
        ("namespace", "s"),
        ("pod", "web-7d9f8-xk2p"),
        ("node", "n1"),
    ]);
    let p2 = labels(&[
        ("namespace", "s"),
        ("pod", "web-7d9f8-b4zq5"),
        ("node", "n2"),
    ]);
    c.observe(&anomaly(&a, 0, 20.0, 0.9, Reason::Spike));
    c.observe(&anomaly(&b, 1, 20.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2);
    let first = c.incidents()[0].id.clone();
    let second = c.incidents()[1].id.clone();
    c.observe(&anomaly(&p1, 2, 20.0, 0.9, Reason::Spike));
    c.observe(&anomaly(&p2, 2, 20.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 1);
    assert_eq!(c.incidents()[0].id, first);
    // A link to the merged incident (its alert, its Slack message) finds the survivor.
    assert_eq!(c.incidents()[0].absorbed, std::slice::from_ref(&second));
    assert_eq!(c.incident(&second).map(|i| &i.id), Some(&first));
    let ids: Vec<_> = c.incidents()[0]
        .members
        .iter()
        .map(|m| m.evidence_id.as_str())
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4"]);
    assert_eq!(c.counters().merges, 1);
}

#[test]
fn caps_bound_memory_and_are_counted() {
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig {
        max_open: 2,
        max_members: 3,
        ..CorrelatorConfig::default()
    });
    for i in 0..5 {
        let l = labels(&[("node", &format!("n{i}"))]);
        c.observe(&anomaly(&l, 0, 20.0, 0.9, Reason::Spike));
    }
    assert_eq!(c.incidents().len(), 2);
    assert_eq!(c.counters().refused_open_cap, 3);
    for i in 0..6 {
        let l = labels(&[("node", "n0"), ("pod", &format!("p{i}"))]);
        c.observe(&anomaly(&l, 1, 20.0, 0.9, Reason::Spike));
    }
    let inc = &c.incidents()[0];
    assert_eq!(inc.members.len(), 3);
    assert_eq!(inc.dropped_members, 4);
    assert_eq!(c.counters().refused_member_cap, 4);
}

/// A leaking pod: one memory anomaly at minute 0 (30 against 10 ± 2), then verdicts below the
/// threshold at `values` (one a minute from minute 1), then its latency anomalous at `later`.
fn leak(config: CorrelatorConfig, values: &[f64], later: i64) -> portent_incidents::Correlator {
    let memory = labels(&[
        ("__name__", "container_memory_working_set_bytes"),
        ("namespace", "shop"),
        ("pod", "api-7d9f8-xk2p"),
    ]);
    let latency = labels(&[
        ("__name__", "http_latency_p99"),
        ("namespace", "shop"),
        ("pod", "api-7d9f8-xk2p"),
    ]);
    let mut c = portent_incidents::Correlator::new(config);
    c.observe(&anomaly(&memory, 0, 30.0, 0.95, Reason::Drift));
    for (i, &v) in values.iter().enumerate() {
        c.observe_normal(&anomaly(&memory, i as i64 + 1, v, 0.1, Reason::Drift));
    }
    c.observe(&anomaly(&latency, later, 40.0, 0.9, Reason::Spike));
    c
}

#[test]
fn a_member_still_beyond_its_onset_band_keeps_the_incident_open_for_later_effects() {
    // Memory stays at 20 (above the band's 12 it left at minute 0) for an hour, scored as
    // ordinary by a detector that adapted; the pod's latency breaks at minute 60.
    let c = leak(CorrelatorConfig::default(), &[20.0; 60], 60);
    assert_eq!(c.incidents().len(), 1, "{:#?}", c.incidents());
    let inc = &c.incidents()[0];
    assert_eq!(inc.state, State::Firing);
    assert_eq!(inc.members.len(), 2);
    assert_eq!(inc.active_until, at(60));
    assert_eq!(inc.members[0].deviating_at, Some(at(60)));
    assert_eq!(c.counters().sustained, 60);

    // Without sustained deviation the memory incident resolved after ten quiet minutes and the
    // latency opened another.
    let off = CorrelatorConfig {
        sustain: Duration::ZERO,
        ..CorrelatorConfig::default()
    };
    let c = leak(off, &[20.0; 60], 60);
    assert_eq!(c.incidents().len(), 2);
    assert_eq!(c.incidents()[0].state, State::Resolved);
    assert_eq!(c.counters().sustained, 0);
}

#[test]
fn back_inside_the_band_the_incident_resolves_and_sustain_is_capped() {
    // Back at 11 (inside 8..12) from minute 1: nothing sustains it.
    let c = leak(CorrelatorConfig::default(), &[11.0; 60], 60);
    assert_eq!(c.incidents().len(), 2);
    let first = &c.incidents()[0];
    assert_eq!(first.resolved_at, Some(at(10)));
    assert_eq!(first.active_until, at(0));

    // Beyond the band for ever: active for at most `sustain` after the start, then resolved.
    let config = CorrelatorConfig {
        sustain: Duration::from_secs(30 * 60),
        ..CorrelatorConfig::default()
    };
    let c = leak(config, &[25.0; 120], 121);
    let first = &c.incidents()[0];
    assert_eq!(first.active_until, at(30));
    assert_eq!(first.resolved_at, Some(at(40)));
    assert_eq!(c.incidents().len(), 2, "the latency at 121 opens another");
}

#[test]
fn sustained_incidents_take_in_close_relatives_only() {
    // The memory incident is active at minute 60, but a pod of another workload in the same
    // namespace is linked to it only by the namespace: it opens its own incident, while an
    // anomaly that shares the pod joins.
    let memory = labels(&[("namespace", "shop"), ("pod", "api-7d9f8-xk2p")]);
    let other = labels(&[("namespace", "shop"), ("pod", "cart-5c6b7d8f9-2x4zq")]);
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&anomaly(&memory, 0, 30.0, 0.95, Reason::Drift));
    for min in 1..=60 {
        c.observe_normal(&anomaly(&memory, min, 20.0, 0.1, Reason::Drift));
    }
    c.observe(&anomaly(&other, 60, 40.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2);
    assert_eq!(c.incidents()[0].members.len(), 1);

    // Only members still beyond their band link: the pod's latency, back to normal since
    // minute 1, does not take in its node's anomaly an hour later, though they share the node
    // (the memory, still beyond, would take in what shares its pod: the test above).
    let latency = labels(&[
        ("namespace", "shop"),
        ("pod", "api-7d9f8-xk2p"),
        ("node", "n1"),
        ("__name__", "latency"),
    ]);
    let node = labels(&[("node", "n1")]);
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&anomaly(&memory, 0, 30.0, 0.95, Reason::Drift));
    c.observe(&anomaly(&latency, 0, 30.0, 0.95, Reason::Spike));
    for min in 1..=60 {
        c.observe_normal(&anomaly(&memory, min, 20.0, 0.1, Reason::Drift));
        c.observe_normal(&anomaly(&latency, min, 10.0, 0.1, Reason::Spike));
    }
    c.observe(&anomaly(&node, 60, 40.0, 0.9, Reason::LevelShift));
    let shown: Vec<Vec<String>> = c
        .incidents()
        .iter()
        .map(|i| i.members.iter().map(|m| m.labels.to_string()).collect())
        .collect();
    assert_eq!(c.incidents().len(), 2, "{shown:?}");
    assert_eq!(c.incidents()[0].members.len(), 2, "{shown:?}");
    assert_eq!(c.incidents()[1].members[0].labels, node);
    // A verdict of a series in no incident changes nothing.
    assert!(
        c.observe_normal(&anomaly(&unrelated(), 61, 99.0, 0.1, Reason::Spike))
            .is_none()
    );
}

#[test]
fn a_pod_burning_its_nodes_cpu_is_the_cause_not_the_node() {
    // The noisy neighbour: the pod's CPU and its node's rise in the same step, and a
    // co-tenant's latency follows. The node's usage is the sum of its pods': the pod leads.
    let node = labels(&[("__name__", "node_cpu_busy"), ("node", "n1")]);
    let noisy = labels(&[
        ("__name__", "container_cpu_usage_seconds_total"),
        ("namespace", "batch"),
        ("pod", "ingest-7d9f8-xk2p"),
        ("node", "n1"),
    ]);
    let victim = labels(&[
        ("__name__", "http_latency_p99"),
        ("namespace", "shop"),
        ("pod", "api-7d9f8-b4zq5"),
        ("node", "n1"),
    ]);
    let anomalies = vec![
        anomaly(&node, 0, 16.0, 0.95, Reason::LevelShift),
        anomaly(&noisy, 0, 30.0, 0.95, Reason::LevelShift),
        anomaly(&victim, 1, 30.0, 0.95, Reason::Spike),
    ];
    let c = run(CorrelatorConfig::default(), &anomalies);
    assert_eq!(c.incidents().len(), 1);
    let inc = &c.incidents()[0];
    let ranked = rank(inc);
    assert_eq!(
        inc.member(&ranked[0].evidence_id).unwrap().labels,
        noisy,
        "{ranked:#?}"
    );
    assert_eq!(
        ranked[0].direction_term, 1.0,
        "the pod reaches the node and the victim"
    );

    // Its own detector flagging the pod a minute after the node (a noisier series) changes
    // nothing: the pod's usage is part of the node's. Ten minutes later it is another story.
    for (lag, pod_leads) in [(1, true), (10, false)] {
        let mut late = anomalies.clone();
        late[1].scored.t = at(lag);
        late[2].scored.t = at(lag);
        late.sort_by_key(|a| a.scored.t);
        let c = run(CorrelatorConfig::default(), &late);
        let inc = &c.incidents()[0];
        let ranked = rank(inc);
        let top = &inc.member(&ranked[0].evidence_id).unwrap().labels;
        assert_eq!(top == &noisy, pod_leads, "lag {lag}: {ranked:#?}");
    }

    // Had the pod's CPU fallen while the node's rose, the node would lead as before.
    let mut fell = anomalies.clone();
    fell[1].scored.value = 2.0;
    let c = run(CorrelatorConfig::default(), &fell);
    let inc = &c.incidents()[0];
    let ranked = rank(inc);
    assert_eq!(
        inc.member(&ranked[0].evidence_id).unwrap().labels,
        node,
        "{ranked:#?}"
    );
}

#[test]
fn a_pods_application_series_join_its_nodes_incident_through_where_it_runs() {
    // The victims' latency names no node; their CPU series (below the threshold) say where they
    // run. The node's CPU is anomalous: each victim joins its incident. Two pods on one node
    // with no node anomaly stay apart.
    let cpu = |ns: &str, pod: &str| {
        labels(&[
            ("__name__", "container_cpu_usage_seconds_total"),
            ("namespace", ns),
            ("pod", pod),
            ("node", "n1"),
        ])
    };
    let latency = |ns: &str, pod: &str| {
        labels(&[
            ("__name__", "http_latency_p99"),
            ("namespace", ns),
            ("pod", pod),
        ])
    };
    let node = labels(&[("__name__", "node_cpu_busy"), ("node", "n1")]);
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    for (ns, pod) in [
        ("shop", "api-7d9f8-xk2p"),
        ("billing", "ledger-5c6b7d8f9-2x4zq"),
    ] {
        c.observe_normal(&anomaly(&cpu(ns, pod), 0, 10.0, 0.1, Reason::Spike));
    }
    c.observe(&anomaly(
        &latency("shop", "api-7d9f8-xk2p"),
        1,
        30.0,
        0.9,
        Reason::Spike,
    ));
    c.observe(&anomaly(
        &latency("billing", "ledger-5c6b7d8f9-2x4zq"),
        1,
        30.0,
        0.9,
        Reason::Spike,
    ));
    assert_eq!(
        c.incidents().len(),
        2,
        "sharing a node alone does not link two pods"
    );

    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    for (ns, pod) in [
        ("shop", "api-7d9f8-xk2p"),
        ("billing", "ledger-5c6b7d8f9-2x4zq"),
    ] {
        c.observe_normal(&anomaly(&cpu(ns, pod), 0, 10.0, 0.1, Reason::Spike));
    }
    c.observe(&anomaly(&node, 1, 30.0, 0.9, Reason::LevelShift));
    c.observe(&anomaly(
        &latency("shop", "api-7d9f8-xk2p"),
        2,
        30.0,
        0.9,
        Reason::Spike,
    ));
    c.observe(&anomaly(
        &latency("billing", "ledger-5c6b7d8f9-2x4zq"),
        2,
        30.0,
        0.9,
        Reason::Spike,
    ));
    assert_eq!(c.incidents().len(), 1, "{:#?}", c.incidents());
    assert_eq!(c.incidents()[0].members.len(), 3);
}

#[test]
fn a_flapping_series_reopens_its_incident_within_three_hours() {
    // The same series breaks at minutes 0, 50 and 250: its incident resolves at 10, is reopened
    // at 50 (40 minutes after resolving) and resolves at 60; at 250 (190 minutes) it is a new
    // one.
    let s = pods()[0].clone();
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    for min in [0, 50, 250] {
        c.observe(&anomaly(&s, min, 40.0, 0.9, Reason::SeasonalityBreak));
    }
    c.advance(at(300));
    let incs = c.incidents();
    assert_eq!(incs.len(), 2, "{incs:#?}");
    assert_eq!(incs[0].members[0].count, 2);
    assert_eq!(incs[0].resolved_at, Some(at(60)));
    assert_eq!(incs[0].fired_at, Some(at(2)));
    assert_eq!(c.counters().reopened, 1);
    // Another series of the same pod does not reopen it.
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&anomaly(&s, 0, 40.0, 0.9, Reason::Spike));
    c.observe(&anomaly(&pods()[1], 50, 40.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2);
    // Nor does anything with reopening off.
    let off = CorrelatorConfig {
        reopen_within: Duration::ZERO,
        ..CorrelatorConfig::default()
    };
    let mut c = portent_incidents::Correlator::new(off);
    c.observe(&anomaly(&s, 0, 40.0, 0.9, Reason::Spike));
    c.observe(&anomaly(&s, 50, 40.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2);
}

#[test]
fn a_sibling_pod_right_after_the_incident_resolved_reopens_it() {
    // api's pod xk2p breaks at minute 0: its incident resolves at 10. Its sibling b4zq5 (same
    // workload) breaks at 15, five minutes after: the same problem, reopened. At 35 instead,
    // 25 minutes after (more than twice the ten-minute gap), it is a new incident.
    let [xk2p, b4zq5] = [pods()[0].clone(), pods()[1].clone()];
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&anomaly(&xk2p, 0, 40.0, 0.9, Reason::Spike));
    c.advance(at(12));
    assert_eq!(c.incidents()[0].state, State::Resolved);
    c.observe(&anomaly(&b4zq5, 15, 40.0, 0.9, Reason::Spike));
    let incs = c.incidents();
    assert_eq!(incs.len(), 1, "{incs:#?}");
    assert_eq!(incs[0].state, State::Firing);
    assert_eq!(incs[0].resolved_at, None);
    assert_eq!(incs[0].members.len(), 2);
    assert_eq!(c.counters().reopened, 1);

    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&anomaly(&xk2p, 0, 40.0, 0.9, Reason::Spike));
    c.observe(&anomaly(&b4zq5, 35, 40.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2, "{:#?}", c.incidents());
    assert_eq!(c.counters().reopened, 0);

    // Another workload's pod on the same node five minutes after is not the same problem.
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&anomaly(&xk2p, 0, 40.0, 0.9, Reason::Spike));
    c.observe(&anomaly(&pods()[2], 15, 40.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2, "{:#?}", c.incidents());
}

#[test]
fn a_series_reopens_its_own_incident_rather_than_join_one_that_shares_only_the_namespace() {
    // api's pod breaks at 0 (resolved at 10); a cart pod on another node in the same
    // namespace at 12 opens its own incident; api's pod again at 15 reopens api's incident
    // instead of joining cart's through the namespace alone.
    let api = pods()[0].clone();
    let cart = labels(&[
        ("__name__", "http_latency_p99"),
        ("namespace", "shop"),
        ("pod", "cart-5c6b7d8f9-2x4zq"),
        ("node", "n2"),
    ]);
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&anomaly(&api, 0, 40.0, 0.9, Reason::Spike));
    c.observe(&anomaly(&cart, 12, 40.0, 0.9, Reason::Spike));
    assert_eq!(c.incidents().len(), 2);
    c.observe(&anomaly(&api, 15, 40.0, 0.9, Reason::Spike));
    let incs = c.incidents();
    assert_eq!(incs.len(), 2, "{incs:#?}");
    assert!(incs.iter().all(|i| i.members.len() == 1), "{incs:#?}");
    let own = incs.iter().find(|i| i.members[0].labels == api).unwrap();
    assert_eq!(own.state, State::Firing);
    assert_eq!(own.members[0].count, 2);
    assert_eq!(c.counters().reopened, 1);
    assert_eq!(c.counters().merges, 0);
}

#[test]
fn a_blip_linked_only_by_the_namespace_is_not_the_cause_however_early() {
    // A cart pod blips at minute 0; two minutes later frontend's errors and latency jump (a bad
    // rollout). All share the namespace, so they are one incident, but the blip explains
    // nothing: the frontend's series lead.
    let blip = labels(&[("namespace", "shop"), ("pod", "cart-5c6b7d8f9-2x4zq")]);
    let errors = labels(&[
        ("__name__", "errors"),
        ("namespace", "shop"),
        ("service", "frontend"),
    ]);
    let latency = labels(&[
        ("__name__", "p99"),
        ("namespace", "shop"),
        ("service", "frontend"),
    ]);
    let anomalies = vec![
        anomaly(&blip, 0, 13.0, 0.85, Reason::Volatility),
        anomaly(&errors, 2, 90.0, 0.99, Reason::LevelShift),
        anomaly(&latency, 2, 30.0, 0.95, Reason::LevelShift),
    ];
    let c = run(CorrelatorConfig::default(), &anomalies);
    assert_eq!(c.incidents().len(), 1);
    let inc = &c.incidents()[0];
    let ranked = rank(inc);
    assert_eq!(
        inc.member(&ranked[0].evidence_id).unwrap().labels,
        errors,
        "{ranked:#?}"
    );
    let last = ranked.last().unwrap();
    assert_eq!(inc.member(&last.evidence_id).unwrap().labels, blip);
    assert_eq!(last.onset_term, 0.0);
}

/// An hour of two pods of `api`'s ReplicaSet `api-7d9f8` at 1% errors; from minute 0 a pod of
/// the new ReplicaSet `api-5c6b7` at `new_errors` replaces one of them; from minute 1 the
/// service's error ratio is anomalous. Every verdict goes through `learn`, as the hub does:
/// placing a series on its first verdict only, and the service's series too (which names no
/// Deployment pod, so `learn` skips it after its first).
fn rollout(new_errors: f64, symptom: &str) -> portent_incidents::Correlator {
    let pod = |p: &str| {
        labels(&[
            ("__name__", "pod_error_ratio"),
            ("namespace", "shop"),
            ("pod", p),
            ("service", "api"),
        ])
    };
    let svc = labels(&[
        ("__name__", symptom),
        ("namespace", "shop"),
        ("service", "api"),
    ]);
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    for min in -60..=10 {
        let t = at(min);
        let wobble = 0.001 * (min.rem_euclid(3)) as f64;
        c.learn(
            &pod("api-7d9f8-xk2pq"),
            "error_ratio",
            t,
            0.01 + wobble,
            min == -60,
        );
        if min < 0 {
            c.learn(&pod("api-7d9f8-bcdfg"), "error_ratio", t, 0.01, min == -60);
        } else {
            c.learn(
                &pod("api-5c6b7-zzzzz"),
                "error_ratio",
                t,
                new_errors,
                min == 0,
            );
        }
        let service_value = if min >= 1 { 25.0 } else { 1.0 };
        c.learn(&svc, symptom, t, service_value, min == -60);
        if min >= 1 {
            let mut a = anomaly(&svc, min, 25.0, 0.95, Reason::LevelShift);
            a.query = symptom.trim_start_matches("service_").into();
            c.observe(&a);
        }
        c.advance(t);
    }
    c
}

#[test]
fn a_rollout_whose_pods_err_more_than_the_old_ones_is_named_as_the_services_cause() {
    let c = rollout(0.3, "service_error_ratio");
    let inc = &c.incidents()[0];
    let top = rank(inc)[0].clone();
    let m = inc.member(&top.evidence_id).unwrap();
    assert_eq!(m.model, portent_incidents::ROLLOUT_MODEL, "{inc:#?}");
    assert_eq!(m.labels.get("pod"), Some("api-5c6b7-zzzzz"));
    assert_eq!(m.level, Level::Pod);
    // It stands for the ReplicaSet since it appeared, before the service's first anomaly.
    assert_eq!(m.onset, at(0));
    assert!(m.peak.value > 0.29 && m.peak.yhat < 0.012, "{m:#?}");
    assert_eq!(c.counters().rollouts, 1);
    assert_eq!(inc.members.len(), 2, "named once: {inc:#?}");
}

#[test]
fn a_rollout_is_not_named_when_its_pods_look_like_the_old_ones_or_the_symptom_is_another() {
    for (errors, symptom) in [(0.011, "service_error_ratio"), (0.3, "service_p99_latency")] {
        let c = rollout(errors, symptom);
        let inc = &c.incidents()[0];
        assert_eq!(inc.members.len(), 1, "{errors} {symptom}: {inc:#?}");
        assert_eq!(c.counters().rollouts, 0);
    }
}

#[test]
fn the_explanation_says_a_rollout_is_the_likely_cause() {
    let c = rollout(0.3, "service_error_ratio");
    let pack = portent_incidents::EvidencePack::build(
        &c.incidents()[0],
        &CorrelatorConfig::default().topology,
        &portent_incidents::PackConfig::default(),
    );
    let text = pack.explain();
    let line = text
        .lines()
        .find(|l| l.starts_with("Most likely cause"))
        .unwrap();
    assert!(
        line.contains("api-5c6b7-zzzzz")
            && line.contains("a new ReplicaSet since")
            && line.contains("its pods' pod_error_ratio at 0.3 against 0.01"),
        "{text}"
    );
}

#[test]
fn a_multivariate_verdict_ranks_by_its_score_having_no_band_to_deviate_from() {
    // Pod a's row of metrics is unusual together (the daemon's multivariate model: join
    // labels only, no expected value); at the same minute its sibling's error ratio spikes
    // far outside its band with a lower score. Without a band the row's score is its strength.
    let a = labels(&[("namespace", "shop"), ("pod", "cart-5c6b7d8f9-2x4zq")]);
    let b = labels(&[
        ("__name__", "http_error_ratio"),
        ("namespace", "shop"),
        ("pod", "cart-5c6b7d8f9-9k3mn"),
    ]);
    let spike = anomaly(&b, 0, 30.0, 0.85, Reason::Spike);
    let c = run(
        CorrelatorConfig::default(),
        &[row(&a, 0, 0.71, 0.95), spike],
    );
    assert_eq!(c.incidents().len(), 1);
    let inc = &c.incidents()[0];
    let top = &rank(inc)[0];
    let m = inc.member(&top.evidence_id).unwrap();
    assert_eq!(m.labels, a, "{:?}", rank(inc));
    assert!((top.strength_term - 0.95).abs() < 1e-9);
}

/// A caller that does not place every verdict refreshes each series once in every
/// `PLACE_EVERY` minutes, whatever its step, and the series take turns.
#[test]
fn each_series_placement_is_due_once_in_every_place_every_minutes() {
    use portent_incidents::{PLACE_EVERY, place_due};
    let t0 = 1_800_000_000_000;
    let mut due_per_minute = vec![0usize; PLACE_EVERY as usize];
    for i in 0..2_000 {
        let labels = Labels::new([("pod", format!("api-{i}")), ("node", "n1".into())]).unwrap();
        // Every ten seconds for 64 minutes: the due minutes, and within each every verdict.
        let due: Vec<i64> = (0..PLACE_EVERY * 6)
            .filter(|k| place_due(&labels, Timestamp::from_millis(t0 + k * 10_000)))
            .map(|k| k / 6)
            .collect();
        assert_eq!(due.len(), 6, "{labels:?}: {due:?}");
        assert!(due.iter().all(|&m| m == due[0]), "{labels:?}: {due:?}");
        due_per_minute[due[0] as usize] += 1;
    }
    // 2,000 series over 64 minutes: about 31 a minute, none far from it.
    assert!(
        due_per_minute.iter().all(|&n| (10..=60).contains(&n)),
        "{due_per_minute:?}"
    );
}
