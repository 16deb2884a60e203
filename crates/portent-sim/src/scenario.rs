//! Incidents to inject, and the ground truth each leaves behind.

use std::fmt;

use portent_core::{Labels, Timestamp};
use serde::{Deserialize, Serialize};

/// What kind of incident a [`Scenario`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// The service's latency creeps up for hours (a slow dependency): CPU, errors and memory
    /// stay normal, so no static threshold fires.
    LatencyCreep,
    /// One container's working set grows linearly to 95% of its limit; at the end it is
    /// OOM-killed (one restart) and starts afresh.
    MemoryLeak,
    /// A rollout of a bad version: its pods answer 8% 5xx until a rollback at the end.
    BadRollout,
    /// One pod's container crashes shortly after each start, with Kubernetes' back-off
    /// (10 s doubling to 5 min): restarts climb, the pod flaps.
    Crashloop,
    /// One pod of the deployment (best without a CPU limit) burns its node's CPUs: the node
    /// saturates and the other pods on it slow down.
    NoisyNeighbour,
    /// The service's traffic falls to the level it has twelve hours later (at 03:00, the
    /// level of 15:00): within the series' overall range, abnormal for the hour.
    NightTrafficDrop,
    /// Memory (+8%) and latency (+12%) of one pod of the service rise a little together,
    /// traffic and CPU unchanged: each is within its normal range, only the pair is unusual.
    /// One replica, not all: a rise on every pod shows in the service's p99 (an aggregate over
    /// the pods, with less noise than any of them), which a univariate detector then flags.
    JointShift,
}

impl ScenarioKind {
    /// Every kind, in the order of the issue.
    pub const ALL: [ScenarioKind; 7] = [
        Self::LatencyCreep,
        Self::MemoryLeak,
        Self::BadRollout,
        Self::Crashloop,
        Self::NoisyNeighbour,
        Self::NightTrafficDrop,
        Self::JointShift,
    ];

    /// The snake_case name, as in the ground truth.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LatencyCreep => "latency_creep",
            Self::MemoryLeak => "memory_leak",
            Self::BadRollout => "bad_rollout",
            Self::Crashloop => "crashloop",
            Self::NoisyNeighbour => "noisy_neighbour",
            Self::NightTrafficDrop => "night_traffic_drop",
            Self::JointShift => "joint_shift",
        }
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An incident to inject: which kind, when, and which deployment (and service) it hits.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// A name for the ground truth, unique within a run.
    pub name: String,
    /// What happens.
    pub kind: ScenarioKind,
    /// When it begins.
    pub start: Timestamp,
    /// When it is over (the fix, the rollback, the OOM kill).
    pub end: Timestamp,
    /// Namespace of the target deployment.
    pub namespace: String,
    /// The target deployment (and its service). For [`ScenarioKind::NoisyNeighbour`], the
    /// deployment of the noisy pod.
    pub deployment: String,
}

impl Scenario {
    /// A scenario named after its kind.
    pub fn new(
        kind: ScenarioKind,
        start: Timestamp,
        end: Timestamp,
        namespace: &str,
        deployment: &str,
    ) -> Self {
        Self {
            name: kind.as_str().into(),
            kind,
            start,
            end,
            namespace: namespace.into(),
            deployment: deployment.into(),
        }
    }
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The default incident set for [`default_deployments`](crate::default_deployments), one of
/// each kind, after two clean days (warm-up) and before a clean weekend, for a run starting on
/// a Monday at 00:00 (such as [`DEFAULT_START`](crate::DEFAULT_START)). Only the incidents
/// that end within `days` days of `start` are returned.
///
/// | day, UTC          | scenario           | target                 |
/// |-------------------|--------------------|------------------------|
/// | Wed 03:00–04:00   | night_traffic_drop | batch/ingest           |
/// | Wed 09:00–15:00   | latency_creep      | shop/checkout          |
/// | Thu 01:00–11:00   | memory_leak        | payments/payments-api  |
/// | Thu 14:00–14:45   | bad_rollout        | shop/frontend          |
/// | Fri 10:00–11:00   | crashloop          | shop/catalog           |
/// | Fri 16:00–16:40   | noisy_neighbour    | batch/ingest           |
/// | Fri 21:30–24:00   | joint_shift        | shop/cart (one pod)    |
pub fn default_scenarios(start: Timestamp, days: u32) -> Vec<Scenario> {
    let at = |day: i64, hour: f64| start.add_millis(day * DAY_MS + (hour * HOUR_MS as f64) as i64);
    let all = [
        (
            ScenarioKind::NightTrafficDrop,
            2,
            3.0,
            4.0,
            "batch",
            "ingest",
        ),
        (ScenarioKind::LatencyCreep, 2, 9.0, 15.0, "shop", "checkout"),
        (
            ScenarioKind::MemoryLeak,
            3,
            1.0,
            11.0,
            "payments",
            "payments-api",
        ),
        (ScenarioKind::BadRollout, 3, 14.0, 14.75, "shop", "frontend"),
        (ScenarioKind::Crashloop, 4, 10.0, 11.0, "shop", "catalog"),
        (
            ScenarioKind::NoisyNeighbour,
            4,
            16.0,
            16.0 + 40.0 / 60.0,
            "batch",
            "ingest",
        ),
        (ScenarioKind::JointShift, 4, 21.5, 24.0, "shop", "cart"),
    ];
    let horizon = start.add_millis(i64::from(days) * DAY_MS);
    all.iter()
        .map(|&(kind, day, from, to, ns, dep)| {
            Scenario::new(kind, at(day, from), at(day, to), ns, dep)
        })
        .filter(|s| s.end <= horizon)
        .collect()
}

/// What an incident really did, recorded as it happened.
///
/// `cause` names the entity at fault; each of `affected` is a selector: a series is affected
/// when its labels include every pair of one selector ([`GroundTruth::affects`]). Selectors
/// carry `__name__` when only some metrics of the entity are affected.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// The scenario's name.
    pub scenario: String,
    /// Its kind.
    pub kind: ScenarioKind,
    /// When the effect began.
    pub start: Timestamp,
    /// When it was over (for a bad rollout: when the rollback replaced the last bad pod).
    pub end: Timestamp,
    /// The entity at fault, e.g. `{namespace="shop", pod="checkout-…"}`.
    pub cause: Labels,
    /// Selectors of the affected series.
    pub affected: Vec<Labels>,
}

impl GroundTruth {
    /// Whether the series `labels` is one this incident affected.
    pub fn affects(&self, labels: &Labels) -> bool {
        self.affected.iter().any(|sel| matches(sel, labels))
    }

    /// Whether `t` is within the incident, `[start, end)`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// Whether every pair of `selector` is in `labels`.
pub fn matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|l| labels.get(l.name) == Some(l.value))
}

/// [`GroundTruth`] as written to JSON: times in ms since the epoch, labels in Prometheus
/// notation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthRecord {
    /// The scenario's name.
    pub scenario: String,
    /// Its kind, snake_case.
    pub kind: ScenarioKind,
    /// Start, ms since the epoch.
    pub start: i64,
    /// End, ms since the epoch.
    pub end: i64,
    /// The cause, e.g. `{namespace="shop", service="checkout"}`.
    pub cause: String,
    /// Affected selectors, e.g. `http_requests_total{code="500", namespace="shop"}`.
    pub affected: Vec<String>,
}

impl From<&GroundTruth> for TruthRecord {
    fn from(g: &GroundTruth) -> Self {
        Self {
            scenario: g.scenario.clone(),
            kind: g.kind,
            start: g.start.millis(),
            end: g.end.millis(),
            cause: g.cause.to_string(),
            affected: g.affected.iter().map(ToString::to_string).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_START;

    #[test]
    fn default_set_has_every_kind_after_warm_up() {
        let all = default_scenarios(DEFAULT_START, 7);
        let kinds: Vec<_> = all.iter().map(|s| s.kind).collect();
        for k in ScenarioKind::ALL {
            assert!(kinds.contains(&k), "{k}");
        }
        let warm_up = DEFAULT_START.add_millis(2 * DAY_MS);
        assert!(all.iter().all(|s| s.start >= warm_up && s.end > s.start));
        assert_eq!(default_scenarios(DEFAULT_START, 2), vec![]);
        assert_eq!(default_scenarios(DEFAULT_START, 3).len(), 2);
    }

    #[test]
    fn selectors_match_subsets() {
        let sel = Labels::new([("namespace", "shop"), ("code", "500")]).unwrap();
        let series = Labels::new([("namespace", "shop"), ("code", "500"), ("pod", "p")]).unwrap();
        let other = Labels::new([("namespace", "shop"), ("code", "200")]).unwrap();
        assert!(matches(&sel, &series));
        assert!(!matches(&sel, &other));
    }
}
