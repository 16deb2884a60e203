//! Incidents on the simulated cluster: the univariate verdicts at or above the alerting
//! threshold, and each pod's combined multivariate verdicts (labelled `namespace, pod`, model
//! `pod_health`, as the daemon's multivariate model gives them), go through [`Correlator`] in
//! time order, as the daemon feeds it (every verdict of a
//! step observed, then the clock advanced to the step), and each scenario is checked against the
//! incidents that result.
//!
//! # The series the correlator sees
//!
//! Each derived series is an anomaly of the series a PromQL query would return: the labels of
//! its first source series without the per-sample dimensions an aggregation sums away (`code`,
//! `le`, `method`, `mode`, `cpu`, `resource`, `unit`), and `__name__` set to the entity kind and
//! series name (`pod_cpu`, `service_p99_latency`, `node_cpu`). So a pod's CPU carries
//! `namespace, pod, container, node`, its request series `namespace, pod, service`, a service's
//! `namespace, service` and a node's `instance, node`: the topology the correlator groups by.
//!
//! # What is measured
//!
//! * **Related incidents.** An incident is related to a scenario when its span
//!   `[started_at, last anomaly]` overlaps the scenario's `[start, end + grace)` and one of its
//!   members is an affected series ([`GroundTruth::affects`] on any of its sources) or a series
//!   of the cause entity (below). `incidents` counts them; `one_incident` is exactly one.
//!   Incidents that never fired (pending, then quiet) are not incidents: Prometheus drops a
//!   pending alert the same way.
//! * **The cause on top.** `top_cause_correct` holds when the top-ranked candidate
//!   ([`rank`]) of the earliest related incident is a series of the **cause entity**: every pair
//!   of the ground truth's `cause` selector is among the entity's labels. An entity's labels are
//!   the topology labels (`namespace, pod, container, service, node, instance`) of all its series'
//!   sources, and for a pod its ReplicaSet (`replicaset`: the pod name without its suffix, the
//!   `kube_pod_owner` join). So a service cause (`{namespace, service}`: latency creep, night
//!   traffic drop) is matched by the service's series or a pod of that service; a pod cause
//!   (`{namespace, pod, container}`: memory leak, crashloop, noisy neighbour, joint shift) only
//!   by that pod's series, not by its node or its service; a bad rollout's cause
//!   (`{namespace, replicaset}`) by a pod of the bad ReplicaSet.
//! * **False incidents.** Incidents that started after the warm-up and are related to no
//!   scenario, per simulated day after the warm-up.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use portent_core::{Labels, Scored};
use portent_incidents::{Anomaly, Correlator, CorrelatorConfig, Incident, ROLLOUT_MODEL, rank};
use portent_sim::matches;
use portent_sim::{GroundTruth, ScenarioKind};
use serde::Serialize;

use super::{DAY_MS, Derived, Path, SimEvalConfig, Track};

/// Labels a query's aggregation removes: per-sample dimensions, not topology.
const DIMENSIONS: [&str; 8] = [
    "__name__", "code", "le", "method", "mode", "cpu", "resource", "unit",
];
/// Labels that name an entity's objects.
const TOPOLOGY: [&str; 6] = [
    "namespace",
    "pod",
    "container",
    "service",
    "node",
    "instance",
];

/// How one scenario came out as incidents.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScenarioIncidents {
    /// Incidents related to the scenario (see the module docs).
    pub incidents: usize,
    /// Exactly one.
    pub one_incident: bool,
    /// The earliest related incident's top candidate is a series of the cause entity.
    pub top_cause_correct: bool,
    /// That candidate, e.g. `pod shop/cart-…: memory`.
    pub top_candidate: Option<String>,
    /// Series in the earliest related incident.
    pub incident_series: usize,
    /// The other scenarios that incident is related to: one incident for two problems hours
    /// apart is a snowball, not a grouping.
    pub shared_with: Vec<String>,
}

/// Every scenario's incidents, and the incidents outside every scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct IncidentEval {
    pub(super) scenarios: Vec<ScenarioIncidents>,
    pub(super) false_incidents: usize,
    pub(super) days_after_warm_up: f64,
    /// Incidents naming a rollout as a suspect, and of those, the ones not of a bad rollout.
    pub(super) rollouts_named: (usize, usize),
}

/// The label set a query would return for series `i`.
fn query_labels(d: &Derived, i: usize) -> Labels {
    let s = &d.series[i];
    let kind = d.entities[s.entity]
        .name
        .split_once(' ')
        .map_or("entity", |(k, _)| k);
    let name = format!("{kind}_{}", s.name);
    let kept: Vec<(&str, &str)> = s
        .sources
        .first()
        .map(|l| {
            l.iter()
                .filter(|l| !DIMENSIONS.contains(&l.name))
                .map(|l| (l.name, l.value))
                .collect()
        })
        .unwrap_or_default();
    Labels::new(kept.into_iter().chain([("__name__", name.as_str())]))
        .unwrap_or_else(|_| Labels::default())
}

/// The labels of every entity: see "The cause on top" in the module docs.
fn entity_labels(d: &Derived) -> Vec<Labels> {
    let mut pairs: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); d.entities.len()];
    for s in &d.series {
        for l in s.sources.iter().flat_map(Labels::iter) {
            if TOPOLOGY.contains(&l.name) {
                pairs[s.entity]
                    .entry(l.name.to_string())
                    .or_insert_with(|| l.value.to_string());
            }
        }
    }
    for (e, p) in d.entities.iter().zip(&mut pairs) {
        if e.deployment.is_some()
            && let Some(rs) = p
                .get("pod")
                .and_then(|pod| pod.rsplit_once('-'))
                .map(|x| x.0)
        {
            p.insert("replicaset".into(), rs.to_string());
        }
    }
    pairs
        .into_iter()
        .map(|p| Labels::new(p).unwrap_or_default())
        .collect()
}

/// What a correlator member stands for: a derived series, or a pod's multivariate row.
struct Origin {
    entity: usize,
    /// The series' name, or the multivariate model's.
    name: String,
    /// The raw series it was derived from.
    sources: Vec<Labels>,
}

/// The alias the daemon's multivariate model has in the demo and the Kubernetes example.
const ROW_MODEL: &str = "pod_health";

/// The labels a multivariate verdict carries: the pod's `namespace` and `pod` (its `join_on`).
fn row_labels(t: &Track) -> Option<Labels> {
    let l = t.sources.iter().find(|l| l.get("pod").is_some())?;
    Labels::new([("namespace", l.get("namespace")?), ("pod", l.get("pod")?)]).ok()
}

/// Feeds the univariate verdicts of `tracks`, and the combined multivariate verdicts of each
/// pod (as the daemon's `pod_health` model gives them), to a correlator, step by step; returns
/// the incidents kept (all of them: nothing resolved is dropped within the run), what each
/// member is, and which origin each member's labels name.
fn correlate(
    config: &SimEvalConfig,
    d: &Derived,
    tracks: &[Track],
) -> (Vec<Incident>, Vec<Origin>, HashMap<Labels, usize>) {
    let index: HashMap<(usize, &str), usize> = d
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.entity, s.name), i))
        .collect();
    let mut origins: Vec<Origin> = d
        .series
        .iter()
        .map(|s| Origin {
            entity: s.entity,
            name: s.name.to_string(),
            sources: s.sources.clone(),
        })
        .collect();
    let mut by_labels = HashMap::new();
    let mut labels_of: HashMap<usize, Labels> = HashMap::new();
    let mut events: Vec<(usize, usize, Scored)> = Vec::new();
    for t in tracks {
        let (o, labels) = match t.path {
            Path::Univariate => {
                let Some(&i) = index.get(&(t.entity, t.name.as_str())) else {
                    continue;
                };
                let labels = query_labels(d, i);
                labels_of.insert(i, labels.clone());
                (i, labels)
            }
            Path::Combined if !t.verdicts.is_empty() => {
                let Some(labels) = row_labels(t) else {
                    continue;
                };
                origins.push(Origin {
                    entity: t.entity,
                    name: "combination".into(),
                    sources: t.sources.clone(),
                });
                (origins.len() - 1, labels)
            }
            _ => continue,
        };
        by_labels.insert(labels, o);
        events.extend(t.verdicts.iter().map(|&(step, sc)| (step, o, sc)));
    }
    let member_labels: HashMap<usize, Labels> =
        by_labels.iter().map(|(l, &o)| (o, l.clone())).collect();
    events.sort_by_key(|&(step, i, _)| (step, i));
    let run_ms = d.steps as i64 * d.step_ms;
    let mut c = Correlator::new(CorrelatorConfig {
        min_score: config.threshold,
        retention: Duration::from_millis(run_ms.max(0) as u64) + Duration::from_secs(86_400),
        max_resolved: usize::MAX,
        ..CorrelatorConfig::default()
    });
    let anomaly = |o: usize, labels: &Labels, scored: Scored| {
        let row = o >= d.series.len();
        Anomaly {
            labels: labels.clone(),
            query: if row {
                ROW_MODEL.into()
            } else {
                origins[o].name.clone()
            },
            model: if row { ROW_MODEL } else { "default" }.into(),
            scored,
        }
    };
    let mut next = 0;
    let mut high = Vec::new();
    for step in 0..d.steps {
        let t = d.start.add_millis(step as i64 * d.step_ms);
        // Every verdict, as the hub learns from them: where each pod runs, and what each
        // ReplicaSet's pods show (a bad rollout's new pods against the old ones).
        for (&i, labels) in &labels_of {
            let v = d.series[i].at(step);
            if d.series[i].first <= step && v.is_finite() {
                c.learn(labels, d.series[i].name, t, v, true);
            }
        }
        high.clear();
        while let Some(&(s, o, scored)) = events.get(next)
            && s == step
        {
            if let Some(labels) = member_labels.get(&o) {
                c.observe(&anomaly(o, labels, scored));
                high.push(o);
            }
            next += 1;
        }
        // The rest of the step's verdicts while an incident is open: a member still outside
        // its onset band keeps its incident active (the daemon hands over only the members'
        // verdicts, `Correlator::open_members`; the correlator passes over the others).
        if c.wants_normal() {
            for (&i, labels) in &labels_of {
                let v = d.series[i].at(step);
                if v.is_finite() && !high.contains(&i) {
                    c.observe_normal(&anomaly(i, labels, Scored::unknown(t, v)));
                }
            }
        }
        c.advance(t);
    }
    (c.incidents().to_vec(), origins, by_labels)
}

/// Runs the correlator over the univariate verdicts and scores every scenario's incidents.
pub(super) fn evaluate(config: &SimEvalConfig, d: &Derived, tracks: &[Track]) -> IncidentEval {
    let (incidents, origins, origin_of) = correlate(config, d, tracks);
    let entities = entity_labels(d);
    let origin_of_member = |labels: &Labels| origin_of.get(labels).map(|&o| &origins[o]);
    let related = |g: &GroundTruth, inc: &Incident| -> bool {
        let to = g.end.add_millis(config.grace_ms);
        inc.started_at < to
            && inc.last_anomaly_at >= g.start
            && inc.members.iter().any(|m| {
                origin_of_member(&m.labels).is_some_and(|o| {
                    o.sources.iter().any(|l| g.affects(l)) || matches(&g.cause, &entities[o.entity])
                })
            })
    };
    // Each scenario's related incidents, earliest first.
    let mine_all: Vec<Vec<&Incident>> = d
        .truth
        .iter()
        .map(|g| {
            let mut mine: Vec<&Incident> = incidents.iter().filter(|i| related(g, i)).collect();
            mine.sort_by_key(|i| i.started_at);
            mine
        })
        .collect();
    let scenarios = d
        .truth
        .iter()
        .zip(&mine_all)
        .enumerate()
        .map(|(n, (g, mine))| {
            let shared_with = mine.first().map_or_else(Vec::new, |first| {
                d.truth
                    .iter()
                    .zip(&mine_all)
                    .enumerate()
                    .filter(|&(k, (_, theirs))| k != n && theirs.iter().any(|i| i.id == first.id))
                    .map(|(_, (h, _))| h.kind.as_str().to_string())
                    .collect()
            });
            let top = mine.first().and_then(|inc| {
                let c = rank(inc).into_iter().next()?;
                let m = inc.member(&c.evidence_id)?;
                origin_of_member(&m.labels)
            });
            ScenarioIncidents {
                incidents: mine.len(),
                one_incident: mine.len() == 1,
                top_cause_correct: top.is_some_and(|o| matches(&g.cause, &entities[o.entity])),
                top_candidate: top.map(|o| format!("{}: {}", d.entities[o.entity].name, o.name)),
                incident_series: mine.first().map_or(0, |i| i.members.len()),
                shared_with,
            }
        })
        .collect();
    let warm_up = d.start.add_millis(config.warm_up_ms);
    let false_incidents = incidents
        .iter()
        .filter(|i| i.started_at >= warm_up && !d.truth.iter().any(|g| related(g, i)))
        .count();
    let after = (d.steps as i64 * d.step_ms - config.warm_up_ms).max(0);
    let naming: Vec<&Incident> = incidents
        .iter()
        .filter(|i| i.members.iter().any(|m| m.model == ROLLOUT_MODEL))
        .collect();
    let wrongly = naming
        .iter()
        .filter(|i| {
            !d.truth
                .iter()
                .any(|g| g.kind == ScenarioKind::BadRollout && related(g, i))
        })
        .count();
    IncidentEval {
        rollouts_named: (naming.len(), wrongly),
        scenarios,
        false_incidents,
        days_after_warm_up: after as f64 / DAY_MS as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Entity, Series};

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn query_labels_drop_dimensions_and_entities_carry_their_replicaset() {
        let d = Derived {
            entities: vec![Entity {
                name: "pod shop/api-7d9f8bcd4-xk2pq".into(),
                deployment: Some(("shop".into(), "api".into())),
                first: 0,
                end: 1,
            }],
            series: vec![Series {
                entity: 0,
                name: "error_ratio",
                sources: vec![l(&[
                    ("__name__", "http_requests_total"),
                    ("namespace", "shop"),
                    ("pod", "api-7d9f8bcd4-xk2pq"),
                    ("service", "api"),
                    ("code", "500"),
                    ("method", "GET"),
                ])],
                first: 0,
                values: vec![0.1],
            }],
            ..Derived::default()
        };
        assert_eq!(
            query_labels(&d, 0),
            l(&[
                ("__name__", "pod_error_ratio"),
                ("namespace", "shop"),
                ("pod", "api-7d9f8bcd4-xk2pq"),
                ("service", "api"),
            ])
        );
        let e = &entity_labels(&d)[0];
        assert_eq!(e.get("replicaset"), Some("api-7d9f8bcd4"));
        // A bad rollout's cause, a service cause and another pod's cause.
        assert!(matches(
            &l(&[("namespace", "shop"), ("replicaset", "api-7d9f8bcd4")]),
            e
        ));
        assert!(matches(&l(&[("namespace", "shop"), ("service", "api")]), e));
        assert!(!matches(
            &l(&[("namespace", "shop"), ("pod", "api-other")]),
            e
        ));
    }
}
