//! Seeded scenarios shared by the tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use portent_core::{Labels, Reason, Score, Scored, Timestamp};
use portent_incidents::{Anomaly, Correlator, CorrelatorConfig};

/// 2027-01-15T08:00:00Z, the scenarios' start.
pub const T0: i64 = 1_800_000_000;

pub fn at(min: i64) -> Timestamp {
    Timestamp::from_secs(T0 + 60 * min)
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().copied()).unwrap()
}

/// An anomaly on `labels` at minute `min`: value `value` against an expected 10 ± 2.
pub fn anomaly(labels: &Labels, min: i64, value: f64, score: f64, reason: Reason) -> Anomaly {
    Anomaly {
        labels: labels.clone(),
        query: "q".into(),
        model: "m".into(),
        scored: Scored {
            t: at(min),
            value,
            score: Score::new(score).unwrap(),
            yhat: 10.0,
            yhat_lower: 8.0,
            yhat_upper: 12.0,
            reason: Some(reason),
        },
    }
}

/// A multivariate model's verdict on a row at minute `min`: labelled by the join labels only,
/// its value the model's raw score `raw`, with no expected value or band.
pub fn row(labels: &Labels, min: i64, raw: f64, score: f64) -> Anomaly {
    let mut a = anomaly(labels, min, raw, score, Reason::Combination);
    a.query = "pod_health".into();
    a.model = "pod_health".into();
    a.scored.yhat = f64::NAN;
    a.scored.yhat_lower = f64::NAN;
    a.scored.yhat_upper = f64::NAN;
    a
}

pub fn node() -> Labels {
    labels(&[("__name__", "node_cpu_utilisation"), ("node", "n1")])
}

pub fn pods() -> Vec<Labels> {
    ["api-7d9f8-xk2p", "api-7d9f8-b4zq5", "cart-5c6b7d8f9-2x4zq"]
        .iter()
        .map(|p| {
            labels(&[
                ("__name__", "http_latency_p99"),
                ("namespace", "shop"),
                ("pod", p),
                ("node", "n1"),
            ])
        })
        .collect()
}

pub fn unrelated() -> Labels {
    labels(&[
        ("__name__", "queue_depth"),
        ("namespace", "billing"),
        ("service", "ledger"),
    ])
}

/// A node CPU anomaly from minute 0, then latency on three pods of that node from minutes 2-4
/// (the pods deviate more than the node: the ranking must not just pick the loudest), and an
/// unrelated queue in another namespace from minute 3; all anomalous until minute 12.
pub fn scenario() -> Vec<Anomaly> {
    let mut out = Vec::new();
    let pods = pods();
    for min in 0..=12 {
        out.push(anomaly(&node(), min, 18.0, 0.9, Reason::LevelShift));
        for (i, p) in pods.iter().enumerate() {
            if min >= 2 + i as i64 {
                out.push(anomaly(p, min, 40.0 + i as f64, 0.97, Reason::Spike));
            }
        }
        if min >= 3 {
            out.push(anomaly(&unrelated(), min, 30.0, 0.95, Reason::Drift));
        }
    }
    out
}

pub fn run(config: CorrelatorConfig, anomalies: &[Anomaly]) -> Correlator {
    let mut c = Correlator::new(config);
    for a in anomalies {
        c.observe(a);
    }
    c
}
