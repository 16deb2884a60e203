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
//!   disk) moving the same way as its node's usage of that resource, flagged no more than five
//!   minutes after it, is the node's cause, not its effect: the node's usage is the sum of its
//!   pods', so the pod moved when the node did at the latest, and that is its onset here. The
//!   noisy neighbour that burns a node's CPU then reaches the node and, through it, the pods it
//!   starves.
//!
//! Time order is compared within the largest group of members closely linked to each other
//! (sharing a node, pod, workload or service, transitively) when it has at least two: a member
//! outside it, joined only by a namespace, gets `O = 0`, since it explains none of the others.
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

/// A member with what the consumer rule needs of it, worked out once per ranking rather than
/// once per pair.
struct Ranked<'a> {
    m: &'a Member,
    resource: Option<&'static str>,
    rose: Option<bool>,
}

/// How much later than its node a pod's usage may be flagged and still be the node's cause:
/// the node's usage is the sum of its pods', so the pod's rise cannot follow the node's; a
/// later flag is the pod's own detector being slower (a noisier series, a wider band).
const CONSUMER_LAG_MS: i64 = 5 * 60_000;

/// Pod `a` consumes node `b`'s resource and moved with it: `a` causes `b`.
fn consumes(a: &Ranked<'_>, b: &Ranked<'_>) -> bool {
    a.m.level == Level::Pod
        && b.m.level == Level::Node
        && a.m.onset.millis_since(b.m.onset) <= CONSUMER_LAG_MS
        && linked(a.m, b.m)
        && a.resource.is_some_and(|r| b.resource == Some(r))
        && a.rose.is_some_and(|up| b.rose == Some(up))
}

fn upstream(a: &Ranked<'_>, b: &Ranked<'_>) -> bool {
    if consumes(a, b) {
        return true;
    }
    let (x, y) = (a.m, b.m);
    x.level < y.level
        && x.level <= Level::Service
        && x.onset <= y.onset
        && linked(x, y)
        && !consumes(b, a)
}

/// The members closely linked to each other (sharing a node, pod, workload or service,
/// transitively) in the largest such group, when it has at least two; else all of them.
fn main_group(ms: &[Member]) -> Vec<bool> {
    let mut group: Vec<usize> = (0..ms.len()).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    for a in 0..ms.len() {
        for b in a + 1..ms.len() {
            if linked(&ms[a], &ms[b]) {
                let (ra, rb) = (root(&mut group, a), root(&mut group, b));
                group[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    let roots: Vec<usize> = (0..ms.len()).map(|i| root(&mut group, i)).collect();
    let size = |r: usize| roots.iter().filter(|&&x| x == r).count();
    // The largest group; among equals the one holding the earliest member (lowest index).
    let best = (0..ms.len()).max_by_key(|&r| (size(r), std::cmp::Reverse(r)));
    match best {
        Some(r) if size(r) >= 2 => roots.iter().map(|&x| x == r).collect(),
        _ => vec![true; ms.len()],
    }
}

/// The members of `incident` ranked as root-cause candidates, likeliest first.
pub fn rank(incident: &Incident) -> Vec<Candidate> {
    let ms = &incident.members;
    // Time order is compared within the largest closely linked group: a series that shares
    // only a namespace with the rest explains none of them, however early it moved (a blip on
    // one pod just before a bad rollout of another workload is not the rollout's cause).
    let in_group = main_group(ms);
    let ranked: Vec<Ranked<'_>> = ms
        .iter()
        .map(|m| Ranked {
            m,
            resource: resource(m),
            rose: m.rose(),
        })
        .collect();
    // A consumer moved when its node did at the latest, whenever its own detector noticed.
    let onsets: Vec<Timestamp> = ranked
        .iter()
        .map(|a| {
            ranked
                .iter()
                .filter(|b| consumes(a, b))
                .map(|b| b.m.onset)
                .fold(a.m.onset, Timestamp::min)
        })
        .collect();
    let grouped = || {
        onsets
            .iter()
            .zip(&in_group)
            .filter(|(_, g)| **g)
            .map(|(o, _)| *o)
    };
    let Some(first) = grouped().min() else {
        return Vec::new();
    };
    let last = grouped().max().unwrap_or(first);
    let span = last.millis_since(first).max(1) as f64;
    let others = (ms.len().saturating_sub(1)).max(1) as f64;
    // The upstream relation once, as a matrix: the walks below only index it.
    let edges: Vec<bool> = ranked
        .iter()
        .flat_map(|a| ranked.iter().map(move |b| upstream(a, b)))
        .collect();
    let mut out: Vec<(usize, Candidate)> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let onset_term = if !in_group[i] {
                0.0
            } else if last == first {
                1.0
            } else {
                (1.0 - onsets[i].millis_since(first) as f64 / span).clamp(0.0, 1.0)
            };
            let d = m.deviation();
            // A verdict with no expected value (a multivariate model's, on a whole row) has no
            // deviation to weigh: its score is all the strength it shows.
            let strength_term = if m.peak.yhat.is_finite() {
                0.5 * m.max_score.get() + 0.5 * d / (1.0 + d)
            } else {
                m.max_score.get()
            };
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
