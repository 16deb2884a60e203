//! The evidence pack: what any explainer (LLM or deterministic) reads about an incident.
//!
//! [`EvidencePack::build`] is deterministic (same incident, same bytes) and size-bounded: it
//! holds at most [`PackConfig::max_series`] detailed series and
//! [`PackConfig::max_correlated`] brief ones, and its compact JSON is at most
//! [`PackConfig::max_bytes`] (32 KiB by default). To fit, the lowest-ranked items go first:
//! correlated series, then detailed series, then candidates; [`EvidencePack::truncation`] says
//! how many went and why. `kubernetes_events` and `logs` are empty slots for the explanation
//! work to fill.

use std::collections::{BTreeMap, BTreeSet};

use portent_core::{Reason, Timestamp};
use serde::{Deserialize, Serialize};

use crate::correlate::{Incident, Member, State};
use crate::rank::{Candidate, rank};
use crate::rollout::ROLLOUT_MODEL;
use crate::topology::{Level, TopologyConfig};

/// The pack format's version; bumped on incompatible changes.
pub const PACK_VERSION: u32 = 1;

/// Size limits of a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackConfig {
    /// Series described in full (default 10).
    pub max_series: usize,
    /// Further series listed briefly (default 50).
    pub max_correlated: usize,
    /// Candidates listed (default 5).
    pub max_candidates: usize,
    /// The most bytes of compact JSON (default 32 KiB).
    pub max_bytes: usize,
}

impl Default for PackConfig {
    fn default() -> Self {
        Self {
            max_series: 10,
            max_correlated: 50,
            max_candidates: 5,
            max_bytes: 32 * 1024,
        }
    }
}

/// A time both as Prometheus milliseconds and as RFC 3339 text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct At {
    /// Milliseconds since the epoch.
    pub ms: i64,
    /// RFC 3339, UTC.
    pub iso: String,
}

impl At {
    /// `t` in both forms.
    pub fn of(t: Timestamp) -> Self {
        Self {
            ms: t.millis(),
            iso: rfc3339(t),
        }
    }
}

/// `t` as RFC 3339 in UTC (`2026-11-28T23:00:00Z`); the epoch for times `jiff` cannot hold.
pub fn rfc3339(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.millis())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The incident's identity, state and times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentInfo {
    /// Its ID.
    pub id: String,
    /// Its state.
    pub state: State,
    /// The first anomaly.
    pub started_at: At,
    /// When it began firing.
    pub fired_at: Option<At>,
    /// When it resolved.
    pub resolved_at: Option<At>,
    /// The latest anomaly.
    pub last_anomaly_at: At,
    /// How many series it has in all (before any truncation of this pack).
    pub series_total: usize,
    /// Series the correlator itself left out (its member cap).
    pub series_dropped_by_cap: u64,
    /// Where it started: the topology labels of its first series (`e1`), which never change
    /// while the incident lives, so notifications can route and deduplicate on them.
    pub origin: BTreeMap<String, String>,
}

/// The objects involved, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Namespaces.
    pub namespaces: Vec<String>,
    /// Nodes.
    pub nodes: Vec<String>,
    /// Workloads (given or derived from pod names).
    pub workloads: Vec<String>,
    /// Services.
    pub services: Vec<String>,
    /// Pods.
    pub pods: Vec<String>,
}

/// The most deviating sample of a series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// When.
    pub at: At,
    /// The actual value (absent when not finite).
    pub actual: Option<f64>,
    /// The expected value.
    pub expected: Option<f64>,
    /// The band's lower edge.
    pub lower: Option<f64>,
    /// The band's upper edge.
    pub upper: Option<f64>,
    /// `|actual − expected|` in half band widths.
    pub deviation: f64,
    /// The score at that sample.
    pub score: f64,
}

/// A series described in full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesEvidence {
    /// Its evidence ID (`e1`, …).
    pub id: String,
    /// Its labels in Prometheus notation.
    pub series: String,
    /// Its query alias.
    pub query: String,
    /// Its model alias.
    pub model: String,
    /// Its level in the topology.
    pub level: Level,
    /// Its first anomalous sample.
    pub onset: At,
    /// Its latest.
    pub last: At,
    /// How many anomalous samples.
    pub anomalous_samples: u64,
    /// Its highest score.
    pub max_score: f64,
    /// The reason at its peak.
    pub reason: Option<Reason>,
    /// Its peak: actual vs expected.
    pub peak: Peak,
    /// Its root-cause rank.
    pub rank: f64,
}

/// A series listed briefly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrelatedSeries {
    /// Its evidence ID.
    pub id: String,
    /// Its labels in Prometheus notation.
    pub series: String,
    /// Its level.
    pub level: Level,
    /// Its first anomalous sample.
    pub onset: At,
    /// The reason at its peak.
    pub reason: Option<Reason>,
    /// Its peak deviation in half band widths.
    pub deviation: f64,
}

/// What was left out to respect the limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// Detailed series left out.
    pub series_omitted: usize,
    /// Brief series left out.
    pub correlated_omitted: usize,
    /// Candidates left out.
    pub candidates_omitted: usize,
    /// Why, in words.
    pub note: String,
}

/// The evidence about one incident; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidencePack {
    /// [`PACK_VERSION`].
    pub version: u32,
    /// The incident.
    pub incident: IncidentInfo,
    /// The objects involved.
    pub scope: Scope,
    /// Root-cause candidates, likeliest first.
    pub candidates: Vec<Candidate>,
    /// The top series by rank, in full.
    pub series: Vec<SeriesEvidence>,
    /// The other series that moved, briefly, by rank.
    pub correlated: Vec<CorrelatedSeries>,
    /// Kubernetes events about the objects involved (filled by the explanation work).
    pub kubernetes_events: Vec<serde_json::Value>,
    /// Recent log lines (filled by the explanation work).
    pub logs: Vec<serde_json::Value>,
    /// What was left out, if anything.
    pub truncation: Option<Truncation>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn scope(incident: &Incident, topology: &TopologyConfig) -> Scope {
    let mut sets: [BTreeSet<String>; 5] = Default::default();
    for m in &incident.members {
        let l = &m.labels;
        for (set, key) in [
            (0, &topology.namespace),
            (1, &topology.node),
            (3, &topology.service),
            (4, &topology.pod),
        ] {
            if let Some(v) = l.get(key) {
                sets[set].insert(v.to_owned());
            }
        }
        if let Some(w) = &m.workload {
            sets[2].insert(w.clone());
        }
    }
    let [namespaces, nodes, workloads, services, pods] = sets.map(|s| s.into_iter().collect());
    Scope {
        namespaces,
        nodes,
        workloads,
        services,
        pods,
    }
}

fn full(m: &Member, rank: f64) -> SeriesEvidence {
    let p = &m.peak;
    SeriesEvidence {
        id: m.evidence_id.clone(),
        series: m.labels.to_string(),
        query: m.query.clone(),
        model: m.model.clone(),
        level: m.level,
        onset: At::of(m.onset),
        last: At::of(m.last),
        anomalous_samples: m.count,
        max_score: m.max_score.get(),
        reason: p.reason,
        peak: Peak {
            at: At::of(p.t),
            actual: finite(p.value),
            expected: finite(p.yhat),
            lower: finite(p.yhat_lower),
            upper: finite(p.yhat_upper),
            deviation: finite(m.deviation()).unwrap_or(f64::MAX),
            score: p.score.get(),
        },
        rank,
    }
}

fn brief(m: &Member) -> CorrelatedSeries {
    CorrelatedSeries {
        id: m.evidence_id.clone(),
        series: m.labels.to_string(),
        level: m.level,
        onset: At::of(m.onset),
        reason: m.peak.reason,
        deviation: finite(m.deviation()).unwrap_or(f64::MAX),
    }
}

impl EvidencePack {
    /// The pack for `incident`.
    pub fn build(incident: &Incident, topology: &TopologyConfig, config: &PackConfig) -> Self {
        let ranked = rank(incident);
        let mut series = Vec::new();
        let mut correlated = Vec::new();
        let mut trunc = Truncation::default();
        for c in &ranked {
            let Some(m) = incident.member(&c.evidence_id) else {
                continue;
            };
            if series.len() < config.max_series {
                series.push(full(m, c.rank));
            } else if correlated.len() < config.max_correlated {
                correlated.push(brief(m));
            } else {
                trunc.correlated_omitted += 1;
            }
        }
        let mut candidates = ranked;
        if candidates.len() > config.max_candidates {
            trunc.candidates_omitted = candidates.len() - config.max_candidates;
            candidates.truncate(config.max_candidates);
        }
        let mut pack = Self {
            version: PACK_VERSION,
            incident: IncidentInfo {
                id: incident.id.to_string(),
                state: incident.state,
                started_at: At::of(incident.started_at),
                fired_at: incident.fired_at.map(At::of),
                resolved_at: incident.resolved_at.map(At::of),
                last_anomaly_at: At::of(incident.last_anomaly_at),
                series_total: incident.members.len(),
                series_dropped_by_cap: incident.dropped_members,
                origin: origin(incident, topology),
            },
            scope: scope(incident, topology),
            candidates,
            series,
            correlated,
            kubernetes_events: Vec::new(),
            logs: Vec::new(),
            truncation: None,
        };
        let counted =
            |t: &Truncation| t.series_omitted + t.correlated_omitted + t.candidates_omitted;
        if counted(&trunc) > 0 {
            trunc.note = "item limits reached; lowest-ranked items left out".into();
            pack.truncation = Some(trunc.clone());
        }
        // Shed the lowest-ranked items until the JSON fits. Each step drops one item, so the
        // loop ends; at worst the pack keeps only the incident and its scope.
        while pack.byte_len() > config.max_bytes {
            if pack.correlated.pop().is_some() {
                trunc.correlated_omitted += 1;
            } else if pack.series.len() > 1 {
                pack.series.pop();
                trunc.series_omitted += 1;
            } else if pack.candidates.len() > 1 {
                pack.candidates.pop();
                trunc.candidates_omitted += 1;
            } else if pack.series.pop().is_some() {
                trunc.series_omitted += 1;
            } else if pack.candidates.pop().is_some() {
                trunc.candidates_omitted += 1;
            } else {
                break;
            }
            trunc.note = format!(
                "pack limited to {} bytes; lowest-ranked items left out",
                config.max_bytes
            );
            pack.truncation = Some(trunc.clone());
        }
        pack
    }

    /// The compact JSON.
    pub fn to_json(&self) -> String {
        // Plain data with string keys and no NaN (floats go through `finite`): cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The size of the compact JSON in bytes.
    pub fn byte_len(&self) -> usize {
        self.to_json().len()
    }

    /// The detailed or brief series with evidence ID `id`: (series, level).
    fn lookup(&self, id: &str) -> Option<(&str, Level)> {
        self.series
            .iter()
            .find(|s| s.id == id)
            .map(|s| (s.series.as_str(), s.level))
            .or_else(|| {
                self.correlated
                    .iter()
                    .find(|s| s.id == id)
                    .map(|s| (s.series.as_str(), s.level))
            })
    }

    /// A deterministic plain-text explanation: what, where, since when, the most likely cause
    /// and what else moved.
    pub fn explain(&self) -> String {
        let inc = &self.incident;
        let mut out = format!(
            "Incident {} ({}): {} series moved together.\n",
            inc.id, inc.state, inc.series_total
        );
        if let Some(top) = self.series.first() {
            out.push_str(&format!(
                "What: {} {} ({}): {}.\n",
                top.series,
                top.reason.map_or("anomalous", |r| r.as_str()),
                top.level,
                match top.reason {
                    // A multivariate verdict's value is its model's raw score, with no band.
                    Some(Reason::Combination) => format!(
                        "its metrics are unusual together (model score {})",
                        top.peak.actual.map_or_else(|| "unknown".to_owned(), num)
                    ),
                    _ => actual_vs_expected(&top.peak),
                }
            ));
        }
        let s = &self.scope;
        let mut wher = Vec::new();
        for (name, v) in [
            ("namespace", &s.namespaces),
            ("node", &s.nodes),
            ("workload", &s.workloads),
            ("service", &s.services),
        ] {
            if !v.is_empty() {
                wher.push(format!("{name} {}", list(v, 5)));
            }
        }
        if wher.is_empty() {
            wher.push("no Kubernetes labels on the series".into());
        }
        out.push_str(&format!("Where: {}.\n", wher.join("; ")));
        out.push_str(&format!("Since: {}", inc.started_at.iso));
        if let Some(f) = &inc.fired_at {
            out.push_str(&format!(", firing since {}", f.iso));
        }
        if let Some(r) = &inc.resolved_at {
            out.push_str(&format!(", resolved at {}", r.iso));
        }
        out.push_str(&format!("; latest anomaly {}.\n", inc.last_anomaly_at.iso));
        if let Some(c) = self.candidates.first() {
            let name = self.lookup(&c.evidence_id).map_or("", |(n, _)| n);
            let mut why = Vec::new();
            // A rollout stands for a ReplicaSet, not for a series that alarmed: say so.
            if let Some(r) = self
                .series
                .iter()
                .find(|s| s.id == c.evidence_id && s.model == ROLLOUT_MODEL)
                && let (Some(a), Some(e)) = (r.peak.actual, r.peak.expected)
            {
                why.push(format!(
                    "a new ReplicaSet since {}, its pods' {} at {} against {} on the previous \
                     one's",
                    r.onset.iso,
                    r.series.split('{').next().unwrap_or(&r.query),
                    num(a),
                    num(e)
                ));
            }
            if c.onset_term >= 1.0 {
                why.push("moved first".to_owned());
            }
            if c.direction_term > 0.0 {
                why.push(format!(
                    "upstream of {:.0}% of the others",
                    c.direction_term * 100.0
                ));
            }
            if why.is_empty() {
                why.push("strongest deviation".into());
            }
            out.push_str(&format!(
                "Most likely cause: [{}] {} ({}; {}; rank {:.2}).\n",
                c.evidence_id,
                name,
                c.level,
                why.join(", "),
                c.rank
            ));
        }
        let top = self.candidates.first().map(|c| c.evidence_id.as_str());
        let others: Vec<String> = self
            .series
            .iter()
            .map(|s| (&s.id, &s.series, s.reason))
            .chain(self.correlated.iter().map(|s| (&s.id, &s.series, s.reason)))
            .filter(|(id, _, _)| Some(id.as_str()) != top)
            .map(|(id, series, reason)| {
                format!(
                    "[{id}] {series} ({})",
                    reason.map_or("anomalous", |r| r.as_str())
                )
            })
            .collect();
        if others.is_empty() {
            out.push_str("What else moved: nothing else.\n");
        } else {
            out.push_str(&format!("What else moved: {}.\n", list(&others, 5)));
        }
        if let Some(t) = &self.truncation {
            out.push_str(&format!("(Evidence truncated: {}.)\n", t.note));
        }
        out
    }
}

fn list(v: &[String], max: usize) -> String {
    let mut s = v.iter().take(max).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > max {
        s.push_str(&format!(" and {} more", v.len() - max));
    }
    s
}

/// A number with at most 4 significant digits, for texts.
pub fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// "actual 95 vs expected 40 (band 35–45), 11× the half band" from a peak.
pub fn actual_vs_expected(p: &Peak) -> String {
    let mut s = match (p.actual, p.expected) {
        (Some(a), Some(e)) => format!("actual {} vs expected {}", num(a), num(e)),
        (Some(a), None) => format!("actual {} (nothing expected yet)", num(a)),
        (None, _) => "no usable value".to_owned(),
    };
    if let (Some(l), Some(u)) = (p.lower, p.upper) {
        s.push_str(&format!(" (band {}–{})", num(l), num(u)));
    }
    if p.deviation > 0.0 && p.deviation < f64::MAX {
        s.push_str(&format!(", {}× the half band", num(p.deviation)));
    }
    s
}

fn origin(incident: &Incident, topology: &TopologyConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(first) = incident.members.first() else {
        return out;
    };
    for key in [
        &topology.namespace,
        &topology.service,
        &topology.node,
        &topology.pod,
    ] {
        if let Some(v) = first.labels.get(key) {
            out.insert(key.clone(), v.to_owned());
        }
    }
    if let Some(w) = &first.workload {
        out.insert(topology.deployment.clone(), w.clone());
    }
    out
}
