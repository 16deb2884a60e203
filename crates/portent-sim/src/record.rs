//! Recording rules over the cluster's raw series, evaluated step by step.
//!
//! The raw series are what exporters expose: counters, histogram buckets, gauges. Nobody
//! alerts on a counter; an SRE writes recording rules (`rate`, `histogram_quantile`, error
//! ratios) and watches those. [`Recorder`] evaluates the rules below on each step's samples as
//! they come, so a live consumer (`portent demo`) can score the series an SRE would:
//!
//! | series                              | labels                               | rule                                               |
//! |-------------------------------------|--------------------------------------|----------------------------------------------------|
//! | `pod:cpu_usage:cores`               | namespace, pod, deployment, node     | `rate(container_cpu_usage_seconds_total)`           |
//! | `pod:memory_working_set:bytes`      | namespace, pod, deployment, node     | `container_memory_working_set_bytes`               |
//! | `pod:http_requests:rate`            | namespace, pod, deployment, node     | `sum(rate(http_requests_total))`                   |
//! | `pod:http_errors:ratio`             | namespace, pod, deployment, node     | 5xx rate over all                                  |
//! | `pod:http_latency_p99:seconds`      | namespace, pod, deployment, node     | `histogram_quantile(0.99, rate(…_bucket))`         |
//! | `pod:container_restarts:increase15m`| namespace, pod, deployment, node     | `increase(…_restarts_total[15m])`                  |
//! | `service:http_requests:rate`        | namespace, service                   | the pods' sum                                      |
//! | `service:http_errors:ratio`         | namespace, service                   | the pods' 5xx over all                             |
//! | `service:http_latency_p99:seconds`  | namespace, service                   | p99 of the pods' summed bucket rates               |
//! | `node:cpu_busy:ratio`               | node                                 | non-idle CPU time over all                         |
//! | `node:memory_used:ratio`            | node                                 | `1 - MemAvailable / MemTotal`                      |
//!
//! Rates are over a trailing window and reset-aware, as Prometheus' `rate` is. A series is
//! absent at a step where its rule has no value (no increment yet, no requests, a pod in
//! crash back-off), and gets a stale marker at the first such step, as Prometheus' rule
//! evaluation writes one when a recorded series disappears.

use std::collections::{BTreeMap, HashSet, VecDeque};

use portent_core::{Labels, STALE_NAN_BITS};

use crate::histogram::{DEFAULT_BUCKETS, histogram_quantile};

const N_BUCKETS: usize = DEFAULT_BUCKETS.len() + 1;

/// A counter's increments over a trailing window of steps, reset-aware, as `rate()` sees them.
#[derive(Debug, Default, Clone)]
pub struct Counter {
    last: Option<f64>,
    /// `(step, increment)`.
    incs: VecDeque<(u64, f64)>,
}

impl Counter {
    /// Takes the counter's value at `step` (steps increase by one per sample).
    pub fn observe(&mut self, step: u64, v: f64) {
        if let Some(last) = self.last {
            // A counter below its last value was reset: it counted `v` since.
            let inc = if v >= last { v - last } else { v };
            self.incs.push_back((step, inc));
        }
        self.last = Some(v);
    }

    fn trim(&mut self, step: u64, window: u64) {
        while self.incs.front().is_some_and(|(s, _)| s + window <= step) {
            self.incs.pop_front();
        }
    }

    /// Per-second rate over the last `window` steps of `step_s` seconds; NaN without an
    /// increment in the window.
    pub fn rate(&mut self, step: u64, window: u64, step_s: f64) -> f64 {
        self.trim(step, window);
        if self.incs.is_empty() {
            return f64::NAN;
        }
        let sum: f64 = self.incs.iter().map(|(_, i)| i).sum();
        sum / (self.incs.len() as f64 * step_s)
    }

    /// The increase over the last `window` steps (0 without increments).
    pub fn increase(&mut self, step: u64, window: u64) -> f64 {
        self.trim(step, window);
        self.incs.iter().map(|(_, i)| i).sum()
    }
}

/// The index of a bucket's `le` label in [`DEFAULT_BUCKETS`] (`+Inf` last).
pub fn bucket_index(le: &str) -> Option<usize> {
    if le == "+Inf" {
        return Some(DEFAULT_BUCKETS.len());
    }
    let v: f64 = le.parse().ok()?;
    DEFAULT_BUCKETS
        .iter()
        .position(|b| (b - v).abs() <= 1e-9 * b.max(1e-9))
}

/// The 0.99 quantile of cumulative bucket counts (or rates) in [`DEFAULT_BUCKETS`] order.
pub fn p99(buckets: &[f64; N_BUCKETS]) -> f64 {
    let pairs: Vec<(f64, f64)> = DEFAULT_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(buckets.iter().copied())
        .collect();
    histogram_quantile(0.99, &pairs).unwrap_or(f64::NAN)
}

/// One pod's raw values at the current step.
#[derive(Debug, Default)]
struct PodRaw {
    cpu: Option<f64>,
    memory: Option<f64>,
    requests: Option<f64>,
    restarts: Option<f64>,
    errors: f64,
    buckets: [f64; N_BUCKETS],
    has_buckets: bool,
}

#[derive(Debug, Default)]
struct Pod {
    namespace: String,
    deployment: Option<String>,
    service: Option<String>,
    node: Option<String>,
    cpu: Counter,
    requests: Counter,
    errors: Counter,
    restarts: Counter,
    buckets: Vec<Counter>,
    raw: PodRaw,
    /// The last step the pod had a sample at.
    seen: u64,
}

#[derive(Debug, Default)]
struct Node {
    busy: Counter,
    idle: Counter,
    raw_busy: f64,
    raw_idle: f64,
    total: f64,
    available: f64,
    seen: bool,
}

#[derive(Debug, Default)]
struct ServiceSum {
    requests: f64,
    errors: f64,
    buckets: [f64; N_BUCKETS],
    complete: bool,
    pods: usize,
}

/// Evaluates the recording rules (see the [module docs](self)) on one step at a time.
///
/// ```
/// use portent_sim::{Cluster, DEFAULT_START, Recorder, SimConfig};
/// use std::time::Duration;
///
/// let mut cluster = Cluster::new(SimConfig::new(1, DEFAULT_START, Duration::from_secs(60)))?;
/// let mut recorder = Recorder::new(cluster.step_millis(), 5 * 60_000);
/// let mut last = Vec::new();
/// for snapshot in cluster.snapshots(DEFAULT_START.add_millis(10 * 60_000)) {
///     last = recorder.record(&snapshot);
/// }
/// assert!(last.iter().any(|(l, v)| l.metric_name() == Some("pod:cpu_usage:cores") && *v > 0.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Recorder {
    /// The series recorded at the last step: those missing at the next one get a stale
    /// marker, as Prometheus writes for a recorded series that disappears.
    last: HashSet<Labels>,
    step_s: f64,
    window: u64,
    /// 15 minutes in steps, for `increase(restarts[15m])`.
    restart_window: u64,
    step: u64,
    /// By `namespace/pod`.
    pods: BTreeMap<String, Pod>,
    nodes: BTreeMap<String, Node>,
}

/// Pods unseen this many steps are forgotten.
const FORGET_AFTER_STEPS: u64 = 60;

impl Recorder {
    /// A recorder for samples `step_ms` apart, with rates over `rate_window_ms`.
    pub fn new(step_ms: i64, rate_window_ms: i64) -> Self {
        let step_ms = step_ms.max(1);
        Self {
            last: HashSet::new(),
            step_s: step_ms as f64 / 1000.0,
            window: u64::try_from((rate_window_ms / step_ms).max(1)).unwrap_or(1),
            restart_window: u64::try_from((15 * 60_000 / step_ms).max(1)).unwrap_or(1),
            step: 0,
            pods: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    /// Takes the raw samples of one step and returns the recorded series' values at it,
    /// with a stale marker ([`STALE_NAN_BITS`]) for each series recorded at the step before
    /// and not at this one (a deleted pod, a container in crash back-off).
    pub fn record(&mut self, snapshot: &crate::Snapshot) -> Vec<(Labels, f64)> {
        self.record_samples(snapshot.samples.iter().map(|(l, v)| (l, *v)))
    }

    /// [`Recorder::record`] for samples from anywhere: each `(labels, value)` of one step.
    pub fn record_samples<'a>(
        &mut self,
        samples: impl IntoIterator<Item = (&'a Labels, f64)>,
    ) -> Vec<(Labels, f64)> {
        let mut out = self.evaluate(samples);
        let now: HashSet<Labels> = out.iter().map(|(l, _)| l.clone()).collect();
        let stale = f64::from_bits(STALE_NAN_BITS);
        let mut gone: Vec<Labels> = self.last.difference(&now).cloned().collect();
        gone.sort();
        out.extend(gone.into_iter().map(|l| (l, stale)));
        self.last = now;
        out
    }

    fn evaluate<'a>(
        &mut self,
        samples: impl IntoIterator<Item = (&'a Labels, f64)>,
    ) -> Vec<(Labels, f64)> {
        let step = self.step;
        self.step += 1;
        for n in self.nodes.values_mut() {
            n.raw_busy = 0.0;
            n.raw_idle = 0.0;
            n.seen = false;
        }
        for (labels, v) in samples {
            self.take(step, labels, v);
        }
        let mut out = Vec::new();
        let mut services: BTreeMap<(String, String), ServiceSum> = BTreeMap::new();
        let (window, step_s) = (self.window, self.step_s);
        let restart_window = self.restart_window;
        self.pods.retain(|_, p| p.seen + FORGET_AFTER_STEPS > step);
        for (key, p) in &mut self.pods {
            if p.seen != step {
                continue;
            }
            let raw = std::mem::take(&mut p.raw);
            let pod = key.split_once('/').map_or(key.as_str(), |(_, pod)| pod);
            let labels = |name: &str| {
                let mut pairs = vec![
                    ("__name__", name),
                    ("namespace", p.namespace.as_str()),
                    ("pod", pod),
                ];
                if let Some(d) = &p.deployment {
                    pairs.push(("deployment", d));
                }
                if let Some(n) = &p.node {
                    pairs.push(("node", n));
                }
                Labels::new(pairs).ok()
            };
            let mut vals: Vec<(&str, f64)> = Vec::with_capacity(5);
            if let Some(c) = raw.cpu {
                p.cpu.observe(step, c);
                vals.push(("pod:cpu_usage:cores", p.cpu.rate(step, window, step_s)));
            }
            if let Some(m) = raw.memory {
                vals.push(("pod:memory_working_set:bytes", m));
            }
            if let Some(r) = raw.restarts {
                p.restarts.observe(step, r);
                vals.push((
                    "pod:container_restarts:increase15m",
                    p.restarts.increase(step, restart_window),
                ));
            }
            let (mut requests, mut errors) = (f64::NAN, f64::NAN);
            if let Some(r) = raw.requests {
                p.requests.observe(step, r);
                p.errors.observe(step, raw.errors);
                requests = p.requests.rate(step, window, step_s);
                errors = p.errors.rate(step, window, step_s);
                vals.push(("pod:http_requests:rate", requests));
                if requests > 0.0 {
                    vals.push(("pod:http_errors:ratio", errors / requests));
                }
            }
            let mut rates = [f64::NAN; N_BUCKETS];
            if raw.has_buckets {
                p.buckets.resize_with(N_BUCKETS, Counter::default);
                for (i, c) in p.buckets.iter_mut().enumerate() {
                    c.observe(step, raw.buckets[i]);
                    rates[i] = c.rate(step, window, step_s);
                }
                vals.push(("pod:http_latency_p99:seconds", p99(&rates)));
            }
            for (name, v) in vals {
                if v.is_finite()
                    && let Some(l) = labels(name)
                {
                    out.push((l, v));
                }
            }
            if let Some(svc) = &p.service
                && requests.is_finite()
            {
                let s = services
                    .entry((p.namespace.clone(), svc.clone()))
                    .or_insert_with(|| ServiceSum {
                        complete: true,
                        ..ServiceSum::default()
                    });
                s.pods += 1;
                s.requests += requests;
                if errors.is_finite() {
                    s.errors += errors;
                }
                if rates.iter().all(|r| r.is_finite()) {
                    for (a, b) in s.buckets.iter_mut().zip(rates) {
                        *a += b;
                    }
                } else {
                    s.complete = false;
                }
            }
        }
        for ((ns, svc), s) in &services {
            let labels = |name: &str| {
                Labels::new([
                    ("__name__", name),
                    ("namespace", ns.as_str()),
                    ("service", svc.as_str()),
                ])
                .ok()
            };
            let mut vals = vec![("service:http_requests:rate", s.requests)];
            if s.requests > 0.0 {
                vals.push(("service:http_errors:ratio", s.errors / s.requests));
            }
            if s.complete {
                vals.push(("service:http_latency_p99:seconds", p99(&s.buckets)));
            }
            for (name, v) in vals {
                if v.is_finite()
                    && let Some(l) = labels(name)
                {
                    out.push((l, v));
                }
            }
        }
        for (name, n) in &mut self.nodes {
            if !n.seen {
                continue;
            }
            n.busy.observe(step, n.raw_busy);
            n.idle.observe(step, n.raw_idle);
            let busy = n.busy.rate(step, window, step_s);
            let idle = n.idle.rate(step, window, step_s);
            let vals = [
                ("node:cpu_busy:ratio", busy / (busy + idle)),
                ("node:memory_used:ratio", 1.0 - n.available / n.total),
            ];
            for (metric, v) in vals {
                if v.is_finite()
                    && let Ok(l) = Labels::new([("__name__", metric), ("node", name.as_str())])
                {
                    out.push((l, v));
                }
            }
        }
        out
    }

    /// Takes one raw sample.
    fn take(&mut self, step: u64, labels: &Labels, v: f64) {
        let Some(name) = labels.metric_name() else {
            return;
        };
        if name.starts_with("node_") {
            let Some(node) = labels.get("node").or_else(|| labels.get("instance")) else {
                return;
            };
            let n = self.nodes.entry(node.to_owned()).or_default();
            n.seen = true;
            match name {
                "node_cpu_seconds_total" if labels.get("mode") == Some("idle") => n.raw_idle += v,
                "node_cpu_seconds_total" => n.raw_busy += v,
                "node_memory_MemTotal_bytes" => n.total = v,
                "node_memory_MemAvailable_bytes" => n.available = v,
                _ => {}
            }
            return;
        }
        let (Some(ns), Some(pod)) = (labels.get("namespace"), labels.get("pod")) else {
            return;
        };
        let p = self.pods.entry(format!("{ns}/{pod}")).or_default();
        p.seen = step;
        if p.namespace.is_empty() {
            p.namespace = ns.to_owned();
        }
        if p.node.is_none() {
            p.node = labels.get("node").map(str::to_owned);
        }
        if p.deployment.is_none() {
            p.deployment = labels.get("container").map(str::to_owned);
        }
        if p.service.is_none() {
            p.service = labels.get("service").map(str::to_owned);
        }
        match name {
            "container_cpu_usage_seconds_total" => p.raw.cpu = Some(v),
            "container_memory_working_set_bytes" => p.raw.memory = Some(v),
            "kube_pod_container_status_restarts_total" => p.raw.restarts = Some(v),
            "http_requests_total" => {
                *p.raw.requests.get_or_insert(0.0) += v;
                if labels.get("code").is_some_and(|c| c.starts_with('5')) {
                    p.raw.errors += v;
                }
            }
            "http_request_duration_seconds_bucket" => {
                if let Some(i) = labels.get("le").and_then(bucket_index) {
                    p.raw.buckets[i] += v;
                    p.raw.has_buckets = true;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cluster, DEFAULT_START, SimConfig, default_scenarios};
    use std::collections::BTreeSet;
    use std::time::Duration;

    #[test]
    fn counters_rate_over_their_window_and_survive_resets() {
        let mut c = Counter::default();
        for (step, v) in [(0, 10.0), (1, 70.0), (2, 130.0), (3, 10.0)] {
            c.observe(step, v);
        }
        // Increments 60, 60, 10 (reset), over three 60 s steps.
        assert!((c.rate(3, 5, 60.0) - 130.0 / 180.0).abs() < 1e-12);
        // Only the last increment is in a one-step window.
        assert!((c.rate(3, 1, 60.0) - 10.0 / 60.0).abs() < 1e-12);
        assert!(c.rate(10, 2, 60.0).is_nan());
        assert_eq!(c.increase(10, 2), 0.0);
    }

    #[test]
    fn records_every_rule_with_topology_labels_and_sees_a_bad_rollout() {
        let step = Duration::from_secs(60);
        let mut config = SimConfig::new(7, DEFAULT_START, step);
        config.scenarios = default_scenarios(DEFAULT_START, 4)
            .into_iter()
            .filter(|s| s.name == "bad_rollout")
            .collect();
        let truth_start = config.scenarios[0].start;
        let mut cluster = Cluster::new(config).unwrap();
        let mut recorder = Recorder::new(cluster.step_millis(), 5 * 60_000);
        let mut names = BTreeSet::new();
        let (mut before, mut during) = (Vec::new(), Vec::new());
        let mut stale = BTreeSet::new();
        for s in cluster.snapshots(truth_start.add_millis(30 * 60_000)) {
            let t = s.t;
            for (l, v) in recorder.record(&s) {
                names.insert(l.metric_name().unwrap().to_owned());
                if portent_core::is_stale_marker(v) {
                    stale.insert(l.get("pod").unwrap_or_default().to_owned());
                    continue;
                }
                assert!(v.is_finite(), "{l:?}");
                if l.metric_name() == Some("service:http_errors:ratio")
                    && l.get("service") == Some("frontend")
                {
                    if t < truth_start {
                        before.push(v);
                    } else if t >= truth_start.add_millis(10 * 60_000) {
                        during.push(v);
                    }
                }
                if l.metric_name().is_some_and(|n| n.starts_with("pod:")) {
                    assert!(
                        l.get("node").is_some() && l.get("deployment").is_some(),
                        "{l:?}"
                    );
                }
            }
        }
        assert_eq!(names.len(), 11, "{names:?}");
        // The rollout replaced frontend's pods: the old ones' series ended with a marker.
        assert!(
            stale.iter().any(|p| p.starts_with("frontend-")),
            "{stale:?}"
        );
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            mean(&during) > 5.0 * mean(&before),
            "error ratio {} before, {} during",
            mean(&before),
            mean(&during)
        );
    }
}
