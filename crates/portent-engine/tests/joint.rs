//! Multivariate jobs over a replayed clock: three replicas of one workload, each with memory
//! and latency that both follow the workload's traffic, joined per pod and scored by one
//! Isolation Forest pooled over the workload. Pod `a` breaks the correlation for ten minutes
//! (memory up, latency down, each inside the range the replicas show every day); pod `new`
//! appears after the first day and is scored at once by the pool's model; pod `b` misses its
//! latency for an hour, and its memory goes NaN for a while.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap fixtures known good

use portent_config::JointMethod;
use portent_core::seeded::gauss;
use portent_core::{Labels, Reason, Sample, Score, Series, Timestamp};
use portent_engine::{
    Cadence, Feature, HistorySource, JointJob, MemorySource, Plan, RangeQuery, Request, Scheduler,
    StepReport,
};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// A Monday, 00:00 UTC.
const T0: i64 = 1_700_438_400_000;
const START: i64 = T0 + DAY;
const END: i64 = T0 + 2 * DAY;
const BREAK: (i64, i64) = (T0 + DAY + 14 * HOUR, T0 + DAY + 14 * HOUR + 10 * MIN);
const NEW_FROM: i64 = T0 + DAY + 2 * HOUR;
const B_NO_LATENCY: (i64, i64) = (T0 + DAY + 6 * HOUR, T0 + DAY + 7 * HOUR);
const B_NAN: (i64, i64) = (T0 + DAY + 9 * HOUR, T0 + DAY + 9 * HOUR + 30 * MIN);

fn labels(metric: &str, pod: &str) -> Labels {
    Labels::new([
        ("__name__", metric),
        ("namespace", "shop"),
        ("pod", pod),
        ("workload", "cart"),
    ])
    .unwrap()
}

/// Traffic with a daily cycle, shared by the replicas.
fn traffic(t: i64) -> f64 {
    let day = (t.rem_euclid(DAY)) as f64 / DAY as f64;
    1.0 + 0.6 * (std::f64::consts::TAU * day).sin()
}

/// The workload's memory and latency, `seed` for each pod's noise.
fn source() -> MemorySource {
    let mut m = MemorySource::new();
    for (k, pod) in ["a", "b", "new"].into_iter().enumerate() {
        let from = if pod == "new" { NEW_FROM } else { T0 };
        let mut memory = Vec::new();
        let mut latency = Vec::new();
        for t in (from..END).step_by(MIN as usize) {
            let i = (t - T0) as u64 / MIN as u64 * 7 + k as u64;
            let x = traffic(t);
            let mut mem = 200.0 + 100.0 * x + 2.0 * gauss(i);
            let mut lat = 0.05 + 0.05 * x + 0.001 * gauss(i + 3);
            if pod == "a" && (BREAK.0..BREAK.1).contains(&t) {
                // Memory of peak traffic with latency of the night: each usual, never together.
                mem = 200.0 + 100.0 * 1.5;
                lat = 0.05 + 0.05 * 0.5;
            }
            if pod == "b" && (B_NAN.0..B_NAN.1).contains(&t) {
                mem = f64::NAN;
            }
            memory.push(Sample::new(Timestamp::from_millis(t), mem));
            if !(pod == "b" && (B_NO_LATENCY.0..B_NO_LATENCY.1).contains(&t)) {
                latency.push(Sample::new(Timestamp::from_millis(t), lat));
            }
        }
        m.insert(
            "memory",
            Series {
                labels: labels("memory", pod),
                samples: memory,
            },
        );
        m.insert(
            "latency",
            Series {
                labels: labels("latency", pod),
                samples: latency,
            },
        );
    }
    m
}

fn plan() -> Plan {
    Plan {
        jobs: Vec::new(),
        joint: vec![JointJob {
            model: "pods".into(),
            method: JointMethod::IsolationForest,
            features: ["memory", "latency"]
                .map(|q| Feature {
                    query: q.into(),
                    expr: q.into(),
                })
                .to_vec(),
            step_ms: MIN,
            join_on: vec!["namespace".into(), "pod".into()],
            pool_by: vec!["namespace".into(), "workload".into()],
            cadence: Cadence {
                fit_every_ms: DAY,
                fit_window_ms: DAY,
                score_every_ms: 5 * MIN,
            },
        }],
        retention_ms: DAY,
    }
}

fn run(
    source: &mut dyn HistorySource<Error = portent_engine::source::UnknownQuery>,
) -> Vec<StepReport> {
    let mut s = Scheduler::new(plan()).unwrap();
    s.record_scores(true);
    let mut reports = Vec::new();
    s.replay(
        Timestamp::from_millis(START),
        Timestamp::from_millis(END),
        source,
        |r| reports.push(r.clone()),
    );
    reports
}

#[test]
fn a_broken_correlation_scores_high_and_calm_rows_do_not() {
    let reports = run(&mut source());
    assert!(reports.iter().all(|r| r.errors.is_empty()));
    let scores: Vec<_> = reports.iter().flat_map(|r| &r.scores).collect();
    let pod = |s: &&&portent_engine::StepScore| s.labels.get("pod").unwrap().to_owned();
    // Entities are named by the join labels only, and verdicts carry the model as query.
    for s in &scores {
        assert_eq!(s.labels.len(), 2, "{}", s.labels);
        assert_eq!((&*s.model, &*s.query), ("pods", "pods"));
        assert!(s.scored.yhat.is_nan());
    }
    let in_break = |s: &&&portent_engine::StepScore| {
        (BREAK.0..BREAK.1).contains(&s.scored.t.millis()) && pod(s) == "a"
    };
    let broken: Vec<_> = scores.iter().filter(in_break).collect();
    assert_eq!(broken.len(), 10);
    // The model's evidence needs two rows in a row (one step of delay): see `sustained`.
    assert!(broken[0].scored.score < Score::ALERT);
    for s in &broken[1..] {
        assert!(s.scored.score >= Score::ALERT, "{:?}", s.scored);
        assert_eq!(s.scored.reason, Some(Reason::Combination));
    }
    // Every other row, on every pod, over a whole day, stays under the threshold but rarely.
    let calm: Vec<_> = scores.iter().filter(|s| !in_break(s)).collect();
    let high = calm
        .iter()
        .filter(|s| s.scored.score >= Score::ALERT)
        .count();
    assert!(calm.len() > 3 * 1300, "{} calm rows", calm.len());
    assert!(
        high <= 1,
        "{high} of {} calm rows at the threshold",
        calm.len()
    );
}

#[test]
fn a_new_replica_is_scored_by_its_pools_model_from_its_first_closed_row() {
    let reports = run(&mut source());
    let first_new = reports
        .iter()
        .flat_map(|r| &r.scores)
        .filter(|s| s.labels.get("pod") == Some("new"))
        .map(|s| s.scored.t.millis())
        .min()
        .unwrap();
    assert_eq!(first_new, NEW_FROM);
}

#[test]
fn rows_missing_a_feature_or_holding_nan_are_not_scored() {
    let reports = run(&mut source());
    let b: Vec<i64> = reports
        .iter()
        .flat_map(|r| &r.scores)
        .filter(|s| s.labels.get("pod") == Some("b"))
        .map(|s| s.scored.t.millis())
        .collect();
    for gap in [B_NO_LATENCY, B_NAN] {
        assert!(!b.iter().any(|t| (gap.0..gap.1).contains(t)), "{gap:?}");
        // The rows on either side are.
        assert!(b.contains(&(gap.0 - MIN)) && b.contains(&gap.1));
    }
}

/// Refuses the score reads of one feature over a window, as a Prometheus down would.
struct Flaky {
    inner: MemorySource,
    down: (i64, i64),
    now: i64,
}

impl HistorySource for Flaky {
    type Error = portent_engine::source::UnknownQuery;
    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, Self::Error> {
        self.now = q.end.millis();
        if q.query == "latency" && (self.down.0..self.down.1).contains(&self.now) {
            return Err(portent_engine::source::UnknownQuery("down".into()));
        }
        self.inner.query_range(q)
    }
}

#[test]
fn a_source_error_is_reported_and_the_rows_are_caught_up_after() {
    let down = (T0 + DAY + 3 * HOUR, T0 + DAY + 3 * HOUR + 30 * MIN);
    let mut flaky = Flaky {
        inner: source(),
        down,
        now: 0,
    };
    let reports = run(&mut flaky);
    let failed: Vec<_> = reports.iter().filter(|r| !r.errors.is_empty()).collect();
    assert!(!failed.is_empty());
    for r in &failed {
        assert_eq!(r.errors[0].query, "latency");
        assert_eq!(r.errors[0].request, Request::Score);
        assert!(r.scores.is_empty());
    }
    // Every row of pod a in the outage is scored once the source is back.
    let a: Vec<i64> = reports
        .iter()
        .flat_map(|r| &r.scores)
        .filter(|s| s.labels.get("pod") == Some("a"))
        .map(|s| s.scored.t.millis())
        .collect();
    for t in (down.0..down.1).step_by(MIN as usize) {
        assert_eq!(a.iter().filter(|x| **x == t).count(), 1, "row at {t}");
    }
}

#[test]
fn the_latest_verdicts_name_each_entity_with_each_features_share() {
    let mut s = Scheduler::new(plan()).unwrap();
    let mut src = source();
    s.replay(
        Timestamp::from_millis(START),
        Timestamp::from_millis(BREAK.0 + 5 * MIN),
        &mut src,
        |_| {},
    );
    let latest: Vec<_> = s.joint_latest().collect();
    assert_eq!(latest.len(), 3);
    let a = latest
        .iter()
        .find(|l| l.labels.get("pod") == Some("a"))
        .unwrap();
    assert!(a.scored.score >= Score::ALERT);
    assert_eq!(a.contributions.len(), 2);
    assert!((a.contributions.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert_eq!(s.tracked(), 3);
    // Each is found by its model and labels alone, and nothing else is.
    for l in &latest {
        let found = s.joint_latest_of(l.model, l.labels).unwrap();
        assert!(std::ptr::eq(found.scored, l.scored) && found.labels == l.labels);
        assert!(s.joint_latest_of("no such model", l.labels).is_none());
    }
    let stranger = portent_core::Labels::new([("pod", "stranger")]).unwrap();
    assert!(s.joint_latest_of(latest[0].model, &stranger).is_none());
}

#[test]
fn a_restart_scores_at_once_with_the_pools_it_saved() {
    let restart = T0 + DAY + 12 * HOUR;
    let mut src = source();
    let mut s = Scheduler::new(plan()).unwrap();
    s.replay(
        Timestamp::from_millis(START),
        Timestamp::from_millis(restart),
        &mut src,
        |_| {},
    );
    let dir = tempfile::tempdir().unwrap();
    portent_engine::save(s.store(), dir.path()).unwrap();
    let loaded = portent_engine::load(dir.path()).unwrap().unwrap();
    assert_eq!(
        &loaded,
        s.store(),
        "the pools survive the state file exactly"
    );
    assert_eq!(loaded.pools("pods").map(|p| p.len()), Some(1));

    // The next tick after the restart scores every pod with the saved model, fitting nothing.
    let (mut resumed, dropped) = Scheduler::with_store(plan(), loaded).unwrap();
    assert_eq!(dropped, 0);
    resumed.record_scores(true);
    let next = Timestamp::from_millis(restart + 5 * MIN);
    let r = resumed.step(next, &mut src);
    assert_eq!((r.fitted, r.fit_failures), (0, 0));
    assert!(r.joint_rows_scored >= 3, "{r:?}");
    // Without the saved state the same tick has to fit the pool first.
    let mut fresh = Scheduler::new(plan()).unwrap();
    assert_eq!(fresh.step(next, &mut src).fitted, 1);

    // A plan without the model drops its pools.
    let mut other = plan();
    other.joint[0].model = "renamed".into();
    let (s2, _) =
        Scheduler::with_store(other, portent_engine::load(dir.path()).unwrap().unwrap()).unwrap();
    assert!(s2.store().pools("pods").is_none());
}

#[test]
fn a_pod_whose_series_all_end_is_forgotten_at_once() {
    let mut src = source();
    let mut s = Scheduler::new(plan()).unwrap();
    let until = T0 + DAY + 3 * HOUR;
    s.replay(
        Timestamp::from_millis(START),
        Timestamp::from_millis(until),
        &mut src,
        |_| {},
    );
    assert_eq!(s.tracked(), 3);
    // Pod b is deleted: each of its series gets a stale marker, as Prometheus sends.
    let mut ended = MemorySource::new();
    for q in ["memory", "latency"] {
        for pod in ["a", "b", "new"] {
            let mut samples = vec![Sample::new(Timestamp::from_millis(until + MIN), 1.0)];
            if pod == "b" {
                samples.push(Sample::new(
                    Timestamp::from_millis(until + 2 * MIN),
                    f64::from_bits(portent_core::STALE_NAN_BITS),
                ));
            }
            ended.insert(
                q,
                Series {
                    labels: labels(q, pod),
                    samples,
                },
            );
        }
    }
    let r = s.step(Timestamp::from_millis(until + 5 * MIN), &mut ended);
    assert_eq!(r.ended, 1);
    let pods: Vec<String> = s
        .joint_latest()
        .map(|l| l.labels.get("pod").unwrap().to_owned())
        .collect();
    assert!(!pods.contains(&"b".to_owned()), "{pods:?}");
    assert_eq!(s.tracked(), 2);
}

/// A rollout's new pod warms up: its memory starts at half its replicas' and climbs to theirs
/// over twenty minutes, its latency as theirs. The pool's model, fitted on grown replicas,
/// finds those rows unusual together; with univariate models on the same queries (as the
/// shipped configs have), the pod is judged by them alone until its series are
/// `WARM_UP_MS` old, and no combination is reported. Without them nothing says how old the
/// pod is, and its warm-up rows are the model's to judge, as before.
#[test]
fn a_pod_warming_up_is_judged_by_its_univariate_verdicts_alone() {
    const FROM: i64 = T0 + DAY + 10 * HOUR;
    let mut src = source();
    let mut memory = Vec::new();
    let mut latency = Vec::new();
    for t in (FROM..END).step_by(MIN as usize) {
        let i = (t - T0) as u64 / MIN as u64 * 7 + 5;
        let x = traffic(t);
        let warm = ((t - FROM) as f64 / (20 * MIN) as f64).min(1.0);
        let mem = (200.0 + 100.0 * x) * (0.5 + 0.5 * warm) + 2.0 * gauss(i);
        memory.push(Sample::new(Timestamp::from_millis(t), mem));
        let lat = 0.05 + 0.05 * x + 0.001 * gauss(i + 3);
        latency.push(Sample::new(Timestamp::from_millis(t), lat));
    }
    for (q, samples) in [("memory", memory), ("latency", latency)] {
        src.insert(
            q,
            Series {
                labels: labels(q, "young"),
                samples,
            },
        );
    }
    let young_verdicts = |plan: Plan, src: &mut MemorySource| {
        let mut s = Scheduler::new(plan).unwrap();
        s.record_scores(true);
        let mut out = Vec::new();
        s.replay(
            Timestamp::from_millis(START),
            Timestamp::from_millis(FROM + HOUR),
            src,
            |r| {
                out.extend(
                    r.scores
                        .iter()
                        .filter(|v| &*v.model == "pods" && v.labels.get("pod") == Some("young"))
                        .map(|v| v.scored),
                )
            },
        );
        out
    };
    let warming = |v: &portent_core::Scored| v.t.millis() < FROM + portent_engine::WARM_UP_MS;

    // The model alone flags the warm-up.
    let alone = young_verdicts(plan(), &mut src);
    assert!(
        alone.iter().any(|v| warming(v)
            && v.score >= Score::ALERT
            && v.reason == Some(Reason::Combination)),
        "{alone:?}"
    );

    // With univariate models on its queries, the first minutes are theirs.
    let mut with_univariate = plan();
    with_univariate.jobs = ["memory", "latency"]
        .map(|q| portent_engine::Job {
            model: "auto".into(),
            query: q.into(),
            expr: q.into(),
            step_ms: MIN,
            detector: portent_models::DetectorConfig::default(),
            cadence: Cadence {
                fit_every_ms: DAY,
                fit_window_ms: DAY,
                score_every_ms: 5 * MIN,
            },
        })
        .to_vec();
    let judged = young_verdicts(with_univariate, &mut src);
    assert!(
        judged.iter().any(warming),
        "verdicts on the young pod: {judged:?}"
    );
    for v in judged.iter().filter(|v| warming(v)) {
        assert_ne!(v.reason, Some(Reason::Combination), "{v:?}");
        assert!(v.score < Score::ALERT, "{v:?}");
    }
    // Once grown, its rows are the model's again.
    assert!(judged.iter().any(|v| !warming(v)), "{judged:?}");
}
