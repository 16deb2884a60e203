#![doc = include_str!("../README.md")]

mod cluster;
mod config;
mod exposition;
mod histogram;
mod output;
mod record;
mod rng;
mod scenario;

pub use cluster::{Cluster, PodInfo, Snapshot, Snapshots};
pub use config::{
    Churn, DEFAULT_START, DeploymentSpec, NodeSpec, SimConfig, SimError, default_deployments,
};
pub use exposition::FAMILIES;
pub use histogram::{DEFAULT_BUCKETS, histogram_quantile};
pub use output::{CsvWriter, write_truth_csv, write_truth_json};
pub use record::{Counter, Recorder, bucket_index, p99};
pub use scenario::{GroundTruth, Scenario, ScenarioKind, TruthRecord, default_scenarios, matches};
