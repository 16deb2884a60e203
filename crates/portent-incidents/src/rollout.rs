//! Rollouts: which ReplicaSet of each workload is new, and whether its pods look worse than
//! the previous one's.
//!
//! A bad rollout is the commonest cause of a service going wrong, and the hardest for
//! per-series models to name: the new ReplicaSet's pods have no history, so their detectors
//! learn the broken behaviour as their normal from the first sample, and only the service's
//! series (which have history) are ever anomalous. What does show it is a comparison no
//! per-series model makes: the new pods against the old pods of the same workload, at the same
//! time, on the same query.
//!
//! [`Rollouts`] learns from every verdict that names a Deployment pod (`api-7d9f8-xk2p`: the
//! ReplicaSet `api-7d9f8` of the workload `api`, see
//! [`workload_of_pod`](crate::topology::workload_of_pod)) the ReplicaSets of each workload,
//! when each was first seen, and per query an exponentially weighted mean and
//! spread of its pods' values. [`Rollouts::suspect`] then answers, for an anomaly on a workload
//! or service: did a ReplicaSet of that workload appear shortly before, replacing one portent
//! saw earlier, whose pods are off on a query of the same kind (errors, latency, restarts, CPU,
//! memory; not request rates, which follow the number of pods) in the anomaly's direction, by
//! more than three spreads (of the old pods' values or the new ones', the wider) and a fifth of
//! the old mean? The [`Correlator`](crate::Correlator) adds such a ReplicaSet to the incident as a
//! member of model [`ROLLOUT_MODEL`]; ranking then puts it first on its own merits: it moved
//! first, and a pod sits upstream of its service.
//!
//! What it cannot see: a rollout whose pods have no series of the symptom's kind (only
//! service-level queries for errors, say), and workloads whose pod names carry no
//! pod-template hash (StatefulSets, DaemonSets).

use portent_core::{Labels, Timestamp};

use crate::topology::{Map, TopologyConfig, nonempty, replicaset_of_pod};

/// The model alias of a member that stands for a suspect rollout.
pub const ROLLOUT_MODEL: &str = "rollout";

/// How long before an anomaly a ReplicaSet may have appeared and still be suspected.
const WINDOW_MS: i64 = 30 * 60_000;
/// How long a workload must have been seen before a new ReplicaSet of it counts as a rollout:
/// when portent starts, every ReplicaSet running is new to it.
const SETTLE_MS: i64 = 15 * 60_000;
/// ReplicaSets kept per workload: the current one, the one it replaced, one before.
const SETS_PER_WORKLOAD: usize = 3;
/// Series (query and metric name) tracked per ReplicaSet.
const QUERIES_PER_SET: usize = 32;
/// Workloads remembered; beyond it those not seen for a day are forgotten.
const MAX_WORKLOADS: usize = 100_000;
const MEMORY_MS: i64 = 86_400_000;
/// Weight of a new value in the running mean and spread once a query has this many values:
/// about the last twenty values of the ReplicaSet's pods.
const ALPHA: f64 = 0.05;
/// Values a ReplicaSet needs on a query before it is compared.
const MIN_VALUES: u64 = 3;

/// What a query measures, so a pod query and a service query can be matched: the pod's
/// `pod_error_ratio` and the service's `error_ratio` are both errors.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Errors,
    Latency,
    Restarts,
    Cpu,
    Memory,
    Traffic,
}

impl Kind {
    fn of(name: &str, query: &str) -> Option<Self> {
        let text = format!("{name} {query}").to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        // Most specific first: `http_requests_total{code="5xx"}` error ratios name requests
        // too, and latency histograms name request durations.
        if has(&["error", "5xx", "fail"]) {
            Some(Self::Errors)
        } else if has(&[
            "latency", "duration", "p99", "p95", "p90", "p50", "quantile",
        ]) {
            Some(Self::Latency)
        } else if has(&["restart", "oom"]) {
            Some(Self::Restarts)
        } else if has(&["cpu"]) {
            Some(Self::Cpu)
        } else if has(&["memory", "mem_", "working_set"]) {
            Some(Self::Memory)
        } else if has(&["request", "traffic", "rps", "qps", "throughput"]) {
            Some(Self::Traffic)
        } else {
            None
        }
    }
}

/// One series of one query (by metric name: a query may return several) over one
/// ReplicaSet's pods.
#[derive(Clone, Debug)]
struct Values {
    query: String,
    name: String,
    kind: Option<Kind>,
    mean: f64,
    var: f64,
    n: u64,
    /// A series of it, to stand for the ReplicaSet in an incident.
    example: Labels,
}

impl Values {
    fn push(&mut self, v: f64) {
        self.n += 1;
        // The plain mean and variance at first, then exponentially weighted.
        let a = (1.0 / self.n as f64).max(ALPHA);
        let d = v - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }

    fn spread(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

#[derive(Clone, Debug)]
struct ReplicaSet {
    name: String,
    first_seen: Timestamp,
    last_seen: Timestamp,
    queries: Vec<Values>,
}

#[derive(Clone, Debug)]
struct Workload {
    first_seen: Timestamp,
    last_seen: Timestamp,
    sets: Vec<ReplicaSet>,
}

/// A new ReplicaSet whose pods look worse than its predecessor's: see [`Rollouts::suspect`].
#[derive(Clone, Debug, PartialEq)]
pub struct Suspect {
    /// The new ReplicaSet, e.g. `api-7d9f8`.
    pub replicaset: String,
    /// When portent first saw one of its pods.
    pub since: Timestamp,
    /// The query it is off on.
    pub query: String,
    /// One of its pods' series of that query.
    pub example: Labels,
    /// The new pods' mean on it.
    pub value: f64,
    /// The previous ReplicaSet's pods' mean.
    pub previous: f64,
    /// The previous pods' spread (standard deviation) around it.
    pub previous_spread: f64,
}

impl Suspect {
    /// The band the previous ReplicaSet's pods were in, as an incident shows it: their mean
    /// ± the larger of three of their spreads and a fifth of their mean. (Being suspected took
    /// more: the same, with the new pods' spread too when it is the wider.)
    pub fn previous_band(&self) -> (f64, f64) {
        let margin = (3.0 * self.previous_spread).max(0.2 * self.previous.abs());
        (self.previous - margin, self.previous + margin)
    }
}

/// The ReplicaSets of every workload seen in verdicts; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Rollouts {
    /// namespace → workload → its ReplicaSets: nested so a lookup borrows the label values
    /// and a verdict of a known pod and query allocates nothing.
    by_namespace: Map<String, Map<String, Workload>>,
    workloads: usize,
}

impl Rollouts {
    /// Learns from one verdict: `labels` (of query `query`) had `value` at `t`. Verdicts of
    /// series that name no Deployment pod, and non-finite values, teach nothing.
    pub fn learn(
        &mut self,
        topology: &TopologyConfig,
        labels: &Labels,
        query: &str,
        t: Timestamp,
        value: f64,
    ) {
        let [pod, ns, name] =
            labels.get_many([&topology.pod, &topology.namespace, Labels::METRIC_NAME]);
        self.learn_read(labels, pod, ns, name, query, t, value);
    }

    /// [`Self::learn`] with the labels' values already read: `pod`, `ns` (namespace) and
    /// `name` (`__name__`). Empty values count as missing. Returns whether the series names a
    /// Deployment pod: one that does not never will (its labels do not change), so a caller
    /// may skip its later verdicts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn learn_read(
        &mut self,
        labels: &Labels,
        pod: Option<&str>,
        ns: Option<&str>,
        name: Option<&str>,
        query: &str,
        t: Timestamp,
        value: f64,
    ) -> bool {
        let Some((workload, set)) = nonempty(pod).and_then(replicaset_of_pod) else {
            return false;
        };
        let ns = nonempty(ns).unwrap_or("");
        if self.workloads >= MAX_WORKLOADS {
            self.forget_before(t.add_millis(-MEMORY_MS));
        }
        let ws = match self.by_namespace.get_mut(ns) {
            Some(ws) => ws,
            None => self.by_namespace.entry(ns.to_owned()).or_default(),
        };
        let w = match ws.get_mut(workload) {
            Some(w) => w,
            None if self.workloads < MAX_WORKLOADS => {
                self.workloads += 1;
                ws.entry(workload.to_owned()).or_insert(Workload {
                    first_seen: t,
                    last_seen: t,
                    sets: Vec::new(),
                })
            }
            None => return true,
        };
        w.last_seen = w.last_seen.max(t);
        let i = match w.sets.iter().position(|s| s.name == set) {
            Some(i) => i,
            None => {
                if w.sets.len() >= SETS_PER_WORKLOAD
                    && let Some(stalest) = (0..w.sets.len()).min_by_key(|&i| w.sets[i].last_seen)
                {
                    w.sets.remove(stalest);
                }
                w.sets.push(ReplicaSet {
                    name: set.to_owned(),
                    first_seen: t,
                    last_seen: t,
                    queries: Vec::new(),
                });
                w.sets.len() - 1
            }
        };
        let rs = &mut w.sets[i];
        rs.last_seen = rs.last_seen.max(t);
        if !value.is_finite() {
            return true;
        }
        let name = name.unwrap_or_default();
        let values = match rs
            .queries
            .iter()
            .position(|q| q.query == query && q.name == name)
        {
            Some(q) => &mut rs.queries[q],
            None if rs.queries.len() < QUERIES_PER_SET => {
                rs.queries.push(Values {
                    query: query.to_owned(),
                    name: name.to_owned(),
                    kind: Kind::of(name, query),
                    mean: 0.0,
                    var: 0.0,
                    n: 0,
                    example: labels.clone(),
                });
                let last = rs.queries.len() - 1;
                &mut rs.queries[last]
            }
            None => return true,
        };
        values.push(value);
        true
    }

    /// The rollout of workload `workload` in namespace `ns` that best explains an anomaly with
    /// onset `t` of a series named `name` of query `query`, whose value went `above` (or below)
    /// its expectation: a ReplicaSet first seen at most 30 minutes before `t`, at least 15 after
    /// portent first saw the workload, after another ReplicaSet of it, whose pods' mean on a
    /// query of the same kind is beyond the previous ReplicaSet's, on that side, by more than
    /// three spreads (the wider of the two ReplicaSets') and a fifth of the previous mean. The
    /// biggest such gap wins.
    pub fn suspect(
        &self,
        ns: &str,
        workload: &str,
        name: &str,
        query: &str,
        t: Timestamp,
        above: bool,
    ) -> Option<Suspect> {
        // A pod's share of its service's traffic depends on how many pods run (a rollout
        // surges one more), not on its version: request rates are no evidence either way.
        let kind = Kind::of(name, query).filter(|k| *k != Kind::Traffic)?;
        let w = self.by_namespace.get(ns)?.get(workload)?;
        let mut best: Option<(f64, Suspect)> = None;
        for new in &w.sets {
            let age = t.millis_since(new.first_seen);
            if !(0..=WINDOW_MS).contains(&age)
                || new.first_seen.millis_since(w.first_seen) < SETTLE_MS
            {
                continue;
            }
            // The one it replaced: the latest other ReplicaSet seen before it appeared.
            let Some(old) = w
                .sets
                .iter()
                .filter(|s| s.name != new.name && s.first_seen < new.first_seen)
                .max_by_key(|s| s.first_seen)
            else {
                continue;
            };
            for nv in new
                .queries
                .iter()
                .filter(|q| q.kind == Some(kind) && q.n >= MIN_VALUES)
            {
                let Some(ov) = old
                    .queries
                    .iter()
                    .find(|q| q.query == nv.query && q.name == nv.name && q.n >= MIN_VALUES)
                else {
                    continue;
                };
                let gap = if above {
                    nv.mean - ov.mean
                } else {
                    ov.mean - nv.mean
                };
                let margin = (3.0 * ov.spread().max(nv.spread()))
                    .max(0.2 * ov.mean.abs())
                    .max(1e-12);
                if gap > margin && best.as_ref().is_none_or(|(g, _)| gap / margin > *g) {
                    best = Some((
                        gap / margin,
                        Suspect {
                            replicaset: new.name.clone(),
                            since: new.first_seen,
                            query: nv.query.clone(),
                            example: nv.example.clone(),
                            value: nv.mean,
                            previous: ov.mean,
                            previous_spread: ov.spread(),
                        },
                    ));
                }
            }
        }
        best.map(|(_, s)| s)
    }

    fn forget_before(&mut self, cutoff: Timestamp) {
        for ws in self.by_namespace.values_mut() {
            ws.retain(|_, w| w.last_seen >= cutoff);
        }
        self.by_namespace.retain(|_, ws| !ws.is_empty());
        self.workloads = self.by_namespace.values().map(Map::len).sum();
    }

    /// How many workloads are remembered.
    pub fn len(&self) -> usize {
        self.workloads
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.workloads == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIN: i64 = 60_000;

    fn at(m: i64) -> Timestamp {
        Timestamp::from_millis(m * MIN)
    }

    fn pod(p: &str) -> Labels {
        Labels::new([
            ("__name__", "pod_error_ratio"),
            ("namespace", "shop"),
            ("pod", p),
        ])
        .unwrap()
    }

    /// Two old pods at 1% errors for an hour, then from minute 60 a new ReplicaSet's pod at
    /// `bad` (and an old one still at 1%).
    fn rollout(bad: f64) -> Rollouts {
        let topo = TopologyConfig::default();
        let mut r = Rollouts::default();
        for m in 0..75 {
            let jitter = 0.001 * (m % 3) as f64;
            r.learn(
                &topo,
                &pod("api-7d9f8-xk2pq"),
                "error_ratio",
                at(m),
                0.01 + jitter,
            );
            if m < 60 {
                r.learn(&topo, &pod("api-7d9f8-bcdfg"), "error_ratio", at(m), 0.01);
            } else {
                r.learn(&topo, &pod("api-5c6b7-zzzzz"), "error_ratio", at(m), bad);
            }
        }
        r
    }

    #[test]
    fn a_new_replicaset_worse_than_the_old_is_suspected_on_the_same_kind_and_side() {
        let r = rollout(0.3);
        let s = r
            .suspect(
                "shop",
                "api",
                "service_error_ratio",
                "error_ratio",
                at(70),
                true,
            )
            .unwrap();
        assert_eq!(s.replicaset, "api-5c6b7");
        assert_eq!(s.since, at(60));
        assert_eq!(s.example.get("pod"), Some("api-5c6b7-zzzzz"));
        assert!((s.value - 0.3).abs() < 1e-9 && (s.previous - 0.011).abs() < 0.002);
        // Not on the other side, nor for another kind of symptom, nor too long after.
        assert!(
            r.suspect("shop", "api", "x", "error_ratio", at(70), false)
                .is_none()
        );
        assert!(
            r.suspect("shop", "api", "x", "p99_latency", at(70), true)
                .is_none()
        );
        assert!(
            r.suspect("shop", "api", "x", "error_ratio", at(91), true)
                .is_none()
        );
        assert!(
            r.suspect("shop", "web", "x", "error_ratio", at(70), true)
                .is_none()
        );
    }

    #[test]
    fn a_new_replicaset_like_the_old_one_is_not_suspected() {
        let r = rollout(0.011);
        assert!(
            r.suspect("shop", "api", "x", "error_ratio", at(70), true)
                .is_none()
        );
    }

    #[test]
    fn replicasets_running_when_portent_starts_are_not_rollouts() {
        // Both ReplicaSets seen from the first minute (a rollout in progress at start-up).
        let topo = TopologyConfig::default();
        let mut r = Rollouts::default();
        for m in 0..10 {
            r.learn(&topo, &pod("api-7d9f8-xk2pq"), "error_ratio", at(m), 0.01);
            r.learn(&topo, &pod("api-5c6b7-zzzzz"), "error_ratio", at(m), 0.3);
        }
        assert!(
            r.suspect("shop", "api", "x", "errors", at(9), true)
                .is_none()
        );
        // StatefulSet pods name no ReplicaSet.
        r.learn(&topo, &pod("db-0"), "error_ratio", at(1), 0.3);
        assert_eq!(r.len(), 1);
    }
}
