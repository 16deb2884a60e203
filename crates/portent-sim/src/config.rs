//! What to simulate: the topology, the workload of each deployment, churn and the incidents.

use std::time::Duration;

use portent_core::Timestamp;

use crate::scenario::Scenario;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The step is zero, below a second, or not a whole number of milliseconds.
    #[error("step: {0:?} must be at least 1s and a whole number of milliseconds")]
    Step(Duration),
    /// No nodes, or a node without CPUs or memory.
    #[error("nodes: {0}")]
    Nodes(String),
    /// A deployment that cannot run (no replicas, bad name, limits below needs…).
    #[error("deployment {name}: {reason}")]
    Deployment {
        /// `namespace/name`.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A scenario naming an unknown deployment, or ending before it starts.
    #[error("scenario {name}: {reason}")]
    Scenario {
        /// The scenario's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// One node: its name (also `instance="<name>:9100"`), CPUs and memory.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// The node name, e.g. `node-1`.
    pub name: String,
    /// Number of CPUs (`cpu="0"`…).
    pub cpus: u32,
    /// `node_memory_MemTotal_bytes`.
    pub memory_bytes: f64,
}

/// One deployment and the service in front of it (same name), with its workload model.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentSpec {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Deployment, service and container name.
    pub name: String,
    /// Desired pods.
    pub replicas: usize,
    /// Requests per second over the whole deployment at the daily peak of a weekday.
    pub peak_rps: f64,
    /// Hour of the day (UTC) of the traffic peak: 15.0 for user traffic, 3.0 for nightly jobs.
    pub peak_hour: f64,
    /// Traffic on Saturdays and Sundays relative to weekdays.
    pub weekend_factor: f64,
    /// CPU seconds per request.
    pub cpu_per_request: f64,
    /// CPU cores an idle pod uses.
    pub cpu_idle: f64,
    /// CPU limit in cores; `None` for a pod without one (it can starve its node's neighbours).
    pub cpu_limit: Option<f64>,
    /// Working set of an idle, warmed-up pod, bytes.
    pub memory_base: f64,
    /// Extra working set per request per second served by the pod, bytes.
    pub memory_per_rps: f64,
    /// Memory limit, bytes.
    pub memory_limit: f64,
    /// Median request latency of an unloaded pod, seconds.
    pub latency_median: f64,
    /// Log-normal spread of latencies (σ of the log).
    pub latency_sigma: f64,
    /// Fraction of requests answered 5xx in normal operation.
    pub error_ratio: f64,
}

/// How often healthy clusters change on their own.
#[derive(Debug, Clone, PartialEq)]
pub struct Churn {
    /// Mean time before a pod is deleted and replaced (evictions, node drains), hours.
    pub pod_lifetime_hours: f64,
    /// Mean rollouts per deployment per day (happening on weekdays, 09:00–17:00 UTC).
    pub rollouts_per_day: f64,
    /// Mean container restarts per pod per day that are not part of an incident.
    pub restarts_per_pod_day: f64,
}

impl Default for Churn {
    fn default() -> Self {
        Self {
            pod_lifetime_hours: 96.0,
            rollouts_per_day: 0.5,
            restarts_per_pod_day: 0.05,
        }
    }
}

/// Everything a [`Cluster`](crate::Cluster) needs. Same config, same seed: same samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seeds every random draw.
    pub seed: u64,
    /// The time of the first sample.
    pub start: Timestamp,
    /// Time between samples (accelerated: a tick takes microseconds).
    pub step: Duration,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// The deployments (each with its service).
    pub deployments: Vec<DeploymentSpec>,
    /// Background churn.
    pub churn: Churn,
    /// Incidents to inject.
    pub scenarios: Vec<Scenario>,
}

/// Monday 2024-01-01 00:00 UTC: the default start, so that day `k` of a run is a known weekday.
pub const DEFAULT_START: Timestamp = Timestamp::from_secs(1_704_067_200);

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

impl SimConfig {
    /// The default topology (4 nodes, 6 deployments in 3 namespaces) with no incidents.
    pub fn new(seed: u64, start: Timestamp, step: Duration) -> Self {
        let nodes = (1..=4)
            .map(|i| NodeSpec {
                name: format!("node-{i}"),
                cpus: 4,
                memory_bytes: 16.0 * GIB,
            })
            .collect();
        Self {
            seed,
            start,
            step,
            nodes,
            deployments: default_deployments(),
            churn: Churn::default(),
            scenarios: Vec::new(),
        }
    }

    /// Checks what the simulation relies on; [`Cluster::new`](crate::Cluster::new) calls it.
    pub fn validate(&self) -> Result<(), SimError> {
        let ms = self.step.as_millis();
        if ms < 1000 || !self.step.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(SimError::Step(self.step));
        }
        if self.nodes.is_empty() {
            return Err(SimError::Nodes("at least one node is needed".into()));
        }
        if let Some(n) = self
            .nodes
            .iter()
            .find(|n| n.cpus == 0 || n.memory_bytes <= 0.0 || !dns_name(&n.name))
        {
            return Err(SimError::Nodes(format!(
                "{}: needs a DNS-1123 name, CPUs and memory",
                n.name
            )));
        }
        for (i, d) in self.deployments.iter().enumerate() {
            let bad = |reason: &str| SimError::Deployment {
                name: format!("{}/{}", d.namespace, d.name),
                reason: reason.into(),
            };
            if !dns_name(&d.namespace) || !dns_name(&d.name) {
                return Err(bad("namespace and name must be DNS-1123 labels"));
            }
            if self.deployments[..i]
                .iter()
                .any(|o| o.namespace == d.namespace && o.name == d.name)
            {
                return Err(bad("given twice"));
            }
            if d.replicas == 0 {
                return Err(bad("needs at least one replica"));
            }
            let positive = [
                d.peak_rps,
                d.cpu_per_request,
                d.memory_base,
                d.memory_limit,
                d.latency_median,
                d.latency_sigma,
            ];
            if positive.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(bad("rates, sizes and latencies must be positive"));
            }
            if !(0.0..0.5).contains(&d.error_ratio) || !(0.0..=1.0).contains(&d.weekend_factor) {
                return Err(bad(
                    "error_ratio must be in [0, 0.5), weekend_factor in [0, 1]",
                ));
            }
            if d.memory_base >= d.memory_limit * 0.8 {
                return Err(bad("memory_base must stay below 80% of memory_limit"));
            }
        }
        for s in &self.scenarios {
            let bad = |reason: String| SimError::Scenario {
                name: s.name.clone(),
                reason,
            };
            if s.end <= s.start {
                return Err(bad("end must be after start".into()));
            }
            if !self
                .deployments
                .iter()
                .any(|d| d.namespace == s.namespace && d.name == s.deployment)
            {
                return Err(bad(format!(
                    "no deployment {}/{}",
                    s.namespace, s.deployment
                )));
            }
        }
        Ok(())
    }
}

/// Lower-case alphanumerics and `-`, starting and ending alphanumeric, at most 63 characters.
fn dns_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// namespace, name, replicas, peak requests/s, peak hour, CPU s/request, CPU limit, working
/// set (base, per request/s, limit; MiB), median latency (s).
#[rustfmt::skip]
type Row = (&'static str, &'static str, usize, f64, f64, f64, Option<f64>, [f64; 3], f64);

#[rustfmt::skip]
const DEFAULTS: [Row; 6] = [
    ("shop", "frontend", 3, 90.0, 15.0, 0.012, Some(1.0), [160.0, 2.0, 512.0], 0.040),
    ("shop", "checkout", 2, 24.0, 15.0, 0.030, Some(1.0), [180.0, 5.0, 512.0], 0.080),
    ("shop", "catalog", 3, 60.0, 15.0, 0.010, Some(0.5), [220.0, 1.5, 512.0], 0.030),
    ("shop", "cart", 2, 30.0, 15.0, 0.015, Some(0.5), [150.0, 4.0, 384.0], 0.050),
    ("payments", "payments-api", 2, 12.0, 15.0, 0.040, Some(1.0), [300.0, 6.0, 1024.0], 0.120),
    ("batch", "ingest", 2, 40.0, 3.0, 0.020, None, [400.0, 4.0, 1536.0], 0.060),
];

/// The default workload: a shop (user traffic peaking at 15:00 UTC), payments, and a batch
/// ingest API whose traffic peaks at 03:00 (nightly jobs) and has no CPU limit.
pub fn default_deployments() -> Vec<DeploymentSpec> {
    DEFAULTS
        .iter()
        .map(
            |&(namespace, name, replicas, peak_rps, peak_hour, cpu, cpu_limit, mem, latency)| {
                DeploymentSpec {
                    namespace: namespace.into(),
                    name: name.into(),
                    replicas,
                    peak_rps,
                    peak_hour,
                    weekend_factor: 0.6,
                    cpu_per_request: cpu,
                    cpu_idle: 0.02,
                    cpu_limit,
                    memory_base: mem[0] * MIB,
                    memory_per_rps: mem[1] * MIB,
                    memory_limit: mem[2] * MIB,
                    latency_median: latency,
                    latency_sigma: 0.5,
                    error_ratio: 0.002,
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_checks_bite() {
        let ok = SimConfig::new(1, DEFAULT_START, Duration::from_secs(60));
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.step = Duration::from_millis(500);
        assert!(matches!(c.validate(), Err(SimError::Step(_))));
        let mut c = ok.clone();
        c.deployments[0].replicas = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("shop/frontend")
        );
        let mut c = ok.clone();
        c.deployments[1].name = "Bad_Name".into();
        assert!(c.validate().is_err());
        let mut c = ok;
        c.nodes.clear();
        assert!(matches!(c.validate(), Err(SimError::Nodes(_))));
    }
}
