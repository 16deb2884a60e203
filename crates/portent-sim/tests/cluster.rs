//! The simulator end to end: determinism, counter and histogram invariants, and for each
//! incident, that the data really shows what its ground truth says.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use portent_core::{Labels, Sample, Timestamp};
use portent_sim::{
    Cluster, DEFAULT_START, GroundTruth, Scenario, ScenarioKind, SimConfig, default_scenarios,
    histogram_quantile, matches,
};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn at(day: i64, hour: f64) -> Timestamp {
    DEFAULT_START.add_millis(day * DAY + (hour * HOUR as f64) as i64)
}

fn sel(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().copied()).unwrap()
}

/// Every sample of a five-day run (Monday to Friday) with the default incidents.
struct Trace {
    series: HashMap<Labels, Vec<Sample>>,
    truth: Vec<GroundTruth>,
}

fn trace() -> &'static Trace {
    static TRACE: OnceLock<Trace> = OnceLock::new();
    TRACE.get_or_init(|| {
        let mut config = SimConfig::new(42, DEFAULT_START, Duration::from_secs(60));
        config.scenarios = default_scenarios(DEFAULT_START, 5);
        assert_eq!(config.scenarios.len(), 7);
        let mut cluster = Cluster::new(config).unwrap();
        let mut series: HashMap<Labels, Vec<Sample>> = HashMap::new();
        cluster.run(at(5, 2.0), |l, s| match series.get_mut(l) {
            Some(v) => v.push(s),
            None => {
                series.insert(l.clone(), vec![s]);
            }
        });
        Trace {
            series,
            truth: cluster.truth().to_vec(),
        }
    })
}

impl Trace {
    /// The series `selector` matches (an owned list, so the selector may be a temporary).
    fn select(&self, selector: &Labels) -> std::vec::IntoIter<(&Labels, &[Sample])> {
        let v: Vec<_> = self
            .series
            .iter()
            .filter(|(l, _)| matches(selector, l))
            .map(|(l, v)| (l, v.as_slice()))
            .collect();
        v.into_iter()
    }

    fn truth(&self, kind: ScenarioKind) -> &GroundTruth {
        self.truth.iter().find(|t| t.kind == kind).unwrap()
    }

    /// Sum over the selected counters of their increase in `(from, to]`.
    fn increase(&self, selector: &Labels, from: Timestamp, to: Timestamp) -> f64 {
        self.select(selector)
            .map(|(_, s)| increase(s, from, to))
            .sum()
    }

    /// Mean of the selected gauges' samples in `[from, to)`.
    fn mean(&self, selector: &Labels, from: Timestamp, to: Timestamp) -> f64 {
        let v: Vec<f64> = self
            .select(selector)
            .flat_map(|(_, s)| s.iter().filter(|s| s.t >= from && s.t < to).map(|s| s.v))
            .collect();
        assert!(!v.is_empty(), "no samples of {selector}");
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// p99 latency in `(from, to]` over the selected histograms (summed over pods, like
    /// `histogram_quantile(0.99, sum by (le) (increase(..._bucket[...])))`).
    fn p99(&self, selector: &Labels, from: Timestamp, to: Timestamp) -> f64 {
        let sel = selector
            .with("__name__", "http_request_duration_seconds_bucket")
            .unwrap();
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for (l, s) in self.select(&sel) {
            let le: f64 = match l.get("le").unwrap() {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            let inc = increase(s, from, to);
            match by_le.iter_mut().find(|(b, _)| *b == le) {
                Some(e) => e.1 += inc,
                None => by_le.push((le, inc)),
            }
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        histogram_quantile(0.99, &by_le).unwrap()
    }
}

impl Trace {
    /// Mean latency in `(from, to]`: increase of `_sum` over increase of `_count`.
    fn mean_latency(&self, selector: &Labels, from: Timestamp, to: Timestamp) -> f64 {
        let sum = selector
            .with("__name__", "http_request_duration_seconds_sum")
            .unwrap();
        let count = selector
            .with("__name__", "http_request_duration_seconds_count")
            .unwrap();
        self.increase(&sum, from, to) / self.increase(&count, from, to)
    }
}

/// A counter's increase in `(from, to]`; a drop is a reset (it counts from zero again).
fn increase(s: &[Sample], from: Timestamp, to: Timestamp) -> f64 {
    s.windows(2)
        .filter(|w| w[1].t > from && w[1].t <= to)
        .map(|w| {
            if w[1].v >= w[0].v {
                w[1].v - w[0].v
            } else {
                w[1].v
            }
        })
        .sum()
}

fn value_at(s: &[Sample], t: Timestamp) -> Option<f64> {
    s.iter().find(|s| s.t == t).map(|s| s.v)
}

fn run_ticks(
    seed: u64,
    scenarios: Vec<Scenario>,
    n: usize,
) -> Vec<(Timestamp, Vec<(Labels, u64)>)> {
    let mut config = SimConfig::new(seed, DEFAULT_START, Duration::from_secs(15));
    config.scenarios = scenarios;
    let mut c = Cluster::new(config).unwrap();
    let end = DEFAULT_START.add_millis(n as i64 * 15_000);
    c.snapshots(end)
        .map(|s| {
            (
                s.t,
                s.samples
                    .into_iter()
                    .map(|(l, v)| (l, v.to_bits()))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn same_seed_same_samples_other_seed_other_noise() {
    let incidents = || {
        vec![
            Scenario::new(
                ScenarioKind::Crashloop,
                at(0, 0.1),
                at(0, 0.5),
                "shop",
                "catalog",
            ),
            Scenario::new(
                ScenarioKind::BadRollout,
                at(0, 0.2),
                at(0, 0.4),
                "shop",
                "frontend",
            ),
        ]
    };
    let a = run_ticks(7, incidents(), 200);
    let b = run_ticks(7, incidents(), 200);
    assert_eq!(a.len(), 200);
    assert_eq!(a, b);
    let c = run_ticks(8, incidents(), 200);
    assert_ne!(a, c);
    assert_eq!(a[0].0, DEFAULT_START);
    assert_eq!(a[199].0, DEFAULT_START.add_millis(199 * 15_000));
}

#[test]
fn counters_only_drop_when_their_container_restarts() {
    let tr = trace();
    let restarts: HashMap<(&str, &str), &[Sample]> = tr
        .select(&sel(&[(
            "__name__",
            "kube_pod_container_status_restarts_total",
        )]))
        .map(|(l, s)| ((l.get("namespace").unwrap(), l.get("pod").unwrap()), s))
        .collect();
    let mut resets = 0;
    let mut checked = 0;
    for (l, s) in &tr.series {
        let name = l.metric_name().unwrap();
        let counter = name.ends_with("_total")
            || name.ends_with("_bucket")
            || name.ends_with("_sum")
            || name.ends_with("_count");
        if !counter {
            continue;
        }
        checked += 1;
        for w in s.windows(2) {
            if w[1].v >= w[0].v {
                continue;
            }
            resets += 1;
            let pod = (l.get("namespace").unwrap_or(""), l.get("pod").unwrap_or(""));
            let r = restarts
                .get(&pod)
                .unwrap_or_else(|| panic!("{l} dropped at {}", w[1].t));
            let before = value_at(r, w[0].t).unwrap();
            let after = value_at(r, w[1].t).unwrap();
            assert!(
                after > before,
                "{l} dropped at {} without a restart",
                w[1].t
            );
        }
    }
    assert!(checked > 1000, "{checked}");
    assert!(resets > 0, "no restart at all in five days");
}

#[test]
fn histograms_are_cumulative_and_inf_equals_count() {
    let tr = trace();
    let mut pods = 0;
    for (l, count) in tr.select(&sel(&[("__name__", "http_request_duration_seconds_count")])) {
        pods += 1;
        let pod = sel(&[
            ("__name__", "http_request_duration_seconds_bucket"),
            ("pod", l.get("pod").unwrap()),
        ]);
        let mut buckets: Vec<(f64, &[Sample])> = tr
            .select(&pod)
            .map(|(b, s)| {
                (
                    b.get("le").unwrap().parse::<f64>().unwrap_or(f64::INFINITY),
                    s,
                )
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(buckets.len(), 12, "{l}");
        assert!(buckets[11].0.is_infinite());
        for (i, c) in count.iter().enumerate() {
            for w in buckets.windows(2) {
                assert_eq!(w[0].1[i].t, c.t);
                assert!(
                    w[0].1[i].v <= w[1].1[i].v,
                    "{l} at {}: le={} > le={}",
                    c.t,
                    w[0].0,
                    w[1].0
                );
            }
            assert_eq!(buckets[11].1[i].v, c.v, "{l} at {}: +Inf != _count", c.t);
        }
    }
    assert!(pods >= 14, "{pods}");
}

#[test]
fn truth_follows_the_configured_incidents() {
    let tr = trace();
    let planned = default_scenarios(DEFAULT_START, 5);
    assert_eq!(tr.truth.len(), planned.len());
    for p in &planned {
        let t = tr.truth(p.kind);
        assert_eq!(t.start, p.start, "{}", p.name);
        assert!(
            t.end >= p.end && t.end <= p.end.add_millis(10 * MIN),
            "{}: {} vs {}",
            p.name,
            t.end,
            p.end
        );
        assert!(!t.affected.is_empty());
        assert!(
            tr.series.keys().any(|l| t.affects(l)),
            "{}: affects no series",
            p.name
        );
    }
}

#[test]
fn latency_creep_raises_p99_while_cpu_stays_under_80_percent() {
    let tr = trace();
    let t = tr.truth(ScenarioKind::LatencyCreep);
    let svc = sel(&[("namespace", "shop"), ("service", "checkout")]);
    let early = tr.p99(&svc, t.start, t.start.add_millis(20 * MIN));
    let late = tr.p99(&svc, t.end.add_millis(-20 * MIN), t.end);
    let yesterday = tr.p99(
        &svc,
        t.end.add_millis(-DAY - 20 * MIN),
        t.end.add_millis(-DAY),
    );
    assert!(
        late > 2.0 * early && late > 2.0 * yesterday,
        "p99 {early} -> {late} (yesterday {yesterday})"
    );
    // It keeps creeping: every hour is worse than the one before.
    let hourly: Vec<f64> = (0..6)
        .map(|h| {
            tr.p99(
                &svc,
                t.start.add_millis(h * HOUR),
                t.start.add_millis((h + 1) * HOUR),
            )
        })
        .collect();
    assert!(hourly.windows(2).all(|w| w[1] > w[0]), "{hourly:?}");
    // No static threshold fires: CPU < 80% of the limit, memory < 90%, errors < 5%.
    let pods = sel(&[
        ("__name__", "container_cpu_usage_seconds_total"),
        ("namespace", "shop"),
        ("container", "checkout"),
    ]);
    let mut from = t.start;
    while from < t.end {
        let to = from.add_millis(5 * MIN);
        for (l, s) in tr.select(&pods) {
            if s.first().unwrap().t <= from && s.last().unwrap().t >= to {
                let util = increase(s, from, to) / 300.0 / 1.0;
                assert!(util < 0.8, "{l} at {to}: {util}");
            }
        }
        from = to;
    }
    let mem = tr.mean(
        &sel(&[
            ("__name__", "container_memory_working_set_bytes"),
            ("container", "checkout"),
        ]),
        t.start,
        t.end,
    );
    assert!(mem < 0.9 * 512.0 * 1024.0 * 1024.0);
    let errors = tr.increase(
        &svc.with("code", "500")
            .unwrap()
            .with("__name__", "http_requests_total")
            .unwrap(),
        t.start,
        t.end,
    );
    let all = tr.increase(
        &svc.with("__name__", "http_requests_total").unwrap(),
        t.start,
        t.end,
    );
    assert!(errors / all < 0.05, "{errors}/{all}");
}

#[test]
fn memory_leak_approaches_the_limit_then_the_container_restarts() {
    let tr = trace();
    let t = tr.truth(ScenarioKind::MemoryLeak);
    let pod = t.cause.get("pod").unwrap();
    let ws_sel = sel(&[
        ("__name__", "container_memory_working_set_bytes"),
        ("pod", pod),
    ]);
    let (_, ws) = tr.select(&ws_sel).next().unwrap();
    let limit = 1024.0 * 1024.0 * 1024.0;
    let before = value_at(ws, t.start.add_millis(-MIN)).unwrap();
    let last = value_at(ws, t.end.add_millis(-MIN)).unwrap();
    let after = value_at(ws, t.end.add_millis(MIN)).unwrap();
    assert!(before < 0.5 * limit, "{before}");
    assert!(last > 0.9 * limit && last <= limit, "{last}");
    assert!(after < 0.5 * limit, "{after}");
    let mid = value_at(ws, t.start.add_millis(t.end.millis_since(t.start) / 2)).unwrap();
    assert!(before < mid && mid < last, "{before} {mid} {last}");
    let (_, r) = tr
        .select(&sel(&[
            ("__name__", "kube_pod_container_status_restarts_total"),
            ("pod", pod),
        ]))
        .next()
        .unwrap();
    assert_eq!(
        value_at(r, t.end).unwrap(),
        value_at(r, t.end.add_millis(-MIN)).unwrap() + 1.0
    );
}

#[test]
fn bad_rollout_bursts_5xx_until_the_rollback() {
    let tr = trace();
    let t = tr.truth(ScenarioKind::BadRollout);
    let svc = sel(&[
        ("__name__", "http_requests_total"),
        ("namespace", "shop"),
        ("service", "frontend"),
    ]);
    let ratio = |from: Timestamp, to: Timestamp| {
        tr.increase(&svc.with("code", "500").unwrap(), from, to) / tr.increase(&svc, from, to)
    };
    let during = ratio(t.start.add_millis(5 * MIN), t.end);
    let baseline = ratio(t.start.add_millis(-DAY), t.end.add_millis(-DAY));
    let after = ratio(t.end.add_millis(10 * MIN), t.end.add_millis(70 * MIN));
    assert!(
        during > 0.05 && during > 10.0 * baseline,
        "{baseline} -> {during}"
    );
    assert!(after < 0.01, "{after}");
    // The bad pods are new pods of a new ReplicaSet, named in the truth.
    let bad_pods: Vec<&str> = t.affected.iter().filter_map(|a| a.get("pod")).collect();
    assert_eq!(bad_pods.len(), 3);
    let rs = t.cause.get("replicaset").unwrap();
    assert!(
        bad_pods.iter().all(|p| p.starts_with(rs)),
        "{rs} {bad_pods:?}"
    );
}

#[test]
fn crashloop_restarts_climb_and_the_pod_flaps() {
    let tr = trace();
    let t = tr.truth(ScenarioKind::Crashloop);
    let pod = t.cause.get("pod").unwrap();
    let (_, r) = tr
        .select(&sel(&[
            ("__name__", "kube_pod_container_status_restarts_total"),
            ("pod", pod),
        ]))
        .next()
        .unwrap();
    let climbed = value_at(r, t.end).unwrap() - value_at(r, t.start.add_millis(-MIN)).unwrap();
    assert!(climbed >= 5.0, "{climbed}");
    let day_before = value_at(r, t.start.add_millis(-MIN)).unwrap() - r[0].v;
    assert!(day_before <= 1.0, "{day_before}");
    // Absent while in back-off: fewer CPU samples than steps.
    let (_, cpu) = tr
        .select(&sel(&[
            ("__name__", "container_cpu_usage_seconds_total"),
            ("pod", pod),
        ]))
        .next()
        .unwrap();
    let present = cpu.iter().filter(|s| t.contains(s.t)).count();
    let steps = (t.end.millis_since(t.start) / MIN) as usize;
    assert!(
        present < steps * 3 / 4 && present > 0,
        "{present} of {steps}"
    );
}

#[test]
fn noisy_neighbour_saturates_the_node_and_slows_its_pods() {
    let tr = trace();
    let t = tr.truth(ScenarioKind::NoisyNeighbour);
    let node = t.affected.iter().find_map(|a| a.get("instance")).unwrap();
    let idle = sel(&[
        ("__name__", "node_cpu_seconds_total"),
        ("instance", node),
        ("mode", "idle"),
    ]);
    let busy = |from: Timestamp, to: Timestamp| {
        1.0 - tr.increase(&idle, from, to) / (4.0 * to.millis_since(from) as f64 / 1000.0)
    };
    let during = busy(t.start.add_millis(5 * MIN), t.end);
    let before = busy(t.start.add_millis(-HOUR), t.start);
    assert!(during > 0.9 && before < 0.7, "{before} -> {during}");
    let victims: Vec<&Labels> = t
        .affected
        .iter()
        .filter(|a| {
            a.get("pod").is_some()
                && a.metric_name() == Some("http_request_duration_seconds_bucket")
        })
        .collect();
    assert!(!victims.is_empty());
    for v in victims {
        let p = sel(&[("pod", v.get("pod").unwrap())]);
        let now = tr.p99(&p, t.start.add_millis(5 * MIN), t.end);
        let earlier = tr.p99(&p, t.start.add_millis(-HOUR), t.start);
        assert!(now > 1.3 * earlier, "{v}: {earlier} -> {now}");
    }
}

#[test]
fn night_traffic_drop_is_normal_for_3pm_not_for_3am() {
    let tr = trace();
    let t = tr.truth(ScenarioKind::NightTrafficDrop);
    let svc = sel(&[
        ("__name__", "http_requests_total"),
        ("namespace", "batch"),
        ("service", "ingest"),
    ]);
    let rate = |from: Timestamp, to: Timestamp| {
        tr.increase(&svc, from, to) / (to.millis_since(from) as f64 / 1000.0)
    };
    let window = |day: i64, hour: f64| rate(at(day, hour + 0.2), at(day, hour + 0.8));
    let drop = rate(t.start.add_millis(12 * MIN), t.end.add_millis(-12 * MIN));
    let nights = [window(0, 3.0), window(1, 3.0)];
    let afternoons = [window(0, 15.0), window(1, 15.0)];
    let lowest_night = nights.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(drop < 0.5 * lowest_night, "drop {drop} vs 3 AM {nights:?}");
    let (lo, hi) = afternoons
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    assert!(
        drop >= 0.75 * lo && drop <= 1.25 * hi,
        "drop {drop} vs 3 PM {afternoons:?}"
    );
}

#[test]
fn joint_shift_moves_memory_and_latency_a_little_and_nothing_else() {
    let tr = trace();
    let t = tr.truth(ScenarioKind::JointShift);
    let (from, to) = (t.start.add_millis(30 * MIN), t.end.add_millis(-10 * MIN));
    let yesterday = |x: Timestamp| x.add_millis(-DAY);
    // One pod of the service, the cause: a replica gone a little off while its twin is fine.
    let pod = t
        .cause
        .get("pod")
        .expect("the joint shift's cause is a pod");
    let mem = sel(&[
        ("__name__", "container_memory_working_set_bytes"),
        ("namespace", "shop"),
        ("pod", pod),
    ]);
    let svc = sel(&[("namespace", "shop"), ("pod", pod)]);
    let m_now = tr.mean(&mem, from, to);
    let m_then = tr.mean(&mem, yesterday(from), yesterday(to));
    let l_now = tr.mean_latency(&svc, from, to);
    let l_then = tr.mean_latency(&svc, yesterday(from), yesterday(to));
    assert!(m_now > 1.04 * m_then, "memory {m_then} -> {m_now}");
    assert!(l_now > 1.04 * l_then, "mean latency {l_then} -> {l_now}");
    // p99 from the coarse default buckets moves less, but not down.
    let (p_now, p_then) = (
        tr.p99(&svc, from, to),
        tr.p99(&svc, yesterday(from), yesterday(to)),
    );
    assert!(p_now > p_then, "p99 {p_then} -> {p_now}");
    // Each stays within what the previous day reached (its 30-minute windows).
    let day = at(3, 0.0);
    let windows: Vec<(Timestamp, Timestamp)> = (0..48)
        .map(|k| {
            (
                day.add_millis(k * 30 * MIN),
                day.add_millis((k + 1) * 30 * MIN),
            )
        })
        .collect();
    let m_max = windows
        .iter()
        .map(|&(a, b)| tr.mean(&mem, a, b))
        .fold(0.0, f64::max);
    let l_max = windows
        .iter()
        .map(|&(a, b)| tr.mean_latency(&svc, a, b))
        .fold(0.0, f64::max);
    let p_max = windows
        .iter()
        .map(|&(a, b)| tr.p99(&svc, a, b))
        .fold(0.0, f64::max);
    eprintln!(
        "memory {m_then} -> {m_now} (max {m_max}); mean latency {l_then} -> {l_now} (max {l_max}); p99 {p_then} -> {p_now} (max {p_max})"
    );
    assert!(m_now < m_max, "memory {m_now} vs the day's max {m_max}");
    assert!(
        l_now < l_max,
        "mean latency {l_now} vs the day's max {l_max}"
    );
    assert!(p_now < p_max, "p99 {p_now} vs the day's max {p_max}");
    // Traffic and CPU as the day before.
    let req = svc.with("__name__", "http_requests_total").unwrap();
    let cpu = sel(&[
        ("__name__", "container_cpu_usage_seconds_total"),
        ("container", "cart"),
    ]);
    for s in [req, cpu] {
        let r = tr.increase(&s, from, to) / tr.increase(&s, yesterday(from), yesterday(to));
        assert!((0.85..1.15).contains(&r), "{s}: {r}");
    }
}

#[test]
fn incident_targets_survive_routine_rollouts_and_churn() {
    // Rollouts every ~30 minutes in office hours and short-lived pods: the leaking pod must
    // still be the one that leaks, from start to end.
    let mut config = SimConfig::new(11, DEFAULT_START, Duration::from_secs(60));
    config.churn.rollouts_per_day = 48.0;
    config.churn.pod_lifetime_hours = 2.0;
    config.scenarios = vec![Scenario::new(
        ScenarioKind::MemoryLeak,
        at(0, 10.0),
        at(0, 13.0),
        "payments",
        "payments-api",
    )];
    let mut c = Cluster::new(config).unwrap();
    let mut ws: HashMap<String, Vec<Sample>> = HashMap::new();
    let mut names = std::collections::BTreeSet::new();
    c.run(at(0, 13.0), |l, s| {
        if let Some(pod) = l.get("pod") {
            names.insert(pod.to_string());
        }
        if l.metric_name() == Some("container_memory_working_set_bytes") {
            ws.entry(l.get("pod").unwrap().to_string())
                .or_default()
                .push(s);
        }
    });
    assert!(names.len() > 30, "little churn: {} pods", names.len());
    let t = &c.truth()[0];
    let leaking = &ws[t.cause.get("pod").unwrap()];
    assert!(leaking.first().unwrap().t <= t.start);
    let last = leaking.last().unwrap();
    assert_eq!(last.t, at(0, 13.0).add_millis(-MIN));
    assert!(last.v > 0.9 * 1024.0 * 1024.0 * 1024.0, "{}", last.v);
}

#[test]
fn exposition_is_valid_text_format() {
    let mut config = SimConfig::new(3, DEFAULT_START, Duration::from_secs(60));
    config.scenarios = vec![Scenario::new(
        ScenarioKind::Crashloop,
        at(0, 0.0),
        at(0, 1.0),
        "shop",
        "catalog",
    )];
    let mut c = Cluster::new(config).unwrap();
    for _ in 0..3 {
        c.tick();
    }
    let text = c.render_exposition();
    let mut seen: Vec<String> = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut samples = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(!seen.contains(&name.to_string()), "second TYPE for {name}");
            seen.push(name.to_string());
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, kind) = current.clone().unwrap();
        let (series, value) = line.rsplit_once(' ').unwrap();
        let metric = series.split('{').next().unwrap();
        let ok = metric == name
            || (kind == "histogram"
                && [
                    format!("{name}_bucket"),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                ]
                .contains(&metric.to_string()));
        assert!(ok, "{line} under TYPE {name}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        if series.contains('{') {
            assert!(series.ends_with('}') && !series.contains(", "), "{line}");
        }
        samples += 1;
    }
    assert_eq!(seen.len(), portent_sim::FAMILIES.len());
    assert!(samples > 300, "{samples}");
    promtool_check(&text);
}

/// `promtool check metrics`, when installed: no parse error; its only lint complaints may be
/// node_exporter's own camelCase names.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("PORTENT_REQUIRE_SERVERS").is_none(),
            "promtool is not installed"
        );
        eprintln!("SKIPPED: promtool is not installed");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            for line in report.lines() {
                assert!(
                    line.contains("node_memory_Mem") && line.contains("camelCase"),
                    "promtool: {line}"
                );
            }
        }
        other => panic!("promtool check metrics: {other:?}\n{report}"),
    }
}
