//! The simulated cluster: state at one instant, advanced one step at a time.

use std::collections::BTreeSet;

use portent_core::{Labels, Sample, Timestamp};

use crate::config::{DeploymentSpec, NodeSpec, SimConfig, SimError};
use crate::histogram::{DEFAULT_BUCKETS, cumulative, lognormal_mean};
use crate::rng::Rng;
use crate::scenario::{GroundTruth, Scenario, ScenarioKind};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// node_exporter's CPU modes that the simulation fills (`idle` last is not required).
const MODES: [&str; 4] = ["idle", "iowait", "system", "user"];
/// Request methods and their share of traffic.
const METHODS: [(&str, f64); 2] = [("GET", 0.8), ("POST", 0.2)];
/// Status codes; 404 shares per method, 5xx comes from the deployment.
const CODES: [&str; 3] = ["200", "404", "500"];
const NOT_FOUND: [f64; 2] = [0.01, 0.002];
/// 5xx share of a bad version's pods.
const BAD_ERROR_RATIO: f64 = 0.08;
/// Kubernetes' crash back-off: 10 s, doubling, capped at 5 min.
const BACKOFF_START_MS: i64 = 10_000;
const BACKOFF_MAX_MS: i64 = 300_000;

const CPU: &str = "container_cpu_usage_seconds_total";
const WORKING_SET: &str = "container_memory_working_set_bytes";
const RESTARTS: &str = "kube_pod_container_status_restarts_total";
const REQUESTS: &str = "http_requests_total";
const BUCKET: &str = "http_request_duration_seconds_bucket";
const SUM: &str = "http_request_duration_seconds_sum";

/// Builds a label set from constant names (always valid).
fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().copied()).expect("the simulator's label names are valid")
}

/// One series and its current value.
#[derive(Debug, Clone)]
struct Metric {
    labels: Labels,
    value: f64,
}

impl Metric {
    fn new(pairs: &[(&str, &str)], value: f64) -> Self {
        Self {
            labels: labels(pairs),
            value,
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    spec: NodeSpec,
    rng: Rng,
    /// Per CPU, one counter per [`MODES`].
    cpu: Vec<[Metric; 4]>,
    mem_total: Metric,
    mem_available: Metric,
    /// CPU cores in use this tick (pods and system), and the demand before contention.
    used: f64,
    pressure: f64,
}

#[derive(Debug, Clone)]
struct Rollout {
    hash: String,
    bad: bool,
    /// The ground truth of the bad rollout whose pods these are, or whose rollback this is.
    truth: Option<usize>,
}

#[derive(Debug, Clone)]
struct Deploy {
    spec: DeploymentSpec,
    rng: Rng,
    /// The pod-template hash of the last completed rollout.
    current: String,
    rollout: Option<Rollout>,
    next_rollout: Timestamp,
    /// Slow (AR(1)) traffic noise in log space.
    noise: f64,
    rps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Running,
    Waiting { until: Timestamp },
}

#[derive(Debug, Clone)]
struct Pod {
    name: String,
    deploy: usize,
    node: usize,
    hash: String,
    bad: bool,
    rng: Rng,
    state: Container,
    started: Timestamp,
    crashlooping: bool,
    crash_at: Option<Timestamp>,
    backoff_ms: i64,
    /// This tick: CPU wanted (after the limit) and CPU got.
    cpu_want: f64,
    rps: f64,
    cpu: Metric,
    memory: Metric,
    mem_limit: Metric,
    cpu_limit: Option<Metric>,
    restarts: Metric,
    info: Metric,
    /// [`METHODS`] × [`CODES`].
    requests: Vec<Metric>,
    /// [`DEFAULT_BUCKETS`] then `+Inf`.
    buckets: Vec<Metric>,
    sum: Metric,
    count: Metric,
}

impl Pod {
    fn running(&self) -> bool {
        self.state == Container::Running
    }

    /// A new container in the same pod: its own counters start again from zero.
    fn reset_container(&mut self, now: Timestamp) {
        self.restarts.value += 1.0;
        self.started = now;
        for m in self
            .requests
            .iter_mut()
            .chain(self.buckets.iter_mut())
            .chain([&mut self.cpu, &mut self.sum, &mut self.count])
        {
            m.value = 0.0;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Active { truth: usize },
    Done,
}

#[derive(Debug, Clone)]
struct ScenarioState {
    spec: Scenario,
    deploy: usize,
    phase: Phase,
    /// The pod at fault, for the kinds that have one.
    pod: Option<String>,
    /// For a bad rollout: the template to roll back to.
    rollback_to: Option<String>,
}

/// A pod as the API server would list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Pod name, `<deployment>-<template hash>-<suffix>`.
    pub name: String,
    /// Its deployment (and container) name.
    pub deployment: String,
    /// The node it runs on.
    pub node: String,
    /// Whether its container is running (not in crash back-off).
    pub running: bool,
}

/// The samples of every series at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When.
    pub t: Timestamp,
    /// Each series and its value.
    pub samples: Vec<(Labels, f64)>,
}

impl Snapshot {
    /// The samples as `(labels, sample)` pairs, ready for the engine.
    pub fn iter(&self) -> impl Iterator<Item = (&Labels, Sample)> {
        self.samples
            .iter()
            .map(|(l, v)| (l, Sample::new(self.t, *v)))
    }
}

/// Yields a [`Snapshot`] per step up to (not including) a time; see [`Cluster::snapshots`].
#[derive(Debug)]
pub struct Snapshots<'a> {
    cluster: &'a mut Cluster,
    until: Timestamp,
}

impl Iterator for Snapshots<'_> {
    type Item = Snapshot;

    fn next(&mut self) -> Option<Snapshot> {
        if self.cluster.now >= self.until {
            return None;
        }
        let s = self.cluster.snapshot();
        self.cluster.tick();
        Some(s)
    }
}

/// A deterministic, simulated Kubernetes cluster.
///
/// It holds the state at [`Cluster::now`]; [`Cluster::tick`] advances it by one step. The
/// same [`SimConfig`] (seed included) always produces the same samples.
#[derive(Debug, Clone)]
pub struct Cluster {
    seed: u64,
    step_ms: i64,
    now: Timestamp,
    churn: crate::config::Churn,
    nodes: Vec<Node>,
    deploys: Vec<Deploy>,
    pods: Vec<Pod>,
    /// Every pod name ever used, so that a name is never reused.
    names: BTreeSet<String>,
    rng: Rng,
    scenarios: Vec<ScenarioState>,
    truth: Vec<GroundTruth>,
}

impl Cluster {
    /// A cluster at `config.start`, every deployment at full strength.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let step_ms =
            i64::try_from(config.step.as_millis()).map_err(|_| SimError::Step(config.step))?;
        let seed = config.seed;
        let before = config.start.add_millis(-step_ms);
        let nodes = config.nodes.iter().map(|n| new_node(seed, n)).collect();
        let mut rng = Rng::new(seed, "cluster");
        let deploys: Vec<Deploy> = config
            .deployments
            .iter()
            .map(|d| {
                let first = before.add_millis(exponential(&mut rng, config.churn.rollouts_per_day));
                Deploy {
                    spec: d.clone(),
                    rng: Rng::new(seed, &format!("deploy/{}/{}", d.namespace, d.name)),
                    current: rng.suffix(10),
                    rollout: None,
                    next_rollout: first,
                    noise: 0.0,
                    rps: 0.0,
                }
            })
            .collect();
        let scenarios = config
            .scenarios
            .iter()
            .map(|s| ScenarioState {
                deploy: config
                    .deployments
                    .iter()
                    .position(|d| d.namespace == s.namespace && d.name == s.deployment)
                    .unwrap_or(0),
                spec: s.clone(),
                phase: Phase::Pending,
                pod: None,
                rollback_to: None,
            })
            .collect();
        let mut cluster = Self {
            seed,
            step_ms,
            now: before,
            churn: config.churn,
            nodes,
            deploys,
            pods: Vec::new(),
            names: BTreeSet::new(),
            rng,
            scenarios,
            truth: Vec::new(),
        };
        for d in 0..cluster.deploys.len() {
            for _ in 0..cluster.deploys[d].spec.replicas {
                let hash = cluster.deploys[d].current.clone();
                cluster.create_pod(d, &hash, false, before.add_millis(-DAY_MS));
            }
        }
        // The first sample is the result of an ordinary step, so gauges are filled in.
        cluster.tick();
        Ok(cluster)
    }

    /// The time of the current state.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The step, in milliseconds.
    pub fn step_millis(&self) -> i64 {
        self.step_ms
    }

    /// The ground truth of every incident that has begun so far.
    pub fn truth(&self) -> &[GroundTruth] {
        &self.truth
    }

    /// The pods now, in creation order.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.pods
            .iter()
            .map(|p| {
                let d = &self.deploys[p.deploy].spec;
                PodInfo {
                    namespace: d.namespace.clone(),
                    name: p.name.clone(),
                    deployment: d.name.clone(),
                    node: self.nodes[p.node].spec.name.clone(),
                    running: p.running(),
                }
            })
            .collect()
    }

    /// Calls `f` with every series present now and its sample (no copies).
    ///
    /// A container in crash back-off has no cAdvisor or application series, as in a real
    /// cluster; the kube-state-metrics series of its pod remain.
    pub fn for_each_sample(&self, mut f: impl FnMut(&Labels, Sample)) {
        self.visit(&mut |l, v| f(l, Sample::new(self.now, v)));
    }

    pub(crate) fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Labels, f64)) {
        for n in &self.nodes {
            for m in n
                .cpu
                .iter()
                .flatten()
                .chain([&n.mem_total, &n.mem_available])
            {
                f(&m.labels, m.value);
            }
        }
        for p in &self.pods {
            for m in [&p.info, &p.restarts, &p.mem_limit]
                .into_iter()
                .chain(p.cpu_limit.as_ref())
            {
                f(&m.labels, m.value);
            }
            if p.running() {
                for m in [&p.cpu, &p.memory]
                    .into_iter()
                    .chain(&p.requests)
                    .chain(&p.buckets)
                    .chain([&p.sum, &p.count])
                {
                    f(&m.labels, m.value);
                }
            }
        }
    }

    /// Every series present now, with its value.
    pub fn snapshot(&self) -> Snapshot {
        let mut samples = Vec::new();
        self.visit(&mut |l, v| samples.push((l.clone(), v)));
        Snapshot {
            t: self.now,
            samples,
        }
    }

    /// Emits the samples of every step from now up to (not including) `until`, then stands at
    /// the first step at or after `until` (so consecutive calls neither repeat nor skip).
    pub fn run(&mut self, until: Timestamp, mut f: impl FnMut(&Labels, Sample)) {
        while self.now < until {
            self.for_each_sample(&mut f);
            self.tick();
        }
    }

    /// A [`Snapshot`] per step from now up to (not including) `until`.
    pub fn snapshots(&mut self, until: Timestamp) -> Snapshots<'_> {
        Snapshots {
            cluster: self,
            until,
        }
    }

    /// Advances the clock by one step: incidents begin and end, rollouts and churn progress,
    /// traffic flows, every series moves.
    pub fn tick(&mut self) {
        self.now = self.now.add_millis(self.step_ms);
        self.update_scenarios();
        self.progress_rollouts();
        self.churn();
        self.update_containers();
        self.update_traffic();
        self.update_pods();
        self.update_nodes();
    }

    fn create_pod(&mut self, d: usize, hash: &str, bad: bool, started: Timestamp) -> usize {
        let spec = &self.deploys[d].spec;
        let mut name = String::new();
        for _ in 0..64 {
            name = format!("{}-{}-{}", spec.name, hash, self.rng.suffix(5));
            if !self.names.contains(&name) {
                break;
            }
        }
        self.names.insert(name.clone());
        // The scheduler's spreading: the node with the fewest pods, ties at random.
        let mut counts = vec![0usize; self.nodes.len()];
        for p in &self.pods {
            counts[p.node] += 1;
        }
        let fewest = counts.iter().copied().min().unwrap_or(0);
        let candidates: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] == fewest).collect();
        let node = candidates[self.rng.below(candidates.len())];
        let node_name = self.nodes[node].spec.name.clone();
        let (ns, c, pod) = (spec.namespace.as_str(), spec.name.as_str(), name.as_str());
        let container = [
            ("namespace", ns),
            ("pod", pod),
            ("container", c),
            ("node", node_name.as_str()),
        ];
        let with = |metric: &str, base: &[(&str, &str)], extra: &[(&str, &str)], value: f64| {
            let pairs: Vec<_> = [("__name__", metric)]
                .iter()
                .chain(base)
                .chain(extra)
                .copied()
                .collect();
            Metric::new(&pairs, value)
        };
        let app = [("namespace", ns), ("service", c), ("pod", pod)];
        let requests = METHODS
            .iter()
            .flat_map(|(method, _)| {
                CODES.map(|code| with(REQUESTS, &app, &[("method", method), ("code", code)], 0.0))
            })
            .collect();
        let buckets = DEFAULT_BUCKETS
            .iter()
            .map(f64::to_string)
            .chain(["+Inf".to_string()])
            .map(|le| with(BUCKET, &app, &[("le", &le)], 0.0))
            .collect();
        let limit = |resource, unit, v| {
            with(
                "kube_pod_container_resource_limits",
                &container,
                &[("resource", resource), ("unit", unit)],
                v,
            )
        };
        let rs = format!("{c}-{hash}");
        let info = [
            ("node", node_name.as_str()),
            ("created_by_kind", "ReplicaSet"),
            ("created_by_name", &rs),
        ];
        let pod_state = Pod {
            rng: Rng::new(self.seed, &format!("pod/{ns}/{pod}")),
            cpu: with(CPU, &container, &[], 0.0),
            memory: with(WORKING_SET, &container, &[], 0.0),
            mem_limit: limit("memory", "byte", spec.memory_limit),
            cpu_limit: spec.cpu_limit.map(|l| limit("cpu", "core", l)),
            restarts: with(RESTARTS, &container[..3], &[], 0.0),
            info: with("kube_pod_info", &container[..2], &info, 1.0),
            requests,
            buckets,
            sum: with(SUM, &app, &[], 0.0),
            count: with("http_request_duration_seconds_count", &app, &[], 0.0),
            name,
            deploy: d,
            node,
            hash: hash.to_string(),
            bad,
            state: Container::Running,
            started,
            crashlooping: false,
            crash_at: None,
            backoff_ms: 0,
            cpu_want: 0.0,
            rps: 0.0,
        };
        self.pods.push(pod_state);
        self.pods.len() - 1
    }

    fn pod_index(&self, name: &str) -> Option<usize> {
        self.pods.iter().position(|p| p.name == name)
    }

    /// Whether an incident holds the deployment still (no churn, no routine rollouts).
    fn frozen(&self, d: usize) -> bool {
        self.deploys[d].rollout.is_some()
            || self
                .scenarios
                .iter()
                .any(|s| s.deploy == d && matches!(s.phase, Phase::Active { .. }))
    }

    fn update_scenarios(&mut self) {
        for i in 0..self.scenarios.len() {
            let s = &self.scenarios[i];
            match s.phase {
                Phase::Pending if self.now >= s.spec.start => self.begin(i),
                Phase::Active { truth } if self.now >= s.spec.end => self.finish(i, truth),
                _ => {}
            }
        }
    }

    fn begin(&mut self, i: usize) {
        let (kind, d) = (self.scenarios[i].spec.kind, self.scenarios[i].deploy);
        let spec = self.deploys[d].spec.clone();
        let (ns, svc) = (spec.namespace.as_str(), spec.name.as_str());
        let service = labels(&[("namespace", ns), ("service", svc)]);
        // A routine rollout in progress would delete an old pod picked as the target: pick a
        // pod of the new template, or, if none is up yet, pause the rollout where it stands.
        let incoming = match &self.deploys[d].rollout {
            Some(r) if r.truth.is_none() => Some(r.hash.clone()),
            _ => None,
        };
        let survives = |p: &Pod| incoming.as_ref().is_none_or(|h| &p.hash == h);
        let mut target = self
            .pods
            .iter()
            .position(|p| p.deploy == d && p.running() && survives(p));
        if target.is_none() && incoming.is_some() {
            self.deploys[d].rollout = None;
        }
        target = target
            .or_else(|| self.pods.iter().position(|p| p.deploy == d && p.running()))
            .or_else(|| self.pods.iter().position(|p| p.deploy == d));
        let target_name = target
            .map(|p| self.pods[p].name.clone())
            .unwrap_or_default();
        let pod_sel = labels(&[("namespace", ns), ("pod", &target_name), ("container", svc)]);
        let on_svc = |m: &str| labels(&[("__name__", m), ("namespace", ns), ("service", svc)]);
        let on_pod = |m: &str| labels(&[("__name__", m), ("namespace", ns), ("pod", &target_name)]);
        let (cause, affected) = match kind {
            ScenarioKind::LatencyCreep => (service, vec![on_svc(BUCKET), on_svc(SUM)]),
            ScenarioKind::NightTrafficDrop => (service, vec![on_svc(REQUESTS)]),
            ScenarioKind::JointShift => (
                pod_sel,
                vec![on_pod(WORKING_SET), on_pod(BUCKET), on_pod(SUM)],
            ),
            ScenarioKind::MemoryLeak => (pod_sel, vec![on_pod(WORKING_SET), on_pod(RESTARTS)]),
            ScenarioKind::Crashloop => {
                if let Some(p) = target {
                    self.pods[p].crashlooping = true;
                    self.crash(p);
                }
                (
                    pod_sel,
                    vec![on_pod(RESTARTS), on_pod(CPU), on_pod(REQUESTS)],
                )
            }
            ScenarioKind::NoisyNeighbour => {
                let node = target.map_or(0, |p| self.pods[p].node);
                let instance = format!("{}:9100", self.nodes[node].spec.name);
                let mut affected = vec![
                    labels(&[
                        ("__name__", "node_cpu_seconds_total"),
                        ("instance", &instance),
                    ]),
                    on_pod(CPU),
                ];
                for p in self
                    .pods
                    .iter()
                    .filter(|p| p.node == node && p.name != target_name)
                {
                    let pns = &self.deploys[p.deploy].spec.namespace;
                    affected.push(labels(&[
                        ("__name__", BUCKET),
                        ("namespace", pns),
                        ("pod", &p.name),
                    ]));
                }
                (pod_sel, affected)
            }
            ScenarioKind::BadRollout => {
                let hash = self.rng.suffix(10);
                let rs = format!("{svc}-{hash}");
                self.scenarios[i].rollback_to = Some(self.deploys[d].current.clone());
                self.deploys[d].rollout = Some(Rollout {
                    hash,
                    bad: true,
                    truth: Some(self.truth.len()),
                });
                let errors = on_svc(REQUESTS).with("code", "500").expect("a valid name");
                (
                    labels(&[("namespace", ns), ("replicaset", &rs)]),
                    vec![errors],
                )
            }
        };
        self.truth.push(GroundTruth {
            scenario: self.scenarios[i].spec.name.clone(),
            kind,
            start: self.now,
            end: self.scenarios[i].spec.end,
            cause,
            affected,
        });
        self.scenarios[i].pod = target.map(|_| target_name);
        self.scenarios[i].phase = Phase::Active {
            truth: self.truth.len() - 1,
        };
    }

    fn finish(&mut self, i: usize, truth: usize) {
        let d = self.scenarios[i].deploy;
        let pod = self.scenarios[i]
            .pod
            .as_deref()
            .and_then(|n| self.pod_index(n));
        self.truth[truth].end = self.now;
        match self.scenarios[i].spec.kind {
            // The leak reached the limit: OOM-killed, a fresh container.
            ScenarioKind::MemoryLeak => {
                if let Some(p) = pod {
                    let now = self.now;
                    self.pods[p].reset_container(now);
                }
            }
            ScenarioKind::Crashloop => {
                if let Some(p) = pod {
                    self.pods[p].crashlooping = false;
                    self.pods[p].crash_at = None;
                }
            }
            ScenarioKind::BadRollout => {
                // A rollback reuses the previous template, hence its hash.
                let good = self.scenarios[i]
                    .rollback_to
                    .clone()
                    .unwrap_or_else(|| self.deploys[d].current.clone());
                self.deploys[d].rollout = Some(Rollout {
                    hash: good,
                    bad: false,
                    truth: Some(truth),
                });
                // Until progress_rollouts sees the last bad pod go: one pod per step.
                let replicas = self.deploys[d].spec.replicas as i64;
                self.truth[truth].end = self.now.add_millis((replicas - 1) * self.step_ms);
            }
            _ => {}
        }
        self.scenarios[i].phase = Phase::Done;
    }

    /// One pod per step: a new one of the new template up, an old one down (maxSurge 1,
    /// maxUnavailable 0).
    fn progress_rollouts(&mut self) {
        for d in 0..self.deploys.len() {
            let Some(r) = self.deploys[d].rollout.clone() else {
                continue;
            };
            let old = self
                .pods
                .iter()
                .position(|p| p.deploy == d && (p.hash != r.hash || p.bad != r.bad));
            let new_count = self
                .pods
                .iter()
                .filter(|p| p.deploy == d && p.hash == r.hash && p.bad == r.bad)
                .count();
            if let Some(o) = old {
                let p = self.create_pod(d, &r.hash, r.bad, self.now);
                if r.bad
                    && let Some(truth) = r.truth
                {
                    let (ns, name) = (
                        self.deploys[d].spec.namespace.clone(),
                        self.pods[p].name.clone(),
                    );
                    self.truth[truth].affected.push(labels(&[
                        ("__name__", "http_requests_total"),
                        ("namespace", &ns),
                        ("pod", &name),
                        ("code", "500"),
                    ]));
                }
                self.pods.remove(o);
                let done = !self
                    .pods
                    .iter()
                    .any(|p| p.deploy == d && (p.hash != r.hash || p.bad != r.bad));
                if done
                    && !r.bad
                    && let Some(truth) = r.truth
                {
                    self.truth[truth].end = self.now;
                }
            } else if new_count < self.deploys[d].spec.replicas {
                self.create_pod(d, &r.hash, r.bad, self.now);
            } else {
                self.deploys[d].current = r.hash;
                self.deploys[d].rollout = None;
            }
        }
    }

    /// Routine rollouts on weekdays in office hours, pods deleted and replaced, rare restarts.
    fn churn(&mut self) {
        let dt_days = self.step_ms as f64 / DAY_MS as f64;
        for d in 0..self.deploys.len() {
            if self.now < self.deploys[d].next_rollout {
                continue;
            }
            if self.frozen(d) {
                // A routine rollout that falls due while an incident holds the deployment is
                // skipped, not held back: held back, every frozen deployment rolled out the
                // minute its incident ended, and each rollout's dip (a replaced pod's rate
                // needs two samples) was an anomaly right at the end of every scenario.
                if self
                    .scenarios
                    .iter()
                    .any(|s| s.deploy == d && matches!(s.phase, Phase::Active { .. }))
                {
                    let gap = exponential(&mut self.rng, self.churn.rollouts_per_day);
                    self.deploys[d].next_rollout = self.now.add_millis(gap);
                }
                continue;
            }
            let (weekday, hour) = weekday_hour(self.now);
            if (1..=5).contains(&weekday) && (9.0..17.0).contains(&hour) {
                let hash = self.rng.suffix(10);
                self.deploys[d].rollout = Some(Rollout {
                    hash,
                    bad: false,
                    truth: None,
                });
                let gap = exponential(&mut self.rng, self.churn.rollouts_per_day);
                self.deploys[d].next_rollout = self.now.add_millis(gap);
            } else {
                self.deploys[d].next_rollout = self.now.add_millis(HOUR_MS);
            }
        }
        let p_delete = dt_days * 24.0 / self.churn.pod_lifetime_hours.max(1e-9);
        let p_restart = dt_days * self.churn.restarts_per_pod_day;
        let mut i = 0;
        while i < self.pods.len() {
            let d = self.pods[i].deploy;
            let (delete, restart) = (self.rng.chance(p_delete), self.rng.chance(p_restart));
            if self.frozen(d) || !self.pods[i].running() {
                i += 1;
                continue;
            }
            if delete {
                let (hash, bad) = (self.pods[i].hash.clone(), self.pods[i].bad);
                self.pods.remove(i);
                self.create_pod(d, &hash, bad, self.now);
                continue;
            }
            if restart {
                let now = self.now;
                self.pods[i].reset_container(now);
            }
            i += 1;
        }
    }

    fn crash(&mut self, p: usize) {
        let now = self.now;
        let pod = &mut self.pods[p];
        pod.reset_container(now);
        pod.backoff_ms = if pod.backoff_ms == 0 {
            BACKOFF_START_MS
        } else {
            (pod.backoff_ms * 2).min(BACKOFF_MAX_MS)
        };
        pod.state = Container::Waiting {
            until: now.add_millis(pod.backoff_ms),
        };
        pod.crash_at = None;
    }

    /// Crash loops: a container starts after its back-off and crashes 20–90 s later.
    fn update_containers(&mut self) {
        for p in 0..self.pods.len() {
            let now = self.now;
            match self.pods[p].state {
                Container::Waiting { until } if now >= until => {
                    let pod = &mut self.pods[p];
                    pod.state = Container::Running;
                    pod.started = now;
                    if pod.crashlooping {
                        let after = 20_000 + (pod.rng.uniform() * 70_000.0) as i64;
                        pod.crash_at = Some(now.add_millis(after));
                    } else {
                        pod.backoff_ms = 0;
                    }
                }
                Container::Running if self.pods[p].crash_at.is_some_and(|t| now >= t) => {
                    self.crash(p)
                }
                _ => {}
            }
        }
    }

    /// Progress in `[0, 1]` through the active scenario of `kind` on deployment `d`, if any.
    fn progress(&self, kind: ScenarioKind, d: usize) -> Option<f64> {
        self.scenarios
            .iter()
            .find(|s| {
                s.spec.kind == kind && s.deploy == d && matches!(s.phase, Phase::Active { .. })
            })
            .map(|s| {
                let span = s.spec.end.millis_since(s.spec.start).max(1) as f64;
                (self.now.millis_since(s.spec.start) as f64 / span).clamp(0.0, 1.0)
            })
    }

    /// Minutes since the active scenario of `kind` targeting pod `name` began, if any.
    fn pod_scenario(&self, kind: ScenarioKind, name: &str) -> Option<f64> {
        self.scenarios
            .iter()
            .find(|s| {
                s.spec.kind == kind
                    && s.pod.as_deref() == Some(name)
                    && matches!(s.phase, Phase::Active { .. })
            })
            .map(|s| self.now.millis_since(s.spec.start) as f64 / MINUTE_MS as f64)
    }

    fn update_traffic(&mut self) {
        let dt_min = self.step_ms as f64 / MINUTE_MS as f64;
        // AR(1) noise with a 20-minute memory whatever the step, 4% stationary spread.
        let phi = (-dt_min / 20.0).exp();
        let innovation = 0.04 * (1.0 - phi * phi).sqrt();
        for d in 0..self.deploys.len() {
            let (weekday, mut hour) = weekday_hour(self.now);
            if self.progress(ScenarioKind::NightTrafficDrop, d).is_some() {
                hour = (hour + 12.0) % 24.0;
            }
            let dep = &mut self.deploys[d];
            let daily =
                0.55 + 0.45 * (std::f64::consts::TAU * (hour - dep.spec.peak_hour) / 24.0).cos();
            let weekly = if weekday == 0 || weekday == 6 {
                dep.spec.weekend_factor
            } else {
                1.0
            };
            dep.noise = phi * dep.noise + innovation * dep.rng.gauss();
            let white = 0.02 * dep.rng.gauss();
            dep.rps = dep.spec.peak_rps * daily * weekly * (dep.noise + white).exp();
        }
    }

    fn update_pods(&mut self) {
        let dt = self.step_ms as f64 / 1000.0;
        // Traffic split over the running pods, with a little imbalance.
        for d in 0..self.deploys.len() {
            let running: Vec<usize> = (0..self.pods.len())
                .filter(|&p| self.pods[p].deploy == d && self.pods[p].running())
                .collect();
            let weights: Vec<f64> = running
                .iter()
                .map(|&p| (0.03 * self.pods[p].rng.gauss()).exp())
                .collect();
            let total: f64 = weights.iter().sum();
            for (&p, w) in running.iter().zip(&weights) {
                self.pods[p].rps = self.deploys[d].rps * w / total;
            }
        }
        // CPU demand, then contention on each node.
        for n in &mut self.nodes {
            n.used = 0.15 + 0.02 * n.rng.gauss().abs();
        }
        for p in 0..self.pods.len() {
            if !self.pods[p].running() {
                continue;
            }
            let g = self.pods[p].rng.gauss();
            let pod = &self.pods[p];
            let spec = &self.deploys[pod.deploy].spec;
            let mut want = spec.cpu_idle + pod.rps * spec.cpu_per_request * (1.0 + 0.05 * g);
            if let Some(minutes) = self.pod_scenario(ScenarioKind::NoisyNeighbour, &pod.name) {
                let cpus = f64::from(self.nodes[pod.node].spec.cpus);
                want += 1.4 * cpus * (minutes / 3.0).min(1.0);
            }
            if let Some(limit) = spec.cpu_limit {
                want = want.min(limit);
            }
            let node = pod.node;
            let pod = &mut self.pods[p];
            pod.cpu_want = want.max(0.0);
            self.nodes[node].used += pod.cpu_want;
        }
        for n in &mut self.nodes {
            let cpus = f64::from(n.spec.cpus);
            n.pressure = n.used / cpus;
            n.used = n.used.min(0.97 * cpus);
        }
        for p in 0..self.pods.len() {
            if !self.pods[p].running() {
                continue;
            }
            let d = self.pods[p].deploy;
            let spec = self.deploys[d].spec.clone();
            let node = &self.nodes[self.pods[p].node];
            let cpus = f64::from(node.spec.cpus);
            let share = if node.pressure > 0.97 {
                0.97 / node.pressure
            } else {
                1.0
            };
            let contention = 1.0 + 2.5 * (node.pressure - 0.85).max(0.0);
            let creep = self
                .progress(ScenarioKind::LatencyCreep, d)
                .map_or(1.0, |p| 1.0 + 2.0 * p);
            let joint = self
                .pod_scenario(ScenarioKind::JointShift, &self.pods[p].name)
                .map_or(0.0, |minutes| (minutes / 15.0).min(1.0));
            let leak = self
                .pod_scenario(ScenarioKind::MemoryLeak, &self.pods[p].name)
                .and(self.progress(ScenarioKind::MemoryLeak, d));
            let now = self.now;
            let pod = &mut self.pods[p];
            let used = pod.cpu_want * share;
            let utilisation = (pod.cpu_want / spec.cpu_limit.unwrap_or(cpus)).min(1.0);
            let bad = if pod.bad { 1.3 } else { 1.0 };
            let median = spec.latency_median
                * (1.0 + 1.2 * utilisation * utilisation)
                * creep
                * (1.0 + 0.12 * joint)
                * bad
                * contention
                * (0.04 * pod.rng.gauss()).exp();
            // Requests by method and code.
            let n = pod.rng.round(pod.rps * dt);
            let n_get = pod.rng.round(n * METHODS[0].1).min(n);
            let error_ratio = if pod.bad {
                BAD_ERROR_RATIO
            } else {
                spec.error_ratio
            };
            for (m, n_m) in [n_get, n - n_get].into_iter().enumerate() {
                let e5 = pod.rng.round(n_m * error_ratio).min(n_m);
                let e4 = pod.rng.round(n_m * NOT_FOUND[m]).min(n_m - e5);
                let base = m * CODES.len();
                pod.requests[base].value += n_m - e5 - e4;
                pod.requests[base + 1].value += e4;
                pod.requests[base + 2].value += e5;
            }
            let cum = cumulative(n, median, spec.latency_sigma);
            for (b, c) in pod.buckets.iter_mut().zip(cum.iter().chain([&n])) {
                b.value += c;
            }
            pod.count.value += n;
            pod.sum.value += n * lognormal_mean(median, spec.latency_sigma);
            pod.cpu.value += used * dt;
            // Working set: warms up over 10 minutes, follows traffic, leaks if told to.
            let age_min = now.millis_since(pod.started) as f64 / MINUTE_MS as f64;
            let warm = 0.6 + 0.4 * (age_min / 10.0).clamp(0.0, 1.0);
            let mut ws = (spec.memory_base + spec.memory_per_rps * pod.rps)
                * warm
                * (1.0 + 0.01 * pod.rng.gauss())
                * (1.0 + 0.08 * joint);
            if let Some(p) = leak {
                ws += p * (0.95 * spec.memory_limit - ws).max(0.0);
            }
            pod.memory.value = ws.min(0.99 * spec.memory_limit).max(0.0);
        }
    }

    fn update_nodes(&mut self) {
        let dt = self.step_ms as f64 / 1000.0;
        let mut ws = vec![0.0; self.nodes.len()];
        for p in self.pods.iter().filter(|p| p.running()) {
            ws[p.node] += p.memory.value;
        }
        for (n, ws) in self.nodes.iter_mut().zip(ws) {
            let cpus = f64::from(n.spec.cpus);
            for cpu in &mut n.cpu {
                let busy = (n.used / cpus * (1.0 + 0.04 * n.rng.gauss())).clamp(0.0, 0.995);
                let fractions = [1.0 - busy, 0.03 * busy, 0.22 * busy, 0.75 * busy];
                for (m, f) in cpu.iter_mut().zip(fractions) {
                    m.value += f * dt;
                }
            }
            let total = n.spec.memory_bytes;
            let available =
                total - 1.25 * ws - 1.2 * 1024.0 * 1024.0 * 1024.0 + 40e6 * n.rng.gauss();
            n.mem_available.value = available.clamp(0.02 * total, total);
        }
    }
}

fn new_node(seed: u64, spec: &NodeSpec) -> Node {
    let instance = format!("{}:9100", spec.name);
    let mut rng = Rng::new(seed, &format!("node/{}", spec.name));
    // Counters of a node that has been up for a while.
    let uptime = 86_400.0 * (3.0 + 10.0 * rng.uniform());
    let cpu = (0..spec.cpus)
        .map(|c| {
            let c = c.to_string();
            let start = [0.8, 0.005, 0.04, 0.155];
            std::array::from_fn(|m| {
                Metric::new(
                    &[
                        ("__name__", "node_cpu_seconds_total"),
                        ("instance", &instance),
                        ("node", &spec.name),
                        ("cpu", &c),
                        ("mode", MODES[m]),
                    ],
                    (start[m] * uptime).round(),
                )
            })
        })
        .collect();
    let node_labels = |name: &str, v: f64| {
        Metric::new(
            &[
                ("__name__", name),
                ("instance", &instance),
                ("node", &spec.name),
            ],
            v,
        )
    };
    Node {
        cpu,
        mem_total: node_labels("node_memory_MemTotal_bytes", spec.memory_bytes),
        mem_available: node_labels("node_memory_MemAvailable_bytes", spec.memory_bytes),
        spec: spec.clone(),
        rng,
        used: 0.0,
        pressure: 0.0,
    }
}

/// An exponentially distributed wait with `per_day` events a day, in milliseconds.
fn exponential(rng: &mut Rng, per_day: f64) -> i64 {
    if per_day <= 0.0 {
        return i64::MAX / 4;
    }
    let u = 1.0 - rng.uniform();
    ((-u.ln() / per_day) * DAY_MS as f64).min(1e15) as i64
}

/// Day of the week (0 = Sunday) and hour of the day (fractional), UTC.
pub(crate) fn weekday_hour(t: Timestamp) -> (i64, f64) {
    let ms = t.millis();
    let day = ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday.
    (
        (day + 4).rem_euclid(7),
        ms.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_START;

    #[test]
    fn default_start_is_a_monday_midnight() {
        assert_eq!(weekday_hour(DEFAULT_START), (1, 0.0));
        assert_eq!(
            weekday_hour(DEFAULT_START.add_millis(5 * DAY_MS + 15 * HOUR_MS)),
            (6, 15.0)
        );
    }

    #[test]
    fn rollouts_due_while_a_scenario_holds_a_deployment_are_skipped_not_held_back() {
        // A rollout every half hour on average, and a three-hour latency creep on checkout
        // from Monday 09:00: several fall due during it. Held back, one began the minute the
        // creep ended.
        let mut config = SimConfig::new(7, DEFAULT_START, std::time::Duration::from_secs(60));
        config.churn.rollouts_per_day = 48.0;
        let start = DEFAULT_START.add_millis(9 * HOUR_MS);
        let end = start.add_millis(3 * HOUR_MS);
        config.scenarios.push(crate::Scenario {
            name: "creep".into(),
            kind: ScenarioKind::LatencyCreep,
            start,
            end,
            namespace: "shop".into(),
            deployment: "checkout".into(),
        });
        let mut c = Cluster::new(config).unwrap();
        let sets = |c: &Cluster| -> std::collections::BTreeSet<String> {
            c.pods()
                .into_iter()
                .filter(|p| p.deployment == "checkout")
                .filter_map(|p| p.name.rsplit_once('-').map(|(rs, _)| rs.to_owned()))
                .collect()
        };
        while c.now() < start {
            c.tick();
        }
        let during = sets(&c);
        let mut after_end = None;
        while c.now() <= end.add_millis(2 * 60_000) {
            if c.now() <= end {
                assert_eq!(sets(&c), during, "no rollout while the creep holds it");
            } else if after_end.is_none() {
                after_end = Some(sets(&c));
            }
            c.tick();
        }
        assert_eq!(after_end, Some(during), "no rollout the minute it ended");
    }

    #[test]
    fn pods_are_named_like_kubernetes_and_spread() {
        let c = Cluster::new(SimConfig::new(
            1,
            DEFAULT_START,
            std::time::Duration::from_secs(60),
        ))
        .unwrap();
        let pods = c.pods();
        assert_eq!(pods.len(), 14);
        let p = &pods[0];
        let parts: Vec<&str> = p.name.rsplitn(3, '-').collect();
        assert_eq!(
            (parts[0].len(), parts[1].len(), parts[2]),
            (5, 10, "frontend")
        );
        for n in 1..=4 {
            let on = pods
                .iter()
                .filter(|p| p.node == format!("node-{n}"))
                .count();
            assert!((3..=4).contains(&on), "node-{n}: {on}");
        }
    }
}
