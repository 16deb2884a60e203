//! Root-cause ranking: which series of an incident most likely started it.
//!
//! Each member `m` of an incident with members `M` gets three terms in `[0, 1]`:
//!
//! * **onset** `O = 1 − (onset_m − first) / max(last − first, 1 ms)`, where `first` and `last`
//!   are the earliest and latest onsets in the incident: the first to go wrong scores 1, the
//!   last 0 (all 1 when they start together);
//! * **strength** `S = ½·score + ½·d/(1 + d)`, where `d = |value − yhat| / half band width` at
//!   the member's peak ([`Member::deviation`]): both how unusual the model found it and how far
//!   outside its band it went, squashed so one huge outlier does not swamp the rest;
//! * **direction** `D = |downstream(m)| / (|M| − 1)` (0 for a lone member): the share of the other
//!   members reachable from `m` along the dependency chain node → pod → workload → service,
//!   stepping only to a member that is linked (shares a node, pod, workload or service object),
//!   sits further down the chain, and started no earlier. A node anomaly that precedes the pod
//!   anomalies on that node reaches all of them; a pod's precedes its service's.
//!   One exception turns the chain around: a pod's usage of a resource (CPU, memory, network,
//!   disk) moving the same way as its node's usage of that resource, no later, is the node's
//!   cause, not its effect: the node's usage is the sum of its pods'. The noisy neighbour that
//!   burns a node's CPU then reaches the node and, through it, the pods it starves.
//!
//! `rank = 0.4·O + 0.3·S + 0.3·D`; candidates are sorted by rank, ties by onset, then by the
//! order they joined. Time order weighs most because a cause precedes its effects; direction
//! and strength break the common case where several series start within one scoring step.

use portent_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::correlate::{Incident, Member};
use crate::topology::Level;

/// The weight of the onset term.
pub const W_ONSET: f64 = 0.4;
/// The weight of the strength term.
pub const W_STRENGTH: f64 = 0.3;
/// The weight of the direction term.
pub const W_DIRECTION: f64 = 0.3;

/// One root-cause candidate: a member of the incident and why it ranks where it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The member's evidence ID.
    pub evidence_id: String,
    /// The combined rank in `[0, 1]`.
    pub rank: f64,
    /// The onset term.
    pub onset_term: f64,
    /// The strength term.
    pub strength_term: f64,
    /// The direction term.
    pub direction_term: f64,
    /// The member's level.
    pub level: Level,
    /// The member's onset.
    pub onset: Timestamp,
}

fn linked(a: &Member, b: &Member) -> bool {
    a.keys().intersection(b.keys()).any(|k| {
        let k = k.0.as_str();
        ["node/", "pod/", "workload/", "service/"]
            .iter()
            .any(|p| k.starts_with(p))
    })
}

/// The resource a series measures the use of, from its metric name and query alias.
fn resource(m: &Member) -> Option<&'static str> {
    let name = format!(
        "{} {}",
        m.labels.get("__name__").unwrap_or_default(),
        m.query
    )
    .to_ascii_lowercase();
    [
        ("cpu", "cpu"),
        ("memory", "memory"),
        ("mem_", "memory"),
        ("network", "network"),
        ("disk", "disk"),
        ("filesystem", "disk"),
    ]
    .iter()
    .find(|(word, _)| name.contains(word))
    .map(|&(_, r)| r)
}

/// Whether the member's peak was above its expectation.
fn rose(m: &Member) -> Option<bool> {
    (m.peak.value.is_finite() && m.peak.yhat.is_finite() && m.peak.value != m.peak.yhat)
        .then_some(m.peak.value > m.peak.yhat)
}

/// Pod `a` consumes node `b`'s resource and moved with it: `a` causes `b`.
fn consumes(a: &Member, b: &Member) -> bool {
    a.level == Level::Pod
        && b.level == Level::Node
        && a.onset <= b.onset
        && linked(a, b)
        && resource(a).is_some_and(|r| resource(b) == Some(r))
        && rose(a).is_some_and(|up| rose(b) == Some(up))
}

fn upstream(a: &Member, b: &Member) -> bool {
    if consumes(a, b) {
        return true;
    }
    a.level < b.level
        && a.level <= Level::Service
        && a.onset <= b.onset
        && linked(a, b)
        && !consumes(b, a)
}

/// The members of `incident` ranked as root-cause candidates, likeliest first.
pub fn rank(incident: &Incident) -> Vec<Candidate> {
    let ms = &incident.members;
    let Some(first) = ms.iter().map(|m| m.onset).min() else {
        return Vec::new();
    };
    let last = ms.iter().map(|m| m.onset).max().unwrap_or(first);
    let span = last.millis_since(first).max(1) as f64;
    let others = (ms.len().saturating_sub(1)).max(1) as f64;
    // The upstream relation once, as a matrix: the walks below only index it.
    let edges: Vec<bool> = ms
        .iter()
        .flat_map(|a| ms.iter().map(move |b| upstream(a, b)))
        .collect();
    let mut out: Vec<(usize, Candidate)> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let onset_term = if last == first {
                1.0
            } else {
                1.0 - m.onset.millis_since(first) as f64 / span
            };
            let d = m.deviation();
            let strength_term = 0.5 * m.max_score.get() + 0.5 * d / (1.0 + d);
            // Everything reachable downstream, transitively.
            let mut seen = vec![false; ms.len()];
            seen[i] = true;
            let mut reached = 0usize;
            let mut stack = vec![i];
            while let Some(a) = stack.pop() {
                for b in 0..ms.len() {
                    if !seen[b] && edges[a * ms.len() + b] {
                        seen[b] = true;
                        reached += 1;
                        stack.push(b);
                    }
                }
            }
            let direction_term = if ms.len() > 1 {
                reached as f64 / others
            } else {
                0.0
            };
            let rank =
                W_ONSET * onset_term + W_STRENGTH * strength_term + W_DIRECTION * direction_term;
            (
                i,
                Candidate {
                    evidence_id: m.evidence_id.clone(),
                    rank,
                    onset_term,
                    strength_term,
                    direction_term,
                    level: m.level,
                    onset: m.onset,
                },
            )
        })
        .collect();
    out.sort_by(|(ia, a), (ib, b)| {
        b.rank
            .total_cmp(&a.rank)
            .then(a.onset.cmp(&b.onset))
            .then(ia.cmp(ib))
    });
    out.into_iter().map(|(_, c)| c).collect()
}
