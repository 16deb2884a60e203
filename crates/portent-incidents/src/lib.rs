#![doc = include_str!("../README.md")]

pub mod correlate;
pub mod feedback;
pub mod notify;
pub mod pack;
pub mod rank;
pub mod rollout;
pub mod topology;

pub use correlate::{
    Anomaly, Correlator, CorrelatorConfig, Counters, Incident, IncidentId, Member, OnsetBand,
    OpenMembers, PLACE_EVERY, State, place_due,
};
pub use pack::{EvidencePack, PackConfig};
pub use rank::{Candidate, rank};
pub use rollout::{ROLLOUT_MODEL, Rollouts, Suspect};
pub use topology::{Level, PodNodes, TopoKey, TopologyConfig, workload_of_pod};
